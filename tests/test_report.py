"""helpers.report and helpers.io: atomic writes, JSON conversion, report assembly."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import io, report  # noqa: E402


def test_save_results_converts_and_builds_report(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = report.save_results("99_demo", {"auroc": np.float32(0.75), "n": torch.tensor(3), "nan": float("nan")},
                               tables={"rows": [{"method": "a", "auroc": 0.5}]}, figures={"curve": fig},
                               results_dir=tmp_path / "results")
    data = json.loads(path.read_text())
    assert data["results"] == {"auroc": pytest.approx(0.75), "n": 3, "nan": None}
    assert (tmp_path / "results" / "99_demo" / "curve.png").stat().st_size > 1000
    md = report.build_report(tmp_path / "results", tmp_path / "report.md").read_text()
    assert "## 99_demo" in md and "| method | auroc |" in md and "results/99_demo/curve.png" in md


def test_save_results_rejects_bad_name(tmp_path):
    with pytest.raises(ValueError, match="name"):
        report.save_results("a/b", {}, results_dir=tmp_path)


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    dest = tmp_path / "x.bin"
    with pytest.raises(RuntimeError):
        with io.atomic_path(dest) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    io.atomic_write_bytes(dest, b"ok")
    assert dest.read_bytes() == b"ok" and io.sha256_file(dest) == io.sha256_bytes(b"ok")
