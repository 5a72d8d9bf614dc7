"""Explanation infidelity (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019).

``INFD(Φ, f, x) = E_I[(IᵀΦ - (f(x) - f(x - I)))²]`` for a random perturbation ``I`` (:mod:`helpers.perturbations`,
whose ``units`` say how ``IᵀΦ`` is formed). With ``normalize=True`` the explanation is first rescaled by the optimal
``β = E[IᵀΦ Δf] / E[(IᵀΦ)²]`` (scale invariant, as the authors' code and captum's ``normalize=True``), so
``INFD = E[Δf²] - E[IᵀΦ Δf]² / E[(IᵀΦ)²]``.

Random numbers: the ``S`` perturbations are drawn in blocks of :data:`SAMPLE_BLOCK` from generators seeded by
``(seed, block)`` and shared by every input (common random numbers), so each input's estimate is an average of
``S`` independent draws, unbiased, and does not depend on the batch, the input's position in it, or the chunking.
"""

from __future__ import annotations

from typing import Dict, Iterator, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .baselines import make_baseline
from .batching import bytes_per_image, chunk_size_for, forward
from .perturbations import Draw, as_perturbation
from .validation import Classifier, as_classifier, check_images, check_like, check_n_samples, check_target

__all__ = ["infidelity", "infidelity_from_samples", "beta_rescale", "to_units", "SAMPLE_BLOCK"]

#: Perturbations per generator block (fixed: results must not depend on the memory budget).
SAMPLE_BLOCK = 256


def generator(device: torch.device, seed: int, block: int = 0) -> torch.Generator:
    """The generator of sample block ``block`` for ``seed`` (the one random-number scheme of these modules)."""
    return torch.Generator(device=device).manual_seed((int(seed) * 1_000_003 + block) % (2**63))


def resolve_target(model: nn.Module, x: torch.Tensor, target=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(target, logits)`` at ``x`` (``N x ...``): ``target`` checked against the model's classes (``None``: the
    predicted class), both on the model's device."""
    out = forward(model, x)
    t = check_target(target, x.shape[0], n_classes=out.shape[1])
    return (out.argmax(1) if t is None else t.to(out.device)), out


def as_inputs(model: nn.Module, x, additional_forward_args=()) -> Tuple[Classifier, torch.Tensor]:
    """``(c, xd)``: the one-tensor classifier ``c`` (:func:`helpers.validation.as_classifier`) and the inputs the
    perturbations act on: ``x`` or a tuple of inputs packed as ``N x D``; extra forward arguments follow in ``c.x``."""
    c = as_classifier(model, x, tuple(additional_forward_args) or None)
    xd = c.x[:, :c.n_features] if c.packed else c.x
    return c, (xd.reshape(x.shape) if isinstance(x, torch.Tensor) else xd)


def pack_like(a, x, name: str) -> torch.Tensor:
    """An explanation of ``x`` (a tuple like a tuple ``x``) checked and flattened to ``N x D``."""
    if isinstance(x, torch.Tensor):
        return check_like(a, x, name).flatten(1)
    if not isinstance(a, (tuple, list)) or len(a) != len(x):
        raise TypeError(f"{name} must be a tuple of {len(x)} tensors like the inputs x, got {type(a).__name__}")
    return torch.cat([check_like(v, t, f"{name}[{i}]").flatten(1) for i, (v, t) in enumerate(zip(a, x))], 1)


def evaluate(c: Classifier, x: torch.Tensor, perturbation, target, n_samples: Optional[int], seed: int
             ) -> Iterator[Tuple[slice, Draw, torch.Tensor]]:
    """Draw the perturbations block by block and yield ``(rows, draw, Δf)``, ``Δf = f(x) - f(x - I)`` (``r x s``)
    for the inputs ``rows``; ``c``, ``x``: from :func:`as_inputs`."""
    p = as_perturbation(perturbation)
    n = p.default_samples if n_samples is None else check_n_samples(n_samples)
    t, out = resolve_target(c.model, c.x, target)
    fx, extra = out.gather(1, t.view(-1, 1)).squeeze(1), c.x[:, c.n_features:]      # extra: packed forward args
    for b, s0 in enumerate(range(0, n, SAMPLE_BLOCK)):
        s = min(SAMPLE_BLOCK, n - s0)
        rows_per = max(1, chunk_size_for(bytes_per_image(x), device=x.device) // s)
        for a in range(0, x.shape[0], rows_per):
            rows = slice(a, min(x.shape[0], a + rows_per))
            d = p.draw_block(x, rows, s0, s, generator(x.device, seed, b))
            xp = (x[rows].unsqueeze(1) - d.I).reshape((-1,) + x.shape[1:])
            if c.packed:
                xp = torch.cat([xp.flatten(1), extra[rows].repeat_interleave(s, 0)], 1)
            fp = forward(c.model, xp).gather(1, t[rows].repeat_interleave(s).view(-1, 1)).view(-1, s)
            yield rows, d, fx[rows].unsqueeze(1) - fp


def beta_rescale(dot: torch.Tensor, diff: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The optimal scale ``β = Σ w dot·diff / Σ w dot²`` per row (``dot``, ``diff``: ``N x S``) -> ``N``; 0 where
    ``dot`` is all zero (captum's ``safe_div``)."""
    w = torch.ones_like(dot) if weights is None else weights
    num, den = (w * dot * diff).sum(-1), (w * dot * dot).sum(-1)
    return num / torch.where(den == 0, torch.ones_like(den), den)


def infidelity_from_samples(dot: torch.Tensor, diff: torch.Tensor, weights: Optional[torch.Tensor] = None,
                            normalize: bool = False) -> torch.Tensor:
    """Infidelity from ``dot = IᵀΦ`` and ``diff = f(x) - f(x - I)`` (``N x S``, weights ``N x S``) -> ``N``."""
    w = torch.ones_like(dot) if weights is None else weights
    if normalize:
        dot = beta_rescale(dot, diff, w).unsqueeze(-1) * dot
    return (w * (dot - diff) ** 2).sum(-1) / w.sum(-1)


def infidelity(model: nn.Module, x: torch.Tensor, attributions, perturbation, target=None,
               n_samples: Optional[int] = None, normalize: bool = False, seed: int = 0,
               additional_forward_args: tuple = ()
               ) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
    """Infidelity ``E_I[(IᵀΦ - (f(x) - f(x - I)))²]`` per input from ``n_samples`` perturbations -> ``N`` (float32,
    CPU), or a dict of them when ``attributions`` is a dict ``name -> Φ`` (all scored on the same perturbations).

    ``x``: inputs ``N x ...`` or a tuple of them; ``attributions``: ``Φ`` like ``x`` in the perturbation's units;
    ``perturbation``: see :mod:`helpers.perturbations`; ``target``: LongTensor ``N``, int or ``None`` (the predicted
    class); ``n_samples``: ``None`` for the perturbation's ``default_samples``; ``normalize``: rescale ``Φ`` by ``β``.
    """
    c, xd = as_inputs(model, x, additional_forward_args)
    single = not isinstance(attributions, Mapping)
    attrs = {"_": attributions} if single else dict(attributions)
    if not attrs:
        raise TypeError("attributions must be a tensor like x or a non-empty dict name -> tensor, got an empty dict")
    phi = torch.stack([pack_like(v, x, "attributions" if single else f"attributions[{k!r}]").to(xd.device)
                       for k, v in attrs.items()], dim=2)                                           # N x d x K
    acc = torch.zeros(xd.shape[0], phi.shape[2], 5, dtype=torch.float64, device=xd.device)
    for rows, d, diff in evaluate(c, xd, perturbation, target, n_samples, seed):
        r, s = diff.shape
        W = d.W.reshape(d.W.shape[0], s, -1)
        dot = torch.matmul(W, phi[rows].to(W.dtype)).double()                                      # r x s x K
        df = diff.double().unsqueeze(-1)
        w = torch.ones_like(df) if d.weights is None else d.weights.double().reshape(-1, s, 1).expand(r, s, 1)
        acc[rows] += torch.stack([(w * (dot - df) ** 2).sum(1), (w * dot * dot).sum(1), (w * dot * df).sum(1),
                                  (w * df * df).sum(1).expand(r, dot.shape[2]), w.sum(1).expand(r, dot.shape[2])], -1)
    sq, a, b, c2, sw = acc.unbind(-1)
    # min over β of Σ w (β dot - df)² = Σ w df² - (Σ w dot df)² / Σ w dot²
    if normalize:
        beta = b / torch.where(a == 0, torch.ones_like(a), a)
        sq = beta * beta * a - 2 * beta * b + c2
    val = (sq / sw).float().cpu()
    out = {k: val[:, i].contiguous() for i, k in enumerate(attrs)}
    return out["_"] if single else out


def to_units(attributions: torch.Tensor, x: torch.Tensor, perturbation, to: str = "global") -> torch.Tensor:
    """``Φ_global = Φ_local ⊙ (x - x0)`` (``to="global"``) or back (``"local"``, 0 where ``x == x0``), like ``x``;
    ``x0``: ``perturbation``'s baseline (0 if none), or ``perturbation`` itself when it is a number or a tensor."""
    check_images(x)
    check_like(attributions, x, "attributions")
    if to not in ("global", "local"):
        raise ValueError(f"to must be 'global' or 'local', got {to!r}")
    constant = isinstance(perturbation, (int, float, torch.Tensor))
    x0 = perturbation if constant else getattr(perturbation, "baseline", 0.0)
    diff = x - make_baseline(x0, x)
    if to == "global":
        return attributions * diff
    return torch.where(diff == 0, torch.zeros_like(attributions), attributions / torch.where(diff == 0, 1.0, diff))
