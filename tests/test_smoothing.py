"""helpers.smoothing, helpers.sensitivity and helpers.sanity: kernels, common random numbers, captum, suites."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers.perturbations import NoisyBaseline, Square
from helpers.sanity import TABLE1, explanation_suite, randomized_models, rank_correlation, score_explanations
from helpers.sensitivity import sensitivity_max
from helpers.smoothing import KERNELS, choose_radius, explainer, kernel_noise, smooth


def _x(n=3, seed=0, shape=(1, 4, 4)):
    return torch.rand((n,) + shape, generator=torch.Generator().manual_seed(seed))



class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        return self.head(self.features(x))


def test_kernels_have_their_scale_and_support():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    r = 0.5
    z = kernel_noise("gaussian", r, (200_000,), g())
    assert abs(float(z.std()) - r) < 0.005                                    # std r, not r²
    z = kernel_noise("uniform", r, (200_000,), g())
    assert float(z.abs().max()) <= r and abs(float(z.std()) - r / 3 ** 0.5) < 0.005
    z = kernel_noise("truncnorm", r, (200_000,), g())
    assert 1.95 * r < float(z.abs().max()) <= 2 * r + 1e-6                     # cut at ±2r
    assert abs(float(z.std()) - 0.8796 * r) < 0.005                           # std of N(0, 1) cut at ±2: 0.8796


@pytest.mark.parametrize("kernel", KERNELS)
def test_smooth_of_an_affine_explanation_is_itself_and_radius_0_is_the_explanation(kernel, quadratic_model):
    x, t = _x(), torch.tensor([0, 1, 0])
    explain = lambda inp, target: quadratic_model.grad(inp, target)  # noqa: E731
    torch.testing.assert_close(smooth(explain, kernel, 0.2, 4000)(x, t), explain(x, t), atol=0.15, rtol=0.05)
    torch.testing.assert_close(smooth(explain, kernel, 0.0, 3)(x, t), explain(x, t))
    sq = smooth(lambda v: v ** 2, kernel, 0.3, 20_000)(x)                     # E[(x + z)²] = x² + Var z
    var = {"gaussian": 0.09, "uniform": 0.03, "truncnorm": 0.09 * 0.8796 ** 2}[kernel]
    torch.testing.assert_close(sq - x ** 2, torch.full_like(x, var), atol=0.01, rtol=0)


def test_smoothgrad_is_a_function_of_its_input_common_random_numbers():
    model = TinyCNN().eval()
    x = _x(5, shape=(1, 8, 8))
    sg = smooth(explainer(model, "grad"), "uniform", 0.2, 6, seed=3)
    a = sg(x)
    perm = torch.tensor([4, 2, 0, 1, 3])
    torch.testing.assert_close(sg(x[perm]), a[perm], rtol=1e-5, atol=1e-7)   # another batch position, same answer
    torch.testing.assert_close(sg(x[3:4]), a[3:4], rtol=1e-5, atol=1e-7)
    # so max-sensitivity at radius 0 is 0: no Monte Carlo noise floor
    assert float(sensitivity_max(sg, x, 0.0, 3).max()) < 1e-5


def test_sensitivity_equals_captum_on_the_same_samples(quadratic_model):
    from captum.metrics import sensitivity_max as captum_sens

    from helpers.infidelity import generator

    x, t = _x(4), torch.tensor([0, 1, 1, 0])
    explain = lambda inp, target: quadratic_model.grad(inp, target) ** 2  # noqa: E731
    r, n, seed = 0.1, 9, 3
    z = torch.rand((n,) + x.shape[1:], generator=generator(torch.device("cpu"), seed, 0)) * 2 * r - r
    ours = sensitivity_max(explain, x, r, n, seed=seed, target=t)

    def captum_explain(inp, target):
        return (explain(inp[0], target),) if isinstance(inp, tuple) else explain(inp, target)

    theirs = captum_sens(captum_explain, x, perturb_func=lambda inputs, radius: inputs + z.repeat(4, 1, 1, 1),
                         perturb_radius=r, n_perturb_samples=n, target=t, max_examples_per_batch=None)
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-5, atol=1e-6)


def test_sensitivity_forms_closed_form():
    x = _x(3)
    ident = lambda inp: inp.clone()  # noqa: E731
    ab = sensitivity_max(ident, x, 0.1, 50, form="absolute")
    assert bool((ab <= 0.4 + 1e-6).all()) and bool((ab > 0.16).all())
    torch.testing.assert_close(sensitivity_max(ident, x, 0.1, 50), ab / x.flatten(1).norm(dim=1))
    torch.testing.assert_close(sensitivity_max(ident, x, 0.1, 50, form="lipschitz"), torch.ones(3))
    assert float(sensitivity_max(lambda v: torch.ones_like(v), x, 0.5, 10).max()) == 0.0


def test_choose_radius_returns_one_of_the_radii(quadratic_model):
    x, t = _x(), torch.tensor([0, 1, 0])
    explain = lambda inp, target: quadratic_model.grad(inp, target)  # noqa: E731
    best, scores = choose_radius(quadratic_model, x, explain, NoisyBaseline(0.2), [0.0, 0.1, 1.0], target=t,
                                 n_smooth=8, n_samples=20)
    assert best in (0.0, 0.1, 1.0) and set(scores) == {0.0, 0.1, 1.0}


def test_rank_correlation_and_randomized_models(linear_model):
    a = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rank_correlation(a, 2 * a + 1), torch.ones(3))
    torch.testing.assert_close(rank_correlation(a, -a), -torch.ones(3))
    layers = randomized_models(linear_model, seed=0)
    assert [name for name, _ in layers] == ["linear"]
    w0 = linear_model.linear.weight.detach().clone()
    assert not torch.equal(layers[0][1].linear.weight, w0)
    torch.testing.assert_close(linear_model.linear.weight.detach(), w0)


def test_explanation_suite_units_and_the_authors_product_before_smoothing():
    from helpers.attribution import attribute

    model, x = TinyCNN().eval(), _x(2, shape=(1, 8, 8))
    t = model(x).argmax(1)
    suite = explanation_suite(model, Square(sizes=(2,)), n_sg=3, ig_steps=4, n_opt=20, sg_radius=0.2)
    assert tuple(suite) == TABLE1
    torch.testing.assert_close(suite["IG"](x, t), attribute(model, x, t, method="ig", baseline="zero", n_steps=4))
    torch.testing.assert_close(suite["Grad"](x, t), attribute(model, x, t, method="grad") * x)
    # SG in global units averages Grad(x + z) ⊙ (x + z), the product taken at each noisy copy
    grad_times_input = lambda v, tt: attribute(model, v, tt, method="grad") * v  # noqa: E731
    ref = smooth(grad_times_input, "uniform", 0.2, 3, seed=0)(x, t)
    torch.testing.assert_close(suite["Grad-SG"](x, t), ref)
    local = explanation_suite(model, NoisyBaseline(0.2), n_sg=2, ig_steps=4, n_opt=20)
    torch.testing.assert_close(local["Grad"](x, t), attribute(model, x, t, method="grad"))
    scores = score_explanations(model, x, {"Grad": local["Grad"]}, NoisyBaseline(0.2), n_samples=30, n_sens=2)
    assert scores["infidelity"]["Grad"].shape == (2,) and scores["delta_f2"].shape == (2,)


def test_bad_input_names_the_problem():
    x = _x(2)
    with pytest.raises(ValueError, match="n_samples"):
        sensitivity_max(lambda v: v, x, 0.1, n_samples=0)
    with pytest.raises(ValueError, match="radius"):
        sensitivity_max(lambda v: v, x, -0.1, n_samples=3)
    with pytest.raises(ValueError, match="radius"):
        smooth(lambda v: v, "gaussian", -1.0, 3)
    with pytest.raises(ValueError, match="kernel"):
        smooth(lambda v: v, "laplace", 0.1, 3)
    with pytest.raises(ValueError, match="explain must return"):
        sensitivity_max(lambda v: v[:, :, :2], x, 0.1, 2)


def test_global_units_multiply_the_gradient_by_the_input():
    model, x = TinyCNN().eval(), _x(3, shape=(1, 8, 8))
    t = model(x).argmax(1)
    native = explainer(model, "grad", units="native")(x, t)
    torch.testing.assert_close(explainer(model, "grad", units="global")(x, t), native * x)


def test_sweep_smooths_every_positive_radius():
    from helpers.smoothing import smoothing_sweep

    model, x = TinyCNN().eval(), _x(3, shape=(1, 8, 8))
    rows = smoothing_sweep(model, x, explainer(model, "grad"), {"NB": NoisyBaseline(0.2)}, [0.0, 0.3], ("uniform",),
                           n_smooth=8, n_samples=20)
    inf = {r["radius"]: r["infidelity"] for r in rows}
    assert inf[0.3] != inf[0.0]


def test_sweep_multiplies_by_the_input_for_a_global_perturbation():
    """Radius 0 under Square: the sweep's infidelity is that of Grad x (x - x0), on the sweep's perturbations."""
    from helpers.infidelity import infidelity
    from helpers.smoothing import smoothing_sweep

    model, x, p = TinyCNN().eval(), _x(3, shape=(1, 8, 8)), Square(sizes=(1, 2), baseline=0.2)
    t = model(x).argmax(1)
    rows = smoothing_sweep(model, x, explainer(model, "grad"), {"sq": p}, [0.0], ("uniform",), n_samples=20, seed=0)
    ref = infidelity(model, x, explainer(model, "grad")(x, t) * (x - 0.2), p, t, n_samples=20, normalize=True, seed=1)
    assert rows[0]["infidelity"] == pytest.approx(float(ref.mean()), rel=1e-5)


def test_smoothgrad_noise_follows_its_seed():
    model, x = TinyCNN().eval(), _x(2, shape=(1, 8, 8))
    a, b, c = (smooth(explainer(model, "grad"), "gaussian", 0.2, 4, seed=s)(x) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_score_explanations_limits_equal_separate_calls():
    """An explanation limited to the first m inputs scores exactly as a call on x[:m] (common random numbers)."""
    from helpers.sanity import score_explanations

    model, x = TinyCNN().eval(), _x(5, shape=(1, 8, 8))
    suite = {"Grad": explainer(model, "grad"), "IG": explainer(model, "ig", n_steps=4)}
    kw = dict(n_samples=40, n_sens=2, seed=3)
    lim = score_explanations(model, x, suite, NoisyBaseline(0.2), limits={"IG": 2}, **kw)
    full = score_explanations(model, x, suite, NoisyBaseline(0.2), **kw)
    head = score_explanations(model, x[:2], suite, NoisyBaseline(0.2), **kw)
    assert lim["infidelity"]["IG"].shape == (2,) and lim["sensitivity"]["IG"].shape == (2,)
    torch.testing.assert_close(lim["infidelity"]["IG"], head["infidelity"]["IG"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(lim["infidelity"]["Grad"], full["infidelity"]["Grad"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(lim["delta_f2"], full["delta_f2"], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="limits"):
        score_explanations(model, x, suite, NoisyBaseline(0.2), limits={"IG": 0}, **kw)


def test_score_explanations_sensitivity_images_per_explanation():
    from helpers.sanity import score_explanations

    model, x = TinyCNN().eval(), _x(4, shape=(1, 8, 8))
    suite = {"Grad": explainer(model, "grad"), "GBP": explainer(model, "gbp")}
    sc = score_explanations(model, x, suite, NoisyBaseline(0.2), n_samples=20, n_sens=2, n_sens_images={"GBP": 1})
    assert sc["sensitivity"]["Grad"].shape == (4,) and sc["sensitivity"]["GBP"].shape == (1,)
    sc = score_explanations(model, x, suite, NoisyBaseline(0.2), n_samples=20, n_sens=2, n_sens_images={"GBP": 0})
    assert "GBP" not in sc["sensitivity"]


def test_smooth_draws_independent_noise_for_every_channel():
    """On a 3-channel input the noise has the input's shape: smoothing the identity gives x + mean_s z_s, within the
    radius of x, and different in each channel."""
    identity = smooth(lambda y, target=None: y.clone(), kernel="uniform", radius=0.3, n_samples=5, seed=1)
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = identity(x, torch.zeros(2, dtype=torch.long))
    assert out.shape == x.shape
    offset = out - x
    assert float(offset.abs().max()) <= 0.3
    torch.testing.assert_close(offset[0], offset[1])                     # common random numbers across inputs
    assert not torch.allclose(offset[0, 0], offset[0, 1])                # but not across channels
