"""helpers.confidence: Trust Score against the published KD-tree formula, MC dropout, max softmax; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KDTree

from helpers import confidence as K
from helpers import metrics as M


def _published_trust_score(x_train, y_train, x, y_pred, k=2, min_dist=1e-12):
    """The authors' formula (google/TrustScore, alpha = 0): k-th NN distance per class with KD-trees."""
    n_labels = int(y_train.max()) + 1
    d = np.empty((x.shape[0], n_labels))
    for c in range(n_labels):
        d[:, c] = KDTree(x_train[y_train == c]).query(x, k=k)[0][:, -1]
    sorted_d = np.sort(d, axis=1)
    d_to_pred = d[np.arange(d.shape[0]), y_pred]
    d_other = np.where(sorted_d[:, 0] != d_to_pred, sorted_d[:, 0], sorted_d[:, 1])
    return d_other / (d_to_pred + min_dist)


def test_trust_score_matches_published_formula():
    rng = np.random.default_rng(0)
    x_train = rng.normal(size=(300, 5)) + np.repeat(np.eye(3, 5) * 3, 100, axis=0)
    y_train = np.repeat(np.arange(3), 100)
    x = rng.normal(size=(40, 5)) * 2
    pred = rng.integers(0, 3, 40)
    ts = K.TrustScore().fit(torch.tensor(x_train, dtype=torch.float64), torch.tensor(y_train))
    got = ts.score(torch.tensor(x, dtype=torch.float64), torch.tensor(pred)).numpy()
    np.testing.assert_allclose(got, _published_trust_score(x_train, y_train, x, pred), rtol=1e-6)
    # hand case: 1-D, classes at {0, 1} and {10, 11}; x = 2 predicted class 0: 2nd NN distances 2 and 9 -> 4.5
    ts1 = K.TrustScore().fit(torch.tensor([[0.0], [1.0], [10.0], [11.0]]), torch.tensor([0, 0, 1, 1]))
    assert ts1.score(torch.tensor([[2.0]]), torch.tensor([0])).item() == pytest.approx(9 / 2)
    assert ts1.score(torch.tensor([[2.0]]), torch.tensor([1])).item() == pytest.approx(2 / 9)


def test_trust_score_density_filter_drops_outliers():
    x = torch.cat([torch.randn(100, 2, generator=torch.Generator().manual_seed(0)), torch.tensor([[50.0, 50.0]])])
    ts = K.TrustScore(alpha=0.05).fit(x, torch.zeros(101, dtype=torch.long))
    assert ts.class_features_[0].shape[0] < 101
    assert not bool((ts.class_features_[0] == 50.0).all(dim=1).any())


def test_mc_dropout_common_random_numbers_and_max_softmax(mnist_small):
    from helpers.models import get_model

    x, _ = mnist_small
    model = get_model("cnn_dropout", device="cpu")
    mean = K.mc_dropout(model, x, n_passes=8, seed=0)
    torch.testing.assert_close(mean.sum(1), torch.ones(len(x)))
    # the T masks are shared by every input: a row does not depend on its batch, position or the chunk size
    torch.testing.assert_close(K.mc_dropout(model, x[5:6], n_passes=8, seed=0), mean[5:6])
    torch.testing.assert_close(K.mc_dropout(model, x.flip(0), n_passes=8, seed=0, batch_size=7), mean.flip(0))
    assert not model.training and not model.drop1.training and not model.drop1._forward_hooks  # left as found
    # dropout is really on (another seed, other masks), and MC-averaged predictions agree with the plain ones
    assert not torch.allclose(K.mc_dropout(model, x, n_passes=8, seed=1), mean)
    det = torch.softmax(model(x), 1)
    assert (mean.argmax(1) == det.argmax(1)).float().mean() > 0.9
    torch.testing.assert_close(K.max_softmax(det.log()), det.max(1).values)
    # by hand: one dropout layer on an identity "model": the mean of the T masked copies
    lin = torch.nn.Sequential(torch.nn.Dropout(0.5)).eval()
    got = K.mc_dropout(lin, torch.zeros(3, 4), n_passes=50, seed=0)
    torch.testing.assert_close(got, torch.full((3, 4), 0.25))


def test_trust_score_on_cnn_features_flags_errors(cnn, mnist_test):
    from helpers.batching import predict
    from helpers.data import load_mnist

    xt, yt = load_mnist("train")
    ts = K.TrustScore().fit(K.penultimate_features(cnn, xt[:3000]), yt[:3000])
    x, y = mnist_test
    pred = predict(cnn, x[:2000])
    score = ts.score(K.penultimate_features(cnn, x[:2000]), pred)
    correct = (pred == y[:2000]).numpy()
    assert M.error_auroc(score, correct) > 0.8


def test_bad_input(cnn, mnist_small):
    x, _ = mnist_small
    with pytest.raises(ValueError, match="no nn.Dropout"):
        K.mc_dropout(cnn, x)
    with pytest.raises(ValueError, match="features"):
        K.TrustScore().fit(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        K.TrustScore().fit(torch.tensor([[np.nan, 1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="no example of class 1"):
        K.TrustScore().fit(torch.randn(4, 2), torch.tensor([0, 0, 2, 2]))
    with pytest.raises(RuntimeError, match="not fitted"):
        K.TrustScore().score(torch.randn(2, 2), torch.tensor([0, 1]))
    ts = K.TrustScore().fit(torch.randn(6, 2), torch.tensor([0, 0, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match="predicted"):
        ts.score(torch.randn(3, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="alpha"):
        K.TrustScore(alpha=1.0)


def test_confidence_suite(cnn, mnist_test):
    from helpers.data import load_mnist
    from helpers.models import get_model

    xv, yv = load_mnist("val")
    x, y = mnist_test[0][:24], mnist_test[1][:24]
    drop = get_model("cnn_dropout", device="cpu")
    suite = K.ConfidenceSuite(cnn, dropout_model=drop, n_passes=4,
                              abc_methods={"abc": dict(method="ig", baseline="zero", n_steps=4)},
                              abc_samples=4).fit(xv[:300], yv[:300], xv[300:800], yv[300:800])
    sc = suite.scores(x, abc_n=5)
    assert set(sc) == {"pred", "max softmax", "temperature", "platt", "platt (ovr)", "mc dropout", "mc dropout pred",
                       "dropout agreement", "trust score", "abc"}
    assert len(sc["abc"]) == 5 and len(sc["platt"]) == 24
    # true MC dropout scores the dropout network's own prediction; the agreement scores the CNN's
    mean = K.mc_dropout(drop, x, n_passes=4, seed=0)
    np.testing.assert_array_equal(sc["mc dropout pred"], mean.argmax(1).numpy())
    np.testing.assert_allclose(sc["mc dropout"], mean.max(1).values.numpy())
    np.testing.assert_allclose(sc["dropout agreement"], mean[torch.arange(24), torch.as_tensor(sc["pred"])].numpy())
    yn = y.numpy()
    np.testing.assert_array_equal(K.correct_of(sc, yn, "mc dropout"), sc["mc dropout pred"] == yn)
    with pytest.raises(RuntimeError, match="not fitted"):
        K.ConfidenceSuite(cnn).scores(x)
    # ABC of named methods with another S: the same numbers as abc_confidence itself; unknown names refused
    from helpers.abc import abc_confidence

    xn = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))  # noise: ABC well below 1
    got = suite.abc_scores(xn, n_samples=7, methods=["abc"])
    want = abc_confidence(cnn, xn, n_samples=7, seed=0, method="ig", baseline="zero", n_steps=4).numpy()
    np.testing.assert_allclose(got["abc"], want)
    assert not np.allclose(suite.abc_scores(xn)["abc"], want)  # S = 4 by default: n_samples is used
    with pytest.raises(ValueError, match="not among abc_methods"):
        suite.abc_scores(x[:3], methods=["abc eg"])


@pytest.mark.parametrize("outputs", [1, 2])
def test_suite_on_a_binary_tabular_model(outputs):
    """Two classes, and a single-output model (N x 1 logit = log-odds of class 1), go through the whole pipeline."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 5, generator=g)
    y = (x[:, 0] + 0.8 * torch.randn(600, generator=g) > 0).long()
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, outputs)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[-1, 0] = 2.0
    model = torch.nn.Sequential(torch.nn.Dropout(0.2), lin).eval()
    sc = K.ConfidenceSuite(model, dropout_model=model, n_passes=4).fit(x[:300], y[:300]).scores(x[300:])
    assert set(sc) >= {"max softmax", "temperature", "platt", "platt (ovr)", "mc dropout", "dropout agreement"}
    correct = sc["pred"] == y[300:].numpy()
    assert 0.6 < correct.mean() < 0.95
    for name in ("max softmax", "platt", "platt (ovr)", "mc dropout"):
        lo = 0.0 if name == "platt (ovr)" else 0.5  # one-vs-rest may give the arg-max logit's class < 1/2
        assert ((sc[name] >= lo) & (sc[name] <= 1.0)).all(), name
        if name != "mc dropout":
            assert M.error_auroc(sc[name], correct) > 0.6


def test_trust_score_exact_far_from_the_origin():
    # features offset by 3,000: a matrix-product distance would lose the neighbours to rounding (|x|^2 ~ 5e7);
    # the candidates are picked after centring and their distances recomputed directly, so the score stays exact
    rng = np.random.default_rng(1)
    x_train = rng.normal(size=(400, 5)) + 3e3
    y_train = np.repeat(np.arange(4), 100)
    x, pred = rng.normal(size=(50, 5)) + 3e3, rng.integers(0, 4, 50)
    ts = K.TrustScore().fit(torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train))
    got = ts.score(torch.tensor(x, dtype=torch.float32), torch.tensor(pred)).numpy()
    np.testing.assert_allclose(got, _published_trust_score(x_train, y_train, x, pred), rtol=2e-3)
