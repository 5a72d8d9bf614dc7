"""helpers top level (device, seed, scale) and the public names of DESIGN.md that notebooks and users rely on."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import helpers

PUBLIC_NAMES = {
    "helpers": ["device", "seed_everything", "scale"],
    "helpers.data": ["load_mnist", "load_digits_shift", "load_animal_shapes"],
    "helpers.models": ["get_model"],
    "helpers.batching": ["run_chunked", "forward", "predict"],
    "helpers.attribution": ["attribute"],
    "helpers.abc": ["abc_confidence"],
    "helpers.perturbations": ["NoisyBaseline", "Square", "Gaussian", "ConstantBaseline", "ShapSubset", "Fixed"],
    "helpers.infidelity": ["infidelity", "to_units", "beta_rescale"],
    "helpers.sensitivity": ["sensitivity_max"],
    "helpers.optimal": ["optimal_explanation"],
    "helpers.smoothing": ["smooth", "KERNELS"],
    "helpers.sanity": ["explanation_suite", "randomized_models"],
    "helpers.fidelity": ["infidelity", "sensitivity_max", "optimal_explanation", "smooth", "NoisyBaseline"],  # shim
    "helpers.calibration": ["TemperatureScaling", "PlattScaling", "CombinedConfidence"],
    "helpers.metrics": ["error_auroc", "aurc", "risk_coverage", "ece", "ood_auroc", "bootstrap_ci"],
    "helpers.shifts": ["fgsm", "pgd"],
    "helpers.report": ["save_results"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC_NAMES))
def test_public_names_exist(module):
    mod = importlib.import_module(module)
    missing = [n for n in PUBLIC_NAMES[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lacks {missing}"


def test_scale_reads_environment(monkeypatch):
    monkeypatch.setenv("SCALE", "full")
    assert helpers.scale() == "full" and helpers.is_full()
    monkeypatch.setenv("SCALE", "Quick")
    assert helpers.scale() == "quick"
    monkeypatch.setenv("SCALE", "huge")
    with pytest.raises(ValueError, match="SCALE"):
        helpers.scale()
    monkeypatch.delenv("SCALE")
    assert helpers.scale() == ("full" if torch.cuda.is_available() else "quick")


def test_device_prefers_override_then_cuda(monkeypatch):
    monkeypatch.setenv("HELPERS_DEVICE", "cpu")
    assert helpers.device() == torch.device("cpu")
    monkeypatch.delenv("HELPERS_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert helpers.device().type == expected


def test_seed_everything_repeats_every_generator():
    g1 = helpers.seed_everything(123)
    a = (np.random.rand(3), torch.rand(3), torch.rand(3, generator=g1))
    g2 = helpers.seed_everything(123)
    b = (np.random.rand(3), torch.rand(3), torch.rand(3, generator=g2))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    with pytest.raises(TypeError, match="seed"):
        helpers.seed_everything(1.5)


def test_readme_lists_every_module_and_links_to_the_one_repository():
    import re

    readme = (helpers.PROJECT_ROOT / "README.md").read_text()
    modules = sorted(p.stem for p in (helpers.PROJECT_ROOT / "helpers").glob("*.py") if not p.stem.startswith("_"))
    missing = [m for m in modules if f"helpers.{m}`" not in readme]
    assert not missing, f"README's module table lacks {missing}"
    slugs = set(re.findall(r"(?:github\.com|/gh)/([\w.-]+/[\w.-]+?)(?:/|\.git|\))", readme))
    assert slugs == {helpers.GITHUB_REPO}, slugs


def test_repo_command_repoints_every_link(tmp_path, monkeypatch, capsys):
    import shutil

    from helpers.__main__ import main

    for rel in ("helpers/__init__.py", "README.md", "notebooks/00_setup_data_models.ipynb"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(helpers.PROJECT_ROOT / rel, tmp_path / rel)
    monkeypatch.setattr(helpers, "PROJECT_ROOT", tmp_path)
    assert main(["repo", "not a slug"]) == 2
    assert main(["repo", "my-course/abc-notebooks"]) == 0
    for rel in ("helpers/__init__.py", "README.md", "notebooks/00_setup_data_models.ipynb"):
        text = (tmp_path / rel).read_text()
        assert helpers.GITHUB_REPO not in text and "my-course/abc-notebooks" in text, rel
