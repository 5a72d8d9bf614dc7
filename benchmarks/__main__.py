"""Command line: ``python -m benchmarks [--rows a,b] [--skip notebooks] [--quick] [--repeats N] [--out build]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional


def _split(value: Optional[str]) -> List[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def main(argv: Optional[List[str]] = None) -> int:
    from . import Context, load_rows, run_row
    from .harness import environment, write_outputs

    rows = load_rows()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="rows:\n" + "\n".join(f"  {k:<12} {s.help}" for k, s in rows.items()))
    parser.add_argument("--rows", help="comma-separated row groups to run (default: all); see the list below")
    parser.add_argument("--skip", help="comma-separated row groups to leave out (e.g. notebooks)")
    parser.add_argument("--quick", action="store_true", help="small sizes and 3 repetitions: a smoke run of the harness")
    parser.add_argument("--repeats", type=int, help="timed repetitions per row (default 5, --quick 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds per row (default 1)")
    parser.add_argument("--max-seconds", type=float, help="stop repeating a row after this many seconds "
                        "(at least 3 rounds; default 30, --quick 15)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the forward row")
    parser.add_argument("--notebooks", dest="notebook_pattern", help="only the notebooks matching this glob/substring")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default build/)")
    parser.add_argument("--stem", default="bench", help="output file stem (default bench -> bench.json, bench.md)")
    parser.add_argument("--set", action="append", default=[], metavar="SIZE=N",
                        help="override one size (repeatable), e.g. --set infid_samples=200; see benchmarks/context.py")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="merge the rows of earlier runs' JSON files into --out/--stem (no measurement)")
    parser.add_argument("--list", action="store_true", help="list the row groups and exit")
    args = parser.parse_args(argv)

    if args.list:
        for k, s in rows.items():
            print(f"{k:<12} {s.help}")
        return 0
    if args.merge:
        from helpers import BUILD_DIR

        from .harness import load_outputs

        all_rows, all_nb, env, settings = [], [], {}, {"merged": [str(p) for p in args.merge]}
        for path in args.merge:
            r, nb, e, st = load_outputs(path)
            all_rows += r
            all_nb += nb
            env = env or e
            settings[path.stem] = st
        paths = write_outputs(all_rows, all_nb, env, args.out or BUILD_DIR,
                              settings={"merged": ", ".join(p.name for p in args.merge)}, stem=args.stem)
        print(f"wrote {paths['md']} and {paths['json']}")
        return 0
    wanted = _split(args.rows) or list(rows)
    unknown = [k for k in wanted + _split(args.skip) if k not in rows]
    if unknown:
        parser.error(f"unknown row group(s) {unknown}; valid: {', '.join(rows)}")
    wanted = [k for k in wanted if k not in set(_split(args.skip))]

    from helpers import BUILD_DIR

    from .context import FULL_SIZES

    sizes = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in FULL_SIZES or not value.strip().isdigit():
            parser.error(f"--set expects SIZE=N with SIZE one of {', '.join(FULL_SIZES)}; got {item!r}")
        sizes[key] = int(value)

    ctx = Context(quick=args.quick, repeats=args.repeats or (3 if args.quick else 5), warmup=args.warmup,
                  max_seconds=args.max_seconds or (15.0 if args.quick else 30.0), compile=not args.no_compile,
                  notebook_pattern=args.notebook_pattern, sizes=sizes)
    out_dir = args.out or BUILD_DIR
    settings = {"quick": ctx.quick, "repeats": ctx.repeats, "warmup": ctx.warmup, "max_seconds": ctx.max_seconds,
                "rows": ",".join(wanted), **({"sizes": sizes} if sizes else {})}
    env = environment()
    print(f"benchmarks on {env['device']} ({env['device_name']}, {env['torch_threads']} threads): {', '.join(wanted)}",
          flush=True)
    ratio_rows, nb_rows = [], []
    t_start = time.perf_counter()
    for key in wanted:
        spec = rows[key]
        t0 = time.perf_counter()
        print(f"[{key}] {spec.help}", flush=True)
        results = run_row(spec, ctx)
        for r in results:
            shown = f"{r.ratio:.3g}" if r.ratio is not None else "—"
            print(f"    {r.title:<44} ratio {shown:>8}  {r.status}"
                  + (f"  [{r.check}]" if r.check else ""), flush=True)
        (nb_rows if spec.kind == "notebook" else ratio_rows).extend(results)
        print(f"    ({time.perf_counter() - t0:.0f} s)", flush=True)
        # write after every group so that an interrupted run still leaves a table
        paths = write_outputs(ratio_rows, nb_rows, env, out_dir, settings=settings, stem=args.stem)
    settings["total_seconds"] = round(time.perf_counter() - t_start, 1)
    paths = write_outputs(ratio_rows, nb_rows, env, out_dir, settings=settings, stem=args.stem)
    print(f"wrote {paths['md']} and {paths['json']} in {settings['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
