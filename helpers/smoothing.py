"""Smoothed explanations ``Φ_SG(x) = E_z[Φ(x + z)]`` (SmoothGrad; Yeh et al. 2019, Sec. 4) and the radius choice.

An *explain function* is ``explain(x, target) -> Tensor like x`` (or ``explain(x)``); :func:`explainer` and
:func:`smooth` return one with a ``.model`` (used to fix the target to the prediction at ``x``). :func:`smooth` draws
its ``S`` noise vectors once from the seed for every input (common random numbers), so ``Φ_SG`` is a function of
``x`` alone, whatever its batch or position, and equals ``Φ`` at radius 0.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from . import attribution
from .batching import bytes_per_image, chunk_size_for, run_chunked
from .infidelity import infidelity, resolve_target
from .validation import check_images, check_model, check_n_samples, check_target, model_device

__all__ = ["KERNELS", "kernel_noise", "smooth", "explainer", "call_explain", "smoothing_sweep", "choose_radius"]

Explain = Callable[..., torch.Tensor]

#: Smoothing kernels: ``N(0, r²)``, ``U([-r, r])`` (the L∞ ball of the authors' code), ``N(0, r²)`` cut at ``±2r``.
KERNELS = ("gaussian", "uniform", "truncnorm")


def call_explain(explain: Explain, x: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
    """``explain(x, target)`` (or ``explain(x)`` for a one-argument function), checked to return a tensor like x."""
    if not callable(explain):
        raise TypeError(f"explain must be callable explain(x, target) -> Tensor like x, got {type(explain).__name__}")
    try:
        two = inspect.signature(explain).bind(x, target) is not None
    except (TypeError, ValueError) as err:                        # TypeError: it takes x only; ValueError: unknown
        two = isinstance(err, ValueError)
    out = explain(x, target) if two else explain(x)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"explain must return a tensor of the shape of its input {tuple(x.shape)}, got {got}")
    return out


def kernel_noise(kernel: str, radius: float, shape: Tuple[int, ...], gen: torch.Generator,
                 device=None, dtype=torch.float32) -> torch.Tensor:
    """Noise ``z`` of ``shape`` from a kernel of radius ``r`` (see :data:`KERNELS`)."""
    if kernel == "gaussian":
        return torch.randn(shape, generator=gen, device=device, dtype=dtype) * radius
    if kernel == "uniform":
        return (torch.rand(shape, generator=gen, device=device, dtype=dtype) * 2 - 1) * radius
    lo = float(torch.special.ndtr(torch.tensor(-2.0, dtype=torch.float64)))       # inverse CDF on [Φ(-2), Φ(2)]
    u = torch.rand(shape, generator=gen, device=device, dtype=torch.float64) * (1 - 2 * lo) + lo
    return (torch.special.ndtri(u) * radius).to(dtype)


def smooth(explain: Explain, kernel: str = "gaussian", radius: float = 0.1, n_samples: int = 50,
           seed: int = 0) -> Explain:
    """``Φ_SG(x) = (1/S) Σ_s Φ(x + z_s)``, the same ``S = n_samples`` noise vectors ``z_s`` (:data:`KERNELS`,
    radius ``r >= 0``) for every input: an explain function ``explain_sg(x, target=None) -> Tensor like x`` with
    ``explain``'s ``.model``. For global units in the authors' convention (``get_explanation_pdt``), pass an
    ``explain`` that already multiplies by the input: the product is then taken at every noisy copy.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    S = check_n_samples(n_samples)
    model = getattr(explain, "model", None)

    def explain_sg(x: torch.Tensor, target=None) -> torch.Tensor:
        check_images(x)
        dev = model_device(model) if isinstance(model, nn.Module) else x.device
        xd = x.to(dev)
        t = check_target(target, x.shape[0])
        if t is None and isinstance(model, nn.Module):                        # the prediction at x, for every copy
            t = resolve_target(model, xd)[0]
        gen = torch.Generator(device=dev).manual_seed(int(seed) % (2**63))
        z = kernel_noise(kernel, float(radius), (S,) + x.shape[1:], gen, dev, xd.dtype)           # shared by all

        def run(a: int, b: int) -> torch.Tensor:
            y = (xd[a:b].unsqueeze(1) + z).reshape((-1,) + x.shape[1:])
            ty = None if t is None else t[a:b].to(dev).repeat_interleave(S)
            return call_explain(explain, y, ty).detach().reshape((b - a, S) + x.shape[1:]).mean(1)

        return run_chunked(run, x.shape[0], max(1, chunk_size_for(bytes_per_image(x, 200), device=dev) // S))

    explain_sg.model = model
    return explain_sg


def explainer(model: nn.Module, method: str = "grad", *, units: str = "native", **options) -> Explain:
    """``explain(x, target=None)`` from :func:`helpers.attribution.attribute`; ``units``: ``"native"`` (as
    ``attribute``), ``"local"`` (the multipliers, e.g. IG's path-averaged gradient) or ``"global"`` (Grad, SmoothGrad
    and GBP times ``x``)."""
    check_model(model)
    if units not in ("native", "local", "global"):
        raise ValueError(f"units must be 'native', 'local' or 'global', got {units!r}")

    def explain(x: torch.Tensor, target=None) -> torch.Tensor:
        if units == "local":
            return attribution.explain(model, x, target, method, **options).multipliers.to(x.device, x.dtype)
        a = attribution.attribute(model, x, target=target, method=method, **options)
        return a * x if units == "global" and method in ("grad", "smoothgrad", "gbp") else a

    explain.model = model
    return explain


def smoothing_sweep(model: nn.Module, x: torch.Tensor, explain: Explain, perturbations: Mapping[str, object],
                    radii: Sequence[float], kernels: Sequence[str] = KERNELS, *, n_smooth: int = 20,
                    n_samples: Optional[int] = None, target=None, normalize: bool = True, seed: int = 0) -> list:
    """Rows ``{"perturbation", "kernel", "radius", "infidelity"}``: the mean infidelity of
    ``smooth(explain, kernel, r)``
    on ``x`` (validation inputs), every (kernel, radius) on the same perturbations. Under a global perturbation the
    explanation is multiplied by ``(x - x0)`` at each noisy copy (the authors' convention)."""
    xd = x.to(model_device(model))
    t = resolve_target(model, xd, target)[0]
    rows = []
    for pname, p in perturbations.items():
        base = explain
        if p.units == "global":
            x0 = getattr(p, "baseline", 0.0)
            base = lambda v, tt=None, f=explain, x0=x0: call_explain(f, v, tt) * (v - x0)  # noqa: E731
            base.model = getattr(explain, "model", None)
        attrs = {(k, float(r)): (smooth(base, k, r, n_smooth, seed) if r > 0 else base)(xd, t)
                 for k in kernels for r in radii}
        inf = infidelity(model, xd, attrs, p, t, n_samples, normalize, seed + 1)
        rows += [{"perturbation": pname, "kernel": k, "radius": r, "infidelity": float(v.mean())}
                 for (k, r), v in inf.items()]
    return rows


def choose_radius(model: nn.Module, x: torch.Tensor, explain: Explain, perturbation, radii: Sequence[float], *,
                  kernel: str = "gaussian", n_smooth: int = 20, n_samples: Optional[int] = None, target=None,
                  normalize: bool = False, seed: int = 0) -> Tuple[float, Dict[float, float]]:
    """The radius with the least mean infidelity on ``x`` (the validation split): ``(best, {radius: infidelity})``."""
    if not radii:
        raise ValueError("radii must be a non-empty sequence of radii >= 0")
    rows = smoothing_sweep(model, x, explain, {"p": perturbation}, radii, (kernel,), n_smooth=n_smooth,
                           n_samples=n_samples, target=target, normalize=normalize, seed=seed)
    scores = {r["radius"]: r["infidelity"] for r in rows}
    return min(scores, key=scores.get), scores
