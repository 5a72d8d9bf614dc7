"""Distribution shifts and attacks within a given input range: rotation, noise, blends, FGSM and PGD.

Every routine takes ``input_range=(lo, hi)`` (default MNIST's ``(0, 1)``), refuses an ``x`` outside it and keeps its
output inside it, or ``input_range=None`` for unbounded inputs (standardised features, normalised images). Attacks run
on the model's device in chunks, in the model's dtype (the result has ``x``'s). The population shift and the far-OOD
set are data: :func:`helpers.data.load_digits_shift`, :func:`helpers.data.load_animal_shapes`.
"""

from __future__ import annotations

import hashlib
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .batching import bytes_per_image, chunk_size_for, hash_normal, run_chunked
from .validation import check_images, check_model, check_target, model_device

__all__ = ["fgsm", "pgd", "rotate", "add_noise", "blend", "blend_pairs", "apply_shift", "SHIFT_KINDS", "SHIFT_GRIDS"]

SHIFT_KINDS = ("rotation", "noise", "blend", "fgsm", "pgd")
#: degrees, sigma, alpha, and L-infinity eps for the attacks.
SHIFT_GRIDS: Dict[str, Tuple[float, ...]] = {
    "rotation": (0.0, 15.0, 30.0, 45.0, 60.0, 75.0, 90.0),
    "noise": (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0),
    "blend": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    "fgsm": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3),
    "pgd": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3),
}
Range = Optional[Tuple[float, float]]


def _clip(x: torch.Tensor, input_range: Range, check: bool = False) -> torch.Tensor:
    """``x`` clamped to ``input_range`` (``None``: unchanged); with ``check``, refuse an ``x`` outside the range."""
    if input_range is None:
        return x
    if len(input_range) != 2 or not all(math.isfinite(v) for v in input_range) or not input_range[0] < input_range[1]:
        raise ValueError(f"input_range must be (lo, hi) with finite lo < hi, or None, got {input_range!r}")
    lo, hi = float(input_range[0]), float(input_range[1])
    if check and (float(x.min()) < lo - 1e-6 or float(x.max()) > hi + 1e-6):
        raise ValueError(f"x has values in [{float(x.min()):.3g}, {float(x.max()):.3g}], outside input_range "
                         f"{input_range}: pass input_range=(lo, hi) of your data, or None for unbounded inputs")
    return x.clamp(lo, hi)


def _labels(y: Optional[torch.Tensor], n: int) -> torch.Tensor:
    if y is None:
        raise ValueError("y is None: give the true labels (a LongTensor N)")
    return check_target(y, n, name="y")


def _loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy at ``x`` (in the model's dtype; one binary logit = class-1 log-odds)."""
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        z = model(x)
        if z.dim() == 1 or z.shape[1] == 1:
            z = torch.cat([torch.zeros_like(z.reshape(-1, 1)), z.reshape(-1, 1)], 1)
        check_target(y, x.shape[0], z.shape[1], name="y")  # an out-of-range label, named, not an IndexError
        (g,) = torch.autograd.grad(F.cross_entropy(z, y, reduction="sum"), x)
    return g


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, batch_size: Optional[int] = None,
         input_range: Range = (0.0, 1.0)) -> torch.Tensor:
    """Fast gradient sign method: ``clip(x + eps sign(grad_x CE(f(x), y)))`` (``N x ...``, on ``x``'s device), i.e.
    one :func:`pgd` step of size ``eps`` without a random start."""
    return pgd(model, x, y, eps, steps=1, step_size=eps, random_start=False, batch_size=batch_size,
               input_range=input_range)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 20,
        step_size: Optional[float] = None, random_start: bool = True, seed: int = 0,
        batch_size: Optional[int] = None, input_range: Range = (0.0, 1.0)) -> torch.Tensor:
    """Projected gradient descent in the L-infinity ball of radius ``eps`` (Madry et al. 2018): ``steps``
    signed-gradient steps of ``step_size`` (default ``2.5 eps / steps``), each projected onto the ball and
    ``input_range``. The random start is one uniform draw of one input's shape from ``seed``, shared by every input
    (so a result does not depend on the batch, the position or the chunk size). Runs on the model's device in chunks,
    in the model's dtype; returns ``N x ...`` like ``x``."""
    check_model(model)
    check_images(x)
    y = _labels(y, x.shape[0])
    if not (isinstance(eps, (int, float)) and math.isfinite(eps)) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    _clip(x, input_range, check=True)
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    start = torch.rand(x.shape[1:], generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1
    dev, dtype = model_device(model), next((p.dtype for p in model.parameters()), torch.float32)

    def run(a: int, b: int) -> torch.Tensor:
        xb, yb = x[a:b].to(dev, dtype), y[a:b].to(dev)
        x_adv = _clip(xb + eps * start.to(xb), input_range) if random_start and eps > 0 else xb.clone()
        for _ in range(steps):
            x_adv = x_adv + alpha * _loss_grad(model, x_adv, yb).sign()
            x_adv = _clip(torch.min(torch.max(x_adv, xb - eps), xb + eps), input_range).detach()
        return x_adv.to(x.device, x.dtype)

    return run_chunked(run, x.shape[0], batch_size or chunk_size_for(bytes_per_image(x, 200), device=dev, maximum=4096))


def rotate(x: torch.Tensor, degrees: Union[float, Sequence[float], torch.Tensor],
           input_range: Range = (0.0, 1.0)) -> torch.Tensor:
    """Rotate each image (``N x C x H x W``) counter-clockwise about its centre by ``degrees`` (one angle or ``N``),
    bilinear, zeros shifted in. A multiple of 90 degrees on a square image equals ``torch.rot90``."""
    _clip(check_images(x, min_dim=4), input_range, check=True)
    n = x.shape[0]
    ang = torch.as_tensor(degrees, dtype=torch.float64).flatten()
    ang = ang.expand(n) if ang.numel() == 1 else ang
    if ang.numel() != n or not bool(torch.isfinite(ang).all()):
        raise ValueError(f"degrees must be one finite angle or {n} (one per image), got {ang.numel()}")
    rad = ang * (math.pi / 180.0)
    cos, sin, zero = torch.cos(rad), torch.sin(rad), torch.zeros_like(rad)
    # output pixel p samples the input at R(-angle) p in (x right, y down) normalised coordinates
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return _clip(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False), input_range)


def add_noise(x: torch.Tensor, sigma: float, seed: int = 0, input_range: Range = (0.0, 1.0)) -> torch.Tensor:
    """``clip(x + sigma z)``, ``z ~ N(0, I)`` independent per input and keyed by the input's content and ``seed``
    (the package's counter-based normals): an input gets the same noise at any batch position or in any batch."""
    _clip(check_images(x), input_range, check=True)
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma)) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    flat = x.detach().reshape(x.shape[0], -1)
    rows = [hashlib.blake2b(r.tobytes(), digest_size=5).digest() for r in flat.to("cpu", torch.float32).numpy()]
    row_key = torch.tensor([int.from_bytes(b, "little") for b in rows], dtype=torch.int64, device=x.device)
    key = row_key[:, None] * flat.shape[1] + torch.arange(flat.shape[1], device=x.device)
    z = hash_normal(seed, key).to(x.dtype).view_as(x)
    return _clip(x + sigma * z, input_range)


def blend(x: torch.Tensor, x_other: torch.Tensor, alpha: float, input_range: Range = (0.0, 1.0)) -> torch.Tensor:
    """Convex mix ``(1 - alpha) x + alpha x_other`` of two batches of one shape, ``alpha`` in [0, 1]."""
    _clip(check_images(x), input_range, check=True)
    _clip(check_images(x_other, "x_other"), input_range, check=True)
    if x_other.shape != x.shape:
        raise ValueError(f"x_other must have the shape of x {tuple(x.shape)}, got {tuple(x_other.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return (1.0 - alpha) * x + alpha * x_other.to(x.device)


def blend_pairs(x: torch.Tensor, y: torch.Tensor, alpha: float, seed: int = 0,
                input_range: Range = (0.0, 1.0)) -> Tuple[torch.Tensor, torch.Tensor]:
    """Blend each image with a random partner of a *different* label from the batch (``alpha`` = partner's weight);
    returns the blended images ``N x ...`` and the partner labels ``N``."""
    check_images(x)
    y = _labels(y, x.shape[0]).cpu()
    if int(torch.unique(y).numel()) < 2:
        raise ValueError("y holds a single class: blend_pairs needs at least two labels to pair different digits")
    gen, partner = torch.Generator().manual_seed(seed), torch.empty_like(y)
    for c in torch.unique(y):  # each image of label c gets a uniformly drawn partner among the other labels
        mine, others = (y == c).nonzero().flatten(), (y != c).nonzero().flatten()
        partner[mine] = others[torch.randint(0, others.numel(), (mine.numel(),), generator=gen)]
    return blend(x, x[partner.to(x.device)], alpha, input_range), y[partner]


def apply_shift(kind: str, x: torch.Tensor, strength: float, *, y: Optional[torch.Tensor] = None,
                model: Optional[nn.Module] = None, seed: int = 0, pgd_steps: int = 10,
                input_range: Range = (0.0, 1.0)) -> torch.Tensor:
    """Shift ``x`` by ``kind`` at ``strength``: degrees (rotation), sigma (noise), alpha (blend, needs ``y``), eps
    (fgsm / pgd, need ``model`` and the true ``y``). Strength 0 returns a copy of ``x``."""
    if kind not in SHIFT_KINDS:
        raise ValueError(f"kind must be one of {SHIFT_KINDS}, got {kind!r}")
    if strength == 0:
        return check_images(x).clone()
    if kind == "rotation":
        return rotate(x, strength, input_range)
    if kind == "noise":
        return add_noise(x, strength, seed=seed, input_range=input_range)
    if kind == "blend":
        return blend_pairs(x, y, strength, seed=seed, input_range=input_range)[0]
    if model is None:
        raise ValueError(f"model is required for the {kind!r} attack")
    if kind == "fgsm":
        return fgsm(model, x, y, strength, input_range=input_range)
    return pgd(model, x, y, strength, steps=pgd_steps, seed=seed, input_range=input_range)
