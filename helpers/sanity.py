"""The explanations of Yeh et al.'s Table 1 scored by infidelity and max-sensitivity, and the cascading parameter
randomisation sanity check (Adebayo et al. 2018)."""

from __future__ import annotations

import copy
from typing import Dict, Mapping, Optional, Union

import torch
from torch import nn

from .baselines import make_baseline
from .infidelity import infidelity, resolve_target
from .optimal import optimal_explanation
from .sensitivity import sensitivity_max
from .smoothing import Explain, call_explain, explainer, smooth
from .validation import check_model, model_device

__all__ = ["explanation_suite", "score_explanations", "randomized_models", "rank_correlation", "TABLE1"]

#: The explanations of Table 1, in order.
TABLE1 = ("Grad", "Grad-SG", "IG", "IG-SG", "GBP", "GBP-SG", "SHAP", "OPT")


def explanation_suite(model: nn.Module, perturbation, *, sg_radius: float = 0.2, sg_kernel: str = "uniform",
                      n_sg: int = 20, ig_steps: int = 32, n_opt: int = 1000, opt_ridge: float = 1e-3,
                      seed: int = 0) -> Dict[str, Explain]:
    """Table 1's explanations (:data:`TABLE1`) as explain functions in ``perturbation``'s units: local, the
    gradient-like signal (Grad, GBP, IG's path-averaged gradient, DeepSHAP's multipliers, with the perturbation's
    baseline); global, that signal times ``(v - x0)`` at the input ``v`` it is computed at, so SG averages the
    products over the noisy copies (the authors' ``get_explanation_pdt``). ``OPT``: :func:`optimal_explanation`."""
    x0 = getattr(perturbation, "baseline", 0.0)
    local = perturbation.units == "local"

    def method_fn(method: str, **kw) -> Explain:
        def fn(v: torch.Tensor, t=None) -> torch.Tensor:
            ref = make_baseline(x0, v)
            extra = {"baseline": ref[:1]} if method == "ig" else {"references": ref[:1]} if method == "deepshap" else {}
            phi = explainer(model, method, units="local", **kw, **extra)(v, t)
            return phi if local else phi * (v - ref)
        fn.model = model
        return fn

    def opt(v: torch.Tensor, t=None) -> torch.Tensor:
        return optimal_explanation(model, v, perturbation, t, n_samples=n_opt, ridge=opt_ridge, seed=seed).to(v.device)

    opt.model = model
    out: Dict[str, Explain] = {}
    for name, method, kw in (("Grad", "grad", {}), ("IG", "ig", {"n_steps": ig_steps}), ("GBP", "gbp", {})):
        out[name] = method_fn(method, **kw)
        out[name + "-SG"] = smooth(out[name], sg_kernel, sg_radius, n_sg, seed=seed)
    out["SHAP"], out["OPT"] = method_fn("deepshap"), opt
    return {k: out[k] for k in TABLE1}


def score_explanations(model: nn.Module, x: torch.Tensor, suite: Mapping[str, Explain], perturbation, *, target=None,
                       n_samples: Optional[int] = None, normalize: bool = True, sens_radius: float = 0.1,
                       n_sens: int = 10, n_sens_images: Union[None, int, Mapping[str, int]] = None,
                       limits: Optional[Mapping[str, int]] = None,
                       seed: int = 0) -> Dict[str, dict]:
    """``{"infidelity": {name: N or m}, "delta_f2": N, "sensitivity": {name: M}, "explanations": {name: like x}}``:
    per-input infidelity (every explanation on the same perturbations), that of the zero explanation (``E[Δf²]``, to
    compare models) and relative max-sensitivity on the first ``n_sens_images`` inputs (a number or ``{name: M}``,
    default all). ``limits={name: m}`` explains and scores ``name`` on the first ``m`` inputs only (e.g. OPT); with
    common random numbers its values equal those of a call on ``x[:m]``.
    """
    xd = x.to(model_device(model))
    t = resolve_target(model, xd, target)[0]
    lim = {k: min(int(limits.get(k, len(xd))), len(xd)) if limits else len(xd) for k in suite}
    if any(v < 1 for v in lim.values()):
        raise ValueError(f"limits must be >= 1 inputs per explanation, got {dict(limits)}")
    phis = {k: call_explain(f, xd[:lim[k]], t[:lim[k]]).detach() for k, f in suite.items()}
    padded = {k: torch.cat([v, v.new_zeros((len(xd) - len(v),) + v.shape[1:])]) for k, v in phis.items()}
    explanations = {**padded, "_zero": torch.zeros_like(xd)}
    inf = infidelity(model, xd, explanations, perturbation, t, n_samples, normalize, seed + 1)
    ms = {k: lim[k] if n_sens_images is None else min(lim[k], int(n_sens_images.get(k, lim[k]) if isinstance(
        n_sens_images, Mapping) else n_sens_images)) for k in suite}
    sens = {k: sensitivity_max(f, xd[:ms[k]], sens_radius, n_sens, seed=seed + 2, target=t[:ms[k]])
            for k, f in suite.items() if ms[k] > 0}
    return {"infidelity": {k: inf[k][:lim[k]] for k in phis}, "delta_f2": inf["_zero"], "sensitivity": sens,
            "explanations": {k: v.cpu() for k, v in phis.items()}}


def randomized_models(model: nn.Module, seed: int = 0) -> list:
    """Cascading randomisation: ``[(layer name, model)]``, the Linear / Conv layers re-initialised cumulatively from
    the output layer down (weights: Gaussian noise of the same std, biases: 0); copies in eval mode."""
    check_model(model)
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    gen = torch.Generator().manual_seed(seed)
    cur, out = model, []
    for name in reversed(layers):
        cur = copy.deepcopy(cur)
        layer = cur.get_submodule(name)
        with torch.no_grad():
            w = layer.weight
            w.copy_(torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device) * w.std())
            if layer.bias is not None:
                layer.bias.zero_()
        out.append((name, cur.eval()))
    return out


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per row of ``a`` and ``b`` (``N x ...``, flattened per row) -> ``N``."""
    ra, rb = (v.flatten(1).double().argsort(1).argsort(1).double() for v in (a, b))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return ((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)).float()
