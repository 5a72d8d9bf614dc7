"""Bring your own model: every public routine of ``helpers`` on models and data that are not our MNIST ones.

The models (tests/byom_models.py): a residual CNN with BatchNorm and in-place ReLUs on normalised 3-channel images,
a tabular MLP on standardised breast-cancer features, a LeNet that flattens with ``.view``, an ``nn.Softmax`` head,
a single binary logit, a two-input model ``model(x1, x2)`` and a ``model(x, mask)`` with an extra forward argument.
Each call either gives the right number (a property that a wrong answer fails: IG completeness with a non-zero
baseline, DeepSHAP against ``shap.DeepExplainer``, infidelity against ``captum.metrics.infidelity``, values that do
not depend on an input's position in the batch, inputs that are not clamped to [0, 1]) or refuses with an error
that names the argument.
"""

from __future__ import annotations

import copy
import importlib
import math
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import byom_models as B  # noqa: E402

from helpers import metrics as M  # noqa: E402
from helpers.abc import abc_confidence  # noqa: E402
from helpers.attribution import attribute  # noqa: E402
from helpers.calibration import CombinedConfidence, PlattScaling, TemperatureScaling  # noqa: E402
from helpers.perturbations import ConstantBaseline, Fixed, Gaussian, NoisyBaseline, ShapSubset, Square  # noqa: E402


def _public(module: str, name: str):
    """``helpers.<module>.<name>`` as DESIGN.md places it (``helpers.fidelity`` re-exports it meanwhile)."""
    try:
        return getattr(importlib.import_module(f"helpers.{module}"), name)
    except (ImportError, AttributeError):
        return getattr(importlib.import_module("helpers.fidelity"), name)


infidelity = _public("infidelity", "infidelity")
sensitivity_max = _public("sensitivity", "sensitivity_max")
optimal_explanation = _public("optimal", "optimal_explanation")
smooth = _public("smoothing", "smooth")

torch.set_num_threads(1)
REFUSED = (ValueError, TypeError, NotImplementedError)

#: tests (regular expressions on the test id) that fail on a bug its owner has been asked to fix
#: (/work/requests/<OWNER>.md); strict, so a fix turns them into failures until the entry is removed
AWAITING = {
}


@pytest.fixture(autouse=True)
def _awaiting_fix(request):
    for pattern, owner in AWAITING.items():
        if re.search(pattern, request.node.name):
            request.applymarker(pytest.mark.xfail(strict=True, reason=f"awaiting {owner}"))


# ---------------------------------------------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def resnet():
    return B.resnet_tiny()


@pytest.fixture(scope="module")
def mlp():
    model, (xtr, ytr, xte, yte) = B.tabular_mlp()
    return model, xte[:24], xtr


@pytest.fixture(scope="module")
def lenet():
    return B.lenet()


@pytest.fixture(scope="module")
def models(resnet, mlp, lenet):
    """name -> (model, x, references K x ...) for the single-input classifiers."""
    g = torch.Generator().manual_seed(5)
    return {
        "resnet": (resnet[0], resnet[1], torch.randn(4, *resnet[1].shape[1:], generator=g)),
        "mlp": (mlp[0], mlp[1], mlp[2][:4]),
        "lenet": (lenet[0], lenet[1], torch.rand(4, *lenet[1].shape[1:], generator=g)),
    }


def _logit(model, x, t, *args):
    with torch.no_grad():
        return model(x, *args).gather(1, t.view(-1, 1)).squeeze(1)


def _pred(model, x, *args):
    with torch.no_grad():
        return model(x, *args).argmax(1)


def _close(a, b, rtol=1e-4, atol=1e-5):
    torch.testing.assert_close(torch.as_tensor(a).double(), torch.as_tensor(b).double(), rtol=rtol, atol=atol)


def _right_or_refused(call, check, match):
    """``call()`` either passes ``check`` or raises an error whose message matches ``match`` (names the argument)."""
    try:
        out = call()
    except REFUSED as err:
        assert re.search(match, str(err), re.I), f"refused without naming {match!r}: {err}"
        return None
    check(out)
    return out


# ---------------------------------------------------------------------------------------------------------------- attribute

METHOD_OPTIONS = {      # id -> (method, options)
    "grad": ("grad", {}),
    "ig": ("ig", dict(n_steps=16)),
    "ig-uniform_baseline": ("ig", dict(n_steps=8, baseline="uniform")),
    "ig-gaussian_baseline": ("ig", dict(n_steps=8, baseline="gaussian")),
    "smoothgrad": ("smoothgrad", dict(n_samples=8)),
    "gbp": ("gbp", {}),
    "expected_gradients": ("expected_gradients", dict(n_steps=4)),
    "expected_gradients-random_points": ("expected_gradients", {}),
    "deepshap": ("deepshap", {}),
}


@pytest.mark.parametrize("name", ["resnet", "mlp", "lenet"])
@pytest.mark.parametrize("variant", list(METHOD_OPTIONS))
def test_attribute_every_method_is_independent_of_batch_position_and_chunking(models, name, variant):
    """Random choices (noise, random baselines, EG's points) are common random numbers: the same for every input."""
    model, x, refs = models[name]
    method, opts = METHOD_OPTIONS[variant][0], dict(METHOD_OPTIONS[variant][1])
    if method in ("expected_gradients", "deepshap"):
        opts["references"] = refs
    if opts.get("baseline") in ("uniform", "gaussian"):
        opts["input_range"] = (float(x.min()), float(x.max()))
    a = attribute(model, x, method=method, **opts)
    assert a.shape == x.shape and a.dtype == x.dtype and bool(torch.isfinite(a).all())
    assert a.abs().sum() > 0
    _close(attribute(model, x[1:4], method=method, **opts), a[1:4])            # the other inputs do not matter
    _close(attribute(model, x.flip(0), method=method, **opts).flip(0), a)      # nor an input's position
    _close(attribute(model, x, method=method, chunk_size=2, **opts), a)        # nor the chunk size


@pytest.mark.parametrize("name", ["resnet", "mlp", "lenet"])
def test_ig_is_complete_from_a_number_and_a_per_input_baseline(models, name):
    model, x, _ = models[name]
    t = _pred(model, x)
    per_input = torch.randn(x.shape, generator=torch.Generator().manual_seed(3)) * 0.5
    for baseline in (0.5, per_input):
        b = torch.full_like(x, baseline) if isinstance(baseline, float) else baseline
        a = attribute(model, x, t, method="ig", baseline=baseline, n_steps=256)
        gap = _logit(model, x, t) - _logit(model, b, t)
        _close(a.flatten(1).sum(1), gap, rtol=2e-2, atol=2e-2 * gap.abs().mean().item())
    _close(attribute(model, x, t, method="ig", baseline=0.5, n_steps=8),
           attribute(model, x, t, method="ig", baseline=torch.full_like(x, 0.5), n_steps=8))


@pytest.mark.parametrize("name", ["resnet", "lenet"])
def test_ig_matches_captum(models, name):
    from captum.attr import IntegratedGradients

    model, x, _ = models[name]
    t = _pred(model, x)
    b = torch.randn(x.shape, generator=torch.Generator().manual_seed(4)) * 0.3
    ours = attribute(model, x, t, method="ig", baseline=b, n_steps=20)
    theirs = IntegratedGradients(model).attribute(x, b, target=t, n_steps=20, method="gausslegendre")
    _close(ours, theirs, rtol=1e-3, atol=1e-5)


def _out_of_place(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
    return m


def _shap_values(model, x, refs, t):
    import shap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sv = shap.DeepExplainer(model, refs).shap_values(x, check_additivity=False)
    if isinstance(sv, list):                       # tuple inputs: one array per input, each ... x C
        return [torch.as_tensor(np.asarray(s)) for s in sv]
    sv = torch.as_tensor(np.asarray(sv))           # N x ... x C
    return sv.movedim(-1, 1)[torch.arange(x.shape[0]), t]


@pytest.mark.parametrize("name", ["resnet", "mlp", "lenet"])
def test_deepshap_matches_shap_and_is_additive(models, name):
    """The residual CNN's in-place ReLUs are handled (shap itself gets an out-of-place copy)."""
    model, x, refs = models[name]
    t = _pred(model, x)
    ours = attribute(model, x, t, method="deepshap", references=refs)
    gap = _logit(model, x, t) - torch.stack([_logit(model, r.expand_as(x), t) for r in refs]).mean(0)
    _close(ours.flatten(1).sum(1), gap, rtol=1e-3, atol=1e-4)
    _close(ours, _shap_values(_out_of_place(model), x, refs, t), rtol=1e-3, atol=1e-5)


def test_deepshap_softmax_head_matches_shap_and_warns_when_not_additive(mlp):
    """shap treats ``nn.Softmax`` as an element-wise non-linearity: match it, and warn where additivity breaks."""
    model, (xtr, ytr, xte, _) = B.softmax_mlp()
    x, refs = xte[:6], xtr[:4]
    t = _pred(model, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ours = attribute(model, x, t, method="deepshap", references=refs)
        except REFUSED as err:
            assert re.search("softmax", str(err), re.I), err
            return
    _close(ours, _shap_values(model, x, refs, t), rtol=1e-3, atol=1e-6)
    gap = _logit(model, x, t) - torch.stack([_logit(model, r.expand_as(x), t) for r in refs]).mean(0)
    if (ours.flatten(1).sum(1) - gap).abs().max() > 1e-3:
        assert any("additiv" in str(w.message).lower() for w in caught), "additivity broke without a warning"


def test_default_references_of_non_mnist_inputs_refuse_at_once(models, monkeypatch):
    import helpers.data

    def no_download(*a, **k):
        raise AssertionError("MNIST was loaded for a non-MNIST input")

    monkeypatch.setattr(helpers.data, "load_mnist", no_download)
    model, x, _ = models["mlp"]
    for method in ("expected_gradients", "deepshap"):
        with pytest.raises(ValueError, match="references"):
            attribute(model, x, method=method)


@pytest.mark.parametrize("name", ["uniform", "gaussian", "max_distance"])
def test_random_baselines_respect_the_input_range(models, name):
    make_baseline = _public("baselines", "make_baseline")
    model, x, _ = models["resnet"]
    lo, hi = float(x.min()), float(x.max())
    b = make_baseline(name, x, input_range=(lo, hi))
    assert b.shape == x.shape and b.min() >= lo and b.max() <= hi
    assert b.min() < -0.5 or b.max() > 1.5, "the baseline was squeezed into [0, 1]"
    if name == "gaussian":      # unbounded: noise around x, never clamped
        b = make_baseline(name, x, input_range=None)
        assert (b < lo).any() or (b > hi).any()
    else:
        with pytest.raises(ValueError, match="input_range"):
            make_baseline(name, x, input_range=None)


# ---------------------------------------------------------------------------------------------------------------- several inputs


def test_two_input_model_ig_grad_eg_deepshap(monkeypatch):
    from captum.attr import IntegratedGradients, Saliency

    model, (x1, x2) = B.two_input()
    t = _pred(model, x1, x2)
    b = (torch.full_like(x1, 0.3), torch.full_like(x2, -0.2))
    a1, a2 = attribute(model, (x1, x2), t, method="ig", baseline=b, n_steps=32)
    c1, c2 = IntegratedGradients(model).attribute((x1, x2), b, target=t, n_steps=32, method="gausslegendre")
    _close(a1, c1, rtol=1e-3, atol=1e-5)
    _close(a2, c2, rtol=1e-3, atol=1e-5)
    g1, g2 = attribute(model, (x1, x2), t, method="grad")
    s1, s2 = Saliency(model).attribute((x1, x2), target=t, abs=False)
    _close(g1, s1)
    _close(g2, s2)
    refs = (torch.randn(4, 6, generator=torch.Generator().manual_seed(1)), torch.zeros(4, 4))
    e1, e2 = attribute(model, (x1, x2), t, method="expected_gradients", references=refs, n_steps=64)
    gap = _logit(model, x1, t, x2) - torch.stack([_logit(model, refs[0][k].expand_as(x1), t,
                                                         refs[1][k].expand_as(x2)) for k in range(4)]).mean(0)
    _close(e1.sum(1) + e2.sum(1), gap, rtol=1e-2, atol=1e-3)
    d1, d2 = attribute(model, (x1, x2), t, method="deepshap", references=refs)
    _close(d1.sum(1) + d2.sum(1), gap, rtol=1e-3, atol=1e-4)
    s1, s2 = _shap_values(model, [x1, x2], list(refs), t)
    _close(d1, s1.movedim(-1, 1)[torch.arange(8), t], rtol=1e-3, atol=1e-5)


def test_extra_forward_argument_mask():
    from captum.attr import IntegratedGradients

    model, x, mask = B.masked()
    t = _pred(model, x, mask)
    g = attribute(model, x, t, method="grad", additional_forward_args=(mask,))
    assert (g[:, -2:] == 0).all() and (g[:, :-2] != 0).any()
    a = attribute(model, x, t, method="ig", baseline=0.0, n_steps=32, additional_forward_args=(mask,))
    c = IntegratedGradients(model).attribute(x, 0.0 * x, target=t, n_steps=32, additional_forward_args=(mask,))
    _close(a, c, rtol=1e-3, atol=1e-5)
    d = attribute(model, x, t, method="deepshap", references=torch.zeros(2, 8), additional_forward_args=(mask,))
    _close(d.sum(1), _logit(model, x, t, mask) - _logit(model, torch.zeros_like(x), t, mask), rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------- binary logit


@pytest.fixture(scope="module")
def binary():
    model, (xtr, ytr, xte, yte) = B.binary_logit()
    return model, xte[:16], yte[:16], xtr[:4]


def test_binary_logit_attribute_is_the_logit_or_refused(binary):
    model, x, _, _ = binary
    ones = torch.ones(x.shape[0], dtype=torch.long)

    def check(a):
        with torch.no_grad():
            gap = model(x).squeeze(1) - model(torch.zeros_like(x)).squeeze(1)
        _close(a.sum(1), gap, rtol=2e-2, atol=1e-2)
        _close(attribute(model, x, 0 * ones, method="ig", n_steps=64), -a, rtol=1e-4, atol=1e-5)

    _right_or_refused(lambda: attribute(model, x, ones, method="ig", n_steps=64), check, "output|logit|class")


def test_binary_logit_abc_and_infidelity_or_refused(binary):
    model, x, _, _ = binary

    def check_abc(c):
        assert c.shape == (x.shape[0],) and ((c >= 0) & (c <= 1)).all()

    _right_or_refused(lambda: abc_confidence(model, x, n_samples=16, n_steps=8), check_abc, "output|logit|class")
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))

    def check_inf(v):
        assert v.shape == (x.shape[0],) and (v >= 0).all()

    _right_or_refused(lambda: infidelity(model, x, a, Gaussian(0.1), n_samples=32), check_inf, "output|logit|class")


# ---------------------------------------------------------------------------------------------------------------- ABC


@pytest.mark.parametrize("name", ["resnet", "mlp", "lenet"])
def test_abc_runs_and_is_independent_of_batch_position(models, name):
    model, x, _ = models[name]
    kw = dict(n_samples=24, n_steps=8, baseline="zero", seed=3)
    c = abc_confidence(model, x, **kw)
    assert c.shape == (x.shape[0],) and ((c >= 0) & (c <= 1)).all()
    _close(abc_confidence(model, x[1:4], **kw), c[1:4])
    _close(abc_confidence(model, x.flip(0), **kw).flip(0), c)
    _close(abc_confidence(model, x, chunk_size=7, **kw), c)


@pytest.mark.parametrize("name", ["resnet", "mlp"])
def test_abc_is_the_label_retention_on_its_own_copies(models, name):
    """ABC = fraction of its mutated copies that keep the prediction; a changed feature takes the baseline; each
    feature changes with its inclusion probability."""
    from helpers.abc import mutated_copies

    model, x, _ = models[name]
    x, s = x[:6], 64
    r = abc_confidence(model, x, method="ig", baseline=0.5, n_samples=s, n_steps=8, budget=4.0, return_details=True)
    copies, changed = mutated_copies(x, r.references, r.inclusion, r.seed, 0, s)
    assert torch.equal(changed.reshape(r.masks.shape), r.masks)
    xs = x.unsqueeze(1).expand_as(copies)
    assert (copies[changed] == 0.5).all() and torch.equal(copies[~changed], xs[~changed])
    labels = _pred(model, copies.reshape(-1, *x.shape[1:])).view(6, s)
    assert torch.equal(labels, r.labels) and torch.equal(r.predicted, _pred(model, x))
    _close(r.confidence, (labels == r.predicted.view(-1, 1)).float().mean(1))
    p = r.inclusion.reshape(6, -1)
    per_copy = changed.reshape(6, s, -1).float().sum(2).mean(1)                # features changed per copy
    assert ((per_copy - p.sum(1)).abs() <= 4.5 * ((p * (1 - p)).sum(1) / s).sqrt()).all(), (per_copy, p.sum(1))
    _close(p.sum(1), torch.full((6,), 4.0))


def test_abc_default_budget_is_relative_to_the_number_of_features(models):
    """The same default fraction of features is mutated on 30 tabular features and on 3 x 8 x 8 images."""
    fractions = {}
    for name in ("mlp", "resnet"):
        model, x, _ = models[name]
        r = abc_confidence(model, x[:4], n_samples=8, n_steps=8, baseline="zero", return_details=True)
        fractions[name] = (r.inclusion.sum(1) / x[0].numel()).mean().item()
    counts = {"mlp": 30 * fractions["mlp"], "resnet": 192 * fractions["resnet"]}
    assert fractions["mlp"] < 0.5, f"the default budget mutates {fractions['mlp']:.0%} of 30 features"
    assert counts["resnet"] > counts["mlp"], f"the same absolute count on 30 and on 192 features: {counts}"


def test_abc_on_two_inputs_and_an_extra_argument():
    model, (x1, x2) = B.two_input()
    c = abc_confidence(model, (x1, x2), n_samples=16, n_steps=8, baseline="zero", budget=2.0)
    assert c.shape == (8,) and ((c >= 0) & (c <= 1)).all()
    model, x, mask = B.masked()
    r = abc_confidence(model, x, n_samples=32, n_steps=8, baseline=1.0, budget=3.0, return_details=True,
                       additional_forward_args=(mask,))
    assert (r.inclusion.reshape(8, -1)[:, 6:8] == 0).all(), "masked features have no gradient: never mutated"
    assert (r.inclusion.reshape(8, -1)[:, :6] > 0).any()


def test_abc_refuses_a_bad_target(models):
    model, x, _ = models["mlp"]
    with pytest.raises(ValueError, match="target"):
        abc_confidence(model, x, target=torch.full((x.shape[0],), 2), n_samples=4)


# ---------------------------------------------------------------------------------------------------------------- infidelity


def _captum_infidelity(model, x, a, I, t):
    """captum's estimator on the same perturbations ``I`` (``N x n x ...``)."""
    from captum.metrics import infidelity as captum_infidelity

    n = I.shape[1]

    def perturb(xs):
        return I.reshape(-1, *x.shape[1:]), xs - I.reshape(-1, *x.shape[1:])

    return captum_infidelity(model, perturb, x, a, target=t, n_perturb_samples=n,
                              max_examples_per_batch=x.shape[0] * n)   # one batch: I in its row order


@pytest.mark.parametrize("name", ["resnet", "mlp", "lenet"])
def test_infidelity_matches_captum_on_the_same_perturbations(models, name):
    model, x, _ = models[name]
    t = _pred(model, x)
    a = attribute(model, x, t, method="grad")
    I = 0.2 * torch.randn((x.shape[0], 16) + tuple(x.shape[1:]), generator=torch.Generator().manual_seed(0))
    ours = infidelity(model, x, a, Fixed(I), target=t, n_samples=16)
    _close(ours, _captum_infidelity(model, x, a, I, t), rtol=1e-3, atol=1e-6)


class _UserPerturbation:
    """A user's own local perturbation: no subclass, just ``units`` and ``sample``."""

    units = "local"

    def __init__(self, sigma):
        self.sigma = sigma

    def sample(self, x, n, generator=None):
        z = torch.randn((1, n) + tuple(x.shape[1:]), generator=generator, dtype=x.dtype)
        return (self.sigma * z).expand((x.shape[0], n) + tuple(x.shape[1:]))


def test_infidelity_accepts_a_user_object_and_a_perturb_func(models):
    model, x, _ = models["mlp"]
    t = _pred(model, x)
    a = attribute(model, x, t, method="grad")
    v = infidelity(model, x, a, _UserPerturbation(0.1), target=t, n_samples=400, seed=1)
    assert v.shape == (x.shape[0],) and (v >= 0).all()
    _close(infidelity(model, x[2:7], a[2:7], _UserPerturbation(0.1), target=t[2:7], n_samples=400, seed=1), v[2:7])

    def perturb_func(xs):
        noise = 0.1 * torch.randn_like(xs)
        return noise, xs - noise

    w = infidelity(model, x, a, perturb_func, target=t, n_samples=400, seed=1)
    assert w.shape == (x.shape[0],) and (w >= 0).all()
    assert v.mean() == pytest.approx(w.mean().item(), rel=0.3)     # the same perturbation law


@pytest.mark.parametrize("name", ["resnet", "mlp"])
def test_infidelity_global_units_by_hand(models, name):
    """Global units: ``I = M ⊙ (x - x0)`` and ``IᵀΦ = Σ M·Φ`` with Φ = IG from ``x0``."""
    model, x, _ = models[name]
    t = _pred(model, x)
    x0 = -0.5
    a = attribute(model, x, t, method="ig", baseline=torch.full_like(x, x0), n_steps=16)
    M_ = (torch.rand((x.shape[0], 12) + tuple(x.shape[1:]), generator=torch.Generator().manual_seed(2)) < 0.3).float()
    I = M_ * (x - x0).unsqueeze(1)
    ours = infidelity(model, x, a, Fixed(I, W=M_, units="global"), target=t, n_samples=12)
    xs = (x.unsqueeze(1) - I).reshape(-1, *x.shape[1:])
    fdiff = _logit(model, x, t).unsqueeze(1) - _logit(model, xs, t.repeat_interleave(12)).view(-1, 12)
    ref = ((M_ * a.unsqueeze(1)).flatten(2).sum(2) - fdiff).pow(2).mean(1)
    _close(ours, ref, rtol=1e-3, atol=1e-6)


def test_infidelity_and_optimal_refuse_an_out_of_range_target(models):
    model, x, _ = models["mlp"]
    bad = torch.full((x.shape[0],), 5)
    with pytest.raises(ValueError, match="target"):
        infidelity(model, x, torch.zeros_like(x), Gaussian(0.1), target=bad, n_samples=8)
    with pytest.raises(ValueError, match="target"):
        optimal_explanation(model, x, Gaussian(0.1), target=bad, n_samples=64)


def test_infidelity_and_optimal_with_an_extra_argument_and_two_inputs():
    """model(x, mask): the mask follows its input into every perturbed copy. model(x1, x2): a tuple of inputs."""
    model, x, mask = B.masked()
    t = _pred(model, x, mask)
    g = attribute(model, x, t, method="grad", additional_forward_args=(mask,))
    v = infidelity(model, x, g, Gaussian(1e-3), target=t, n_samples=32, additional_forward_args=(mask,))
    assert v.max() < 1e-8, "the gradient of a piecewise-linear model is exact under a vanishing Gaussian"
    wrong = infidelity(model, x, g, Gaussian(1e-3), target=t, n_samples=32, additional_forward_args=(1 - mask,))
    assert wrong.mean() > 100 * v.mean(), "the mask must reach the model"
    opt = optimal_explanation(model, x, Gaussian(1e-3), target=t, n_samples=4000, additional_forward_args=(mask,))
    assert (opt - g).abs().max() < 0.1 * g.abs().max(), "vanishing Gaussian: the optimum is the gradient (masked: 0)"
    # model(x1, x2): the same numbers as the one-input model of the concatenated features
    model, (x1, x2) = B.two_input()
    t = _pred(model, x1, x2)
    cat = _Cat(model).eval()
    xc = torch.cat([x1, x2], 1)
    a = attribute(model, (x1, x2), t, method="grad")
    ac = torch.cat(a, 1)
    _close(infidelity(model, (x1, x2), a, Gaussian(0.05), target=t, n_samples=32, seed=4),
           infidelity(cat, xc, ac, Gaussian(0.05), target=t, n_samples=32, seed=4))
    _close(infidelity(model, (x1, x2), {"g": a}, NoisyBaseline(0.3, input_range=None), n_samples=32)["g"],
           infidelity(cat, xc, ac, NoisyBaseline(0.3, input_range=None), n_samples=32))
    opt = optimal_explanation(model, (x1, x2), Gaussian(0.05), target=t, n_samples=256, ridge=1e-3, seed=1)
    assert isinstance(opt, tuple) and [o.shape for o in opt] == [x1.shape, x2.shape]
    _close(torch.cat(opt, 1), optimal_explanation(cat, xc, Gaussian(0.05), target=t, n_samples=256, ridge=1e-3, seed=1))
    with pytest.raises(TypeError, match="attributions must be a tuple of 2"):
        infidelity(model, (x1, x2), ac, Gaussian(0.05), target=t, n_samples=8)
    with pytest.raises(ValueError, match="Square needs images"):
        infidelity(model, (x1, x2), a, Square(), target=t, n_samples=8)


class _Cat(nn.Module):
    """The two-input model read as a model of its 10 concatenated features (the reference for tuple inputs)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x[:, :6], x[:, 6:])


# ---------------------------------------------------------------------------------------------------------------- perturbations


@pytest.mark.parametrize("shape", [(5, 30), (5, 3, 8, 8), (5, 2, 12)])
@pytest.mark.parametrize("make", [lambda: Gaussian(0.1), lambda: NoisyBaseline(0.2, input_range=None),
                                  lambda: ConstantBaseline(0.0), lambda: ShapSubset()],
                         ids=["gaussian", "noisy_baseline", "constant", "shap_subset"])
def test_perturbations_work_on_any_shape(shape, make):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    p = make()
    i = p.sample(x, 6, torch.Generator().manual_seed(1))
    assert i.shape == (shape[0], 6) + shape[1:] and bool(torch.isfinite(i).all())
    j = p.sample(x.flip(0)[:2], 6, torch.Generator().manual_seed(1))
    _close(i.flip(0)[:2], j)            # common random numbers: the other inputs do not change an input's perturbations


def test_square_refuses_tabular_inputs_and_noisy_baseline_keeps_the_range():
    with pytest.raises(ValueError, match="Square.*image|image.*Square"):
        Square((2,), 1).sample(torch.randn(4, 30), 3, torch.Generator().manual_seed(0))
    x = 3 * torch.randn(4, 30, generator=torch.Generator().manual_seed(0))
    z = x.unsqueeze(1) - NoisyBaseline(0.5, baseline=-2.0, input_range=None).sample(x, 50, torch.Generator())
    assert z.min() < -3, "the noisy baseline was clamped"
    z = x.unsqueeze(1) - NoisyBaseline(0.5, baseline=-2.0, input_range=(-2.5, 4)).sample(x, 50, torch.Generator())
    assert z.min() >= -2.5 - 1e-5 and z.max() <= 4 + 1e-5


# ---------------------------------------------------------------------------------------------------------------- sensitivity, smoothing, optimal


def _explainer(model, method="grad", **kw):
    def explain(x, target=None):
        return attribute(model, x, target, method=method, **kw)

    explain.model = model
    return explain


@pytest.mark.parametrize("name", ["resnet", "mlp", "lenet"])
def test_sensitivity_max(models, name):
    model, x, _ = models[name]
    s = sensitivity_max(_explainer(model), x, radius=0.05, n_samples=6, seed=2)
    assert s.shape == (x.shape[0],) and (s >= 0).all() and bool(torch.isfinite(s).all())
    _close(sensitivity_max(_explainer(model), x[1:4], radius=0.05, n_samples=6, seed=2), s[1:4])
    _close(sensitivity_max(_explainer(model), x.flip(0), radius=0.05, n_samples=6, seed=2).flip(0), s)
    # the identity explanation: max_j ‖z_j‖ / ‖x‖ with z uniform in the L∞ ball: ‖z‖ ≈ r √(d/3), at most r √d
    ident = sensitivity_max(lambda v, target=None: v.clone(), x, radius=0.05, n_samples=6, seed=2)
    typical = 0.05 * math.sqrt(x[0].numel() / 3) / x.flatten(1).norm(dim=1)
    assert (ident >= 0.85 * typical).all() and (ident <= 1.35 * typical).all(), (ident / typical)


def test_sensitivity_max_on_two_inputs():
    """A tuple of inputs: the ball is over the packed features; the same numbers as the concatenated model."""
    model, (x1, x2) = B.two_input()

    def explain(xs, target=None):
        return attribute(model, xs, target, method="grad")
    explain.model = model
    cat = _Cat(model).eval()

    def explain_cat(v, target=None):
        return attribute(cat, v, target, method="grad")
    explain_cat.model = cat
    _close(sensitivity_max(explain, (x1, x2), radius=0.05, n_samples=4, seed=3),
           sensitivity_max(explain_cat, torch.cat([x1, x2], 1), radius=0.05, n_samples=4, seed=3))
    with pytest.raises(TypeError, match="explain's output"):
        sensitivity_max(lambda xs, target=None: xs[0], (x1, x2), radius=0.05, n_samples=2)


#: variance / radius² of each smoothing kernel: N(0, r²); U[-r, r]; N(0, r²) truncated to [-2r, 2r]
KERNEL_VARIANCE = {"gaussian": 1.0, "uniform": 1 / 3,
                   "truncnorm": 1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(2 / math.sqrt(2))}


@pytest.mark.parametrize("kernel", ["gaussian", "uniform", "truncnorm"])
def test_smooth_averages_the_explanation(models, kernel):
    model, x, _ = models["resnet"]
    ident = smooth(lambda v, target=None: v.clone(), kernel=kernel, radius=0.1, n_samples=400, seed=0)
    square = smooth(lambda v, target=None: v * v, kernel=kernel, radius=0.1, n_samples=400, seed=0)
    _close(ident(x), x, rtol=0, atol=0.05)                  # E[x + z] = x, no clamp to [0, 1]
    # mean (x + z)² - (mean (x + z))² is the sample variance of the kernel's noise, whatever x is
    var = (square(x) - ident(x) ** 2).mean().item() / 0.1 ** 2
    assert var == pytest.approx(KERNEL_VARIANCE[kernel], rel=0.04), "the kernel's scale (radius) is off"
    g = smooth(_explainer(model), kernel=kernel, radius=1e-5, n_samples=4)
    _close(g(x), attribute(model, x, method="grad"), rtol=1e-3, atol=1e-5)
    _close(g(x.flip(0)).flip(0), g(x))
    sg = smooth(_explainer(model), kernel=kernel, radius=0.3, n_samples=8, seed=1)
    _close(sg(x.flip(0)).flip(0), sg(x))                    # the noise does not depend on an input's position


@pytest.mark.parametrize("name,perturbation", [("mlp", Gaussian(1.0)),
                                               ("mlp", NoisyBaseline(0.3, baseline=0.0, input_range=None)),
                                               ("resnet", NoisyBaseline(0.3, baseline=0.0, input_range=None))],
                         ids=["mlp-gaussian", "mlp-noisy_baseline", "resnet-noisy_baseline"])
def test_optimal_explanation_has_lower_infidelity_than_the_gradient(models, name, perturbation):
    """Φ* minimises infidelity: on fresh perturbations it beats the gradient where the model is not linear at the
    perturbation's scale (standardised features, σ = 1 or a noisy baseline)."""
    model, x, _ = models[name]
    x = x[:6]
    t = _pred(model, x)
    opt = optimal_explanation(model, x, perturbation, target=t, n_samples=4000, seed=0)
    assert opt.shape == x.shape
    cand = {"opt": opt, "grad": attribute(model, x, t, method="grad")}
    inf = {k: infidelity(model, x, v, perturbation, target=t, n_samples=4000, seed=7).mean() for k, v in cand.items()}
    assert inf["opt"] < 0.9 * inf["grad"], inf


# ---------------------------------------------------------------------------------------------------------------- calibration


@pytest.fixture(scope="module")
def tab_logits(mlp):
    """Logits of the held-out half, split into validation (fit) and test (report): both hold errors."""
    model, (xtr, ytr, xte, yte) = B.tabular_mlp()
    with torch.no_grad():
        z = model(xte)
    return z[:140], yte[:140], z[140:], yte[140:]


def test_temperature_scaling_minimises_the_nll(tab_logits):
    from scipy.optimize import minimize_scalar

    zv, yv, zt, _ = tab_logits
    ts = TemperatureScaling().fit(zv, yv)

    def nll(log_t):
        return torch.nn.functional.cross_entropy(zv.double() / math.exp(log_t), yv).item()

    best = math.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded", options={"xatol": 1e-8}).x)
    assert ts.temperature_ == pytest.approx(best, rel=1e-3)
    p = ts.predict_proba(zt)
    _close(p.sum(1), torch.ones(len(zt)))


def test_platt_top_matches_sklearn_sigmoid_and_ovr_runs_on_two_classes(tab_logits):
    from sklearn.calibration import _sigmoid_calibration

    zv, yv, zt, yt = tab_logits
    platt = PlattScaling().fit(zv, yv)

    def log_odds(z):       # log p_max - log(1 - p_max) = z_top - logsumexp(other logits), without saturation
        z = z.double()
        top = z.argmax(1, keepdim=True)
        return (z.gather(1, top).squeeze(1) - z.scatter(1, top, -math.inf).logsumexp(1)).numpy()

    s, st = log_odds(zv), log_odds(zt)
    a, b = _sigmoid_calibration(s, (zv.argmax(1) == yv).numpy())
    np.testing.assert_allclose(np.asarray(platt.confidence(zt.numpy())), 1 / (1 + np.exp(a * st + b)), atol=1e-6)
    ovr = PlattScaling("ovr").fit(zv, yv)
    q = np.asarray(ovr.predict_proba(zt.numpy()))
    assert q.shape == (len(zt), 2)
    np.testing.assert_allclose(q.sum(1), 1, atol=1e-6)


def test_platt_on_a_binary_logit_or_refused():
    model, (_, _, x, y) = B.binary_logit()
    with torch.no_grad():
        z = model(x)
    assert (((z.squeeze(1) > 0).long()) != y).any(), "the fit needs errors"

    def check(pl):       # class 1 iff z > 0; the top-class log-odds of a binary logit is |z|
        from sklearn.calibration import _sigmoid_calibration

        s = z.squeeze(1).double().abs().numpy()
        a, b = _sigmoid_calibration(s, ((z.squeeze(1) > 0).long() == y).numpy())
        np.testing.assert_allclose(np.asarray(pl.confidence(z)), 1 / (1 + np.exp(a * s + b)), atol=1e-6)

    _right_or_refused(lambda: PlattScaling().fit(z, y), check, "logits")


def test_combined_confidence_is_a_logistic_regression_on_transformed_features(tab_logits):
    from sklearn.linear_model import LogisticRegression

    zv, yv, zt, yt = tab_logits
    rng = np.random.default_rng(0)
    correct = (zv.argmax(1) == yv).numpy()
    f = {"a": np.clip(rng.uniform(size=len(yv)) * 0.5 + 0.5 * correct, 1e-3, 1 - 1e-3),
         "b": rng.uniform(0.01, 0.99, size=len(yv))}
    comb = CombinedConfidence(C=1.0).fit(f, correct)
    g = np.stack([np.log(f[k]) - np.log1p(-f[k]) for k in f], 1)
    mu, sd = g.mean(0), g.std(0)
    ref = LogisticRegression(C=1.0, max_iter=1000).fit((g - mu) / sd, correct)
    np.testing.assert_allclose(comb.confidence(f), ref.predict_proba((g - mu) / sd)[:, 1], atol=1e-5)
    assert comb.coef_["a"] > 0 and abs(comb.coef_["b"]) < comb.coef_["a"]


# ---------------------------------------------------------------------------------------------------------------- confidence pipeline, metrics


def test_confidence_suite_on_a_two_class_tabular_model():
    """The notebooks' pipeline (calibrators fitted on validation, every score on test, ABC) on a binary MLP."""
    from helpers.confidence import ConfidenceSuite

    model, (_, _, x, y) = B.tabular_mlp()
    suite = ConfidenceSuite(model, abc_methods={"abc": dict(method="ig", baseline="zero", n_steps=8)}, abc_samples=16)
    out = suite.fit(x[:140], y[:140]).scores(x[140:], abc_n=20)
    with torch.no_grad():
        zv, zt = model(x[:140]), model(x[140:])
    np.testing.assert_array_equal(out["pred"], zt.argmax(1).numpy())
    np.testing.assert_allclose(out["platt"], np.asarray(PlattScaling().fit(zv, y[:140]).confidence(zt)), atol=1e-6)
    for k in ("max softmax", "temperature", "platt", "platt (ovr)", "abc"):
        c = np.asarray(out[k])
        assert c.shape == ((20,) if k == "abc" else (len(zt),)) and ((c >= 0) & (c <= 1)).all(), k


def test_metrics_agree_with_scikit_learn(tab_logits):
    from sklearn.metrics import roc_auc_score

    _, _, zt, yt = tab_logits
    z = zt.double()
    conf = (z.max(1).values - z.min(1).values).numpy()      # the top-class log-odds of 2 classes: no saturation
    correct = (zt.argmax(1) == yt).numpy()
    assert len(np.unique(conf)) == len(conf), "ties would make the hand formulas below ambiguous"
    assert M.error_auroc(conf, correct) == pytest.approx(roc_auc_score(~correct, -conf))
    order = np.argsort(-conf, kind="stable")
    assert M.aurc(conf, correct) == pytest.approx(np.mean(np.cumsum(~correct[order]) / np.arange(1, len(conf) + 1)),
                                                  rel=1e-9)
    assert M.ood_auroc(conf[:100], conf[100:] - 0.5) == pytest.approx(
        roc_auc_score(np.r_[np.ones(100), np.zeros(len(conf) - 100)], np.r_[conf[:100], conf[100:] - 0.5]))
    probs = torch.softmax(zt, 1).numpy()
    conf = probs.max(1)
    bins = np.clip(np.ceil(conf.astype(np.float64) * 15).astype(int) - 1, 0, 14)   # (b/15, (b+1)/15]
    ece = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
              for b in range(15) if (bins == b).any())
    assert M.ece(probs, yt.numpy()) == pytest.approx(ece, abs=1e-6)
    ci = M.bootstrap_ci(M.error_auroc, conf, correct, n=200, seed=0)
    assert ci.low <= M.error_auroc(conf, correct) <= ci.high
    with pytest.raises(ValueError, match="labels"):
        M.ece(probs, np.full(len(yt), 7))
    with pytest.raises((ValueError, TypeError), match="labels"):
        M.ece(probs, None)


# ---------------------------------------------------------------------------------------------------------------- the rest of the pipeline


@pytest.mark.parametrize("name", ["resnet", "mlp", "lenet"])
def test_forward_predict_and_the_fast_forward_are_the_model(models, name):
    """The batched forward and the cached fast form (channels-last / traced) give the model's own logits, also for
    a LeNet that flattens with .view and in-place ReLUs."""
    from helpers.batching import forward, predict
    from helpers.fastpath import fast_forward

    model, x, _ = models[name]
    with torch.no_grad():
        z = model(x)
    _close(forward(model, x, batch_size=5), z)
    assert torch.equal(predict(model, x, batch_size=5), z.argmax(1))
    with torch.no_grad():
        _close(fast_forward(model, x)(x), z, rtol=1e-4, atol=1e-4)


def test_predict_of_a_single_binary_logit(binary):
    """A single logit means class 1 iff it is > 0 (an argmax over one column would say class 0 for every input)."""
    from helpers.batching import predict

    model, x, _, _ = binary
    with torch.no_grad():
        expected = (model(x).squeeze(1) > 0).long()
    assert 0 < expected.sum() < len(expected)

    def check(p):
        assert torch.equal(p, expected)

    _right_or_refused(lambda: predict(model, x), check, "output|logit")


def test_mc_dropout_trust_score_and_penultimate_features_on_tabular_data(mlp):
    from helpers.confidence import TrustScore, mc_dropout, penultimate_features

    model, x, xtr = mlp
    with pytest.raises(ValueError, match="Dropout"):
        mc_dropout(model, x, n_passes=4)
    with pytest.raises(ValueError, match="features"):
        penultimate_features(model, x)
    torch.manual_seed(0)
    drop = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2)).eval()
    mean = mc_dropout(drop, x, n_passes=16, seed=0)
    _close(mean.sum(1), torch.ones(len(x)))
    _close(mc_dropout(drop, x.flip(0), n_passes=16, seed=0).flip(0), mean)     # masks shared by every input
    assert not torch.allclose(mean, torch.softmax(drop(x), 1).detach())        # dropout was on
    # Trust Score on the standardised features themselves, against the k-NN distances by hand (k = 2)
    _, (xt, yt, _, _) = B.tabular_mlp()
    pred = _pred(model, x)
    score = TrustScore(k=2).fit(xt, yt).score(x, pred)
    d = torch.stack([torch.cdist(x.double(), xt[yt == c].double()).sort(1).values[:, 1] for c in (0, 1)], 1)
    hand = d.gather(1, (1 - pred).view(-1, 1)).squeeze(1) / d.gather(1, pred.view(-1, 1)).squeeze(1)
    _close(score, hand, rtol=1e-4)


def test_parameter_randomisation_cascade_on_the_residual_cnn(resnet):
    from helpers.sanity import randomized_models

    model, x = resnet
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cascade = randomized_models(model, seed=0)
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert [name for name, _ in cascade] == layers[::-1]
    with torch.no_grad():
        z = model(x)
        outs = [m(x) for _, m in cascade]
    assert all(not torch.allclose(o, z) for o in outs)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "the model itself was changed"


# ---------------------------------------------------------------------------------------------------------------- shifts


def test_attacks_respect_the_input_range(models, tab_logits):
    from helpers.shifts import fgsm, pgd

    model, x, _ = models["mlp"]
    y = _pred(model, x)
    adv = fgsm(model, x, y, 0.1, input_range=None)
    _close((adv - x).abs().max(), torch.tensor(0.1))          # moved by eps, not clamped to [0, 1]
    assert adv.min() < -0.5
    adv = pgd(model, x, y, 0.1, steps=3, input_range=None)
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() < -0.5
    lo, hi = -1.0, 2.0
    adv = fgsm(model, x.clamp(lo, hi), y, 0.5, input_range=(lo, hi))
    assert adv.min() >= lo and adv.max() <= hi
    with pytest.raises(ValueError, match="input_range"):      # standardised data outside the default [0, 1]
        fgsm(model, x, y, 0.1)

    def same_step_in_float64(a):
        assert a.dtype == torch.float64
        _close((a - x.double()).abs().max(), torch.tensor(0.1))

    _right_or_refused(lambda: fgsm(model, x.double(), y, 0.1, input_range=None), same_step_in_float64,
                      "dtype|float32|float64")


def test_image_shifts_on_normalised_three_channel_images(models):
    from helpers.shifts import add_noise, blend, rotate

    _, x, _ = models["resnet"]
    _close(rotate(x, 0.0, input_range=None), x)
    _close(rotate(x, 90.0, input_range=None), torch.rot90(x, 1, dims=(2, 3)), rtol=1e-4, atol=1e-4)
    n = add_noise(x, 0.1, seed=0, input_range=None)
    assert (n - x).abs().max() < 1 and n.min() < -1
    _close(add_noise(x[:3], 0.1, seed=0, input_range=None), n[:3])      # noise follows the input
    _close(add_noise(x.flip(0), 0.1, seed=0, input_range=None), n.flip(0))
    _close(blend(x, -x, 0.5, input_range=None), torch.zeros_like(x))
    with pytest.raises(ValueError, match="x"):
        rotate(torch.randn(4, 30), 10.0)
