"""helpers.abc: hand-computable cases (non-zero baselines, non-binary inputs, references that disagree), the
sampling scheme, common random numbers (seed, chunk size, batch position), other models' inputs, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from helpers.abc import (
    abc_confidence,
    abc_weights,
    default_budget,
    flip_rate_by_bin,
    inclusion_probabilities,
    mutated_copies,
    weights_from_multipliers,
)
from helpers.attribution import attribute, explain
from helpers.batching import predict


class FlipOnFeature0(nn.Module):
    """Two classes on 4 features: f0 = x0 + 0.1 (x1 + x2 + x3) - 0.6, f1 = 0.

    Every attribution multiplier of class 0 is G = (1, .1, .1, .1) (a linear model), so ABC's weights are
    G / 1.3 on the features that differ from the baseline, whatever x and the baseline are.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[1.0, 0.1, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0]]))
            self.lin.bias.copy_(torch.tensor([-0.6, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


class Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.0, 1.0, 0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], 3) + 0 * x.flatten(1).sum(1, keepdim=True)


G = torch.tensor([[1.0, 0.1, 0.1, 0.1]])


def _within(value: float, expect: float, s: int, k: float = 4.0) -> bool:
    return abs(value - expect) <= k * (expect * (1 - expect) / s) ** 0.5 + 1e-9


def test_abc_in_unit_interval_for_every_method(cnn, mnist_small):
    x = mnist_small[0][:4]
    for method in ("grad", "ig", "expected_gradients", "deepshap", "smoothgrad", "gbp"):
        c = abc_confidence(cnn, x, method=method, n_samples=16, budget=20, n_steps=4, n_references=3)
        assert c.shape == (4,) and c.dtype == torch.float32
        assert float(c.min()) >= 0 and float(c.max()) <= 1


def test_abc_every_baseline_runs(cnn, mnist_small):
    x = mnist_small[0][:3]
    for baseline in ("zero", "blur", "uniform", "gaussian", "max_distance", "train", torch.full_like(x, 0.5)):
        c = abc_confidence(cnn, x, baseline=baseline, n_samples=8, budget=10, n_steps=4)
        assert torch.all((c >= 0) & (c <= 1))


def test_constant_model_gives_one():
    x = torch.rand(5, 1, 4, 4)
    assert torch.equal(abc_confidence(Constant().eval(), x, n_samples=50, budget=8), torch.ones(5))


def test_hand_built_model_matches_hand_computation():
    model = FlipOnFeature0().eval()
    x = torch.ones(1, 4)
    # budget 1: p0 = 1/1.3, the label is kept iff x0 is not changed -> ABC = 0.3/1.3
    s = 40_000
    assert _within(float(abc_confidence(model, x, n_samples=s, budget=1.0, seed=3)), 0.3 / 1.3, s)
    # budget >= 1.3: p0 = 1, every sample changes x0: ABC = 0 exactly
    assert float(abc_confidence(model, x, n_samples=200, budget=1.3)) == 0.0
    assert float(abc_confidence(model, x, n_samples=200, budget=3.0)) == 0.0
    r = abc_confidence(model, x, n_samples=1000, budget=1.0, return_details=True)
    torch.testing.assert_close(r.weights, G / 1.3)
    torch.testing.assert_close(r.inclusion, G / 1.3)
    assert torch.equal(r.labels[0] == 0, ~r.masks[0, :, 0])      # kept exactly when x0 is left alone


def test_weight_is_abs_multiplier_not_times_distance_to_baseline():
    """Non-binary x, non-zero baseline: w ∝ |G|, not |G| |x - b| (which would give x0 weight 0.8/0.89)."""
    model = FlipOnFeature0().eval()
    x = torch.tensor([[0.9, 0.3, 0.7, 0.2]])
    b = torch.full_like(x, 0.1)
    s = 20_000
    r = abc_confidence(model, x, baseline=b, n_samples=s, budget=1.0, return_details=True)
    torch.testing.assert_close(r.weights, G / 1.3)
    # changing x0 to 0.1 flips the label (0.1 + 0.12 - 0.6 < 0); changing all the others does not (0.9 + 0.03 - 0.6)
    assert _within(float(r.confidence), 1 - 1 / 1.3, s)
    # the paper's form |A / (x - b)| from captum-style IG attributions gives the same weights
    a = attribute(model, x, r.predicted, baseline=b)
    torch.testing.assert_close(abc_weights(a, x, b), r.weights)


def test_single_baseline_change_writes_the_baseline_value():
    """Baseline 0.5: x0 -> 0.5 keeps the label (0.5 + 0.3 - 0.6 > 0), x0 -> 0 would flip it: ABC = 1 exactly."""
    model = FlipOnFeature0().eval()
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.8, 0.6, 0.9]])
    b = torch.full_like(x, 0.5)
    r = abc_confidence(model, x, baseline=b, n_samples=300, budget=1.0, return_details=True)
    assert torch.equal(r.confidence, torch.ones(2))
    copies, changed = mutated_copies(x, r.references, r.inclusion, r.seed, 0, 300)
    assert torch.equal(changed, r.masks) and bool(changed[:, :, 0].any())
    assert torch.all(copies[changed] == 0.5) and torch.equal(copies[~changed], x.unsqueeze(1).expand_as(copies)[~changed])


def test_references_that_disagree():
    """A feature is eligible when *some* reference differs; a changed feature takes a reference value that differs."""
    model = FlipOnFeature0().eval()
    x = torch.ones(1, 4)
    refs = torch.tensor([[0.0, 1.0, 0.5, 1.0], [0.0, 0.2, 1.0, 1.0]])   # x1: only r2 differs, x2: only r1, x3: none
    s = 4000
    r = abc_confidence(model, x, method="expected_gradients", references=refs, n_samples=s, budget=2.0,
                       return_details=True)
    torch.testing.assert_close(r.weights, torch.tensor([[1.0, 0.1, 0.1, 0.0]]) / 1.2)
    e = explain(model, x, method="expected_gradients", references=refs)
    torch.testing.assert_close(weights_from_multipliers(e.multipliers, x, e.references), r.weights)
    copies, changed = mutated_copies(x, r.references, r.inclusion, r.seed, 0, s)
    assert torch.equal(changed, r.masks) and not changed[..., 3].any()
    assert torch.all(copies[..., 1][changed[..., 1]] == 0.2) and torch.all(copies[..., 2][changed[..., 2]] == 0.5)
    assert torch.all(copies[changed] != 1.0)                            # every counted change is a change
    assert abs(float(r.effective_budget) - 2.0) < 0.1                    # sum p = 1 + (1/1.2 ... saturated) = 2
    freq = changed[0].float().mean(0)
    assert torch.all((freq - r.inclusion[0]).abs() <= 5 * (r.inclusion[0] * (1 - r.inclusion[0]) / s).sqrt() + 1e-6)


def test_feature_equal_to_baseline_gets_no_weight_and_is_never_changed():
    model = FlipOnFeature0().eval()
    x = torch.tensor([[0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0]])
    r = abc_confidence(model, x, n_samples=500, budget=2.0, return_details=True)
    assert r.weights[0, 0] == 0 and r.weights[1, 2] == 0
    assert not r.masks[0, :, 0].any() and not r.masks[1, :, 2].any()
    torch.testing.assert_close(r.weights.sum(1), torch.ones(2))


def test_nothing_eligible_gives_one():
    model = FlipOnFeature0().eval()
    assert torch.equal(abc_confidence(model, torch.zeros(2, 4), n_samples=20, budget=2), torch.ones(2))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 1000), budget=st.floats(0.1, 30.0), d=st.integers(1, 40), zeros=st.integers(0, 10))
def test_inclusion_probabilities_sum_to_budget(seed, budget, d, zeros):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(3, d, generator=g) ** 3
    w[:, : min(zeros, d)] = 0
    w = w / w.sum(1, keepdim=True).clamp_min(1e-30)
    p = inclusion_probabilities(w, budget)
    assert torch.all((p >= 0) & (p <= 1 + 1e-6))
    n_pos = (w > 0).sum(1).double()
    torch.testing.assert_close(p.double().sum(1), torch.minimum(n_pos, torch.tensor(budget).double()),
                               rtol=1e-4, atol=1e-4)
    assert torch.all(p[w == 0] == 0)
    unsat = (p < 1 - 1e-6) & (w > 0)                    # proportional to w below saturation
    for row in range(3):
        ratio = p[row][unsat[row]] / w[row][unsat[row]]
        if ratio.numel() > 1:
            assert float(ratio.max() - ratio.min()) < 1e-3 * float(ratio.max())


def test_effective_budget_is_the_budget_for_every_baseline(cnn, mnist_small):
    x = mnist_small[0][:2]
    for kw in (dict(method="ig", n_steps=8), dict(method="expected_gradients", n_references=8),
               dict(method="ig", baseline="blur", n_steps=8)):
        r = abc_confidence(cnn, x, n_samples=400, budget=25, return_details=True, **kw)
        counts = r.masks.flatten(2).sum(2).float()
        torch.testing.assert_close(r.effective_budget, counts.mean(1))
        assert abs(float(counts.mean()) - 25) < 1.0, kw
    assert r.labels.shape == (2, 400) and r.masks.shape == (2, 400, 1, 28, 28)
    torch.testing.assert_close(r.confidence, (r.labels == r.predicted.view(-1, 1)).float().mean(1))


def test_returned_masks_are_the_masks_used(cnn, mnist_small):
    x = mnist_small[0][:3]
    refs = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for kw in (dict(n_steps=8), dict(method="expected_gradients", references=refs)):
        r = abc_confidence(cnn, x, n_samples=100, budget=40, return_details=True, chunk_size=50, **kw)
        copies, changed = mutated_copies(x, r.references, r.inclusion, r.seed, 0, 100)
        assert torch.equal(changed, r.masks)
        assert torch.equal(predict(cnn, copies.flatten(0, 1)).view(3, 100), r.labels)


def test_common_random_numbers(cnn, mnist_small):
    """Same seed: same masks whatever the chunk size, the other inputs, the batch position and the sample count."""
    x = mnist_small[0][:4]
    kw = dict(budget=30, n_steps=8, seed=2, return_details=True)
    a = abc_confidence(cnn, x, n_samples=150, **kw)
    for chunk in (1, 7, 64, 151, 10_000):
        assert torch.equal(abc_confidence(cnn, x, n_samples=150, chunk_size=chunk, **kw).masks, a.masks)
    assert torch.equal(abc_confidence(cnn, x[:2], n_samples=150, **kw).masks, a.masks[:2])
    perm = torch.tensor([3, 0, 2, 1])
    b = abc_confidence(cnn, x[perm], n_samples=150, **kw)
    assert torch.equal(b.masks, a.masks[perm]) and torch.equal(b.labels, a.labels[perm])
    assert torch.equal(abc_confidence(cnn, x, n_samples=200, **kw).masks[:, :150], a.masks)
    assert not torch.equal(abc_confidence(cnn, x, n_samples=150, **dict(kw, seed=3)).masks, a.masks)


def test_change_frequency_is_the_inclusion_probability(cnn, mnist_small):
    """Poisson sampling: feature j changes in a fraction p_j of the samples, independently across features."""
    x = mnist_small[0][:2]
    s = 4000
    r = abc_confidence(cnn, x, n_samples=s, budget=60, n_steps=8, return_details=True)
    freq = r.masks.flatten(2).float().mean(1)
    p = r.inclusion
    assert torch.all((freq - p).abs() <= 5 * (p * (1 - p) / s).sqrt() + 1e-6)
    assert torch.all(freq[p == 0] == 0) and torch.all(freq[p == 1] == 1)
    counts = r.masks.flatten(2).sum(2).float()
    assert torch.all((counts.var(1) / (p * (1 - p)).sum(1) - 1).abs() < 0.15)


def test_default_budget_is_relative_to_the_number_of_features():
    assert default_budget(784) == pytest.approx(10.0)
    assert default_budget(64 * 64) == pytest.approx(10.0 * 4096 / 784)
    assert default_budget(13) == 1.0
    tab = nn.Sequential(nn.Linear(13, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(5, 13, generator=torch.Generator().manual_seed(0))
    r = abc_confidence(tab, x, n_samples=64, return_details=True, baseline=torch.zeros(13))
    torch.testing.assert_close(r.inclusion.sum(1), torch.ones(5))
    big = nn.Sequential(nn.Flatten(), nn.Linear(4096, 2)).eval()
    r = abc_confidence(big, torch.rand(2, 1, 64, 64), n_samples=8, return_details=True, n_steps=4)
    torch.testing.assert_close(r.inclusion.sum(1), torch.full((2,), 4096 * 10 / 784))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(7, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.cat([a.flatten(1), b.flatten(1)], 1))


class Concatenated(nn.Module):
    def __init__(self, two: TwoInputs) -> None:
        super().__init__()
        self.two = two

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.two(x[:, :4].view(-1, 2, 2), x[:, 4:])


def test_tuple_inputs_and_single_logit_models_are_the_packed_model():
    """A tuple (x1, x2) is scored like the one-tensor model on the concatenated features; a single logit z like [-z, z]."""
    torch.manual_seed(0)
    two = TwoInputs().eval()
    a, b = torch.rand(6, 2, 2), torch.rand(6, 3)
    kw = dict(n_samples=64, budget=2.0, n_steps=8, return_details=True, seed=4)
    r2 = abc_confidence(two, (a, b), **kw)
    r1 = abc_confidence(Concatenated(two).eval(), torch.cat([a.flatten(1), b], 1), **kw)
    assert torch.equal(r2.labels, r1.labels) and torch.equal(r2.masks, r1.masks)
    torch.testing.assert_close(r2.inclusion, r1.inclusion)
    logit = nn.Sequential(nn.Linear(5, 1)).eval()
    pair = nn.Sequential(logit, nn.Linear(1, 2)).eval()
    with torch.no_grad():
        pair[1].weight.copy_(torch.tensor([[-1.0], [1.0]]))
        pair[1].bias.zero_()
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    kw = dict(n_samples=64, budget=2.0, n_steps=8, return_details=True, baseline=0.0)
    r_logit, r_pair = abc_confidence(logit, x, **kw), abc_confidence(pair, x, **kw)
    assert torch.equal(r_logit.predicted, r_pair.predicted) and torch.equal(r_logit.labels, r_pair.labels)


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.lin(x * scale)


def test_additional_forward_args_are_never_changed():
    torch.manual_seed(0)
    x, scale = torch.rand(5, 4) + 0.1, torch.rand(5, 4) + 0.5      # the model has a gradient in scale too
    r = abc_confidence(Scaled().eval(), x, additional_forward_args=(scale,), n_samples=32, budget=2.0, n_steps=8,
                       baseline=0.0, return_details=True)
    assert r.inclusion.shape == (5, 8) and torch.all(r.inclusion[:, 4:] == 0) and not r.masks[..., 4:].any()
    torch.testing.assert_close(r.inclusion.sum(1), torch.full((5,), 2.0))


def test_flip_rate_by_bin_hand_case():
    """Ranks (1, .1, .1, .1): bin 0 = {x0, x1}, bin 1 = {x2, x3}; one feature per sample: bin 0 flips half the time."""
    model = FlipOnFeature0().eval()
    x = torch.ones(3, 4)
    out = flip_rate_by_bin(model, x, G.expand(3, 4), torch.zeros(4), n_bins=2, k=1, n_samples=2000, seed=1)
    assert torch.all(out[:, 1] == 0) and torch.all((out[:, 0] - 0.5).abs() < 0.05)
    assert torch.equal(out[0], out[2])                                    # the same input at another position
    assert torch.equal(flip_rate_by_bin(model, x, G.expand(3, 4), torch.zeros(4), n_bins=2, k=2, n_samples=20)[:, 0],
                       torch.ones(3))


def test_bad_input(cnn, mnist_small):
    x = mnist_small[0][:2]
    for bad, err in ((0, ValueError), (-3.0, ValueError), ("10", TypeError), (True, TypeError)):
        with pytest.raises(err, match="budget"):
            abc_confidence(cnn, x, budget=bad)
    with pytest.raises(ValueError, match="n_samples"):
        abc_confidence(cnn, x, n_samples=0)
    with pytest.raises(TypeError, match="n_samples"):
        abc_confidence(cnn, x, n_samples=2.5)
    with pytest.raises(ValueError, match="seed"):
        abc_confidence(cnn, x, seed=-1)
    bad = x.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="x contains"):
        abc_confidence(cnn, bad)
    with pytest.raises(ValueError, match="baseline"):
        abc_confidence(cnn, x, baseline=torch.zeros(1, 1, 27, 27))
    with pytest.raises(ValueError, match="shape"):
        abc_confidence(cnn, x.view(2, 784))
    with pytest.raises(TypeError, match="floating"):
        abc_confidence(cnn, x.long())
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(784, 10)).train()
    with pytest.raises(ValueError, match="train mode"):
        abc_confidence(model, x)
    with pytest.raises(ValueError, match="unknown method"):
        abc_confidence(cnn, x, method="occlusion")


def test_keep_masks_false_gives_same_labels(cnn, mnist_small):
    x = mnist_small[0][:2]
    refs = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    kw = dict(method="expected_gradients", references=refs, n_samples=30, budget=10, return_details=True)
    a, b = abc_confidence(cnn, x, **kw), abc_confidence(cnn, x, keep_masks=False, **kw)
    assert b.masks is None and torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.effective_budget, b.effective_budget)


def test_flip_rate_by_bin_changes_only_its_bin_when_k_exceeds_its_size():
    """k = 3 > bin size 2: bin 1 sets x2 and x3 only (feature 0 never moves, no flip); bin 0 sets x0 and x1."""
    out = flip_rate_by_bin(FlipOnFeature0().eval(), torch.ones(3, 4), G.expand(3, 4), torch.zeros(4), n_bins=2, k=3,
                           n_samples=20)
    assert torch.all(out[:, 1] == 0) and torch.all(out[:, 0] == 1)


def test_two_inputs_with_their_own_baselines_in_one_row_chunks(cnn, mnist_small):
    """Per-input baselines follow their rows when the inputs are split into chunks of one (mutation test)."""
    x = mnist_small[0][:2]
    base = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    kw = dict(baseline=base, budget=30, n_steps=8, n_samples=40, return_details=True)
    a, b = (abc_confidence(cnn, x, chunk_size=c, **kw) for c in (None, 1))
    assert torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels)
