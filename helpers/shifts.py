"""Distribution shifts and attacks: rotation, noise, blends, scikit-learn digits, FGSM and PGD.

All batched torch code on the images' device. Images are ``N x 1 x 28 x 28`` in ``[0, 1]``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .validation import check_images, check_model, check_target

__all__ = ["fgsm", "pgd"]


def _loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
    return g


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast gradient sign method: ``clip(x + eps * sign(grad_x CE(f(x), y)), 0, 1)``. Returns ``N x ...``."""
    check_model(model)
    check_images(x)
    y = check_target(y, x.shape[0], name="y")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    return (x + eps * _loss_grad(model, x, y.to(x.device)).sign()).clamp(0, 1).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 20,
        step_size: Optional[float] = None, random_start: bool = True, seed: int = 0) -> torch.Tensor:
    """Projected gradient descent in the L-infinity ball of radius ``eps`` (Madry et al. 2018).

    ``steps`` signed-gradient steps of ``step_size`` (default ``2.5 eps / steps``), each projected back onto the ball
    and onto ``[0, 1]``; a uniform random start when ``random_start``. Returns adversarial images ``N x ...``.
    """
    check_model(model)
    check_images(x)
    y = check_target(y, x.shape[0], name="y").to(x.device)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    gen = torch.Generator(device=x.device).manual_seed(seed)
    x_adv = x.detach().clone()
    if random_start and eps > 0:
        x_adv = (x_adv + (torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv + alpha * _loss_grad(model, x_adv, y).sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1).detach()
    return x_adv
