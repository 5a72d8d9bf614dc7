"""Ratio benchmarks: every speed claim of the project measured against its reference and the model's forward rate.

``python -m benchmarks`` (or ``make bench``) runs every row and writes ``build/bench.json`` and ``build/bench.md``;
see ``benchmarks/README.md`` for the rows, the targets and the options (``--rows``, ``--skip``, ``--quick``).

Layout:

* :mod:`benchmarks.harness`  -- alternating timing, ratios, PASS/BELOW verdicts, equality checks, output files.
* :mod:`benchmarks.context`  -- settings and sizes of a run, cached models / images, the forward ceiling.
* :mod:`benchmarks.registry` -- ``@row(key, help)``: the table's rows, each ``f(ctx) -> list[RowResult]``.
* :mod:`benchmarks.rows_core` -- forward ceiling (eager / channels_last / compile) and the notebooks in quick mode.
* :mod:`benchmarks.rows_ref` -- ours against captum / shap / pinv, and ABC against the ceiling.
"""

from .context import Context
from .harness import RowResult, Skip, compare_tensors, speedup, time_alternating, verdict
from .registry import ROWS, row, run_row

__all__ = ["Context", "RowResult", "Skip", "compare_tensors", "speedup", "time_alternating", "verdict", "ROWS", "row",
           "run_row", "load_rows"]


def load_rows():
    """Import the row modules (registering every row) and return the registry."""
    from . import rows_core, rows_ref  # noqa: F401 - imported for their @row registrations

    return ROWS
