"""Every notebook (masters and student copies) works for a person opening it in Colab, Binder or a classroom:
a Colab badge to itself, a first code cell that installs the package on Colab only (and survives a failed install),
a papermill "parameters" cell, no stored outputs, markdown whose math can render, and a last cell that saves its
results. Binder's environment.yml names every runtime dependency. The GitHub repository is ``helpers.GITHUB_REPO``."""

from __future__ import annotations

import ast
import importlib.machinery
import re
import subprocess
import sys
import types

import nbformat
import pytest

from helpers import GITHUB_REPO, PROJECT_ROOT

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")) + sorted((NOTEBOOK_DIR / "student").glob("[0-9][0-9]_*.ipynb"))
IDS = [str(p.relative_to(NOTEBOOK_DIR)) for p in NOTEBOOKS]
REPO = GITHUB_REPO
BADGE_IMG = "https://colab.research.google.com/assets/colab-badge.svg"


def _read(path):
    return nbformat.read(path, as_version=4)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def test_there_are_notebooks():
    assert any(p.parent == NOTEBOOK_DIR for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_opens_with_a_colab_badge_to_itself(path):
    nb = _read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("#"), "first cell: a markdown title"
    rel = path.relative_to(PROJECT_ROOT).as_posix()
    link = f"https://colab.research.google.com/github/{REPO}/blob/main/{rel}"
    assert f"[![Open In Colab]({BADGE_IMG})]({link})" in first.source, f"first cell must carry the badge to {link}"


class _Recorder:
    def __init__(self, returncode=0):
        self.calls, self.returncode = [], returncode

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if isinstance(self.returncode, Exception):
            raise self.returncode
        if self.returncode and kwargs.get("check"):
            raise subprocess.CalledProcessError(self.returncode, args[0])
        return subprocess.CompletedProcess(args, self.returncode)


def _run_colab_cell(source, monkeypatch, on_colab: bool, returncode=0):
    rec = _Recorder(returncode)
    monkeypatch.setattr(subprocess, "run", rec)
    monkeypatch.setattr(subprocess, "check_call", rec)
    if on_colab:
        google = types.ModuleType("google")
        google.__path__ = []
        google.__spec__ = importlib.machinery.ModuleSpec("google", None, is_package=True)
        colab = types.ModuleType("google.colab")
        colab.__spec__ = importlib.machinery.ModuleSpec("google.colab", None)
        google.colab = colab
        monkeypatch.setitem(sys.modules, "google", google)
        monkeypatch.setitem(sys.modules, "google.colab", colab)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, "<colab cell>", "exec"), {"__name__": "__colab_cell__"})
    return rec.calls


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_code_cell_installs_on_colab_only(path, monkeypatch):
    nb = _read(path)
    cell = _code_cells(nb)[0]
    assert "colab" in _tags(cell), "the first code cell must be the Colab install cell, tagged 'colab'"
    assert _run_colab_cell(cell.source, monkeypatch, on_colab=False) == [], "it must do nothing outside Colab"
    calls = _run_colab_cell(cell.source, monkeypatch, on_colab=True)
    assert len(calls) == 1, "on Colab it must run pip once"
    argv = " ".join(map(str, calls[0][0][0]))
    assert "pip install" in argv and f"git+https://github.com/{REPO}" in argv, argv


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
@pytest.mark.parametrize("failure", [1, OSError("no network")], ids=["pip-fails", "pip-missing"])
def test_colab_cell_survives_a_failed_install(path, failure, monkeypatch, capsys):
    """A failed install prints what to do and does not stop the notebook (python -m helpers colab-cell NB)."""
    _run_colab_cell(_code_cells(_read(path))[0].source, monkeypatch, on_colab=True, returncode=failure)
    assert "run this cell again" in capsys.readouterr().out


# characters a non-raw Python string makes of "\b", "\a", "\t", "\f", "\v" ... ; "\n" of "\nabla" is a newline
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]|\t")
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
_MATH = re.compile(r"\$\$.+?\$\$|(?<!\\)\$.+?(?<!\\)\$", re.S)
_EATEN = re.compile(r"\n(abla|eq|u\b|ot\b|ewline|leq|geq|eg\b|mid)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_markdown_math_can_render(path):
    """No control characters, an even number of unescaped ``$`` (outside code), no LaTeX command whose ``\\n`` became
    a newline: the traces of markdown written through non-raw Python strings."""
    bad = []
    for i, c in enumerate(_read(path).cells):
        if c.cell_type != "markdown":
            continue
        if m := _CONTROL.search(c.source):
            bad.append(f"cell {i}: control character {m.group()!r} near {c.source[max(0, m.start() - 15):m.end() + 15]!r}")
        text = _CODE.sub("", c.source)
        if len(re.findall(r"(?<!\\)\$", text)) % 2:
            bad.append(f"cell {i}: unbalanced $ (an odd number of unescaped dollar signs)")
        for math in _MATH.findall(text):
            if m := _EATEN.search(math):
                bad.append(f"cell {i}: '\\n{m.group(1)}' became a newline + {m.group(1)!r} in {math[:40]!r}")
    assert not bad, "markdown written through non-raw strings? use r\"...\"\n" + "\n".join(bad)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_has_a_parameters_cell_driven_by_scale(path):
    cells = [c for c in _code_cells(_read(path)) if "parameters" in _tags(c)]
    assert len(cells) == 1, "exactly one code cell tagged 'parameters' (papermill)"
    tree = ast.parse(cells[0].source)
    assigned = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    assert "SCALE" in assigned and "scale()" in cells[0].source, "the parameters cell sets SCALE = helpers.scale()"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_without_outputs(path):
    nb = _read(path)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"cells {dirty} carry outputs or execution counts: strip them before committing"


def _is_explore_cell(cell) -> bool:
    """The optional final "Explore" cell: it only displays a helpers.widgets explorer (measures nothing)."""
    return "helpers.widgets" in cell.source and "save_results" not in cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_ends_with_save_results(path):
    cells = _code_cells(_read(path))
    last = cells[-2] if len(cells) > 1 and _is_explore_cell(cells[-1]) else cells[-1]
    m = re.search(r"save_results\(\s*[\"']([^\"']+)[\"']", last.source)
    assert m, "the last code cell (before an optional widget 'Explore' cell) must call helpers.report.save_results(...)"
    assert m.group(1) == path.stem, f"save_results name {m.group(1)!r} should be the notebook stem {path.stem!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_exercise_convention(path):
    nb = _read(path)
    for i, c in enumerate(nb.cells):
        if "solution" in _tags(c) or "exercise" in _tags(c):
            assert c.source.lstrip().startswith("# EXERCISE:"), f"cell {i}: an exercise starts with '# EXERCISE:'"
            nxt = nb.cells[i + 1]
            assert "check" in _tags(nxt) and "check_" in nxt.source, f"cell {i + 1}: a check cell follows"


# ----------------------------------------------------------------------------------------------------- Binder


def _pyproject_runtime_names():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].strip().lower().replace("_", "-") for d in deps]


def _conda_names():
    import yaml

    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            names.add(re.split(r"[<>=!~ ]", dep, maxsplit=1)[0].strip().lower())
    return names


CONDA_NAMES = {"torch": ("pytorch", "pytorch-cpu", "pytorch-gpu")}


def test_environment_yml_names_every_runtime_dependency():
    conda = _conda_names()
    missing = [n for n in _pyproject_runtime_names() if not conda & set(CONDA_NAMES.get(n, (n,)))]
    assert not missing, f"environment.yml lacks runtime dependencies of pyproject.toml: {missing}"


def test_binder_post_build_installs_the_package_and_fetches_the_data():
    post = PROJECT_ROOT / "postBuild"
    assert post.exists() and post.stat().st_mode & 0o111, "postBuild must exist and be executable"
    text = post.read_text()
    assert "pip install" in text and " -e ." in text
    assert "python -m helpers data" in text
    assert not (PROJECT_ROOT / "binder").exists() and not (PROJECT_ROOT / ".binder").exists(), (
        "a binder/ folder would make Binder ignore environment.yml and postBuild in the root")


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.parent == NOTEBOOK_DIR],
                         ids=[p.name for p in NOTEBOOKS if p.parent == NOTEBOOK_DIR])
def test_opens_with_a_header(path):
    """Title, "What you will learn" (3-5 bullets), prerequisites, run time in quick and full mode, and links to the
    previous and next notebooks that exist."""
    head = _read(path).cells[0].source
    for phrase in ("What you will learn", "Prerequisites", "Run time", "quick", "full", "Previous:", "Next:"):
        assert phrase in head, f"the header (first cell) lacks {phrase!r}"
    learn = head.split("What you will learn", 1)[1].split("\n\n**", 1)[0]
    bullets = [line for line in learn.splitlines() if line.lstrip().startswith(("- ", "* "))]
    assert 3 <= len(bullets) <= 5, f"'What you will learn' has {len(bullets)} bullets (3-5)"
    links = re.findall(r"\]\(((?:\.\./)?[\w./-]+\.(?:ipynb|md))\)", head.split("Prerequisites", 1)[1])
    missing = [lk for lk in links if not (path.parent / lk).exists()]
    assert not missing, f"the header links to notebooks that do not exist: {missing}"
