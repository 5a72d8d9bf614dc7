"""DeepLift / DeepSHAP: the fast pair path (helpers.deepshap.deepshap_multipliers, numba kernels) against the general
hook version, on the cached models and on small chains that exercise every branch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

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


class OddChain(nn.Module):
    """A chain with every non-default branch: a 2-channel strided first conv (fold path), a max pool whose windows
    leave a remainder uncovered, a strided conv (conv2d_input path), Tanh and Softplus (autograd fallback derivative)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.c1 = nn.Conv2d(2, 6, 3, stride=2, padding=1)
        self.a1 = nn.Tanh()
        self.p1 = nn.MaxPool2d(2)
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
def test_fast_path_equals_hook_version_on_models(name, mnist_small):
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


def test_fast_path_per_input_references_and_every_branch():
    model = OddChain().eval()
    assert deepshap_chain(model) is not None
    assert deepshap_chain(nn.Sequential(nn.MaxPool2d(3, 2, 1))) is None      # overlapping windows: the hook version
    assert deepshap_chain(model, torch.rand(1, 2, 22, 22, dtype=torch.float64)) is None   # the kernels: float32 CPU
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 22, 22, generator=g)          # 11 x 11 into the first pool: a remainder row and column
    refs = torch.rand(3, 4, 2, 22, 22, generator=g)
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


# ------------------------------------------------------------------ shap's rules on models outside MNIST


def shap_values(model, background, x, target):
    """shap.DeepExplainer's attributions of logit ``target`` (N x ...)."""
    import warnings

    shap = pytest.importorskip("shap")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sv = torch.as_tensor(shap.DeepExplainer(model, background).shap_values(x, check_additivity=False)).float()
    return sv.movedim(-1, 1)[torch.arange(x.shape[0]), target]


def summing_unpool(inp, idx, kernel_size, stride=None, padding=0, output_size=None):
    """max_unpool that adds the values of windows sharing an argmax (shap's scatter keeps one of them)."""
    n, c = output_size[0], output_size[1]
    out = inp.new_zeros(n, c, int(torch.tensor(output_size[2:]).prod()))
    return out.scatter_add_(2, idx.flatten(2), inp.flatten(2)).view(output_size)


def out_of_place(model):
    import copy

    m = copy.deepcopy(model)
    for mod in m.modules():
        if hasattr(mod, "inplace"):
            mod.inplace = False
    return m


def additivity_gap(model, x, refs, t, a):
    with torch.no_grad():
        delta = model(x).gather(1, t.view(-1, 1)).squeeze(1) - model(refs)[:, t].mean(0)
    return float((a.flatten(1).sum(1) - delta).abs().max())


@pytest.mark.parametrize("pool", ["overlapping", "disjoint"])
def test_residual_cnn_with_batchnorm_inplace_relu_matches_shap(pool, monkeypatch):
    from test_attribution import ResCNN

    model = ResCNN(nn.MaxPool2d(3, 2, 1) if pool == "overlapping" else nn.MaxPool2d(2)).eval()
    g = torch.Generator().manual_seed(5)
    x, bg = torch.randn(3, 3, 8, 8, generator=g), torch.randn(6, 3, 8, 8, generator=g)
    t = torch.tensor([0, 1, 3])
    ours = attribute(model, x, t, method="deepshap", references=bg)           # in-place ReLUs: an out-of-place copy
    assert additivity_gap(model, x, bg, t, ours) < 1e-4
    if pool == "overlapping":   # shap overwrites where windows overlap (breaks additivity); with a summing unpool: ours
        assert additivity_gap(model, x, bg, t, shap_values(out_of_place(model), bg, x, t)) > 1e-3
        monkeypatch.setattr(torch.nn.functional, "max_unpool2d", summing_unpool)
    ref = shap_values(out_of_place(model), bg, x, t)
    assert close(ours, ref, 1e-4)


def test_softmax_head_and_maxpool1d_match_shap():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3), nn.Softmax(dim=1)).eval()
    g = torch.Generator().manual_seed(1)
    x, bg = 2 * torch.randn(4, 5, generator=g), 2 * torch.randn(7, 5, generator=g)
    t = torch.tensor([0, 1, 2, 1])
    ours = attribute(mlp, x, t, method="deepshap", references=bg, input_range=None)   # softmax: element-wise rule
    assert close(ours, shap_values(mlp, bg, x, t), 1e-4) and additivity_gap(mlp, x, bg, t, ours) < 1e-5
    conv1d = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(),
                           nn.Linear(4 * 5, 3)).eval()
    x, bg = torch.randn(3, 2, 10, generator=g), torch.randn(5, 2, 10, generator=g)
    t = torch.tensor([2, 0, 1])
    ours = attribute(conv1d, x, t, method="deepshap", references=bg, input_range=None)
    assert close(ours, shap_values(conv1d, bg, x, t), 1e-4) and additivity_gap(conv1d, x, bg, t, ours) < 1e-4


class FunctionalReLU(nn.Module):
    def __init__(self, branch=False):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.branch = nn.Linear(5, 8), nn.Linear(8, 3), branch

    def forward(self, x):
        if self.branch and bool(x.sum() > -1e9):      # data-dependent control flow: torch.fx cannot trace it
            return self.b(torch.nn.functional.relu(self.a(x)))
        return self.b(torch.nn.functional.relu(self.a(x)))


def test_functional_nonlinearity_is_refused_or_warned_and_unknown_modules_refused():
    x, bg = torch.randn(3, 5), torch.randn(4, 5)
    with pytest.raises(ValueError, match="functional"):
        attribute(FunctionalReLU().eval(), x, method="deepshap", references=bg)
    with pytest.warns(UserWarning, match="f\\(x\\) - mean f"):     # not traceable: the additivity check catches it
        attribute(FunctionalReLU(branch=True).eval(), x, method="deepshap", references=bg)
    with pytest.raises(ValueError, match="LayerNorm"):
        attribute(nn.Sequential(nn.Linear(5, 5), nn.LayerNorm(5), nn.Linear(5, 2)).eval(), x, method="deepshap",
                  references=bg)
