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
_PEAK_RSS_CODE = "import resource as _r; print('__PEAK_RSS_KB__', _r.getrusage(_r.RUSAGE_SELF).ru_maxrss)"


def list_notebooks(folder: Path = NOTEBOOK_DIR):
    """The numbered master notebooks (``NN_*.ipynb``) in ``folder``, in order."""
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))


def has_outputs(nb) -> bool:
    """True when any code cell of ``nb`` (an nbformat node) carries outputs or an execution count."""
    return any(c.cell_type == "code" and (c.get("outputs") or c.get("execution_count")) for c in nb.cells)


def count_images(nb) -> int:
    """Number of ``image/png`` outputs in ``nb`` (figures shown inline)."""
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def strip_outputs(nb):
    """Remove outputs and execution counts from every code cell of ``nb`` (in place) and return it."""
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs = []
            c.execution_count = None
    return nb


def kernel_env(scale: str = "quick", env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of a notebook's kernel: ours without ``MPLBACKEND``, with ``SCALE`` and ``env`` added."""
    out = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out.update({"SCALE": scale, **(env or {})})
    return out


def execute_notebook(path: Union[str, Path], *, scale: str = "quick", timeout: int = 600,
                     out_dir: Optional[Path] = None, html: bool = False,
                     env: Optional[Dict[str, str]] = None) -> Dict[str, float]:
    """Run every cell of notebook ``path`` in a fresh kernel with ``SCALE=scale``.

    Args:
        timeout: seconds allowed for one cell.
        out_dir: where to write the executed ``.ipynb`` (and ``.html`` when ``html``); nothing is written if None.
        env: extra environment variables for the kernel.

    Returns:
        ``{"wall_seconds", "peak_rss_mb", "images"}``: peak resident memory of the kernel, ``image/png`` outputs.

    Raises:
        nbclient.exceptions.CellExecutionError: naming the failing cell and its traceback.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    # the kernel's own log stays at ERROR: its warning that a local kernel talks TCP without encryption (as every
    # local Jupyter kernel does) would otherwise fill the console of `make run` once per notebook
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(path.parent)}})
    peak_kb = float("nan")
    t0 = time.perf_counter()
    with client.setup_kernel(env=kernel_env(scale, env)):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        wall = time.perf_counter() - t0
        probe = nbformat.v4.new_code_cell(_PEAK_RSS_CODE)
        nb.cells.append(probe)
        try:
            client.execute_cell(probe, len(nb.cells) - 1)
        finally:
            nb.cells.pop()
        for out in probe.get("outputs", []):
            if "__PEAK_RSS_KB__" in out.get("text", ""):
                peak_kb = float(out["text"].split()[-1])
    if out_dir is not None:
        out_dir = Path(out_dir)
        atomic_write_bytes(out_dir / path.name, nbformat.writes(nb).encode())
        if html:
            from nbconvert import HTMLExporter

            body, _ = HTMLExporter().from_notebook_node(nb)
            atomic_write_bytes(out_dir / (path.stem + ".html"), body.encode())
    return {"wall_seconds": wall, "peak_rss_mb": peak_kb / 1024.0, "images": count_images(nb)}
