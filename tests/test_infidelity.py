"""helpers.perturbations and helpers.infidelity: sampling, closed forms, captum cross-checks, CRN, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import QuadraticModel
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from helpers import fidelity as F
from helpers.infidelity import beta_rescale, infidelity, infidelity_from_samples, to_units
from helpers.perturbations import (
    ConstantBaseline,
    Fixed,
    Gaussian,
    NoisyBaseline,
    ShapSubset,
    Square,
    _clipped_normal_moments,
    shapley_size_probs,
    square_masks,
)

LOCAL = [Gaussian(0.1), NoisyBaseline(0.2), NoisyBaseline(0.3, baseline=0.5, input_range=None)]
GLOBAL = [ConstantBaseline(0.0), ConstantBaseline(0.3), Square(sizes=(1, 2, 3)), ShapSubset(), ShapSubset(0.1)]


def _x(n=5, seed=0, shape=(1, 4, 4)):
    return torch.rand((n,) + shape, generator=torch.Generator().manual_seed(seed))



class Net(nn.Module):
    """A small non-MNIST classifier (3 x 6 x 6 or N x d inputs, smooth non-linearity)."""

    def __init__(self, d=108, c=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, c))

    def forward(self, x):
        return self.body(x)


def test_public_names_of_design_md():
    for name in ["NoisyBaseline", "Square", "Gaussian", "ConstantBaseline", "ShapSubset", "infidelity",
                 "sensitivity_max", "optimal_explanation", "smooth", "to_units", "choose_radius", "beta_rescale"]:
        assert hasattr(F, name), name
    assert all(p.units == "local" for p in LOCAL) and all(p.units == "global" for p in GLOBAL)


# ---------------------------------------------------------------------------------------------- perturbations


@pytest.mark.parametrize("p", LOCAL + GLOBAL, ids=repr)
def test_sample_shape_seed_and_common_random_numbers(p):
    x = _x(3)
    a = p.sample(x, 7, torch.Generator().manual_seed(1))
    assert a.shape == (3, 7, 1, 4, 4)
    torch.testing.assert_close(a, p.sample(x, 7, torch.Generator().manual_seed(1)))
    # the noise (or mask) does not depend on the input's position: input 2 alone gets the same perturbation
    torch.testing.assert_close(p.sample(x[2:], 7, torch.Generator().manual_seed(1))[0], a[2])


@pytest.mark.parametrize("shape", [(7,), (2, 3, 5), (3, 5)], ids=["Nxd", "NxCxHxW", "NxCxL"])
def test_perturbations_work_on_any_shape_and_square_refuses_non_images(shape):
    x = _x(2, shape=shape)
    for p in (Gaussian(0.1), NoisyBaseline(0.2), ConstantBaseline(0.2), ShapSubset(0.1)):
        assert p.sample(x, 4, torch.Generator().manual_seed(0)).shape == (2, 4) + shape
    if len(shape) == 3:
        assert Square(sizes=(1, 2)).sample(x, 4).shape == (2, 4) + shape
    else:
        with pytest.raises(ValueError, match="Square needs images"):
            Square().sample(x, 4)


def test_constant_baseline_replaces_the_input_by_its_value():
    x = _x(2)
    i = ConstantBaseline(0.3).sample(x, 2)
    torch.testing.assert_close(x.unsqueeze(1) - i, torch.full_like(i, 0.3))        # x - I = x0, not 0
    b = torch.rand(1, 4, 4)
    torch.testing.assert_close(x.unsqueeze(1) - ConstantBaseline(b).sample(x, 1), b.expand(2, 1, 1, 4, 4))


def test_noisy_baseline_is_the_clipped_noise_around_its_baseline():
    x = _x(2)
    i = NoisyBaseline(0.2, baseline=0.4).sample(x, 500, torch.Generator().manual_seed(0))
    z = x.unsqueeze(1) - i
    assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0
    assert abs(float(z.mean()) - 0.4) < 0.01 and abs(float(z.std()) - 0.2) < 0.01
    wide = NoisyBaseline(1.0, input_range=(-3.0, 3.0)).sample(x, 200, torch.Generator().manual_seed(0))
    assert float((x.unsqueeze(1) - wide).min()) < -1.0                                   # the range is a parameter


@pytest.mark.parametrize("base, sigma, lo, hi", [(0.0, 0.2, 0.0, 1.0), (0.5, 0.3, 0.0, 1.0), (0.9, 1.0, -0.5, 2.0),
                                                  (0.3, 0.2, 0.0, 1.0)])  # the last: asymmetric cut with sigma != 1
def test_clipped_normal_moments_match_monte_carlo(base, sigma, lo, hi):
    z = (base + sigma * torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    z = z.clamp(lo, hi)
    mu, var = _clipped_normal_moments(torch.tensor([base], dtype=torch.float64), sigma, lo, hi)
    assert abs(float(mu) - float(z.mean())) < 3e-3 and abs(float(var) - float(z.var())) < 3e-3


def test_square_has_all_5605_masks_and_samples_them_uniformly():
    m = square_masks((1, 28, 28))
    assert m.shape == (5605, 1, 28, 28)
    x = torch.rand(1, 1, 28, 28)
    sizes = Square().masks(x, 5000, torch.Generator().manual_seed(0))[0].flatten(2).sum(-1).sqrt().round()[0]
    assert int(sizes.max()) == 10                                             # the 10 x 10 squares are visited
    assert sorted(sizes[:20].tolist()) != sizes[:20].tolist()                 # not walked in order
    expected = torch.tensor([(29 - s) ** 2 for s in range(1, 11)], dtype=torch.float64) / 5605
    freq = torch.bincount(sizes.long(), minlength=11)[1:].double() / 5000
    assert float((freq - expected).abs().max()) < 0.02


def test_shap_subset_sizes_follow_the_shapley_kernel():
    d = 16
    m = ShapSubset().masks(_x(1), 40_000, torch.Generator().manual_seed(0))[0]
    z = m.flatten(2).sum(-1)[0].long()
    freq = torch.bincount(z, minlength=d + 1).double() / z.numel()
    assert freq[0] == 0 and freq[d] == 0
    # P(z) ∝ C(d, z) π(z) with π(z) = (d - 1) / (C(d, z) z (d - z))
    p = torch.tensor([1.0 / (k * (d - k)) for k in range(1, d)], dtype=torch.float64)
    torch.testing.assert_close(freq[1:d], p / p.sum(), atol=4e-3, rtol=0)
    torch.testing.assert_close(shapley_size_probs(d), p / p.sum())


# ------------------------------------------------------------------------------------------------ infidelity


@pytest.mark.parametrize("p", LOCAL + GLOBAL, ids=repr)
def test_linear_model_with_its_weights_has_zero_infidelity(p, linear_model):
    x, t = _x(), torch.tensor([0, 1, 2, 0, 1])
    phi = linear_model.linear.weight.detach()[t].reshape(x.shape)
    phi = to_units(phi, x, p, "global") if p.units == "global" else phi
    for normalize in (False, True):
        assert float(infidelity(linear_model, x, phi, p, t, n_samples=40, normalize=normalize).abs().max()) < 1e-9


def test_sample_weights_matter():
    model = Net(d=16, c=2).eval()
    x, t = _x(2), torch.tensor([0, 1])
    g = torch.Generator().manual_seed(0)
    i, phi = torch.randn(2, 30, 1, 4, 4, generator=g) * 0.3, torch.randn(2, 1, 4, 4, generator=g)
    w = torch.rand(2, 30, generator=g) ** 4
    with torch.no_grad():
        fp = model((x.unsqueeze(1) - i).flatten(0, 1)).view(2, 30, 2)
        diff = model(x)[[0, 1], t].unsqueeze(1) - torch.stack([fp[0, :, 0], fp[1, :, 1]])
    dot = (i * phi.unsqueeze(1)).flatten(2).sum(-1)
    ref = ((w * (dot - diff) ** 2).sum(1) / w.sum(1)).double()
    for normalize in (False, True):
        got = infidelity(model, x, phi, Fixed(i, weights=w), t, n_samples=30, normalize=normalize).double()
        beta = (w * dot * diff).sum(1) / (w * dot * dot).sum(1)
        want = ((w * (beta[:, None] * dot - diff) ** 2).sum(1) / w.sum(1)).double() if normalize else ref
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(infidelity_from_samples(dot, diff, w, normalize).double(), want, rtol=1e-4, atol=1e-7)
        assert not torch.allclose(got.float(), infidelity(model, x, phi, Fixed(i), t, n_samples=30, normalize=normalize))
    torch.testing.assert_close(beta_rescale(dot, diff, w), beta)


def _captum(model, x, attr, i, w_mult, target, normalize):
    from captum.metrics import infidelity as captum_infidelity

    n, s = i.shape[:2]

    def perturb(inputs):
        return w_mult.reshape((n * s,) + x.shape[1:]), (x.unsqueeze(1) - i).reshape((n * s,) + x.shape[1:])

    return captum_infidelity(model, perturb, x, attr, target=target, n_perturb_samples=s, normalize=normalize,
                             max_examples_per_batch=None)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("p", [NoisyBaseline(0.3, baseline=0.4), Gaussian(0.3), Square(sizes=(1, 2, 4), baseline=0.5),
                               ShapSubset(baseline=0.3), ConstantBaseline(0.6)], ids=repr)
def test_equals_captum_on_a_non_mnist_model_with_a_non_zero_baseline(p, normalize):
    model, x = Net().eval(), _x(4, shape=(3, 6, 6))
    t = torch.tensor([0, 3, 1, 2])
    attr = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    d = p.draw(x, 24, torch.Generator().manual_seed(4))
    i, w = d.I.expand((4,) + d.I.shape[1:]), d.W.expand((4,) + d.W.shape[1:])
    ours = infidelity(model, x, attr, Fixed(i, w, units=p.units), t, n_samples=24, normalize=normalize)
    theirs = _captum(model, x, attr, i, w, t, normalize).float()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6 * max(1.0, float(theirs.abs().max())))


def test_a_captum_style_perturb_func_and_a_duck_typed_perturbation_are_accepted():
    from captum.metrics import infidelity as captum_infidelity

    model, x, t = Net(d=7, c=3).eval(), _x(3, shape=(7,)), torch.tensor([0, 1, 2])
    attr = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))

    def perturb_func(inputs):                                 # deterministic, so both libraries see the same I
        i = 0.1 * torch.sin(3 * inputs) + 0.05
        return i, inputs - i

    ours = infidelity(model, x, attr, perturb_func, t, n_samples=3)
    theirs = captum_infidelity(model, perturb_func, x, attr, target=t, n_perturb_samples=3)
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-5, atol=1e-7)

    def noisy(inputs):
        i = 0.1 * torch.randn_like(inputs)
        return i, inputs - i

    a, b = (infidelity(model, x, attr, noisy, t, n_samples=20, seed=3) for _ in range(2))
    torch.testing.assert_close(a, b)                          # reseeded from the seed: reproducible

    class Mine:                                               # not a subclass: units + sample is enough
        units = "global"
        baseline = 0.2

        def sample(self, v, n, generator=None):
            m = (torch.rand((1, n) + v.shape[1:], generator=generator) < 0.5).float()
            return m * (v - 0.2).unsqueeze(1)

    mine = infidelity(model, x, attr * (x - 0.2), Mine(), t, n_samples=50, seed=1)
    assert mine.shape == (3,) and torch.isfinite(mine).all()


def test_estimate_does_not_depend_on_batch_position_or_chunking(monkeypatch):
    model = Net().eval()
    x = _x(6, shape=(3, 6, 6))
    attr = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    for p in (NoisyBaseline(0.2), ShapSubset(0.1), Square(sizes=(1, 2))):
        full = infidelity(model, x, attr, p, n_samples=300, seed=2)
        perm = torch.tensor([5, 3, 1, 0, 2, 4])
        torch.testing.assert_close(infidelity(model, x[perm], attr[perm], p, n_samples=300, seed=2), full[perm])
        monkeypatch.setenv("HELPERS_MEMORY_BUDGET_MB", "0.2")               # tiny chunks
        torch.testing.assert_close(infidelity(model, x, attr, p, n_samples=300, seed=2), full)
        monkeypatch.delenv("HELPERS_MEMORY_BUDGET_MB")


def test_dict_of_explanations_equals_separate_calls(quadratic_model):
    x, t = _x(4), torch.tensor([0, 1, 1, 0])
    g = torch.Generator().manual_seed(0)
    attrs = {"a": torch.randn(x.shape, generator=g), "b": torch.randn(x.shape, generator=g)}
    both = infidelity(quadratic_model, x, attrs, NoisyBaseline(0.2), t, n_samples=30, seed=5)
    for k, v in attrs.items():
        torch.testing.assert_close(both[k], infidelity(quadratic_model, x, v, NoisyBaseline(0.2), t, 30, seed=5))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100.0), sign=st.sampled_from([-1.0, 1.0]),
       sigma=st.floats(0.05, 1.0))
def test_properties_nonnegative_and_scale_invariant_when_normalized(seed, scale, sign, sigma):
    model, x, t = QuadraticModel(seed=seed % 7).eval(), _x(3, seed), torch.tensor([0, 1, 0])
    attr = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    raw = infidelity(model, x, attr, Gaussian(sigma), t, n_samples=20, seed=seed)
    a = infidelity(model, x, attr, Gaussian(sigma), t, n_samples=20, normalize=True, seed=seed)
    b = infidelity(model, x, attr * (sign * scale), Gaussian(sigma), t, n_samples=20, normalize=True, seed=seed)
    assert bool((raw >= 0).all()) and bool((a >= -1e-6).all())
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert bool((a <= raw + 1e-4 * (1 + raw)).all())


def test_ig_is_optimal_for_the_constant_baseline(quadratic_model):
    """Prop 2.1 in closed form: IG of a quadratic is the gradient at the midpoint times (x - x0)."""
    x, t, x0 = _x(3), torch.tensor([0, 1, 0]), 0.25
    ig = quadratic_model.grad((x + x0) / 2, t) * (x - x0)
    assert float(infidelity(quadratic_model, x, ig, ConstantBaseline(x0), t, n_samples=1).max()) < 1e-8
    assert float(infidelity(quadratic_model, x, ig, ConstantBaseline(0.0), t, n_samples=1).max()) > 1e-4


def test_to_units_round_trip():
    x = _x(2)
    x[0, 0, 0, 0] = 0.0
    phi = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(to_units(phi, x, Square(sizes=(1,), baseline=0.1), "global"), phi * (x - 0.1))
    back = to_units(phi * x, x, 0.0, "local")
    assert back[0, 0, 0, 0] == 0
    torch.testing.assert_close(back[x != 0], phi[x != 0])


def test_bad_input_names_the_problem(linear_model):
    x, a = _x(2), torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="attributions"):
        infidelity(linear_model, x, torch.zeros(2, 1, 3, 3), Gaussian(0.1), n_samples=3)
    with pytest.raises(ValueError, match="n_samples"):
        infidelity(linear_model, x, a, Gaussian(0.1), n_samples=0)
    with pytest.raises(ValueError, match="target"):
        infidelity(linear_model, x, a, Gaussian(0.1), target=torch.tensor([0, 3]), n_samples=3)
    with pytest.raises(ValueError, match="sigma"):
        NoisyBaseline(0.0)
    with pytest.raises(ValueError, match="must fit in the image"):
        infidelity(linear_model, x, a, Square(sizes=(2, 5)), n_samples=3)
    with pytest.raises(TypeError, match="perturbation"):
        infidelity(linear_model, x, a, "gaussian", n_samples=3)
    with pytest.raises(ValueError, match="input_range"):
        NoisyBaseline(0.2, input_range=(1.0, 0.0))
    assert math.isfinite(float(infidelity(linear_model, x, a, ShapSubset(), n_samples=3).sum()))


def test_additional_forward_args_follow_their_inputs():
    model, x = _MaskedNet(d=7).eval(), _x(4, shape=(7,))
    mask = (torch.rand(4, 7, generator=torch.Generator().manual_seed(1)) > 0.3).float()
    attr = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    got = infidelity(model, x, attr, Gaussian(0.1), n_samples=40, seed=3, additional_forward_args=(mask,))
    for k in range(4):                                    # one input at a time with its own mask fixed in the model
        fixed = type("Fixed1", (nn.Module,), {"forward": lambda self, v, m=mask[k:k + 1]: model(v, m.expand(len(v), -1))})()
        torch.testing.assert_close(got[k:k + 1], infidelity(fixed.eval(), x[k:k + 1], attr[k:k + 1], Gaussian(0.1),
                                                            n_samples=40, seed=3))


# ------------------------------------------------------------------------------------------------ mutation tests


def test_a_perturb_func_is_reseeded_from_the_generator():
    """FromFunction draws the global RNG's seed from the generator: same generator, same I; another, another I."""
    from helpers.perturbations import FromFunction

    p, x = FromFunction(lambda v: (0.1 * torch.randn_like(v), None)), _x(2)
    a, b, c = (p.draw(x, 5, torch.Generator().manual_seed(s)).I for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_fixed_draw_replays_the_first_samples():
    big = torch.rand(2, 6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(Fixed(big).draw(_x(2), 3).I, big[:, :3])


class _MaskedNet(nn.Module):
    """``model(x, mask)``: a :class:`Net` of the masked input (an extra forward argument with N rows)."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.net = Net(d=d, c=3)

    def forward(self, x, mask):
        return self.net(x * mask)


def test_extra_forward_args_follow_their_rows_in_small_chunks(monkeypatch):
    x = _x(5)
    mask = (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) > 0.3).float()
    attr = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    full = infidelity(_MaskedNet().eval(), x, attr, NoisyBaseline(0.2), n_samples=40, seed=3,
                      additional_forward_args=(mask,))
    monkeypatch.setenv("HELPERS_MEMORY_BUDGET_MB", "0.0001")                    # one row per chunk
    torch.testing.assert_close(infidelity(_MaskedNet().eval(), x, attr, NoisyBaseline(0.2), n_samples=40, seed=3,
                                          additional_forward_args=(mask,)), full)


def test_a_global_sample_only_perturbation_defaults_to_the_zero_baseline():
    """W = I / (x - x0) with x0 = 0 when the object has no ``baseline``."""
    from helpers.perturbations import as_perturbation

    class Half:
        units = "global"

        def sample(self, x, n, generator=None):
            return 0.5 * x.unsqueeze(1).expand((x.shape[0], n) + tuple(x.shape[1:]))

    x = _x(2) + 0.1
    d = as_perturbation(Half()).draw(x, 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(d.W, torch.full_like(d.I, 0.5))


def test_local_units_are_zero_where_the_input_equals_the_baseline():
    x = _x(2)
    x[0, 0, 0, 0] = 0.0
    phi = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    local = to_units(phi, x, 0.0, "local")
    assert local[0, 0, 0, 0] == 0
    torch.testing.assert_close(local[x != 0], (phi / x)[x != 0])


def test_a_global_sample_only_perturbation_divides_by_x_minus_its_baseline():
    """With a non-zero ``baseline`` the masks are recovered as W = I / (x - x0) (x - x0 varies per pixel)."""
    from helpers.perturbations import as_perturbation

    x = 0.5 + 0.5 * _x(2)                                   # x - 0.25 in [0.25, 0.75]: never zero
    masks = (torch.rand((2, 3) + tuple(x.shape[1:]), generator=torch.Generator().manual_seed(4)) < 0.3).float()

    class Masked:
        units, baseline = "global", 0.25

        def sample(self, x, n, generator=None):
            return masks[:, :n] * (x - self.baseline).unsqueeze(1)

    d = as_perturbation(Masked()).draw(x, 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(d.W, masks)
