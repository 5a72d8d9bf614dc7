"""helpers.abc: ABC's range, hand-computable cases, the sampling scheme, seeds, chunk invariance, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from helpers.abc import abc_confidence, abc_weights, inclusion_probabilities, weights_from_multipliers
from helpers.attribution import attribute, explain


class FlipOnFeature0(nn.Module):
    """Two classes on 4 features: f0 = x0 + 0.1 (x1 + x2 + x3) - 0.6, f1 = 0.

    At x = 1 the label is 0; it flips to 1 exactly when x0 is mutated to the baseline 0, whatever else is mutated.
    IG with the zero baseline gives the path gradient w = (1, .1, .1, .1), so the weights are w / 1.3.
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
    c = abc_confidence(Constant().eval(), x, n_samples=50, budget=8)
    assert torch.equal(c, torch.ones(5))


def test_hand_built_model_matches_hand_computation():
    model = FlipOnFeature0().eval()
    x = torch.ones(1, 4)
    # budget 1: p0 = 1/1.3, label kept iff x0 not mutated -> ABC = 1 - 1/1.3 = 0.3/1.3
    s = 40_000
    c = float(abc_confidence(model, x, n_samples=s, budget=1.0, seed=3))
    expect = 0.3 / 1.3
    assert abs(c - expect) < 4 * (expect * (1 - expect) / s) ** 0.5
    # budget >= 1.3: p0 = min(1, budget/1.3) = 1: every sample mutates x0, ABC = 0 exactly
    assert float(abc_confidence(model, x, n_samples=200, budget=1.3)) == 0.0
    assert float(abc_confidence(model, x, n_samples=200, budget=3.0)) == 0.0
    r = abc_confidence(model, x, n_samples=1000, budget=1.0, return_details=True)
    torch.testing.assert_close(r.weights, torch.tensor([[1.0, 0.1, 0.1, 0.1]]) / 1.3)
    torch.testing.assert_close(r.inclusion, torch.tensor([[1.0, 0.1, 0.1, 0.1]]) / 1.3)
    # a sample keeps the label exactly when it leaves x0 alone
    assert torch.equal(r.labels[0] == 0, ~r.masks[0, :, 0])


def test_feature_equal_to_baseline_gets_no_weight_and_is_never_mutated():
    model = FlipOnFeature0().eval()
    x = torch.tensor([[0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0]])
    r = abc_confidence(model, x, n_samples=500, budget=2.0, return_details=True)
    assert r.weights[0, 0] == 0 and r.weights[1, 2] == 0
    assert not r.masks[0, :, 0].any() and not r.masks[1, :, 2].any()
    torch.testing.assert_close(r.weights.sum(1), torch.ones(2))
    # paper form |A/(x-b)| gives the same weights, without dividing by zero
    a = attribute(model, x, r.predicted)
    torch.testing.assert_close(abc_weights(a, x, torch.zeros_like(x)), r.weights)


def test_nothing_eligible_gives_one():
    model = FlipOnFeature0().eval()
    x = torch.zeros(2, 4)
    assert torch.equal(abc_confidence(model, x, n_samples=20, budget=2), torch.ones(2))


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
    # proportional to w below saturation
    unsat = (p < 1 - 1e-6) & (w > 0)
    for row in range(3):
        ratio = p[row][unsat[row]] / w[row][unsat[row]]
        if ratio.numel() > 1:
            assert float(ratio.max() - ratio.min()) < 1e-3 * float(ratio.max())


def test_expected_number_of_mutations_is_budget(cnn, mnist_small):
    x = mnist_small[0][:2]
    r = abc_confidence(cnn, x, n_samples=400, budget=25, n_steps=8, return_details=True)
    counts = r.masks.flatten(2).sum(2).float()
    assert abs(float(counts.mean()) - 25) < 1.0
    assert r.labels.shape == (2, 400) and r.masks.shape == (2, 400, 1, 28, 28)
    torch.testing.assert_close(r.confidence, (r.labels == r.predicted.view(-1, 1)).float().mean(1))


def test_seed_and_chunk_size(cnn, mnist_small):
    x = mnist_small[0][:6]
    kw = dict(n_samples=40, budget=30, n_steps=8)
    a = abc_confidence(cnn, x, seed=5, **kw)
    assert torch.equal(a, abc_confidence(cnn, x, seed=5, **kw))
    assert torch.equal(a, abc_confidence(cnn, x, seed=5, chunk_size=7, **kw))
    assert torch.equal(a, abc_confidence(cnn, x, seed=5, chunk_size=1000, forward_mode="eager", **kw))
    other = abc_confidence(cnn, x, seed=6, **kw)
    assert not torch.equal(a, other)
    for method in ("expected_gradients", "smoothgrad"):
        b1 = abc_confidence(cnn, x[:3], method=method, seed=1, n_samples=20, budget=20, n_references=4)
        b2 = abc_confidence(cnn, x[:3], method=method, seed=1, n_samples=20, budget=20, n_references=4, chunk_size=9)
        assert torch.equal(b1, b2)


def test_multireference_mutations_take_reference_values(cnn, mnist_small):
    x = mnist_small[0][:1]
    refs = torch.stack([torch.zeros(1, 28, 28), torch.ones(1, 28, 28)])
    r = abc_confidence(cnn, x, method="expected_gradients", references=refs, n_samples=200, budget=10,
                       return_details=True)
    assert set(r.reference_index.unique().tolist()) == {0, 1}
    e = explain(cnn, x, method="expected_gradients", references=refs)
    torch.testing.assert_close(weights_from_multipliers(e.multipliers, x, e.references), r.weights)


def test_bad_input(cnn, mnist_small):
    x = mnist_small[0][:2]
    with pytest.raises(ValueError, match="budget"):
        abc_confidence(cnn, x, budget=0)
    with pytest.raises(ValueError, match="budget"):
        abc_confidence(cnn, x, budget=-3.0)
    with pytest.raises(ValueError, match="n_samples"):
        abc_confidence(cnn, x, n_samples=0)
    with pytest.raises(TypeError, match="n_samples"):
        abc_confidence(cnn, x, n_samples=2.5)
    bad = x.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="x contains"):
        abc_confidence(cnn, bad)
    with pytest.raises(ValueError, match="baseline must have the shape"):
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
    a = abc_confidence(cnn, x, **kw)
    b = abc_confidence(cnn, x, keep_masks=False, **kw)
    assert b.masks is None
    assert torch.equal(a.labels, b.labels) and torch.equal(a.reference_index, b.reference_index)


def _replay(model, x, refs, r):
    """Labels of the copies rebuilt by hand from ``r.masks`` and ``r.reference_index`` (refs ``(N|1) x K x ...``)."""
    n, s = r.labels.shape
    ref = refs[torch.arange(n).view(-1, 1) if refs.shape[0] > 1 else 0, r.reference_index]   # N x S x ...
    xs = torch.where(r.masks, ref, x.unsqueeze(1)).reshape(n * s, *x.shape[1:])
    with torch.inference_mode():
        return model(xs).argmax(1).view(n, s)


def test_returned_masks_are_the_masks_used(cnn, mnist_small):
    x = mnist_small[0][:3]
    r = abc_confidence(cnn, x, n_samples=100, budget=40, n_steps=8, return_details=True, forward_mode="eager")
    assert torch.equal(_replay(cnn, x, torch.zeros(1, 1, *x.shape[1:]), r), r.labels)
    # several references: a mutated feature takes its value in the sample's reference
    refs = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    r = abc_confidence(cnn, x, method="expected_gradients", references=refs, n_samples=60, budget=40,
                       return_details=True, forward_mode="eager", chunk_size=50)
    assert set(r.reference_index.unique().tolist()) == {0, 1, 2}
    assert torch.equal(_replay(cnn, x, refs.unsqueeze(0), r), r.labels)


def test_masks_do_not_depend_on_chunks_other_inputs_or_sample_count(cnn, mnist_small):
    x = mnist_small[0][:4]
    kw = dict(budget=30, n_steps=8, seed=2, return_details=True)
    a = abc_confidence(cnn, x, n_samples=150, **kw)
    for chunk in (1, 7, 64, 149, 151, 10_000):
        assert torch.equal(abc_confidence(cnn, x, n_samples=150, chunk_size=chunk, **kw).masks, a.masks)
    # the other inputs do not matter: x[:2] gets the same masks as the first two inputs of x
    assert torch.equal(abc_confidence(cnn, x[:2], n_samples=150, **kw).masks, a.masks[:2])
    # more samples: the first 150 are the same
    assert torch.equal(abc_confidence(cnn, x, n_samples=200, **kw).masks[:, :150], a.masks)


def test_mutation_frequency_is_the_inclusion_probability(cnn, mnist_small):
    """Poisson sampling: feature j is mutated in a fraction p_j of the samples (binomial error bars)."""
    x = mnist_small[0][:2]
    s = 4000
    r = abc_confidence(cnn, x, n_samples=s, budget=60, n_steps=8, return_details=True)
    freq = r.masks.flatten(2).float().mean(1)                      # N x d
    p = r.inclusion
    sd = (p * (1 - p) / s).sqrt()
    assert torch.all((freq - p).abs() <= 5 * sd + 1e-6)
    assert torch.all(freq[p == 0] == 0) and torch.all(freq[p == 1] == 1)
    # independence across features: the count of mutations has the Poisson-binomial variance sum p (1 - p)
    counts = r.masks.flatten(2).sum(2).float()
    var = (p * (1 - p)).sum(1)
    assert torch.all((counts.var(1) / var - 1).abs() < 0.15)


def test_thread_count_is_restored(cnn, mnist_small):
    before = torch.get_num_threads()
    abc_confidence(cnn, mnist_small[0][:2], n_samples=20, budget=10, n_steps=4, return_details=True)
    assert torch.get_num_threads() == before
