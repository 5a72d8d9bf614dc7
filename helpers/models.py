"""Small MNIST models, trained once on first use and cached under ``data/models/``.

Every architecture uses a distinct ``nn.ReLU`` / ``nn.MaxPool2d`` module per use and no functional or in-place
non-linearity, so captum's and shap's hook-based explainers work on them. Names (``get_model(name)``): ``"cnn"``
(2 conv + 2 dense, >= 99% test accuracy), ``"mlp"`` (784-256-128-10, >= 97.5%), ``"mlp_softplus"`` (smooth, for the
Hessian check), ``"cnn_dropout"`` (MC dropout), ``"cnn_robust"`` (FGSM-RS adversarial training at ``ROBUST_EPS``).
A cache is a ``state_dict`` plus JSON metadata (seed, epochs, accuracies, torch version, SHA-256 of the weights), both
written atomically; weights that do not match their checksum, or another architecture version, are retrained.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import DATA_DIR
from . import device as default_device
from .io import atomic_path, atomic_write_json, sha256_file

__all__ = ["MODEL_NAMES", "ROBUST_EPS", "MnistCNN", "MnistMLP", "get_model", "model_info", "model_dir",
           "accuracy", "train_model"]

#: L-infinity radius of the adversarial training of ``"cnn_robust"`` (pixels in [0, 1]).
ROBUST_EPS = 0.1
#: Bump when an architecture or recipe changes: caches with another version are retrained.
ARCH_VERSION = 1

Device = Optional[Union[str, torch.device]]


class MnistCNN(nn.Module):
    """conv(1->16, 5x5)-ReLU-maxpool-conv(16->32, 5x5)-ReLU-maxpool-fc(1568->128)-ReLU-[dropout]-fc(10).

    Input ``N x 1 x 28 x 28`` in [0, 1]; output logits ``N x 10``.
    """

    def __init__(self, dropout: float = 0.0, activation: Callable[[], nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.conv1, self.act1, self.pool1 = nn.Conv2d(1, 16, 5, padding=2), activation(), nn.MaxPool2d(2)
        self.conv2, self.act2, self.pool2 = nn.Conv2d(16, 32, 5, padding=2), activation(), nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.drop1 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc1, self.act3 = nn.Linear(32 * 7 * 7, 128), activation()
        self.drop2 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``N x 128`` (after the last ReLU), e.g. for Trust Score."""
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        return self.act3(self.fc1(self.drop1(self.flatten(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop2(self.features(x)))


class MnistMLP(nn.Module):
    """784-256-128-10 multilayer perceptron. Input ``N x 1 x 28 x 28``; output logits ``N x 10``."""

    def __init__(self, activation: Callable[[], nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1, self.act1 = nn.Linear(784, 256), activation()
        self.fc2, self.act2 = nn.Linear(256, 128), activation()
        self.fc3 = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``N x 128``."""
        return self.act2(self.fc2(self.act1(self.fc1(self.flatten(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.features(x))


@dataclass(frozen=True)
class ModelSpec:
    """How to build and train one named model."""

    build: Callable[[], nn.Module]
    epochs: int
    lr: float = 2e-3
    batch_size: int = 128
    adversarial_eps: float = 0.0
    note: str = ""


_SPECS: Dict[str, ModelSpec] = {
    "cnn": ModelSpec(MnistCNN, epochs=5, note="ReLU CNN"),
    "mlp": ModelSpec(MnistMLP, epochs=5, note="ReLU MLP"),
    "mlp_softplus": ModelSpec(lambda: MnistMLP(nn.Softplus), epochs=8,
                              note="smooth (Softplus) MLP for the Hessian check"),
    "cnn_dropout": ModelSpec(lambda: MnistCNN(0.25), epochs=5, note="CNN with dropout p=0.25 for MC dropout"),
    "cnn_robust": ModelSpec(MnistCNN, epochs=3, adversarial_eps=ROBUST_EPS,
                            note=f"FGSM-RS adversarial training, eps={ROBUST_EPS}"),
}
MODEL_NAMES = tuple(_SPECS)


def model_dir() -> Path:
    """Folder of the model caches (``data/models``)."""
    return DATA_DIR / "models"


def _paths(name: str):
    return model_dir() / f"{name}.pt", model_dir() / f"{name}.json"


def _check_name(name: str) -> ModelSpec:
    if name not in _SPECS:
        raise ValueError(f"unknown model {name!r}; valid names are {', '.join(MODEL_NAMES)}")
    return _SPECS[name]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> float:
    """Fraction of ``x`` (``N x 1 x 28 x 28``) whose predicted label equals ``y`` (``N``)."""
    from .batching import predict

    return float((predict(model, x, batch_size=batch_size).cpu() == y.cpu()).float().mean())


def _fgsm_rs_batch(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, eps: float,
                   gen: torch.Generator) -> torch.Tensor:
    """FGSM with a uniform random start and step 1.25 eps (Wong, Rice & Kolter 2020), clipped to [0, 1]."""
    delta = (torch.rand(xb.shape, generator=gen, device=xb.device) * 2 - 1) * eps
    delta.requires_grad_(True)
    loss = F.cross_entropy(model((xb + delta).clamp(0, 1)), yb)
    (grad,) = torch.autograd.grad(loss, delta)
    delta = (delta.detach() + 1.25 * eps * grad.sign()).clamp(-eps, eps)
    return (xb + delta).clamp(0, 1)


def _fit(model: nn.Module, spec: ModelSpec, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
         progress: bool, name: str) -> None:
    """Adam + one-cycle schedule, ``spec.epochs`` epochs of shuffled mini-batches (FGSM-RS inputs if adversarial)."""
    from tqdm.auto import tqdm

    steps = math.ceil(len(x) / spec.batch_size)  # batches per epoch
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=spec.epochs * steps)
    bar = tqdm(total=spec.epochs * steps, desc=f"training {name}", disable=not progress, leave=False, mininterval=2.0)
    model.train()
    for _epoch in range(spec.epochs):
        order = torch.randperm(len(x), generator=gen, device=x.device)
        for i, idx in enumerate(order.split(spec.batch_size)):
            xb, yb = x[idx], y[idx]
            if spec.adversarial_eps > 0:
                xb = _fgsm_rs_batch(model, xb, yb, spec.adversarial_eps, gen)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            if i % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()


def train_model(name: str, *, seed: int = 0, device: Device = None, progress: bool = True) -> Dict[str, object]:
    """Train model ``name`` from scratch, cache it atomically under ``data/models/`` and return its metadata."""
    from .data import load_mnist

    spec = _check_name(name)
    dev = torch.device(device or default_device())
    torch.manual_seed(seed)
    gen = torch.Generator(device=dev).manual_seed(seed)
    model = spec.build().to(dev)
    x_train, y_train = load_mnist("train")
    t0 = time.perf_counter()
    _fit(model, spec, x_train.to(dev), y_train.to(dev), gen, progress, name)
    (x_val, y_val), (x_test, y_test) = load_mnist("val"), load_mnist("test")
    meta: Dict[str, object] = dict(
        name=name, arch_version=ARCH_VERSION, note=spec.note, seed=seed, epochs=spec.epochs, batch_size=spec.batch_size,
        lr=spec.lr, train_seconds=round(time.perf_counter() - t0, 1), train_device=str(dev),
        torch_version=torch.__version__, val_accuracy=accuracy(model, x_val, y_val),
        test_accuracy=accuracy(model, x_test, y_test), n_parameters=sum(p.numel() for p in model.parameters()))
    if spec.adversarial_eps > 0:
        from .shifts import pgd

        x_adv = pgd(model, x_test[:1000].to(dev), y_test[:1000].to(dev), eps=spec.adversarial_eps, steps=20, seed=seed)
        meta.update(adversarial_eps=spec.adversarial_eps, pgd_steps=20, pgd_n_images=1000,
                    pgd_accuracy=accuracy(model, x_adv, y_test[:1000]))
    weights, meta_path = _paths(name)
    with atomic_path(weights, suffix=".pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
        meta["weights_sha256"] = sha256_file(tmp)
    atomic_write_json(meta_path, meta)
    return meta


def model_info(name: str) -> Dict[str, object]:
    """Metadata of model ``name`` (training it first if it is not cached)."""
    _check_name(name)
    if not _cache_valid(name):
        return train_model(name)
    return json.loads(_paths(name)[1].read_text())


def _cache_valid(name: str) -> bool:
    weights, meta_path = _paths(name)
    if not weights.exists() or not meta_path.exists():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        warnings.warn(f"model metadata {meta_path} is unreadable; retraining {name}", stacklevel=3)
        return False
    if meta.get("arch_version") != ARCH_VERSION or meta.get("epochs") != _SPECS[name].epochs:
        return False  # trained by another recipe
    if meta.get("weights_sha256") != sha256_file(weights):
        warnings.warn(f"{weights} does not match its recorded checksum (corrupt or truncated); retraining {name}",
                      stacklevel=3)
        return False
    return True


def get_model(name: str = "cnn", device: Device = None) -> nn.Module:
    """Return model ``name`` in eval mode on ``device`` (default :func:`helpers.device`).

    The first call trains the model (with a progress bar) and caches it; later calls load it in well under a second.
    """
    spec = _check_name(name)
    model_info(name)  # trains and caches the model on first use
    model = spec.build()
    model.load_state_dict(torch.load(_paths(name)[0], map_location="cpu", weights_only=True))
    return model.to(device or default_device()).eval()
