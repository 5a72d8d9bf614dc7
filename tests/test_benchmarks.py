"""Smoke tests of the benchmark harness on tiny sizes: timing, ratios, PASS/BELOW, equality checks, outputs, CLI.

Nothing here asserts a timing: the fake clock makes the timing logic deterministic, and the real rows run on a few
images only to check that they produce a well-formed row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import Context, RowResult, Skip, compare_tensors, speedup, time_alternating, verdict
from benchmarks.harness import render_markdown, write_outputs
from benchmarks.registry import RowSpec, run_row


class FakeClock:
    """A clock that advances only when a benchmarked callable says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        self.now += dt


# ------------------------------------------------------------------------------------------------------- timing


def test_time_alternating_rotates_order_and_takes_medians():
    clock, calls = FakeClock(), []
    costs = {"a": [5.0, 1.0, 2.0, 3.0], "b": [9.0, 4.0, 6.0, 8.0]}  # first entry is the warm-up

    def make(name):
        def fn():
            calls.append(name)
            clock.advance(costs[name][sum(c == name for c in calls) - 1])
            return name.upper()
        return fn

    tm = time_alternating({"a": make("a"), "b": make("b")}, warmup=1, repeats=3, clock=clock)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then the order rotates every round
    assert tm.times == {"a": [1.0, 2.0, 3.0], "b": [4.0, 6.0, 8.0]}
    assert tm.median("a") == 2.0 and tm.median("b") == 6.0 and tm.minimum("b") == 4.0
    assert tm.paired_ratio("b", "a") == pytest.approx(3.0)
    assert tm.outputs == {"a": "A", "b": "B"}


def test_time_alternating_stops_after_budget_but_not_before_min_repeats():
    clock = FakeClock()
    tm = time_alternating({"slow": lambda: clock.advance(10.0)}, warmup=0, repeats=50, max_seconds=5.0,
                          min_repeats=3, clock=clock)
    assert len(tm.times["slow"]) == 3


def test_time_alternating_rejects_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        time_alternating({})
    with pytest.raises(ValueError, match="repeats"):
        time_alternating({"a": lambda: None}, repeats=0)


# ------------------------------------------------------------------------------------------ ratios and verdicts


def test_speedup_and_verdict():
    assert speedup(10.0, 2.0) == 5.0
    assert math.isinf(speedup(1.0, 0.0))
    assert verdict(2.0, 2.0) == "PASS" and verdict(1.99, 2.0) == "BELOW"
    assert verdict(170.0, 180.0, higher_is_better=False) == "PASS"
    assert verdict(181.0, 180.0, higher_is_better=False) == "BELOW"
    assert verdict(3.0, None) == "info"
    assert verdict(None, 1.0) == "n/a" and verdict(float("nan"), 1.0) == "n/a"


def test_row_result_finish_keeps_explicit_status():
    assert RowResult("k", "t", ratio=0.95, target=0.9, ratio_kind="of ceiling").finish().status == "PASS"
    assert RowResult("k", "t", ratio=0.5, target=0.9).finish().status == "BELOW"
    skipped = RowResult.skipped("k", "t", "helpers.abc not available yet").finish()
    assert skipped.status == "n/a: helpers.abc not available yet"
    nb = RowResult("nb", "00.ipynb", ratio=100.0, target=180.0, higher_is_better=False)
    nb.status = "BELOW"  # e.g. over the memory target although fast enough
    assert nb.finish().status == "BELOW"


def test_as_dict_is_json_safe():
    d = RowResult("k", "t", ratio=float("inf"), ours_s=float("nan")).as_dict()
    json.dumps(d)
    assert d["ratio"] == "inf" and d["ours_s"] is None


# --------------------------------------------------------------------------------------------- equality checks


def test_compare_tensors_tolerance_and_shape():
    a = torch.tensor([1.0, 2.0, 3.0])
    ok = compare_tensors(a + 1e-7, a, rtol=1e-5)
    assert ok.ok and "<=" in ok.text and ok.max_abs < 1e-6
    bad = compare_tensors(a + 0.1, a, rtol=1e-3)
    assert not bad.ok and ">" in bad.text and bad.rel_err == pytest.approx(0.1 * math.sqrt(3) / a.norm().item(),
                                                                         rel=1e-6)
    shape = compare_tensors(a, a[:2])
    assert not shape.ok and "shape" in shape.text
    assert compare_tensors(torch.zeros(3), torch.zeros(3)).ok
    assert not compare_tensors(torch.tensor([float("nan")]), torch.tensor([0.0])).ok


# ------------------------------------------------------------------------------------------ registry and output


def test_run_row_turns_skip_and_errors_into_na_rows():
    def skipping(ctx):
        raise Skip("helpers.infidelity has no infidelity yet")

    def broken(ctx):
        raise RuntimeError("boom")

    def fine(ctx):
        return [RowResult("ok", "fine", ratio=3.0, target=2.0)]

    assert run_row(RowSpec("s", "skipper", skipping), None)[0].status == "n/a: helpers.infidelity has no infidelity yet"
    err = run_row(RowSpec("b", "broken", broken), None)[0]
    assert err.status.startswith("n/a: error: RuntimeError: boom")
    assert run_row(RowSpec("f", "fine", fine), None)[0].status == "PASS"


def test_need_skips_missing_modules_and_names():
    from benchmarks.rows_ref import need

    with pytest.raises(Skip, match="not available"):
        need("helpers.does_not_exist")
    with pytest.raises(Skip, match="no nothing_here"):
        need("helpers.batching", "nothing_here")
    assert need("helpers.batching", "run_chunked").run_chunked


def test_write_outputs_and_markdown(tmp_path: Path):
    rows = [RowResult("a", "ours vs ref", ours="x", reference="y", ours_s=0.5, ref_s=1.5, ratio=3.0, target=2.0,
                      check="max|Δ| 0", check_ok=True, sizes="4 images").finish(),
            RowResult("c", "ceiling row", ratio=0.5, target=0.9, ratio_kind="of ceiling").finish(),
            RowResult.skipped("b", "missing", "helpers.abc not available yet")]
    nb = RowResult("notebook.00", "00_setup.ipynb", ours_s=12.0, ratio=12.0, ratio_kind="s", target=180.0,
                   higher_is_better=False, extra={"peak_rss_mb": 512.0, "target_text": "<= 180 s and <= 2048 MB"})
    nb.status = "PASS"
    env = {"date": "today", "device": "cpu", "device_name": "test", "torch": torch.__version__}
    paths = write_outputs(rows, [nb], env, tmp_path, settings={"quick": True})
    data = json.loads(paths["json"].read_text())
    assert [r["status"] for r in data["rows"]] == ["PASS", "BELOW", "n/a: helpers.abc not available yet"]
    assert data["notebooks"][0]["extra"]["peak_rss_mb"] == 512.0
    md = paths["md"].read_text()
    assert "| ours vs ref | x | y | 0.5 | 1.5 | 3× | >= 2× | **PASS** | ✔ max\\|Δ\\| 0 | 4 images |" in md
    assert "0.5× ceiling" in md and "**BELOW**" in md and "n/a: helpers.abc not available yet" in md
    assert "| 00_setup.ipynb | 12 | 512 | — | <= 180 s and <= 2048 MB | **PASS** |" in md
    assert render_markdown([], env).startswith("# Benchmarks")
    # read back and merge (e.g. a CPU run and a notebook run)
    from benchmarks.__main__ import main
    from benchmarks.harness import load_outputs

    back_rows, back_nb, back_env, _ = load_outputs(paths["json"])
    assert [r.status for r in back_rows] == [r.status for r in rows] and back_nb[0].extra["peak_rss_mb"] == 512.0
    assert main(["--merge", str(paths["json"]), str(paths["json"]), "--out", str(tmp_path), "--stem", "merged"]) == 0
    assert len(json.loads((tmp_path / "merged.json").read_text())["rows"]) == 2 * len(rows)


def test_notebook_rows_pass_below_and_failure(monkeypatch, tmp_path: Path):
    import helpers.runner as runner
    from benchmarks.rows_core import notebook_rows

    stats = {"00_fast.ipynb": (30.0, 900.0), "01_slow.ipynb": (200.0, 900.0), "02_fat.ipynb": (30.0, 3000.0)}

    def fake_execute(path, **kw):
        assert kw["scale"] == "quick" and kw["env"]["OMP_NUM_THREADS"] == "2"
        if path.name == "03_broken.ipynb":
            raise RuntimeError("cell 3 failed\nValueError: bad")
        wall, mem = stats[path.name]
        return {"wall_seconds": wall, "peak_rss_mb": mem}

    monkeypatch.setattr(runner, "execute_notebook", fake_execute)
    paths = [tmp_path / n for n in [*stats, "03_broken.ipynb"]]
    out = notebook_rows(Context(), paths=paths)
    assert [r.status for r in out][:3] == ["PASS", "BELOW", "BELOW"]
    assert out[3].status.startswith("n/a: failed: RuntimeError: ValueError: bad")
    assert len(notebook_rows(Context(), pattern="01_", paths=paths)) == 1
    with pytest.raises(Skip):
        notebook_rows(Context(), pattern="nothing", paths=paths)


# ---------------------------------------------------------------------------------------- real rows, tiny sizes


def test_forward_row_sets_the_ceiling_on_a_tiny_batch():
    from benchmarks.rows_core import ensure_ceiling, measure_ceiling

    ctx = Context(repeats=1, warmup=0, compile=False, device=torch.device("cpu"), sizes={"forward_batch": 16})
    ceiling = ensure_ceiling(ctx)
    assert ceiling["mode"] in ("eager", "fastpath") and ceiling["rate"] > 0 and ceiling["batch"] == 16
    rows = [r.finish() for r in measure_ceiling(ctx)]
    assert {r.key for r in rows} == {"forward.eager", "forward.fastpath"}
    assert all(r.check_ok for r in rows) and all(r.status == "info" for r in rows)


def test_cli_lists_rows_and_rejects_unknown(capsys):
    from benchmarks.__main__ import main

    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    for key in ("forward", "ig", "shap", "infidelity", "sensitivity", "abc", "optimal", "notebooks"):
        assert key in listed
    with pytest.raises(SystemExit):
        main(["--rows", "nonsense"])


def test_cli_writes_outputs(tmp_path: Path):
    from benchmarks.__main__ import main

    assert main(["--rows", "forward", "--no-compile", "--repeats", "1", "--warmup", "0", "--set", "forward_batch=8",
                 "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["rows"][0]["key"] == "forward.eager" and data["environment"]["torch"] == torch.__version__
    assert (tmp_path / "bench.md").read_text().startswith("# Benchmarks")


# -------------------------------------------------------------------------------------------- helpers.fastpath


def test_fast_forward_agrees_with_the_model(cnn, mnist_small):
    from helpers.fastpath import fast_forward

    x = mnist_small[0][:8]
    with torch.inference_mode():
        torch.testing.assert_close(fast_forward(cnn, x)(x), cnn(x), rtol=1e-4, atol=1e-5)
    xg = x.clone().requires_grad_(True)
    (g_fast,) = torch.autograd.grad(fast_forward(cnn, x, need_grad=True)(xg)[:, 3].sum(), xg)
    (g_ref,) = torch.autograd.grad(cnn(xg)[:, 3].sum(), xg)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-5)
    assert next(cnn.parameters()).is_contiguous()  # the original model is untouched
