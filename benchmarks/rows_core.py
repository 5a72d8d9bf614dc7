"""Rows that need only the foundation: the model's raw forward rate (the ceiling) and the notebooks in quick mode."""

from __future__ import annotations

import fnmatch
import os
from typing import List, Optional, Sequence

import torch

from .context import Context
from .harness import RowResult, Skip, compare_tensors, time_alternating
from .registry import row

#: Targets of the notebook rows (quick mode, 2 CPU cores).
NOTEBOOK_MAX_SECONDS = 180.0
NOTEBOOK_MAX_MB = 2048.0


def measure_ceiling(ctx: Context) -> List[RowResult]:
    """Time one forward pass of "cnn" on a batch: the model as written (eager), :func:`helpers.fastpath.fast_forward`
    (the forward every routine uses) and, optionally, ``torch.compile``; the fastest is the ceiling."""
    from helpers.fastpath import fast_forward

    model = ctx.model("cnn")
    n = ctx.sizes["forward_batch"]
    x, _ = ctx.images(n)
    fns = {"eager": model, "fastpath": fast_forward(model, x[:8])}
    if ctx.compile:
        try:
            fns["compile"] = torch.compile(model)
        except Exception as err:  # noqa: BLE001 - a form that cannot be built here is left out, with a note
            print(f"    forward form compile unavailable: {type(err).__name__}: {err}", flush=True)

    def runner(fn):
        def run():
            with torch.inference_mode():
                return fn(x)
        return run

    import time

    compile_note = ""
    if "compile" in fns:  # compile outside the timed rounds; report how long it took
        t0 = time.perf_counter()
        try:
            runner(fns["compile"])()
            compile_note = f"torch.compile took {time.perf_counter() - t0:.0f} s to build (once per process and shape)"
        except Exception as err:  # noqa: BLE001 - e.g. no C++ compiler: the other forms still run
            del fns["compile"]
            compile_note = f"torch.compile unavailable: {type(err).__name__}: {str(err)[:80]}"
    # one forward pass is short (~0.1-0.5 s on a CPU): three times the rounds for a stable median
    kw = {**ctx.timing_kw(), "repeats": 3 * ctx.repeats, "min_repeats": 3}
    timing = time_alternating({m: runner(f) for m, f in fns.items()}, **kw)
    eager_s = timing.median("eager")
    best = min(fns, key=timing.median)
    ceiling_rate = n / timing.median(best)
    ctx.ceiling = {"mode": best, "seconds": timing.median(best), "rate": ceiling_rate, "fn": fns[best],
                   "batch": n, "rates": {m: n / timing.median(m) for m in fns}}
    rows = []
    for m in fns:
        t = timing.median(m)
        check = compare_tensors(timing.outputs[m], timing.outputs["eager"], rtol=1e-4)
        rows.append(RowResult(
            key=f"forward.{m}", title=f"forward cnn, {m}", ours=f"{m}: {n / t:,.0f} img/s",
            reference="eager", ours_s=t, ref_s=eager_s, ratio=eager_s / t, ratio_kind="speed-up",
            target=None, check=check.text, check_ok=check.ok, sizes=f"batch {n}",
            notes="; ".join(part for part in [f"ceiling = {best} at {ceiling_rate:,.0f} img/s" if m == best else "",
                                              compile_note if m == "compile" else ""] if part),
            extra={"images_per_second": n / t, "is_ceiling": m == best, "times": timing.times[m]}).finish())
    if "compile" not in fns and compile_note:
        rows.append(RowResult.skipped("forward.compile", "forward cnn, compile", compile_note))
    return rows


def ensure_ceiling(ctx: Context) -> dict:
    """The forward ceiling of this run (measured now if the forward row has not run)."""
    if ctx.ceiling is None:
        measure_ceiling(ctx)
    return ctx.ceiling


@row("forward", "plain forward throughput of cnn at batch 1,024: eager / helpers.fastpath / torch.compile (ceiling)")
def forward_rows(ctx: Context) -> List[RowResult]:
    return measure_ceiling(ctx)


def notebook_rows(ctx: Context, pattern: Optional[str] = None, paths: Optional[Sequence] = None) -> List[RowResult]:
    """Execute every notebook in quick mode (2 threads) and report wall time and peak memory against the targets."""
    from helpers.runner import execute_notebook, list_notebooks

    nbs = list(paths) if paths is not None else list_notebooks()
    if pattern:
        nbs = [p for p in nbs if fnmatch.fnmatch(p.name, pattern) or pattern in p.name]
    if not nbs:
        raise Skip("no notebooks found" + (f" matching {pattern!r}" if pattern else ""))
    env = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "HELPERS_BENCH": "1"}
    if os.environ.get("HELPERS_DEVICE"):
        env["HELPERS_DEVICE"] = os.environ["HELPERS_DEVICE"]
    out = []
    target_text = f"<= {NOTEBOOK_MAX_SECONDS:.0f} s and <= {NOTEBOOK_MAX_MB:.0f} MB"
    for p in nbs:
        print(f"  notebook {p.name} ...", flush=True)
        try:
            stats = execute_notebook(p, scale="quick", timeout=int(NOTEBOOK_MAX_SECONDS * 3), env=env)
        except Exception as err:  # noqa: BLE001 - a failing notebook is reported, never fatal to the benchmark
            msg = str(err).strip().splitlines()
            last = next((ln for ln in reversed(msg) if ln.strip()), "") if msg else ""
            out.append(RowResult.skipped(f"notebook.{p.stem}", p.name, f"failed: {type(err).__name__}: {last[:120]}",
                                         extra={"target_text": target_text}))
            continue
        wall, mem = stats["wall_seconds"], stats["peak_rss_mb"]
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        ok = wall <= NOTEBOOK_MAX_SECONDS and mem <= NOTEBOOK_MAX_MB
        r = RowResult(key=f"notebook.{p.stem}", title=p.name, ours="quick mode", ours_s=wall, ratio=wall,
                      ratio_kind="s", target=NOTEBOOK_MAX_SECONDS, higher_is_better=False,
                      sizes="SCALE=quick, 2 threads",
                      extra={"peak_rss_mb": mem, "target_text": target_text, "wall_seconds": wall,
                             "load_average_1min": round(load, 2)})
        r.status = "PASS" if ok else "BELOW"
        out.append(r)
        print(f"    {wall:.1f} s, {mem:.0f} MB: {r.status}", flush=True)
    return out


@row("notebooks", "wall time and peak memory of every notebook in quick mode (<= 3 min, <= 2 GB)", kind="notebook")
def notebooks_rows(ctx: Context) -> List[RowResult]:
    return notebook_rows(ctx, pattern=getattr(ctx, "notebook_pattern", None))
