"""Feature attributions with any baseline, batched on the model's device.

One entry point, :func:`attribute`, and one lower-level routine, :func:`explain`, that also returns what ABC
(:mod:`helpers.abc`) needs: the *multipliers* (the gradient-like signal ``G`` with ``A = G * (x - b)`` for the
path methods) and the *references* ``b`` that a mutated feature takes.

Methods (``method=``):

=====================  ==========================================================================================
``"grad"``             ``A = G = d f_t / d x`` at ``x`` (saliency; local units, no ``x - b`` factor).
``"ig"``               Integrated gradients (Sundararajan et al. 2017):
                       ``A_j = (x_j - b_j) * integral_0^1 d f_t/d x_j (b + a (x - b)) da``, the integral by
                       Gauss-Legendre (default, as in captum) or a Riemann rule with ``n_steps`` points;
                       ``G`` is the path-averaged gradient.
``"expected_gradients"``  IG averaged over ``K`` references drawn from the training set (Erion et al. 2021):
                       ``A = mean_k (x - r_k) * Gbar_k``. Default: one uniform random ``a`` per reference (the
                       original Monte-Carlo estimator); ``n_steps=int`` integrates each path by quadrature.
``"deepshap"``         DeepLift-Rescale averaged over a background set, with shap's ``DeepExplainer`` rules
                       (:mod:`helpers.deeplift`): ``A = mean_k (x - r_k) * m_k``, ``G = mean_k m_k``.
                       captum's ``DeepLiftShap`` was measured first: on our MaxPool CNN its attributions break
                       completeness by ~10 logits per image and differ from shap's by 36% (relative L2), so
                       the rules are reimplemented: one forward pass of the inputs and one of the references,
                       then one explicit backward pass over the (input, reference) pairs
                       (:func:`helpers.deeplift.deepshap_multipliers`; models that are not a chain of modules
                       use a hook version with one ``[x; r]`` forward and backward pass).
``"smoothgrad"``       ``A = G = mean_s d f_t/d x (x + eps_s)``, ``eps_s ~ N(0, sigma^2)`` (Smilkov et al. 2017).
``"gbp"``              Guided backpropagation (captum ``GuidedBackprop``): ReLU gradients are clipped at 0 on the
                       way back, so on ReLU models it differs from ``"grad"``.
=====================  ==========================================================================================

Baselines (``baseline=``): ``"zero"``, ``"blur"`` (Gaussian blur of ``x``, ``sigma`` px), ``"uniform"`` (U[0, 1]
noise), ``"gaussian"`` (``x + N(0, sigma^2)`` clipped to [0, 1]), ``"max_distance"`` (per pixel the value in [0, 1]
farthest from ``x``), ``"train"`` (random training images), or a tensor (shape of ``x``, of one sample, or
``1 x ...``). ``None`` means the method's natural default: ``"zero"`` for the path/gradient methods and ``"train"``
for ``"expected_gradients"`` / ``"deepshap"`` (``K = n_references`` training images, a shared background set).

Randomness (noise baselines, reference sets, SmoothGrad noise, EG's random points) is a pure function of
``(seed, input index, sample index)`` through a counter-based hash (:func:`hash_uniform`), so results do not depend
on the chunk size or on the device.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .batching import bytes_per_image, chunk_size_for, run_chunked
from .deeplift import deeplift_multipliers, deepshap_chain, deepshap_multipliers
from .fastpath import channels_last_forward
from .validation import check_images, check_like, check_model, check_positive_int, check_target, model_device

__all__ = [
    "METHODS",
    "BASELINES",
    "INTEGRATION_RULES",
    "Explanation",
    "attribute",
    "explain",
    "make_baseline",
    "make_references",
    "hash_uniform",
    "hash_normal",
    "integration_points",
    "fast_model",
    "deeplift_multipliers",
    "hessian_vector_product",
]

METHODS = ("grad", "ig", "expected_gradients", "deepshap", "smoothgrad", "gbp")
BASELINES = ("zero", "blur", "uniform", "gaussian", "max_distance", "train")
INTEGRATION_RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
MULTI_REFERENCE = ("expected_gradients", "deepshap")

#: default blur width (pixels) of the "blur" baseline and noise std of the "gaussian" baseline
BLUR_SIGMA = 3.0
GAUSSIAN_SIGMA = 0.3

BaselineLike = Union[str, torch.Tensor, None]

# ----------------------------------------------------------------------------------------------------------------
# counter-based randomness: a splitmix64 hash of (stream, seed, index) -> uniform in [0, 1)
# ----------------------------------------------------------------------------------------------------------------

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_M2 = 0x94D049BB133111EB - (1 << 64)


def _srl(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's ``>>`` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix64(z: torch.Tensor) -> torch.Tensor:
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


def _mix_int(v: int) -> int:
    """splitmix64 finaliser on a Python int (returns a signed 64-bit int)."""
    v &= (1 << 64) - 1
    v = ((v ^ (v >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    v = ((v ^ (v >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    v ^= v >> 31
    return v - (1 << 64) if v >= (1 << 63) else v


def hash_uniform(seed: int, key: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """Uniform float32 numbers in ``[0, 1)`` (24 random bits) that are a pure function of ``(seed, stream, key)``.

    ``key`` is an int64 tensor of counters (e.g. ``(input * S + sample) * d + feature``); the result has its shape
    and device. The same key gives the same number on any device and in any chunk, which makes every random routine
    here chunk-size invariant.
    """
    offset = _mix_int(int(seed) * 1000003 + int(stream) * 7919 + 12345)
    z = _mix64(key.to(torch.int64) * _GOLDEN + offset)
    return _srl(z, 40).to(torch.float32) * (2.0 ** -24)


def hash_normal(seed: int, key: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """Standard normal float32 numbers from :func:`hash_uniform` by Box-Muller (two streams)."""
    u1 = hash_uniform(seed, key, 2 * stream + 101)
    u2 = hash_uniform(seed, key, 2 * stream + 102)
    return torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * math.pi * u2)


def _keys(n: int, per: int, device: torch.device, start: int = 0) -> torch.Tensor:
    """int64 counters ``start .. start + n*per`` shaped ``n x per``."""
    return torch.arange(start, start + n * per, device=device, dtype=torch.int64).view(n, per)


# ----------------------------------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------------------------------


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``N x C x H x W`` images (reflect padding, radius ``3 sigma``)."""
    if x.dim() != 4:
        raise ValueError(f"the 'blur' baseline needs images N x C x H x W, got shape {tuple(x.shape)}")
    radius = max(1, min(int(math.ceil(3 * sigma)), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _train_images(k: int, seed: int, like: torch.Tensor) -> torch.Tensor:
    """``k`` training images drawn without replacement (a pure function of ``seed``), on ``like``'s device."""
    from .data import load_mnist

    xt, _ = load_mnist("train")
    if tuple(xt.shape[1:]) != tuple(like.shape[1:]):
        raise ValueError(f"baseline 'train' draws MNIST training images of shape {tuple(xt.shape[1:])}, but x has "
                         f"per-sample shape {tuple(like.shape[1:])}; pass a tensor baseline instead")
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(xt.shape[0], generator=g)[:k]
    return xt[idx].to(device=like.device, dtype=like.dtype)


def make_baseline(name: BaselineLike, x: torch.Tensor, *, seed: int = 0, sigma: Optional[float] = None
                  ) -> torch.Tensor:
    """One baseline per input: a tensor with the shape, dtype and device of ``x`` (``N x ...``).

    Args:
        name: one of :data:`BASELINES`, or a tensor (shape of ``x``, of one sample, or ``1 x ...``; broadcast).
        x: inputs ``N x ...`` (images ``N x 1 x 28 x 28`` in [0, 1]).
        seed: for the random baselines (``"uniform"``, ``"gaussian"``, ``"train"``): a pure function of
            ``(seed, input index)``.
        sigma: blur width in pixels (``"blur"``, default 3) or noise std (``"gaussian"``, default 0.3).
    """
    check_images(x)
    if name is None:
        name = "zero"
    if isinstance(name, torch.Tensor):
        b = check_like(name, x, "baseline", allow_broadcast=True)
        return b.to(device=x.device, dtype=x.dtype).expand_as(x).clone()
    if not isinstance(name, str):
        raise TypeError(f"baseline must be a string in {BASELINES} or a tensor, got {type(name).__name__}")
    n, d = x.shape[0], x[0].numel()
    if name == "zero":
        return torch.zeros_like(x)
    if name == "blur":
        return _gaussian_blur(x, BLUR_SIGMA if sigma is None else float(sigma))
    if name == "uniform":
        return hash_uniform(seed, _keys(n, d, x.device), stream=11).view_as(x).to(x.dtype)
    if name == "gaussian":
        s = GAUSSIAN_SIGMA if sigma is None else float(sigma)
        return (x + s * hash_normal(seed, _keys(n, d, x.device), stream=12).view_as(x).to(x.dtype)).clamp(0, 1)
    if name == "max_distance":
        return (x < 0.5).to(x.dtype)
    if name == "train":
        return _train_images(n, seed, x)
    raise ValueError(f"unknown baseline {name!r}; valid: {', '.join(BASELINES)} or a tensor")


def make_references(name: BaselineLike, x: torch.Tensor, k: int, *, seed: int = 0,
                    sigma: Optional[float] = None) -> torch.Tensor:
    """A reference set for the multi-reference methods: ``(N or 1) x K x ...``.

    ``"train"`` gives ``K`` training images shared by every input (a background set, as in shap). The random
    per-input baselines (``"uniform"``, ``"gaussian"``) give ``K`` independent draws per input (``N x K x ...``).
    Deterministic baselines give ``K = 1`` (and the multi-reference methods reduce to their single-reference form).
    A tensor of shape ``K x ...`` (per-sample shape of ``x``) is used as a shared background set.
    """
    check_positive_int(k, "n_references")
    if isinstance(name, torch.Tensor):
        if name.dim() == x.dim() and name.shape[1:] == x.shape[1:]:
            from .validation import check_finite

            check_finite(name, "references")
            return name.to(device=x.device, dtype=x.dtype).unsqueeze(0)
        raise ValueError(f"references must have shape K x {tuple(x.shape[1:])}, got {tuple(name.shape)}")
    if name == "train":
        return _train_images(k, seed, x).unsqueeze(0)
    if name in ("uniform", "gaussian"):
        n = x.shape[0]
        xs = x.unsqueeze(1).expand(n, k, *x.shape[1:]).reshape(n * k, *x.shape[1:])
        # draw per (input, reference) so that input i's references do not depend on N
        d = x[0].numel()
        keys = _keys(n * k, d, x.device)
        if name == "uniform":
            r = hash_uniform(seed, keys, stream=21).view_as(xs)
        else:
            s = GAUSSIAN_SIGMA if sigma is None else float(sigma)
            r = (xs + s * hash_normal(seed, keys, stream=22).view_as(xs)).clamp(0, 1)
        return r.to(x.dtype).view(n, k, *x.shape[1:])
    return make_baseline(name, x, seed=seed, sigma=sigma).unsqueeze(1)


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def integration_points(n_steps: int, rule: str = "gausslegendre") -> Tuple[torch.Tensor, torch.Tensor]:
    """``(alphas, weights)`` (float64, length ``n_steps``) of a quadrature rule on ``[0, 1]``; weights sum to 1.

    The same points and weights as captum's rules of the same name, except ``"riemann_trapezoid"``: captum spaces
    its points ``1/(n-1)`` apart but weights them ``1/n`` (halved at the ends), so its weights sum to ``(n-1)/n``
    and IG on a linear model comes out ``(n-1)/n`` too small; here the trapezoid weights are ``1/(n-1)``.
    """
    import numpy as np

    check_positive_int(n_steps, "n_steps")
    n = n_steps
    if rule == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        return torch.tensor(0.5 * (nodes + 1)), torch.tensor(0.5 * w)
    if rule == "riemann_left":
        return torch.arange(n, dtype=torch.float64) / n, torch.full((n,), 1.0 / n, dtype=torch.float64)
    if rule == "riemann_right":
        return torch.arange(1, n + 1, dtype=torch.float64) / n, torch.full((n,), 1.0 / n, dtype=torch.float64)
    if rule == "riemann_middle":
        return (torch.arange(n, dtype=torch.float64) + 0.5) / n, torch.full((n,), 1.0 / n, dtype=torch.float64)
    if rule == "riemann_trapezoid":
        if n < 2:
            raise ValueError("n_steps must be >= 2 for the trapezoid rule")
        w = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        w[0] = w[-1] = 0.5 / (n - 1)
        return torch.linspace(0, 1, n, dtype=torch.float64), w
    raise ValueError(f"integration must be one of {INTEGRATION_RULES}, got {rule!r}")


def fast_model(model: nn.Module, x: Optional[torch.Tensor] = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A forward function for inference and input gradients: :func:`helpers.fastpath.channels_last_forward` of a
    CNN (cached, rebuilt when a weight changes), or ``model`` itself for non-image inputs or models without conv."""
    if x is not None and x.dim() != 4:
        return model
    return channels_last_forward(model)


def _check_inputs(model: nn.Module, x: torch.Tensor) -> torch.device:
    check_model(model)
    check_images(x)
    dev = model_device(model)
    p = next(iter(model.parameters()), None)
    if p is not None and p.is_floating_point() and x.dtype != p.dtype:
        raise TypeError(f"x has dtype {x.dtype} but the model's parameters are {p.dtype}; convert x (x.to({p.dtype}))")
    try:
        with torch.inference_mode():
            out = model(x[:1].to(dev))
    except Exception as err:  # noqa: BLE001 - re-raised with a message that names x
        raise ValueError(f"the model does not accept x of shape {tuple(x.shape)}: {err}") from err
    if out.dim() != 2:
        raise ValueError(f"the model must return logits N x C, got output shape {tuple(out.shape)}")
    return dev


def _predict(model: nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    fwd = fast_model(model, x)

    def run(a: int, b: int) -> torch.Tensor:
        with torch.inference_mode():
            return fwd(x[a:b]).argmax(1)

    return run_chunked(run, x.shape[0], chunk)


def _grad_of_target(model: nn.Module, xs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``d f_target / d xs`` for a batch ``M x ...`` (target ``M``)."""
    fwd = fast_model(model, xs)          # channels-last copy of a CNN: its backward is faster too
    with torch.enable_grad():
        xs = xs.detach().requires_grad_(True)
        out = fwd(xs)
        (g,) = torch.autograd.grad(out.gather(1, target.view(-1, 1)).sum(), xs)
    return g.contiguous()


def _bytes_per_image(x: torch.Tensor, backward: bool = True) -> int:
    return bytes_per_image(x, 160 if backward else 64)


# ----------------------------------------------------------------------------------------------------------------
# the explanation
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Explanation:
    """What :func:`explain` returns.

    Attributes:
        attributions: ``A``, shape of ``x`` (what :func:`attribute` returns).
        multipliers: ``G``, shape of ``x``: the gradient-like signal. For the path methods ``A = G * (x - b)``
            (``G`` = path-averaged gradient for IG; reference-averaged for EG / DeepSHAP); for ``"grad"``,
            ``"smoothgrad"`` and ``"gbp"`` ``A = G``.
        references: ``(N or 1) x K x ...``: the baseline value(s) a mutated feature takes (K = 1 except for the
            multi-reference methods).
        target: LongTensor ``N``: the explained class.
    """

    attributions: torch.Tensor
    multipliers: torch.Tensor
    references: torch.Tensor
    target: torch.Tensor


def explain(model: nn.Module, x: torch.Tensor, target: Optional[torch.Tensor] = None, method: str = "ig",
            baseline: BaselineLike = None, *, n_steps: Optional[int] = None, integration: str = "gausslegendre",
            n_references: int = 32, references: Optional[torch.Tensor] = None, n_samples: int = 25,
            noise_sigma: float = 0.15, sigma: Optional[float] = None, seed: int = 0,
            chunk_size: Optional[int] = None) -> Explanation:
    """Attributions plus the multipliers and references ABC needs; see the module docstring for the formulas.

    Args:
        model: an ``nn.Module`` in eval mode returning logits ``N x C``.
        x: inputs ``N x ...`` (float, finite); moved to the model's device for the computation.
        target: LongTensor ``N`` / int / ``None`` (= the predicted class).
        method: one of :data:`METHODS`.
        baseline: a name in :data:`BASELINES`, a tensor, or ``None`` (the method's default).
        n_steps: quadrature points per path (``"ig"``: default 50; ``"expected_gradients"``: default ``None`` =
            one uniform random point per reference).
        integration: quadrature rule, one of :data:`INTEGRATION_RULES` (captum's names).
        n_references: ``K`` for ``"expected_gradients"`` / ``"deepshap"`` with a random baseline.
        references: an explicit background set ``K x ...`` for the multi-reference methods (overrides ``baseline``).
        n_samples, noise_sigma: SmoothGrad's number of noisy copies and noise std.
        sigma: parameter of the ``"blur"`` / ``"gaussian"`` baselines.
        seed: seed of every random choice (baselines, references, noise, random points).
        chunk_size: inputs per batched call (default: from the memory budget).

    Returns:
        An :class:`Explanation`; all tensors on the model's device.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    dev = _check_inputs(model, x)
    x = x.to(dev)
    n = x.shape[0]
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size")
    if n_steps is not None:
        check_positive_int(n_steps, "n_steps")
    check_positive_int(n_references, "n_references")
    check_positive_int(n_samples, "n_samples")
    if not noise_sigma >= 0:
        raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma}")
    fwd_chunk = chunk_size or chunk_size_for(_bytes_per_image(x, False), device=dev)
    with torch.inference_mode():
        n_classes = model(x[:1]).shape[1]
    target = check_target(target, n, n_classes)
    if target is None:
        target = _predict(model, x, fwd_chunk)
    target = target.to(dev)

    if baseline is None:
        baseline = "train" if method in MULTI_REFERENCE else "zero"
    if method in MULTI_REFERENCE:
        refs = make_references(references if references is not None else baseline, x, n_references, seed=seed,
                               sigma=sigma)
    else:
        if references is not None:
            raise ValueError(f"references= is only used by {MULTI_REFERENCE}; pass baseline= for method {method!r}")
        refs = make_baseline(baseline, x, seed=seed, sigma=sigma).unsqueeze(1)
    k = refs.shape[1]

    def items_per_input() -> int:
        if method == "ig":
            return n_steps or 50
        if method == "expected_gradients":
            return k * (n_steps or 1)
        if method == "deepshap":
            return k
        if method == "smoothgrad":
            return n_samples
        return 1

    per = items_per_input()
    chunk = chunk_size or max(1, chunk_size_for(_bytes_per_image(x) * per, device=dev))

    def ref_rows(a: int, b: int) -> torch.Tensor:
        return refs[a:b] if refs.shape[0] > 1 else refs.expand(b - a, *refs.shape[1:])

    if method == "grad":
        def run(a: int, b: int) -> torch.Tensor:
            return _grad_of_target(model, x[a:b], target[a:b])
        g = run_chunked(run, n, chunk)
        return Explanation(g, g, refs, target)

    if method == "gbp":
        from captum.attr import GuidedBackprop

        gbp = GuidedBackprop(model)

        def run(a: int, b: int) -> torch.Tensor:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return gbp.attribute(x[a:b], target=target[a:b]).detach()
        g = run_chunked(run, n, chunk)
        return Explanation(g, g, refs, target)

    if method == "smoothgrad":
        check_positive_int(n_samples, "n_samples")
        d = x[0].numel()

        def run(a: int, b: int) -> torch.Tensor:
            m = b - a
            keys = _keys(m * n_samples, d, dev, start=a * n_samples * d)
            noise = hash_normal(seed, keys, stream=31).view(m, n_samples, *x.shape[1:]).to(x.dtype)
            xs = (x[a:b].unsqueeze(1) + noise_sigma * noise).reshape(m * n_samples, *x.shape[1:])
            gs = _grad_of_target(model, xs, target[a:b].repeat_interleave(n_samples))
            return gs.view(m, n_samples, *x.shape[1:]).mean(1)
        g = run_chunked(run, n, chunk)
        return Explanation(g, g, refs, target)

    if method in ("ig", "expected_gradients"):
        random_points = method == "expected_gradients" and n_steps is None
        if not random_points:
            alphas, weights = integration_points(n_steps or 50, integration)
            alphas, weights = alphas.to(dev, x.dtype), weights.to(dev, x.dtype)
        steps = 1 if random_points else alphas.numel()

        def run(a: int, b: int) -> torch.Tensor:
            m = b - a
            xa = x[a:b].unsqueeze(1)                                 # m x 1 x ...
            r = ref_rows(a, b)                                       # m x K x ...
            if random_points:
                al = hash_uniform(seed, _keys(m, k, dev, start=a * k), stream=41).to(x.dtype).view(m, k, 1)
                w = torch.ones(1, dtype=x.dtype, device=dev)
            else:
                al = alphas.view(1, 1, -1).expand(m, k, steps)
                w = weights
            shape = (m, k, steps) + (1,) * (x.dim() - 1)
            pts = r.unsqueeze(2) + al.reshape(shape) * (xa - r).unsqueeze(2)       # m x K x steps x ...
            gs = _grad_of_target(model, pts.reshape(-1, *x.shape[1:]),
                                 target[a:b].repeat_interleave(k * steps))
            gs = gs.view(m, k, steps, *x.shape[1:])
            gbar = (gs * w.view((1, 1, -1) + (1,) * (x.dim() - 1))).sum(2)        # m x K x ...
            attr = ((xa - r) * gbar).mean(1)
            return torch.cat([attr, gbar.mean(1)], dim=1)

        out = run_chunked(run, n, chunk)
        c = x.shape[1]
        return Explanation(out[:, :c], out[:, c:], refs, target)

    # deepshap: DeepLift-Rescale multipliers on the (input, reference) pairs (shap's rules), averaged over references
    fast = deepshap_chain(model) is not None

    def run(a: int, b: int) -> torch.Tensor:
        m = b - a
        r = ref_rows(a, b)
        if fast:     # one forward of inputs and references, one explicit backward over the pairs
            attr, mult = deepshap_multipliers(model, x[a:b], refs if refs.shape[0] == 1 else r, target[a:b])
            return torch.cat([attr, mult], dim=1)
        xa = x[a:b].unsqueeze(1)
        xe = xa.expand(m, k, *x.shape[1:]).reshape(m * k, *x.shape[1:])
        mult = deeplift_multipliers(model, xe, r.reshape(m * k, *x.shape[1:]), target[a:b].repeat_interleave(k))
        mult = mult.view(m, k, *x.shape[1:])
        return torch.cat([((xa - r) * mult).mean(1), mult.mean(1)], dim=1)

    out = run_chunked(run, n, chunk)
    c = x.shape[1]
    return Explanation(out[:, :c], out[:, c:], refs, target)


def attribute(model: nn.Module, x: torch.Tensor, target: Optional[torch.Tensor] = None, method: str = "ig",
              baseline: BaselineLike = None, **options) -> torch.Tensor:
    """Attributions ``A`` (shape, dtype and device of ``x``) of ``model``'s logit ``target`` at ``x``.

    ``method`` in :data:`METHODS`, ``baseline`` in :data:`BASELINES` / a tensor / ``None`` (the method's default:
    ``"zero"``, or ``"train"`` for ``"expected_gradients"`` and ``"deepshap"``). ``options`` as in :func:`explain`
    (``n_steps``, ``integration``, ``n_references``, ``references``, ``n_samples``, ``noise_sigma``, ``sigma``,
    ``seed``, ``chunk_size``).

    Example:
        >>> A = attribute(model, x, method="ig", baseline="blur", n_steps=32)   # doctest: +SKIP
    """
    e = explain(model, x, target, method, baseline, **options)
    return e.attributions.to(device=x.device, dtype=x.dtype)


def hessian_vector_product(model: nn.Module, x: torch.Tensor, v: torch.Tensor, target: torch.Tensor
                           ) -> torch.Tensor:
    """``H v`` per input, with ``H = d^2 f_target / d x^2`` at ``x`` (``N x ...``, ``v`` like ``x``): double backward.

    Inputs do not interact in the model, so one batched double-backward pass gives every row's product. On a ReLU
    (piecewise-linear) network the result is exactly 0 almost everywhere.
    """
    dev = _check_inputs(model, x)
    v = check_like(v, x, "v").to(dev)
    target = check_target(target, x.shape[0]).to(dev)
    with torch.enable_grad():
        xs = x.to(dev).detach().requires_grad_(True)
        out = model(xs).gather(1, target.view(-1, 1)).sum()
        (g,) = torch.autograd.grad(out, xs, create_graph=True)
        if not g.requires_grad:      # the gradient does not depend on x (piecewise-linear pieces): H = 0
            return torch.zeros_like(xs).detach()
        (hv,) = torch.autograd.grad((g * v).sum(), xs, allow_unused=True)
    return torch.zeros_like(xs).detach() if hv is None else hv.detach()
