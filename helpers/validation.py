"""Input checks shared by every module: each raises an exception whose message names the bad argument.

Kept in one place so that every public routine fails the same way on the same bad input.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = [
    "check_images",
    "check_model",
    "check_target",
    "check_like",
    "check_positive_int",
    "check_finite",
    "model_device",
]


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``t`` contains NaN or Inf."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN/Inf value(s)")


def check_images(x: object, name: str = "x", *, min_dim: int = 2) -> torch.Tensor:
    """Check that ``x`` is a finite floating-point tensor with a batch dimension (``N x ...``, N >= 1)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float32 images in [0, 1]), got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have a batch dimension and at least {min_dim} dims (N x ...), got shape "
                         f"{tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (batch size 0)")
    check_finite(x, name)
    return x


def check_model(model: object, *, allow_train: bool = False) -> nn.Module:
    """Check that ``model`` is an ``nn.Module`` in eval mode (dropout/batch-norm would randomise every result)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training and not allow_train:
        raise ValueError("model is in train mode; call model.eval() first (dropout or batch-norm in train mode would "
                         "make every confidence and attribution random)")
    return model


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def check_target(target: Optional[torch.Tensor], n: int, n_classes: Optional[int] = None,
                 name: str = "target") -> Optional[torch.Tensor]:
    """Check a target: ``None``, an int, or an integer tensor of shape ``N`` with values in ``[0, n_classes)``.

    Returns a LongTensor of shape ``N`` (or ``None``).
    """
    if target is None:
        return None
    if isinstance(target, int) and not isinstance(target, bool):
        target = torch.full((n,), target, dtype=torch.long)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name} must be None, an int or a LongTensor of shape ({n},), got {type(target).__name__}")
    if target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {target.dtype}")
    if target.dim() == 0:
        target = target.expand(n)
    if target.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(target.shape)}")
    if n_classes is not None and n > 0:
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= n_classes:
            raise ValueError(f"{name} values must lie in [0, {n_classes}), got min {lo} and max {hi}")
    return target.long()


def check_like(t: object, x: torch.Tensor, name: str, *, allow_broadcast: bool = False) -> torch.Tensor:
    """Check that ``t`` is a finite tensor of the same shape as ``x`` (or broadcastable from ``1 x ...``)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    ok = t.shape == x.shape
    if allow_broadcast and not ok:
        ok = t.shape == x.shape[1:] or (t.dim() == x.dim() and t.shape[0] == 1 and t.shape[1:] == x.shape[1:])
    if not ok:
        extra = " (or 1 x ... / one sample's shape)" if allow_broadcast else ""
        raise ValueError(f"{name} must have the shape of x {tuple(x.shape)}{extra}, got {tuple(t.shape)}")
    check_finite(t, name)
    return t


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Check that ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value
