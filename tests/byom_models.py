"""Small "bring your own model" classifiers for tests/test_byom.py, built by hand (no torchvision).

Each builder is seeded and returns a model in eval mode; none trains for more than a few dozen full-batch steps.
They are the shapes a user brings that our MNIST models are not: a residual CNN with BatchNorm and in-place ReLUs on
3-channel images, a tabular MLP on standardised features, a LeNet that flattens with ``.view``, a softmax head, a
single binary logit, two inputs ``model(x1, x2)`` and an extra forward argument ``model(x, mask)``.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _seed(seed: int) -> None:
    torch.manual_seed(seed)


class BasicBlock(nn.Module):
    """conv-BN-ReLU(inplace)-conv-BN + identity, then ReLU(inplace): a ResNet basic block."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + x)


class ResNetTiny(nn.Module):
    """3 x H x W -> n_classes logits: stem conv-BN-ReLU(inplace), one basic block, global average pool, linear."""

    def __init__(self, in_channels: int = 3, width: int = 8, n_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.block = BasicBlock(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (so that a wrong BN rule would show)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.3 * torch.randn(c, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            m.weight.data.copy_(0.8 + 0.4 * torch.rand(c, generator=gen))
            m.bias.data.copy_(0.2 * torch.randn(c, generator=gen))


def resnet_tiny(seed: int = 0, size: int = 8, n_classes: int = 10) -> Tuple[nn.Module, torch.Tensor]:
    """(model, x): the residual CNN (random seeded weights, randomised BN) and 16 normalised 3 x size x size images.

    The images are standardised like torchvision's ImageNet inputs (roughly in [-2, 2.5]), so any clamp to [0, 1]
    would show.
    """
    _seed(seed)
    model = ResNetTiny(3, 8, n_classes)
    _randomise_batchnorm(model, torch.Generator().manual_seed(seed + 1))
    x = torch.randn(16, 3, size, size, generator=torch.Generator().manual_seed(seed + 2))
    return model.eval(), x


class LeNet(nn.Module):
    """1 x 28 x 28 -> 10 logits; flattens with ``.view`` (Quantus's / captum's test LeNet)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 8, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = x.view(x.shape[0], -1)            # needs a contiguous (NCHW) activation: a channels-last copy breaks it
        return self.fc2(self.relu3(self.fc1(x)))


def lenet(seed: int = 0) -> Tuple[nn.Module, torch.Tensor]:
    """(model, x): the LeNet (random seeded weights) and 8 non-binary 1 x 28 x 28 images in [0, 1]."""
    _seed(seed)
    model = LeNet()
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(seed + 2))
    return model.eval(), x


def breast_cancer(seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's breast-cancer data, standardised on a seeded training half: (x_train, y_train, x_test, y_test).

    ``x`` float32 ``N x 30`` (features in roughly [-3, 12]), ``y`` int64 in {0, 1}.
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    y = data.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    tr, te = perm[: len(y) // 2], perm[len(y) // 2:]
    mu, sd = x[tr].mean(0), x[tr].std(0)
    x = (x - mu) / sd
    return (torch.from_numpy(x[tr]), torch.from_numpy(y[tr]), torch.from_numpy(x[te]), torch.from_numpy(y[te]))


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, loss_fn) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return model.eval()


def tabular_mlp(seed: int = 0, steps: int = 60) -> Tuple[nn.Module, Tuple[torch.Tensor, ...]]:
    """(model, (x_train, y_train, x_test, y_test)): a 30-16-16-2 ReLU MLP trained for ``steps`` full-batch steps."""
    data = breast_cancer(seed)
    _seed(seed)
    model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    return _fit(model, data[0], data[1], steps, F.cross_entropy), data


def softmax_mlp(seed: int = 0, steps: int = 60) -> Tuple[nn.Module, Tuple[torch.Tensor, ...]]:
    """(model, data): the tabular MLP with an ``nn.Softmax`` head (it returns probabilities, not logits)."""
    mlp, data = tabular_mlp(seed, steps)
    return nn.Sequential(*mlp, nn.Softmax(dim=1)).eval(), data


class BinaryLogit(nn.Module):
    """30 features -> one logit ``N x 1`` (class 1's score is the logit, class 0's its negative)."""

    def __init__(self, squeeze: bool = False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
        self.squeeze = squeeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return z.squeeze(1) if self.squeeze else z


def binary_logit(seed: int = 0, steps: int = 60, squeeze: bool = False) -> Tuple[nn.Module, Tuple[torch.Tensor, ...]]:
    """(model, data): a single-output binary classifier (``N x 1``, or ``N`` with ``squeeze=True``)."""
    data = breast_cancer(seed)
    _seed(seed)
    model = BinaryLogit(squeeze)

    def loss(z, y):
        return F.binary_cross_entropy_with_logits(z.reshape(-1), y.float())

    return _fit(model, data[0], data[1], steps, loss), data


class TwoInput(nn.Module):
    """``model(x1, x2)``: x1 ``N x 6``, x2 ``N x 4`` -> 3 logits (two branches, concatenated, a ReLU head)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(4, 8)
        self.relu = nn.ReLU()
        self.head = nn.Linear(16, 3)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(torch.cat([self.a(x1), self.b(x2)], dim=1)))


def two_input(seed: int = 0) -> Tuple[nn.Module, Tuple[torch.Tensor, torch.Tensor]]:
    """(model, (x1, x2)): random seeded weights, 8 standard-normal inputs of each kind."""
    _seed(seed)
    model = TwoInput().eval()
    g = torch.Generator().manual_seed(seed + 2)
    return model, (torch.randn(8, 6, generator=g), torch.randn(8, 4, generator=g))


class Masked(nn.Module):
    """``model(x, mask)``: x ``N x 8``, mask ``N x 8`` (0/1) -> 3 logits of ``relu(W1 (x * mask))``."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 12)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x * mask)))


def masked(seed: int = 0) -> Tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model, x, mask): random seeded weights, 8 inputs, a mask that hides the last two features of every input."""
    _seed(seed)
    model = Masked().eval()
    x = torch.randn(8, 8, generator=torch.Generator().manual_seed(seed + 2))
    mask = torch.ones(8, 8)
    mask[:, -2:] = 0
    return model, x, mask
