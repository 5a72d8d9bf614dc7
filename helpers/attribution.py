"""Feature attributions: one small function per method and a dispatch table, batched on the model's device.

:func:`attribute` returns the attributions ``A`` (like ``x``); :func:`explain` also returns what ABC needs: the
multipliers ``G`` (``A = G * (x - b)`` for the path methods) and the references ``b``.

=====================  ==========================================================================================
``"grad"``             ``A = G = d f_t / d x`` (saliency).
``"ig"``               Integrated gradients: ``A = (x - b) * int_0^1 d f_t/d x (b + a (x - b)) da``, the integral
                       by Gauss-Legendre (default, as captum) or a Riemann rule, ``n_steps`` points.
``"expected_gradients"``  IG averaged over ``K`` references (Erion et al. 2021): ``A = mean_k (x - r_k) Gbar_k``;
                       one uniform random point per reference, or ``n_steps`` quadrature points.
``"deepshap"``         DeepLift-Rescale averaged over references with shap's rules (:mod:`helpers.deepshap`);
                       completeness ``sum A = f_t(x) - mean_k f_t(r_k)`` is checked on every call (a warning).
``"smoothgrad"``       ``A = mean_s d f_t/d x (x + eps_s)``, ``eps_s ~ N(0, noise_sigma^2)``.
``"gbp"``              Guided backpropagation (captum ``GuidedBackprop``).
=====================  ==========================================================================================

``baseline=`` is one value per input (a name of :mod:`helpers.baselines`, a number, one input or ``N x ...``);
``references=`` a set of ``K`` references for ``"expected_gradients"`` / ``"deepshap"`` (a name, ``K x ...`` shared
or ``N x K x ...``; default ``"train"``, MNIST only). A model may take a tuple of inputs and
``additional_forward_args`` (as in captum); then ``attribute`` returns a tuple. Random noise, points and baselines
are the same for every input (:mod:`helpers.batching`): a result depends neither on the chunk size nor on the batch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .baselines import BASELINES, MNIST_RANGE, BaselineLike, make_baseline, make_references
from .batching import bytes_per_image, chunk_size_for, forward, hash_normal, hash_uniform, keys, run_chunked
from .deepshap import deeplift_multipliers, deepshap_chain, deepshap_multipliers
from .fastpath import fast_forward
from .validation import Classifier, as_classifier, check_like, check_n_samples, check_target

__all__ = ["METHODS", "BASELINES", "INTEGRATION_RULES", "MULTI_REFERENCE", "Explanation", "attribute", "explain",
           "integration_points", "hessian_vector_product", "make_baseline", "make_references", "hash_uniform",
           "hash_normal", "deeplift_multipliers"]

METHODS = ("grad", "ig", "expected_gradients", "deepshap", "smoothgrad", "gbp")
MULTI_REFERENCE = ("expected_gradients", "deepshap")
INTEGRATION_RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
#: DeepSHAP warns when ``|sum A - (f(x) - mean f(r))| > ADDITIVITY_TOL * (1 + |f(x) - mean f(r)|)``
ADDITIVITY_TOL = 1e-2


@dataclass
class Explanation:
    """What :func:`explain` returns, on the model's device: ``attributions`` ``A`` and ``multipliers`` ``G`` like
    ``x`` (``A = G * (x - b)`` averaged over references; ``A = G`` for grad / smoothgrad / gbp), ``references``
    ``(N or 1) x K x ...``, ``target`` ``N``; ``unpack(A)`` gives a packed ``A`` the shape(s) of the user's inputs."""

    attributions: torch.Tensor
    multipliers: torch.Tensor
    references: torch.Tensor
    target: torch.Tensor
    unpack: Callable[[torch.Tensor], Any] = field(default=lambda a: a, repr=False, compare=False)


@dataclass
class _Job:
    """One call's resolved arguments, shared by the per-method functions below."""

    model: nn.Module
    x: torch.Tensor
    target: torch.Tensor
    refs: torch.Tensor              # (1|N) x K x ...
    opts: Dict[str, Any]            # n_steps, integration, n_samples, noise_sigma, seed

    def ref_rows(self, a: int, b: int) -> torch.Tensor:
        return self.refs[a:b] if self.refs.shape[0] > 1 else self.refs.expand(b - a, *self.refs.shape[1:])


def integration_points(n_steps: int, rule: str = "gausslegendre") -> Tuple[torch.Tensor, torch.Tensor]:
    """``(alphas, weights)`` (float64, ``n_steps``) of a quadrature rule on ``[0, 1]``; weights sum to 1.

    captum's points and weights, except ``"riemann_trapezoid"``, whose weights here are ``1/(n-1)`` (captum's sum
    to ``(n-1)/n``, so its IG on a linear model comes out ``(n-1)/n`` too small).
    """
    n = check_n_samples(n_steps, "n_steps")
    f64 = dict(dtype=torch.float64)
    if rule == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        return torch.tensor(0.5 * (nodes + 1)), torch.tensor(0.5 * w)
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}.get(rule)
    if offset is not None:
        return (torch.arange(n, **f64) + offset) / n, torch.full((n,), 1.0 / n, **f64)
    if rule == "riemann_trapezoid":
        if n < 2:
            raise ValueError("n_steps must be >= 2 for the trapezoid rule")
        w = torch.full((n,), 1.0 / (n - 1), **f64)
        w[0] = w[-1] = 0.5 / (n - 1)
        return torch.linspace(0, 1, n, **f64), w
    raise ValueError(f"integration must be one of {INTEGRATION_RULES}, got {rule!r}")


def _grad(model: nn.Module, xs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``d f_target / d xs`` for a batch ``M x ...`` (target ``M``), through the cached fast forward."""
    fwd = fast_forward(model, xs, need_grad=True)
    with torch.enable_grad():
        xs = xs.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fwd(xs).gather(1, target.view(-1, 1)).sum(), xs)
    return g.contiguous()


# ------------------------------------------------------------------ one function per method: rows a:b -> (A, G)

def _by_grad(job: _Job, a: int, b: int) -> Tuple[torch.Tensor, torch.Tensor]:
    g = _grad(job.model, job.x[a:b], job.target[a:b])
    return g, g


def _by_gbp(job: _Job, a: int, b: int) -> Tuple[torch.Tensor, torch.Tensor]:
    from captum.attr import GuidedBackprop

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = GuidedBackprop(job.model).attribute(job.x[a:b], target=job.target[a:b]).detach()
    return g, g


def _by_smoothgrad(job: _Job, a: int, b: int) -> Tuple[torch.Tensor, torch.Tensor]:
    x, s, m = job.x, job.opts["n_samples"], b - a
    noise = hash_normal(job.opts["seed"], keys(s, x[0].numel(), x.device), 31)   # the same S draws for every input
    xs = x[a:b].unsqueeze(1) + job.opts["noise_sigma"] * noise.view(1, s, *x.shape[1:]).to(x.dtype)
    g = _grad(job.model, xs.reshape(m * s, *x.shape[1:]), job.target[a:b].repeat_interleave(s))
    g = g.view(m, s, *x.shape[1:]).mean(1)
    return g, g


def _by_path(job: _Job, a: int, b: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """IG / expected gradients: gradients at points ``r + alpha (x - r)`` of every (input, reference) path."""
    x, m, n_steps = job.x, b - a, job.opts["n_steps"]
    xa, r = x[a:b].unsqueeze(1), job.ref_rows(a, b)                          # m x 1 x ..., m x K x ...
    k, dev, ones = r.shape[1], x.device, (1,) * (x.dim() - 1)
    if n_steps is None:                                                       # one uniform random point per path
        al = hash_uniform(job.opts["seed"], keys(1, k, dev), 41).to(x.dtype).view(1, k, 1).expand(m, k, 1)
        w = torch.ones(1, dtype=x.dtype, device=dev)
    else:
        al, w = (t.to(dev, x.dtype) for t in integration_points(n_steps, job.opts["integration"]))
        al = al.view(1, 1, -1).expand(m, k, -1)
    steps = al.shape[2]
    pts = r.unsqueeze(2) + al.reshape((m, k, steps) + ones) * (xa - r).unsqueeze(2)        # m x K x steps x ...
    g = _grad(job.model, pts.reshape(-1, *x.shape[1:]), job.target[a:b].repeat_interleave(k * steps))
    gbar = (g.view(m, k, steps, *x.shape[1:]) * w.view((1, 1, -1) + ones)).sum(2)         # m x K x ...
    return ((xa - r) * gbar).mean(1), gbar.mean(1)


def _by_deepshap(job: _Job, a: int, b: int) -> Tuple[torch.Tensor, torch.Tensor]:
    x, t = job.x[a:b], job.target[a:b]
    if deepshap_chain(job.model, x) is not None:      # one forward of inputs and references, one backward of pairs
        return deepshap_multipliers(job.model, x, job.refs if job.refs.shape[0] == 1 else job.refs[a:b], t)
    r = job.ref_rows(a, b)                                                    # the general version, pair by pair
    xe = x.unsqueeze(1).expand_as(r)
    mult = deeplift_multipliers(job.model, xe.flatten(0, 1), r.flatten(0, 1), t.repeat_interleave(r.shape[1]))
    mult = mult.view_as(r)
    return ((xe - r) * mult).mean(1), mult.mean(1)


#: method -> (rows a:b -> (A, G), gradient rows per input; the deepshap chain chunks its pairs itself)
_METHODS: Dict[str, Tuple[Callable[[_Job, int, int], Tuple[torch.Tensor, torch.Tensor]], Callable[[_Job], int]]] = {
    "grad": (_by_grad, lambda j: 1),
    "gbp": (_by_gbp, lambda j: 1),
    "smoothgrad": (_by_smoothgrad, lambda j: j.opts["n_samples"]),
    "ig": (_by_path, lambda j: j.refs.shape[1] * (j.opts["n_steps"] or 1)),
    "expected_gradients": (_by_path, lambda j: j.refs.shape[1] * (j.opts["n_steps"] or 1)),
    "deepshap": (_by_deepshap, lambda j: 1 if deepshap_chain(j.model, j.x) is not None else 2 * j.refs.shape[1]),
}


def _check_additivity(job: _Job, attr: torch.Tensor) -> None:
    """Warn where DeepSHAP's ``sum A`` misses ``f_t(x) - mean_k f_t(r_k)`` (a model part without a rule)."""
    n, t = job.x.shape[0], job.target
    rows = torch.arange(n, device=t.device)
    fr = forward(job.model, job.refs.flatten(0, 1)).view(*job.refs.shape[:2], -1).expand(n, -1, -1)
    delta = forward(job.model, job.x)[rows, t] - fr[rows, :, t].mean(1)
    gap = (attr.flatten(1).sum(1) - delta).abs()
    bad = gap > ADDITIVITY_TOL * (1 + delta.abs())
    if bool(bad.any()):
        warnings.warn(f"deepshap: sum of attributions misses f(x) - mean f(references) on {int(bad.sum())} of {n} "
                      f"inputs (largest gap {float(gap.max()):.3g}); the model has an operation without a DeepLift "
                      f"rule (e.g. a functional non-linearity in forward): treat these attributions with care",
                      stacklevel=3)


def _resolve_refs(method: str, c: Classifier, baseline: Any, references: Any, o: Dict[str, Any]) -> torch.Tensor:
    """The ``(1|N) x K x ...`` references of ``c.x``; tuples of per-input values are packed like ``c.x``."""
    x = c.x
    if references is not None and method not in MULTI_REFERENCE:
        raise ValueError(f"references= is a shared set for {MULTI_REFERENCE}; pass baseline= for method {method!r}")
    if references is not None and baseline is not None:
        raise ValueError("pass either baseline= (one value per input) or references= (a set of K), not both")
    if method in MULTI_REFERENCE and references is None and (baseline is None or isinstance(baseline, str)):
        references, baseline = ("train" if baseline is None else baseline), None
    value = references if references is not None else baseline
    if c.packed and isinstance(value, (torch.Tensor, tuple, list)):   # one tensor per input (rows 1, N or K): pack
        parts = (value,) if isinstance(value, torch.Tensor) else value
        value = torch.cat([v.to(x.device, x.dtype).reshape(v.shape[0], -1) for v in parts], dim=1)
        if value.shape[1] != c.n_features:
            raise ValueError("with a tuple of inputs or additional_forward_args, pass a baseline or references as a "
                             "tuple with one tensor per input (or a number or a name)")
        value = F.pad(value, (0, x.shape[1] - value.shape[1]))   # the extra-argument columns: below
    kw = dict(seed=o["seed"], sigma=o["sigma"], input_range=o["input_range"])
    if references is not None:
        refs = make_references(value, x, o["n_references"], **kw)
    else:
        refs = make_baseline(value, x, **kw).unsqueeze(1)
    if c.packed and x.shape[1] > c.n_features:           # names: extra arguments keep x's values
        refs = refs.expand(x.shape[0], *refs.shape[1:]).clone()
        refs[:, :, c.n_features:] = x[:, None, c.n_features:]
    return refs


def explain(model: nn.Module, x: Union[torch.Tensor, Tuple[torch.Tensor, ...]], target: Any = None,
            method: str = "ig", baseline: BaselineLike = None, *, references: Any = None, n_steps: Optional[int] = None,
            integration: str = "gausslegendre", n_references: int = 32, n_samples: int = 25,
            noise_sigma: float = 0.15, sigma: Optional[float] = None, seed: int = 0, chunk_size: Optional[int] = None,
            input_range: Optional[Tuple[float, float]] = MNIST_RANGE, additional_forward_args: Any = None
            ) -> Explanation:
    """Attributions, multipliers and references (see the module docstring); a tuple ``x`` is packed into ``N x D``
    rows (:func:`helpers.validation.as_classifier`), and so are the returned tensors. Options: ``n_steps`` (ig:
    default 50; expected_gradients: default one random point per reference),
    ``integration`` (:data:`INTEGRATION_RULES`), ``n_references`` (``K`` of a named reference set), ``n_samples``
    and ``noise_sigma`` (smoothgrad), ``sigma`` (blur / gaussian baselines), ``seed``, ``chunk_size`` (inputs per
    batched call; default from the memory budget), ``input_range`` (``(lo, hi)`` or ``None``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    c = as_classifier(model, x, additional_forward_args)
    for name, v in (("n_steps", n_steps), ("chunk_size", chunk_size), ("n_references", n_references),
                    ("n_samples", n_samples)):
        if v is not None:
            check_n_samples(v, name)
    if not noise_sigma >= 0:
        raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma}")
    if method == "smoothgrad" and c.x.shape[1] > c.n_features:
        raise ValueError("smoothgrad would add noise to additional_forward_args; use grad, ig or expected_gradients")
    n_steps = 50 if method == "ig" and n_steps is None else n_steps
    opts = dict(n_steps=n_steps, integration=integration, n_references=n_references, n_samples=n_samples,
                noise_sigma=noise_sigma, sigma=sigma, seed=seed, input_range=input_range)
    refs = _resolve_refs(method, c, baseline, references, opts)
    target = check_target(target, c.x.shape[0], c.n_classes)
    target = forward(c.model, c.x).argmax(1) if target is None else target.to(c.x.device)
    job = _Job(c.model, c.x, target, refs, opts)
    fn, per_input = _METHODS[method]
    chunk = chunk_size or chunk_size_for(bytes_per_image(c.x, 160) * per_input(job), device=c.x.device)
    out = run_chunked(lambda a, b: torch.cat(fn(job, a, b), dim=1), c.x.shape[0], chunk)
    attr, mult = out.split(c.x.shape[1], dim=1)
    if method == "deepshap":
        _check_additivity(job, attr)
    return Explanation(attr, mult, refs, target, c.unpack)


def attribute(model: nn.Module, x: Union[torch.Tensor, Tuple[torch.Tensor, ...]], target: Any = None,
              method: str = "ig", baseline: BaselineLike = None, **options: Any
              ) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
    """Attributions of ``model``'s logit ``target`` (LongTensor ``N``, int, or ``None`` = predicted) at ``x``: a
    tensor like ``x`` (or a tuple like a tuple ``x``), on ``x``'s device. ``options`` as in :func:`explain`, e.g.
    ``attribute(model, x, method="ig", baseline="blur", n_steps=32)``."""
    e = explain(model, x, target, method, baseline, **options)
    a = e.unpack(e.attributions)
    return a.to(device=x.device, dtype=x.dtype) if isinstance(a, torch.Tensor) else a


def hessian_vector_product(model: nn.Module, x: torch.Tensor, v: torch.Tensor, target: torch.Tensor
                           ) -> torch.Tensor:
    """``H v`` per input (``N x ...``), ``H = d^2 f_target / d x^2`` at ``x``, by one batched double backward pass
    (0 almost everywhere on a ReLU network, which is piecewise linear)."""
    c = as_classifier(model, x)
    v = check_like(v, x, "v").to(c.x.device)
    target = check_target(target, x.shape[0], c.n_classes).to(c.x.device)
    with torch.enable_grad():
        xs = c.x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(c.model(xs).gather(1, target.view(-1, 1)).sum(), xs, create_graph=True)
        hv = torch.autograd.grad((g * v).sum(), xs, allow_unused=True)[0] if g.requires_grad else None
    return torch.zeros_like(xs) if hv is None else hv.detach()
