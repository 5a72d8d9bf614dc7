"""Baselines (one value per input) and reference sets (K shared or per-input values) for attributions.

``baseline=`` is one value per input: a name, a number (a constant input), one input (shape ``x[0]``) or ``N x ...``.
``references=`` is a set of ``K`` values averaged over by expected gradients and DeepSHAP: a name, a shared set
``K x ...``, or per-input sets ``N x K x ...``.

Names: ``"zero"``; ``"blur"`` (Gaussian blur of an image, ``sigma`` px, default 3); ``"uniform"`` (``U[lo, hi]``);
``"gaussian"`` (``x + N(0, sigma^2)``, default ``sigma`` 0.3, clipped to the input range); ``"max_distance"`` (per
feature the end of the range farthest from ``x``); ``"train"`` (random MNIST training images, chosen by ``seed``).
The valid input range is a parameter (``input_range=(lo, hi)``, MNIST's ``(0, 1)`` by default, ``None`` = unbounded),
never an assumption. Random values are a pure function of ``(seed, draw, feature)`` (:mod:`helpers.batching`), the
same for every input (common random numbers), so an input's baseline does not depend on its position in the batch.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from .batching import hash_normal, hash_uniform, keys
from .validation import check_finite, check_images, check_positive_int

__all__ = ["BASELINES", "MNIST_RANGE", "BaselineLike", "make_baseline", "make_references"]

BASELINES = ("zero", "blur", "uniform", "gaussian", "max_distance", "train")
MNIST_RANGE = (0.0, 1.0)
#: default blur width (pixels) of "blur" and noise std of "gaussian"
BLUR_SIGMA, GAUSSIAN_SIGMA = 3.0, 0.3

BaselineLike = Union[str, float, torch.Tensor, None]
Range = Optional[Tuple[float, float]]


def _range(input_range: Range, name: str) -> Tuple[float, float]:
    """``(lo, hi)`` or an error that says the baseline needs a bounded range."""
    if input_range is None:
        raise ValueError(f"baseline {name!r} needs a bounded input_range=(lo, hi); got None (unbounded)")
    lo, hi = (float(v) for v in input_range)
    if not lo < hi:
        raise ValueError(f"input_range must be (lo, hi) with lo < hi, got {input_range}")
    return lo, hi


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``N x C x H x W`` images (reflect padding, radius ``3 sigma``)."""
    if x.dim() != 4:
        raise ValueError(f"baseline 'blur' needs images N x C x H x W, got shape {tuple(x.shape)}; "
                         "use another baseline")
    radius = max(1, min(int(math.ceil(3 * sigma)), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k, c = k / k.sum(), x.shape[1]
    y = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _train_images(k: int, seed: int, like: torch.Tensor) -> torch.Tensor:
    """``k`` MNIST training images without replacement (a pure function of ``seed``); refuses other shapes at once."""
    if like[0].numel() != 784:
        raise ValueError(f"the 'train' baseline/references are MNIST training images (1 x 28 x 28), but x has "
                         f"per-sample shape {tuple(like.shape[1:])}; pass references= (K x ...) or baseline= yourself")
    from .data import load_mnist

    xt = load_mnist("train")[0]
    idx = torch.randperm(xt.shape[0], generator=torch.Generator().manual_seed(int(seed)))[:k]
    return xt[idx].reshape(k, *like.shape[1:]).to(device=like.device, dtype=like.dtype)


def _random(name: str, x: torch.Tensor, seed: int, stream: int, sigma: Optional[float], input_range: Range,
            k: int = 1) -> torch.Tensor:
    """``"uniform"`` or ``"gaussian"`` values like ``x`` (rows: inputs x ``k`` draws, input-major); draw ``j`` of
    every input uses the same random numbers (common random numbers: nothing depends on an input's position)."""
    key = keys(k, x[0].numel(), x.device).repeat(x.shape[0] // k, 1)
    if name == "uniform":
        lo, hi = _range(input_range, name)
        return (lo + (hi - lo) * hash_uniform(seed, key, stream)).view_as(x).to(x.dtype)
    sigma = GAUSSIAN_SIGMA if sigma is None else float(sigma)
    noisy = x + sigma * hash_normal(seed, key, stream).view_as(x).to(x.dtype)
    return noisy if input_range is None else noisy.clamp(*_range(input_range, name))


def make_baseline(name: BaselineLike, x: torch.Tensor, *, seed: int = 0, sigma: Optional[float] = None,
                  input_range: Range = MNIST_RANGE) -> torch.Tensor:
    """One baseline per input, like ``x`` (``N x ...``): ``name`` is one of :data:`BASELINES` (``None`` = ``"zero"``;
    ``seed``, ``sigma`` and ``input_range`` as in the module docstring), a number, or a tensor ``N x ...``,
    ``1 x ...`` or of one input's shape."""
    check_images(x)
    if name is None or (isinstance(name, str) and name == "zero"):
        return torch.zeros_like(x)
    if isinstance(name, Real) and not isinstance(name, bool):
        if not math.isfinite(float(name)):
            raise ValueError(f"baseline must be a finite number, got {name}")
        return torch.full_like(x, float(name))
    if isinstance(name, torch.Tensor):
        if name.shape not in (x.shape, x.shape[1:], (1,) + tuple(x.shape[1:])):
            raise ValueError(f"baseline must be one value per input: shape {tuple(x.shape)}, {tuple(x.shape[1:])} or "
                             f"1 x {tuple(x.shape[1:])}, got {tuple(name.shape)}; a shared set of K references is "
                             f"passed as references=")
        check_finite(name, "baseline")
        return name.to(device=x.device, dtype=x.dtype).expand_as(x).clone()
    if not isinstance(name, str):
        raise TypeError(f"baseline must be a name in {BASELINES}, a number or a tensor, got {type(name).__name__}")
    if name == "blur":
        return _blur(x, BLUR_SIGMA if sigma is None else float(sigma))
    if name in ("uniform", "gaussian"):
        return _random(name, x, seed, 11 if name == "uniform" else 12, sigma, input_range)
    if name == "max_distance":
        lo, hi = _range(input_range, name)
        return torch.where(x < (lo + hi) / 2, torch.full_like(x, hi), torch.full_like(x, lo))
    if name == "train":
        return _train_images(x.shape[0], seed, x)
    raise ValueError(f"unknown baseline {name!r}; valid: {', '.join(BASELINES)}, a number or a tensor")


def make_references(name: BaselineLike, x: torch.Tensor, k: int = 32, *, seed: int = 0,
                    sigma: Optional[float] = None, input_range: Range = MNIST_RANGE) -> torch.Tensor:
    """A reference set ``(N or 1) x K x ...`` for expected gradients and DeepSHAP.

    ``"train"``: ``K`` training images shared by every input (shap's background set). ``"uniform"`` /
    ``"gaussian"``: ``K`` draws per input (``N x K x ...``; draw ``k`` uses the same noise for every input). A tensor
    ``K x ...`` is a shared set, one ``N x K x ...`` per-input sets. Any other name or number: the per-input baseline
    (``K = 1``).
    """
    check_positive_int(k, "n_references")
    check_images(x)
    if isinstance(name, torch.Tensor):
        r = name.unsqueeze(0) if name.dim() == x.dim() else name      # a shared set K x ...: 1 x K x ...
        if r.dim() != x.dim() + 1 or r.shape[0] not in (1, x.shape[0]) or r.shape[2:] != x.shape[1:]:
            raise ValueError(f"references must be K x {tuple(x.shape[1:])} (shared) or {x.shape[0]} x K x "
                             f"{tuple(x.shape[1:])} (per input), got {tuple(name.shape)}")
        check_finite(r, "references")
        return r.to(device=x.device, dtype=x.dtype)
    if name == "train":
        return _train_images(k, seed, x).unsqueeze(0)
    if name in ("uniform", "gaussian"):
        xs = x.unsqueeze(1).expand(-1, k, *x.shape[1:]).flatten(0, 1)
        return _random(name, xs, seed, 21 if name == "uniform" else 22, sigma, input_range, k).view(-1, k, *x.shape[1:])
    return make_baseline(name, x, seed=seed, sigma=sigma, input_range=input_range).unsqueeze(1)
