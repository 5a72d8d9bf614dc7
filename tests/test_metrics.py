"""helpers.metrics against scikit-learn and against cases small enough to compute by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from helpers import metrics as M


def _random_case(seed: int, n: int = 300, ties: bool = False):
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 0.8
    conf = rng.normal(size=n) + 1.2 * correct
    if ties:
        conf = np.round(conf, 1)
    return conf, correct


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_auroc_and_aupr_match_sklearn(seed, ties):
    conf, correct = _random_case(seed, ties=ties)
    assert M.error_auroc(conf, correct) == pytest.approx(roc_auc_score(~correct, -conf), abs=1e-12)
    assert M.error_auroc(conf, correct) == pytest.approx(roc_auc_score(correct, conf), abs=1e-12)
    assert M.error_aupr(conf, correct) == pytest.approx(average_precision_score(~correct, -conf), abs=1e-12)


def test_ood_auroc_matches_sklearn():
    rng = np.random.default_rng(3)
    a, b = rng.normal(1, 1, 200), np.round(rng.normal(0, 1, 77), 1)
    expected = roc_auc_score(np.r_[np.ones(200), np.zeros(77)], np.r_[a, b])
    assert M.ood_auroc(a, b) == pytest.approx(expected, abs=1e-12)
    assert M.ood_auroc(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected, abs=1e-12)


def test_hand_computed_small_case():
    conf = [0.9, 0.8, 0.7, 0.6]
    correct = [1, 0, 1, 1]
    # pairs (correct, wrong): (0.9>0.8) yes, (0.7>0.8) no, (0.6>0.8) no -> 1/3
    assert M.error_auroc(conf, correct) == pytest.approx(1 / 3)
    cov, risk = M.risk_coverage(conf, correct)
    np.testing.assert_allclose(cov, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0, 1 / 2, 1 / 3, 1 / 4])
    assert M.aurc(conf, correct) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    # perfect ranking of one error in four: risks 0, 0, 0, 1/4
    assert M.selective_accuracy(conf, correct, 0.5) == pytest.approx(0.5)
    assert M.selective_accuracy(conf, correct, [0.25, 1.0]) == {0.25: 1.0, 1.0: 0.75}


def test_ties_are_order_free():
    correct = np.array([1, 0, 1, 1, 0, 1, 1, 1], bool)
    const = np.full(8, 0.7)
    assert M.error_auroc(const, correct) == pytest.approx(0.5)
    _, risk = M.risk_coverage(const, correct)
    np.testing.assert_allclose(risk, np.full(8, 2 / 8))
    assert M.aurc(const, correct) == pytest.approx(2 / 8)
    # permuting the examples does not change anything
    perm = np.random.default_rng(0).permutation(8)
    conf = np.array([0.9, 0.5, 0.5, 0.7, 0.5, 0.9, 0.1, 0.7])
    assert M.aurc(conf, correct) == pytest.approx(M.aurc(conf[perm], correct[perm]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=40))
def test_aurc_properties(pairs):
    conf = np.array([p[0] for p in pairs], float)
    correct = np.array([p[1] for p in pairs])
    value = M.aurc(conf, correct)
    err_rate = 1 - correct.mean()
    assert 0.0 <= value <= 1.0
    # the full-coverage end of the curve is the error rate
    assert M.risk_coverage(conf, correct)[1][-1] == pytest.approx(err_rate)
    # a monotone transform of the confidence changes nothing
    assert M.aurc(np.exp(conf), correct) == pytest.approx(value)
    if 0 < correct.sum() < len(correct):
        assert M.error_auroc(conf, correct) == pytest.approx(roc_auc_score(correct, conf))


def test_ece_hand_computed_and_bins():
    # 2 bins: (0, .5] and (.5, 1]
    conf = np.array([0.2, 0.4, 0.5, 0.8, 1.0])
    correct = np.array([0, 1, 0, 1, 1])
    bins = M.reliability_bins(conf, correct, n_bins=2)
    np.testing.assert_allclose(bins["count"], [3, 2])
    np.testing.assert_allclose(bins["confidence"], [(0.2 + 0.4 + 0.5) / 3, 0.9])
    np.testing.assert_allclose(bins["accuracy"], [1 / 3, 1.0])
    expected = 3 / 5 * abs(1 / 3 - 1.1 / 3) + 2 / 5 * abs(1 - 0.9)
    assert M.ece(conf, correct, n_bins=2) == pytest.approx(expected)


def test_ece_from_probabilities_matches_loop_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 10)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 10, 500)
    conf, pred = probs.max(1), probs.argmax(1)
    ref = 0.0
    for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):  # Guo et al.'s reference loop
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ref += m.mean() * abs((pred[m] == labels[m]).mean() - conf[m].mean())
    assert M.ece(probs, labels) == pytest.approx(ref, abs=1e-12)
    assert M.ece(torch.tensor(probs), torch.tensor(labels)) == pytest.approx(ref, abs=1e-12)
    # a perfectly calibrated case: confidence 0.75 and 3 of 4 right
    assert M.ece(np.full(4, 0.75), [1, 1, 1, 0]) == pytest.approx(0.0)


def test_bootstrap_ci_covers_and_pairs():
    conf, correct = _random_case(0, n=400)
    ci = M.bootstrap_ci(M.error_auroc, conf, correct, n=200, seed=0)
    assert ci.low <= ci.estimate <= ci.high
    assert ci.estimate == pytest.approx(M.error_auroc(conf, correct))
    assert ci.high - ci.low < 0.2
    est, lo, hi = ci
    assert (est, lo, hi) == (ci.estimate, ci.low, ci.high)
    # same seed, same interval
    assert M.bootstrap_ci(M.error_auroc, conf, correct, n=200, seed=0) == ci
    # paired difference of a method with itself is exactly 0
    zero = M.paired_bootstrap_ci(M.error_auroc, conf, conf, correct, n=50)
    assert (zero.estimate, zero.low, zero.high) == (0.0, 0.0, 0.0)
    # a clearly better method: the paired CI excludes 0, and is narrower than the unpaired intervals
    noisy = conf + np.random.default_rng(1).normal(0, 2, conf.shape)
    diff = M.paired_bootstrap_ci(M.error_auroc, conf, noisy, correct, n=200)
    assert diff.estimate > 0 and diff.excludes(0.0)


def test_bootstrap_mean_matches_normal_theory():
    x = np.random.default_rng(0).normal(size=2000)
    ci = M.bootstrap_ci(np.mean, x, n=500, seed=1)
    half = 1.96 * x.std() / np.sqrt(len(x))
    assert (ci.high - ci.low) / 2 == pytest.approx(half, rel=0.15)


@pytest.mark.parametrize("fn", [M.error_auroc, M.error_aupr, M.aurc, M.risk_coverage])
def test_bad_input(fn):
    with pytest.raises(ValueError, match="NaN"):
        fn([0.1, np.nan, 0.3], [1, 0, 1])
    with pytest.raises(ValueError, match="length"):
        fn([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="correct"):
        fn([0.1, 0.2], [2, 0])


def test_bad_input_other():
    with pytest.raises(ValueError, match="single class"):
        M.error_auroc([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match="single class"):
        M.error_aupr([0.1, 0.2, 0.3], [0, 0, 0])
    with pytest.raises(ValueError, match="conf_out"):
        M.ood_auroc([0.1, 0.2], [np.inf])
    with pytest.raises(ValueError, match="probs"):
        M.ece(np.array([0.5, 1.5]), [1, 0])
    with pytest.raises(ValueError, match="labels"):
        M.ece(np.full((3, 2), 0.5), [0, 1])
    with pytest.raises(ValueError, match="same length"):
        M.bootstrap_ci(M.error_auroc, [0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="coverages"):
        M.selective_accuracy([0.1, 0.2], [1, 0], 1.5)
    with pytest.raises(ValueError, match="single class"):
        M.bootstrap_ci(M.error_auroc, [0.1, 0.2, 0.3], [1, 1, 1], n=5)
    with pytest.warns(RuntimeWarning, match="unreliable"):  # one error in four: many resamples lack it
        M.bootstrap_ci(M.error_auroc, [0.1, 0.2, 0.3, 0.4], [1, 1, 1, 0], n=50)


def test_confidence_table_rows():
    conf, correct = _random_case(0, n=300)
    prob = 1 / (1 + np.exp(-conf))
    rows = M.confidence_table({"a": prob, "b": np.clip(prob + 0.1 * np.sin(np.arange(300)), 0, 1)}, correct,
                              n_boot=50, reference="a")
    assert [r["method"] for r in rows] == ["a", "b"]
    assert rows[0]["auroc"] == pytest.approx(M.error_auroc(prob, correct))
    assert rows[0]["auroc_lo"] <= rows[0]["auroc"] <= rows[0]["auroc_hi"]
    assert rows[1]["d_auroc"] == pytest.approx(M.error_auroc(rows and np.clip(prob + 0.1 * np.sin(np.arange(300)), 0, 1),
                                                             correct) - rows[0]["auroc"])
    assert "d_auroc" not in rows[0]


def test_sample_weights_match_sklearn_and_replication():
    conf, correct = _random_case(4, n=200, ties=True)
    w = np.where(correct, 3.0, 1.0)
    assert M.error_aupr(conf, correct, w) == pytest.approx(
        average_precision_score(~correct, -conf, sample_weight=w), abs=1e-12)
    # integer weights ~ replicating the examples (AURC: a Riemann sum over weighted coverage, exact for ECE)
    rep = np.repeat(np.arange(200), w.astype(int))
    assert M.aurc(conf, correct, w) == pytest.approx(M.aurc(conf[rep], correct[rep]), rel=0.01)
    assert M.aurc(conf, correct, np.ones(200)) == M.aurc(conf, correct)
    probs = 1 / (1 + np.exp(-conf))
    assert M.ece(probs, correct, 15, w) == pytest.approx(M.ece(probs[rep], correct[rep]), abs=1e-12)
    with pytest.raises(ValueError, match="sample_weight"):
        M.aurc(conf, correct, w[:5])


def test_selective_accuracy_weighted_and_table_columns():
    conf, correct = _random_case(5, n=100)
    assert M.selective_accuracy(conf, correct, 0.9, np.ones(100)) == M.selective_accuracy(conf, correct, 0.9)
    w = np.where(correct, 2.0, 1.0)
    rep = np.repeat(np.arange(100), w.astype(int))
    for c in (0.5, 0.9, 1.0):
        assert M.selective_accuracy(conf, correct, c, w) == pytest.approx(
            M.selective_accuracy(conf[rep], correct[rep], c), abs=0.02)
    row = M.confidence_table({"a": 1 / (1 + np.exp(-conf))}, correct, n_boot=20)[0]
    assert row["sel_acc@90"] == M.selective_accuracy(conf, correct, 0.9)


# ---- weights, OOD metrics, the selective-risk guarantee, Holm ---------------------------------------------------

def test_weighted_auroc_matches_sklearn():
    conf, correct = _random_case(6, n=300, ties=True)
    w = np.random.default_rng(0).uniform(0.2, 5.0, 300)  # weights that are not constant per class change the AUROC
    assert M.error_auroc(conf, correct, w) == pytest.approx(roc_auc_score(~correct, -conf, sample_weight=w), abs=1e-12)
    assert abs(M.error_auroc(conf, correct, w) - M.error_auroc(conf, correct)) > 1e-3


def test_ood_aupr_and_fpr95_match_sklearn():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(7)
    a, b = rng.normal(1, 1, 400), np.round(rng.normal(0, 1, 150), 1)
    pool, out = np.r_[a, b], np.r_[np.zeros(400), np.ones(150)]
    assert M.ood_aupr(a, b) == pytest.approx(average_precision_score(out, -pool), abs=1e-12)
    fpr, tpr, _ = roc_curve(1 - out, pool)  # in-distribution positive, accepted when confidence >= threshold
    assert M.fpr_at_tpr(a, b, 0.95) == pytest.approx(fpr[np.searchsorted(tpr, 0.95)], abs=1e-12)
    assert M.fpr_at_tpr(a, a + 10) == 1.0 and M.fpr_at_tpr(a, a - 100) == 0.0


@pytest.mark.parametrize("errors,n,delta", [(0, 500, 0.05), (3, 300, 0.01), (40, 4000, 0.004), (9, 10, 0.2)])
def test_binomial_upper_bound_is_the_exact_tail_inversion(errors, n, delta):
    from scipy.stats import binom

    b = M.binomial_upper_bound(errors, n, delta)
    assert binom.cdf(errors, n, b) == pytest.approx(delta, rel=1e-6)  # the tail at the bound is exactly delta
    assert binom.cdf(errors, n, b * 0.999) > delta > binom.cdf(errors, n, min(1.0, b * 1.001))
    assert M.binomial_upper_bound(n, n, delta) == 1.0


def _sgr_population(rng, n):
    conf = rng.random(n)
    correct = rng.random(n) >= 0.2 * (1 - conf) ** 3  # P(error | c) = 0.2 (1 - c)^3: risk above t = 0.05 (1 - t)^3
    return conf, correct


@pytest.mark.parametrize("subsample", [False, True])
def test_selective_guarantee_holds_in_95_percent_of_repetitions(subsample):
    rng = np.random.default_rng(0)
    held, covs = 0, []
    for _ in range(150):
        conf, correct = _sgr_population(rng, 6000)
        w = None
        if subsample:  # every error + 20% of the right predictions, as stratified_subset draws them
            idx, w = M.stratified_subset(correct, 10**6, int(0.2 * correct.sum()), seed=int(rng.integers(1 << 30)))
            conf, correct = conf[idx], correct[idx]
        g = M.selective_guarantee(conf, correct, risk=0.01, delta=0.05, sample_weight=w)
        true_risk = 0.05 * (1 - g.threshold) ** 3 if np.isfinite(g.threshold) else 0.0
        held += true_risk <= 0.01
        covs.append(1 - g.threshold if np.isfinite(g.threshold) else 0.0)
    assert held / 150 >= 0.95
    assert 0.15 < np.mean(covs) < 0.585, np.mean(covs)  # useful, and below the best possible coverage (1 - t* = 0.2^(1/3))


def test_selective_guarantee_uses_the_bonferroni_bound_at_its_threshold():
    conf, correct = _sgr_population(np.random.default_rng(1), 6000)
    g = M.selective_guarantee(conf, correct, risk=0.01, delta=0.05)
    keep = conf >= g.threshold
    k = int(np.ceil(np.log2(np.unique(conf).size + 1)))
    assert g.bound == pytest.approx(M.binomial_upper_bound(int((~correct[keep]).sum()), int(keep.sum()), 0.05 / k))
    assert g.bound <= 0.01 and (g.coverage, g.risk) == M.selective_risk(conf, correct, g.threshold)
    assert g.risk < g.bound  # the empirical risk alone would promise too much
    never = M.selective_guarantee(conf, correct, risk=1e-6)
    assert never.threshold == np.inf and never.coverage == 0.0
    with pytest.raises(ValueError, match="every error"):
        M.selective_guarantee(conf, correct, risk=0.01, sample_weight=np.full(6000, 2.0))


def test_holm_adjustment_by_hand():
    np.testing.assert_allclose(M.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(M.holm([0.5, 0.001]), [0.5, 0.002])


def test_paired_p_value_small_for_a_clear_difference_and_large_for_none():
    conf, correct = _random_case(0, n=400)
    noisy = conf + np.random.default_rng(1).normal(0, 2, conf.shape)
    assert M.paired_bootstrap_ci(M.error_auroc, conf, noisy, correct, n=200).p_value < 0.02
    same = M.paired_bootstrap_ci(M.error_auroc, conf, conf + 1e-9 * np.random.default_rng(2).normal(size=400),
                                 correct, n=200)
    assert same.p_value > 0.5


def test_subset_intervals_cover_the_full_set_value():
    """An error-enriched, re-weighted subset's 95% CIs must contain the value on the whole split in most draws
    (the percentile interval of ECE sat above it: resamples inflate ECE)."""
    hits = {"auroc": 0, "aurc": 0, "ece": 0}
    for r in range(30):
        rng = np.random.default_rng(100 + r)
        p = 1 / (1 + np.exp(-rng.normal(4.5, 1.5, 4000)))
        correct = rng.random(4000) < p
        idx, w = M.stratified_subset(correct, 10_000, 100, seed=r)
        row = M.confidence_table({"p": p[idx]}, correct[idx], n_boot=200, seed=r, sample_weight=w,
                                 probabilities=["p"])[0]
        full = {"auroc": M.error_auroc(p, correct), "aurc": M.aurc(p, correct), "ece": M.ece(p, correct)}
        for k in hits:
            hits[k] += row[f"{k}_lo"] <= full[k] <= row[f"{k}_hi"]
    assert min(hits.values()) >= 0.8 * 30, hits


def test_ece_only_for_probabilities():
    conf, correct = _random_case(0, n=200)
    prob = 1 / (1 + np.exp(-conf))
    rows = M.confidence_table({"p": prob, "score": prob}, correct, n_boot=20, probabilities=["p"])
    assert np.isfinite(rows[0]["ece"]) and np.isnan(rows[1]["ece"])


def test_reliability_edges_and_fpr_threshold_at_an_exact_quantile():
    """Mutation tests: the B + 1 bin edges on [0, 1]; FPR95's threshold when (1 - tpr) N is an integer."""
    b = M.reliability_bins(np.array([0.1, 0.6, 0.9]), np.array([True, False, True]), n_bins=4)
    np.testing.assert_allclose(b["edges"], [0.0, 0.25, 0.5, 0.75, 1.0])
    # tpr 0.5 of 4 in-distribution scores keeps the top two (threshold 0.3): 0.25 is rejected
    assert M.fpr_at_tpr([0.1, 0.2, 0.3, 0.4], [0.25], tpr=0.5) == 0.0


def test_selective_risk_when_nothing_is_kept_and_weights_of_a_one_item_stratum():
    assert M.selective_risk([0.2, 0.4], [True, False], threshold=0.9) == (0.0, 0.0)
    idx, w = M.stratified_subset([False, True, True, True], n_wrong=1, n_correct=1, seed=0)
    np.testing.assert_allclose(np.sort(w), [1.0, 3.0])                  # 1 of 1 wrong, 1 of 3 right


def test_basic_bootstrap_interval_is_the_percentile_one_reflected_at_the_estimate():
    v = np.random.default_rng(0).exponential(size=60)                   # skewed: the two intervals differ
    perc, basic = (M.bootstrap_ci(np.mean, v, n=200, seed=1, method=m) for m in ("percentile", "basic"))
    np.testing.assert_allclose([basic.low + perc.high, basic.high + perc.low], [2 * perc.estimate] * 2)


def test_percentile_interval_cuts_both_tails_equally():
    """The 50 % interval of a symmetric sample's mean spans about ±0.674 standard errors on both sides."""
    v = np.random.default_rng(0).normal(size=400)
    ci = M.bootstrap_ci(np.mean, v, n=2000, seed=1, level=0.5)
    se = v.std() / np.sqrt(v.size)
    np.testing.assert_allclose([ci.estimate - ci.low, ci.high - ci.estimate], [0.674 * se] * 2, rtol=0.2)


def test_weighted_selective_bound_uses_the_lower_clopper_pearson_count():
    """The stratified SGR bound at one threshold: the covered right predictions of the split are at least
    w * n_r * Beta.ppf(delta/2, r, n_r - r + 1) (Clopper-Pearson, half the delta); the binomial bound gets the other half."""
    from scipy.stats import beta as beta_dist

    w, n_r, delta = 3.0, 40, 0.1
    conf = np.r_[np.full(30, 0.9), np.full(10, 0.1), np.full(2, 0.9)]   # 30 of 40 sampled rights and 2 errors kept
    corr = np.r_[np.ones(40, bool), np.zeros(2, bool)]
    r_low = w * n_r * beta_dist.ppf(delta / 2, 30, n_r - 30 + 1)
    expected = M.binomial_upper_bound(2, int(np.floor(2 + r_low)), delta / 2)
    assert M._bound_at(conf, corr, w, 0.5, delta) == pytest.approx(expected, rel=1e-12)
    # no right prediction kept: the lower count is 0, so the bound is that of the errors alone
    conf0 = np.r_[np.full(40, 0.1), np.full(2, 0.9)]
    assert M._bound_at(conf0, corr, w, 0.5, delta) == pytest.approx(M.binomial_upper_bound(2, 2, delta / 2))


@pytest.mark.parametrize("n_levels", [7, 8, 15])
def test_selective_guarantee_finds_the_lowest_passing_threshold_of_a_brute_force_scan(n_levels):
    """Where the bound rises as the threshold falls (each lower level adds more errors), the binary search must land on
    the lowest level whose bound (at ``delta / k``, k = ceil(log2(L + 1))) is <= risk, as a scan of every level finds;
    L + 1 a power of two leaves the search no spare step."""
    conf = np.repeat(np.arange(n_levels, dtype=float), [40] * (n_levels - 1) + [400])
    correct = np.ones(conf.size, bool)
    for z in range(n_levels - 1):  # level z holds n_levels - 1 - z errors
        correct[np.flatnonzero(conf == z)[: n_levels - 1 - z]] = False
    delta = 0.05
    k = int(np.ceil(np.log2(n_levels + 1)))
    bounds = [M.binomial_upper_bound(int((~correct[conf >= t]).sum()), int((conf >= t).sum()), delta / k)
              for t in range(n_levels)]
    assert all(np.diff(bounds) < 0)  # the premise of the binary search
    for risk in np.r_[np.asarray(bounds) + 1e-9, bounds[-1] - 1e-9]:
        g = M.selective_guarantee(conf, correct, risk=float(risk), delta=delta)
        passing = [t for t in range(n_levels) if bounds[t] <= risk]
        if not passing:
            assert g.threshold == np.inf and g.coverage == 0.0
            continue
        best = min(passing)
        assert (g.threshold, g.bound) == (best, pytest.approx(bounds[best], rel=1e-12))
        assert g.coverage == pytest.approx((conf >= best).mean())


def test_weighted_risk_coverage_matches_a_loop():
    """Distinct confidences: coverage_k = sum of the top-k weights / total, risk_k = weighted error rate of the top k."""
    rng = np.random.default_rng(7)
    conf = rng.permutation(40) / 40.0
    correct = rng.uniform(size=40) < 0.6
    w = rng.uniform(0.5, 3.0, size=40)
    coverage, risk = M.risk_coverage(conf, correct, w)
    order = np.argsort(-conf)
    for k in range(1, 41):
        top = order[:k]
        assert coverage[k - 1] == pytest.approx(w[top].sum() / w.sum(), abs=1e-12)
        assert risk[k - 1] == pytest.approx((w[top] * ~correct[top]).sum() / w[top].sum(), abs=1e-12)
