"""Infidelity, max-sensitivity and infidelity-optimal explanations (Yeh et al., "On the (In)fidelity and Sensitivity
of Explanations", NeurIPS 2019), batched over inputs x samples on the model's device.

Definitions (``f`` the target logit, ``Φ`` an explanation of ``x``, ``I`` a random perturbation, see
:mod:`helpers.perturbations` for the perturbations and their *units*):

* infidelity  ``INFD(Φ, f, x) = E_I[(Iᵀ Φ - (f(x) - f(x - I)))²]``; with ``normalize=True`` the explanation is first
  rescaled by the optimal ``β = E[Iᵀ Φ · Δf] / E[(Iᵀ Φ)²]`` (scale invariant; the authors' code and captum's
  ``normalize=True``), i.e. ``INFD = E[Δf²] - E[Iᵀ Φ Δf]² / E[(Iᵀ Φ)²]``.
* max-sensitivity (Def. 3.1) ``SENS_MAX(Φ, f, x, r) = max_{‖y - x‖_∞ <= r} ‖Φ(y) - Φ(x)‖``, estimated by uniform
  samples in the L∞ ball; the relative form divides by ``‖Φ(x)‖`` (captum and the authors' code).
* the infidelity-optimal explanation ``Φ* = E[I Iᵀ]⁻¹ E[I Iᵀ IG(f, x, I)] = E[I Iᵀ]⁻¹ E[I (f(x) - f(x - I))]``.
* SmoothGrad-style smoothing ``Φ_SG(x) = E_z[Φ(x + z)]`` with a Gaussian, uniform (L∞ ball) or truncated-normal ``z``.

An *explain function* is a callable ``explain(x, target) -> Tensor like x`` (``x``: ``N x ...``; ``target``: a
LongTensor ``N`` or ``None``); a one-argument ``explain(x)`` is accepted too. :func:`explainer` builds one from
:func:`helpers.attribution.attribute`; :func:`smooth` returns one; both carry a ``.model`` attribute, which
:func:`sensitivity_max` uses to fix the target to the prediction at ``x`` for every perturbed copy.
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .batching import bytes_per_image, chunk_size_for, run_chunked
from .fastpath import channels_last_copy, jit_forward
from .perturbations import (
    ConstantBaseline,
    Draw,
    Fixed,
    Gaussian,
    LinfBall,
    NoisyBaseline,
    Perturbation,
    ShapSubset,
    Square,
    _baseline_like,
    square_masks,
)
from .validation import check_images, check_like, check_model, check_target, model_device

__all__ = [
    # perturbations (re-exported from helpers.perturbations)
    "Perturbation", "Draw", "Gaussian", "NoisyBaseline", "LinfBall", "ConstantBaseline", "Square", "ShapSubset",
    "Fixed", "square_masks",
    # measures
    "infidelity", "infidelity_from_samples", "beta_rescale", "sensitivity_max", "to_units",
    # optimal explanations and smoothing
    "optimal_explanation", "optimal_from_samples", "smooth", "choose_radius", "smoothing_sweep", "explainer",
    "fast_model", "explanation_suite", "score_explanations", "randomized_models", "rank_correlation",
    "KERNELS",
]

Explain = Callable[..., torch.Tensor]
Attributions = Union[torch.Tensor, Mapping[str, torch.Tensor]]

#: Smoothing kernels of :func:`smooth`.
KERNELS = ("gaussian", "uniform", "truncnorm")

#: Rough bytes of activations per input element in a forward pass of a small CNN (for chunk sizes).
_ACT_FACTOR = 64


# ------------------------------------------------------------------------------------------------ small utilities


def _check_radius(radius: object, name: str = "radius") -> float:
    if isinstance(radius, bool) or not isinstance(radius, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(radius).__name__}")
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {radius}")
    return float(radius)


def _check_n_samples(n: object, name: str = "n_samples") -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return n


def _check_perturbation(p: object) -> Perturbation:
    if not isinstance(p, Perturbation):
        raise TypeError(f"perturbation must be a helpers.fidelity.Perturbation (e.g. NoisyBaseline(0.2), Square()), "
                        f"got {type(p).__name__}")
    if p.units not in ("local", "global"):
        raise ValueError(f"perturbation.units must be 'local' or 'global', got {p.units!r}")
    return p


def fast_model(model: nn.Module) -> nn.Module:
    """A forward-only channels-last copy of ``model`` (see :func:`helpers.fastpath.channels_last_copy`)."""
    return channels_last_copy(model)


def _logit(model: nn.Module, xs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``model(xs)[i, target[i]]`` under inference mode (``xs``: ``B x ...``, target ``B``) -> ``B``."""
    if xs.dim() == 4:
        xs = xs.contiguous(memory_format=torch.channels_last)
    out = model(xs)
    return out.gather(1, target.view(-1, 1)).squeeze(1)


def _resolve_target(model: nn.Module, x: torch.Tensor, target, dev: torch.device,
                    batch_size: Optional[int] = None) -> torch.Tensor:
    """The target as a LongTensor ``N`` on ``dev``; ``None`` -> the predicted class."""
    t = check_target(target, x.shape[0])
    if t is None:
        fm = fast_model(model)
        bs = batch_size or chunk_size_for(_bytes(x), device=dev)
        with torch.inference_mode():
            t = run_chunked(lambda a, b: fm(x[a:b].to(dev)).argmax(1), x.shape[0], bs)
        return t.clone()
    return t.to(dev)


def _bytes(x: torch.Tensor) -> int:
    return bytes_per_image(x, _ACT_FACTOR)


def _generator(dev: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=dev).manual_seed(int(seed) % (2**63))


def _blocks(n_rows: int, n_samples: int, images_per_chunk: int) -> Tuple[int, int]:
    """(rows per chunk, samples per chunk) so that one chunk evaluates about ``images_per_chunk`` images."""
    if n_samples >= images_per_chunk:
        return 1, max(1, images_per_chunk)
    return max(1, min(n_rows, images_per_chunk // n_samples)), n_samples


def _as_dict(attributions: Attributions) -> Tuple[Dict[str, torch.Tensor], bool]:
    if isinstance(attributions, torch.Tensor):
        return {"_": attributions}, True
    if isinstance(attributions, Mapping) and attributions:
        return dict(attributions), False
    raise TypeError(f"attributions must be a tensor like x or a non-empty dict name -> tensor, got "
                    f"{type(attributions).__name__}")


def _explain_arity(explain: Explain) -> int:
    if not callable(explain):
        raise TypeError(f"explain must be callable explain(x, target) -> Tensor like x, got {type(explain).__name__}")
    try:
        params = [p for p in inspect.signature(explain).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):
        return 2
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 2
    return 2 if len(params) >= 2 else 1


def _call_explain(explain: Explain, x: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
    out = explain(x, target) if _explain_arity(explain) == 2 else explain(x)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"explain must return a tensor of the shape of its input {tuple(x.shape)}, got {got}")
    return out


# ---------------------------------------------------------------------------------------------------- infidelity


def beta_rescale(dot: torch.Tensor, diff: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The optimal scale ``β = mean_S(dot·diff) / mean_S(dot²)`` per input (``dot``, ``diff``: ``N x S``) -> ``N``.

    ``β Φ`` minimises ``mean_S (β·IᵀΦ - Δf)²``; a zero denominator gives ``β = 0`` (captum's ``safe_div``).
    """
    w = torch.ones_like(dot) if weights is None else weights
    num, den = (w * dot * diff).sum(-1), (w * dot * dot).sum(-1)
    return num / torch.where(den == 0, torch.ones_like(den), den)


def infidelity_from_samples(dot: torch.Tensor, diff: torch.Tensor, weights: Optional[torch.Tensor] = None,
                            normalize: bool = False) -> torch.Tensor:
    """Infidelity from ``dot = IᵀΦ`` and ``diff = f(x) - f(x - I)``, both ``N x S`` (optional weights ``N x S``) -> ``N``."""
    w = torch.ones_like(dot) if weights is None else weights
    if normalize:
        dot = beta_rescale(dot, diff, w).unsqueeze(-1) * dot
    return (w * (dot - diff) ** 2).sum(-1) / w.sum(-1)


def to_units(attributions: torch.Tensor, x: torch.Tensor, perturbation: Union[Perturbation, float, torch.Tensor],
             to: str = "global") -> torch.Tensor:
    """Convert an explanation between local and global units (``Φ_global = Φ_local ⊙ (x - x0)``).

    Args:
        attributions: ``N x ...`` like ``x``.
        perturbation: a global perturbation (its baseline ``x0`` is used) or a baseline (number or tensor).
        to: ``"global"`` multiplies by ``(x - x0)``; ``"local"`` divides by it (0 where ``x == x0``).
    """
    check_images(x)
    check_like(attributions, x, "attributions")
    if to not in ("global", "local"):
        raise ValueError(f"to must be 'global' or 'local', got {to!r}")
    x0 = perturbation.baseline_for(x) if isinstance(perturbation, Perturbation) else _baseline_like(perturbation, x)
    diff = x - x0.to(x.device)
    if to == "global":
        return attributions * diff
    safe = torch.where(diff == 0, torch.ones_like(diff), diff)
    return torch.where(diff == 0, torch.zeros_like(attributions), attributions / safe)


#: Images per forward chunk tried on the CPU (see :func:`_fast_chunk`).
_CHUNK_CANDIDATES = (512, 1024)
_CHUNK_CACHE: Dict[tuple, int] = {}


def _fast_chunk(fm: Callable, xd: torch.Tensor, cap: int) -> int:
    """Images per forward chunk: ``cap`` (the memory budget) on an accelerator; on the CPU the candidate ``<= cap``
    with the highest forward rate, timed once per forward function, input shape and dtype (cached).

    The CPU rate depends on the batch through the caches: the jit MNIST CNN on the 2-core CPU ran ~1.5x faster at
    256-512 images per batch than at 1,024 (on a quiet machine). Smaller candidates are not tried: at 256 the
    evaluators' per-chunk work (drawing, reducing, Python) cost ~7 % more than at 512 for the same forward rate.
    """
    cands = [c for c in _CHUNK_CANDIDATES if c <= cap]
    if xd.device.type != "cpu" or not cands:
        return cap
    if len(cands) == 1:
        return cands[0]
    key = (id(fm), tuple(xd.shape[1:]), xd.dtype)
    if key not in _CHUNK_CACHE:
        import time

        probe = torch.rand((max(cands),) + tuple(xd.shape[1:]), dtype=xd.dtype)
        best = {c: math.inf for c in cands}
        with torch.inference_mode():
            for _ in range(3):                                               # alternate; the first round warms up
                for c in cands:
                    t0 = time.perf_counter()
                    for a in range(0, probe.shape[0], c):
                        fm(probe[a:a + c])
                    best[c] = min(best[c], time.perf_counter() - t0)
        _CHUNK_CACHE[key] = min(cands, key=best.get)
    return _CHUNK_CACHE[key]


def _setup(model, x, perturbation, target, n_samples, batch_size):
    check_model(model)
    check_images(x)
    perturbation = _check_perturbation(perturbation)
    dev = model_device(model)
    xd = x.to(dev)
    perturbation.validate(xd)
    n = perturbation.default_samples(xd) if n_samples is None else _check_n_samples(n_samples)
    t = _resolve_target(model, xd, target, dev, batch_size)
    fm = jit_forward(model, xd[:8])  # forward-only: the fused jit form is the fastest measured (benchmarks/)
    with torch.inference_mode():
        fx = _logit(fm, xd, t)
    per_chunk = batch_size or _fast_chunk(fm, xd, chunk_size_for(_bytes(x), device=dev))
    return perturbation, dev, xd, n, t, fm, fx, per_chunk


def _evaluate(fm, xd, t, fx, perturbation: Perturbation, n: int, seed: int, per_chunk: int,
              reduce: Callable[[slice, Draw, torch.Tensor], torch.Tensor], combine: str = "sum",
              lazy: bool = False) -> torch.Tensor:
    """Draw perturbations block by block, evaluate ``diff = f(x) - f(x - I)`` and fold each block with ``reduce``.

    ``reduce(rows, draw, diff)`` returns ``r x ...`` partial results; they are summed (``combine="sum"``) or
    concatenated along dim 1 (``"cat"``) over sample blocks, and concatenated over row blocks. ``lazy=True`` asks
    the perturbation for the perturbed inputs only (:meth:`Perturbation.draw_perturbed`): ``reduce`` then gets
    ``Draw(None, None, None, x - I)`` whenever the perturbation supports it.
    """
    n_rows = xd.shape[0]
    rows_per, samples_per = _blocks(n_rows, n, per_chunk)
    shape = tuple(xd.shape[1:])

    def run(a: int, b: int) -> torch.Tensor:
        gen = _generator(xd.device, seed * 1_000_003 + a)
        total, parts = None, []
        for s0 in range(0, n, samples_per):
            s = min(samples_per, n - s0)
            z = perturbation.draw_perturbed(xd, slice(a, b), s0, s, gen) if lazy else None
            d = Draw(None, None, None, z) if z is not None else perturbation.draw_block(xd, slice(a, b), s0, s, gen)
            with torch.inference_mode():
                xp = (xd[a:b].unsqueeze(1) - d.I if d.perturbed is None else d.perturbed).reshape((-1,) + shape)
                fp = _logit(fm, xp, t[a:b].repeat_interleave(s)).view(b - a, s)
                diff = fx[a:b].unsqueeze(1) - fp
                part = reduce(slice(a, b), d, diff)
            if combine == "cat":
                parts.append(part)
            else:
                total = part if total is None else total + part
        return torch.cat(parts, dim=1) if combine == "cat" else total

    return run_chunked(run, n_rows, rows_per)


def infidelity(model: nn.Module, x: torch.Tensor, attributions: Attributions, perturbation: Perturbation,
               target=None, n_samples: Optional[int] = None, normalize: bool = False, seed: int = 0, *,
               batch_size: Optional[int] = None) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
    """Explanation infidelity ``E_I[(IᵀΦ - (f(x) - f(x - I)))²]`` per input, estimated with ``n_samples`` draws.

    Args:
        model: classifier in eval mode (logits ``B x C``).
        x: inputs ``N x ...``.
        attributions: ``Φ``, a tensor like ``x`` in the perturbation's units, or a dict ``name -> tensor``: every
            explanation is then scored on the same perturbations and forward passes (paired, and K times cheaper).
        perturbation: a :class:`Perturbation` (its ``units`` say how ``IᵀΦ`` is formed).
        target: LongTensor ``N``, an int, or ``None`` (the predicted class).
        n_samples: draws per input (``None``: the perturbation's default, e.g. every mask of :class:`Square`).
        normalize: rescale ``Φ`` by the optimal ``β`` first (scale invariant; captum ``normalize=True``).
        seed: seed of the device generator (deterministic for a given seed, device and chunking).
        batch_size: images per forward chunk (default: from the memory budget).

    Returns:
        ``N`` infidelities (float32, on the CPU), or a dict of them when ``attributions`` is a dict.
    """
    perturbation, dev, xd, n, t, fm, fx, per_chunk = _setup(model, x, perturbation, target, n_samples, batch_size)
    attrs, single = _as_dict(attributions)
    names = list(attrs)
    phis = []
    for k in names:
        check_like(attrs[k], x, "attributions" if single else f"attributions[{k!r}]")
        phis.append(attrs[k].to(dev, torch.float32).flatten(1))
    phi = torch.stack(phis, dim=2)                                          # N x d x K
    xphi = torch.bmm(xd.flatten(1).float().unsqueeze(1), phi)               # N x 1 x K

    def reduce(rows: slice, d: Draw, diff: torch.Tensor) -> torch.Tensor:
        r, s = diff.shape
        if d.W is None:                                                     # local units: W = I = x - z
            dot = (xphi[rows] - torch.bmm(d.perturbed.reshape(r, s, -1).float(), phi[rows])).double()
        else:
            dot = torch.bmm(d.W.reshape(r, s, -1).float(), phi[rows]).double()  # r x s x K
        df = diff.double().unsqueeze(-1)
        w = torch.ones_like(df) if d.weights is None else d.weights.double().view(r, s, 1)
        sw = w.sum(1).expand(r, dot.shape[2])
        return torch.stack([(w * (dot - df) ** 2).sum(1), (w * dot * dot).sum(1), (w * dot * df).sum(1),
                            (w * df * df).sum(1).expand_as(sw), sw], dim=-1)  # r x K x 5

    acc = _evaluate(fm, xd, t, fx, perturbation, n, seed, per_chunk, reduce, lazy=perturbation.units == "local")
    sq, a, b, c, sw = acc.unbind(-1)
    if normalize:
        beta = b / torch.where(a == 0, torch.ones_like(a), a)
        val = beta * beta * a - 2 * beta * b + c
    else:
        val = sq
    val = (val / sw).float().cpu()
    out = {k: val[:, i].contiguous() for i, k in enumerate(names)}
    return out["_"] if single else out


# ------------------------------------------------------------------------------------------------- sensitivity


def sensitivity_max(explain: Explain, x: torch.Tensor, radius: float = 0.02, n_samples: int = 10, seed: int = 0, *,
                    target=None, form: str = "relative", norm: Union[str, float] = "fro",
                    batch_size: Optional[int] = None) -> torch.Tensor:
    """Max-sensitivity of an explanation: ``max_j ‖Φ(x + z_j) - Φ(x)‖`` over ``z_j ~ Uniform(L∞ ball of radius r)``.

    Args:
        explain: ``explain(x, target) -> Tensor like x`` (or ``explain(x)``); see the module docstring.
        x: inputs ``N x ...``.
        radius: L∞ radius ``r >= 0`` of the perturbation ball (captum's ``perturb_radius``, default 0.02).
        n_samples: perturbed copies per input.
        target: passed to ``explain`` (repeated for the copies); ``None`` with an ``explain.model`` -> the predicted
            class at ``x`` for every copy, else ``None`` is passed through.
        form: ``"relative"`` ``‖ΔΦ‖ / ‖Φ(x)‖`` (captum and the authors' code; a zero norm counts as 1),
            ``"absolute"`` ``‖ΔΦ‖`` (Def. 3.1), or ``"lipschitz"`` ``‖ΔΦ‖ / ‖z‖`` (a local Lipschitz estimate); a
            tuple of forms returns a dict ``form -> Tensor N`` from the same samples.
        norm: vector norm of ``ΔΦ`` (``"fro"`` = L2, as captum's default, or any ``p``).

    Returns:
        ``N`` sensitivities (float32, CPU).
    """
    check_images(x)
    radius = _check_radius(radius)
    n = _check_n_samples(n_samples)
    forms = (form,) if isinstance(form, str) else tuple(form)
    if not forms or any(f not in ("relative", "absolute", "lipschitz") for f in forms):
        raise ValueError(f"form must be 'relative', 'absolute' or 'lipschitz' (or a tuple of them), got {form!r}")
    model = getattr(explain, "model", None)
    dev = model_device(model) if isinstance(model, nn.Module) else x.device
    xd = x.to(dev)
    if target is None and isinstance(model, nn.Module):
        target = _resolve_target(model, xd, None, dev)
    t = check_target(target, x.shape[0])
    t = None if t is None else t.to(dev)
    p = 2 if norm == "fro" else norm
    phi0 = _call_explain(explain, xd, t).detach().flatten(1)
    n0 = torch.linalg.vector_norm(phi0, ord=p, dim=1)
    ball = LinfBall(radius)
    rows_per, samples_per = _blocks(x.shape[0], n, batch_size or max(1, chunk_size_for(_bytes(x), device=dev) // 8))
    shape = tuple(x.shape[1:])

    def run(a: int, b: int) -> torch.Tensor:
        gen = _generator(dev, seed * 1_000_003 + a)
        best = None
        for s0 in range(0, n, samples_per):
            s = min(samples_per, n - s0)
            z = ball.draw(xd[a:b], s, gen).I
            y = (xd[a:b].unsqueeze(1) + z).reshape((-1,) + shape)
            ty = None if t is None else t[a:b].repeat_interleave(s)
            phi = _call_explain(explain, y, ty).detach().reshape(b - a, s, -1)
            dist = torch.linalg.vector_norm(phi - phi0[a:b].unsqueeze(1), ord=p, dim=2)           # r x s
            cols = []
            for f in forms:
                if f == "relative":
                    den = n0[a:b].unsqueeze(1)
                    cols.append(dist / torch.where(den == 0, torch.ones_like(den), den))
                elif f == "lipschitz":
                    dz = torch.linalg.vector_norm(z.reshape(b - a, s, -1), ord=2, dim=2)
                    cols.append(dist / dz.clamp_min(1e-12))
                else:
                    cols.append(dist)
            m = torch.stack(cols, dim=-1).max(dim=1).values                                      # r x F
            best = m if best is None else torch.maximum(best, m)
        return best

    out = run_chunked(run, x.shape[0], rows_per).float().cpu()
    if isinstance(form, str):
        return out[:, 0].contiguous()
    return {f: out[:, i].contiguous() for i, f in enumerate(forms)}


# ------------------------------------------------------------------------------------------ optimal explanation


def _solve_psd(g: torch.Tensor, r: torch.Tensor, ridge: float) -> torch.Tensor:
    """Solve ``(G + ridge Id) φ = r`` for symmetric PSD ``G`` (``... x d x d``, ``r``: ``... x d x k``).

    Cholesky when it succeeds and ``G + ridge Id`` is well conditioned (pivot ratio > 1e-10), else the pseudo-inverse
    (the minimum-norm least-squares solution, for a singular ``E[IIᵀ]``).
    """
    eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    a = g + ridge * eye if ridge > 0 else g
    l, info = torch.linalg.cholesky_ex(a)
    if not bool((info != 0).any()):
        piv = torch.diagonal(l, dim1=-2, dim2=-1) ** 2
        if bool((piv.min(-1).values > 1e-10 * piv.max(-1).values).all()):
            return torch.cholesky_solve(r, l)
    return torch.linalg.pinv(a, hermitian=True) @ r


def _sherman_morrison(u: torch.Tensor, dg: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``(u uᵀ + diag(dg))⁻¹ r`` per row (``u``, ``dg``, ``r``: ``N x d``, float64), O(d)."""
    coef = (u * r / dg).sum(1, keepdim=True) / (1.0 + (u * u / dg).sum(1, keepdim=True))
    return (r - coef * u) / dg


#: Samples per float32 partial sum in :func:`_wsum` (the partial sums are added in float64).
_SUM_BLOCK = 1024


def _wsum(W: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Σ_s v[n, s] W[n, s]`` (``W``: ``N x S x d`` or shared ``S x d``; ``v``: ``N x S``) -> ``N x d`` float64.

    One float32 pass over ``W`` in blocks of :data:`_SUM_BLOCK` samples whose partial sums are added in float64: a
    single float32 reduction over 20,000 samples loses ~1e-4 relative precision, which the solves amplify by the
    condition number of ``E[WWᵀ]`` (~6,000 for the noisy baseline on MNIST).
    """
    out = None
    for a in range(0, v.shape[-1], _SUM_BLOCK):
        vb = v[:, a:a + _SUM_BLOCK].to(W.dtype)
        part = (vb @ W[a:a + _SUM_BLOCK] if W.dim() == 2 else
                torch.bmm(vb.unsqueeze(1), W[:, a:a + _SUM_BLOCK]).squeeze(1)).double()
        out = part if out is None else out + part
    return out


def _moment_sums(W: torch.Tensor, y: torch.Tensor, w: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-input sums of one block of samples for the known-moment estimate (the block evaluators' reduce):
    ``N x (2d + 2)`` float64 rows ``[Σ w W (y - c_b) + c_b Σ w W, Σ w W, Σ w y, Σ w]``, ``c_b`` the block mean of
    ``y`` (centring keeps the float32 product from losing the digits the control variate subtracts). Blocks add up;
    :func:`_centred_moment` turns the total into ``E_w[W (y - c)]`` with the overall mean ``c``.
    """
    y = y.double()
    w = torch.ones_like(y) if w is None else w.double().expand(y.shape)
    s1, sy = w.sum(-1, keepdim=True), (w * y).sum(-1, keepdim=True)
    cb = sy / torch.where(s1 == 0, torch.ones_like(s1), s1)
    s_w = _wsum(W, w)
    return torch.cat([_wsum(W, w * (y - cb)) + cb * s_w, s_w, sy, s1], dim=1)


def _centred_moment(sums: torch.Tensor, d: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(E_w[W (y - c)], c)`` from summed :func:`_moment_sums` rows (``c = E_w[y]``, ``N x 1``)."""
    s_wy, s_w, s_y, s_1 = sums[:, :d], sums[:, d:2 * d], sums[:, -2:-1], sums[:, -1:]
    c = s_y / s_1
    return (s_wy - c * s_w) / s_1, c


def _known_moment_solve(r_centred: torch.Tensor, c: torch.Tensor, u: torch.Tensor, dg: torch.Tensor) -> torch.Tensor:
    """The known-second-moment estimate ``Φ = (u uᵀ + diag(dg))⁻¹ r̂`` (float64, ``N x d``), the one estimator of
    ``optimal_from_samples(second_moment=...)`` and ``optimal_explanation(method="closed_form")``.

    ``r̂`` estimates ``E[W y]`` with the control variate ``c = E[y]`` (``E[W] = u`` is known):
    ``r̂ = E_w[W (y - c)] + c u`` (``r_centred`` = the first term, ``c``: ``N x 1``). The plain mean ``E_w[W y]`` is
    unbiased too, but its Monte-Carlo error contains ``c·(mean W - u)``, amplified by ``diag(dg)⁻¹`` (small for a
    clipped noisy baseline): at 20,000 samples on MNIST two seeds then give explanations with cosine ~0 to each
    other; with ``c``, ~0.96. ``u``, ``dg``: ``N x d`` with ``E[WWᵀ] = u uᵀ + diag(dg)`` (the ridge already in ``dg``).
    """
    return _sherman_morrison(u, dg, r_centred + c * u)


def optimal_from_samples(W: torch.Tensor, diff: torch.Tensor, weights: Optional[torch.Tensor] = None,
                         ridge: float = 0.0, second_moment: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                         refine: int = 0) -> torch.Tensor:
    """Infidelity-optimal explanation from samples: ``argmin_Φ Σ_s w_s (W_sᵀΦ - diff_s)²`` (+ ``ridge ‖Φ‖²``).

    Args:
        W: ``N x S x d`` (or ``S x d``, shared by every input) what multiplies ``Φ`` (``I`` or the mask).
        diff: ``N x S`` the values ``f(x) - f(x - I)``.
        weights: optional ``N x S`` (or ``S``) sample weights.
        ridge: ``λ >= 0`` added to ``E[WWᵀ]``; 0 uses the pseudo-inverse (for a singular ``E[WWᵀ]``).
        second_moment: ``(u, D)`` (each ``N x d``) when ``E[WWᵀ] = u uᵀ + diag(D)`` is known and ``E[W] = u``
            (:class:`Gaussian`, :class:`NoisyBaseline`: ``perturbation.second_moment(x)``): then only the d-vector
            ``E[W diff]`` is estimated (with the control variate ``c = mean diff``, the estimator of
            ``optimal_explanation(method="closed_form")``) and the solve is Sherman-Morrison, O(S d) in all.
            Without ``second_moment``: the sampled least squares (Gram + Cholesky / pinv, O(S d²)).
        refine: with ``second_moment``: conjugate-gradient steps on the sampled normal equations, preconditioned
            by the known ``E[WWᵀ]`` and started at the closed form (two O(S d) passes each). They move the estimate
            to the sampled least-squares solution (exact for a linear model; ~10 steps reach 1e-6 at S = 25 d);
            on the MNIST CNN they do not make it more reproducible (measured seed-to-seed cosine 0.96 either way).

    Returns:
        ``N x d`` explanations (float64 solves, float32 result).
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine must be an int >= 0, got {refine!r}")
    shared = W.dim() == 2
    wts = torch.ones(diff.shape, dtype=torch.float64, device=diff.device) if weights is None else weights.double()
    wts = wts.expand(diff.shape)
    sw = wts.sum(-1, keepdim=True)                                            # N x 1
    y = diff.double()
    if second_moment is not None:
        u, dg = (t.double().flatten(1).to(diff.device) for t in second_moment)
        dg = dg + ridge
        c = (wts * y).sum(-1, keepdim=True) / sw
        rc = _wsum(W, wts * (y - c)) / sw                                   # E_w[W (y - c)], one pass over W
        phi = _known_moment_solve(rc, c, u, dg)
        if refine:
            s_w = _wsum(W, wts)

            def gram(v: torch.Tensor) -> torch.Tensor:
                """``(Σ w W Wᵀ / Σ w + ridge) v`` for ``v``: ``N x d``, two passes over ``W`` (centred, as ``y``)."""
                vv = v.to(W.dtype)
                wv = ((W @ vv.T).T if shared else torch.bmm(W, vv.unsqueeze(-1)).squeeze(-1)).double()  # N x S
                m = (wts * wv).sum(-1, keepdim=True) / sw
                return (_wsum(W, wts * (wv - m)) + m * s_w) / sw + ridge * v

            phi = _pcg_refine(phi, gram, rc + c * s_w / sw, lambda r: _sherman_morrison(u, dg, r), refine)
        return phi.float()
    Wd = W.double()
    r = (wts * y) @ Wd / sw if shared else torch.bmm((wts * y).unsqueeze(1), Wd).squeeze(1) / sw   # E[W diff]
    if shared:
        if weights is not None and wts.shape[0] > 1 and not bool((wts == wts[:1]).all()):
            raise ValueError("shared W needs the same weights for every input")
        w0 = wts[0]
        g = (Wd * w0[:, None]).T @ Wd / w0.sum()
        return _solve_psd(g, r.T, ridge).T.float()
    g = torch.bmm((Wd * wts.unsqueeze(-1)).transpose(1, 2), Wd) / sw.unsqueeze(-1)
    return _solve_psd(g, r.unsqueeze(-1), ridge).squeeze(-1).float()


def _pcg_refine(x: torch.Tensor, apply_a: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                precond: Callable[[torch.Tensor], torch.Tensor], steps: int) -> torch.Tensor:
    """``steps`` preconditioned conjugate-gradient steps on ``A x = b`` (rows independent, ``N x d``, float64)."""
    def safe(a: torch.Tensor, b_: torch.Tensor) -> torch.Tensor:
        return torch.where(b_ > 0, a / torch.where(b_ > 0, b_, torch.ones_like(b_)), torch.zeros_like(a))

    r = b - apply_a(x)
    z = precond(r)
    p, rz = z, (r * z).sum(1, keepdim=True)
    for _ in range(steps):
        ap = apply_a(p)
        alpha = safe(rz, (p * ap).sum(1, keepdim=True))
        x, r = x + alpha * p, r - alpha * ap
        z = precond(r)
        rz_new = (r * z).sum(1, keepdim=True)
        p, rz = z + safe(rz_new, rz) * p, rz_new
    return x


def optimal_explanation(model: nn.Module, x: torch.Tensor, perturbation: Perturbation, target=None,
                        n_samples: Optional[int] = None, ridge: float = 0.0, *, method: str = "auto", seed: int = 0,
                        batch_size: Optional[int] = None) -> torch.Tensor:
    """The infidelity-optimal explanation ``Φ* = E[IIᵀ]⁻¹ E[I (f(x) - f(x - I))]`` (Yeh et al., Thm 3.1), in the
    perturbation's units.

    Methods:
        ``"closed_form"`` (local perturbations with a known ``E[IIᵀ] = u uᵀ + diag(D)``: :class:`Gaussian`,
        :class:`NoisyBaseline`): only ``E[I Δf]`` is sampled (with the control variate
        ``E[I Δf] = E[I (Δf - c)] + c u``, ``u = E[I]`` known, ``c`` the sample mean of ``Δf``); Sherman-Morrison
        solve, O(d) per input.
        ``"lstsq"``: least squares on the sampled perturbations, one batched solve per input (one shared solve for
        the global perturbations, whose masks do not depend on ``x``: the same masks serve every input); ``ridge``
        regularises, ``ridge=0`` uses the pseudo-inverse when ``E[IIᵀ]`` is singular (the rebuttal's remedy).
        ``"auto"``: closed form when available, else least squares.

    Args:
        n_samples: perturbations per input (``None``: the perturbation's default).
        ridge: ``λ >= 0`` added to the diagonal of ``E[IIᵀ]``.

    Returns:
        ``N x ...`` like ``x`` (float32, CPU).
    """
    if not isinstance(ridge, (int, float)) or isinstance(ridge, bool) or ridge < 0 or not math.isfinite(ridge):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    if method not in ("auto", "closed_form", "lstsq"):
        raise ValueError(f"method must be 'auto', 'closed_form' or 'lstsq', got {method!r}")
    perturbation, dev, xd, n, t, fm, fx, per_chunk = _setup(model, x, perturbation, target, n_samples, batch_size)
    has_closed = hasattr(perturbation, "second_moment") and perturbation.units == "local"
    if method == "closed_form" and not has_closed:
        raise ValueError(f"{type(perturbation).__name__} has no known E[IIᵀ]; use method='lstsq'")
    use_closed = method == "closed_form" or (method == "auto" and has_closed)
    shape, N = tuple(x.shape[1:]), x.shape[0]

    if use_closed:
        # the sums of optimal_from_samples(second_moment=...), accumulated block by block: one estimator
        acc = _evaluate(fm, xd, t, fx, perturbation, n, seed, per_chunk,
                        lambda rows, d, diff: _moment_sums(d.W.flatten(2), diff, d.weights))
        u, dg = (v.double().flatten(1) for v in perturbation.second_moment(xd))
        return _known_moment_solve(*_centred_moment(acc, u.shape[1]), u, dg + ridge).float().reshape(x.shape).cpu()

    if perturbation.units == "global" and hasattr(perturbation, "masks"):
        # masks independent of x: draw them once, share them across inputs, one d x d solve for all inputs
        m, w = perturbation.masks(xd[:1], n, _generator(dev, seed), 0)
        m = m.reshape((n,) + shape).to(torch.float32)
        shared = _SharedMasks(m, xd - perturbation.baseline_for(xd))
        diffs = _evaluate(fm, xd, t, fx, shared, n, seed, per_chunk, lambda rows, d, diff: diff, combine="cat")
        return optimal_from_samples(m.reshape(n, -1), diffs, None if w is None else w.reshape(1, n).expand(N, n),
                                    ridge).reshape(x.shape).cpu()

    # local perturbation without a known second moment: per-input Gram matrices, accumulated block by block
    d_feat = int(math.prod(shape))

    def reduce(rows, d, diff):
        W = d.W.flatten(2).double()
        w = torch.ones_like(diff).double() if d.weights is None else d.weights.double()
        g = torch.bmm((W * w.unsqueeze(-1)).transpose(1, 2), W)
        r = torch.einsum("rsd,rs->rd", W, w * diff.double())
        return torch.cat([g, r.unsqueeze(1), w.sum(1).view(-1, 1, 1).expand(-1, 1, d_feat)], dim=1)

    acc = _evaluate(fm, xd, t, fx, perturbation, n, seed, min(per_chunk, 4096), reduce)
    sw = acc[:, -1:, :1]
    g, r = acc[:, :d_feat] / sw, acc[:, d_feat] / sw[:, 0]
    return _solve_psd(g, r.unsqueeze(-1), ridge).squeeze(-1).float().reshape(x.shape).cpu()


class _SharedMasks(Perturbation):
    """Internal: the same masks ``M`` (``n x ...``) for every input, ``I = M ⊙ (x - x0)`` built block by block."""

    units = "global"

    def __init__(self, m: torch.Tensor, diff: torch.Tensor) -> None:
        self.m, self.diff = m, diff                                        # n x ..., N x ...

    def draw_block(self, x, rows, start, n, generator=None):
        m = self.m[start:start + n].unsqueeze(0)
        W = m.expand((rows.stop - rows.start,) + tuple(m.shape[1:]))
        return Draw(m * self.diff[rows].unsqueeze(1), W, None)


# -------------------------------------------------------------------------------------------------- smoothing


def _kernel_noise(kind: str, radius: float, shape, gen: torch.Generator, dev, dtype) -> torch.Tensor:
    if kind == "gaussian":
        return torch.randn(shape, generator=gen, device=dev, dtype=dtype).mul_(radius)
    if kind == "uniform":
        return torch.rand(shape, generator=gen, device=dev, dtype=dtype).mul_(2 * radius).sub_(radius)
    lo = torch.special.ndtr(torch.tensor(-2.0, dtype=torch.float64)).item()
    u = torch.rand(shape, generator=gen, device=dev, dtype=torch.float64).mul_(1 - 2 * lo).add_(lo)
    return torch.special.ndtri(u).to(dtype).mul_(radius)


def smooth(explain: Explain, kernel: str = "gaussian", radius: float = 0.1, n_samples: int = 50, seed: int = 0, *,
           batch_size: Optional[int] = None) -> Explain:
    """Smoothed explanation ``Φ_SG(x) = (1/S) Σ_s Φ(x + z_s)`` (SmoothGrad for ``Φ`` = Grad).

    Args:
        explain: ``explain(x, target) -> Tensor like x`` (or ``explain(x)``).
        kernel: ``"gaussian"`` (``z ~ N(0, r² Id)``), ``"uniform"`` (``z ~ U([-r, r]^d)``, the L∞ ball of the
            authors' code) or ``"truncnorm"`` (``N(0, r²)`` truncated to ``[-2r, 2r]`` per pixel).
        radius: ``r >= 0`` (``0`` returns an explanation equal to ``explain``'s).
        n_samples: noisy copies per input ``S``.
        seed: noise seed (the same input gets the same noise on every call, so ``Φ_SG`` is a function).

    Returns:
        ``explain_sg(x, target=None) -> Tensor like x`` with a ``.model`` attribute copied from ``explain``.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    radius = _check_radius(radius)
    S = _check_n_samples(n_samples)
    _explain_arity(explain)
    model = getattr(explain, "model", None)

    def explain_sg(x: torch.Tensor, target=None) -> torch.Tensor:
        check_images(x)
        t = check_target(target, x.shape[0])
        if t is None and isinstance(model, nn.Module):
            t = _resolve_target(model, x.to(model_device(model)), None, model_device(model))
        dev = x.device if t is None else t.device
        xd = x.to(dev)
        shape = tuple(x.shape[1:])
        rows = batch_size or max(1, chunk_size_for(_bytes(x) * 4, device=dev) // S)

        def run(a: int, b: int) -> torch.Tensor:
            gen = _generator(dev, seed * 1_000_003 + a)
            z = _kernel_noise(kernel, radius, (b - a, S) + shape, gen, dev, xd.dtype)
            y = (xd[a:b].unsqueeze(1) + z).reshape((-1,) + shape)
            ty = None if t is None else t[a:b].repeat_interleave(S)
            return _call_explain(explain, y, ty).detach().reshape((b - a, S) + shape).mean(1)

        return run_chunked(run, x.shape[0], rows)

    explain_sg.model = model
    explain_sg.__doc__ = f"{kernel} smoothing (radius {radius}, {S} samples) of {getattr(explain, '__name__', explain)}"
    return explain_sg


def explainer(model: nn.Module, method: str = "grad", *, units: str = "native", **options) -> Explain:
    """``explain(x, target=None)`` calling :func:`helpers.attribution.attribute` (``None`` -> predicted class).

    ``units``: ``"native"`` (what ``attribute`` returns: IG / SHAP carry ``(x - x0)``, Grad / GBP / SmoothGrad do
    not), ``"local"`` (the gradient-like multipliers: IG's path-averaged gradient, for local perturbations) or
    ``"global"`` (native multiplied by ``(x - x0)`` for the gradient-like methods, for global perturbations with
    the zero baseline).

    Example: ``sensitivity_max(explainer(model, "ig", baseline="zero"), x, radius=0.1, n_samples=10)``.
    """
    check_model(model)
    if units not in ("native", "local", "global"):
        raise ValueError(f"units must be 'native', 'local' or 'global', got {units!r}")

    def explain(x: torch.Tensor, target=None) -> torch.Tensor:
        from .attribution import attribute
        from .attribution import explain as _explain

        if units == "local":
            return _explain(model, x, target, method, **options).multipliers.to(x.device, x.dtype)
        a = attribute(model, x, target=target, method=method, **options)
        if units == "global" and method in ("grad", "smoothgrad", "gbp"):
            a = a * x
        return a

    explain.model = model
    explain.__name__ = f"explain_{method}"
    return explain


def smoothing_sweep(model: nn.Module, x: torch.Tensor, explain: Explain, perturbations: Mapping[str, Perturbation],
                    radii: Sequence[float], kernels: Sequence[str] = KERNELS, *, n_smooth: int = 20,
                    n_samples: Optional[int] = None, target=None, normalize: bool = True, seed: int = 0
                    ) -> list:
    """Mean infidelity of ``smooth(explain, kernel, r)`` for every kernel, radius and perturbation.

    Local-unit explanations are multiplied by ``(x - x0)`` for the global perturbations. All (kernel, radius)
    explanations of one perturbation are scored on the same perturbations and forward passes.

    Returns:
        A list of rows ``{"perturbation", "kernel", "radius", "infidelity"}``.
    """
    dev = model_device(model)
    xd = x.to(dev)
    t = _resolve_target(model, xd, target, dev)
    expl = {}
    for kernel in kernels:
        for r in radii:
            r = _check_radius(r)
            phi = smooth(explain, kernel, r, n_smooth, seed=seed)(xd, t) if r > 0 else _call_explain(explain, xd, t)
            expl[(kernel, r)] = phi
    rows = []
    for pname, p in perturbations.items():
        attrs = {f"{k}|{r}": (to_units(v, xd, p, "global") if p.units == "global" else v) for (k, r), v in expl.items()}
        inf = infidelity(model, xd, attrs, p, target=t, n_samples=n_samples, normalize=normalize, seed=seed + 1)
        for (k, r) in expl:
            rows.append({"perturbation": pname, "kernel": k, "radius": r, "infidelity": float(inf[f"{k}|{r}"].mean())})
    return rows


def choose_radius(model: nn.Module, x: torch.Tensor, explain: Explain, perturbation: Perturbation,
                  radii: Sequence[float], *, kernel: str = "gaussian", n_smooth: int = 20,
                  n_samples: Optional[int] = None, target=None, to_global: bool = False, normalize: bool = False,
                  seed: int = 0) -> Tuple[float, Dict[float, float]]:
    """Pick the smoothing radius with the least mean infidelity on ``x`` (use the validation split).

    Every radius is scored on the same perturbations and forward passes. ``to_global=True`` multiplies each smoothed
    explanation by ``(x - x0)`` first (for a global perturbation and a gradient-like ``explain``).

    Returns:
        ``(best radius, {radius: mean infidelity})``.
    """
    if not radii:
        raise ValueError("radii must be a non-empty sequence of radii >= 0")
    dev = model_device(model)
    t = _resolve_target(model, x.to(dev), target, dev)
    xd = x.to(dev)
    attrs = {}
    for r in radii:
        _check_radius(r)
        phi = smooth(explain, kernel, r, n_smooth, seed=seed)(xd, t) if r > 0 else _call_explain(explain, xd, t)
        attrs[str(float(r))] = to_units(phi, xd, perturbation, "global") if to_global else phi
    inf = infidelity(model, xd, attrs, perturbation, target=t, n_samples=n_samples, normalize=normalize,
                     seed=seed + 1)
    scores = {float(k): float(v.mean()) for k, v in inf.items()}
    best = min(scores, key=scores.get)
    return best, scores


# ------------------------------------------------------------------------------ explanation suites and sanity checks


def explanation_suite(model: nn.Module, perturbation: Perturbation, *, sg_radius: float = 0.2,
                      sg_kernel: str = "uniform", n_sg: int = 20, ig_steps: int = 32, n_opt: int = 1000,
                      opt_ridge: float = 1e-3, seed: int = 0) -> Dict[str, Explain]:
    """The explanations of Yeh et al.'s Table 1 as explain functions in ``perturbation``'s units.

    Names: ``Grad``, ``Grad-SG``, ``IG``, ``IG-SG``, ``GBP``, ``GBP-SG``, ``SHAP`` (DeepSHAP with the perturbation's
    baseline as the background) and ``OPT`` (:func:`optimal_explanation` for ``perturbation``). Local units use the
    gradient-like signal of each method (IG's path-averaged gradient, DeepSHAP's multipliers); global units multiply
    it by ``(x - x0)`` at the explained input, after smoothing (as the authors' code does with ``binary_I``), so
    global IG and SHAP are the usual attributions.
    """
    local = perturbation.units == "local"
    x0 = getattr(perturbation, "baseline", 0.0)

    def grad_like(method: str, **kw) -> Explain:
        """The gradient-like (local-unit) explanation: Grad, GBP, IG's path-averaged gradient, DeepSHAP's multipliers."""
        def fn(v: torch.Tensor, t=None) -> torch.Tensor:
            ref = _baseline_like(x0, v)[:1]
            extra = {"baseline": ref} if method == "ig" else {"references": ref} if method == "deepshap" else {}
            return explainer(model, method, units="local", **kw, **extra)(v, t)
        fn.model = model
        return fn

    def units(fn: Explain) -> Explain:
        """Local units as they are; global units: times (x - x0) at the explained (unperturbed) input."""
        if local:
            return fn
        g = lambda v, t=None: fn(v, t) * (v - _baseline_like(x0, v))  # noqa: E731
        g.model = model
        return g

    def opt(v: torch.Tensor, t=None) -> torch.Tensor:
        return optimal_explanation(model, v, perturbation, t, n_samples=n_opt, ridge=opt_ridge, seed=seed).to(v.device)

    opt.model = model
    out: Dict[str, Explain] = {}
    for name, method, kw in (("Grad", "grad", {}), ("IG", "ig", {"n_steps": ig_steps}), ("GBP", "gbp", {})):
        base = grad_like(method, **kw)
        out[name] = units(base)
        out[name + "-SG"] = units(smooth(base, sg_kernel, sg_radius, n_sg, seed=seed))
    out["SHAP"] = units(grad_like("deepshap"))
    out["OPT"] = opt
    return {k: out[k] for k in ("Grad", "Grad-SG", "IG", "IG-SG", "GBP", "GBP-SG", "SHAP", "OPT")}


def score_explanations(model: nn.Module, x: torch.Tensor, suite: Mapping[str, Explain], perturbation: Perturbation,
                       *, target=None, n_samples: Optional[int] = None, normalize: bool = True,
                       sens_radius: float = 0.1, n_sens: int = 10, n_sens_images: Optional[int] = None,
                       seed: int = 0) -> Dict[str, Dict[str, torch.Tensor]]:
    """Per-image infidelity (every explanation on the same perturbations) and max-sensitivity of a suite.

    Returns:
        ``{"infidelity": {name: Tensor N}, "sensitivity": {name: Tensor n_sens_images}, "explanations":
        {name: Tensor like x}}``; sensitivity (relative form) on the first ``n_sens_images`` images (default all).
    """
    dev = model_device(model)
    xd = x.to(dev)
    t = _resolve_target(model, xd, target, dev)
    phis = {k: _call_explain(f, xd, t).detach() for k, f in suite.items()}
    inf = infidelity(model, xd, phis, perturbation, target=t, n_samples=n_samples, normalize=normalize, seed=seed + 1)
    m = xd.shape[0] if n_sens_images is None else min(n_sens_images, xd.shape[0])
    sens = {k: sensitivity_max(f, xd[:m], sens_radius, n_sens, seed=seed + 2, target=t[:m]) for k, f in suite.items()}
    return {"infidelity": inf, "sensitivity": sens, "explanations": {k: v.cpu() for k, v in phis.items()}}


def randomized_models(model: nn.Module, seed: int = 0) -> list:
    """Cascading parameter randomisation (Adebayo et al. 2018): ``[(name, model)]`` with the layers re-initialised
    cumulatively from the top (output) layer down; each copy is in eval mode, the original is untouched.

    Each weight tensor is replaced by Gaussian noise of the same standard deviation (biases by zeros).
    """
    check_model(model)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    gen = torch.Generator().manual_seed(seed)
    cur = copy.deepcopy(model)
    out = []
    for name, _ in reversed(layers):
        cur = copy.deepcopy(cur)
        layer = dict(cur.named_modules())[name]
        with torch.no_grad():
            w = layer.weight
            noise = torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
            w.copy_(noise * w.std())
            if layer.bias is not None:
                layer.bias.zero_()
        out.append((name, cur.eval()))
    return out


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per row of ``a`` and ``b`` (``N x ...``, flattened per row) -> ``N``."""
    def ranks(v: torch.Tensor) -> torch.Tensor:
        v = v.flatten(1).double()
        return v.argsort(1).argsort(1).double()
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return ((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)).float()
