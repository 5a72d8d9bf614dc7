"""Student copies: the stub generator, the copies in notebooks/student/ are current, every master passes its
check, every stub fails its check with a helpful message, and one command grades a folder of submissions."""

from __future__ import annotations

import ast
import contextlib
import csv
import io
import json
import re
import subprocess
import sys

import nbformat
import pytest

from helpers import PROJECT_ROOT, checks
from helpers.student import ExerciseError, find_exercises, generate, main, make_student_notebook, stub_source

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
STUDENT_DIR = NOTEBOOK_DIR / "student"
MASTERS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google"
         ".com/github/trustworthy-dl/abc-infidelity-notebooks/blob/main/notebooks/{name})")

SOLUTION = '''# EXERCISE: the optimal scale beta of each row
import torch


@torch.no_grad()
def beta_rescale(dot,
                 diff):
    """beta = mean_S(dot * diff) / mean_S(dot^2), one per row.

    dot, diff: N x S.
    """
    # Hint: average over dim 1
    num = (dot * diff).mean(1)
    return num / (dot ** 2).mean(1)
'''


def _all_exercises():
    out = []
    for path in MASTERS:
        nb = nbformat.read(path, as_version=4)
        out += [(path, e) for e in find_exercises(nb, path.name)]
    return out


EXERCISES = _all_exercises()


# --------------------------------------------------------------------------------------------- the stub generator


def test_stub_keeps_signature_docstring_and_hints():
    stub, name, task = stub_source(SOLUTION)
    assert (name, task) == ("beta_rescale", "the optimal scale beta of each row")
    assert "num = " not in stub and "return" not in stub
    assert '    """beta = mean_S(dot * diff) / mean_S(dot^2), one per row.' in stub
    assert "    # Hint: average over dim 1\n" in stub
    assert stub.rstrip().endswith('    raise NotImplementedError("Exercise: the optimal scale beta of each row")')
    assert stub.startswith("# EXERCISE: the optimal scale beta of each row\nimport torch")
    assert "@torch.no_grad()\ndef beta_rescale(dot,\n                 diff):" in stub
    ns: dict = {}
    exec(compile(stub, "<stub>", "exec"), ns)
    with pytest.raises(NotImplementedError, match="Exercise: the optimal scale beta of each row"):
        ns["beta_rescale"](None, None)


def test_stub_without_docstring_and_with_trailing_code():
    src = "# EXERCISE: say hi\ndef aurc(c, k):\n    x = 1\n    return x\n\nprint('defined')\n"
    stub, name, _ = stub_source(src)
    assert stub == ("# EXERCISE: say hi\ndef aurc(c, k):\n    raise NotImplementedError(\"Exercise: say hi\")\n\n"
                    "print('defined')\n")
    ast.parse(stub)


def test_stub_task_with_quotes_is_a_valid_string():
    stub, _, task = stub_source('# EXERCISE: compute "AURC" (it\'s easy)\ndef aurc(c, k):\n    return 0\n')
    ns: dict = {}
    exec(stub, ns)
    with pytest.raises(NotImplementedError) as info:
        ns["aurc"](1, 2)
    assert str(info.value) == f"Exercise: {task}"


@pytest.mark.parametrize("src, phrase", [
    ("def aurc(c, k):\n    return 0\n", "must start with '# EXERCISE"),
    ("# EXERCISE: two\ndef a():\n    pass\ndef b():\n    pass\n", "exactly one top-level function, found 2"),
    ("# EXERCISE: none\nx = 1\n", "found 0"),
    ("# EXERCISE: one line\ndef aurc(c, k): return 0\n", "own lines"),
    ("# EXERCISE: broken\ndef aurc(c, k):\n    return (\n", "does not parse"),
])
def test_bad_solution_cells_are_named(src, phrase):
    with pytest.raises(ExerciseError, match=phrase):
        stub_source(src, "01_x.ipynb cell 4")


def _master(with_check: bool = True, name: str = "04_x.ipynb"):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nb.cells = [nbformat.v4.new_markdown_cell("# 04 · x\n\n" + BADGE.format(name=name), id="title"),
                nbformat.v4.new_code_cell("import torch", id="imports"),
                nbformat.v4.new_code_cell(SOLUTION, id="sol", metadata={"tags": ["solution"]})]
    if with_check:
        nb.cells.append(nbformat.v4.new_code_cell("import helpers.checks as checks\n"
                                                  "checks.check_beta_rescale(beta_rescale)", id="chk",
                                                  metadata={"tags": ["check"]}))
    nb.cells.append(nbformat.v4.new_code_cell("print(beta_rescale)", id="after"))
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="x")]
    nb.cells[1].execution_count = 3
    return nb


@pytest.mark.parametrize("with_check", [True, False])
def test_student_notebook_structure(with_check):
    master = _master(with_check)
    before = nbformat.writes(master)
    student, ex = make_student_notebook(master, "04_x.ipynb")
    assert nbformat.writes(master) == before, "the master must not be modified"
    assert [e.name for e in ex] == ["beta_rescale"]
    ids = [c.id for c in student.cells]
    assert ids == ["title", "student-note", "imports", "sol", "chk" if with_check else "check-beta_rescale", "after"]
    assert "notebooks/student/04_x.ipynb" in student.cells[0].source
    assert student.cells[3].metadata["tags"] == ["exercise"]
    assert "NotImplementedError" in student.cells[3].source and "num =" not in student.cells[3].source
    assert "check_beta_rescale(beta_rescale)" in student.cells[4].source
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in student.cells
               if c.cell_type == "code")
    nbformat.validate(student)


def test_notebook_without_exercises_gets_no_copy():
    nb = _master()
    nb.cells = nb.cells[:2]
    assert make_student_notebook(nb) == (None, [])


def test_unknown_exercise_and_wrong_check_are_errors():
    nb = _master()
    nb.cells[2].source = SOLUTION.replace("beta_rescale", "my_beta")
    with pytest.raises(ExerciseError, match="no check for exercise 'my_beta'"):
        find_exercises(nb, "04_x.ipynb")
    nb = _master()
    nb.cells[3].source = "checks.check_aurc(beta_rescale)"
    with pytest.raises(ExerciseError, match="must call check_beta_rescale"):
        find_exercises(nb, "04_x.ipynb")


def test_cli_writes_checks_and_cleans_up(tmp_path, capsys):
    masters = tmp_path / "nb"
    masters.mkdir()
    nbformat.write(_master(), masters / "04_x.ipynb")
    nbformat.write(_master(name="05_y.ipynb"), masters / "05_y.ipynb")
    out = masters / "student"
    assert main([str(masters)]) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(first) == ["04_x.ipynb", "05_y.ipynb"]
    assert main([str(masters), "--check"]) == 0
    assert main([str(masters)]) == 0 and {p.name: p.read_bytes() for p in out.iterdir()} == first  # deterministic
    nb = nbformat.read(masters / "04_x.ipynb", as_version=4)
    nb.cells[2].source = nb.cells[2].source.replace("one per row", "one per input")
    nbformat.write(nb, masters / "04_x.ipynb")
    assert main([str(masters), "--check"]) == 1
    assert "STALE" in capsys.readouterr().out
    nb = nbformat.read(masters / "05_y.ipynb", as_version=4)
    nb.cells = nb.cells[:2]
    nbformat.write(nb, masters / "05_y.ipynb")
    assert main([str(masters)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["04_x.ipynb"]
    nb = nbformat.read(masters / "04_x.ipynb", as_version=4)
    nb.cells[2].source = nb.cells[2].source.replace("# EXERCISE: ", "# ")
    nbformat.write(nb, masters / "04_x.ipynb")
    assert main([str(masters)]) == 2


# -------------------------------------------------------------------------------------------- the real notebooks


def test_student_copies_are_current():
    """CI: notebooks/student/ is exactly what `make student` generates from the masters."""
    report = generate(NOTEBOOK_DIR, check=True, verbose=False)
    assert not report["stale"] and not report["extra"], (
        f"student copies out of date (stale {report['stale']}, extra {report['extra']}): run `make student` and "
        "commit notebooks/student/")


def test_make_student_command_check_mode():
    proc = subprocess.run([sys.executable, "-m", "helpers.student", "notebooks", "--check"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_agreed_exercises_are_all_in_the_notebooks():
    names = sorted(e.name for _, e in EXERCISES)
    assert len(names) >= 6 and set(checks.EXERCISES) <= set(names), (
        f"exercises found in the masters: {names}; agreed: {sorted(checks.EXERCISES)}")


def _namespace(nb, upto: int) -> dict:
    """Run what an exercise cell may rely on: the import statements of the earlier cells and the parameters cell."""
    ns: dict = {"__name__": "__exercise__"}
    for cell in nb.cells[:upto]:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type != "code" or "colab" in tags:
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:  # a cell with IPython magics
            continue
        if "parameters" in tags:
            try:  # plain constants; a parameters cell that needs earlier results is not needed by an exercise
                exec(compile(tree, "<parameters>", "exec"), ns)
            except Exception:  # noqa: BLE001
                pass
            continue
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        exec(compile(ast.Module(body=imports, type_ignores=[]), "<imports>", "exec"), ns)
    return ns


def _check_cell(nb, index: int, name: str) -> str:
    """The check call of the cell after exercise ``index`` (with the cell's imports; not its other statements,
    which may use variables of earlier cells)."""
    nxt = nb.cells[index + 1] if index + 1 < len(nb.cells) else None
    if nxt is None or "check" not in nxt.get("metadata", {}).get("tags", []):
        return f"import helpers.checks as checks\nchecks.check_{name}({name})"
    tree = ast.parse(nxt.source)

    def is_check(node) -> bool:
        return any(isinstance(n, ast.Call) and (getattr(n.func, "attr", None) == f"check_{name}"
                                                or getattr(n.func, "id", None) == f"check_{name}")
                   for n in ast.walk(node))

    keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) or is_check(n)]
    assert any(is_check(n) for n in keep), f"the check cell after exercise {name} does not call check_{name}"
    return ast.unparse(ast.Module(body=keep, type_ignores=[]))


@pytest.mark.parametrize("path, exercise", EXERCISES, ids=[f"{p.stem}-{e.name}" for p, e in EXERCISES])
def test_master_solution_passes_its_check(path, exercise):
    nb = nbformat.read(path, as_version=4)
    ns = _namespace(nb, exercise.cell)
    exec(compile(nb.cells[exercise.cell].source, f"{path.name}[{exercise.cell}]", "exec"), ns)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_check_cell(nb, exercise.cell, exercise.name), "<check>", "exec"), ns)
    assert "all" in out.getvalue() and "✗" not in out.getvalue(), out.getvalue()


@pytest.mark.parametrize("path, exercise", EXERCISES, ids=[f"{p.stem}-{e.name}" for p, e in EXERCISES])
def test_student_stub_fails_its_check_with_a_helpful_message(path, exercise):
    nb = nbformat.read(STUDENT_DIR / path.name, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "exercise" in c.get("metadata", {}).get("tags", [])
                 and f"def {exercise.name}(" in c.source)
    ns = _namespace(nb, index)
    exec(compile(nb.cells[index].source, f"student/{path.name}[{index}]", "exec"), ns)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(AssertionError) as info:
        exec(compile(_check_cell(nb, index, exercise.name), "<check>", "exec"), ns)
    msg = str(info.value)
    assert f"`{exercise.name}` is not implemented yet" in msg and f"Exercise: {exercise.task}" in msg, msg
    assert "Replace the line `raise NotImplementedError(...)`" in msg


# ------------------------------------------------------------------------------------------------------ grading

def _hint_lines(source: str) -> int:
    return sum(1 for line in source.splitlines() if line.strip().lower().startswith("# hint"))


@pytest.mark.parametrize("path, exercise", EXERCISES, ids=[f"{p.stem}-{e.name}" for p, e in EXERCISES])
def test_each_exercise_has_a_hint(path, exercise):
    nb = nbformat.read(path, as_version=4)
    assert _hint_lines(nb.cells[exercise.cell].source) >= 1, (
        f"{path.name} cell {exercise.cell}: give the student at least one '# HINT ...' line in {exercise.name}'s body")


def test_ig_exercise_comes_before_the_first_library_ig():
    """The student writes IG before the notebook calls the library's IG (abc_confidence runs IG by default)."""
    path = NOTEBOOK_DIR / "01_abc_confidence.ipynb"
    nb = nbformat.read(path, as_version=4)
    ex = next(e.cell for p, e in EXERCISES if p == path and e.name == "integrated_gradients")
    calls = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "solution" not in _tags(c)
             and re.search(r"\b(abc_confidence|attribute|explain)\(|IntegratedGradients", c.source)]
    assert not calls or ex < calls[0], f"the IG exercise (cell {ex}) comes after a library call of IG (cell {calls[0]})"


def _tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def _submission(student_nb, solutions: dict):
    nb = json.loads(json.dumps(student_nb))
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        for name, source in solutions.items():
            if "exercise" in _tags(cell) and f"def {name}(" in cell.source:
                cell.source = source
    return nb


RIGHT_BETA = '''# EXERCISE: beta
import torch
def beta_rescale(dot, diff):
    den = (dot * dot).mean(1)
    return (dot * diff).mean(1) / torch.where(den == 0, torch.ones_like(den), den)
'''
WRONG_BETA = '''def beta_rescale(dot, diff):
    return (diff / dot).mean(1)   # mean of the ratios
'''
SHORTCUT_BETA = '''from helpers.infidelity import beta_rescale as library_beta
def beta_rescale(dot, diff):
    return library_beta(dot, diff)
'''


def test_grading_a_folder_of_three_submissions(tmp_path):
    """One command grades right, wrong and shortcut submissions; every check runs; a plain score table."""
    student = nbformat.read(STUDENT_DIR / "04_infidelity_and_sensitivity.ipynb", as_version=4)
    master = nbformat.read(NOTEBOOK_DIR / "04_infidelity_and_sensitivity.ipynb", as_version=4)
    infid = next(c.source for c in master.cells if "solution" in _tags(c) and "def infidelity_estimate(" in c.source)
    folder = tmp_path / "submissions"
    folder.mkdir()
    for who, beta in (("right", RIGHT_BETA), ("wrong", WRONG_BETA), ("shortcut", SHORTCUT_BETA)):
        sols = {"beta_rescale": beta} | ({"infidelity_estimate": infid} if who == "right" else {})
        nbformat.write(_submission(student, sols), folder / f"{who}_04_infidelity_and_sensitivity.ipynb")
    (folder / "broken_04_infidelity_and_sensitivity.ipynb").write_text("{not json")
    out = tmp_path / "grades"
    proc = subprocess.run([sys.executable, "-m", "helpers.student", "grade", str(folder), "--out", str(out)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "Traceback" not in text + proc.stderr and "\x1b[" not in text
    rows = {(r["submission"], r["exercise"]): r for r in csv.DictReader(open(out / "grades.csv"))}
    n_beta = int(rows[("right_04_infidelity_and_sensitivity", "beta_rescale")]["max"])
    assert rows[("right_04_infidelity_and_sensitivity", "beta_rescale")]["points"] == str(n_beta) >= "5"
    assert rows[("right_04_infidelity_and_sensitivity", "infidelity_estimate")]["points"] == \
        rows[("right_04_infidelity_and_sensitivity", "infidelity_estimate")]["max"]
    wrong = rows[("wrong_04_infidelity_and_sensitivity", "beta_rescale")]
    assert 0 < int(wrong["points"]) < n_beta and "mean of the ratios" in wrong["first failed case"]
    assert "not implemented" in rows[("wrong_04_infidelity_and_sensitivity", "infidelity_estimate")]["first failed case"]
    short = rows[("shortcut_04_infidelity_and_sensitivity", "beta_rescale")]
    assert short["points"] == "0" and "helpers.infidelity.beta_rescale" in short["first failed case"]
    assert "not a readable notebook" in rows[("broken_04_infidelity_and_sensitivity", "-")]["first failed case"]
    assert "submission" in text and "first failed case" in text and f"{n_beta}/{n_beta}" in text
    feedback = (out / "feedback" / "wrong_04_infidelity_and_sensitivity.txt").read_text()
    assert "FAIL" in feedback and "ok" in feedback


@pytest.mark.parametrize("path, exercise", EXERCISES, ids=[f"{p.stem}-{e.name}" for p, e in EXERCISES])
def test_check_cells_only_check(path, exercise):
    """A check cell imports and calls its check, nothing else: the library's answer is never printed beside it."""
    nb = nbformat.read(path, as_version=4)
    cell = nb.cells[exercise.cell + 1]
    extra = [ast.unparse(n)[:80] for n in ast.parse(cell.source).body
             if not isinstance(n, (ast.Import, ast.ImportFrom))
             and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
                      and ast.unparse(n.value.func).rsplit(".", 1)[-1].startswith("check_"))]
    assert not extra, f"{path.name} cell {exercise.cell + 1}: a check cell only calls its check; move {extra} below"
