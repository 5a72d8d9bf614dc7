"""helpers.models: accuracy re-measured on the test split, caching, architecture constraints, bad names."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from helpers import models as M
from helpers.data import load_mnist

THRESHOLDS = {"cnn": 0.99, "mlp": 0.975, "cnn_dropout": 0.985, "cnn_robust": 0.97, "mlp_softplus": 0.97}


@pytest.mark.parametrize("name", sorted(THRESHOLDS))
def test_test_accuracy_remeasured(name):
    model = M.get_model(name, device="cpu")
    x, y = load_mnist("test")
    acc = M.accuracy(model, x, y)
    assert acc >= THRESHOLDS[name], f"{name}: test accuracy {acc:.4f} < {THRESHOLDS[name]}"
    assert abs(acc - M.model_info(name)["test_accuracy"]) < 1e-6  # metadata records the truth


def test_robust_model_is_more_robust_than_standard():
    from helpers.shifts import pgd

    info = M.model_info("cnn_robust")
    eps = info["adversarial_eps"]
    x, y = load_mnist("test")
    x, y = x[:256], y[:256]
    accs = {}
    for name in ("cnn", "cnn_robust"):
        model = M.get_model(name, device="cpu")
        accs[name] = M.accuracy(model, pgd(model, x, y, eps=eps, steps=10), y)
    assert accs["cnn_robust"] > accs["cnn"] + 0.2, accs
    assert accs["cnn_robust"] > 0.8


def test_cached_model_loads_fast_and_in_eval_mode():
    M.get_model("cnn", device="cpu")
    t0 = time.perf_counter()
    model = M.get_model("cnn", device="cpu")
    assert time.perf_counter() - t0 < 1.0
    assert not model.training


def test_metadata_fields():
    info = M.model_info("cnn")
    for key in ("seed", "epochs", "test_accuracy", "val_accuracy", "torch_version", "train_seconds", "weights_sha256"):
        assert key in info


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="cnn.*mlp"):
        M.get_model("resnet")


@pytest.mark.parametrize("name", ["cnn", "mlp", "cnn_dropout", "cnn_robust"])
def test_distinct_nonlinearity_modules_and_no_inplace(name):
    model = M.get_model(name, device="cpu")
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(relus) >= 2 and len({id(m) for m in relus}) == len(relus)
    assert len({id(m) for m in pools}) == len(pools)
    assert not any(m.inplace for m in relus)


def test_shap_deep_explainer_additivity_on_cnn():
    """shap.DeepExplainer checks additivity (sum of SHAP values = f(x) - E f(background)) and raises if it fails."""
    import shap

    model = M.get_model("cnn", device="cpu")
    x, _ = load_mnist("test")
    background, inputs = x[:20], x[100:103]
    explainer = shap.DeepExplainer(model, background)
    values = explainer.shap_values(inputs, check_additivity=True)
    with torch.no_grad():
        fx = model(inputs)
        fb = model(background).mean(0)
    total = torch.as_tensor(values, dtype=torch.float32).sum(dim=(1, 2, 3))  # 3 x 10 (inputs x classes)
    assert torch.allclose(total, fx - fb, atol=1e-3)


def test_captum_deeplift_runs_on_cnn():
    """captum's DeepLift hooks every nn.ReLU / nn.MaxPool2d module: it must run and be nearly complete.

    captum's max-pool rule is not exactly complete (sum of attributions vs f(x) - f(0) differs by ~1e-2 logits here;
    helpers.attribution's "deepshap" uses shap's exact rules instead), so the bound is relative.
    """
    from captum.attr import DeepLift

    model = M.get_model("cnn", device="cpu")
    x, _ = load_mnist("test")
    attr, delta = DeepLift(model).attribute(x[:4], target=0, return_convergence_delta=True)
    total = attr.sum(dim=(1, 2, 3)).abs()
    assert attr.shape == x[:4].shape
    assert bool((delta.abs() <= 0.02 * total.clamp_min(1.0)).all()), (delta, total)


def test_corrupt_weights_are_not_loaded(tmp_path, monkeypatch):
    """A weights file that does not match its recorded checksum is reported and retrained, never loaded."""
    meta = M.model_info("mlp")
    monkeypatch.setattr(M, "DATA_DIR", tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mlp.pt").write_bytes(b"truncated")
    (tmp_path / "models" / "mlp.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="checksum"):
        assert M._cache_valid("mlp") is False


def test_interrupted_training_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "DATA_DIR", tmp_path)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        M.train_model("mlp", progress=False)
    leftovers = list((tmp_path / "models").glob("*")) if (tmp_path / "models").exists() else []
    assert leftovers == []
