"""helpers.attribution: closed forms, completeness, cross-checks against captum and shap, seeds, bad input."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from helpers.attribution import (
    BASELINES,
    INTEGRATION_RULES,
    METHODS,
    attribute,
    deeplift_multipliers,
    explain,
    hash_uniform,
    make_baseline,
    make_references,
)


def _logit(model, x, t):
    with torch.no_grad():
        return model(x).gather(1, t.view(-1, 1)).squeeze(1)


# ------------------------------------------------------------------------------------------------ closed forms


@pytest.mark.parametrize("rule", INTEGRATION_RULES)
@pytest.mark.parametrize("baseline", ["zero", "uniform", "max_distance", "tensor"])
def test_ig_linear_model_is_w_times_x_minus_b(linear_model, rule, baseline):
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1, 2, 0, 1])
    b = torch.rand(1, 1, 4, 4) if baseline == "tensor" else baseline
    a = attribute(linear_model, x, t, method="ig", baseline=b, n_steps=7, integration=rule)
    bb = make_baseline(b, x)
    w = linear_model.linear.weight[t].view_as(x)
    torch.testing.assert_close(a, w * (x - bb), rtol=1e-5, atol=1e-6)


def test_grad_smoothgrad_gbp_on_linear_model_equal_weights(linear_model):
    x = torch.rand(4, 1, 4, 4)
    t = torch.tensor([2, 0, 1, 2])
    w = linear_model.linear.weight[t].view_as(x)
    for method in ("grad", "smoothgrad", "gbp"):
        torch.testing.assert_close(attribute(linear_model, x, t, method=method), w, rtol=1e-5, atol=1e-6)


def test_expected_gradients_linear_model_is_mean_over_references(linear_model):
    x = torch.rand(3, 1, 4, 4)
    t = torch.tensor([0, 1, 2])
    refs = torch.rand(6, 1, 4, 4)
    w = linear_model.linear.weight[t].view_as(x)
    expect = w * (x - refs.mean(0, keepdim=True))
    for n_steps in (None, 5):
        a = attribute(linear_model, x, t, method="expected_gradients", references=refs, n_steps=n_steps)
        torch.testing.assert_close(a, expect, rtol=1e-5, atol=1e-6)
    a = attribute(linear_model, x, t, method="deepshap", references=refs)
    torch.testing.assert_close(a, expect, rtol=1e-5, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_steps=st.integers(1, 20))
def test_ig_linear_property(seed, n_steps):
    from conftest import LinearModel

    g = torch.Generator().manual_seed(seed)
    model = LinearModel(seed=seed).eval()
    x, b = torch.rand(3, 1, 4, 4, generator=g), torch.rand(3, 1, 4, 4, generator=g)
    a = attribute(model, x, 1, baseline=b, n_steps=n_steps)
    torch.testing.assert_close(a, model.linear.weight[1].view(1, 1, 4, 4) * (x - b), rtol=1e-4, atol=1e-5)


def test_ig_quadratic_model_exact_with_enough_gauss_points(quadratic_model):
    # f is quadratic along the path, so 2-point Gauss-Legendre integrates the gradient exactly: completeness holds
    x = torch.randn(4, 1, 4, 4)
    t = torch.tensor([0, 1, 0, 1])
    a = attribute(quadratic_model, x, t, n_steps=2)
    gap = a.flatten(1).sum(1) - (_logit(quadratic_model, x, t) - _logit(quadratic_model, torch.zeros_like(x), t))
    assert gap.abs().max() < 1e-3


# ------------------------------------------------------------------------------------------------ on the CNN


def test_completeness_gap_shrinks_with_n_steps(cnn, mnist_small):
    x = mnist_small[0][:6]
    t = cnn(x).argmax(1)
    delta = _logit(cnn, x, t) - _logit(cnn, torch.zeros_like(x), t)
    gaps = {}
    for n in (2, 8, 64):
        a = attribute(cnn, x, t, n_steps=n, integration="riemann_trapezoid")
        gaps[n] = float((a.flatten(1).sum(1) - delta).abs().mean())
    assert gaps[64] < gaps[8] < gaps[2]
    assert gaps[64] < 0.02 * float(delta.abs().mean())


@pytest.mark.parametrize("rule,baseline", [("gausslegendre", "zero"), ("riemann_left", "blur"), ("riemann_middle", "zero"),
                                           ("riemann_right", "uniform")])
def test_ig_matches_captum(cnn, mnist_small, rule, baseline):
    from captum.attr import IntegratedGradients

    x = mnist_small[0][:4]
    t = cnn(x).argmax(1)
    b = make_baseline(baseline, x, seed=3)
    ref = IntegratedGradients(cnn).attribute(x, baselines=b, target=t, n_steps=20, method=rule)
    ours = attribute(cnn, x, t, baseline=baseline, seed=3, n_steps=20, integration=rule)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_gbp_matches_captum_and_differs_from_grad(cnn, mnist_small):
    from captum.attr import GuidedBackprop, Saliency

    x = mnist_small[0][:4]
    t = cnn(x).argmax(1)
    gbp = attribute(cnn, x, t, method="gbp")
    grad = attribute(cnn, x, t, method="grad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(gbp, GuidedBackprop(cnn).attribute(x, target=t), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.abs(), Saliency(cnn).attribute(x, target=t), rtol=1e-5, atol=1e-6)
    # on a ReLU network guided backprop zeroes negative gradients at every ReLU: it is not the gradient
    rel = float((gbp - grad).norm() / grad.norm())
    assert rel > 0.1, rel


def test_deepshap_matches_shap_deep_explainer(cnn, mnist_small):
    shap = pytest.importorskip("shap")
    from helpers.data import load_mnist

    x = mnist_small[0][:2]
    bg = load_mnist("train")[0][:6]
    t = cnn(x).argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sv = torch.as_tensor(shap.DeepExplainer(cnn, bg).shap_values(x, check_additivity=False)).float()
    ref = sv.permute(0, 4, 1, 2, 3)[torch.arange(2), t]
    ours = attribute(cnn, x, t, method="deepshap", references=bg)
    rel = float((ours - ref).norm() / ref.norm())
    assert rel < 1e-4, rel
    # and DeepLift's completeness: sum_j m_j (x_j - r_j) = f(x) - f(r) per pair
    m = deeplift_multipliers(cnn, x[:1].expand(6, -1, -1, -1), bg, t[:1].expand(6))
    gap = (m * (x[:1] - bg)).flatten(1).sum(1) - (_logit(cnn, x[:1].expand(6, -1, -1, -1), t[:1].expand(6))
                                                  - _logit(cnn, bg, t[:1].expand(6)))
    assert gap.abs().max() < 1e-3


def test_every_method_and_baseline_runs(cnn, mnist_small):
    x = mnist_small[0][:2]
    for method in METHODS:
        a = attribute(cnn, x, method=method, n_references=4, n_samples=4, n_steps=4)
        assert a.shape == x.shape and a.dtype == x.dtype and torch.isfinite(a).all()
    for baseline in BASELINES:
        a = attribute(cnn, x, baseline=baseline, n_steps=4)
        assert a.shape == x.shape and torch.isfinite(a).all()


def test_explain_multipliers_times_difference_is_ig(cnn, mnist_small):
    x = mnist_small[0][:3]
    e = explain(cnn, x, method="ig", baseline="blur", n_steps=8)
    torch.testing.assert_close(e.attributions, e.multipliers * (x - e.references[:, 0]), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ baselines, seeds


def test_baselines_shapes_and_values(mnist_small):
    x = mnist_small[0][:4]
    for name in BASELINES:
        b = make_baseline(name, x, seed=1)
        assert b.shape == x.shape and b.dtype == x.dtype and torch.isfinite(b).all()
        assert b.min() >= 0 and b.max() <= 1
    assert torch.equal(make_baseline("zero", x), torch.zeros_like(x))
    md = make_baseline("max_distance", x)
    assert torch.all((md - x).abs() >= 0.5)
    const = torch.full((1, 1, 28, 28), 0.3)
    torch.testing.assert_close(make_baseline("blur", const), const)
    assert torch.equal(make_baseline("uniform", x, seed=2), make_baseline("uniform", x, seed=2))
    assert not torch.equal(make_baseline("uniform", x, seed=2), make_baseline("uniform", x, seed=3))
    assert make_references("train", x, 5).shape == (1, 5, 1, 28, 28)
    assert make_references("uniform", x, 5).shape == (4, 5, 1, 28, 28)
    assert make_references("zero", x, 5).shape == (4, 1, 1, 28, 28)


def test_hash_uniform_is_uniform_and_seeded():
    k = torch.arange(200_000)
    u = hash_uniform(0, k)
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    assert torch.equal(u, hash_uniform(0, k)) and not torch.equal(u, hash_uniform(1, k))
    torch.testing.assert_close(hash_uniform(0, k[5:10]), u[5:10], rtol=0, atol=0)


@pytest.mark.parametrize("method", ["ig", "expected_gradients", "smoothgrad", "deepshap"])
def test_chunk_size_and_seed(cnn, mnist_small, method):
    x = mnist_small[0][:5]
    kw = dict(method=method, n_steps=4 if method == "ig" else None, n_references=3, n_samples=3, seed=7,
              baseline="uniform" if method != "ig" else "zero")
    a1 = attribute(cnn, x, chunk_size=5, **kw)
    a2 = attribute(cnn, x, chunk_size=2, **kw)
    torch.testing.assert_close(a1, a2, rtol=1e-5, atol=1e-6)
    # the first inputs' attributions do not depend on what comes after them
    torch.testing.assert_close(attribute(cnn, x[:2], chunk_size=2, **kw), a1[:2], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_input(cnn, mnist_small, linear_model):
    x = mnist_small[0][:2]
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains"):
        attribute(cnn, bad)
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="x contains"):
        attribute(cnn, bad)
    with pytest.raises(TypeError, match="x must be a floating"):
        attribute(cnn, (x * 255).to(torch.uint8))
    with pytest.raises(TypeError, match="dtype"):
        attribute(cnn, x.double())
    with pytest.raises(ValueError, match="shape"):
        attribute(cnn, x.view(2, 28, 28))
    with pytest.raises(ValueError, match="baseline must be one value per input"):
        attribute(cnn, x, baseline=torch.zeros(2, 1, 14, 14))
    with pytest.raises(ValueError, match="unknown method"):
        attribute(cnn, x, method="lime")
    with pytest.raises(ValueError, match="unknown baseline"):
        attribute(cnn, x, baseline="black")
    with pytest.raises(ValueError, match="target"):
        attribute(cnn, x, target=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="n_steps"):
        attribute(cnn, x, n_steps=0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(784, 10)).train()
    with pytest.raises(ValueError, match="train mode"):
        attribute(model, x)
