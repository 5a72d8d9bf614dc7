"""Results of the notebooks: ``save_results`` writes ``build/results/<name>.json``; ``build_report`` assembles them.

Every notebook ends with ``save_results("<notebook name>", {...}, summary=..., tables=..., figures=...)``:

* the key numbers it measured (plain floats, ints, strings, lists and dicts; numpy / torch scalars are converted);
* ``summary``: its line of the one-page summary, ``{"verdict": "<one sentence built from the numbers>",
  "headline": [{"name": "AUROC of ABC (IG, zero baseline)", "value": 0.912, "ci": [0.894, 0.929]}, ...]}``
  (at most 4 headline numbers; ``ci`` is the 95 % interval, optional; ``unit`` optional, e.g. ``"%"``);
* ``tables`` (lists of row dicts, in the report's appendix) and matplotlib ``figures`` (PNG beside the JSON).

Paper scale: a ``SCALE=full`` run also copies each notebook's results, with their provenance (date, commit, machine,
wall time), to ``results/full/`` (committed), from which ``python -m helpers report`` writes ``results/full/REPORT.md``
and the README's results section. A quick run prints the paper-scale numbers beside its own.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

import torch

from . import BUILD_DIR, FULL_RESULTS_DIR, PROJECT_ROOT, RESULTS_DIR, device, scale
from .io import atomic_path, atomic_write_bytes, atomic_write_json

__all__ = ["save_results", "load_results", "markdown_table", "build_report", "environment", "check_summary",
           "provenance", "paper_scale_table", "build_full_report", "update_readme"]

QUICK_BANNER = ("> **Quick mode: a smoke test on subsets, not the paper-scale result.** The paper-scale results "
                "(`SCALE=full make run`) are in [`results/full/REPORT.md`](../results/full/REPORT.md).\n")
README_START, README_END = "<!-- full-results:start -->", "<!-- full-results:end -->"
FULL_FIGURE_DPI = 80  # committed figures stay small (the whole results/full/ folder is a few MB)


def environment() -> Dict[str, str]:
    """Versions, device and scale of this run (recorded in every results file)."""
    packages = {"torch": "torch", "captum": "captum", "shap": "shap", "numpy": "numpy", "sklearn": "scikit-learn"}
    versions = {name: metadata.version(dist) for name, dist in packages.items()}
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"python": platform.python_version(), **versions, "device": str(device()), "device_name": name,
            "torch_threads": str(torch.get_num_threads()), "scale": scale()}


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def provenance() -> Dict[str, Any]:
    """When, from which commit and on which machine this process measured its results.

    ``wall_seconds`` is the age of this process (a notebook's kernel); the runner replaces it by the measured wall time.
    """
    import psutil

    commit = _git("rev-parse", "HEAD")
    # tracked files that differ from the commit; results/ is left out (a full run rewrites it as it goes)
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results")
    cpuinfo = Path("/proc/cpuinfo")
    cpu = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), flags=re.M) if cpuinfo.exists() else None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit or "unknown",
        "uncommitted_changes": [line.split(None, 1)[1] for line in status.splitlines()] if commit else None,
        "machine": {"cpu": cpu.group(1).strip() if cpu else platform.machine(), "cpu_cores": os.cpu_count(),
                    "platform": platform.platform(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "wall_seconds": round(time.time() - psutil.Process().create_time(), 1),
    }


def _plain(obj: Any) -> Any:
    """Convert numpy / torch values (recursively) to JSON-friendly Python values; NaN becomes None."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _plain(obj.tolist())
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def check_summary(summary: Mapping[str, Any]) -> Dict[str, Any]:
    """Validate a notebook's ``summary`` (see the module docstring) and return it as plain JSON values.

    A missing or malformed field raises ``ValueError`` naming it.
    """
    if not isinstance(summary, Mapping) or not isinstance(summary.get("verdict"), str) or not summary["verdict"]:
        raise ValueError("summary must be a dict with a non-empty 'verdict' sentence and a 'headline' list")
    heads = summary.get("headline", [])
    if not isinstance(heads, (list, tuple)) or len(heads) > 4:
        raise ValueError(f"summary['headline'] must be a list of at most 4 numbers, got {heads!r}")
    for i, h in enumerate(heads):
        where = f"summary['headline'][{i}]"
        if not (isinstance(h, Mapping) and isinstance(h.get("name"), str)
                and isinstance(_plain(h.get("value")), (int, float))):
            raise ValueError(f"{where} must be {{'name': str, 'value': number, 'ci': [lo, hi]}}, got {h!r}")
        ci = h.get("ci")
        if ci is not None and (len(ci) != 2 or not float(ci[0]) <= float(ci[1])):
            raise ValueError(f"{where}['ci'] must be [low, high] with low <= high, got {ci!r}")
    return _plain(dict(summary))


def save_results(name: str, results: Mapping[str, Any], *, summary: Optional[Mapping[str, Any]] = None,
                 tables: Optional[Mapping[str, List[Mapping[str, Any]]]] = None,
                 figures: Optional[Mapping[str, Any]] = None, results_dir: Optional[Path] = None) -> Path:
    """Write ``results`` (and ``summary``, ``tables``, ``figures``) of notebook ``name`` to ``build/results/``.

    Figures (matplotlib ``Figure`` objects) go to ``build/results/<name>/<key>.png``; what a figure breaks of the
    :mod:`helpers.plots` style is printed. All writes are atomic. Returns the JSON path.
    """
    from .plots import problems

    if not name or "/" in name:
        raise ValueError(f"name must be a plain file stem like '01_abc_confidence', got {name!r}")
    out_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    figures = figures or {}
    for key, fig in figures.items():
        for problem in problems(fig) if hasattr(fig, "draw_without_rendering") else []:
            print(f"figure {key!r}: {problem}")
    payload = {
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "summary": check_summary(summary) if summary is not None else None,
        "results": _plain(dict(results)),
        "tables": _plain(dict(tables or {})),
        "figures": _save_figures(figures, out_dir, name, dpi=110),
    }
    path = out_dir / f"{name}.json"
    atomic_write_json(path, payload)
    if results_dir is None and payload["environment"]["scale"] == "full":
        # the committed copy, with its provenance and small figures
        full_figures = _save_figures(figures, FULL_RESULTS_DIR, name, dpi=FULL_FIGURE_DPI)
        full = dict(payload, provenance=provenance(), figures=full_figures)
        atomic_write_json(FULL_RESULTS_DIR / f"{name}.json", full)
        print(f"paper-scale result published to {os.path.relpath(FULL_RESULTS_DIR / name, PROJECT_ROOT)}.json")
    elif results_dir is None and payload["summary"] is not None:
        table = paper_scale_table(name, payload["summary"])
        if table:
            print(table)
    return path


def _save_figures(figures: Mapping[str, Any], out_dir: Path, name: str, dpi: int) -> Dict[str, str]:
    """Save each figure as ``out_dir/<name>/<key>.png``; return ``{key: path relative to out_dir}``."""
    paths = {}
    for key, fig in figures.items():
        with atomic_path(out_dir / name / f"{key}.png", suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
        paths[key] = f"{name}/{key}.png"
    return paths


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        s = json.dumps(v)
        return s if len(s) <= 60 else s[:57] + "..."
    return str(v)


def _with_ci(h: Optional[Mapping[str, Any]]) -> str:
    """``"0.912 [0.894, 0.929]"``: a headline number with its unit and 95 % CI; ``"—"`` for None."""
    if h is None:
        return "—"
    ci = f" [{_fmt(h['ci'][0])}, {_fmt(h['ci'][1])}]" if h.get("ci") else ""
    return f"{_fmt(h['value'])}{h.get('unit', '')}{ci}"


def _headlines(res: Optional[Mapping[str, Any]]) -> str:
    """The headline numbers of a results file with their CIs, on one line; an estimate outside its CI is flagged."""
    parts = []
    for h in ((res or {}).get("summary") or {}).get("headline", []):
        outside = h.get("ci") and not h["ci"][0] <= h["value"] <= h["ci"][1]
        parts.append(f"{h['name']} {_with_ci(h)}" + (" (estimate outside its CI!)" if outside else ""))
    return "; ".join(parts)


def _summary_row(notebook: str, res: Mapping[str, Any]) -> Dict[str, str]:
    """A notebook's row of a summary table: its verdict (on one line) and headline numbers."""
    verdict = (res.get("summary") or {}).get("verdict", "_(no summary saved)_")
    one_line = " ".join(verdict.replace("|", "/").split())
    return {"notebook": notebook, "verdict (computed by the notebook)": one_line,
            "headline numbers [95 % CI]": _headlines(res)}


def _commit(prov: Mapping[str, Any]) -> str:
    """The short commit of a provenance, and the files that differed from it."""
    changes = prov.get("uncommitted_changes")
    return str(prov.get("commit", "?"))[:7] + (f" + uncommitted changes ({', '.join(changes)})" if changes else "")


def paper_scale_table(name: str, summary: Mapping[str, Any], full_dir: Optional[Path] = None) -> str:
    """Text that sets this run's headline numbers beside the committed paper-scale ones of notebook ``name``.

    Returns ``""`` when ``results/full/<name>.json`` does not exist.
    """
    import pandas as pd

    path = Path(full_dir or FULL_RESULTS_DIR) / f"{name}.json"
    if not path.exists():
        return ""
    full = json.loads(path.read_text())
    prov, full_summary = full.get("provenance", {}), full.get("summary") or {}
    ours = {h["name"]: h for h in summary.get("headline", [])}
    theirs = {h["name"]: h for h in full_summary.get("headline", [])}
    rows = [{"headline number": n, "this run [95% CI]": _with_ci(ours.get(n)),
             "paper scale [95% CI]": _with_ci(theirs.get(n))} for n in {**ours, **theirs}]
    minutes = (prov.get("wall_seconds") or float("nan")) / 60
    head = (f"Paper scale (results/full/{name}.json: SCALE=full, {str(prov.get('date', '?'))[:10]}, "
            f"commit {_commit(prov)}, {minutes:.1f} min on {prov.get('machine', {}).get('cpu_cores', '?')} "
            "CPU cores) beside this run:")
    verdict = f"Paper-scale verdict: {full_summary.get('verdict', '(none saved)')}"
    return "\n".join([head, pd.DataFrame(rows).to_string(index=False), verdict])


def load_results(results_dir: Optional[Path] = None) -> List[Dict[str, Any]]:
    """All results files in ``results_dir`` (default ``build/results``), sorted by name."""
    d = Path(results_dir) if results_dir is not None else RESULTS_DIR
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]


def _full_results(full_dir: Optional[Path] = None) -> Dict[str, Dict[str, Any]]:
    return {r["name"]: r for r in load_results(Path(full_dir or FULL_RESULTS_DIR))}


def markdown_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """Render a list of row dicts as a GitHub markdown table (columns in first-seen order)."""
    rows = list(rows)
    if not rows:
        return "_(empty)_\n"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def build_report(results_dir: Optional[Path] = None, out: Optional[Path] = None,
                 full_dir: Optional[Path] = None) -> Path:
    """Write ``build/report.md``: the one-page summary, then every notebook's numbers and tables; return its path.

    After a quick run, the summary also shows the committed paper-scale numbers of ``results/full/`` (if any).
    """
    d = Path(results_dir) if results_dir is not None else RESULTS_DIR
    out = Path(out) if out is not None else BUILD_DIR / "report.md"
    all_results = load_results(d)
    quick = any(r["environment"].get("scale") != "full" for r in all_results)
    full = _full_results(full_dir) if quick else {}
    rows = [_summary_row(res["name"], res) for res in all_results]
    if full:
        for row, res in zip(rows, all_results):
            row["paper scale (results/full)"] = _headlines(full.get(res["name"])) or "—"
    parts = ["# Results of the notebook collection\n"] + ([QUICK_BANNER] if quick else [])
    parts.append("Every number was measured by the notebooks in `notebooks/` "
                 "(executed copies in `build/notebooks/`).\n")
    if all_results:
        env = all_results[0]["environment"]
        parts.append("Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + "\n")
    parts += ["## Summary\n", markdown_table(rows), "\n## Appendix: every number and table\n"]
    for res in all_results:
        env = res["environment"]
        parts.append(f"\n### {res['name']}\n")
        parts.append(f"_run {res['created']}, scale {env.get('scale')}, device {env.get('device')}_\n")
        if res["results"]:
            parts.append(markdown_table({"key": k, "value": v} for k, v in res["results"].items()))
        for title, table in res.get("tables", {}).items():
            parts.append(f"\n**{title}**\n\n" + markdown_table(table))
        for key, rel in res.get("figures", {}).items():
            parts.append(f"\n![{key}]({Path(os.path.relpath(d / rel, out.parent)).as_posix()})\n")
    atomic_write_bytes(out, "\n".join(parts).encode())
    return out


def _full_summary(full: Mapping[str, Mapping[str, Any]], link_prefix: str) -> List[str]:
    """Markdown lines: where the paper-scale run came from, and one row per notebook (verdict, numbers, wall time)."""
    provs = [r.get("provenance", {}) for r in full.values()]
    machine = provs[0].get("machine", {})
    gpu = f"GPU {machine['gpu']}" if machine.get("gpu") else "no GPU"
    dates = sorted(str(p.get("date", "?"))[:10] for p in provs)
    commits = sorted({str(p.get("commit", "?"))[:7] for p in provs})
    commits_text = ("commits " if len(commits) > 1 else "commit ") + ", ".join(commits)
    if any(p.get("uncommitted_changes") for p in provs):
        commits_text += " (see the last column)"
    minutes = sum(float(p.get("wall_seconds") or 0) for p in provs) / 60
    intro = ("Measured with `SCALE=full` (`make run`, or `python -m helpers notebooks NB ...` for single notebooks) "
             f"on {machine.get('cpu_cores', '?')} CPU cores ({machine.get('cpu', '?')}, {gpu}), "
             f"{dates[0] if dates[0] == dates[-1] else f'{dates[0]} to {dates[-1]}'}, from {commits_text}; "
             f"the notebooks took **{minutes:.1f} min** in all. "
             "Each row's numbers are the notebook's headline numbers with their 95 % CIs.\n")
    rows = []
    for name, r in sorted(full.items()):
        prov = r.get("provenance", {})
        rows.append({**_summary_row(f"[{name}]({link_prefix}notebooks/{name}.ipynb)", r),
                     "wall (min)": round(float(prov.get("wall_seconds") or float("nan")) / 60, 1),
                     "commit": _commit(prov)})
    return [intro, markdown_table(rows)]


def build_full_report(full_dir: Optional[Path] = None) -> Path:
    """Write ``results/full/REPORT.md``, the one-page report of the committed paper-scale run; return its path."""
    d = Path(full_dir or FULL_RESULTS_DIR)
    full = _full_results(d)
    if not full:
        raise FileNotFoundError(f"no paper-scale results in {d}: run `SCALE=full make run` first")
    parts = ["# Paper-scale results (`SCALE=full`)\n",
             "Generated by `python -m helpers report` from the JSON files beside this page; do not edit by hand.\n",
             *_full_summary(full, "../../"), "\n## Figures\n"]
    for name, r in sorted(full.items()):
        if r.get("figures"):
            parts.append(f"- **{name}**: " + ", ".join(f"[{k}]({v})" for k, v in r["figures"].items()))
    parts.append("\nEvery other number and table of each notebook is in its JSON file (`results`, `tables`).\n")
    out = d / "REPORT.md"
    atomic_write_bytes(out, "\n".join(parts).encode())
    return out


def update_readme(readme: Optional[Path] = None, full_dir: Optional[Path] = None) -> bool:
    """Rewrite the README's results section (between its two markers) from ``results/full/``; True if it changed."""
    readme = Path(readme or PROJECT_ROOT / "README.md")
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} markers for the results section")
    full = _full_results(full_dir)
    if not full:
        return False
    rel = Path(full_dir or FULL_RESULTS_DIR).resolve().relative_to(readme.parent.resolve()).as_posix()
    link = f"The one-page report with the figures: [`{rel}/REPORT.md`]({rel}/REPORT.md)."
    head, rest = text.split(README_START, 1)
    new = head + README_START + "\n".join(["", *_full_summary(full, ""), link, ""]) + README_END
    new += rest.split(README_END, 1)[1]
    if new != text:
        atomic_write_bytes(readme, new.encode())
    return new != text
