"""How good is a confidence? Ranking, selective-prediction, calibration and out-of-distribution metrics, with CIs.

Every metric takes a per-example ``confidence`` (higher = more likely correct) and a boolean ``correct`` (the
prediction was right), as numpy arrays, torch tensors or lists of length ``N``:

* :func:`error_auroc` / :func:`error_aupr` -- how well low confidence flags errors (errors are the positives).
* :func:`risk_coverage`, :func:`aurc`, :func:`excess_aurc`, :func:`selective_accuracy` -- selective prediction
  (Geifman & El-Yaniv 2017; Geifman et al. 2019): keep the ``k`` most confident predictions, measure their error.
* :func:`ece`, :func:`reliability_bins` -- calibration (Guo et al. 2017, 15 equal-width bins).
* :func:`ood_auroc` -- how well confidence separates in-distribution inputs from shifted ones.
* :func:`bootstrap_ci`, :func:`paired_bootstrap_ci` -- percentile bootstrap confidence intervals, also for the
  difference of two methods evaluated on the same examples.

Ties are handled as the expectation over a random order of the tied examples (mid-ranks for the AUROC, the
expected risk inside a tie group for the risk-coverage curve), so a constant confidence gets an AUROC of 0.5 and an
AURC equal to the error rate rather than a value that depends on the sort algorithm.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Tuple, Union

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "as_array",
    "error_auroc",
    "error_aupr",
    "risk_coverage",
    "aurc",
    "excess_aurc",
    "selective_accuracy",
    "reliability_bins",
    "ece",
    "ood_auroc",
    "CI",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "confidence_table",
    "stratified_subset",
]

ArrayLike = Union[np.ndarray, "torch.Tensor", Sequence[float]]  # noqa: F821 - torch only in the string


# ----------------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------------

def as_array(a: ArrayLike, name: str, *, ndim: int = 1, dtype=np.float64) -> np.ndarray:
    """Convert a numpy array / torch tensor / list to a finite numpy array with ``ndim`` dims, or raise naming ``name``."""
    if hasattr(a, "detach"):  # torch tensor (possibly on the GPU)
        a = a.detach().cpu().numpy()
    try:
        arr = np.asarray(a)
    except Exception as err:  # noqa: BLE001
        raise TypeError(f"{name} must be array-like (numpy array, torch tensor or list), got {type(a).__name__}") from err
    if arr.dtype == object:
        raise TypeError(f"{name} must be numeric, got an object array")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (length 0)")
    arr = arr.astype(dtype, copy=False)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN/Inf value(s)")
    return arr


def _as_correct(correct: ArrayLike, n: int, name: str = "correct") -> np.ndarray:
    """A boolean array of length ``n`` from bools or 0/1 values."""
    c = as_array(correct, name, dtype=np.float64)
    if c.shape[0] != n:
        raise ValueError(f"{name} has length {c.shape[0]} but confidence has length {n}: they must match")
    if not np.isin(c, (0.0, 1.0)).all():
        raise ValueError(f"{name} must hold booleans or 0/1 values, got other values (e.g. {c[~np.isin(c, (0, 1))][0]})")
    return c.astype(bool)


def _as_weights(sample_weight, n: int) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n)
    w = as_array(sample_weight, "sample_weight")
    if w.shape[0] != n:
        raise ValueError(f"sample_weight has length {w.shape[0]} but confidence has length {n}: they must match")
    if (w <= 0).any():
        raise ValueError("sample_weight must be > 0")
    return w


def _pair(confidence: ArrayLike, correct: ArrayLike, *, need_both: bool) -> Tuple[np.ndarray, np.ndarray]:
    conf = as_array(confidence, "confidence")
    corr = _as_correct(correct, conf.shape[0])
    if need_both and (corr.all() or not corr.any()):
        only = "correct" if corr.all() else "wrong"
        raise ValueError(f"correct contains a single class (every prediction is {only}): error AUROC/AUPR need both "
                         "right and wrong predictions")
    return conf, corr


# ----------------------------------------------------------------------------------------------------------------
# ranking: AUROC, AUPR
# ----------------------------------------------------------------------------------------------------------------

def _auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(tie), by mid-ranks (Mann-Whitney U)."""
    n_pos = int(positive.sum())
    n_neg = positive.shape[0] - n_pos
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def error_auroc(confidence: ArrayLike, correct: ArrayLike) -> float:
    r"""AUROC of flagging errors by low confidence: :math:`P(c_{\text{correct}} > c_{\text{wrong}}) + \tfrac12 P(=)`.

    Args:
        confidence: ``N`` scores, higher = more confident.
        correct: ``N`` booleans (or 0/1), whether each prediction was right.

    Returns:
        A float in ``[0, 1]``; 0.5 = chance, 1 = every error is less confident than every correct prediction.
        Equals ``sklearn.metrics.roc_auc_score(~correct, -confidence)``.
    """
    conf, corr = _pair(confidence, correct, need_both=True)
    return _auroc(conf, corr)


def error_aupr(confidence: ArrayLike, correct: ArrayLike, sample_weight: ArrayLike = None) -> float:
    r"""Area under the precision-recall curve for detecting errors (errors positive, score ``-confidence``).

    Average precision :math:`\sum_t (R_t - R_{t-1}) P_t` over the distinct thresholds, as
    ``sklearn.metrics.average_precision_score(~correct, -confidence, sample_weight=...)``. Chance level is the
    error rate. ``sample_weight`` (``N``) re-weights examples (e.g. to undo an error-enriched subset).
    """
    conf, corr = _pair(confidence, correct, need_both=True)
    return _average_precision(-conf, ~corr, _as_weights(sample_weight, conf.shape[0]))


def _average_precision(scores: np.ndarray, positive: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(-scores, kind="mergesort")
    s, p, w = scores[order], positive[order], w[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], s.shape[0] - 1]  # last index of each distinct threshold
    tps = np.cumsum(p * w)[last_of_tie]
    fps = np.cumsum(w)[last_of_tie] - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def ood_auroc(conf_in: ArrayLike, conf_out: ArrayLike) -> float:
    r"""AUROC of telling in-distribution inputs (positives) from shifted ones by confidence.

    :math:`P(c_{\text{in}} > c_{\text{out}}) + \tfrac12 P(c_{\text{in}} = c_{\text{out}})`; 0.5 = the confidence does
    not see the shift, 1 = every shifted input is less confident than every clean one.
    """
    a = as_array(conf_in, "conf_in")
    b = as_array(conf_out, "conf_out")
    scores = np.r_[a, b]
    positive = np.r_[np.ones(a.shape[0], bool), np.zeros(b.shape[0], bool)]
    return _auroc(scores, positive)


# ----------------------------------------------------------------------------------------------------------------
# selective prediction
# ----------------------------------------------------------------------------------------------------------------

def risk_coverage(confidence: ArrayLike, correct: ArrayLike,
                  sample_weight: ArrayLike = None) -> Tuple[np.ndarray, np.ndarray]:
    r"""Risk-coverage curve: keep the ``k`` most confident predictions, ``k = 1..N``.

    Returns:
        ``coverage`` (``N``, ``k / N``) and ``risk`` (``N``, the error rate among the ``k`` kept). Inside a group of
        tied confidences the expected risk over a random order of the group is used. With ``sample_weight``,
        coverage and risk are weighted (cumulative weight / total weight, weighted error rate).
    """
    conf, corr = _pair(confidence, correct, need_both=False)
    n = conf.shape[0]
    w_all = _as_weights(sample_weight, n)
    order = np.argsort(-conf, kind="mergesort")
    s, w = conf[order], w_all[order]
    err = (~corr[order]).astype(np.float64) * w
    cum_w = np.r_[0.0, np.cumsum(w)]
    k = cum_w[1:]
    # group ties: start/end index of each group of equal confidence
    starts = np.r_[0, np.nonzero(np.diff(s))[0] + 1]
    ends = np.r_[starts[1:], n]
    group = np.repeat(np.arange(starts.shape[0]), ends - starts)
    cum_err = np.r_[0.0, np.cumsum(err)]
    err_before = cum_err[starts][group]
    group_rate = ((cum_err[ends] - cum_err[starts]) / (cum_w[ends] - cum_w[starts]))[group]
    expected_errors = err_before + (k - cum_w[starts][group]) * group_rate
    return k / cum_w[-1], expected_errors / k


def aurc(confidence: ArrayLike, correct: ArrayLike, sample_weight: ArrayLike = None) -> float:
    r"""Area under the risk-coverage curve, :math:`\frac1N \sum_{k=1}^N \text{risk}(k)` (lower is better).

    A constant confidence gets the error rate; a perfect ranking gets :func:`excess_aurc`'s optimum
    :math:`\frac1N\sum_{k > N - E} (k - N + E) / k` with ``E`` errors. With ``sample_weight``, the weighted
    curve integrated over weighted coverage: :math:`\sum_i w_i\,\text{risk}_i / \sum_i w_i`.
    """
    conf = as_array(confidence, "confidence")
    _, risk = risk_coverage(conf, correct, sample_weight)
    w = _as_weights(sample_weight, conf.shape[0])[np.argsort(-conf, kind="mergesort")]
    return float((risk * w).sum() / w.sum())


def excess_aurc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """AURC minus the AURC of a perfect ranking of the same predictions (E-AURC, Geifman et al. 2019)."""
    conf, corr = _pair(confidence, correct, need_both=False)
    return aurc(conf, corr) - aurc(corr.astype(np.float64), corr)


def selective_accuracy(confidence: ArrayLike, correct: ArrayLike,
                       coverages: Union[float, Sequence[float]] = (0.90, 0.95, 0.99),
                       sample_weight: ArrayLike = None) -> Union[float, Dict[float, float]]:
    """Accuracy on the ``ceil(c N)`` most confident predictions, for each coverage ``c`` in ``(0, 1]``.

    With ``sample_weight``, on the most confident predictions whose weighted share first reaches ``c``.
    Returns a float for a single coverage, else ``{coverage: accuracy}``.
    """
    single = np.isscalar(coverages)
    covs = [float(coverages)] if single else [float(c) for c in coverages]
    for c in covs:
        if not 0.0 < c <= 1.0:
            raise ValueError(f"coverages must lie in (0, 1], got {c}")
    cov, risk = risk_coverage(confidence, correct, sample_weight)
    out = {c: float(1.0 - risk[min(len(risk) - 1, int(np.searchsorted(cov, c - 1e-9)))]) for c in covs}
    return out[covs[0]] if single else out


# ----------------------------------------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------------------------------------

def _confidence_and_correct(probs: ArrayLike, labels: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """``probs`` N x C + integer ``labels`` -> (max prob, argmax == label); ``probs`` N + boolean ``labels`` -> as is."""
    if hasattr(probs, "detach"):
        probs = probs.detach().cpu().numpy()
    p = np.asarray(probs)
    if p.ndim == 2:
        p = as_array(p, "probs", ndim=2)
        lab = as_array(labels, "labels", dtype=np.int64)
        if lab.shape[0] != p.shape[0]:
            raise ValueError(f"labels has length {lab.shape[0]} but probs has {p.shape[0]} rows: they must match")
        if lab.min() < 0 or lab.max() >= p.shape[1]:
            raise ValueError(f"labels must lie in [0, {p.shape[1]}), got min {lab.min()} and max {lab.max()}")
        conf, pred = p.max(axis=1), p.argmax(axis=1)
        corr = pred == lab
    elif p.ndim == 1:
        conf = as_array(p, "probs")
        corr = _as_correct(labels, conf.shape[0], name="labels")
    else:
        raise ValueError(f"probs must be N x C class probabilities or an N vector of confidences, got shape {p.shape}")
    if conf.min() < 0.0 or conf.max() > 1.0:
        raise ValueError(f"probs must lie in [0, 1] to be calibrated, got min {conf.min():.4g} and max {conf.max():.4g}")
    return conf, corr


def reliability_bins(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15,
                     sample_weight: ArrayLike = None) -> Dict[str, np.ndarray]:
    """Equal-width confidence bins ``(i/B, (i+1)/B]`` (bin 0 also holds 0) for a reliability diagram.

    Args:
        probs: ``N x C`` class probabilities (confidence = max, prediction = argmax) with integer ``labels`` ``N``;
            or an ``N`` vector of confidences with ``labels`` = the boolean ``correct``.
        n_bins: number of bins ``B``.
        sample_weight: optional ``N`` weights (counts become sums of weights).

    Returns:
        dict with ``edges`` (``B+1``), ``count``, ``confidence`` (mean confidence per bin, NaN when empty),
        ``accuracy`` (NaN when empty), each ``B``.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    conf, corr = _confidence_and_correct(probs, labels)
    w = _as_weights(sample_weight, conf.shape[0])
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, weights=w, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf * w, minlength=n_bins) / count
        acc = np.bincount(idx, weights=corr.astype(np.float64) * w, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": acc}


def ece(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15, sample_weight: ArrayLike = None) -> float:
    r"""Expected calibration error :math:`\sum_b \frac{n_b}{N} |\text{acc}_b - \text{conf}_b|` over ``n_bins`` bins.

    ``probs`` is ``N x C`` with integer ``labels``, or an ``N`` vector of confidences with boolean ``labels``
    (= correct); see :func:`reliability_bins` (also for ``sample_weight``).
    """
    bins = reliability_bins(probs, labels, n_bins, sample_weight)
    w = bins["count"] / bins["count"].sum()
    gap = np.abs(bins["accuracy"] - bins["confidence"])
    return float(np.nansum(w * gap))


# ----------------------------------------------------------------------------------------------------------------
# bootstrap
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CI:
    """A point estimate with a percentile-bootstrap interval ``[low, high]`` at ``level`` (e.g. 0.95)."""

    estimate: float
    low: float
    high: float
    level: float = 0.95
    n_boot: int = 0

    def __iter__(self):  # allows ``est, lo, hi = bootstrap_ci(...)``
        return iter((self.estimate, self.low, self.high))

    def excludes(self, value: float = 0.0) -> bool:
        """True when ``value`` lies outside the interval (a 'significant' difference from ``value``)."""
        return not (self.low <= value <= self.high)

    def __str__(self) -> str:
        return f"{self.estimate:.4f} [{self.low:.4f}, {self.high:.4f}]"


def bootstrap_ci(metric: Callable[..., float], *arrays: ArrayLike, n: int = 1000, seed: int = 0,
                 level: float = 0.95) -> CI:
    """Percentile bootstrap CI of ``metric(*arrays)``, resampling the ``N`` examples with replacement.

    Every array is resampled with the *same* indices, so a metric of several arrays (a confidence and ``correct``;
    or two confidences and ``correct`` for a paired difference) keeps examples aligned. For two populations of
    different sizes (``ood_auroc``), concatenate them and pass a boolean membership array.

    Replicates on which ``metric`` raises ``ValueError`` (e.g. a resample with no errors) are dropped; if more than
    5% are dropped the interval is unreliable and a ``RuntimeWarning`` says so.

    Args:
        metric: function of the arrays returning a float.
        arrays: one or more arrays of the same length ``N`` (numpy, torch or lists).
        n: number of bootstrap replicates.
        seed: seed of the resampling.
        level: coverage of the interval.

    Returns:
        :class:`CI` with the estimate on the full data and the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array to resample")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    arrs = []
    for i, a in enumerate(arrays):
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        a = np.asarray(a)
        if a.ndim == 0 or a.shape[0] == 0:
            raise ValueError(f"arrays[{i}] is empty or a scalar; bootstrap_ci needs arrays of length N >= 1")
        arrs.append(a)
    lengths = {a.shape[0] for a in arrs}
    if len(lengths) != 1:
        raise ValueError(f"arrays must all have the same length N to be resampled together, got lengths "
                         f"{[a.shape[0] for a in arrs]}")
    size = arrs[0].shape[0]
    estimate = float(metric(*arrs))
    rng = np.random.default_rng(seed)
    values = np.empty(n)
    dropped = 0
    for b in range(n):
        idx = rng.integers(0, size, size)
        try:
            values[b] = metric(*(a[idx] for a in arrs))
        except ValueError:
            values[b] = np.nan
            dropped += 1
    if dropped == n:
        raise ValueError("metric failed on every bootstrap replicate (e.g. too few errors to compute it)")
    if dropped > 0.05 * n:
        warnings.warn(f"bootstrap_ci: metric undefined on {dropped}/{n} replicates; the interval is unreliable",
                      RuntimeWarning, stacklevel=2)
    lo, hi = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2])
    return CI(estimate, float(lo), float(hi), level, n - dropped)


def paired_bootstrap_ci(metric: Callable[[np.ndarray, np.ndarray], float], confidence_a: ArrayLike,
                        confidence_b: ArrayLike, correct: ArrayLike, *, n: int = 1000, seed: int = 0,
                        level: float = 0.95) -> CI:
    """CI of ``metric(a, correct) - metric(b, correct)`` with the same resampled examples for both methods.

    The pairing removes the example-to-example variance both methods share, so the interval of the difference is
    much narrower than the two separate intervals suggest.
    """
    a = as_array(confidence_a, "confidence_a")
    b = as_array(confidence_b, "confidence_b")
    if a.shape != b.shape:
        raise ValueError(f"confidence_a and confidence_b must have the same length, got {a.shape[0]} and {b.shape[0]}")
    corr = _as_correct(correct, a.shape[0])
    return bootstrap_ci(lambda x, y, c: metric(x, c) - metric(y, c), a, b, corr, n=n, seed=seed, level=level)


def confidence_table(confidences: Dict[str, ArrayLike], correct: ArrayLike, *, n_boot: int = 1000, seed: int = 0,
                     n_bins: int = 15, reference: Union[str, None] = None, sample_weight: ArrayLike = None) -> list:
    """One row per method: error AUROC, error AUPR, AURC and ECE, each with a 95% bootstrap CI, and the selective
    accuracy at 90/95/99% coverage (``sel_acc@90`` ...).

    With ``reference`` (a key of ``confidences``), each row also gets the paired bootstrap CI of
    ``AUROC(method) - AUROC(reference)`` and ``AURC(method) - AURC(reference)`` (same resamples for both).
    ECE treats each confidence as a probability of being correct (so it is only meaningful for calibrated ones).
    ``sample_weight`` (e.g. from :func:`stratified_subset`) makes AUPR, AURC and ECE estimate the population's
    values from an enriched subset (the AUROC does not need it: it conditions on right/wrong).

    Returns:
        list of dicts (``method``, ``auroc``, ``auroc_lo``, ``auroc_hi``, ... ), ready for a DataFrame or
        :func:`helpers.report.save_results`.
    """
    corr = _as_correct(correct, as_array(correct, "correct").shape[0])
    w = _as_weights(sample_weight, corr.shape[0])
    rows = []
    for name, conf in confidences.items():
        c = as_array(conf, f"confidences[{name!r}]")
        if c.shape[0] != corr.shape[0]:
            raise ValueError(f"confidences[{name!r}] has length {c.shape[0]}, correct has {corr.shape[0]}")
        row: Dict[str, object] = {"method": name}
        metrics = {"auroc": lambda a, b, ww: error_auroc(a, b), "aupr": error_aupr, "aurc": aurc}
        if c.min() >= 0.0 and c.max() <= 1.0:
            metrics["ece"] = lambda a, b, ww: ece(a, b, n_bins, ww)
        for key, fn in metrics.items():
            ci = bootstrap_ci(fn, c, corr, w, n=n_boot, seed=seed)
            row.update({key: ci.estimate, f"{key}_lo": ci.low, f"{key}_hi": ci.high})
        for cov in (0.90, 0.95, 0.99):
            row[f"sel_acc@{int(round(100 * cov))}"] = selective_accuracy(c, corr, cov, w)
        if "ece" not in metrics:
            row.update({"ece": float("nan"), "ece_lo": float("nan"), "ece_hi": float("nan")})
        if reference is not None and name != reference:
            ref = confidences[reference]
            ref = as_array(ref, f"confidences[{reference!r}]")
            for key, fn in (("auroc", lambda a, b, ww: error_auroc(a, b)), ("aurc", aurc)):
                d = bootstrap_ci(lambda a, b, cc, ww: fn(a, cc, ww) - fn(b, cc, ww), c, ref, corr, w,  # noqa: B023 - used at once
                                 n=n_boot, seed=seed)
                row.update({f"d_{key}": d.estimate, f"d_{key}_lo": d.low, f"d_{key}_hi": d.high})
        rows.append(row)
    return rows


def stratified_subset(correct: ArrayLike, n_wrong: int, n_correct: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """An error-enriched subset: up to ``n_wrong`` wrong and ``n_correct`` right predictions, drawn without replacement.

    Used where a per-example method is too slow for the whole split (quick mode): a 99%-accurate model has ~10
    errors in 1,000 random images, too few to rank; an enriched subset keeps many. The error AUROC is unchanged in
    expectation (it conditions on right/wrong); AUPR, AURC and ECE depend on the error rate, so on the subset they
    compare methods with each other, not with full-population numbers. ``weights`` (inverse inclusion probability)
    restore the population's proportions when fitting a calibrator (``sample_weight``).

    Returns:
        ``indices`` (sorted, int64) and ``weights`` (float64, same length).
    """
    corr = as_array(correct, "correct")
    if not np.isin(corr, (0.0, 1.0)).all():
        raise ValueError("correct must hold booleans or 0/1 values")
    corr = corr.astype(bool)
    rng = np.random.default_rng(seed)
    wrong_idx, right_idx = np.flatnonzero(~corr), np.flatnonzero(corr)
    take_w = rng.choice(wrong_idx, min(n_wrong, wrong_idx.size), replace=False)
    take_r = rng.choice(right_idx, min(n_correct, right_idx.size), replace=False)
    idx = np.sort(np.r_[take_w, take_r]).astype(np.int64)
    if idx.size == 0:
        raise ValueError("stratified_subset selected nothing: n_wrong and n_correct are 0 or correct is empty")
    w_wrong = wrong_idx.size / max(1, take_w.size)
    w_right = right_idx.size / max(1, take_r.size)
    weights = np.where(corr[idx], w_right, w_wrong).astype(np.float64)
    return idx, weights
