"""Attribution-based confidence (ABC; Jha, Raj, Fernandes, Jha, Jha & Gupta, NeurIPS 2019): weights -> inclusion
probabilities -> masks -> conformance. For one input ``x`` (``d`` features) with predicted class ``t`` (or ``target``):

1. **Weights.** ``w_j = |G_j| e_j / sum_k |G_k| e_k`` from the multipliers ``G`` of :func:`helpers.attribution.explain`
   (for IG ``A_j = (x_j - b_j) G_j``, so ``|G_j|`` is the paper's ``|A_j / (x_j - b_j)|`` without dividing by a small
   ``x_j - b_j``), ``e_j = 1[x_j differs from at least one reference]``: a feature equal to its baseline cannot change.
   With ``K`` references ``G`` is their mean multiplier, so ``|G_j|`` can cancel (notebook 03). All ``G_j = 0``:
   uniform weights over the eligible features; nothing eligible: every sample equals ``x`` and ABC is 1.
2. **Sampling.** Each of ``S`` samples changes feature ``j`` independently with probability ``p_j = min(1, c w_j)``,
   ``c`` exact so that ``sum_j p_j = min(budget, #{j : w_j > 0})``. A changed feature takes its baseline value or,
   with ``K`` references, that of one drawn uniformly among those that differ from ``x_j``; so ``budget`` is the
   expected number of changed features (the *effective budget* of :class:`ABCResult`).
3. **Conformance.** ``ABC(x) = (1/S) sum_s 1[label of x^(s) = t]``.

**Random numbers.** Sample ``s`` changes feature ``j`` iff ``U[s, j] < p_j``, ``U`` a ``S x d`` table of uniforms that
depends only on ``seed`` (:func:`uniforms`); a second table picks the reference. Every input sees the same ``U``: a
result does not depend on the other inputs, the batch position, the chunk size or the device, and more samples
extend the same ones. ``budget=None`` is :func:`default_budget`: MNIST's budget as a share of the ``d`` features.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Any, Optional, Tuple, Union

import torch
from torch import nn

from .attribution import Explanation, explain
from .batching import bytes_per_image, chunk_size_for, hash_uniform, keys, predict, run_chunked
from .validation import as_classifier, check_finite, check_like, check_positive_int, check_target

__all__ = ["ABCResult", "abc_confidence", "abc_weights", "weights_from_multipliers", "inclusion_probabilities",
           "mutated_copies", "uniforms", "default_budget", "flip_rate_by_bin", "DEFAULT_BUDGET",
           "DEFAULT_BUDGET_FRACTION", "DEFAULT_SAMPLES", "SAMPLE_BLOCK"]

#: MNIST's budget (changed features per sample), chosen on the validation split as in notebook 01 (IG, zero baseline,
#: all 94 errors + 400 right predictions, S = 256: AUROC 0.940 at 10 against 0.908 at 20, 0.901 at 5, 0.789 at 2)
DEFAULT_BUDGET = 10.0
#: the default budget as a share of the features: ``budget = max(1, DEFAULT_BUDGET_FRACTION * d)``
DEFAULT_BUDGET_FRACTION = DEFAULT_BUDGET / 784
#: samples per input in quick work; the paper-scale protocol uses 1000
DEFAULT_SAMPLES = 100
#: samples per block of the loop over samples (it does not change the result)
SAMPLE_BLOCK = 64
_STREAM = 51          # ABC's streams of the package's counter-based random numbers: 51 (masks), 52 (references), 53+


@dataclass
class ABCResult:
    """Everything :func:`abc_confidence` computed (``return_details=True``), on the CPU: ``confidence`` ``N``,
    ``predicted`` (LongTensor ``N``, the label every sample is compared with), ``attributions`` and ``multipliers``
    ``N x ...``, ``references`` ``(N|1) x K x ...``, ``weights`` ``N x d`` (rows sum to 1, or 0 when nothing is
    eligible), ``inclusion`` ``N x d`` (rows sum to the budget), ``masks`` bool ``N x S x ...`` (``None`` with
    ``keep_masks=False``), ``labels`` ``N x S``, ``effective_budget`` ``N`` (mean number of changed features per
    sample) and ``seed``: :func:`mutated_copies` ``(x, references, inclusion, seed, 0, k)`` rebuilds the first copies.
    With a tuple of inputs or ``additional_forward_args`` the ``d`` axis holds the packed columns
    (:func:`helpers.validation.as_classifier`); the forward arguments' columns are never changed (weight 0)."""

    confidence: torch.Tensor
    predicted: torch.Tensor
    attributions: torch.Tensor
    multipliers: torch.Tensor
    references: torch.Tensor
    weights: torch.Tensor
    inclusion: torch.Tensor
    masks: Optional[torch.Tensor]
    labels: torch.Tensor
    effective_budget: torch.Tensor
    seed: int


def default_budget(n_features: int) -> float:
    """The default budget for inputs of ``n_features`` features: ``max(1, DEFAULT_BUDGET_FRACTION * n_features)``."""
    return max(1.0, DEFAULT_BUDGET_FRACTION * int(n_features))


def weights_from_multipliers(multipliers: torch.Tensor, x: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """ABC's weights ``N x d`` (step 1 of the module docstring) from multipliers ``G`` (``N x ...``) and references
    ``(N|1) x K x ...``; a row of zeros when no feature is eligible."""
    n = x.shape[0]
    rf = references.reshape(references.shape[0], references.shape[1], -1)
    eligible = (x.reshape(n, 1, -1) != rf).any(dim=1).to(x.dtype)                # N x d
    w = multipliers.reshape(n, -1).abs() * eligible
    w = torch.where(w.sum(1, keepdim=True) > 0, w, eligible)                      # all-zero |G|: uniform
    return w / w.sum(1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)      # a zero row stays zero


def abc_weights(attributions: torch.Tensor, x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """The paper's weights ``N x d`` from attributions, ``w_j ∝ |A_j / (x_j - b_j)|`` (0 where ``x_j == b_j``): for IG
    (``A = G (x - b)``) :func:`weights_from_multipliers` up to round-off."""
    check_like(attributions, x, "attributions")
    baseline = check_like(baseline, x, "baseline", allow_broadcast=True).expand_as(x)
    diff = (x - baseline).reshape(x.shape[0], -1)
    nz = diff != 0
    ratio = torch.where(nz, attributions.reshape(x.shape[0], -1).abs() / torch.where(nz, diff.abs(), 1.0), 0.0)
    return weights_from_multipliers(ratio.view_as(x), x, baseline.unsqueeze(1))


def _check_budget(budget: object) -> float:
    if isinstance(budget, bool) or not isinstance(budget, Real):
        raise TypeError(f"budget must be a number (expected changed features per sample), got {type(budget).__name__}")
    if not budget > 0:
        raise ValueError(f"budget must be > 0 (expected number of changed features per sample), got {budget}")
    return float(budget)


def inclusion_probabilities(weights: torch.Tensor, budget: float) -> torch.Tensor:
    """Poisson-sampling inclusion probabilities ``p = min(1, c w)`` (``N x d``) with ``sum p = min(budget, #{w > 0})``
    for non-negative ``weights`` ``N x d``. ``c`` is exact per row: with ``w`` sorted in decreasing order and the
    first ``m`` entries saturated at 1, ``c = (budget - m) / sum_{j >= m} w_(j)`` for the smallest ``m`` at which
    ``c w_(m) <= 1``."""
    budget = _check_budget(budget)
    w = weights.to(torch.float64)
    ws, _ = w.sort(dim=1, descending=True)
    tail = ws.flip(1).cumsum(1).flip(1)                               # sum_{j >= m} ws_j
    m = torch.arange(w.shape[1], device=w.device, dtype=torch.float64)
    c = (budget - m) / tail
    ok = (tail > 0) & (m < budget) & (c * ws <= 1 + 1e-12)
    cstar = c.gather(1, ok.to(torch.int8).argmax(1).view(-1, 1))
    p = torch.where(ok.any(1).view(-1, 1), (cstar * w).clamp(max=1.0), (w > 0).to(w.dtype))
    return p.to(weights.dtype)


def uniforms(seed: int, start: int, stop: int, d: int, stream: int = 0,
             device: Optional[torch.device] = None) -> torch.Tensor:
    """Rows ``start .. stop`` of the uniform table ``U`` (``(stop - start) x d`` float32): ``U[s, j] =
    hash_uniform(seed, s * d + j)`` (:func:`helpers.batching.hash_uniform`), the same on every device and chunk."""
    key = keys(stop - start, d, device or torch.device("cpu"), start=start * d)
    return hash_uniform(seed, key, stream=_STREAM + stream)


def mutated_copies(x: torch.Tensor, references: torch.Tensor, inclusion: torch.Tensor, seed: int, start: int,
                   stop: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Samples ``start .. stop`` of ABC for inputs ``x`` (``N x ...``): ``(copies N x b x ..., changed N x b x ...)``.

    ``references`` ``(N|1) x K x ...``, ``inclusion`` ``N x d``. Sample ``s`` changes feature ``j`` iff ``U[s, j] <
    p_j`` (:func:`uniforms`, stream 0) to the baseline, or with ``K > 1`` to reference number ``floor(V[s, j] n_j)``
    of the ``n_j`` references that differ from ``x_j`` (in reference order; ``V`` = stream 1).
    """
    n, shape, dev = x.shape[0], x.shape[1:], x.device
    xf = x.reshape(n, 1, -1)                                               # N x 1 x d
    d = xf.shape[2]
    refs = references.to(dev).reshape(references.shape[0], references.shape[1], d)
    changed = uniforms(seed, start, stop, d, device=dev).unsqueeze(0) < inclusion.to(dev).unsqueeze(1)  # N x b x d
    if refs.shape[1] == 1:
        values = refs                                                      # (N|1) x 1 x d, broadcast over samples
    else:
        differ = refs != xf                                                # N x K x d
        n_diff = differ.sum(1, keepdim=True)
        order = (~differ).to(torch.int8).sort(dim=1, stable=True).indices  # differing references first
        ranked = refs.expand(n, -1, -1).gather(1, order)
        v = uniforms(seed, start, stop, d, stream=1, device=dev).unsqueeze(0)
        pick = torch.minimum((v * n_diff).long(), (n_diff - 1).clamp_min(0))   # N x b x d
        values = ranked.gather(1, pick)
    copies = torch.where(changed, values, xf)
    return copies.view(n, stop - start, *shape), changed.view(n, stop - start, *shape)


def abc_confidence(model: nn.Module, x: Union[torch.Tensor, Tuple[torch.Tensor, ...]], *, method: str = "ig",
                   baseline=None, n_samples: int = DEFAULT_SAMPLES, budget: Optional[float] = None, seed: int = 0,
                   return_details: bool = False, target: Optional[torch.Tensor] = None,
                   chunk_size: Optional[int] = None, explanation: Optional[Explanation] = None,
                   keep_masks: bool = True, additional_forward_args: Any = None, **options):
    """Attribution-based confidence of ``model`` on ``x``: ``N`` values in [0, 1] (see the module docstring).

    Args:
        model: ``nn.Module`` in eval mode returning logits ``N x C`` (a single logit is read as two classes).
        x: inputs ``N x ...``, or a tuple of them for ``model(x1, x2, ...)``, packed into ``N x D`` rows
            (:func:`helpers.validation.as_classifier`).
        method, baseline, **options: the attribution (:func:`helpers.attribution.explain`; ``baseline=None`` is the
            method's default; options such as ``n_steps``, ``n_references``, ``references``).
        n_samples: ``S`` changed copies per input (the paper uses 1000).
        budget: expected number of changed features per copy; ``None``: :func:`default_budget`.
        seed: seeds the attribution's randomness and the uniform table (:func:`uniforms`).
        return_details: return an :class:`ABCResult` instead of the confidences.
        target: the class whose attribution drives the sampling and that a copy must keep (default: the prediction).
        chunk_size: copies per forward pass (default: from the memory budget); it does not change the result.
        explanation: a precomputed :func:`helpers.attribution.explain` of ``x`` to reuse (``method``, ``baseline``
            and ``options`` are then ignored).
        keep_masks: with ``return_details``, also return the ``N x S x ...`` masks (``N*S*d`` bytes).
        additional_forward_args: extra arguments of ``model`` (as in captum), never changed.

    Returns:
        ``N`` confidences (float32) on ``x``'s device, or an :class:`ABCResult` on the CPU.
    """
    check_positive_int(n_samples, "n_samples")
    check_positive_int(seed, "seed", minimum=0)
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size")
    c = as_classifier(model, x, additional_forward_args)
    budget = default_budget(c.n_features) if budget is None else _check_budget(budget)
    e = explanation or explain(model, x, target, method, baseline, seed=seed,
                               additional_forward_args=additional_forward_args, **options)
    check_like(e.attributions, c.x, "explanation.attributions")
    dev = e.attributions.device
    xd, refs = c.x.to(dev), e.references.to(dev)
    check_finite(refs, "baseline")
    n, shape = xd.shape[0], tuple(xd.shape[1:])
    if xd.dim() == 2 and c.n_features < xd.shape[1]:      # packed extra forward arguments: never changed
        refs = refs.expand(n, -1, -1).clone()
        refs[:, :, c.n_features:] = xd[:, None, c.n_features:]
    w = weights_from_multipliers(e.multipliers, xd, refs)
    p = inclusion_probabilities(w, budget)
    rows = chunk_size or chunk_size_for(bytes_per_image(xd), device=dev, maximum=8192)

    def block(s0: int, s1: int, keep: bool) -> torch.Tensor:
        def run(a: int, b: int) -> torch.Tensor:
            copies, changed = mutated_copies(xd[a:b], refs[a:b] if refs.shape[0] > 1 else refs, p[a:b], seed, s0, s1)
            if keep:
                return changed.cpu()
            lab = predict(c.model, copies.reshape(-1, *shape), batch_size=rows).view(b - a, s1 - s0)
            return torch.stack([lab, changed.flatten(2).sum(2)], dim=2)           # (b - a) x (s1 - s0) x 2
        return run_chunked(run, n, max(1, rows // (s1 - s0)))

    spans = [(s0, min(n_samples, s0 + SAMPLE_BLOCK)) for s0 in range(0, n_samples, SAMPLE_BLOCK)]
    with torch.inference_mode():
        out = torch.cat([block(s0, s1, False) for s0, s1 in spans], dim=1)          # N x S x 2
        labels, counts = out[..., 0], out[..., 1]
        conf = (labels == e.target.to(dev).view(-1, 1)).float().mean(1)
        if not return_details:
            return conf.to(c.x.device if isinstance(x, (tuple, list)) else x.device)
        masks = torch.cat([block(s0, s1, True) for s0, s1 in spans], dim=1) if keep_masks else None
    return ABCResult(confidence=conf.cpu(), predicted=e.target.cpu(), attributions=e.attributions.cpu(),
                     multipliers=e.multipliers.cpu(), references=refs.cpu(), weights=w.cpu(), inclusion=p.cpu(),
                     masks=masks, labels=labels.cpu(), effective_budget=counts.float().mean(1).cpu(), seed=seed)


def flip_rate_by_bin(model: nn.Module, x: torch.Tensor, scores: torch.Tensor, baseline: torch.Tensor, *,
                     n_bins: int = 10, k: int = 5, n_samples: int = 20, seed: int = 0,
                     target: Optional[torch.Tensor] = None) -> torch.Tensor:
    """How often the label flips when ``k`` features of one score bin are set to the baseline: ``N x n_bins``, the
    measurable content of ABC's Theorem 1. An input's features that differ from the baseline are ranked by
    ``|scores|`` and cut into ``n_bins`` equal-count bins (bin 0 = the highest); each of ``n_samples`` samples sets
    the ``min(k, bin size)`` features of a bin with the smallest uniforms (:func:`uniforms`, stream ``2 + bin``) to
    the baseline. Entry: the share of samples whose label differs from ``target`` (default: the prediction)."""
    for value, name in ((n_bins, "n_bins"), (k, "k"), (n_samples, "n_samples")):
        check_positive_int(value, name)
    check_like(scores, x, "scores")
    baseline = check_like(baseline, x, "baseline", allow_broadcast=True).expand_as(x)
    n, d = x.shape[0], x[0].numel()
    xf, bf = x.reshape(n, 1, d), baseline.reshape(n, 1, d)
    target = predict(model, x).cpu() if target is None else check_target(target, n)
    eligible = (xf != bf).squeeze(1)
    sc = torch.where(eligible, scores.reshape(n, d).abs().to(x.dtype), -1.0)
    rank = sc.argsort(dim=1, descending=True, stable=True).argsort(dim=1)           # 0 = highest |score|
    bins = torch.where(eligible, rank * n_bins // eligible.sum(1, keepdim=True).clamp_min(1), -1)
    out = torch.zeros(n, n_bins)
    for q in range(n_bins):
        u = torch.where((bins == q).unsqueeze(1), uniforms(seed, 0, n_samples, d, stream=2 + q, device=x.device), 2.0)
        thr = u.topk(min(k, d), dim=2, largest=False).values[..., -1:]
        xs = torch.where((u <= thr) & (u < 2.0), bf, xf).reshape(n * n_samples, *x.shape[1:])
        labels = predict(model, xs).cpu().view(n, n_samples)
        out[:, q] = (labels != target.view(-1, 1)).float().mean(1)
    return out
