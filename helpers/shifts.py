"""Distribution shifts and attacks: rotation, noise, blends, scikit-learn digits, FGSM and PGD.

All batched torch code on the images' device (attacks on the model's device, chunked). Images are
``N x 1 x 28 x 28`` in ``[0, 1]``; every shifted image is clipped back to ``[0, 1]``.

* :func:`rotate` -- rotation by an angle in degrees (counter-clockwise, bilinear, zero fill), one angle or one per image.
* :func:`add_noise` -- additive Gaussian noise of standard deviation ``sigma``.
* :func:`blend` / :func:`blend_pairs` -- ``(1 - alpha) x + alpha x'``, a convex mix with another digit.
* :func:`sklearn_digits` -- scikit-learn's 8x8 digits resized like MNIST (another population of writers).
* :func:`fgsm` / :func:`pgd` -- L-infinity attacks of radius ``eps`` (our own batched code).
* :func:`apply_shift` -- one entry point ``(kind, strength)`` over all of the above, and :data:`SHIFT_GRIDS`, the
  strengths the notebooks sweep.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .batching import bytes_per_image, chunk_size_for, run_chunked
from .validation import check_images, check_model, check_target, model_device

__all__ = ["fgsm", "pgd", "rotate", "add_noise", "blend", "blend_pairs", "sklearn_digits", "apply_shift",
           "SHIFT_KINDS", "SHIFT_GRIDS"]

#: Shift kinds understood by :func:`apply_shift`.
SHIFT_KINDS = ("rotation", "noise", "blend", "fgsm", "pgd")

#: The strengths each notebook sweeps: degrees, sigma, alpha, and L-infinity eps for the attacks.
SHIFT_GRIDS: Dict[str, Tuple[float, ...]] = {
    "rotation": (0.0, 15.0, 30.0, 45.0, 60.0, 75.0, 90.0),
    "noise": (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0),
    "blend": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    "fgsm": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3),
    "pgd": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3),
}


def _loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
    return g


def _attack_chunk(model: nn.Module, x: torch.Tensor, batch_size: Optional[int]) -> int:
    # backward of a small CNN: ~200 x the input bytes per image is a safe bound
    return batch_size or chunk_size_for(bytes_per_image(x, 200), device=model_device(model),
                                        maximum=4096)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
         batch_size: Optional[int] = None) -> torch.Tensor:
    """Fast gradient sign method: ``clip(x + eps * sign(grad_x CE(f(x), y)), 0, 1)``. Returns ``N x ...``.

    Computed on the model's device in chunks of ``batch_size`` images (default: sized to the memory budget); the
    result is on ``x``'s device.
    """
    check_model(model)
    check_images(x)
    y = check_target(y, x.shape[0], name="y")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    dev = model_device(model)

    def run(a: int, b: int) -> torch.Tensor:
        xb, yb = x[a:b].to(dev), y[a:b].to(dev)
        return (xb + eps * _loss_grad(model, xb, yb).sign()).clamp(0, 1).detach().to(x.device)

    return run_chunked(run, x.shape[0], _attack_chunk(model, x, batch_size))


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 20,
        step_size: Optional[float] = None, random_start: bool = True, seed: int = 0,
        batch_size: Optional[int] = None) -> torch.Tensor:
    """Projected gradient descent in the L-infinity ball of radius ``eps`` (Madry et al. 2018).

    ``steps`` signed-gradient steps of ``step_size`` (default ``2.5 eps / steps``), each projected back onto the ball
    and onto ``[0, 1]``; a uniform random start when ``random_start``. Returns adversarial images ``N x ...`` on
    ``x``'s device, computed on the model's device in chunks (the chunk starting at row ``a`` draws its random start
    from a generator seeded with ``seed + a``, so one chunk reproduces the unchunked call).
    """
    check_model(model)
    check_images(x)
    y = check_target(y, x.shape[0], name="y")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    dev = model_device(model)

    def run(a: int, b: int) -> torch.Tensor:
        xb, yb = x[a:b].to(dev), y[a:b].to(dev)
        gen = torch.Generator(device=dev).manual_seed(seed + a)
        x_adv = xb.detach().clone()
        if random_start and eps > 0:
            x_adv = (x_adv + (torch.rand(xb.shape, generator=gen, device=dev) * 2 - 1) * eps).clamp(0, 1)
        for _ in range(steps):
            x_adv = x_adv + alpha * _loss_grad(model, x_adv, yb).sign()
            x_adv = torch.min(torch.max(x_adv, xb - eps), xb + eps).clamp(0, 1).detach()
        return x_adv.to(x.device)

    return run_chunked(run, x.shape[0], _attack_chunk(model, x, batch_size))


def rotate(x: torch.Tensor, degrees: Union[float, Sequence[float], torch.Tensor]) -> torch.Tensor:
    """Rotate each image counter-clockwise about its centre by ``degrees`` (bilinear, zeros shifted in).

    Args:
        x: ``N x C x H x W``.
        degrees: one angle for every image, or ``N`` angles.

    Returns:
        ``N x C x H x W`` in ``[0, 1]``. A multiple of 90 degrees on a square image is exact (equal to ``torch.rot90``).
    """
    check_images(x, min_dim=4)
    n = x.shape[0]
    ang = torch.as_tensor(degrees, dtype=torch.float64).flatten()
    if ang.numel() == 1:
        ang = ang.expand(n)
    if ang.numel() != n:
        raise ValueError(f"degrees must be one angle or {n} angles (one per image), got {ang.numel()}")
    if not bool(torch.isfinite(ang).all()):
        raise ValueError("degrees contains NaN/Inf")
    rad = ang * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # output pixel p samples the input at R(-angle) p in (x right, y down) normalised coordinates
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                         torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)


def add_noise(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """``clip(x + sigma * z, 0, 1)`` with ``z ~ N(0, I)`` drawn from a generator seeded with ``seed``. ``N x ...``."""
    check_images(x)
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma)) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)).clamp(0, 1)


def blend(x: torch.Tensor, x_other: torch.Tensor, alpha: float) -> torch.Tensor:
    """Convex mix ``(1 - alpha) x + alpha x_other`` of two image batches of the same shape, ``alpha`` in [0, 1]."""
    check_images(x)
    check_images(x_other, "x_other")
    if x_other.shape != x.shape:
        raise ValueError(f"x_other must have the shape of x {tuple(x.shape)}, got {tuple(x_other.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return ((1.0 - alpha) * x + alpha * x_other.to(x.device)).clamp(0, 1)


def blend_pairs(x: torch.Tensor, y: torch.Tensor, alpha: float, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Blend each image with a partner of a *different* label from the same batch (``alpha`` = partner's weight).

    Partners are a random derangement by label: image ``i`` is paired with a random image ``j`` with
    ``y[j] != y[i]`` (seeded). Returns the blended images ``N x ...`` and the partner labels ``N``.
    """
    check_images(x)
    y = check_target(y, x.shape[0], name="y")
    if int(torch.unique(y).numel()) < 2:
        raise ValueError("y holds a single class: blend_pairs needs at least two labels to pair different digits")
    gen = torch.Generator().manual_seed(seed)
    y_cpu = y.cpu()
    n = x.shape[0]
    partner = torch.randperm(n, generator=gen)
    # re-draw partners that share the label (vectorised; a few rounds suffice), then fix any left by a scan
    for _ in range(20):
        same = y_cpu[partner] == y_cpu
        if not bool(same.any()):
            break
        partner[same] = torch.randint(0, n, (int(same.sum()),), generator=gen)
    same = (y_cpu[partner] == y_cpu).nonzero().flatten()
    for i in same.tolist():  # rare leftovers only
        partner[i] = int((y_cpu != y_cpu[i]).nonzero()[0])
    partner = partner.to(x.device)
    return blend(x, x[partner], alpha), y[partner.to(y.device)]


def sklearn_digits(device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits as MNIST-like ``1797 x 1 x 28 x 28`` images and labels (see
    :func:`helpers.data.load_digits_shift`)."""
    from .data import load_digits_shift

    return load_digits_shift(device=device)


def apply_shift(kind: str, x: torch.Tensor, strength: float, *, y: Optional[torch.Tensor] = None,
                model: Optional[nn.Module] = None, seed: int = 0, pgd_steps: int = 10) -> torch.Tensor:
    """Shift ``x`` by ``kind`` at ``strength``: degrees (rotation), sigma (noise), alpha (blend), eps (fgsm / pgd).

    ``blend`` needs ``y`` (partners of another label); the attacks need ``model`` and ``y`` (the true labels).
    Strength 0 returns ``x`` unchanged (a copy). Returns ``N x ...`` images.
    """
    if kind not in SHIFT_KINDS:
        raise ValueError(f"kind must be one of {SHIFT_KINDS}, got {kind!r}")
    if strength == 0:
        check_images(x)
        return x.clone()
    if kind == "rotation":
        return rotate(x, strength)
    if kind == "noise":
        return add_noise(x, strength, seed=seed)
    if y is None:
        raise ValueError(f"y (the labels) is required for the {kind!r} shift")
    if kind == "blend":
        return blend_pairs(x, y, strength, seed=seed)[0]
    if model is None:
        raise ValueError(f"model is required for the {kind!r} attack")
    if kind == "fgsm":
        return fgsm(model, x, y, strength)
    return pgd(model, x, y, strength, steps=pgd_steps, seed=seed)
