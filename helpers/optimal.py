"""Infidelity-optimal explanations (Yeh et al. 2019, Prop. 2.1 and Sec. 2.2):
``Φ* = argmin_Φ E_I[(IᵀΦ - Δf)²] = E[IIᵀ]⁻¹ E[I Δf]``, ``Δf = f(x) - f(x - I)`` (in the perturbation's units:
``W = I`` for local perturbations, ``W = M`` for global ones).

* Known ``E[IIᵀ] = u uᵀ + diag(D)``, ``u = E[I]`` (Gaussian, NoisyBaseline): only ``E[I Δf]`` is sampled, with the
  control variate ``E[I Δf] = E[I (Δf - c)] + c u`` (``c`` = mean ``Δf``); Sherman-Morrison solves in O(d).
* Otherwise least squares: one Gram matrix for all inputs when the draws are shared (masks, Gaussian noise), else
  one per input; Cholesky, or the pseudo-inverse for a singular ``E[IIᵀ]`` (the rebuttal's remedy).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from .infidelity import as_inputs, evaluate, generator
from .perturbations import as_perturbation

__all__ = ["optimal_explanation", "optimal_from_samples", "solve_psd", "sherman_morrison"]


def solve_psd(g: torch.Tensor, r: torch.Tensor, ridge: float = 0.0) -> torch.Tensor:
    """Solve ``(G + ridge Id) φ = r`` for symmetric PSD ``G`` (``... x d x d``; ``r``: ``... x d x k``): Cholesky when
    well conditioned (pivot ratio > 1e-10), else the pseudo-inverse (minimum-norm least squares)."""
    a = g + ridge * torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    chol, info = torch.linalg.cholesky_ex(a)
    if not bool((info != 0).any()):
        piv = torch.diagonal(chol, dim1=-2, dim2=-1) ** 2
        if bool((piv.min(-1).values > 1e-10 * piv.max(-1).values).all()):
            return torch.cholesky_solve(r, chol)
    return torch.linalg.pinv(a, hermitian=True) @ r


def sherman_morrison(u: torch.Tensor, dg: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``(u uᵀ + diag(dg))⁻¹ r`` per row (``u``, ``dg``, ``r``: ``N x d``, float64), O(d)."""
    coef = (u * r / dg).sum(1, keepdim=True) / (1.0 + (u * u / dg).sum(1, keepdim=True))
    return (r - coef * u) / dg


def _sums(W: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> dict:
    """Weighted sums of one block (``W``: ``n x S x d`` with ``n`` = 1 or ``N``; ``y``, ``w``: ``N x S``, float64)."""
    return {"Wy": torch.matmul((w * y).unsqueeze(1), W).squeeze(1), "W": torch.matmul(w.unsqueeze(1), W).squeeze(1),
            "y": (w * y).sum(1, keepdim=True), "1": w.sum(1, keepdim=True)}


def _gram(W: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``Σ_s w_s W_s W_sᵀ`` (``W``: ``n x S x d``, ``w``: ``N x S``) -> ``n x d x d``."""
    return torch.matmul((W * w[: W.shape[0]].unsqueeze(-1)).transpose(1, 2), W)


def _solve(acc: dict, gram: Optional[torch.Tensor], ridge: float, second_moment=None) -> torch.Tensor:
    """Φ from the sums of :func:`_sums`: the control-variate closed form when ``second_moment = (u, D)`` is given,
    else least squares with ``gram`` (``1 x d x d`` shared by every input, or ``N x d x d``)."""
    s1 = acc["1"]
    if second_moment is None:
        g = gram / s1[: gram.shape[0]].unsqueeze(-1)
        return solve_psd(g, (acc["Wy"] / s1).unsqueeze(-1), ridge).squeeze(-1).float()
    u, dg = (t.double().flatten(1).to(s1.device) for t in second_moment)
    c = acc["y"] / s1
    return sherman_morrison(u, dg + ridge, (acc["Wy"] - c * acc["W"]) / s1 + c * u).float()    # E[W (y - c)] + c u


def optimal_from_samples(W: torch.Tensor, diff: torch.Tensor, weights: Optional[torch.Tensor] = None,
                         ridge: float = 0.0, second_moment: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
                         ) -> torch.Tensor:
    """``argmin_Φ Σ_s w_s (W_sᵀΦ - diff_s)² (+ ridge ‖Φ‖²)`` per input from given samples -> ``N x d`` (float32).

    ``W``: ``N x S x d`` (or ``S x d``, shared by every input); ``diff``: ``N x S``; ``weights``: ``N x S`` or ``S``;
    ``second_moment``: ``(u, D)`` (``N x d`` each) when ``E[W] = u``, ``E[WWᵀ] = u uᵀ + diag(D)`` are known: the
    control-variate closed form, else least squares (float64 sums and solves).
    """
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    W3, y = (W if W.dim() == 3 else W.unsqueeze(0)), diff.double()
    w = (torch.ones_like(y) if weights is None else weights.double()).expand(y.shape)
    if second_moment is None:
        if W3.shape[0] == 1 and not bool((w == w[:1]).all()):
            raise ValueError("a shared W needs the same weights for every input")
        Wd = W3.double()
        return _solve(_sums(Wd, y, w), _gram(Wd, w), ridge)
    # with c known up front, W multiplies the centred (y - c), which does not cancel: no float64 copy of W needed
    u, dg = (t.double().flatten(1).to(y.device) for t in second_moment)
    sw = w.sum(1, keepdim=True)
    c = (w * y).sum(1, keepdim=True) / sw
    v = (w * (y - c) / sw).to(W3.dtype)
    r = torch.matmul(v.unsqueeze(1), W3).squeeze(1).double() + c * u                        # E[W (y - c)] + c u
    return sherman_morrison(u, dg + ridge, r).float()


def optimal_explanation(model: nn.Module, x: torch.Tensor, perturbation, target=None, n_samples: Optional[int] = None,
                        ridge: float = 0.0, *, method: str = "auto", seed: int = 0, additional_forward_args: tuple = ()
                        ) -> torch.Tensor:
    """The infidelity-optimal explanation ``Φ* = E[IIᵀ]⁻¹ E[I Δf]`` per input, in the perturbation's units: like
    ``x`` (float32, CPU). Arguments as for :func:`helpers.infidelity.infidelity`; ``ridge``: ``λ >= 0`` added to the
    diagonal of ``E[IIᵀ]`` (0: pseudo-inverse if singular); ``method``: ``"closed_form"`` (known ``E[IIᵀ]``:
    ``perturbation.second_moment``), ``"lstsq"``, or ``"auto"`` (closed form when available).
    """
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not math.isfinite(ridge) or ridge < 0:
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    if method not in ("auto", "closed_form", "lstsq"):
        raise ValueError(f"method must be 'auto', 'closed_form' or 'lstsq', got {method!r}")
    closed = hasattr(perturbation, "second_moment") and getattr(perturbation, "units", None) == "local"
    if method == "closed_form" and not closed:
        raise ValueError(f"{type(perturbation).__name__} has no known E[IIᵀ] (second_moment); use method='lstsq'")
    closed = closed and method != "lstsq"
    c, xd = as_inputs(model, x, additional_forward_args)
    N, d = xd.shape[0], xd[0].numel()
    acc = {k: torch.zeros(N, m, dtype=torch.float64, device=xd.device)
           for k, m in (("Wy", d), ("W", d), ("y", 1), ("1", 1))}
    # draws shared by every input (one W, e.g. Square's masks) are told apart on two rows (a chunk of one row is not)
    probe = N > 1 and as_perturbation(perturbation).draw_block(xd, slice(0, 2), 0, 1, generator(xd.device, seed))
    shared = not probe or (probe.W.shape[0] == 1 and (probe.weights is None or probe.weights.shape[0] == 1))
    gram = None if closed else torch.zeros(1 if shared else N, d, d, dtype=torch.float64, device=xd.device)
    for rows, dr, diff in evaluate(c, xd, perturbation, target, n_samples, seed):
        r, s = diff.shape
        W, y = dr.W.reshape(dr.W.shape[0], s, -1).double(), diff.double()
        w = (torch.ones_like(y) if dr.weights is None else dr.weights.double()).expand(r, s)
        for k, v in _sums(W, y, w).items():                                                    # float64 sums
            acc[k][rows] += v
        if gram is not None and (not shared or rows.start == 0):                # a shared Gram once per block
            gram[slice(None) if shared else rows] += _gram(W, w)
    phi = _solve(acc, gram, ridge, perturbation.second_moment(xd) if closed else None).cpu()
    return c.unpack(phi) if isinstance(x, (tuple, list)) else phi.reshape(x.shape)
