"""Fused CPU kernels (numba) for the two DeepLift rules of :mod:`helpers.deepshap`'s pair backward pass.

Written as torch ops, each rule takes 7-10 passes over every ``(input, reference)`` pair's activations; these kernels
take **one**, reading the ``N`` input and ``K`` reference activations in place, with float32 arithmetic in the same
order as shap (``benchmarks/``, row ``deepshap``: 2.7x the torch ops). They compile on first use (cached on disk when
the package folder is writable). The pairs are split among ``torch.get_num_threads()`` Python threads (the kernels
release the GIL) rather than numba's ``parallel=True``, whose second OpenMP runtime fights torch's for the cores.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import torch
from numba import njit

__all__ = ["rescale_pairs", "maxpool_pairs"]


@njit(cache=True, nogil=True)
def _rescale(g, a, fa, b, fb, db, k, shared, eps, q0, q1):  # pragma: no cover - compiled
    d = g.shape[1]
    for q in range(q0, q1):
        i = q // k
        r = q % k if shared else q
        for j in range(d):
            din = a[i, j] - b[r, j]
            if abs(din) < eps:
                g[q, j] *= db[r, j]
            else:
                g[q, j] *= (fa[i, j] - fb[r, j]) / din


@njit(cache=True, nogil=True)
def _maxpool(out, g, y, ry, xin, rin, ix, ir, k, shared, eps, q0, q1):  # pragma: no cover - compiled
    # out: P x C x HW (overwritten); g: P x C x L (L = windows); y, ix: m x C x L; ry, ir: R x C x L;
    # xin: m x C x HW; rin: R x C x HW; pairs q0 .. q1
    c, nwin = g.shape[1], g.shape[2]
    for q in range(q0, q1):
        i = q // k
        r = q % k if shared else q
        out[q] = 0.0            # zero this pair's row here, while it is about to be hot in the cache
        for ch in range(c):
            for w in range(nwin):
                gv = g[q, ch, w]
                yv = y[i, ch, w]
                rv = ry[r, ch, w]
                cross = yv if yv > rv else rv
                px = ix[i, ch, w]
                pr = ir[r, ch, w]
                vx = gv * (cross - rv)
                vr = gv * (yv - cross)
                if px == pr:
                    din = xin[i, ch, px] - rin[r, ch, px]
                    out[q, ch, px] = 0.0 if abs(din) < eps else (vx + vr) / din
                else:
                    din = xin[i, ch, px] - rin[r, ch, px]
                    out[q, ch, px] = 0.0 if abs(din) < eps else vx / din
                    din = xin[i, ch, pr] - rin[r, ch, pr]
                    out[q, ch, pr] = 0.0 if abs(din) < eps else vr / din


_POOL: Optional[ThreadPoolExecutor] = None   # one pool for the process: a kernel call takes about a millisecond


def _split(kernel, p: int, *args) -> None:
    """Run ``kernel(*args, q0, q1)`` over pairs ``0 .. p``, split among threads; each pair is one thread's."""
    global _POOL
    n = max(1, min(torch.get_num_threads(), p // 64))
    bounds = [np.int64(p * i // n) for i in range(n + 1)]
    if n == 1:
        kernel(*args, bounds[0], bounds[1])
        return
    if _POOL is None or _POOL._max_workers < n:
        _POOL = ThreadPoolExecutor(n, thread_name_prefix="deeplift")
    list(_POOL.map(lambda i: kernel(*args, bounds[i], bounds[i + 1]), range(n)))


def rescale_pairs(g: np.ndarray, a: np.ndarray, fa: np.ndarray, b: np.ndarray, fb: np.ndarray, db: np.ndarray,
                  k: int, shared: bool, eps: float) -> None:
    """In place: ``g[q] *= (fa[i] - fb[r]) / (a[i] - b[r])``, or ``*= db[r]`` where ``|a[i] - b[r]| < eps``.

    Pair ``q = i * k + kk`` pairs input row ``i`` with reference row ``r = kk`` (``shared``) or ``r = q``.
    ``g``: ``P x D``; ``a``, ``fa``: ``m x D``; ``b``, ``fb``, ``db``: ``(K | P) x D``; all float32, C-contiguous.
    """
    _split(_rescale, g.shape[0], g, a, fa, b, fb, db, np.int64(k), bool(shared), np.float32(eps))


def maxpool_pairs(out: np.ndarray, g: np.ndarray, y: np.ndarray, ry: np.ndarray, xin: np.ndarray, rin: np.ndarray,
                  ix: np.ndarray, ir: np.ndarray, k: int, shared: bool, eps: float) -> None:
    """shap's max-pool rule for non-overlapping windows, written into ``out`` (``P x C x HW``; every cell is set).

    ``g``: ``P x C x L`` multipliers at the pool's output; ``y``/``ry``: the pool outputs of inputs/references
    (``m | R x C x L``); ``xin``/``rin``: the pool inputs (``m | R x C x HW``); ``ix``/``ir``: int64 argmax index of
    every window in its ``HW`` plane (as ``F.max_pool2d(..., return_indices=True)``).
    """
    _split(_maxpool, g.shape[0], out, g, y, ry, xin, rin, ix, ir, np.int64(k), bool(shared), np.float32(eps))
