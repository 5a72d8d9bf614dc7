"""Command line: ``python -m helpers data | models [NAME ...] | notebooks [NB ...] | report | info | repo OWNER/NAME``.

``repo OWNER/NAME`` re-points every Colab / Binder link and Colab install cell (``helpers.GITHUB_REPO``, README.md,
the master and student notebooks) to another GitHub repository, e.g. a course's fork. ``colab-cell NB ...`` writes
:data:`COLAB_CELL` (install on Colab only; a failed install says what to do and never stops the notebook) as the
first code cell (tagged ``colab``) of the given master notebooks.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

COLAB_CELL = """# Colab only: install the helpers package (does nothing elsewhere; \
a failed install explains what to do).
import subprocess, sys
try:
    import google.colab  # noqa: F401
except ImportError:
    pass
else:
    try:
        _pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                               "git+https://github.com/{repo}"]).returncode
    except OSError as _err:
        _pip = _err
    if _pip != 0:
        print("Installing the helpers package failed (pip's message is above). Check that this runtime is online,"
              " then run this cell again (Runtime > Restart session if it still fails). The next cells need it.")"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("data", help="fetch and verify MNIST and the far-OOD animal shapes (data/*.npz)")
    p_models = sub.add_parser("models", help="train (or load) the cached models")
    p_models.add_argument("names", nargs="*")
    p_nb = sub.add_parser("notebooks", help="execute notebooks into build/notebooks (ipynb + html)")
    p_nb.add_argument("paths", nargs="*")
    p_nb.add_argument("--timeout", type=int, default=1800)
    sub.add_parser("report", help="assemble build/report.md from build/results/*.json")
    sub.add_parser("info", help="print the environment")
    p_repo = sub.add_parser("repo", help="re-point the Colab/Binder links and install cells to OWNER/NAME")
    p_repo.add_argument("slug", nargs="?")
    p_cell = sub.add_parser("colab-cell", help="write the standard Colab install cell into master notebooks")
    p_cell.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)

    if args.cmd == "data":
        from .data import ensure_mnist, load_animal_shapes, load_mnist

        path = ensure_mnist()
        sizes = {s: int(load_mnist(s)[0].shape[0]) for s in ("train", "val", "test")}
        print(f"MNIST ready at {path}: {sizes}")
        print(f"animal shapes (far OOD) ready: {int(load_animal_shapes()[0].shape[0])} images")
    elif args.cmd == "models":
        from .models import MODEL_NAMES, model_info

        for name in args.names or MODEL_NAMES:
            t0 = time.perf_counter()
            info = model_info(name)
            keys = [k for k in ("test_accuracy", "pgd_accuracy", "train_seconds") if k in info]
            numbers = ", ".join(f"{k}={info[k]:.4g}" for k in keys)
            print(f"{name:>13}: {numbers}  (ready in {time.perf_counter() - t0:.1f}s)")
    elif args.cmd == "notebooks":
        from . import BUILD_DIR, scale
        from .runner import execute_notebook, list_notebooks

        for p in map(Path, args.paths or list_notebooks()):
            print(f"executing {p.name} (SCALE={scale()}) ...", flush=True)
            stats = execute_notebook(p, scale=scale(), timeout=args.timeout, out_dir=BUILD_DIR / "notebooks", html=True)
            print(f"  done in {stats['wall_seconds']:.0f}s, peak {stats['peak_rss_mb']:.0f} MB, "
                  f"{stats['images']} figure(s)", flush=True)
            if scale() == "full":
                _record_run(p.stem, stats)
    elif args.cmd == "report":
        from . import FULL_RESULTS_DIR
        from .report import build_full_report, build_report, update_readme

        print(f"report written to {build_report()}")
        if any(FULL_RESULTS_DIR.glob("*.json")):
            print(f"paper-scale report written to {build_full_report()}")
            print("README results section " + ("rewritten" if update_readme() else "unchanged"))
    elif args.cmd == "repo":
        return repoint(args.slug)
    elif args.cmd == "colab-cell":
        import nbformat

        from . import GITHUB_REPO

        for path in args.paths:
            nb = nbformat.read(path, as_version=4)
            cell = next(c for c in nb.cells if c.cell_type == "code")
            cell.source, cell.metadata["tags"] = COLAB_CELL.format(repo=GITHUB_REPO), ["colab"]
            nbformat.write(nb, path)
            print(f"{path}: Colab cell written")
    elif args.cmd == "info":
        from .report import environment

        print(json.dumps(environment(), indent=2))
    return 0


def _record_run(stem: str, stats: dict) -> None:
    """Put the runner's measured wall time and peak memory into the notebook's paper-scale result."""
    from . import FULL_RESULTS_DIR
    from .io import atomic_write_json

    path = FULL_RESULTS_DIR / f"{stem}.json"
    if not path.exists():
        print(f"  warning: {stem} saved no paper-scale result ({path} is missing)", flush=True)
        return
    data = json.loads(path.read_text())
    data["provenance"].update(wall_seconds=round(stats["wall_seconds"], 1), peak_rss_mb=round(stats["peak_rss_mb"]),
                              wall_measured_by="helpers.runner")
    atomic_write_json(path, data)


def repoint(slug) -> int:
    """Replace :data:`helpers.GITHUB_REPO` by ``slug`` in every file that links to it; print the files."""
    from . import GITHUB_REPO, PROJECT_ROOT

    if slug is None or not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", slug):
        print(f"links point to {GITHUB_REPO}; give the new one as OWNER/NAME", file=sys.stderr)
        return 2
    files = [PROJECT_ROOT / "helpers" / "__init__.py", PROJECT_ROOT / "README.md",
             *sorted((PROJECT_ROOT / "notebooks").glob("**/[0-9][0-9]_*.ipynb"))]
    for path in files:
        text = path.read_text(encoding="utf-8")
        if GITHUB_REPO in text:
            path.write_text(text.replace(GITHUB_REPO, slug), encoding="utf-8")
            print(f"re-pointed {path.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
