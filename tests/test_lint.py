"""The package, tests, benchmarks and notebooks pass ruff (the rules in pyproject.toml): style drift fails CI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# notebook style: several imports or statements on one line, imports after the Colab cell, sorted by topic
NOTEBOOK_IGNORE = "E401,E402,E702,E731,I001"


def _ruff(*args: str) -> subprocess.CompletedProcess:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is not installed (it is in the dev extra: pip install -e '.[dev]')"
    return subprocess.run([ruff, "check", "--output-format", "concise", *args], cwd=ROOT, capture_output=True,
                          text=True)


def test_ruff_clean():
    proc = _ruff("helpers", "tests", "benchmarks")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_clean_notebooks():
    """Unused imports, undefined names and bugbear findings in the master and student notebooks."""
    proc = _ruff("--extend-ignore", NOTEBOOK_IGNORE, "notebooks")
    assert proc.returncode == 0, proc.stdout + proc.stderr
