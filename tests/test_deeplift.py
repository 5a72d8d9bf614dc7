"""DeepLift / DeepSHAP: the fast pair path (helpers.deepshap.deepshap_multipliers) against the general hook version,
with and without the fused numba kernels, on the cached models and on small chains that exercise every branch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import deepshap_kernels as deeplift_kernels
from helpers.attribution import attribute
from helpers.deepshap import deeplift_multipliers, deepshap_chain, deepshap_multipliers


def reference_deepshap(model, x, refs, target):
    """DeepSHAP from the general hook version, pair by pair (refs: (1|N) x K x ...)."""
    n, k = x.shape[0], refs.shape[1]
    r = refs.expand(n, *refs.shape[1:])
    xe = x.unsqueeze(1).expand(n, k, *x.shape[1:]).reshape(n * k, *x.shape[1:])
    m = deeplift_multipliers(model, xe, r.reshape(n * k, *x.shape[1:]), target.repeat_interleave(k)).view(r.shape)
    return ((x.unsqueeze(1) - r) * m).mean(1), m.mean(1)


def close(a, b, tol=1e-5):
    return float((a - b).norm() / b.norm().clamp_min(1e-12)) < tol


@pytest.fixture(params=[True, False], ids=["numba", "torch-ops"])
def fused(request, monkeypatch):
    """Run a test with the fused CPU kernels and with the plain torch-op rules."""
    if request.param and not deeplift_kernels.AVAILABLE:
        pytest.skip("numba not installed")
    monkeypatch.setattr(deeplift_kernels, "AVAILABLE", request.param)
    return request.param


class OddChain(nn.Module):
    """A chain with every non-default branch: a 2-channel strided first conv (fold path), an overlapping max pool
    (index path), a strided conv (conv2d_input path), Tanh and Softplus (autograd fallback derivative)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.c1 = nn.Conv2d(2, 6, 3, stride=2, padding=1)
        self.a1 = nn.Tanh()
        self.p1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.c2 = nn.Conv2d(6, 8, 3, stride=2)
        self.a2 = nn.Softplus()
        self.p2 = nn.MaxPool2d(2)
        self.fl = nn.Flatten()
        self.d = nn.Dropout(0.5)
        self.f = nn.Linear(8, 5)

    def forward(self, x):
        return self.f(self.d(self.fl(self.p2(self.a2(self.c2(self.p1(self.a1(self.c1(x)))))))))


class Residual(nn.Module):
    """Not a chain (a skip connection): deepshap_chain refuses it and attribute() uses the hook version."""

    def __init__(self):
        super().__init__()
        self.f1, self.act, self.f2 = nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 784)
        self.out = nn.Linear(784, 10)

    def forward(self, x):
        z = x.flatten(1)
        return self.out(z + self.f2(self.act(self.f1(z))))


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_fast_path_equals_hook_version_on_models(name, fused, mnist_small):
    from helpers.data import load_mnist
    from helpers.models import get_model

    model = get_model(name)
    x = mnist_small[0][:3]
    bg = load_mnist("train")[0][:7]
    t = model(x).argmax(1)
    a, g = deepshap_multipliers(model, x, bg.unsqueeze(0), t, pairs_per_chunk=8)   # several chunks
    ra, rg = reference_deepshap(model, x, bg.unsqueeze(0), t)
    assert close(a, ra) and close(g, rg)
    # DeepSHAP's completeness: sum_j A_j = f(x) - mean_k f(r_k)
    with torch.no_grad():
        gap = a.flatten(1).sum(1) - (model(x).gather(1, t.view(-1, 1)).squeeze(1)
                                     - model(bg)[:, t].mean(0))
    assert gap.abs().max() < 1e-3


def test_fast_path_per_input_references_and_every_branch(fused):
    model = OddChain().eval()
    assert deepshap_chain(model) is not None
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 20, 20, generator=g)
    refs = torch.rand(3, 4, 2, 20, 20, generator=g)
    refs[:, 0] = x          # a reference equal to its input: every difference is 0 (the fallback branches)
    t = torch.tensor([0, 3, 4])
    a, m = deepshap_multipliers(model, x, refs, t, pairs_per_chunk=4)
    ra, rm = reference_deepshap(model, x, refs, t)
    assert close(a, ra) and close(m, rm)


def test_non_chain_model_falls_back_to_hooks():
    model = Residual().eval()
    assert deepshap_chain(model) is None
    with pytest.raises(ValueError, match="chain"):
        deepshap_multipliers(model, torch.rand(1, 1, 28, 28), torch.rand(1, 2, 1, 28, 28), torch.tensor([0]))
    x, bg = torch.rand(2, 1, 28, 28), torch.rand(5, 1, 28, 28)
    t = torch.tensor([1, 2])
    a = attribute(model, x, t, method="deepshap", references=bg)
    ra, _ = reference_deepshap(model, x, bg.unsqueeze(0), t)
    assert close(a, ra)


def test_attribute_deepshap_uses_the_fast_path_and_matches(cnn, mnist_small, monkeypatch):
    from helpers import deepshap as deeplift
    from helpers.data import load_mnist

    x = mnist_small[0][:2]
    bg = load_mnist("train")[0][:5]
    calls = []
    real = deeplift.deepshap_multipliers
    monkeypatch.setattr("helpers.attribution.deepshap_multipliers",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    a = attribute(cnn, x, method="deepshap", references=bg)
    assert calls, "the chain model did not take the fast path"
    ra, _ = reference_deepshap(cnn, x, bg.unsqueeze(0), cnn(x).argmax(1))
    assert close(a, ra)
