"""Shared, tested helpers for the ABC and infidelity notebooks.

Conventions (see ``DESIGN.md``): images are float32 tensors of shape ``N x 1 x 28 x 28`` in ``[0, 1]``;
a ``target`` is a LongTensor of shape ``N`` or ``None`` (= the predicted class).

Top-level utilities:

* :func:`device` -- the best available torch device (cuda > mps > cpu).
* :func:`seed_everything` -- seed python, numpy and torch in one call.
* :func:`scale` -- ``"quick"`` or ``"full"``, read from the ``SCALE`` environment variable.
* :data:`PROJECT_ROOT`, :data:`DATA_DIR`, :data:`BUILD_DIR`, :data:`FULL_RESULTS_DIR` -- where things live.
* :data:`GITHUB_REPO` -- the repository the Colab / Binder links point to (``python -m helpers repo OWNER/NAME``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

__all__ = ["device", "seed_everything", "scale", "is_full", "PROJECT_ROOT", "DATA_DIR", "BUILD_DIR", "RESULTS_DIR",
           "FULL_RESULTS_DIR", "GITHUB_REPO"]
__version__ = "0.1.0"

PROJECT_ROOT: Path = Path(os.environ.get("HELPERS_PROJECT_ROOT", Path(__file__).resolve().parent.parent))
DATA_DIR: Path = Path(os.environ.get("HELPERS_DATA_DIR", PROJECT_ROOT / "data"))
BUILD_DIR: Path = Path(os.environ.get("HELPERS_BUILD_DIR", PROJECT_ROOT / "build"))
RESULTS_DIR: Path = BUILD_DIR / "results"
#: paper-scale results, committed: every ``SCALE=full`` run of a notebook copies its results here (with provenance)
FULL_RESULTS_DIR: Path = Path(os.environ.get("HELPERS_FULL_RESULTS_DIR", PROJECT_ROOT / "results" / "full"))
#: the one place of the GitHub "owner/name" behind every Colab and Binder link and the Colab install cell
GITHUB_REPO = "trustworthy-dl/abc-infidelity-notebooks"

_SCALES = ("quick", "full")


def device() -> torch.device:
    """Return the best available device: CUDA, then Apple MPS, then CPU.

    ``HELPERS_DEVICE=cpu`` (or any torch device string) overrides the choice.
    """
    forced = os.environ.get("HELPERS_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed ``random``, ``numpy`` and ``torch`` (all devices); return a CPU ``torch.Generator`` seeded alike."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def scale() -> str:
    """Return the run scale: ``"quick"`` (a notebook in <= 3 min on 2 CPU cores) or ``"full"`` (paper scale).

    Read from the ``SCALE`` environment variable; the default is ``"full"`` when CUDA is available, else ``"quick"``.
    """
    value = os.environ.get("SCALE", "").strip().lower()
    if not value:
        return "full" if torch.cuda.is_available() else "quick"
    if value not in _SCALES:
        raise ValueError(f"SCALE must be one of {_SCALES}, got {value!r}")
    return value


def is_full() -> bool:
    """``True`` when :func:`scale` is ``"full"``."""
    return scale() == "full"
