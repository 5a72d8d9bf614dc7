"""The explorers' callbacks, without a browser: they show what the helpers compute, and react to their controls."""

from __future__ import annotations

import ipywidgets
import numpy as np
import pytest
import torch

from helpers import widgets as W

PNG = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------------- ABC


@pytest.fixture(scope="module")
def abc_setup():
    from helpers.data import load_mnist
    from helpers.models import get_model

    x, y = load_mnist("test")
    model = get_model("cnn", device="cpu")
    explorer = W.abc_explorer(model, x[:4].clone(), y[:4].clone(), n_show=5)
    return model, x[:4].clone(), y[:4].clone(), explorer


def test_abc_explorer_is_a_displayable_widget(abc_setup):
    *_, e = abc_setup
    assert isinstance(e, ipywidgets.VBox)
    assert "application/vnd.jupyter.widget-view+json" in e._repr_mimebundle_()
    assert set(e.controls) == {"digit", "method", "baseline", "budget", "S"}
    assert bytes(e.image.value).startswith(PNG) and "ABC =" in e.info.value


def test_abc_explorer_shows_abc_confidence(abc_setup):
    from helpers.abc import abc_confidence

    model, x, y, e = abc_setup
    r = e.update(index=2, method="grad", baseline="blur", budget=80, n_samples=40)
    expected = abc_confidence(model, x[2:3], method="grad", baseline="blur", n_samples=40, budget=80.0, seed=0)
    assert r["abc"] == pytest.approx(float(expected[0]))
    assert r["label"] == int(y[2]) and r["predicted"] == int(model(x[2:3]).argmax(1))
    assert r["kept"] == round(r["abc"] * 40)
    assert r["attribution"].shape == (1, 28, 28) and np.abs(r["attribution"]).sum() > 0
    assert e.result is r and e.values() == {"index": 2, "method": "grad", "baseline": "blur", "budget": 80,
                                            "n_samples": 40}


@pytest.mark.parametrize("method, baseline", [("ig", "zero"), ("ig", "uniform"), ("expected_gradients", "train")])
def test_abc_explorer_mutations_are_the_samples_abc_classified(abc_setup, method, baseline):
    """The mutated digits shown are exactly ABC's samples: the model gives them the labels ABC recorded."""
    model, x, _, e = abc_setup
    r = e.update(index=1, method=method, baseline=baseline, budget=60, n_samples=20)
    muts = r["mutations"]
    assert muts.shape == (5, 1, 28, 28)
    with torch.no_grad():
        labels = model(muts).argmax(1).tolist()
    assert labels == r["mutation_labels"]
    changed = (muts != x[1:2]).flatten(1).sum(1).float()
    assert float(changed.mean()) > 5, "the samples should mutate pixels"


def test_abc_explorer_reacts_to_its_controls(abc_setup):
    *_, e = abc_setup
    e.update(index=0, method="grad", baseline="zero", budget=50, n_samples=30)
    e.controls["S"].value = 20  # what a person moving the slider does
    assert e.result["n_samples"] == 20
    e.controls["digit"].value = 3
    assert e.result["index"] == 3


def test_abc_explorer_bad_settings(abc_setup):
    *_, e = abc_setup
    with pytest.raises(TypeError, match="unknown setting"):
        e.update(radius=3)
    with pytest.raises(ValueError, match="x must be"):
        W.abc_explorer(abc_setup[0], torch.zeros(0, 1, 28, 28))


def test_callback_errors_are_shown_not_lost(abc_setup, monkeypatch):
    *_, e = abc_setup

    def boom(**kw):
        raise RuntimeError("out of memory, try a smaller S")

    monkeypatch.setattr(e, "compute", boom)
    e.controls["S"].value = 50
    assert "RuntimeError" in e.info.value and "smaller S" in e.info.value


# ------------------------------------------------------------------------------------------------------ smoothing


def test_smoothing_explorer_on_a_linear_model_has_closed_form_answers(linear_model):
    """f linear: its gradient is constant, so smoothing changes nothing (sensitivity 0) and, for a Gaussian
    perturbation, f(x) - f(x - I) = W_t·I exactly: the gradient's infidelity is 0 at every radius."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 4, 4, generator=g)
    e = W.smoothing_explorer(linear_model, x, radii=(0.0, 0.1, 0.3), methods=("grad",), n_smooth=4,
                             n_infidelity=20, n_sensitivity=3)
    for kernel in ("gaussian", "uniform", "truncnorm"):
        r = e.update(kernel=kernel, radius=0.3)
        np.testing.assert_allclose(r["infidelity_curve"], 0.0, atol=1e-8)
        np.testing.assert_allclose(r["sensitivity_curve"], 0.0, atol=1e-5)
        t = linear_model(x).argmax(1)
        np.testing.assert_allclose(r["explanation"], linear_model.linear.weight[t[0]].detach().view(1, 4, 4),
                                   rtol=1e-5)
    assert bytes(e.image.value).startswith(PNG)


def test_smoothing_explorer_matches_the_infidelity_and_sensitivity_helpers():
    from helpers.data import load_mnist
    from helpers.infidelity import infidelity
    from helpers.models import get_model
    from helpers.perturbations import Gaussian
    from helpers.sensitivity import sensitivity_max
    from helpers.smoothing import explainer, smooth

    x = load_mnist("test")[0][:2]
    model = get_model("cnn", device="cpu")
    e = W.smoothing_explorer(model, x, radii=(0.0, 0.2), methods=("grad",), n_smooth=4, n_infidelity=30,
                             n_sensitivity=2)
    r = e.update(kernel="uniform", radius=0.2)
    t = model(x).argmax(1)
    fn = smooth(explainer(model, "grad"), "uniform", 0.2, 4, seed=0)
    inf = infidelity(model, x, {"0.0": explainer(model, "grad")(x, t), "0.2": fn(x, t)}, Gaussian(0.1), target=t,
                     n_samples=30, seed=1)
    assert r["infidelity"] == pytest.approx(float(inf["0.2"].mean()), rel=1e-5)
    assert r["sensitivity"] == pytest.approx(float(sensitivity_max(fn, x, 0.1, 2, seed=2, target=t).mean()), rel=1e-5)
    # the radius slider only moves along the cached curve
    curves = dict(e._curves)
    e.controls["SG radius"].value = 0.0
    assert e.result["radius"] == 0.0 and e._curves.keys() == curves.keys()
    assert e.result["infidelity"] == pytest.approx(float(inf["0.0"].mean()), rel=1e-5)


def test_smoothing_explorer_bad_radii(linear_model):
    with pytest.raises(ValueError, match="radii"):
        W.smoothing_explorer(linear_model, torch.rand(2, 1, 4, 4), radii=(-0.1, 0.2))


# ------------------------------------------------------------------------------------------------- risk-coverage


@pytest.fixture
def confidences():
    rng = np.random.default_rng(0)
    correct = rng.uniform(size=400) < 0.85
    return {"perfect": correct + rng.uniform(0, 0.5, 400), "random": rng.uniform(size=400),
            "softmax": torch.as_tensor(rng.uniform(size=400) + 0.4 * correct)}, correct


def test_risk_coverage_explorer_numbers(confidences):
    from helpers.metrics import aurc

    conf, correct = confidences
    e = W.risk_coverage_explorer(conf, correct, coverage=0.5)
    r = e.result
    assert r["kept"] == 200 and r["coverage"] == 0.5
    assert r["risk"]["perfect"] == 0.0  # the 200 most confident are all correct
    for name, c in conf.items():
        assert r["aurc"][name] == pytest.approx(aurc(c, correct))
        c = np.asarray(c)
        top = np.argsort(-c, kind="mergesort")[:200]
        assert r["risk"][name] == pytest.approx(1 - correct[top].mean(), abs=1e-12)
    full = e.update(coverage=1.0)
    for name in conf:
        assert full["risk"][name] == pytest.approx(1 - correct.mean())
    assert "<table" in e.info.value and bytes(e.image.value).startswith(PNG)


def test_risk_coverage_explorer_controls(confidences):
    conf, correct = confidences
    e = W.risk_coverage_explorer(conf, correct)
    e.controls["coverage"].value = 0.3
    assert e.result["kept"] == 120
    e.controls["methods"].value = ("random",)
    assert [row["method"] for row in e.result["rows"]] == ["random"]


def test_risk_coverage_explorer_bad_input(confidences):
    conf, correct = confidences
    with pytest.raises(ValueError, match=r"confidences\['short'\]"):
        W.risk_coverage_explorer({"short": np.ones(3)}, correct)
    with pytest.raises(ValueError, match="non-empty dict"):
        W.risk_coverage_explorer({}, correct)
    with pytest.raises(ValueError, match="coverage"):
        W.risk_coverage_explorer(conf, correct, coverage=0.0)
