"""helpers.optimal: closed forms, numpy's pinv, the Shapley kernel (Prop. 2.5) and the known-moment estimator."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from helpers.optimal import optimal_explanation, optimal_from_samples, sherman_morrison
from helpers.perturbations import ConstantBaseline, Fixed, Gaussian, NoisyBaseline, ShapSubset, Square


def _x(n=3, seed=0, shape=(1, 4, 4)):
    return torch.rand((n,) + shape, generator=torch.Generator().manual_seed(seed))



def test_optimal_lstsq_of_a_linear_model_is_its_weights(linear_model):
    x, t = _x(), torch.tensor([0, 2, 1])
    w = linear_model.linear.weight.detach()[t].reshape(x.shape)
    got = optimal_explanation(linear_model, x, NoisyBaseline(0.2), t, n_samples=300, method="lstsq")
    torch.testing.assert_close(got, w, atol=1e-4, rtol=1e-4)
    for p in (Square(sizes=(1, 2)), ShapSubset(), Square(sizes=(1, 2, 3), baseline=0.3)):
        got = optimal_explanation(linear_model, x, p, t, n_samples=300)
        torch.testing.assert_close(got, w * (x - p.baseline), atol=1e-4, rtol=1e-4)


def test_optimal_closed_form_of_a_linear_model_is_its_weights(linear_model):
    x, t = _x(), torch.tensor([0, 2, 1])
    w = linear_model.linear.weight.detach()[t].reshape(x.shape)
    for p in (Gaussian(0.1), NoisyBaseline(0.2), NoisyBaseline(0.3, baseline=0.5, input_range=None)):
        got = optimal_explanation(linear_model, x, p, t, n_samples=40_000)
        assert float((got - w).norm() / w.norm()) < 0.1, p


def test_optimal_for_a_vanishing_gaussian_is_the_gradient(quadratic_model):
    x, t = _x(), torch.tensor([0, 1, 0])
    g = quadratic_model.grad(x, t)
    got = optimal_explanation(quadratic_model, x, Gaussian(1e-3), t, n_samples=40_000)
    assert float((got - g).norm() / g.norm()) < 0.05
    got_ls = optimal_explanation(quadratic_model, x, Gaussian(1e-3), t, n_samples=400, method="lstsq")
    torch.testing.assert_close(got_ls, g, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("p", [NoisyBaseline(0.3, baseline=0.2), ConstantBaseline(0.4)], ids=repr)
def test_optimal_explanation_equals_numpy_pinv_on_the_same_samples(p, quadratic_model):
    """Least squares on the replayed samples = numpy's pinv(Σ W Wᵀ) Σ W Δf (ConstantBaseline: rank one, singular)."""
    x, t = _x(2), torch.tensor([1, 0])
    d = p.draw(x, 40, torch.Generator().manual_seed(0))
    i, w = d.I.expand((2,) + d.I.shape[1:]), d.W.expand((2,) + d.W.shape[1:])
    got = optimal_explanation(quadratic_model, x, Fixed(i, w, units=p.units), t, n_samples=40, method="lstsq")
    with torch.no_grad():
        f = quadratic_model
        for k in range(2):
            diff = (f(x[k:k + 1])[0, t[k]] - f(x[k] - i[k])[:, t[k]]).double().numpy()
            W = w[k].flatten(1).double().numpy()
            ref = np.linalg.pinv(W.T @ W) @ (W.T @ diff)
            np.testing.assert_allclose(got[k].flatten().double().numpy(), ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


def test_constant_baseline_optimum_is_complete(linear_model):
    x, t = _x(2), torch.tensor([0, 1])
    got = optimal_explanation(linear_model, x, ConstantBaseline(0.0), t, n_samples=4)
    f = linear_model(x)[torch.arange(2), t] - linear_model(torch.zeros_like(x))[torch.arange(2), t]
    torch.testing.assert_close(got.flatten(1).sum(1), f.detach(), atol=1e-4, rtol=1e-4)


class Small(nn.Module):
    def __init__(self, d=6):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, 5), nn.Tanh(), nn.Linear(5, 2))

    def forward(self, x):
        return self.net(x) + 0.3 * (x[:, 0] * x[:, 1]).unsqueeze(1)


def test_prop_2_5_the_shapley_kernel_optimum_is_the_shapley_value_up_to_completeness():
    """Enumerate every subset of d = 6 features: Φ* for the Shapley-kernel perturbation (sizes 1..d-1) equals the
    exact Shapley values up to one constant per input; adding the constant that restores completeness
    (Σ Φ = f(x) - f(x0)) gives them exactly. The sampled estimate (KernelSHAP-style draws) converges to Φ*."""
    d, model = 6, Small().double().eval()
    x, x0 = torch.rand(1, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), 0.2
    with torch.no_grad():
        v = lambda present: float(model(torch.where(present, x, torch.full_like(x, x0)))[0, 0])  # noqa: E731
        subsets = [torch.tensor(s, dtype=torch.bool).unsqueeze(0) for s in itertools.product([0, 1], repeat=d)]
        shap = np.zeros(d)
        for s in subsets:
            for j in np.flatnonzero(~s[0].numpy()):
                z = int(s.sum())
                with_j = s.clone()
                with_j[0, j] = True
                shap[j] += math.factorial(z) * math.factorial(d - z - 1) / math.factorial(d) * (v(with_j) - v(s))
        G, r = np.zeros((d, d)), np.zeros(d)
        for s in subsets:                                            # M = removed features = not present
            m, z = (~s[0]).double().numpy(), int((~s).sum())
            if 0 < z < d:
                p = (d - 1) / (z * (d - z)) / math.comb(d, z)
                G += p * np.outer(m, m)
                r += p * m * (v(torch.ones_like(s)) - v(s))
        opt = np.linalg.solve(G, r)
        gap = v(torch.ones(1, d, dtype=torch.bool)) - v(torch.zeros(1, d, dtype=torch.bool))
    np.testing.assert_allclose(shap.sum(), gap, atol=1e-12)
    shift = shap - opt
    np.testing.assert_allclose(shift, np.full(d, shift.mean()), atol=1e-10)          # a constant per input
    np.testing.assert_allclose(opt + (gap - opt.sum()) / d, shap, atol=1e-10)
    est = optimal_explanation(model, x, ShapSubset(x0), torch.tensor([0]), n_samples=60_000, seed=0)
    np.testing.assert_allclose(est[0].double().numpy(), opt, atol=0.02 * np.abs(opt).max())


def test_known_moment_estimator_and_pinv_against_dense_references():
    g = torch.Generator().manual_seed(0)
    W, y = torch.randn(2, 200, 10, generator=g), torch.randn(2, 200, generator=g)
    lsq = torch.linalg.lstsq(W.double(), y.double().unsqueeze(-1)).solution.squeeze(-1).float()
    torch.testing.assert_close(optimal_from_samples(W, y), lsq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(optimal_from_samples(W, y, ridge=1e-9), lsq, atol=1e-5, rtol=1e-5)
    u, D = torch.randn(2, 10, generator=g), torch.rand(2, 10, generator=g) + 0.5
    G = u.double().unsqueeze(2) * u.double().unsqueeze(1) + torch.diag_embed(D.double())
    c = y.double().mean(1, keepdim=True)
    r = torch.einsum("nsd,ns->nd", W.double(), y.double() - c) / 200 + c * u.double()
    torch.testing.assert_close(optimal_from_samples(W, y, second_moment=(u, D)), torch.linalg.solve(G, r).float(),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sherman_morrison(u.double(), D.double(), r), torch.linalg.solve(G, r))
    torch.testing.assert_close(optimal_from_samples(W[0], y, second_moment=(u, D)),
                               optimal_from_samples(W[0].expand(2, 200, 10), y, second_moment=(u, D)))


def test_streaming_closed_form_equals_the_formula_on_replayed_samples(quadratic_model):
    """optimal_explanation(closed form) on replayed NB samples = (u uᵀ + D)⁻¹ (mean W (Δf - c) + c u)."""
    x, t, nb = _x(2), torch.tensor([0, 1]), NoisyBaseline(0.2, baseline=0.3)
    i = nb.sample(x, 600, torch.Generator().manual_seed(0))

    class Replay(Fixed):
        def second_moment(self, v):
            return nb.second_moment(v)

    got = optimal_explanation(quadratic_model, x, Replay(i), t, method="closed_form")
    with torch.no_grad():
        fx = quadratic_model(x)[[0, 1], t]
        fp = torch.stack([quadratic_model(x[k] - i[k])[:, t[k]] for k in range(2)])
    ref = optimal_from_samples(i.flatten(2), fx.unsqueeze(1) - fp, second_moment=nb.second_moment(x))
    torch.testing.assert_close(got.flatten(1), ref, atol=1e-5 * float(ref.abs().max()), rtol=1e-4)


def test_bad_input_names_the_problem(linear_model):
    x = _x(2)
    with pytest.raises(ValueError, match="ridge"):
        optimal_explanation(linear_model, x, Gaussian(0.1), ridge=-1.0, n_samples=3)
    with pytest.raises(ValueError, match="target"):
        optimal_explanation(linear_model, x, Gaussian(0.1), target=torch.tensor([0, 7]), n_samples=3)
    with pytest.raises(ValueError, match="second_moment"):
        optimal_explanation(linear_model, x, Square(sizes=(1,)), method="closed_form", n_samples=3)


def test_gram_matrices_do_not_depend_on_the_chunk_size(quadratic_model, monkeypatch):
    """Square's masks are shared by all inputs (one Gram per block, not per chunk); NB's lstsq Grams are per input."""
    x, t = _x(4), torch.tensor([0, 1, 1, 0])
    for p, method in ((Square(sizes=(1, 2)), "auto"), (NoisyBaseline(0.2), "lstsq")):
        full = optimal_explanation(quadratic_model, x, p, t, n_samples=300, ridge=1e-3, method=method, seed=1)
        monkeypatch.setenv("HELPERS_MEMORY_BUDGET_MB", "0.0001")                # one row per chunk
        torch.testing.assert_close(optimal_explanation(quadratic_model, x, p, t, n_samples=300, ridge=1e-3,
                                                       method=method, seed=1), full)
        monkeypatch.delenv("HELPERS_MEMORY_BUDGET_MB")


def test_optimal_from_samples_with_fewer_samples_than_inputs():
    """Per-input W with S < N samples: each row is its own least-squares problem."""
    g = torch.Generator().manual_seed(0)
    W, diff, w = torch.randn(5, 3, 2, generator=g), torch.randn(5, 3, generator=g), torch.rand(5, 3, generator=g) + 0.5
    batch = optimal_from_samples(W, diff, w, ridge=1e-3)
    for k in range(5):
        torch.testing.assert_close(batch[k], optimal_from_samples(W[k:k + 1], diff[k:k + 1], w[k:k + 1], ridge=1e-3)[0])


def test_closed_form_keeps_float64_accuracy_on_offset_samples():
    """The closed form multiplies float32 W by the centred Δf: on samples far from zero it still matches float64."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(1, 20_000, 50, generator=g) * 0.2 + 0.3
    y = torch.randn(2, 20_000, generator=g) + 50.0
    u, D = torch.randn(2, 50, generator=g), torch.rand(2, 50, generator=g) + 0.1
    c = y.double().mean(1, keepdim=True)
    r = torch.einsum("sd,ns->nd", W[0].double(), y.double() - c) / 20_000 + c * u.double()
    ref = sherman_morrison(u.double(), D.double(), r)
    got = optimal_from_samples(W, y, second_moment=(u, D))
    torch.testing.assert_close(got.double(), ref, atol=1e-5 * float(ref.abs().max()), rtol=1e-5)
