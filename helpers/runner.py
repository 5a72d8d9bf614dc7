"""Execute notebooks headlessly (nbclient): used by ``make run``, the notebook tests and the benchmarks.

A notebook runs with its folder as working directory and ``SCALE`` set in its kernel's environment. The kernel
chooses its own matplotlib backend (inline: figures become ``image/png`` outputs); an ``MPLBACKEND`` of the calling
process is not passed on. The executed copy can be written (atomically) with its outputs, and an HTML rendering.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, Optional, Union

from . import PROJECT_ROOT
from .io import atomic_write_bytes

__all__ = ["NOTEBOOK_DIR", "list_notebooks", "execute_notebook", "strip_outputs", "has_outputs", "count_images"]

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
_PEAK_RSS_CODE = "import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"  # in kB on Linux


def list_notebooks(folder: Path = NOTEBOOK_DIR):
    """The numbered master notebooks (``NN_*.ipynb``) in ``folder``, in order."""
    return sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))


def has_outputs(nb) -> bool:
    """True when any code cell of ``nb`` (an nbformat node) carries outputs or an execution count."""
    return any(c.cell_type == "code" and (c.get("outputs") or c.get("execution_count")) for c in nb.cells)


def count_images(nb) -> int:
    """Number of ``image/png`` outputs in ``nb`` (figures shown inline)."""
    outputs = (o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    return sum("image/png" in o.get("data", {}) for o in outputs)


def strip_outputs(nb):
    """Remove outputs and execution counts from every code cell of ``nb`` (in place) and return it."""
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    return nb


def kernel_env(scale: str = "quick", env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of a notebook's kernel: ours without ``MPLBACKEND``, with ``SCALE`` and ``env`` added."""
    return {**{k: v for k, v in os.environ.items() if k != "MPLBACKEND"}, "SCALE": scale, **(env or {})}


def execute_notebook(path: Union[str, Path], *, scale: str = "quick", timeout: int = 600,
                     out_dir: Optional[Path] = None, html: bool = False,
                     env: Optional[Dict[str, str]] = None) -> Dict[str, float]:
    """Run every cell of notebook ``path`` in a fresh kernel with ``SCALE=scale`` and ``env``, ``timeout`` s a cell.

    Writes the executed ``.ipynb`` (and ``.html`` if ``html``) to ``out_dir`` unless it is None. Returns
    ``{"wall_seconds", "peak_rss_mb" (of the kernel), "images" (image/png outputs)}``; a failing cell raises
    ``nbclient.exceptions.CellExecutionError`` with its traceback.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    # the kernel's own log stays at ERROR: its warning that a local kernel talks TCP without encryption (as every
    # local Jupyter kernel does) would otherwise fill the console of `make run` once per notebook
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    with client.setup_kernel(env=kernel_env(scale, env)):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        wall = time.perf_counter() - t0
        nb.cells.append(nbformat.v4.new_code_cell(_PEAK_RSS_CODE))  # measured, then taken out again
        peak_kb = float(client.execute_cell(nb.cells[-1], len(nb.cells) - 1).outputs[-1]["text"])
        nb.cells.pop()
    if out_dir is not None:
        atomic_write_bytes(Path(out_dir) / path.name, nbformat.writes(nb).encode())
        if html:
            from nbconvert import HTMLExporter

            body, _ = HTMLExporter().from_notebook_node(nb)
            atomic_write_bytes(Path(out_dir) / (path.stem + ".html"), body.encode())
    return {"wall_seconds": wall, "peak_rss_mb": peak_kb / 1024.0, "images": count_images(nb)}
