"""Command line: ``python -m helpers data | models [NAME ...] | notebooks [NB ...] | report | info``."""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("data", help="fetch and verify MNIST (data/mnist.npz)")
    p_models = sub.add_parser("models", help="train (or load) the cached models")
    p_models.add_argument("names", nargs="*")
    p_nb = sub.add_parser("notebooks", help="execute notebooks into build/notebooks (ipynb + html)")
    p_nb.add_argument("paths", nargs="*")
    p_nb.add_argument("--timeout", type=int, default=1800)
    sub.add_parser("report", help="assemble build/report.md from build/results/*.json")
    sub.add_parser("info", help="print the environment")
    args = parser.parse_args(argv)

    if args.cmd == "data":
        from .data import ensure_mnist, load_mnist

        path = ensure_mnist()
        sizes = {s: int(load_mnist(s)[0].shape[0]) for s in ("train", "val", "test")}
        print(f"MNIST ready at {path}: {sizes}")
    elif args.cmd == "models":
        from .models import MODEL_NAMES, model_info

        for name in args.names or MODEL_NAMES:
            t0 = time.perf_counter()
            info = model_info(name)
            keys = ("test_accuracy", "pgd_accuracy", "train_seconds")
            print(f"{name:>13}: " + ", ".join(f"{k}={info[k]:.4g}" for k in keys if k in info)
                  + f"  (ready in {time.perf_counter() - t0:.1f}s)")
    elif args.cmd == "notebooks":
        from pathlib import Path

        from . import BUILD_DIR, scale
        from .runner import execute_notebook, list_notebooks

        paths = [Path(p) for p in args.paths] or list_notebooks()
        for p in paths:
            print(f"executing {p.name} (SCALE={scale()}) ...", flush=True)
            stats = execute_notebook(p, scale=scale(), timeout=args.timeout, out_dir=BUILD_DIR / "notebooks",
                                     html=True)
            print(f"  done in {stats['wall_seconds']:.0f}s, peak {stats['peak_rss_mb']:.0f} MB", flush=True)
    elif args.cmd == "report":
        from .report import build_report

        print(f"report written to {build_report()}")
    elif args.cmd == "info":
        from .report import environment

        print(json.dumps(environment(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
