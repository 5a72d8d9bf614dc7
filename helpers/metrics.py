"""How good is a confidence? Ranking, selective prediction (with a guaranteed risk), calibration and OOD metrics.

Every metric takes ``confidence`` (``N``, higher = more likely correct) and a boolean ``correct`` (``N``), as numpy
arrays, tensors or lists, and an optional ``sample_weight`` (``N``, the inverse inclusion probabilities of an
error-enriched subset, :func:`stratified_subset`) that every estimate *and* every bootstrap replicate use alike.
Ties count as the expectation over a random order of the tied examples (mid-ranks; the expected risk in a tie group).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.stats import beta as beta_dist

from .validation import check_n_samples

__all__ = ["as_array", "error_auroc", "error_aupr", "ood_auroc", "ood_aupr", "fpr_at_tpr", "risk_coverage", "aurc",
           "selective_accuracy", "binomial_upper_bound", "Guarantee", "selective_guarantee", "selective_risk",
           "reliability_bins", "ece", "CI", "bootstrap_ci", "paired_bootstrap_ci", "holm", "confidence_table",
           "stratified_subset"]

ArrayLike = Union[np.ndarray, "torch.Tensor", Sequence[float]]  # noqa: F821 - torch only in the string


def as_array(a: ArrayLike, name: str, *, ndim: int = 1, dtype=np.float64) -> np.ndarray:
    """A finite numpy array with ``ndim`` dims from a numpy array / torch tensor / list, or an error naming ``name``."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype == object:
        raise TypeError(f"{name} must be numeric, got an object array")
    if arr.ndim != ndim or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-dimensional array, got shape {arr.shape}")
    arr = arr.astype(dtype, copy=False)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(arr)).sum())} NaN/Inf value(s)")
    return arr


def _as_correct(correct: ArrayLike, n: int, name: str = "correct") -> np.ndarray:
    c = as_array(correct, name)
    if c.shape[0] != n:
        raise ValueError(f"{name} has length {c.shape[0]} but confidence has length {n}: they must match")
    if not np.isin(c, (0.0, 1.0)).all():
        raise ValueError(f"{name} must hold booleans or 0/1 values")
    return c.astype(bool)


def _as_weights(sample_weight: Optional[ArrayLike], n: int) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n)
    w = as_array(sample_weight, "sample_weight")
    if w.shape[0] != n:
        raise ValueError(f"sample_weight has length {w.shape[0]} but confidence has length {n}: they must match")
    if (w <= 0).any():
        raise ValueError("sample_weight must be > 0")
    return w


def _pair(confidence: ArrayLike, correct: ArrayLike, sample_weight: ArrayLike = None,
          need_both: bool = True) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked ``(confidence, correct, weights)``."""
    conf = as_array(confidence, "confidence")
    corr = _as_correct(correct, conf.shape[0])
    if need_both and (corr.all() or not corr.any()):
        raise ValueError(f"correct contains a single class (every prediction is {'right' if corr.all() else 'wrong'})"
                         ": this metric needs both right and wrong predictions")
    return conf, corr, _as_weights(sample_weight, conf.shape[0])


def error_auroc(confidence: ArrayLike, correct: ArrayLike, sample_weight: ArrayLike = None) -> float:
    """AUROC of flagging errors by low confidence, ``P(c_right > c_wrong) + P(=)/2`` (0.5 = chance; a pair weighs
    ``w_i w_j``); equals ``sklearn.metrics.roc_auc_score(~correct, -confidence, sample_weight=...)``."""
    conf, corr, w = _pair(confidence, correct, sample_weight)
    order = np.argsort(conf, kind="mergesort")
    s, right, w = conf[order], corr[order], w[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    wrong_w = np.add.reduceat(w * ~right, starts)  # weight of the wrong predictions in each tie group
    right_w = np.add.reduceat(w * right, starts)
    below = np.cumsum(wrong_w) - wrong_w
    return float((right_w * (below + 0.5 * wrong_w)).sum() / (right_w.sum() * wrong_w.sum()))


def error_aupr(confidence: ArrayLike, correct: ArrayLike, sample_weight: ArrayLike = None) -> float:
    """Average precision of detecting errors by ``-confidence`` (chance = the error rate), as
    ``sklearn.metrics.average_precision_score(~correct, -confidence, sample_weight=...)``."""
    conf, corr, w = _pair(confidence, correct, sample_weight)
    order = np.argsort(conf, kind="mergesort")                       # the least confident first
    s, wrong, w = conf[order], ~corr[order], w[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.shape[0] - 1]          # last index of each distinct threshold
    tps = np.cumsum(wrong * w)[last]
    precision = tps / np.cumsum(w)[last]
    return float(np.sum(np.diff(np.r_[0.0, tps / tps[-1]]) * precision))


def _in_out(conf_in: ArrayLike, conf_out: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """The pooled confidences and whether each is in-distribution (the "correct" of the error metrics)."""
    a, b = as_array(conf_in, "conf_in"), as_array(conf_out, "conf_out")
    return np.r_[a, b], np.r_[np.ones(a.shape[0], bool), np.zeros(b.shape[0], bool)]


def ood_auroc(conf_in: ArrayLike, conf_out: ArrayLike) -> float:
    """AUROC of telling in-distribution inputs (positives) from shifted ones by confidence (0.5 = blind)."""
    return error_auroc(*_in_out(conf_in, conf_out))


def ood_aupr(conf_in: ArrayLike, conf_out: ArrayLike) -> float:
    """Average precision of detecting the *shifted* inputs (positives) by low confidence ("AUPR-Out");
    chance = the shifted share of the pool."""
    return error_aupr(*_in_out(conf_in, conf_out))


def fpr_at_tpr(conf_in: ArrayLike, conf_out: ArrayLike, tpr: float = 0.95) -> float:
    """Share of shifted inputs still accepted when the threshold keeps ``tpr`` of the in-distribution ones (FPR95)."""
    a, b = np.sort(as_array(conf_in, "conf_in")), as_array(conf_out, "conf_out")
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr}")
    threshold = a[int(math.floor((1.0 - tpr) * a.shape[0] + 1e-9))]
    return float((b >= threshold).mean())


def risk_coverage(confidence: ArrayLike, correct: ArrayLike,
                  sample_weight: ArrayLike = None) -> Tuple[np.ndarray, np.ndarray]:
    """Keep the ``k`` most confident predictions, ``k = 1..N``: ``coverage`` (kept weight / total weight, ``N``)
    and ``risk`` (weighted error rate among the kept, ``N``; the expected value inside a tie group)."""
    conf, corr, w = _pair(confidence, correct, sample_weight, need_both=False)
    order = np.argsort(-conf, kind="mergesort")
    s, w = conf[order], w[order]
    cum_w = np.r_[0.0, np.cumsum(w)]
    cum_e = np.r_[0.0, np.cumsum(~corr[order] * w)]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    ends = np.r_[starts[1:], s.shape[0]]
    g = np.repeat(np.arange(starts.shape[0]), ends - starts)
    rate = ((cum_e[ends] - cum_e[starts]) / (cum_w[ends] - cum_w[starts]))[g]
    k = cum_w[1:]
    return k / cum_w[-1], (cum_e[starts][g] + (k - cum_w[starts][g]) * rate) / k


def aurc(confidence: ArrayLike, correct: ArrayLike, sample_weight: ArrayLike = None) -> float:
    r"""Area under the risk-coverage curve, :math:`\frac1N\sum_{k=1}^N \mathrm{risk}(k)` (lower is better): the
    population value, i.e. with ``sample_weight`` the curve integrated over weighted coverage."""
    coverage, risk = risk_coverage(confidence, correct, sample_weight)
    return float(risk @ np.diff(coverage, prepend=0.0))


def selective_accuracy(confidence: ArrayLike, correct: ArrayLike,
                       coverages: Union[float, Sequence[float]] = (0.90, 0.95, 0.99),
                       sample_weight: ArrayLike = None) -> Union[float, Dict[float, float]]:
    """Accuracy of the most confident predictions whose (weighted) share first reaches each coverage in ``(0, 1]``;
    a float for one coverage, else ``{coverage: accuracy}``."""
    covs = [float(coverages)] if np.isscalar(coverages) else [float(c) for c in coverages]
    if any(not 0.0 < c <= 1.0 for c in covs):
        raise ValueError(f"coverages must lie in (0, 1], got {covs}")
    cov, risk = risk_coverage(confidence, correct, sample_weight)
    out = {c: float(1.0 - risk[min(len(risk) - 1, int(np.searchsorted(cov, c - 1e-9)))]) for c in covs}
    return out[covs[0]] if np.isscalar(coverages) else out


# ---- selective classification with a guaranteed risk (Geifman & El-Yaniv 2017) ----------------------------------

def binomial_upper_bound(errors: int, n: float, delta: float) -> float:
    """The largest error rate ``b`` with ``P(Binomial(n, b) <= errors) >= delta`` (one-sided Clopper-Pearson)."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    if errors < 0 or n < 0:
        raise ValueError(f"errors and n must be >= 0, got {errors} and {n}")
    return 1.0 if errors >= n else float(beta_dist.ppf(1.0 - delta, errors + 1, n - errors))


@dataclass(frozen=True)
class Guarantee:
    """A selective classifier ``accept iff confidence >= threshold`` with ``P(risk > bound) <= delta``."""

    threshold: float
    bound: float
    coverage: float  # on the data it was chosen on (weighted)
    risk: float      # empirical selective risk there (weighted)


def _bound_at(conf: np.ndarray, corr: np.ndarray, w_right: float, theta: float, delta: float) -> float:
    keep = conf >= theta
    e, r = int((keep & ~corr).sum()), int((keep & corr).sum())
    if w_right == 1.0:
        return binomial_upper_bound(e, e + r, delta)
    n_r = int(corr.sum())  # a uniform sample of n_r of the split's w_right * n_r right predictions
    r_low = w_right * n_r * (0.0 if r == 0 else float(beta_dist.ppf(delta / 2, r, n_r - r + 1)))
    return binomial_upper_bound(e, math.floor(e + r_low), delta / 2)


def selective_guarantee(confidence: ArrayLike, correct: ArrayLike, *, risk: float, delta: float = 0.05,
                        sample_weight: ArrayLike = None) -> Guarantee:
    """SGR (Geifman & El-Yaniv 2017), a :class:`Guarantee`: binary search over the sorted confidences for the lowest
    threshold whose binomial upper bound on the selective risk is ``<= risk``; each of the ``k = ceil(log2 N)``
    tested thresholds gets ``delta / k`` (Bonferroni), so the bound holds with probability ``>= 1 - delta`` on new
    data. ``threshold = inf`` (abstain) when no tested threshold meets ``risk``. Choose it on validation, report
    :func:`selective_risk` on test. ``sample_weight``: every error and a uniform share of the right predictions
    (:func:`stratified_subset`); the split's covered right predictions then enter through their lower
    Clopper-Pearson bound (half of each ``delta / k``)."""
    conf, corr, w = _pair(confidence, correct, sample_weight, need_both=False)
    if (~corr).any() and not np.allclose(w[~corr], 1.0):
        raise ValueError("sample_weight: the guarantee needs every error of the split (weight 1)")
    w_right = w[corr] if corr.any() else np.ones(1)                  # one weight: a uniform sample of the right ones
    if not np.allclose(w_right, w_right[0]):
        raise ValueError("sample_weight: the right predictions must be one uniform sample (a single weight)")
    w_right = float(w_right[0])
    if not 0.0 < risk < 1.0:
        raise ValueError(f"risk must lie in (0, 1), got {risk}")
    levels = np.unique(conf)  # ascending; threshold levels[z] keeps conf >= levels[z]
    k = max(1, math.ceil(math.log2(levels.shape[0] + 1)))
    lo, hi, best = -1, levels.shape[0] - 1, None
    for _ in range(k):
        z = (lo + hi + 1) // 2
        b = _bound_at(conf, corr, w_right, levels[z], delta / k)
        if b <= risk:
            hi, best = z, (levels[z], b)
        else:
            lo = z
    if best is None:
        return Guarantee(math.inf, 1.0, 0.0, 0.0)
    cov, r = selective_risk(conf, corr, best[0], sample_weight)
    return Guarantee(float(best[0]), best[1], cov, r)


def selective_risk(confidence: ArrayLike, correct: ArrayLike, threshold: float,
                   sample_weight: ArrayLike = None) -> Tuple[float, float]:
    """``(coverage, risk)`` of accepting ``confidence >= threshold`` (weighted; risk 0 when nothing is kept)."""
    conf, corr, w = _pair(confidence, correct, sample_weight, need_both=False)
    keep = conf >= threshold
    kept = float(w[keep].sum())
    return kept / float(w.sum()), (float(w[keep & ~corr].sum()) / kept if kept > 0 else 0.0)


# ---- calibration -------------------------------------------------------------------------------------------------

def reliability_bins(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15,
                     sample_weight: ArrayLike = None) -> Dict[str, np.ndarray]:
    """Equal-width bins ``(i/B, (i+1)/B]`` of a probability (bin 0 also holds 0) for a reliability diagram.

    ``probs``: ``N x C`` class probabilities with integer ``labels`` (confidence = max, prediction = argmax), or an
    ``N`` vector of probabilities of being correct with boolean ``labels``. Returns ``edges`` (``B+1``) and, per bin
    (``B``), ``count`` (summed weight), mean ``confidence`` and ``accuracy`` (NaN when empty).
    """
    check_n_samples(n_bins, "n_bins")
    p = np.asarray(probs.detach().cpu() if hasattr(probs, "detach") else probs)
    if p.ndim == 2:
        p = as_array(p, "probs", ndim=2)
        lab = as_array(labels, "labels", dtype=np.int64)
        if lab.shape[0] != p.shape[0] or lab.min() < 0 or lab.max() >= p.shape[1]:
            raise ValueError(f"labels must be {p.shape[0]} integers in [0, {p.shape[1]})")
        conf, corr, w = p.max(axis=1), p.argmax(axis=1) == lab, _as_weights(sample_weight, p.shape[0])
    else:
        conf, corr, w = _pair(p, labels, sample_weight, need_both=False)
    if conf.min() < 0.0 or conf.max() > 1.0:
        raise ValueError(f"probs must be probabilities in [0, 1], got min {conf.min():.4g} and max {conf.max():.4g}")
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, weights=w, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf * w, minlength=n_bins) / count
        acc = np.bincount(idx, weights=corr * w, minlength=n_bins) / count
    return {"edges": np.linspace(0.0, 1.0, n_bins + 1), "count": count, "confidence": mean_conf, "accuracy": acc}


def ece(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15, sample_weight: ArrayLike = None) -> float:
    r"""Expected calibration error :math:`\sum_b \frac{n_b}{N}|\mathrm{acc}_b - \mathrm{conf}_b|` of a probability
    (see :func:`reliability_bins`); a score that is not a probability (ABC, Trust Score) has no ECE."""
    b = reliability_bins(probs, labels, n_bins, sample_weight)
    return float(np.nansum(b["count"] / b["count"].sum() * np.abs(b["accuracy"] - b["confidence"])))


# ---- bootstrap ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CI:
    """A point estimate, its percentile-bootstrap interval and the two-sided bootstrap p-value of "value = 0"."""

    estimate: float
    low: float
    high: float
    level: float = 0.95
    n_boot: int = 0
    p_value: float = float("nan")

    def __iter__(self):  # ``est, lo, hi = bootstrap_ci(...)``
        return iter((self.estimate, self.low, self.high))

    def excludes(self, value: float = 0.0) -> bool:
        """True when ``value`` lies outside the interval."""
        return not (self.low <= value <= self.high)

    def __str__(self) -> str:
        return f"{self.estimate:.4f} [{self.low:.4f}, {self.high:.4f}]"


def bootstrap_ci(metric: Callable[..., float], *arrays: ArrayLike, n: int = 1000, seed: int = 0,
                 level: float = 0.95, strata: Optional[ArrayLike] = None, method: str = "percentile") -> CI:
    """Bootstrap :class:`CI` of ``metric(*arrays)``, resampling the ``N`` examples with the same indices for every
    array (pass ``sample_weight`` as one of them so each replicate is weighted like the estimate).

    ``method="percentile"``: the ``(1 -+ level)/2`` quantiles of the replicates; ``"basic"``: ``2 estimate -
    quantiles``, for a metric that each resample biases (ECE grows on every resample). ``strata`` (``N`` labels):
    resample within each stratum, as the sample was drawn (e.g. ``correct`` for an error-enriched subset).
    Replicates on which ``metric`` raises ``ValueError`` are dropped (a ``RuntimeWarning`` above 5%).
    """
    check_n_samples(n, "n")
    if not arrays or not 0.0 < level < 1.0 or method not in ("percentile", "basic"):
        raise ValueError(f"bootstrap_ci needs arrays, a level in (0, 1) and method 'percentile' or 'basic', got "
                         f"level {level} and method {method!r}")
    arrs = [np.asarray(a.detach().cpu() if hasattr(a, "detach") else a) for a in arrays]
    if any(a.ndim == 0 for a in arrs) or len({a.shape[0] for a in arrs}) != 1 or arrs[0].shape[0] == 0:
        raise ValueError(f"arrays must be non-empty and have the same length N, got shapes {[a.shape for a in arrs]}")
    groups = [np.arange(arrs[0].shape[0])] if strata is None else \
        [np.flatnonzero(np.asarray(strata) == g) for g in np.unique(strata)]
    estimate = float(metric(*arrs))
    rng = np.random.default_rng(seed)
    values = np.full(n, np.nan)
    for b in range(n):
        idx = np.concatenate([g[rng.integers(0, g.shape[0], g.shape[0])] for g in groups])
        try:
            values[b] = metric(*(a[idx] for a in arrs))
        except ValueError:
            pass
    ok = values[np.isfinite(values)]
    if ok.shape[0] == 0:
        raise ValueError("metric failed on every bootstrap replicate (e.g. too few errors to compute it)")
    if ok.shape[0] < 0.95 * n:
        warnings.warn(f"bootstrap_ci: metric undefined on {n - ok.shape[0]}/{n} replicates; the interval is "
                      "unreliable", RuntimeWarning, stacklevel=2)
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    if method == "basic":
        lo, hi = 2 * estimate - hi, 2 * estimate - lo
    p = min(1.0, 2 * (1 + min((ok <= 0).sum(), (ok >= 0).sum())) / (1 + ok.shape[0]))
    return CI(estimate, float(lo), float(hi), level, int(ok.shape[0]), p)


def paired_bootstrap_ci(metric: Callable[..., float], confidence_a: ArrayLike, confidence_b: ArrayLike,
                        correct: ArrayLike, *, sample_weight: ArrayLike = None, n: int = 1000, seed: int = 0,
                        level: float = 0.95, strata: Optional[ArrayLike] = None) -> CI:
    """CI (and p-value) of ``metric(a, correct, w) - metric(b, correct, w)`` on the same resampled examples."""
    a, b = as_array(confidence_a, "confidence_a"), as_array(confidence_b, "confidence_b")
    if a.shape != b.shape:
        raise ValueError(f"confidence_a and confidence_b must have one length, got {a.shape[0]} and {b.shape[0]}")
    corr, w = _as_correct(correct, a.shape[0]), _as_weights(sample_weight, a.shape[0])
    return bootstrap_ci(lambda x, y, c, ww: metric(x, c, ww) - metric(y, c, ww), a, b, corr, w, n=n, seed=seed,
                        level=level, strata=strata)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control over the comparisons given)."""
    p = as_array(list(p_values), "p_values")
    order = np.argsort(p, kind="mergesort")
    adj = np.maximum.accumulate(np.minimum(1.0, (p.shape[0] - np.arange(p.shape[0])) * p[order]))
    out = np.empty_like(adj)
    out[order] = adj
    return out


def confidence_table(confidences: Mapping[str, ArrayLike], correct: Union[ArrayLike, Mapping[str, ArrayLike]], *,
                     n_boot: int = 1000, seed: int = 0, n_bins: int = 15, reference: Optional[str] = None,
                     sample_weight: ArrayLike = None, probabilities: Sequence[str] = ()) -> list:
    """A list of dicts, one per method: error AUROC, error AUPR, AURC (each with a 95% CI: ``auroc``, ``auroc_lo``,
    ``auroc_hi``, ...), ECE of the methods in ``probabilities`` (basic bootstrap interval, clipped at 0), and the
    selective accuracy at 90/95/99% coverage (``sel_acc@90`` ...). ``correct``: one boolean array, or ``{method:
    array}`` for methods that score their own predictions. ``sample_weight`` (:func:`stratified_subset`) weights
    every estimate and replicate, resampled within right / wrong of the first ``correct``. With ``reference``: the
    paired CI and p-value of the AUROC and AURC differences to it (``d_auroc``, ..., ``d_auroc_p``)."""
    corrs = dict(correct) if isinstance(correct, Mapping) else {}
    base = next(iter(corrs.values())) if corrs else correct
    strata = _as_correct(base, len(base))
    n = strata.shape[0]
    w = _as_weights(sample_weight, n)
    st = strata if sample_weight is not None else None
    fns = {"auroc": error_auroc, "aupr": error_aupr, "aurc": aurc, "ece": lambda a, b, ww: ece(a, b, n_bins, ww)}
    rows = []
    for name, conf in confidences.items():
        c, corr = as_array(conf, f"confidences[{name!r}]"), _as_correct(corrs.get(name, base), n)
        if c.shape[0] != n:
            raise ValueError(f"confidences[{name!r}] has length {c.shape[0]}, correct has {n}")
        row: Dict[str, object] = {"method": name}
        for key, fn in fns.items():
            method = "basic" if key == "ece" else "percentile"
            ci = CI(np.nan, np.nan, np.nan) if key == "ece" and name not in probabilities else \
                bootstrap_ci(fn, c, corr, w, n=n_boot, seed=seed, strata=st, method=method)
            row.update({key: ci.estimate, f"{key}_lo": np.maximum(0.0, ci.low), f"{key}_hi": ci.high})
        row.update({f"sel_acc@{int(100 * v)}": a for v, a in selective_accuracy(c, corr, (.9, .95, .99), w).items()})
        if reference is not None and name != reference:
            ref, ref_corr = as_array(confidences[reference], "reference"), _as_correct(corrs.get(reference, base), n)
            for k in ("auroc", "aurc"):
                d = bootstrap_ci(lambda a, b, ca, cb, ww, f=fns[k]: f(a, ca, ww) - f(b, cb, ww), c, ref, corr,
                                 ref_corr, w, n=n_boot, seed=seed, strata=st)
                row.update({f"d_{k}": d.estimate, f"d_{k}_lo": d.low, f"d_{k}_hi": d.high, f"d_{k}_p": d.p_value})
        rows.append(row)
    return rows


def stratified_subset(correct: ArrayLike, n_wrong: int, n_correct: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """An error-enriched subset: up to ``n_wrong`` wrong and ``n_correct`` right predictions, without replacement.
    Returns sorted ``indices`` (int64) and ``weights`` (inverse inclusion probabilities, float64), with which every
    metric above estimates its value on the whole split. ``n_wrong`` >= the errors keeps them all (for
    :func:`selective_guarantee`)."""
    corr = _as_correct(correct, len(correct))
    rng = np.random.default_rng(seed)
    wrong_idx, right_idx = np.flatnonzero(~corr), np.flatnonzero(corr)
    take_w = rng.choice(wrong_idx, min(n_wrong, wrong_idx.size), replace=False)
    take_r = rng.choice(right_idx, min(n_correct, right_idx.size), replace=False)
    idx = np.sort(np.r_[take_w, take_r]).astype(np.int64)
    if idx.size == 0:
        raise ValueError("stratified_subset selected nothing: n_wrong and n_correct are 0 or correct is empty")
    w_wrong, w_right = wrong_idx.size / max(1, take_w.size), right_idx.size / max(1, take_r.size)
    return idx, np.where(corr[idx], w_right, w_wrong).astype(np.float64)
