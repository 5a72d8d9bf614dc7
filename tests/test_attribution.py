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
              baseline="uniform" if method != "smoothgrad" else "zero")
    a1 = attribute(cnn, x, chunk_size=5, **kw)
    a2 = attribute(cnn, x, chunk_size=2, **kw)
    torch.testing.assert_close(a1, a2, rtol=1e-5, atol=1e-6)
    # an input's attributions do not depend on the other inputs or on its position (common random numbers)
    torch.testing.assert_close(attribute(cnn, x[:2], chunk_size=2, **kw), a1[:2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attribute(cnn, x[1:4], **kw), a1[1:4], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attribute(cnn, x.flip(0), **kw).flip(0), a1, rtol=1e-5, atol=1e-6)


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


# ------------------------------------------------------------------------------------------------ your own model


class ViewLeNet(nn.Module):
    """Quantus's / captum's test LeNet shape: flattens with ``.view`` (breaks on channels-last activations)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(4, 8, 5), nn.ReLU(), nn.MaxPool2d(2)
        self.fc1, self.relu3, self.fc2 = nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool2(self.relu2(self.conv2(self.pool1(self.relu1(self.conv1(x))))))
        return self.fc2(self.relu3(self.fc1(x.view(x.shape[0], -1))))


class ResCNN(nn.Module):
    """3-channel residual CNN with BatchNorm and in-place ReLUs (a torchvision ResNet in miniature)."""

    def __init__(self, pool: nn.Module = None):
        super().__init__()
        torch.manual_seed(1)
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True))
        self.pool = pool if pool is not None else nn.MaxPool2d(2)
        self.c1, self.b1, self.r1 = nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True)
        self.c2, self.b2, self.r2 = nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)

    def forward(self, x):
        z = self.pool(self.stem(x))
        return self.head(self.r2(z + self.b2(self.c2(self.r1(self.b1(self.c1(z)))))))


class TwoInputs(nn.Module):
    """``model(x1, x2, mask)``: two inputs and an extra per-row forward argument (captum's additional_forward_args)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.a, self.b, self.relu, self.head = nn.Linear(6, 8), nn.Linear(4, 8), nn.ReLU(), nn.Linear(16, 3)

    def forward(self, x1, x2, mask):
        return self.head(self.relu(torch.cat([self.a(x1), self.b(x2) * mask], dim=1)))


def _tabular(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    return model, 3 * torch.randn(n, d, generator=g)         # standardised-like features, far outside [0, 1]


@pytest.mark.parametrize("method", ["grad", "ig", "smoothgrad", "expected_gradients"])
def test_view_cnn_runs_and_matches_the_model_as_written(method):
    # a CNN that flattens with .view crashed under the channels-last fast path; now the fast path falls back
    from captum.attr import Saliency

    model = ViewLeNet().eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    a = attribute(model, x, method=method, references=torch.rand(4, 1, 28, 28) if method == "expected_gradients"
                  else None, n_steps=4, n_samples=3)
    assert a.shape == x.shape and torch.isfinite(a).all()
    if method == "grad":
        t = model(x).argmax(1)
        torch.testing.assert_close(a, Saliency(model).attribute(x, target=t, abs=False), rtol=1e-5, atol=1e-6)


def test_fast_path_probe_falls_back_once_and_is_remembered():
    from helpers.fastpath import fast_forward

    model = ViewLeNet().eval()
    x = torch.rand(4, 1, 28, 28)
    f = fast_forward(model, x, need_grad=True)
    assert f is model and fast_forward(model, x, need_grad=True) is f
    cnn_like = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 26 * 26, 3)).eval()
    g = fast_forward(cnn_like, x)
    with torch.no_grad():
        torch.testing.assert_close(g(x), cnn_like(x), rtol=1e-4, atol=1e-5)


def test_ig_matches_captum_with_nonzero_baseline_on_residual_cnn():
    from captum.attr import IntegratedGradients

    model = ResCNN().eval()
    g = torch.Generator().manual_seed(3)
    x, b = torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor([0, 2, 3])
    ours = attribute(model, x, t, method="ig", baseline=b, n_steps=16, input_range=None)
    ref = IntegratedGradients(model).attribute(x, baselines=b, target=t, n_steps=16)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    assert float((ours - attribute(model, x, t, n_steps=16)).abs().max()) > 1e-2   # the baseline matters


def test_baselines_honour_input_range_instead_of_clamping_to_unit_interval():
    from helpers.baselines import make_baseline, make_references

    x = 3 * torch.randn(4, 200, generator=torch.Generator().manual_seed(0))
    u = make_baseline("uniform", x, input_range=(-4.0, 4.0))
    assert u.min() < -3 and u.max() > 3
    gauss = make_baseline("gaussian", x, sigma=0.1, input_range=None)
    assert float((gauss - x).abs().max()) < 1.0                          # noise around x, never clamped to [0, 1]
    md = make_baseline("max_distance", x, input_range=(-4.0, 4.0))
    assert torch.equal(md, torch.where(x < 0, torch.tensor(4.0), torch.tensor(-4.0)))
    assert make_references("gaussian", x, 3, input_range=None).min() < -2
    with pytest.raises(ValueError, match="input_range"):
        make_baseline("uniform", x, input_range=None)
    assert torch.equal(make_baseline("uniform", x[:, :1].clamp(0, 1), seed=2),
                       make_baseline("uniform", x[:, :1].clamp(0, 1), seed=2, input_range=(0, 1)))


def test_number_baseline_is_a_constant_input(linear_model):
    x = torch.rand(3, 1, 4, 4)
    t = torch.tensor([0, 1, 2])
    w = linear_model.linear.weight[t].view_as(x)
    torch.testing.assert_close(attribute(linear_model, x, t, baseline=0.5, n_steps=3), w * (x - 0.5),
                               rtol=1e-5, atol=1e-6)


def test_per_input_baseline_vs_shared_references_for_deepshap():
    # a tensor with one row per input is one baseline per input, for every method (it was K shared references
    # for deepshap: [[0,-3.5,0,-4]] x 2 instead of [[0,0,0,-8],[0,-7,0,0]])
    model = nn.Sequential(nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
        model[0].bias.zero_()
    x = torch.zeros(2, 4)
    b = torch.tensor([[0.0, 0.0, 0.0, 8.0], [0.0, 7.0, 0.0, 0.0]])
    t = torch.tensor([0, 0])
    want = torch.tensor([[0.0, 0.0, 0.0, -8.0], [0.0, -7.0, 0.0, 0.0]])
    for method in ("ig", "expected_gradients", "deepshap"):
        torch.testing.assert_close(attribute(model, x, t, method=method, baseline=b, n_steps=2), want)
    shared = attribute(model, x, t, method="deepshap", references=b)
    torch.testing.assert_close(shared, torch.tensor([[0.0, -3.5, 0.0, -4.0]] * 2))


def test_default_references_of_non_mnist_input_refuse_at_once(monkeypatch):
    import helpers.data

    monkeypatch.setattr(helpers.data, "load_mnist", lambda *a, **k: pytest.fail("MNIST was loaded"))
    model, x = _tabular()
    for method in ("expected_gradients", "deepshap"):
        with pytest.raises(ValueError, match="references="):
            attribute(model, x, method=method)


@pytest.mark.parametrize("squeeze", [False, True])
def test_single_logit_binary_model(squeeze):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1)).eval()
    model = nn.Sequential(net, nn.Flatten(0)).eval() if squeeze else net
    x = torch.randn(6, 5)
    g1 = attribute(model, x, 1, method="grad")
    g0 = attribute(model, x, 0, method="grad")
    xs = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(net(xs).sum(), xs)
    torch.testing.assert_close(g1, want)
    torch.testing.assert_close(g0, -want)
    with torch.no_grad():
        z = net(x).squeeze(1)
    auto = attribute(model, x, method="ig", n_steps=8, input_range=None)   # target None: the predicted class
    sign = torch.where(z > 0, 1.0, -1.0).view(-1, 1)
    torch.testing.assert_close(auto, sign * attribute(model, x, 1, method="ig", n_steps=8), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="target"):
        attribute(model, x, 2, method="grad")


@pytest.mark.parametrize("method", ["grad", "ig", "expected_gradients", "deepshap"])
def test_tuple_inputs_and_additional_forward_args_match_captum(method):
    from captum.attr import DeepLift, IntegratedGradients, Saliency

    model = TwoInputs().eval()
    g = torch.Generator().manual_seed(4)
    x1, x2 = torch.randn(5, 6, generator=g), torch.randn(5, 4, generator=g)
    mask = (torch.rand(5, 8, generator=g) > 0.3).float()
    t = torch.tensor([0, 1, 2, 0, 1])
    b1, b2 = torch.randn(5, 6, generator=g), torch.randn(5, 4, generator=g)
    r1, r2 = torch.randn(3, 6, generator=g), torch.randn(3, 4, generator=g)
    kw = dict(additional_forward_args=mask, input_range=None)
    if method == "grad":
        ours = attribute(model, (x1, x2), t, method="grad", **kw)
        ref = Saliency(model).attribute((x1, x2), target=t, abs=False, additional_forward_args=mask)
    elif method == "ig":
        ours = attribute(model, (x1, x2), t, method="ig", baseline=(b1, b2), n_steps=12, **kw)
        ref = IntegratedGradients(model).attribute((x1, x2), (b1, b2), target=t, n_steps=12,
                                                   additional_forward_args=mask)
    else:       # EG with quadrature and DeepSHAP = the mean over references of IG / DeepLift against each
        ours = attribute(model, (x1, x2), t, method=method, references=(r1, r2), n_steps=12, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per = [(IntegratedGradients(model).attribute if method == "expected_gradients" else
                    DeepLift(model).attribute)((x1, x2), (r1[k:k + 1].expand(5, -1), r2[k:k + 1].expand(5, -1)),
                                               target=t, additional_forward_args=mask,
                                               **({"n_steps": 12} if method == "expected_gradients" else {}))
                   for k in range(3)]
        ref = tuple(sum(p[i] for p in per) / 3 for i in range(2))
    assert isinstance(ours, tuple) and len(ours) == 2
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)


def test_hessian_vector_product_closed_form_and_zero_on_relu(quadratic_model, linear_model):
    from helpers.attribution import hessian_vector_product

    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    t = torch.tensor([0, 1, 1])
    want = torch.einsum("nde,ne->nd", quadratic_model.A[t], v.flatten(1)).view_as(x)
    torch.testing.assert_close(hessian_vector_product(quadratic_model, x, v, t), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(hessian_vector_product(linear_model, x, v, t), torch.zeros_like(x))
    with pytest.raises(ValueError, match="v must have the shape"):
        hessian_vector_product(quadratic_model, x, v[:2], t)


def test_target_as_a_python_list_matches_captum(cnn, mnist_small):
    """captum accepts ``target`` as a list of N ints (one class per row); so do we, with the same attributions, and a
    list of the wrong length or of non-ints is refused by name."""
    from captum.attr import IntegratedGradients, Saliency

    x = mnist_small[0][:4]
    t = [3, 1, 4, 1]  # not the predicted classes: a wrong conversion would show
    torch.testing.assert_close(attribute(cnn, x, t, n_steps=20, integration="riemann_middle"),
                               IntegratedGradients(cnn).attribute(x, target=t, n_steps=20, method="riemann_middle"),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attribute(cnn, x, t, method="grad"), Saliency(cnn).attribute(x, target=t, abs=False),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attribute(cnn, x, t, method="grad"), attribute(cnn, x, torch.tensor(t), method="grad"))
    with pytest.raises(ValueError, match="target must have shape"):
        attribute(cnn, x, [3, 1], method="grad")
    with pytest.raises(TypeError, match="target given as a list"):
        attribute(cnn, x, [3.0, 1, 4, 1], method="grad")
