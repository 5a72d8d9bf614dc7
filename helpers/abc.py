"""Attribution-based confidence (ABC; Jha, Raj, Fernandes, Jha, Jha & Gupta, NeurIPS 2019), made precise.

The algorithm, for one input ``x`` with predicted class ``t`` (or a given ``target``):

1. **Attribution.** ``A = attribute(model, x, t, method, baseline)`` with its multipliers ``G`` (see
   :class:`helpers.attribution.Explanation`): for integrated gradients ``A_j = (x_j - b_j) G_j`` with ``G`` the
   path-averaged gradient, so ``|A_j / (x_j - b_j)| = |G_j|``. We compute the weight from ``G`` directly, so
   nothing divides by ``x_j - b_j`` and nothing blows up where ``x_j = b_j``.
2. **Weights.** ``w_j = |G_j| e_j / sum_k |G_k| e_k`` where ``e_j = 1[x_j != b_j]`` (for several references:
   ``x_j`` differs from at least one): a feature already equal to its baseline gets no weight, since mutating it
   changes nothing. If every eligible ``G_j`` is 0 (a constant model), the weights are uniform over the eligible
   features; if no feature is eligible, every sample equals ``x`` and ABC is 1.
3. **Sampling (the exact scheme).** Each of the ``S`` samples mutates every feature independently (Poisson
   sampling) with inclusion probability ``p_j = min(1, c w_j)``, where ``c`` is chosen (exactly, by sorting) so that
   ``sum_j p_j = min(budget, #{j : w_j > 0})``: a sample mutates ``budget`` features *in expectation*, and the
   chance that feature ``j`` is mutated is proportional to its weight until it saturates at 1.
   A mutated feature takes its baseline value ``b_j`` (multi-reference methods: the value in one reference drawn
   uniformly per sample).
4. **Conformance.** ``ABC(x) = (1/S) sum_s 1[argmax f(x^(s)) = t]``.

Everything is a pure function of ``seed`` and the input's position in ``x`` (the exact random-number scheme, see
:class:`_Perturber`): only features with ``p_j > 0`` are drawn; the uniforms of input ``i``'s samples
``64 b .. 64 b + 63`` are one ``torch.rand(64, m_i)`` (``m_i`` = its number of features with ``p_j > 0``, in feature
order) from a generator seeded with :func:`block_seed` ``(seed, 51, i, b)``, and sample ``s`` mutates feature ``j``
iff its uniform is ``< p_j``. So the chunk size does not change the result, an input's samples do not depend on the
other inputs, and a run with more samples starts with the same ones (the numbers are per device type: the CPU and
CUDA generators differ). The ``N x S`` perturbed copies are built on the model's device chunk by chunk into one
reused buffer (each copy is its input, then one ``scatter_`` writes its active features: the reference value where
mutated, its own value elsewhere), and each chunk is one batched forward pass under ``torch.inference_mode`` through
the fastest forward form (:func:`helpers.fastpath.jit_forward`); on the CPU a chunk is cache-sized
(:data:`CPU_CHUNK` rows).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .attribution import METHODS, BaselineLike, Explanation, _keys, _mix_int, explain, fast_model, hash_uniform
from .batching import bytes_per_image, chunk_size_for, run_chunked
from .validation import check_finite, check_like, check_positive_int

__all__ = ["ABCResult", "abc_confidence", "abc_weights", "weights_from_multipliers", "inclusion_probabilities",
           "DEFAULT_BUDGET", "DEFAULT_SAMPLES", "flip_rate_by_bin", "block_seed", "default_chunk_size"]

#: expected number of mutated features per sample (see notebook 01 for the sweep that chose it)
DEFAULT_BUDGET = 10.0
#: samples per input in quick work; the paper-scale protocol uses 1000
DEFAULT_SAMPLES = 100


@dataclass
class ABCResult:
    """Everything :func:`abc_confidence` computed (``return_details=True``); tensors on the CPU.

    Attributes:
        confidence: ``N`` in [0, 1].
        predicted: LongTensor ``N``: the label every sample is compared with (the prediction, or ``target``).
        attributions: ``N x ...``; multipliers: ``N x ...`` (``G``, see :mod:`helpers.attribution`).
        weights: ``N x d`` sampling weights (rows sum to 1, or 0 when nothing is eligible).
        inclusion: ``N x d`` per-sample mutation probabilities ``p_j`` (rows sum to the expected budget).
        masks: bool ``N x S x ...``: which features each sample mutated (``None`` with ``keep_masks=False``).
        reference_index: LongTensor ``N x S``: the reference each sample used (all 0 for one baseline).
        labels: LongTensor ``N x S``: the predicted label of each sample.
    """

    confidence: torch.Tensor
    predicted: torch.Tensor
    attributions: torch.Tensor
    multipliers: torch.Tensor
    weights: torch.Tensor
    inclusion: torch.Tensor
    masks: torch.Tensor
    reference_index: torch.Tensor
    labels: torch.Tensor


def weights_from_multipliers(multipliers: torch.Tensor, x: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """ABC sampling weights ``N x d`` from multipliers ``G`` (``N x ...``) and references ``(N|1) x K x ...``.

    ``w_j ∝ |G_j| 1[x_j != r_kj for some k]``, rows normalised to 1; uniform over the eligible features when all
    their ``|G_j|`` are 0; a row of zeros when no feature is eligible.
    """
    n = x.shape[0]
    xf = x.reshape(n, 1, -1)
    rf = references.reshape(references.shape[0], references.shape[1], -1)
    eligible = (xf != rf).any(dim=1).to(x.dtype)                      # N x d
    w = multipliers.reshape(n, -1).abs() * eligible
    total = w.sum(1, keepdim=True)
    flat = total.squeeze(1) <= 0
    if bool(flat.any()):
        w = torch.where(flat.view(-1, 1), eligible, w)
        total = w.sum(1, keepdim=True)
    return torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), torch.zeros_like(w))


def abc_weights(attributions: torch.Tensor, x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """The paper's weights from attributions: ``w_j ∝ |A_j / (x_j - b_j)|``, 0 where ``x_j == b_j``; ``N x d``.

    Equal to :func:`weights_from_multipliers` for IG (``A = G (x - b)``) up to round-off; prefer the multipliers,
    which never divide by a small ``x_j - b_j``.
    """
    check_like(attributions, x, "attributions")
    baseline = check_like(baseline, x, "baseline", allow_broadcast=True).expand_as(x)
    diff = (x - baseline).reshape(x.shape[0], -1)
    a = attributions.reshape(x.shape[0], -1)
    nz = diff != 0
    ratio = torch.where(nz, a.abs() / torch.where(nz, diff.abs(), torch.ones_like(diff)), torch.zeros_like(a))
    return weights_from_multipliers(ratio.view_as(x), x, baseline.unsqueeze(1))


def inclusion_probabilities(weights: torch.Tensor, budget: float) -> torch.Tensor:
    """Poisson-sampling inclusion probabilities ``p = min(1, c w)`` with ``sum p = min(budget, #{w > 0})``.

    ``weights``: ``N x d``, non-negative. ``c`` is exact per row: with ``w`` sorted in decreasing order and the
    first ``m`` entries saturated at 1, ``c = (budget - m) / sum_{j >= m} w_(j)`` for the smallest ``m`` at which
    ``c w_(m) <= 1``.
    """
    if not budget > 0:
        raise ValueError(f"budget must be > 0 (expected number of mutated features per sample), got {budget}")
    w = weights.to(torch.float64)
    ws, _ = w.sort(dim=1, descending=True)
    tail = ws.flip(1).cumsum(1).flip(1)                               # sum_{j >= m} ws_j
    m = torch.arange(w.shape[1], device=w.device, dtype=torch.float64)
    c = (budget - m) / tail
    ok = (tail > 0) & (m < budget) & (c * ws <= 1 + 1e-12)
    has = ok.any(1)
    first = ok.to(torch.int8).argmax(1)
    cstar = c.gather(1, first.view(-1, 1))
    p = torch.where(has.view(-1, 1), (cstar * w).clamp(max=1.0), (w > 0).to(w.dtype))
    return p.to(weights.dtype)


def _forward_fn(model: nn.Module, x: torch.Tensor, mode: str):
    if mode == "channels_last":
        return fast_model(model, x)        # cached channels-last copy (no copy per call)
    if mode == "jit":
        from .fastpath import jit_forward

        return jit_forward(model, x[:8])   # cached traced + frozen copy (no trace per call)
    from .fastpath import fast_forward_fn

    return fast_forward_fn(model, mode, example=x[:256])


#: samples per generator block of the mask uniforms (see :class:`_MaskSampler`)
SAMPLE_BLOCK = 64
#: rows per forward pass on the CPU: the CNN's activations for 512 MNIST images (26 MB) fit a 32 MB L3 cache. On the
#: 2-core benchmark machine the jit forward ran steadily at ~32k img/s at batch 512, while at 1,024 (51 MB) it ran
#: at that rate in some rounds and ~1.6x slower in others
CPU_CHUNK = 512


def default_chunk_size(x: torch.Tensor) -> int:
    """Perturbed copies per forward pass: cache-sized on the CPU (:data:`CPU_CHUNK`), else from the memory budget."""
    rows = chunk_size_for(bytes_per_image(x), device=x.device, maximum=8192)
    return min(rows, CPU_CHUNK) if x.device.type == "cpu" else rows


def block_seed(seed: int, stream: int, item: int, block: int) -> int:
    """The generator seed of block ``block`` of item ``item`` (a splitmix64 hash; non-negative, < 2**63)."""
    return _mix_int(_mix_int(int(seed) * 1000003 + int(stream) * 7919 + int(item)) + int(block)) & ((1 << 63) - 1)


@contextmanager
def _one_thread(device: torch.device):
    """Run the enclosed CPU work on one intra-op thread (no-op on other devices).

    Building a chunk is a few dozen small element-wise ops; with two or more threads each one is a parallel region
    whose barrier waits for every thread, and on a shared CPU (another process on the other core) a descheduled
    thread stretches each barrier to a time slice: the build of 8,192 copies took 0.75 s with 2 threads against
    17 ms with 1 under such load (and 11 vs 14 ms on a quiet machine). The forward passes keep every thread.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Perturber:
    """Builds ABC's perturbed copies of the sample rows ``a .. b`` (row ``input * S + sample``) chunk by chunk.

    Only features with ``p_j > 0`` can be mutated; input ``i`` has ``m_i`` of them (its *active* features, in
    increasing feature order). Sample ``s`` of input ``i`` mutates its ``q``-th active feature iff
    ``u[i, s, q] < p``, with ``u[i, s, :]`` row ``s mod B`` of ``torch.rand(B, m_i)`` drawn from a generator seeded
    with :func:`block_seed` ``(seed, 51, i, s // B)`` (``B`` = :data:`SAMPLE_BLOCK`). Any chunking of the rows gives
    the same masks, and an input's masks depend neither on the other inputs nor on ``S`` (a run with more samples
    starts with the same ones). A mutated feature takes its value in the reference of the sample
    (``hash_uniform(seed, row, 52)`` picks one of ``K``).

    Everything per chunk is vectorised over the (sample, active feature) pairs of each input in it: the copies are
    the input broadcast into a preallocated buffer, and one ``scatter_`` writes the ``m_i`` active features.
    """

    def __init__(self, p: torch.Tensor, x: torch.Tensor, refs: torch.Tensor, seed: int, n_samples: int,
                 stream: int = 51) -> None:
        n, d = p.shape
        self.device, self.seed, self.stream, self.s, self.d = p.device, int(seed), int(stream), int(n_samples), d
        act = p > 0
        self.counts = act.sum(1).tolist()
        col = torch.arange(d, device=p.device).expand(n, d)
        order = torch.where(act, col, torch.full_like(col, d)).sort(1).values      # active features first
        self._order = torch.where(order < d, order, torch.zeros_like(order))        # N x d
        self._p = p.gather(1, self._order)                                          # their p_j
        self.x = x.reshape(n, d)
        self.refs = refs.reshape(refs.shape[0], refs.shape[1], d)                   # (N|1) x K x d
        self.gen = torch.Generator(device=p.device)

    def active(self, i: int) -> torch.Tensor:
        """LongTensor ``m_i``: the features of input ``i`` with ``p_j > 0``, in increasing order."""
        return self._order[i, :self.counts[i]]

    def segments(self, a: int, b: int):
        """``(i, s0, s1, offset)``: the samples ``s0 .. s1`` of input ``i`` are rows ``offset ..`` of the chunk."""
        s = self.s
        for i in range(a // s, (b - 1) // s + 1):              # the few inputs in a chunk
            s0, s1 = max(a, i * s) - i * s, min(b, (i + 1) * s) - i * s
            yield i, s0, s1, i * s + s0 - a

    def hits(self, i: int, s0: int, s1: int) -> torch.Tensor:
        """bool ``(s1 - s0) x m_i``: which active features of input ``i`` samples ``s0 .. s1`` mutate."""
        mi, blk = self.counts[i], SAMPLE_BLOCK
        u = torch.empty(s1 - s0, mi, device=self.device)
        for j in range(s0 // blk, (s1 - 1) // blk + 1):        # one vectorised draw per block of samples
            self.gen.manual_seed(block_seed(self.seed, self.stream, i, j))
            lo, hi = max(s0, j * blk), min(s1, (j + 1) * blk)
            if lo == j * blk and hi == (j + 1) * blk:
                torch.rand(blk, mi, generator=self.gen, device=self.device, out=u[lo - s0:hi - s0])
            else:
                u[lo - s0:hi - s0] = torch.rand(blk, mi, generator=self.gen, device=self.device)[lo - j * blk:hi - j * blk]
        return u < self._p[i, :mi]

    def reference_index(self, rows: torch.Tensor) -> torch.Tensor:
        """LongTensor like ``rows``: the reference each sample row takes its mutated values from."""
        k = self.refs.shape[1]
        if k == 1:
            return torch.zeros_like(rows)
        return (hash_uniform(self.seed, rows, stream=52) * k).long().clamp_(max=k - 1)

    def build(self, a: int, b: int, out: torch.Tensor) -> torch.Tensor:
        """The perturbed copies of rows ``a .. b`` written into ``out`` (``(b - a) x d``); returns ``out``."""
        for i, s0, s1, off in self.segments(a, b):
            seg = out[off:off + s1 - s0]
            seg.copy_(self.x[i].expand_as(seg))                   # every sample starts as its input ...
            if self.counts[i] == 0:
                continue
            ix = self.active(i)
            ref = self.refs[i if self.refs.shape[0] > 1 else 0]   # K x d
            if ref.shape[0] == 1:
                rv = ref[0, ix]                                    # m_i, broadcast over the samples
            else:
                rows = torch.arange(i * self.s + s0, i * self.s + s1, device=self.device)
                rv = ref[self.reference_index(rows).unsqueeze(1), ix]   # (s1 - s0) x m_i
            vals = torch.where(self.hits(i, s0, s1), rv, self.x[i, ix])
            seg.scatter_(1, ix.expand(s1 - s0, -1), vals)         # ... and its mutated features take the reference
        return out

    def masks(self, a: int, b: int) -> torch.Tensor:
        """bool ``(b - a) x d``: the features each row of ``a .. b`` mutates."""
        out = torch.zeros(b - a, self.d, dtype=torch.bool, device=self.device)
        for i, s0, s1, off in self.segments(a, b):
            if self.counts[i]:
                out[off:off + s1 - s0].scatter_(1, self.active(i).expand(s1 - s0, -1), self.hits(i, s0, s1))
        return out


def abc_confidence(model: nn.Module, x: torch.Tensor, *, method: str = "ig", baseline: BaselineLike = None,
                   n_samples: int = DEFAULT_SAMPLES, budget: float = DEFAULT_BUDGET, seed: int = 0,
                   return_details: bool = False, target: Optional[torch.Tensor] = None,
                   chunk_size: Optional[int] = None, forward_mode: str = "jit",
                   explanation: Optional[Explanation] = None, keep_masks: bool = True, **options):
    """Attribution-based confidence of ``model`` on ``x``: ``N`` values in [0, 1] (see the module docstring).

    Args:
        model: ``nn.Module`` in eval mode (train mode would randomise ABC through dropout), logits ``N x C``.
        x: inputs ``N x ...`` (images ``N x 1 x 28 x 28``), finite floats.
        method, baseline: the attribution (any of :data:`helpers.attribution.METHODS` /
            :data:`helpers.attribution.BASELINES`, a tensor, or ``None`` for the method's default).
        n_samples: ``S`` mutated copies per input (the paper uses 1000).
        budget: expected number of features mutated per copy (> 0; a float is fine).
        seed: seeds the attribution's randomness and the mutations.
        return_details: return an :class:`ABCResult` instead of the confidence tensor.
        target: LongTensor ``N`` / int / ``None``: the class whose attribution drives the sampling and whose label
            a sample must keep (default: the predicted class).
        chunk_size: (input, sample) pairs per batched forward pass (default :func:`default_chunk_size`: 512 on the
            CPU, from the memory budget elsewhere). It does not change the result.
        forward_mode: how the perturbed copies are evaluated (:func:`helpers.fastpath.fast_forward_fn`):
            ``"jit"`` (default: a cached traced-and-frozen copy, fp32, fused conv + ReLU: 2.6x the eager rate of
            the CNN on a 2-core CPU, the fastest form measured in ``benchmarks/``; falls back to channels-last if the
            model cannot be traced), ``"channels_last"`` (a channels-last copy, 1.4x eager), ``"eager"``, ``"compile"`` (``torch.compile``; pays off for runs of minutes) or
            ``"auto"`` (time eager vs channels-last once and keep the faster).
        explanation: a precomputed :func:`helpers.attribution.explain` result for ``x`` (same method, baseline
            and target) to reuse across budgets, seeds or sample counts; ``method``/``baseline`` are then ignored.
        keep_masks: with ``return_details``, also return the ``N x S x ...`` masks (``N*S*d`` bytes: 7.8 GB for
            the paper's 10k images x 1000 samples; pass ``False`` to keep only labels, weights and probabilities).
        **options: passed to :func:`helpers.attribution.explain` (``n_steps``, ``integration``, ``n_references``,
            ``references``, ``noise_sigma``, ``sigma``, ``chunk_size`` is not forwarded).

    Returns:
        ``N`` confidences on ``x``'s device (float32), or an :class:`ABCResult` on the CPU.
    """
    check_positive_int(n_samples, "n_samples")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(f"budget must be a number (expected mutated features per sample), got {type(budget).__name__}")
    if not budget > 0 or budget != budget:
        raise ValueError(f"budget must be > 0 (expected number of mutated features per sample), got {budget}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size")
    attribution_options = dict(options.pop("attribution_options", {}) or {})
    attribution_options.update(options)
    if explanation is None:
        e = explain(model, x, target, method, baseline, seed=seed, **attribution_options)
    else:
        from .attribution import _check_inputs

        _check_inputs(model, x)
        e = explanation
        if e.attributions.shape != x.shape:
            raise ValueError(f"explanation is for inputs of shape {tuple(e.attributions.shape)}, x has shape "
                             f"{tuple(x.shape)}")
    dev = e.attributions.device
    xd = x.to(dev)
    n, shape = x.shape[0], tuple(x.shape[1:])
    d = x[0].numel()
    refs = e.references
    check_finite(refs, "baseline")
    w = weights_from_multipliers(e.multipliers, xd, refs)
    p = inclusion_probabilities(w, float(budget))
    fwd = _forward_fn(model, xd, forward_mode)
    perturb = _Perturber(p, xd, refs, seed, n_samples)
    rows_per_chunk = chunk_size or default_chunk_size(xd)
    s_total = n * n_samples
    buf = torch.empty(min(rows_per_chunk, s_total), d, dtype=xd.dtype, device=dev)   # reused by every chunk

    def run(a: int, b: int) -> torch.Tensor:
        with torch.inference_mode():
            with _one_thread(dev):
                xs = perturb.build(a, b, buf[:b - a])
            return fwd(xs.view(b - a, *shape)).argmax(1)

    labels = run_chunked(run, s_total, rows_per_chunk).view(n, n_samples)
    pred = e.target.to(dev)
    conf = (labels == pred.view(-1, 1)).float().mean(1)
    if not return_details:
        return conf.to(x.device)
    with torch.inference_mode(), _one_thread(dev):
        masks = (torch.cat([perturb.masks(a, min(s_total, a + rows_per_chunk)).cpu()
                            for a in range(0, s_total, rows_per_chunk)]).view(n, n_samples, *shape)
                 if keep_masks else None)
        kidx = perturb.reference_index(torch.arange(s_total, device=dev, dtype=torch.int64)).cpu()
    return ABCResult(confidence=conf.cpu(), predicted=pred.cpu(), attributions=e.attributions.cpu(),
                     multipliers=e.multipliers.cpu(), weights=w.cpu(), inclusion=p.cpu(), masks=masks,
                     reference_index=kidx.view(n, n_samples), labels=labels.cpu())


def flip_rate_by_bin(model: nn.Module, x: torch.Tensor, scores: torch.Tensor, baseline: torch.Tensor, *,
                     n_bins: int = 10, k: int = 5, n_samples: int = 20, seed: int = 0,
                     target: Optional[torch.Tensor] = None) -> torch.Tensor:
    """How often the label flips when ``k`` features from one score bin are set to the baseline: ``N x n_bins``.

    For each input, the features that differ from the baseline are ranked by ``|scores|`` (e.g. attributions) from
    highest to lowest and cut into ``n_bins`` equal-count bins (bin 0 = the highest decile). Each of ``n_samples``
    samples mutates ``min(k, bin size)`` features drawn uniformly without replacement from one bin; the entry is the
    fraction of samples whose predicted label differs from ``target`` (default: the prediction). This is the
    measurable content of ABC's Theorem 1: low-attribution features should flip the label less often.
    """
    from .attribution import _check_inputs
    from .validation import check_target

    dev = _check_inputs(model, x)
    check_positive_int(n_bins, "n_bins")
    check_positive_int(k, "k")
    check_positive_int(n_samples, "n_samples")
    check_like(scores, x, "scores")
    baseline = check_like(baseline, x, "baseline", allow_broadcast=True).expand_as(x)
    n, d = x.shape[0], x[0].numel()
    xf, bf = x.to(dev).reshape(n, d), baseline.to(dev).reshape(n, d)
    fwd = fast_model(model, x)
    with torch.inference_mode():
        pred = fwd(x.to(dev)).argmax(1)
    target = pred if target is None else check_target(target, n).to(dev)
    eligible = xf != bf
    sc = torch.where(eligible, scores.to(dev).reshape(n, d).abs(), torch.full_like(xf, -1.0))
    order = sc.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(d, device=dev).expand(n, d))
    n_el = eligible.sum(1, keepdim=True)
    bins = torch.where(eligible, (rank * n_bins) // n_el.clamp_min(1), torch.full_like(rank, -1))
    out = torch.zeros(n, n_bins, device=dev)
    for q in range(n_bins):            # a loop over the 10 bins; inputs x samples are batched
        u = hash_uniform(seed, _keys(n * n_samples, d, dev, start=q * n * n_samples * d), stream=61).view(n, n_samples, d)
        u = torch.where((bins == q).unsqueeze(1), u, torch.full_like(u, 2.0))
        kk = min(k, d)
        thr = u.topk(kk, dim=2, largest=False).values[..., -1:]
        mask = (u <= thr) & (u < 2.0)
        xs = torch.where(mask, bf.unsqueeze(1), xf.unsqueeze(1)).reshape(n * n_samples, *x.shape[1:])
        with torch.inference_mode():
            labels = run_chunked(lambda a, b: fwd(xs[a:b]).argmax(1), xs.shape[0], 4096).view(n, n_samples)  # noqa: B023 - used at once
        out[:, q] = (labels != target.view(-1, 1)).float().mean(1)
    return out.cpu()
