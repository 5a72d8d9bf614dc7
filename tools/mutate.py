"""Mutation testing of the core math: a small AST mutation runner (``make mutate``).

For each module below, every function body is scanned for mutation sites: arithmetic operators (+ <-> -, * <-> /,
** -> *), comparison boundaries (< <-> <=, > <-> >=, == <-> !=), the constants 0, 1 and 2 (0 -> 1, 1 -> 2, 2 -> 1),
``.any`` <-> ``.all``, dropping ``abs`` / ``.abs()`` and dropping a unary minus. Error checks (an ``if`` whose body
only raises), messages, asserts, argument defaults, annotations and ``__repr__`` are left alone: the target is the
math. A seeded sample of at most ``--per-module`` sites per module is mutated one at a time in a private copy of the
project (the working tree is never touched) and that module's fast unit tests run with ``-x``; a failing or timed-out
run kills the mutant. The kill rate per module and every surviving mutant are printed as Markdown (for
tests/MUTANTS.md) and written to ``--out`` as JSON.

Usage: ``python tools/mutate.py [--per-module 12] [--workers 2] [--seed 0] [--modules abc,metrics] [--out FILE]``\n(``--only infidelity:51,optimal:113`` reruns every mutant of the given lines).
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = {  # module -> the unit tests that exercise it
    "abc": ["tests/test_abc.py"],
    "infidelity": ["tests/test_infidelity.py"],
    "optimal": ["tests/test_optimal.py"],
    "perturbations": ["tests/test_infidelity.py", "tests/test_optimal.py"],
    "smoothing": ["tests/test_smoothing.py"],
    "calibration": ["tests/test_calibration.py"],
    "metrics": ["tests/test_metrics.py"],
}
BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult,
         ast.FloorDiv: ast.Mult}
CMPOP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
CONST = {0: 1, 1: 2, 2: 1}
SKIP_KEYWORDS = {"seed", "stacklevel", "decimals", "ndigits"}


def _only_raises(node: ast.If) -> bool:
    return all(isinstance(s, ast.Raise) for s in node.body) and not node.orelse


def _skipped(func: ast.AST) -> set:
    """ids of the nodes under ``func`` that are not math: error checks, messages, asserts, defaults, annotations."""
    out: set = set()

    def drop(n):
        out.update(id(m) for m in ast.walk(n))

    for n in ast.walk(func):
        if isinstance(n, ast.If) and _only_raises(n):
            drop(n)
        elif isinstance(n, (ast.Raise, ast.Assert, ast.JoinedStr)):
            drop(n)
        elif isinstance(n, ast.arguments):
            drop(n)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.returns is not None:
            drop(n.returns)
        elif isinstance(n, ast.AnnAssign):
            drop(n.annotation)
        elif isinstance(n, ast.keyword) and n.arg in SKIP_KEYWORDS:
            drop(n)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "warn":
            drop(n)
        elif isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str):
            drop(n)
    return out


def _mutations(node: ast.AST):
    """Yield (description, replacement node factory) for one node."""
    if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in BINOP:
        new = BINOP[type(node.op)]
        yield f"{type(node.op).__name__} -> {new.__name__}", lambda n, new=new: _with(n, op=new())
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in CMPOP:
        new = CMPOP[type(node.ops[0])]
        yield f"{type(node.ops[0]).__name__} -> {new.__name__}", lambda n, new=new: _with(n, ops=[new()])
    elif (isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value in CONST):
        new = type(node.value)(CONST[node.value])
        yield f"{node.value!r} -> {new!r}", lambda n, new=new: ast.Constant(new)
    elif isinstance(node, ast.Attribute) and node.attr in ("any", "all"):
        new = "all" if node.attr == "any" else "any"
        yield f".{node.attr} -> .{new}", lambda n, new=new: _with(n, attr=new)
    elif isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Name) and f.id == "abs" and len(node.args) == 1:
            yield "abs(x) -> x", lambda n: n.args[0]
        elif isinstance(f, ast.Attribute) and f.attr == "abs":
            if node.args and isinstance(f.value, ast.Name) and f.value.id in ("torch", "np", "numpy", "math"):
                yield "abs(x) -> x", lambda n: n.args[0]
            elif not node.args:
                yield ".abs() -> ''", lambda n: n.func.value
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        yield "-x -> x", lambda n: n.operand


def _with(node: ast.AST, **fields) -> ast.AST:
    new = copy.copy(node)
    for k, v in fields.items():
        setattr(new, k, v)
    return new


def sites(source: str) -> list:
    """Every mutation site of a module: dicts with line, function, change, the source segment and a site index."""
    tree = ast.parse(source)
    out = []
    for top in ast.walk(tree):
        if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)) or top.name == "__repr__":
            continue
        skip = _skipped(top)
        for n in ast.walk(top):
            if id(n) in skip or n is top:
                continue
            for change, _ in _mutations(n):
                out.append({"line": n.lineno, "col": n.col_offset, "end": [n.end_lineno, n.end_col_offset],
                            "function": top.name, "change": change,
                            "code": (ast.get_source_segment(source, n) or "").splitlines()[0][:80]})
    # nested functions are walked twice (as part of the outer one and on their own): keep each site once
    seen, unique = set(), []
    for s in out:
        key = (s["line"], s["col"], tuple(s["end"]), s["change"])
        if key not in seen:
            seen.add(key)
            unique.append(s)
    return unique


def apply(source: str, site: dict) -> str:
    """The module's source with one site mutated (re-generated by ast.unparse)."""
    tree = ast.parse(source)

    class T(ast.NodeTransformer):
        def generic_visit(self, node):
            node = super().generic_visit(node)
            where = (getattr(node, "lineno", None), getattr(node, "col_offset", None),
                     [getattr(node, "end_lineno", None), getattr(node, "end_col_offset", None)])
            if where == (site["line"], site["col"], site["end"]):
                for change, make in _mutations(node):
                    if change == site["change"]:
                        return ast.copy_location(make(node), node)
            return node

    return ast.unparse(ast.fix_missing_locations(T().visit(tree)))


def make_copy(dest: Path) -> Path:
    """A private copy of the project (helpers, tests, pyproject) with data/ linked, for one worker."""
    for name in ("helpers", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "setup.cfg", "conftest.py"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    (dest / "data").symlink_to(ROOT / "data")
    return dest


def run_tests(work: Path, tests: list, timeout: float) -> tuple:
    env = dict(os.environ, HELPERS_DATA_DIR=str(ROOT / "data"), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    cmd = ["nice", sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m",
           "not notebook and not browser", *tests]
    t0 = time.time()
    try:
        rc = subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    return rc, time.time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", default=",".join(TESTS))
    ap.add_argument("--per-module", type=int, default=12, help="sampled sites per module (0: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="rerun given sites, e.g. 'metrics:285,abc:298' (every change there)")
    ap.add_argument("--list", action="store_true", help="only count the sites")
    ap.add_argument("--out", default=str(ROOT / "build" / "mutants.json"))
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    only = {tuple(o.split(":")) for o in a.only.split(",") if o}
    modules = sorted({m for m, _ in only}) if only else [m for m in a.modules.split(",") if m]
    jobs = []
    for m in modules:
        src = (ROOT / "helpers" / f"{m}.py").read_text()
        all_sites = sites(src)
        if only:
            pick = [s for s in all_sites if (m, str(s["line"])) in only]
        else:
            pick = all_sites if a.per_module <= 0 else rng.sample(all_sites, min(a.per_module, len(all_sites)))
        print(f"{m}: {len(all_sites)} sites, {len(pick)} sampled", flush=True)
        jobs += [(m, s) for s in pick]
    if a.list:
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="mutate_"))
    copies = [make_copy(tmp / f"w{i}") for i in range(a.workers)]
    baseline = {}
    with ThreadPoolExecutor(a.workers) as pool:  # the unmutated tests must pass; their time sets the timeout
        runs = list(pool.map(lambda im: run_tests(copies[im[0] % a.workers], TESTS[im[1]], 1800), enumerate(modules)))
    for m, (rc, t) in zip(modules, runs):
        baseline[m] = t
        print(f"baseline {m}: rc={rc} {t:.0f} s", flush=True)
        if rc != 0:
            print(f"  {m}: tests fail unmutated; skipped", flush=True)
            jobs = [j for j in jobs if j[0] != m]
    rng.shuffle(jobs)  # interleave modules so that a stopped run still samples each
    free = list(copies)
    results = []

    def one(job):
        m, s = job
        work = free.pop()
        path = work / "helpers" / f"{m}.py"
        original = path.read_text()
        try:
            path.write_text(apply(original, s))
            rc, t = run_tests(work, TESTS[m], timeout=2 * baseline[m] + 30)
        finally:
            path.write_text(original)
            free.append(work)
        status = "timeout" if rc == "timeout" else ("survived" if rc == 0 else "killed")
        r = dict(s, module=m, status=status, seconds=round(t, 1))
        print(f"{status:8s} {m}:{s['line']} {s['function']} {s['change']}  `{s['code']}`", flush=True)
        return r

    with ThreadPoolExecutor(a.workers) as pool:
        results = list(pool.map(one, jobs))
    shutil.rmtree(tmp, ignore_errors=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1))
    print("\n| module | mutants | killed | timeout | survived | kill rate |\n|---|---|---|---|---|---|")
    total = [0, 0, 0]
    for m in modules:
        rs = [r for r in results if r["module"] == m]
        k = sum(r["status"] == "killed" for r in rs)
        to = sum(r["status"] == "timeout" for r in rs)
        total = [total[0] + len(rs), total[1] + k + to, total[2] + to]
        rate = f"{100 * (k + to) / len(rs):.0f} %" if rs else "-"
        print(f"| {m} | {len(rs)} | {k} | {to} | {len(rs) - k - to} | {rate} |")
    if total[0]:
        print(f"| all | {total[0]} | {total[1] - total[2]} | {total[2]} | {total[0] - total[1]} | "
              f"{100 * total[1] / total[0]:.0f} % |")
    print("\nSurviving mutants:")
    for r in results:
        if r["status"] == "survived":
            print(f"- {r['module']}.py:{r['line']} `{r['function']}`: {r['change']} in `{r['code']}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
