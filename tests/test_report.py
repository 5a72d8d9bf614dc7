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
    assert "### 99_demo" in md and "| method | auroc |" in md and "results/99_demo/curve.png" in md
    assert "_(no summary saved)_" in md


def test_report_opens_with_the_summary_and_the_quick_banner(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALE", "quick")
    summary = {"verdict": "ABC beats softmax", "headline": [
        {"name": "AUROC", "value": np.float64(0.91), "ci": [0.89, torch.tensor(0.93)]},
        {"name": "ECE", "value": 0.0018, "ci": [0.0019, 0.0066], "unit": ""}]}
    report.save_results("01_demo", {"x": 1}, summary=summary, tables={"big": [{"a": 1}]}, results_dir=tmp_path)
    md = report.build_report(tmp_path, tmp_path / "report.md").read_text()
    assert md.index("smoke test on subsets, not the paper-scale result") < md.index("## Summary") < md.index("## Appendix")
    line = next(x for x in md.splitlines() if x.startswith("| 01_demo"))
    assert "ABC beats softmax" in line and "AUROC 0.91 [0.89, 0.93]" in line
    assert "ECE 0.0018 [0.0019, 0.0066] (estimate outside its CI!)" in line
    assert md.index("**big**") > md.index("## Appendix")
    monkeypatch.setenv("SCALE", "full")
    report.save_results("01_demo", {"x": 1}, summary=summary, results_dir=tmp_path)
    assert "smoke test" not in report.build_report(tmp_path, tmp_path / "report.md").read_text()


@pytest.mark.parametrize("bad, match", [
    ({"headline": []}, "verdict"),
    ({"verdict": "v", "headline": [{"name": "a"}]}, r"headline'\]\[0\]"),
    ({"verdict": "v", "headline": [{"name": "a", "value": 1.0, "ci": [2, 1]}]}, "low <= high"),
    ({"verdict": "v", "headline": [{"name": str(i), "value": 1.0} for i in range(5)]}, "at most 4"),
])
def test_bad_summary_is_rejected(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        report.save_results("01_demo", {}, summary=bad, results_dir=tmp_path)


def test_plots_style_and_problems():
    from helpers import plots

    plt.rcdefaults()
    plots.style()
    assert plt.rcParams["xtick.labelsize"] >= plots.MIN_FONT_PT
    good = plots.risk_coverage_plot({"max softmax": np.linspace(0, 1, 50)}, np.arange(50) % 3 > 0)
    assert plots.problems(good) == []
    bad, ax = plt.subplots(figsize=(16, 3))
    ax.plot([0, 1], label="x_var")
    ax.tick_params(labelsize=7)
    found = " ".join(plots.problems(bad))
    assert "16.0 in wide" in found and "under 9 pt" in found and "no x or y label" in found
    plt.close("all")


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


def _summary(value, lo, hi, verdict="ABC trails softmax"):
    return {"verdict": verdict, "headline": [{"name": "AUROC of ABC", "value": value, "ci": [lo, hi]}]}


def test_full_run_is_published_with_provenance_and_quick_run_shows_it_beside_its_own(tmp_path, monkeypatch, capsys):
    full_dir, build = tmp_path / "results" / "full", tmp_path / "build"
    monkeypatch.setattr(report, "FULL_RESULTS_DIR", full_dir)
    monkeypatch.setattr(report, "RESULTS_DIR", build)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    monkeypatch.setenv("SCALE", "full")
    report.save_results("01_demo", {"x": 1}, summary=_summary(0.812, 0.78, 0.84), figures={"curve": fig})
    published = json.loads((full_dir / "01_demo.json").read_text())
    prov = published["provenance"]
    assert set(prov) >= {"date", "commit", "machine", "wall_seconds"} and prov["machine"]["cpu_cores"] >= 1
    assert isinstance(prov["uncommitted_changes"], list) and not any(p.startswith("results") for p in prov["uncommitted_changes"])
    assert prov["wall_seconds"] > 0 and (full_dir / published["figures"]["curve"]).stat().st_size > 500
    assert "published" in capsys.readouterr().out

    monkeypatch.setenv("SCALE", "quick")
    report.save_results("01_demo", {"x": 1}, summary=_summary(0.7, 0.6, 0.8))
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("AUROC of ABC"))
    assert "0.7 [0.6, 0.8]" in row and "0.812 [0.78, 0.84]" in row and row.index("0.7 [") < row.index("0.812")
    assert "Paper-scale verdict: ABC trails softmax" in out
    # the quick report gains a paper-scale column; the paper-scale report and the README section come from results/full
    md = report.build_report(build, tmp_path / "report.md", full_dir=full_dir).read_text()
    line = next(x for x in md.splitlines() if x.startswith("| 01_demo"))
    assert "AUROC of ABC 0.7 [0.6, 0.8]" in line and line.endswith("AUROC of ABC 0.812 [0.78, 0.84] |")
    full_md = report.build_full_report(full_dir).read_text()
    assert "ABC trails softmax" in full_md and "AUROC of ABC 0.812 [0.78, 0.84]" in full_md and "curve" in full_md
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\nrest\n")
    assert report.update_readme(readme, full_dir)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    assert "AUROC of ABC 0.812 [0.78, 0.84]" in text and "(results/full/REPORT.md)" in text
    assert not report.update_readme(readme, full_dir)  # idempotent
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        report.update_readme(readme, full_dir)


def test_no_paper_scale_results_means_no_table(tmp_path):
    assert report.paper_scale_table("01_demo", _summary(0.7, 0.6, 0.8), full_dir=tmp_path) == ""
    with pytest.raises(FileNotFoundError, match="SCALE=full make run"):
        report.build_full_report(tmp_path)
