"""Shared, tested helpers for the ABC and infidelity notebooks.

Conventions: images are float32 tensors ``N x 1 x 28 x 28`` in ``[0, 1]``; a ``target`` is a LongTensor ``N`` or
``None`` (= the predicted class). Here: :func:`device`, :func:`seed_everything`, :func:`scale` and where things live
(:data:`PROJECT_ROOT`, :data:`DATA_DIR`, :data:`BUILD_DIR`, :data:`FULL_RESULTS_DIR`, :data:`GITHUB_REPO`).
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


def device() -> torch.device:
    """The best available device: ``$HELPERS_DEVICE`` if set (any torch device string), else CUDA, MPS or CPU."""
    forced = os.environ.get("HELPERS_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps" if torch.backends.mps.is_available() else "cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed ``random``, ``numpy`` and ``torch`` (all devices); return a CPU ``torch.Generator`` seeded alike."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every device
    return torch.Generator().manual_seed(seed)


def scale() -> str:
    """Return the run scale: ``"quick"`` (a notebook in <= 3 min on 2 CPU cores) or ``"full"`` (paper scale).

    Read from the ``SCALE`` environment variable; the default is ``"full"`` when CUDA is available, else ``"quick"``.
    """
    value = os.environ.get("SCALE", "").strip().lower()
    if not value:
        return "full" if torch.cuda.is_available() else "quick"
    if value not in ("quick", "full"):
        raise ValueError(f"SCALE must be 'quick' or 'full', got {value!r}")
    return value


def is_full() -> bool:
    """``True`` when :func:`scale` is ``"full"``."""
    return scale() == "full"
