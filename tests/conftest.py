"""Shared pytest fixtures: small real data, cached models, and analytic toy models with known answers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("SCALE", "quick")
if str(Path(__file__).resolve().parents[1]) not in sys.path:  # `benchmarks` too under a bare `pytest` (not -m pytest)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("agg")  # this process only (not an environment variable): kernels still draw inline figures

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


@pytest.fixture(scope="session")
def mnist_test():
    """The MNIST test split (x: 10000 x 1 x 28 x 28 float32, y: 10000 int64)."""
    from helpers.data import load_mnist

    return load_mnist("test")


@pytest.fixture(scope="session")
def mnist_small(mnist_test):
    """The first 32 test images and labels (CPU)."""
    x, y = mnist_test
    return x[:32].clone(), y[:32].clone()


@pytest.fixture(scope="session")
def cnn():
    """The cached "cnn" model on the CPU, eval mode."""
    from helpers.models import get_model

    return get_model("cnn", device="cpu")


class LinearModel(nn.Module):
    """f(x) = W vec(x) + b: logits N x C from inputs N x 1 x H x W. Gradients, IG and infidelity are closed form."""

    def __init__(self, d: int = 16, n_classes: int = 3, seed: int = 0, shape=(1, 4, 4)) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.shape = shape
        self.linear = nn.Linear(d, n_classes)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(n_classes, d, generator=g))
            self.linear.bias.copy_(torch.randn(n_classes, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class QuadraticModel(nn.Module):
    """f_c(x) = v = xᵀ A_c x / 2 + w_cᵀ x: gradient A_c x + w_c and Hessian A_c known in closed form."""

    def __init__(self, d: int = 16, n_classes: int = 2, seed: int = 0, shape=(1, 4, 4)) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.shape = shape
        a = torch.randn(n_classes, d, d, generator=g)
        self.register_buffer("A", (a + a.transpose(1, 2)) / 2)
        self.register_buffer("w", torch.randn(n_classes, d, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)
        return 0.5 * torch.einsum("nd,cde,ne->nc", v, self.A, v) + v @ self.w.T

    def grad(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The closed-form gradient ``A_t x + w_t`` of each row's target logit, shaped like ``x``."""
        g = torch.einsum("cde,ne->ncd", self.A, x.flatten(1)) + self.w
        return g[torch.arange(x.shape[0]), target].reshape(x.shape)


@pytest.fixture
def linear_model():
    return LinearModel().eval()


@pytest.fixture
def quadratic_model():
    return QuadraticModel().eval()
