"""Results of the notebooks: ``save_results`` writes ``build/results/<name>.json``; ``build_report`` assembles them.

Every notebook ends with ``save_results("<notebook name>", {...}, summary=..., tables=..., figures=...)``:

* the key numbers it measured (plain floats, ints, strings, lists and dicts; numpy / torch scalars are converted);
* ``summary``: its line of the one-page summary, ``{"verdict": "<one sentence built from the numbers>",
  "headline": [{"name": "AUROC of ABC (IG, zero baseline)", "value": 0.912, "ci": [0.894, 0.929]}, ...]}``
  (at most 4 headline numbers; ``ci`` is the 95 % interval, optional; ``unit`` optional, e.g. ``"%"``);
* ``tables`` (lists of row dicts, shown in the report's appendix) and matplotlib ``figures`` (PNG beside the JSON).

``build/report.md`` opens with the summary (one line per notebook), a banner when the run was in quick mode, and
puts every table in an appendix.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

import torch

from . import BUILD_DIR, RESULTS_DIR, device, scale
from .io import atomic_path, atomic_write_bytes, atomic_write_json

__all__ = ["save_results", "load_results", "markdown_table", "build_report", "environment", "check_summary"]

QUICK_BANNER = ("> **Quick mode: a smoke test on subsets, not the paper-scale result.** Run `SCALE=full make run` for the "
                "paper-scale protocol (its results are to be committed in `results/full/`; not published yet).\n")


def environment() -> Dict[str, str]:
    """Versions, device and scale of this run (recorded in every results file)."""
    import captum
    import numpy
    import shap
    import sklearn

    versions = {m.__name__: m.__version__ for m in (torch, captum, shap, numpy, sklearn)}
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"python": platform.python_version(), **versions, "device": str(device()), "device_name": name,
            "torch_threads": str(torch.get_num_threads()), "scale": scale()}


def _plain(obj: Any) -> Any:
    """Convert numpy / torch values (recursively) to JSON-friendly Python values."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _plain(obj.detach().cpu().tolist())
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _plain(obj.tolist())
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


def check_summary(summary: Mapping[str, Any]) -> Dict[str, Any]:
    """Validate a notebook's ``summary`` (see the module docstring) and return it as plain JSON values.

    Raises:
        ValueError: naming the field that is missing or malformed.
    """
    if not isinstance(summary, Mapping) or not isinstance(summary.get("verdict"), str) or not summary["verdict"]:
        raise ValueError("summary must be a dict with a non-empty 'verdict' sentence and a 'headline' list")
    heads = summary.get("headline", [])
    if not isinstance(heads, (list, tuple)) or len(heads) > 4:
        raise ValueError(f"summary['headline'] must be a list of at most 4 numbers, got {heads!r}")
    for i, h in enumerate(heads):
        ci = h.get("ci") if isinstance(h, Mapping) else None
        if not isinstance(h, Mapping) or not isinstance(h.get("name"), str) or not isinstance(_plain(h.get("value")),
                                                                                              (int, float)):
            raise ValueError(f"summary['headline'][{i}] must be {{'name': str, 'value': number, 'ci': [lo, hi]}}, "
                             f"got {h!r}")
        if ci is not None and (len(ci) != 2 or not float(ci[0]) <= float(ci[1])):
            raise ValueError(f"summary['headline'][{i}]['ci'] must be [low, high] with low <= high, got {ci!r}")
    return _plain(dict(summary))


def save_results(name: str, results: Mapping[str, Any], *, summary: Optional[Mapping[str, Any]] = None,
                 tables: Optional[Mapping[str, List[Mapping[str, Any]]]] = None,
                 figures: Optional[Mapping[str, Any]] = None, results_dir: Optional[Path] = None) -> Path:
    """Write ``results`` (and ``summary``, ``tables``, ``figures``) of notebook ``name`` to ``build/results/``.

    Figures (matplotlib ``Figure`` objects) go to ``build/results/<name>/<key>.png``; what a figure breaks of the
    :mod:`helpers.plots` style is printed. All writes are atomic. Returns the JSON path.
    """
    if not name or "/" in name:
        raise ValueError(f"name must be a plain file stem like '01_abc_confidence', got {name!r}")
    out_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    payload: Dict[str, Any] = {
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "summary": check_summary(summary) if summary is not None else None,
        "results": _plain(dict(results)),
        "tables": _plain(dict(tables or {})),
        "figures": {},
    }
    from .plots import problems

    for key, fig in (figures or {}).items():
        for problem in problems(fig) if hasattr(fig, "draw_without_rendering") else []:
            print(f"figure {key!r}: {problem}")
        png = out_dir / name / f"{key}.png"
        with atomic_path(png, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        payload["figures"][key] = str(png.relative_to(out_dir))
    path = out_dir / f"{name}.json"
    atomic_write_json(path, payload)
    return path


def load_results(results_dir: Optional[Path] = None) -> List[Dict[str, Any]]:
    """All results files in ``results_dir`` (default ``build/results``), sorted by name."""
    d = Path(results_dir) if results_dir is not None else RESULTS_DIR
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        s = json.dumps(v)
        return s if len(s) <= 60 else s[:57] + "..."
    return str(v)


def markdown_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """Render a list of row dicts as a GitHub markdown table (columns in first-seen order)."""
    rows = list(rows)
    if not rows:
        return "_(empty)_\n"
    cols: List[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _headline(h: Mapping[str, Any]) -> str:
    unit = h.get("unit", "")
    text = f"{h['name']} {_fmt(h['value'])}{unit}"
    if h.get("ci"):
        lo, hi = h["ci"]
        text += f" [{_fmt(lo)}, {_fmt(hi)}]" + ("" if lo <= h["value"] <= hi else " (estimate outside its CI!)")
    return text


def summary_table(all_results: List[Mapping[str, Any]]) -> str:
    """The one-page summary: one row per notebook, its verdict and headline numbers with 95 % CIs."""
    rows = []
    for res in all_results:
        s = res.get("summary") or {}
        rows.append({"notebook": res["name"], "verdict": " ".join(s.get("verdict", "_(no summary saved)_").replace("|", "/").split()),
                     "headline numbers [95 % CI]": "; ".join(_headline(h) for h in s.get("headline", []))})
    return markdown_table(rows)


def build_report(results_dir: Optional[Path] = None, out: Optional[Path] = None) -> Path:
    """Write ``build/report.md``: the one-page summary, then every notebook's numbers and tables; return its path."""
    d = Path(results_dir) if results_dir is not None else RESULTS_DIR
    out = Path(out) if out is not None else BUILD_DIR / "report.md"
    all_results = load_results(d)
    parts = ["# Results of the notebook collection\n"]
    if any(r["environment"].get("scale") != "full" for r in all_results):
        parts.append(QUICK_BANNER)
    parts.append("Every number was measured by the notebooks in `notebooks/` (executed copies in `build/notebooks/`).\n")
    if all_results:
        env = all_results[0]["environment"]
        parts.append("Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + "\n")
    parts += ["## Summary\n", summary_table(all_results), "\n## Appendix: every number and table\n"]
    for res in all_results:
        parts.append(f"\n### {res['name']}\n")
        parts.append(f"_run {res['created']}, scale {res['environment'].get('scale')}, "
                     f"device {res['environment'].get('device')}_\n")
        scalars = [{"key": k, "value": v} for k, v in res["results"].items()]
        if scalars:
            parts.append(markdown_table(scalars))
        for tname, rows in res.get("tables", {}).items():
            parts.append(f"\n**{tname}**\n\n" + markdown_table(rows))
        for fkey, rel in res.get("figures", {}).items():
            rel_to_build = Path(d.name) / rel if d.parent == out.parent else d / rel
            parts.append(f"\n![{fkey}]({rel_to_build.as_posix()})\n")
    atomic_write_bytes(out, "\n".join(parts).encode())
    return out
