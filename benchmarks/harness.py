"""The benchmark harness: alternating timing, ratios, PASS/BELOW verdicts, equality checks and the output files.

A row compares *ours* with a *reference* on the same inputs in one process. Both callables are run alternately
(the order rotates every repetition, so a burst of load from another process hits both alike), after a warm-up,
and the row reports the median times and their ratio. Absolute times on a shared machine are noisy; the ratio of
two medians measured interleaved is the number that carries over to another machine.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

__all__ = [
    "Skip",
    "Timing",
    "Check",
    "RowResult",
    "sync",
    "time_alternating",
    "speedup",
    "verdict",
    "compare_tensors",
    "environment",
    "render_markdown",
    "write_outputs",
    "load_outputs",
]


class Skip(Exception):
    """Raised by a row whose routine does not exist (yet) or cannot run here; reported as ``n/a: <reason>``."""


def sync(device: Optional[torch.device] = None) -> None:
    """Wait for queued GPU work so that a timer measures it (no-op on the CPU)."""
    if device is None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class Timing:
    """Seconds of every timed repetition of each named callable, and the last output of each."""

    times: Dict[str, List[float]]
    outputs: Dict[str, Any] = field(default_factory=dict, repr=False)

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    def minimum(self, name: str) -> float:
        return min(self.times[name])

    def paired_ratio(self, numerator: str, denominator: str) -> float:
        """Median over repetitions of ``t[numerator] / t[denominator]`` (each pair measured back to back)."""
        return statistics.median(a / b for a, b in zip(self.times[numerator], self.times[denominator], strict=True))


def time_alternating(fns: Mapping[str, Callable[[], Any]], *, warmup: int = 1, repeats: int = 5,
                     device: Optional[torch.device] = None, max_seconds: Optional[float] = None,
                     min_repeats: int = 3, clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Time each callable of ``fns`` alternately: ``warmup`` untimed rounds, then ``repeats`` timed rounds.

    In round ``r`` the callables run in the order of ``fns`` rotated by ``r``. When ``max_seconds`` is given, the
    timed rounds stop early once that much time has been spent and at least ``min_repeats`` rounds are done.

    Returns:
        A :class:`Timing` with ``times[name]`` (one entry per timed round) and ``outputs[name]`` (the value the
        callable returned in the last round).
    """
    if not fns:
        raise ValueError("fns is empty")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(fns)
    times: Dict[str, List[float]] = {n: [] for n in names}
    outputs: Dict[str, Any] = {}
    for _ in range(warmup):
        for n in names:
            outputs[n] = fns[n]()
            sync(device)
    start = clock()
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            sync(device)
            t0 = clock()
            outputs[n] = fns[n]()
            sync(device)
            times[n].append(clock() - t0)
        if max_seconds is not None and r + 1 >= min_repeats and clock() - start > max_seconds:
            break
    return Timing(times=times, outputs=outputs)


def speedup(ref_seconds: float, ours_seconds: float) -> float:
    """How many times faster ours is than the reference: ``ref_seconds / ours_seconds`` (``inf`` if ours took 0)."""
    if ours_seconds <= 0:
        return math.inf
    return ref_seconds / ours_seconds


def verdict(value: Optional[float], target: Optional[float], *, higher_is_better: bool = True) -> str:
    """``"PASS"`` when ``value`` meets ``target`` (>= by default, <= when ``higher_is_better=False``), else ``"BELOW"``.

    ``"info"`` when the row has no target, ``"n/a"`` when there is no value.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if target is None:
        return "info"
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "BELOW"


@dataclass
class Check:
    """Did ours and the reference give the same result? ``text`` states the measured error and the tolerance."""

    ok: bool
    text: str
    max_abs: float = float("nan")
    rel_err: float = float("nan")


def compare_tensors(ours: torch.Tensor, ref: torch.Tensor, *, rtol: float = 1e-4, atol: float = 1e-6,
                    what: str = "") -> Check:
    """Compare two tensors of the same shape: ok when ``max|a-b| <= atol + rtol * max|b|``.

    The text reports the maximum absolute difference, the relative L2 error ``||a-b|| / ||b||`` and the tolerance.
    """
    a = torch.as_tensor(ours).detach().double().cpu()
    b = torch.as_tensor(ref).detach().double().cpu()
    if a.shape != b.shape:
        return Check(False, f"{what}shape {tuple(a.shape)} != {tuple(b.shape)}".strip())
    diff = (a - b).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(b.abs().max()) if b.numel() else 0.0
    norm_b = float(b.norm())
    rel = float((a - b).norm() / norm_b) if norm_b > 0 else (0.0 if max_abs == 0 else math.inf)
    tol = atol + rtol * scale
    ok = bool(max_abs <= tol) and not (math.isnan(max_abs))
    prefix = f"{what}: " if what else ""
    text = f"{prefix}max|Δ| {max_abs:.1e} {'<=' if ok else '>'} {tol:.1e} (rel L2 {rel:.1e})"
    return Check(ok, text, max_abs, rel)


@dataclass
class RowResult:
    """One line of the benchmark table.

    ``ratio`` is what the target applies to: a speed-up ``t_ref / t_ours`` for reference rows, a fraction of the
    forward ceiling for throughput rows, seconds for notebook rows (with ``higher_is_better=False``).
    """

    key: str
    title: str
    ours: str = ""
    reference: str = ""
    ours_s: Optional[float] = None
    ref_s: Optional[float] = None
    ratio: Optional[float] = None
    ratio_kind: str = "speed-up"
    target: Optional[float] = None
    higher_is_better: bool = True
    status: str = "n/a"
    check: str = ""
    check_ok: Optional[bool] = None
    sizes: str = ""
    notes: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    def finish(self) -> "RowResult":
        """Fill ``status`` from ``ratio`` and ``target`` unless a row set it already (``PASS``, ``n/a: ...``)."""
        if self.status == "n/a":
            self.status = verdict(self.ratio, self.target, higher_is_better=self.higher_is_better)
        return self

    @classmethod
    def skipped(cls, key: str, title: str, reason: str, **kw: Any) -> "RowResult":
        return cls(key=key, title=title, status=f"n/a: {reason}", **kw)

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for k, v in list(d.items()):
            if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
                d[k] = None if math.isnan(v) else str(v)
        return d


def environment() -> Dict[str, Any]:
    """Device, versions and date of this run."""
    import os

    import captum
    import numpy
    import shap

    dev = "cpu"
    name = platform.processor() or platform.machine()
    if torch.cuda.is_available():
        dev, name = "cuda", torch.cuda.get_device_name(0)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 0
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": dev,
        "device_name": name,
        "cpu_cores": cores,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "captum": captum.__version__,
        "shap": shap.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.2e}"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}"
    return str(v).replace("|", "\\|")


def _ratio_text(r: RowResult) -> str:
    if r.ratio is None:
        return "—"
    if r.ratio_kind == "speed-up":
        return f"{_fmt(r.ratio)}×"
    if r.ratio_kind == "of ceiling":
        return f"{_fmt(r.ratio)}× ceiling"
    return f"{_fmt(r.ratio)} {r.ratio_kind}"


def _target_text(r: RowResult) -> str:
    if r.target is None:
        return "—"
    op = ">=" if r.higher_is_better else "<="
    unit = "×" if r.ratio_kind in ("speed-up", "of ceiling") else f" {r.ratio_kind}"
    return f"{op} {_fmt(r.target)}{unit}"


def render_markdown(rows: Sequence[RowResult], env: Mapping[str, Any], *, notebook_rows: Sequence[RowResult] = (),
                    settings: Optional[Mapping[str, Any]] = None) -> str:
    """The ``build/bench.md`` text: environment, the ratio table, and the notebook table."""
    lines = ["# Benchmarks", ""]
    lines.append(f"_{env.get('date')}; device **{env.get('device')}** ({env.get('device_name')}, "
                 f"{env.get('cpu_cores')} cores, {env.get('torch_threads')} torch threads); torch {env.get('torch')}, "
                 f"captum {env.get('captum')}, shap {env.get('shap')}, numpy {env.get('numpy')}, "
                 f"python {env.get('python')}; load average at start {env.get('load_average_1min')}_")
    if settings:
        lines.append("")
        lines.append("Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    lines += ["", "Times are medians of alternating repetitions after a warm-up; ratio = reference time / our time "
              "(or our evaluation rate / the forward ceiling). The benchmark never fails the build.", ""]
    if rows:
        lines.append("| Row | Ours | Reference | Ours (s) | Ref (s) | Ratio | Target | Status | Same result? | Sizes |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            check = r.check or "—"
            if r.check_ok is not None:
                check = ("✔ " if r.check_ok else "✘ ") + check
            lines.append("| " + " | ".join([
                _fmt(r.title), _fmt(r.ours or "—"), _fmt(r.reference or "—"), _fmt(r.ours_s), _fmt(r.ref_s),
                _ratio_text(r), _target_text(r), f"**{r.status}**" if r.status in ("PASS", "BELOW") else _fmt(r.status),
                _fmt(check), _fmt(r.sizes or "—")]) + " |")
    if notebook_rows:
        lines += ["", "## Notebooks in quick mode", "",
                  "| Notebook | Wall (s) | Peak RSS (MB) | Load avg | Target | Status |", "|---|---|---|---|---|---|"]
        for r in notebook_rows:
            mem = r.extra.get("peak_rss_mb")
            tgt = r.extra.get("target_text", "—")
            lines.append(f"| {_fmt(r.title)} | {_fmt(r.ours_s)} | {_fmt(mem)} | {_fmt(r.extra.get('load_average_1min'))} "
                         f"| {tgt} | " + (f"**{r.status}**" if r.status in ("PASS", "BELOW") else _fmt(r.status)) + " |")
    notes = [r for r in [*rows, *notebook_rows] if r.notes]
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- **{r.title}**: {r.notes.strip().lstrip(';').strip()}" for r in notes]
    return "\n".join(lines) + "\n"


def write_outputs(rows: Sequence[RowResult], notebook_rows: Sequence[RowResult], env: Mapping[str, Any],
                  out_dir: Path, *, settings: Optional[Mapping[str, Any]] = None, stem: str = "bench") -> Dict[str, Path]:
    """Write ``<out_dir>/<stem>.json`` and ``<out_dir>/<stem>.md`` atomically; return their paths."""
    from helpers.io import atomic_write_bytes

    out_dir = Path(out_dir)
    payload = {
        "environment": dict(env),
        "settings": dict(settings or {}),
        "rows": [r.as_dict() for r in rows],
        "notebooks": [r.as_dict() for r in notebook_rows],
    }
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    atomic_write_bytes(json_path, json.dumps(payload, indent=2, default=str).encode())
    atomic_write_bytes(md_path, render_markdown(rows, env, notebook_rows=notebook_rows, settings=settings).encode())
    return {"json": json_path, "md": md_path}


def load_outputs(path: Path):
    """Read a ``bench.json`` back: ``(rows, notebook_rows, environment, settings)`` (e.g. to merge two runs)."""
    data = json.loads(Path(path).read_text())

    def back(d: Dict[str, Any]) -> RowResult:
        d = dict(d)
        for k in ("ratio", "ours_s", "ref_s", "target"):
            if isinstance(d.get(k), str):
                d[k] = float(d[k])
        return RowResult(**d)

    return ([back(d) for d in data.get("rows", [])], [back(d) for d in data.get("notebooks", [])],
            data.get("environment", {}), data.get("settings", {}))
