"""helpers.shifts: exact cases (90-degree rotation, zero-strength shifts), attack properties, bad input."""

from __future__ import annotations

import pytest
import torch

from helpers import shifts as S
from helpers.batching import predict


def test_rotation_exact_cases(mnist_small):
    x, _ = mnist_small
    torch.testing.assert_close(S.rotate(x, 0.0), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(S.rotate(x, 90.0), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(S.rotate(x, -90.0), torch.rot90(x, -1, dims=(2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(S.rotate(x, 180.0), torch.rot90(x, 2, dims=(2, 3)), atol=1e-5, rtol=0)
    # per-image angles: each row rotated by its own angle
    angles = torch.tensor([0.0, 90.0] * 16)
    r = S.rotate(x, angles)
    torch.testing.assert_close(r[1], torch.rot90(x[1], 1, dims=(1, 2)), atol=1e-5, rtol=0)
    torch.testing.assert_close(r[0], x[0], atol=1e-5, rtol=0)
    # mass is (nearly) kept for a digit in the middle of the frame, and the result stays in [0, 1]
    r45 = S.rotate(x, 45.0)
    assert r45.min() >= 0 and r45.max() <= 1
    torch.testing.assert_close(r45.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=0.05, atol=0)


def test_noise_and_blend(mnist_small):
    x, y = mnist_small
    a, b = S.add_noise(x, 0.3, seed=1), S.add_noise(x, 0.3, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, S.add_noise(x, 0.3, seed=2))
    assert a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(S.add_noise(x, 0.0), x)
    # away from the clipping, the noise has the requested standard deviation
    mid = 0.5 + 1e-3 * torch.arange(64.0).view(64, 1, 1, 1).expand(64, 1, 28, 28)  # 64 distinct images
    assert (S.add_noise(mid, 0.05) - mid).std().item() == pytest.approx(0.05, rel=0.05)
    x2 = x.flip(0)
    torch.testing.assert_close(S.blend(x, x2, 0.25), 0.75 * x + 0.25 * x2)
    torch.testing.assert_close(S.blend(x, x2, 0.0), x)
    blended, partner_y = S.blend_pairs(x, y, 0.5, seed=0)
    assert blended.shape == x.shape and bool((partner_y != y).all())


def test_attacks_reduce_accuracy_and_respect_eps(cnn, mnist_test):
    x, y = mnist_test[0][:24], mnist_test[1][:24]
    eps = 0.2
    clean = (predict(cnn, x) == y).float().mean().item()
    for adv in (S.fgsm(cnn, x, y, eps), S.pgd(cnn, x, y, eps, steps=5, seed=0)):
        assert (adv - x).abs().max().item() <= eps + 1e-6
        assert adv.min() >= 0 and adv.max() <= 1
        assert (predict(cnn, adv) == y).float().mean().item() < clean - 0.3
    # chunking does not change FGSM; PGD's first chunk reproduces the unchunked call
    torch.testing.assert_close(S.fgsm(cnn, x, y, eps, batch_size=7), S.fgsm(cnn, x, y, eps))
    full = S.pgd(cnn, x[:8], y[:8], eps, steps=3, seed=4)
    torch.testing.assert_close(S.pgd(cnn, x[:8], y[:8], eps, steps=3, seed=4, batch_size=8), full)
    # pgd is at least as strong as fgsm on the same images (more steps, projected)
    assert (predict(cnn, S.pgd(cnn, x, y, eps, steps=5)) == y).sum() <= (predict(cnn, S.fgsm(cnn, x, y, eps)) == y).sum()
    # works under inference_mode too (the gradient is re-enabled inside)
    with torch.inference_mode():
        adv = S.fgsm(cnn, x[:4], y[:4], 0.1)
    assert adv.shape == (4, 1, 28, 28)


@pytest.mark.parametrize("kind", S.SHIFT_KINDS)
def test_apply_shift_zero_is_identity(kind, cnn, mnist_small):
    x, y = mnist_small
    torch.testing.assert_close(S.apply_shift(kind, x[:4], 0.0, y=y[:4], model=cnn), x[:4])
    grid = S.SHIFT_GRIDS[kind]
    out = S.apply_shift(kind, x[:4], grid[1], y=y[:4], model=cnn)
    assert out.shape == (4, 1, 28, 28) and not torch.equal(out, x[:4])


def test_bad_input(cnn, mnist_small):
    x, y = mnist_small
    with pytest.raises(ValueError, match="degrees"):
        S.rotate(x, [10.0, 20.0])
    with pytest.raises(ValueError, match="x contains"):
        S.rotate(torch.full_like(x, float("nan")), 10.0)
    with pytest.raises(ValueError, match="sigma"):
        S.add_noise(x, -0.1)
    with pytest.raises(ValueError, match="alpha"):
        S.blend(x, x, 1.5)
    with pytest.raises(ValueError, match="x_other"):
        S.blend(x, x[:3], 0.5)
    with pytest.raises(ValueError, match="single class"):
        S.blend_pairs(x, torch.zeros_like(y), 0.5)
    with pytest.raises(ValueError, match="eps"):
        S.fgsm(cnn, x, y, -0.1)
    with pytest.raises(ValueError, match="y must have shape"):
        S.pgd(cnn, x, y[:3], 0.1)
    with pytest.raises(ValueError, match="kind"):
        S.apply_shift("zoom", x, 1.0)
    with pytest.raises(ValueError, match="model is required"):
        S.apply_shift("fgsm", x, 0.1, y=y)


def _tabular():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1)) * 3  # standardised features, far outside [0, 1]
    return model, x, torch.arange(32) % 3


def test_input_range_none_leaves_unbounded_inputs_alone():
    model, x, y = _tabular()
    adv = S.fgsm(model, x, y, 0.5, input_range=None)
    moved = (adv - x).abs()
    assert torch.allclose(moved[moved > 0], torch.tensor(0.5))  # every feature moves by exactly eps, none clamped
    assert adv.min() < 0 and adv.max() > 1
    p = S.pgd(model, x, y, 0.5, steps=3, input_range=None)
    assert (p - x).abs().max() <= 0.5 + 1e-6 and p.min() < 0
    torch.testing.assert_close(S.add_noise(x, 0.0, input_range=None), x)
    noisy = S.add_noise(x, 1.0, input_range=None)
    assert noisy.min() < 0 and noisy.max() > 1 and (noisy - x).std().item() == pytest.approx(1.0, rel=0.3)
    with pytest.raises(ValueError, match="outside input_range"):  # never clamp standardised data silently
        S.fgsm(model, x, y, 0.5)
    lo_hi = S.fgsm(model, x.clamp(-2.0, 3.0), y, 0.5, input_range=(-2.0, 3.0))
    assert lo_hi.min() >= -2.0 and lo_hi.max() <= 3.0 and lo_hi.min() < 0
    img = torch.full((2, 1, 8, 8), -1.5)
    assert S.rotate(img, 90.0, input_range=None)[:, :, 2:6, 2:6].allclose(torch.tensor(-1.5))
    with pytest.raises(ValueError, match="input_range"):
        S.fgsm(model, x, y, 0.1, input_range=(1.0, 0.0))


def test_attacks_accept_float64_and_name_bad_labels(cnn, mnist_small):
    x, y = mnist_small
    for attack in (S.fgsm, S.pgd):
        adv = attack(cnn, x[:4].double(), y[:4], 0.1)
        assert adv.dtype == torch.float64
        torch.testing.assert_close(adv.float(), attack(cnn, x[:4], y[:4], 0.1), atol=1e-6, rtol=0)
        with pytest.raises(ValueError, match="y is None"):
            attack(cnn, x[:4], None, 0.1)
        with pytest.raises(ValueError, match=r"y values must lie in \[0, 10\)"):
            attack(cnn, x[:4], torch.tensor([0, 1, 2, 10]), 0.1)


def test_pgd_does_not_depend_on_batch_position(cnn, mnist_small):
    x, y = mnist_small
    batch = S.pgd(cnn, x[:6], y[:6], 0.2, steps=3, seed=3)
    torch.testing.assert_close(batch[4:5], S.pgd(cnn, x[4:5], y[4:5], 0.2, steps=3, seed=3))
    torch.testing.assert_close(batch, S.pgd(cnn, x[:6], y[:6], 0.2, steps=3, seed=3, batch_size=4))


def test_noise_follows_the_input_not_its_batch_position():
    """The same image gets the same noise at another batch position and in another batch (common random numbers)."""
    x = torch.rand(6, 1, 5, 5, generator=torch.Generator().manual_seed(3)) * 0.5 + 0.25
    noisy = S.add_noise(x, 0.1, seed=4)
    torch.testing.assert_close(S.add_noise(x.flip(0), 0.1, seed=4), noisy.flip(0))
    torch.testing.assert_close(S.add_noise(x[2:3], 0.1, seed=4), noisy[2:3])
    # different images still get different (independent) noise
    z = (noisy - x) / 0.1
    assert abs(torch.corrcoef(z.reshape(6, -1))[0, 1].item()) < 0.5
