"""Every notebook in notebooks/ executes top to bottom in quick mode, shows its figures, and is committed without
outputs."""

from __future__ import annotations

import nbformat
import pytest

from helpers.runner import count_images, execute_notebook, has_outputs, list_notebooks

NOTEBOOKS = list_notebooks()
CELL_TIMEOUT_S = 300


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert not has_outputs(nb), f"{path.name} carries outputs: strip them before committing"


@pytest.mark.notebook
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_in_quick_mode(path, tmp_path):
    from helpers import RESULTS_DIR

    stats = execute_notebook(path, scale="quick", timeout=CELL_TIMEOUT_S, out_dir=tmp_path)
    print(f"{path.name}: {stats['wall_seconds']:.1f}s, peak {stats['peak_rss_mb']:.0f} MB")
    assert (RESULTS_DIR / f"{path.stem}.json").exists(), f"{path.name} did not save build/results/{path.stem}.json"
    executed = nbformat.read(tmp_path / path.name, as_version=4)
    assert stats["images"] == count_images(executed) > 0, (
        f"{path.name} shows no figure (no image/png output): is a non-interactive matplotlib backend forced?")
