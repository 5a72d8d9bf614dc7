"""The registry of benchmark rows: ``@row(key, help)`` adds a function ``f(ctx) -> list[RowResult]``."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable, Dict, List

from .harness import RowResult, Skip

__all__ = ["RowSpec", "ROWS", "row", "run_row"]


@dataclass(frozen=True)
class RowSpec:
    """A group of rows: ``key`` (for ``--rows``), a one-line description, the function, and its kind."""

    key: str
    help: str
    fn: Callable[..., List[RowResult]]
    kind: str = "ratio"  # "ratio" rows go to the main table, "notebook" rows to the notebook table


#: Every registered group, in the order the table shows them.
ROWS: Dict[str, RowSpec] = {}


def row(key: str, help: str, *, kind: str = "ratio") -> Callable:
    """Decorator registering ``fn(ctx) -> list[RowResult]`` under ``key``."""

    def deco(fn: Callable[..., List[RowResult]]) -> Callable[..., List[RowResult]]:
        if key in ROWS:
            raise ValueError(f"benchmark row {key!r} registered twice")
        ROWS[key] = RowSpec(key, help, fn, kind)
        return fn

    return deco


def run_row(spec: RowSpec, ctx) -> List[RowResult]:
    """Run one group; a :class:`Skip` or any error becomes a single ``n/a: <reason>`` row (never raises)."""
    try:
        return [r.finish() for r in spec.fn(ctx)]
    except Skip as s:
        return [RowResult.skipped(spec.key, spec.help, str(s))]
    except Exception as err:  # noqa: BLE001 - the benchmark never fails the build
        traceback.print_exc()
        return [RowResult.skipped(spec.key, spec.help, f"error: {type(err).__name__}: {str(err)[:160]}")]
