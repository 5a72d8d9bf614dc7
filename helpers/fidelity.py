"""Re-exports for older imports; the modules are infidelity, sensitivity, optimal, smoothing, sanity, perturbations."""

from .infidelity import *  # noqa: F403
from .optimal import *  # noqa: F403
from .perturbations import *  # noqa: F403
from .sanity import *  # noqa: F403
from .sensitivity import *  # noqa: F403
from .smoothing import *  # noqa: F403
