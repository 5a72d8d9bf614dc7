"""Student copies and grading: ``python -m helpers.student notebooks [--check]`` (``make student``) and
``python -m helpers.student grade SUBMISSION_OR_FOLDER [--out build/grades]`` (``make grade``).

A master marks an exercise with a code cell tagged ``solution`` that starts with ``# EXERCISE: <task>`` and defines
one function; the next cell, tagged ``check``, calls ``helpers.checks.check_<function>(<function>)``. The student copy
(``notebooks/student/NN_name.ipynb``) is the master with each solution body replaced by
``raise NotImplementedError("Exercise: <task>")`` (signature, docstring and ``# HINT`` lines kept; re-tagged
``exercise``), a check cell after every exercise, the Colab badge pointing at the copy, a banner for students and no
outputs. The copies are a pure function of the masters, so CI regenerates them and compares bytes (``--check``).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import csv
import io
import json
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import nbformat

from . import checks

__all__ = ["Exercise", "ExerciseError", "stub_source", "find_exercises", "make_student_notebook", "generate",
           "STUDENT_DIR_NAME", "main"]

STUDENT_DIR_NAME = "student"
_MASTERS = "[0-9][0-9]_*.ipynb"
_BADGE_RE = re.compile(r"(colab\.research\.google\.com/github/[^)\s]+/blob/[^/)\s]+/notebooks/)(?!student/)"
                       r"(?P<name>[^)\s/]+\.ipynb)")


class ExerciseError(ValueError):
    """A solution cell that does not follow the exercise convention (the message names notebook and cell)."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: the function to write, its one-line task, and the check that grades it."""

    name: str
    task: str
    notebook: str
    cell: int

    @property
    def check(self) -> str:
        return f"check_{self.name}"


def _tags(cell) -> List[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def stub_source(source: str, where: str = "solution cell") -> Tuple[str, str, str]:
    """Turn a solution cell's source into the student stub; return ``(stub source, function name, task)``.

    Raises ExerciseError when the cell does not start with ``# EXERCISE: ...`` or does not define exactly one
    top-level function with its body on separate lines.
    """
    m = re.fullmatch(r"#\s*EXERCISE:\s*(?P<task>.+?)\s*", source.strip().split("\n")[0])
    if m is None:
        raise ExerciseError(f"{where}: a cell tagged 'solution' must start with '# EXERCISE: <one-line task>'")
    try:
        funcs = [n for n in ast.parse(source).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    except SyntaxError as err:
        raise ExerciseError(f"{where}: the solution does not parse: {err}") from err
    if len(funcs) != 1:
        raise ExerciseError(f"{where}: a solution cell must define exactly one top-level function, found {len(funcs)}")
    fn, task = funcs[0], m.group("task")
    if fn.body[0].lineno == fn.lineno:
        raise ExerciseError(f"{where}: put the body of {fn.name}() on its own lines")
    keep_to = fn.body[0].end_lineno if ast.get_docstring(fn) is not None else fn.body[0].lineno - 1  # 1-based
    lines = source.split("\n")
    hints = [line for line in lines[keep_to:fn.end_lineno] if re.match(r"\s*#\s*hint\b", line, re.IGNORECASE)]
    raise_line = f"{' ' * fn.body[0].col_offset}raise NotImplementedError({json.dumps('Exercise: ' + task)})"
    out = "\n".join(lines[:keep_to] + hints + [raise_line] + lines[fn.end_lineno:])
    ast.parse(out)  # the stub must be valid Python
    return out, fn.name, task


def find_exercises(nb, notebook: str = "notebook") -> List[Exercise]:
    """The exercises of a master notebook (cells tagged ``solution``), validated against :mod:`helpers.checks`."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "solution" in _tags(cell):
            _, name, task = stub_source(cell.source, f"{notebook} cell {i}")
            if name not in checks.EXERCISES:
                raise ExerciseError(f"{notebook} cell {i}: no check for exercise {name!r} in helpers.checks "
                                    f"(known: {', '.join(checks.EXERCISES)})")
            nxt = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
            if nxt is not None and "check" in _tags(nxt) and f"check_{name}" not in nxt.source:
                raise ExerciseError(f"{notebook} cell {i + 1}: the check cell after exercise {name!r} must call "
                                    f"check_{name}")
            found.append(Exercise(name, task, notebook, i))
    return found


def make_student_notebook(nb, notebook: str = "notebook") -> Tuple[Optional[object], List[Exercise]]:
    """The student copy of master notebook ``nb`` (an nbformat v4 node, not modified) and its exercises;
    ``(None, [])`` for a notebook without exercises."""
    exercises = find_exercises(nb, notebook)
    if not exercises:
        return None, []
    by_cell, cells = {e.cell: e for e in exercises}, []
    for i, cell in enumerate(nb.cells):
        c = copy.deepcopy(cell)
        c.setdefault("id", f"cell-{i}")
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
        if i == 0 and c.cell_type == "markdown":
            c.source = _BADGE_RE.sub(lambda m: f"{m.group(1)}{STUDENT_DIR_NAME}/{m.group('name')}", c.source)
        cells.append(c)
        if i in by_cell:
            name = by_cell[i].name
            c.source = stub_source(cell.source)[0]
            c.metadata["tags"] = ["exercise" if t == "solution" else t for t in _tags(cell)]
            if i + 1 == len(nb.cells) or "check" not in _tags(nb.cells[i + 1]):
                cells.append(nbformat.v4.new_code_cell(
                    "# Check your function: each case prints ✓ or ✗ (which case, expected vs got).\n"
                    f"import helpers.checks as checks\nchecks.check_{name}({name})",
                    id=f"check-{name}", metadata={"tags": ["check"]}))
    names = ", ".join(f"`{e.name}`" for e in exercises)
    note = nbformat.v4.new_markdown_cell(
        f"> **Your copy to work in.** It has {len(exercises)} exercise(s): {names}. In each exercise cell (search for\n"
        "> `NotImplementedError`) the signature, the docstring and `# HINT` lines are given: replace the line\n"
        "> `raise NotImplementedError(...)` with your code, run the cell, then run the check cell below it. The check\n"
        "> tells you which case failed, with the expected and the obtained value; the cells further down use your\n"
        "> function once it passes. Write the computation yourself: a solution that calls the library's own function\n"
        "> (`helpers...`, captum) scores no points. To hand in, save this notebook and submit the `.ipynb` file\n"
        f"> (File > Download). <sub>Generated from `notebooks/{notebook}` by `make student`.</sub>",
        id="student-note")
    cells.insert(1 if cells[0].cell_type == "markdown" else 0, note)
    out = nbformat.v4.new_notebook(metadata=copy.deepcopy(nb.metadata), cells=cells,
                                   nbformat_minor=max(5, int(nb.get("nbformat_minor", 5))))
    nbformat.validate(out)
    return out, exercises


def generate(master_dir: Path, out_dir: Optional[Path] = None, *, check: bool = False,
             verbose: bool = True) -> Dict[str, object]:
    """Write (or, with ``check``, compare) the student copies of every ``NN_*.ipynb`` in ``master_dir``.

    Returns ``{"exercises": [Exercise...], "written": [...], "stale": [...], "extra": [...]}``; ``stale`` lists
    copies that are missing or differ and ``extra`` copies whose master no longer has exercises (deleted unless
    ``check``).
    """
    from .io import atomic_write_bytes

    out_dir = Path(out_dir) if out_dir is not None else Path(master_dir) / STUDENT_DIR_NAME
    exercises: List[Exercise] = []
    wanted: Dict[str, str] = {}
    for path in sorted(Path(master_dir).glob(_MASTERS)):
        student, found = make_student_notebook(nbformat.read(path, as_version=4), path.name)
        exercises += found
        if student is not None:
            wanted[path.name] = nbformat.writes(student, version=4) + "\n"
    stale = [n for n, text in wanted.items() if not (out_dir / n).exists() or (out_dir / n).read_text() != text]
    extra = sorted({p.name for p in out_dir.glob(_MASTERS)} - set(wanted))
    if not check:
        for name in stale:
            atomic_write_bytes(out_dir / name, wanted[name].encode())
        for name in extra:
            (out_dir / name).unlink()
    if verbose:
        for e in exercises:
            print(f"{e.notebook}: exercise {e.name} -> helpers.checks.{e.check}")
        for name in stale if check else []:
            print(f"STALE: {out_dir / name} differs from what `make student` generates")
        for name in extra if check else []:
            print(f"EXTRA: {out_dir / name} has no master with exercises")
        if not check:
            print(f"{len(wanted)} student notebook(s) in {out_dir} ({len(stale)} written, {len(extra)} removed), "
                  f"{len(exercises)} exercise(s)")
    return {"exercises": exercises, "written": [] if check else stale, "stale": stale, "extra": extra}


# ---- grading: python -m helpers.student grade SUBMISSION.ipynb | FOLDER [--out build/grades] ----------------------

def _solutions(nb) -> Dict[str, object]:
    """Each exercise function a submission defines (its last definition in a cell that parses), executed in a namespace
    holding the notebook's top-level imports; a function that cannot be defined maps to the error message instead."""
    imports, defs, out = [], [], {}
    for cell in nb.cells:
        if cell.cell_type != "code" or "colab" in _tags(cell):
            continue
        try:
            body = ast.parse(cell.source).body
        except SyntaxError as err:
            out.update({n: f"the cell defining {n} does not parse: {err.msg} (line {err.lineno})"
                        for n in checks.EXERCISES if re.search(rf"^def {n}\b", cell.source, re.M)})
            continue
        imports += [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))]
        defs += [n for n in body if isinstance(n, ast.FunctionDef) and n.name in checks.EXERCISES]
    namespace: Dict[str, object] = {"__name__": "__submission__"}
    for node in imports:
        with contextlib.suppress(Exception):  # an import the grader lacks only matters if the solution uses it
            exec(compile(ast.Module(body=[node], type_ignores=[]), "<submission>", "exec"), namespace)
    for node in defs:
        try:
            exec(compile(ast.Module(body=[node], type_ignores=[]), f"<{node.name}>", "exec"), namespace)
            out[node.name] = namespace[node.name]
        except Exception as err:  # noqa: BLE001 - the student's code
            out[node.name] = f"defining {node.name} raised {type(err).__name__}: {err}"
    return out


def _grade_one(fn: object, name: str, timeout_s: int) -> checks.Result:
    """The result of one exercise (a broken or slow solution scores 0, never stops us)."""
    if isinstance(fn, str):
        return checks.Result(name, [("the exercise cell", fn)])

    def too_slow(*_):
        raise TimeoutError(f"the check took longer than {timeout_s} s")

    old = signal.signal(signal.SIGALRM, too_slow) if hasattr(signal, "SIGALRM") else None  # not on Windows
    if old is not None:
        signal.alarm(timeout_s)
    try:
        return checks.evaluate(name, fn)
    except BaseException as err:  # noqa: BLE001 - sys.exit or a timeout in student code
        return checks.Result(name, [("running the check", f"{type(err).__name__}: {err}")])
    finally:
        if old is not None:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)


def grade(path: Path, out_dir: Path, *, master_dir: Optional[Path] = None, timeout_s: int = 120,
          verbose: bool = True) -> List[Dict[str, object]]:
    """Grade one submitted notebook or every ``*.ipynb`` under a folder; write ``grades.csv``, ``grades.md`` and
    ``feedback/<submission>.txt`` (every case) into ``out_dir``; print the score table; return its rows.

    A submission is graded on the exercises of the master whose name it contains (else on every exercise it defines);
    each exercise scores the number of its cases passed, 0 when it calls the library's own answer.
    """
    from .runner import NOTEBOOK_DIR

    path, out_dir = Path(path), Path(out_dir)
    masters = {p.stem: [e.name for e in find_exercises(nbformat.read(p, as_version=4), p.name)]
               for p in sorted(Path(master_dir or NOTEBOOK_DIR).glob(_MASTERS))}
    rows: List[Dict[str, object]] = []
    (out_dir / "feedback").mkdir(parents=True, exist_ok=True)
    for f in sorted(path.rglob("*.ipynb")) if path.is_dir() else [path]:
        who = f.relative_to(path).with_suffix("").as_posix() if path.is_dir() else f.stem
        try:
            nb = nbformat.read(f, as_version=4)
        except Exception as err:  # noqa: BLE001 - a damaged upload
            rows.append({"submission": who, "exercise": "-", "points": 0, "max": 0,
                         "first failed case": f"not a readable notebook: {type(err).__name__}"})
            continue
        wanted = next((ex for stem, ex in masters.items() if stem in f.stem and ex), None)
        with contextlib.redirect_stdout(io.StringIO()):
            sols = _solutions(nb)
            results = [_grade_one(sols.get(n, f"no function {n} found in the notebook"), n, timeout_s)
                       for n in wanted or [n for n in checks.EXERCISES if n in sols]]
        lines = []
        for r in results:
            rows.append({"submission": who, "exercise": r.exercise, "points": r.points, "max": len(r.cases) or 1,
                         "first failed case": r.first_failure})
            lines += [f"{r.exercise}: {r.points} point(s)", *r.lines("ok  ", "FAIL")]
        (out_dir / "feedback" / f"{who.replace('/', '__')}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open(out_dir / "grades.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["submission", "exercise", "points", "max", "first failed case"])
        w.writeheader()
        w.writerows(rows)
    cells = [["submission", "exercise", "points", "first failed case"]] + [  # plain aligned columns, no colour codes
        [r["submission"], r["exercise"], f"{r['points']}/{r['max']}", (r["first failed case"] or "-")[:70]]
        for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    table = "".join("  ".join(c[i].ljust(widths[i]) for i in range(3)) + "  " + c[3] + "\n" for c in cells)
    (out_dir / "grades.md").write_text("```\n" + table + "```\n", encoding="utf-8")
    if verbose:
        print(table + f"\nwritten: {out_dir / 'grades.csv'}, {out_dir / 'grades.md'}, {out_dir / 'feedback'}/")
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    grading = argv[:1] == ["grade"]
    parser = argparse.ArgumentParser(prog="python -m helpers.student" + " grade" * grading,
                                     description=(grade.__doc__ if grading else __doc__).split("\n")[0])
    if grading:
        parser.add_argument("path", help="a submitted notebook or a folder of them")
        parser.add_argument("--out", default="build/grades", help="output folder (default build/grades)")
        parser.add_argument("--timeout", type=int, default=120, help="seconds allowed per exercise")
        a = parser.parse_args(argv[1:])
        grade(Path(a.path), Path(a.out), timeout_s=a.timeout)
        return 0
    parser.add_argument("master_dir", nargs="?", default="notebooks", help="folder of the master notebooks")
    parser.add_argument("--out", default=None, help="output folder (default: <master_dir>/student)")
    parser.add_argument("--check", action="store_true", help="only check that the copies are current (exit 1 if not)")
    a = parser.parse_args(argv)
    try:
        report = generate(Path(a.master_dir), Path(a.out) if a.out else None, check=a.check)
    except ExerciseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if a.check and (report["stale"] or report["extra"]):
        print("student copies are out of date: run `make student` and commit notebooks/student/", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
