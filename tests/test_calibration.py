"""helpers.calibration: recovering known temperatures / Platt parameters, scikit-learn cross-checks, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from helpers import calibration as C
from helpers import metrics as M


def _synthetic_logits(n: int = 4000, n_classes: int = 5, temperature: float = 2.0, seed: int = 0):
    """Labels drawn from softmax(z / T): the NLL-optimal temperature is T (up to sampling noise)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, n_classes, generator=g) * 4
    y = torch.multinomial(torch.softmax(z / temperature, dim=1), 1, generator=g).squeeze(1)
    return z, y


def test_temperature_recovers_the_true_temperature():
    z, y = _synthetic_logits(temperature=2.0)
    t = C.fit_temperature(z, y)
    assert t == pytest.approx(2.0, rel=0.1)
    # it is the NLL minimum: nearby temperatures are worse
    nll = lambda tt: torch.nn.functional.cross_entropy(z / tt, y).item()  # noqa: E731
    assert nll(t) <= min(nll(t * 0.9), nll(t * 1.1))
    ts = C.TemperatureScaling().fit(z, y)
    p = ts.predict_proba(z)
    torch.testing.assert_close(p, torch.softmax(z / ts.temperature_, dim=1))
    torch.testing.assert_close(ts.confidence(z), p.max(dim=1).values)
    # numpy in, numpy out; calibration lowers the ECE of a mis-tempered model
    assert isinstance(ts.predict_proba(z.numpy()), np.ndarray)
    assert M.ece(p, y) < M.ece(torch.softmax(z, dim=1), y) / 2


def test_platt_fit_matches_sklearn_logistic_regression():
    rng = np.random.default_rng(0)
    s = rng.normal(size=3000)
    correct = rng.random(3000) < 1 / (1 + np.exp(-(2.0 * s + 1.0)))
    a, b = C.platt_fit(s, correct)
    assert a == pytest.approx(2.0, abs=0.25) and b == pytest.approx(1.0, abs=0.2)
    ref = LogisticRegression(C=1e6).fit(s[:, None], correct)  # Platt's target smoothing is negligible at N=3000
    assert a == pytest.approx(ref.coef_[0, 0], rel=0.02)
    np.testing.assert_allclose(1 / (1 + np.exp(-(a * s + b))), ref.predict_proba(s[:, None])[:, 1], atol=5e-3)


def test_platt_top_and_ovr():
    z, y = _synthetic_logits(temperature=3.0, seed=1)
    top = C.PlattScaling().fit(z, y)
    p = top.predict_proba(z)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(len(z)))
    # the calibrated mass sits on the model's predicted class (which may fall below 1/2, so use the ECE of the
    # confidence with `correct`, not the N x C arg-max, for this calibrator)
    torch.testing.assert_close(p.gather(1, z.argmax(1, keepdim=True)).squeeze(1), top.confidence(z))
    correct = (z.argmax(1) == y).numpy()
    # calibrated: mean confidence close to accuracy, low ECE
    assert float(top.confidence(z).mean()) == pytest.approx(correct.mean(), abs=0.01)
    assert M.ece(top.confidence(z), correct) < 0.03
    ovr = C.PlattScaling("ovr").fit(z, y)
    po = ovr.predict_proba(z)
    torch.testing.assert_close(po.sum(dim=1), torch.ones(len(z)), atol=1e-5, rtol=0)
    assert M.ece(po, y) < M.ece(torch.softmax(z, 1), y)


def test_combined_confidence_uses_informative_features():
    rng = np.random.default_rng(0)
    n = 4000
    correct = rng.random(n) < 0.8
    good = 1 / (1 + np.exp(-(rng.normal(size=n) + 2.5 * correct - 1)))   # informative, in [0, 1]
    other = np.exp(rng.normal(size=n) + 1.0 * correct)                     # informative, positive (Trust-Score-like)
    noise = rng.random(n)                                                   # useless
    feats = {"good": good, "other": other, "noise": noise}
    comb = C.CombinedConfidence().fit(feats, correct)
    assert comb.transforms_ == ["logit", "log", "logit"]
    w = comb.coef_
    assert w["good"] > 0.5 and w["other"] > 0.2 and abs(w["noise"]) < 0.1
    conf = comb.confidence(feats)
    assert M.error_auroc(conf, correct) > M.error_auroc(good, correct)
    assert M.ece(conf, correct) < 0.03
    small = {k: v[:800] for k, v in feats.items()}
    gbm = C.CombinedConfidence(model="gbm").fit(small, correct[:800])
    assert M.error_auroc(gbm.confidence(small), correct[:800]) > 0.8


def test_on_real_model_logits(cnn, mnist_test):
    from helpers.batching import forward

    x, y = mnist_test
    z = forward(cnn, x[:2000])
    zv, yv, zt, yt = z[:1000], y[:1000], z[1000:], y[1000:2000]
    msp = torch.softmax(zt, 1).max(1).values
    platt = C.PlattScaling().fit(zv, yv).confidence(zt)
    # top-class Platt is a monotone map of the max softmax: same ranking (up to float ties)
    correct = zt.argmax(1) == yt
    if 0 < int(correct.sum()) < len(correct):
        assert M.error_auroc(platt, correct) == pytest.approx(M.error_auroc(msp, correct), abs=1e-3)


def test_bad_input():
    z, y = _synthetic_logits(n=50)
    with pytest.raises(ValueError, match="empty"):
        C.TemperatureScaling().fit(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        C.fit_temperature(torch.full((4, 3), float("nan")), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must have length"):
        C.PlattScaling().fit(z, y[:10])
    with pytest.raises(ValueError, match="labels must lie"):
        C.PlattScaling().fit(z, y + 10)
    with pytest.raises(RuntimeError, match="not fitted"):
        C.TemperatureScaling().confidence(z)
    with pytest.raises(ValueError, match="single class"):
        C.CombinedConfidence().fit({"a": [0.1, 0.2, 0.3]}, [1, 1, 1])
    with pytest.raises(ValueError, match="single class"):  # every prediction correct: nothing to learn
        C.PlattScaling().fit(z, z.argmax(1))
    with pytest.raises(ValueError, match="correct has length"):
        C.CombinedConfidence().fit({"a": [0.1, 0.2, 0.3]}, [1, 0])
    with pytest.raises(ValueError, match="NaN"):
        C.CombinedConfidence().fit({"a": [0.1, np.nan, 0.3]}, [1, 0, 1])
    with pytest.raises(ValueError, match="same length"):
        C.CombinedConfidence().fit({"a": [0.1, 0.2, 0.3], "b": [0.1, 0.2]}, [1, 0, 1])
    with pytest.raises(ValueError, match="empty"):
        C.CombinedConfidence().fit({"a": []}, [])
    comb = C.CombinedConfidence().fit({"a": [0.1, 0.2, 0.8, 0.9], "b": [1.0, 2.0, 3.0, 4.0]}, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="lacks"):
        comb.confidence({"a": [0.5]})


def test_sample_weight_undoes_enrichment():
    from helpers.metrics import stratified_subset

    rng = np.random.default_rng(0)
    n = 20000
    s = rng.normal(size=n)
    correct = rng.random(n) < 1 / (1 + np.exp(-(1.5 * s + 3.0)))  # ~93% correct
    full = C.platt_fit(s, correct)
    idx, w = stratified_subset(correct, 500, 500, seed=0)
    assert (~correct[idx]).sum() == 500 and w[~correct[idx]][0] == pytest.approx((~correct).sum() / 500)
    enriched = C.platt_fit(s[idx], correct[idx])
    weighted = C.platt_fit(s[idx], correct[idx], sample_weight=w)
    # unweighted, the intercept absorbs the 50/50 prior; weighted, it recovers the population's
    assert abs(enriched[1] - full[1]) > 1.0
    assert weighted[1] == pytest.approx(full[1], abs=0.35)
    comb = C.CombinedConfidence().fit({"s": 1 / (1 + np.exp(-s[idx]))}, correct[idx], sample_weight=w)
    assert float(comb.confidence({"s": 1 / (1 + np.exp(-s))}).mean()) == pytest.approx(correct.mean(), abs=0.02)
    with pytest.raises(ValueError, match="sample_weight"):
        C.CombinedConfidence().fit({"a": [0.1, 0.2, 0.3]}, [1, 0, 1], sample_weight=[1.0, -1.0, 1.0])


class _ScoreClassifier:
    """A fitted 'classifier' whose input is already its decision function (lets scikit-learn calibrate scores)."""

    _estimator_type = "classifier"

    def __init__(self, classes):
        self.classes_ = np.asarray(classes)

    def fit(self, X, y=None):  # noqa: N803 - scikit-learn API
        return self

    def decision_function(self, X):  # noqa: N803
        X = np.asarray(X, dtype=np.float64)
        return X[:, 0] if X.shape[1] == 1 else X

    def predict(self, X):  # noqa: N803
        return np.asarray(X).argmax(axis=1)

    def get_params(self, deep=True):
        return {"classes": self.classes_}

    def set_params(self, **params):
        return self

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True), classifier_tags=ClassifierTags())


def _sklearn_sigmoid(X, y):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    return CalibratedClassifierCV(FrozenEstimator(_ScoreClassifier(np.unique(y))), method="sigmoid").fit(X, y)


def _platt_gradient(f, y, a, b):
    """Gradient of the summed log-loss against Platt's targets at (a, b)."""
    n_pos, n_neg = y.sum(), (~y).sum()
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    r = 1 / (1 + np.exp(-(a * f + b))) - t
    return np.array([r @ f, r.sum()])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_platt_converges_and_matches_sklearn_to_6_decimals(seed):
    z, y = _synthetic_logits(n=3000, temperature=2.5, seed=seed)
    platt = C.PlattScaling().fit(z, y)
    s = C.top_class_score(z.double()).numpy()
    correct = (z.argmax(1) == y).numpy()
    assert np.abs(_platt_gradient(s, correct, platt.coef_, platt.intercept_)).max() <= 1e-7
    cal = _sklearn_sigmoid(s[:, None], correct).calibrated_classifiers_[0].calibrators[0]
    assert platt.coef_ == pytest.approx(-cal.a_, abs=1e-6) and platt.intercept_ == pytest.approx(-cal.b_, abs=1e-6)


@pytest.mark.parametrize("n_classes", [2, 5])
def test_platt_ovr_matches_sklearn_including_two_classes(n_classes):
    z, y = _synthetic_logits(n=2000, n_classes=n_classes, temperature=2.0, seed=3)
    ours = C.PlattScaling("ovr").fit(z, y).predict_proba(z.double().numpy())
    X = (z[:, 1:] - z[:, :1]) if n_classes == 2 else z
    ref = _sklearn_sigmoid(X.double().numpy(), y.numpy()).predict_proba(X.double().numpy())
    np.testing.assert_allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("shape", ["N", "N x 1"])
def test_single_output_models_are_binary_log_odds(shape):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1500, generator=g) * 3
    y = (torch.rand(1500, generator=g) < torch.sigmoid(z / 2)).long()  # class 1 with probability sigmoid(z / 2)
    single = z if shape == "N" else z[:, None]
    two = torch.stack([torch.zeros_like(z), z], 1)
    for cal in (C.TemperatureScaling(), C.PlattScaling(), C.PlattScaling("ovr")):
        p1 = cal.fit(single, y).predict_proba(single)
        torch.testing.assert_close(p1, type(cal)(*([] if isinstance(cal, C.TemperatureScaling) else [cal.mode]))
                                   .fit(two, y).predict_proba(two))
        assert p1.shape == (1500, 2)
    assert C.TemperatureScaling().fit(single, y).temperature_ == pytest.approx(2.0, rel=0.15)
    torch.testing.assert_close(C.top_class_score(single), z.abs())


def test_labels_none_or_out_of_range_are_named():
    z, y = _synthetic_logits(n=50)
    with pytest.raises(ValueError, match="labels is None"):
        C.PlattScaling().fit(z, None)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        C.TemperatureScaling().fit(z, y - 1)


def test_combined_confidence_reads_positive_unbounded_scores_on_the_log_scale():
    """A score > 1 that is always > 0 (e.g. Trust Score) is mapped by log before standardising (mutation test)."""
    comb = C.CombinedConfidence().fit({"ts": [0.5, 1.0, 3.0, np.e, 9.0, 2.0]}, [0, 0, 1, 1, 1, 0])
    assert comb.transforms_ == ["log"]
    np.testing.assert_allclose(C._transform(np.array([1.0, np.e]), "log"), [0.0, 1.0])


def test_platt_ovr_is_uniform_where_every_sigmoid_underflows():
    """Logits so negative that every one-vs-rest sigmoid is 0 in float32: the row falls back to 1/C (not NaN, not
    another constant), and the other rows keep summing to 1."""
    z, y = _synthetic_logits(n_classes=3, temperature=2.0, seed=4)
    ovr = C.PlattScaling("ovr").fit(z, y)
    assert all(a > 0 for a, _ in ovr.params_)
    extreme = torch.cat([torch.full((2, 3), -1e4), z[:5]])
    p = ovr.predict_proba(extreme)
    torch.testing.assert_close(p[:2], torch.full((2, 3), 1 / 3))
    torch.testing.assert_close(p.sum(dim=1), torch.ones(7), atol=1e-5, rtol=0)
    np.testing.assert_allclose(ovr.predict_proba(extreme.numpy())[:2], 1 / 3, rtol=1e-6)


def test_combined_confidence_keeps_a_feature_with_zeros_and_values_above_one_unbounded():
    """A feature in [0, 5] with exact zeros is neither a probability (logit) nor positive (log): identity."""
    rng = np.random.default_rng(3)
    score = rng.uniform(0.0, 5.0, size=400)
    score[:20] = 0.0
    correct = rng.uniform(size=400) < 0.2 + 0.15 * score
    comb = C.CombinedConfidence().fit({"score": score}, correct)
    assert comb.transforms_ == ["identity"]
    assert np.isfinite(comb.confidence({"score": score})).all()


def test_combined_confidence_picks_logit_only_for_scores_in_the_closed_unit_interval():
    """Exact 0 and 1 are probabilities (logit); a positive score above 1 is log-transformed; both stay finite."""
    rng = np.random.default_rng(4)
    p = rng.uniform(size=400)
    p[:10], p[10:20] = 0.0, 1.0
    q = rng.uniform(0.5, 1.8, size=400)
    correct = rng.uniform(size=400) < 0.3 + 0.4 * p
    comb = C.CombinedConfidence().fit({"p": p, "q": q}, correct)
    assert comb.transforms_ == ["logit", "log"]
    assert np.isfinite(comb.confidence({"p": p, "q": q})).all()
