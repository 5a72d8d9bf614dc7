"""Chunked evaluation over inputs x samples on the model's device, under a memory budget, with OOM back-off.

Every perturbation method in this package (ABC, infidelity, sensitivity, smoothing) evaluates the model on
``N`` inputs x ``S`` perturbed copies. Building all ``N*S`` images at once does not fit in memory at paper scale,
and a Python loop over single images is 100x slower than a batched forward pass. The routines here cut the flat
``N*S`` index range into chunks sized to a byte budget and run each chunk as one batched call; on a CUDA
out-of-memory error the chunk is halved and retried, so a run that fits nowhere else still finishes.
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional

import torch
from torch import nn

from .validation import check_images, check_model, model_device

__all__ = [
    "DEFAULT_CPU_BUDGET",
    "memory_budget",
    "chunk_size_for",
    "bytes_per_image",
    "is_oom_error",
    "run_chunked",
    "forward",
    "predict",
]

#: Bytes of activations one chunk may use on the CPU (override with ``HELPERS_MEMORY_BUDGET_MB``).
DEFAULT_CPU_BUDGET = 256 * 2**20


def memory_budget(device: Optional[torch.device] = None) -> int:
    """Bytes one chunk may use: ``HELPERS_MEMORY_BUDGET_MB`` if set, else a quarter of free CUDA memory, else 256 MiB."""
    env = os.environ.get("HELPERS_MEMORY_BUDGET_MB")
    if env:
        return int(float(env) * 2**20)
    if device is not None and torch.device(device).type == "cuda":
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return max(DEFAULT_CPU_BUDGET, free // 4)
    return DEFAULT_CPU_BUDGET


def chunk_size_for(bytes_per_item: int, budget: Optional[int] = None, *, device: Optional[torch.device] = None,
                   minimum: int = 1, maximum: int = 1 << 16) -> int:
    """Number of items of ``bytes_per_item`` bytes that fit in ``budget`` bytes (clamped to ``[minimum, maximum]``)."""
    if bytes_per_item <= 0:
        raise ValueError(f"bytes_per_item must be > 0, got {bytes_per_item}")
    budget = memory_budget(device) if budget is None else budget
    return int(min(maximum, max(minimum, budget // bytes_per_item)))


def is_oom_error(err: BaseException) -> bool:
    """True for a CUDA (or MPS) out-of-memory error, the only error on which a smaller chunk can help."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(err, oom_type):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def run_chunked(fn: Callable[[int, int], torch.Tensor], total: int, chunk_size: int, *,
                min_chunk: int = 1, on_oom: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """Evaluate ``fn(start, stop)`` over ``[0, total)`` in chunks and concatenate the results along dim 0.

    Args:
        fn: computes the rows ``start:stop`` of the result; must be deterministic in ``(start, stop)`` so a retried
            chunk gives the same rows (seed per-row randomness by row index, not by call order).
        total: number of rows.
        chunk_size: rows per call at first.
        min_chunk: the smallest chunk to try before giving up and re-raising the out-of-memory error.
        on_oom: called with the new chunk size after each halving (for logging and for tests).

    Returns:
        The concatenation of every chunk's tensor (``total x ...``).
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    parts: List[torch.Tensor] = []
    start = 0
    while start < total:
        stop = min(total, start + chunk_size)
        try:
            parts.append(fn(start, stop))
        except Exception as err:  # noqa: BLE001 - re-raised unless it is an OOM we can back off from
            if not is_oom_error(err) or chunk_size <= min_chunk:
                raise
            chunk_size = max(min_chunk, chunk_size // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if on_oom is not None:
                on_oom(chunk_size)
            continue
        start = stop
    if not parts:
        raise ValueError("run_chunked: nothing to evaluate (total == 0)")
    return torch.cat(parts, dim=0)


def bytes_per_image(x: torch.Tensor, activation_factor: int = 64) -> int:
    """Rough bytes of activations one image of ``x`` (``N x ...``) costs in a pass of a small CNN: the input's bytes
    times ``activation_factor`` (64 covers a forward pass; about 160-200 a forward + backward)."""
    return max(1, x[0].numel() * x.element_size() * activation_factor)


def forward(model: nn.Module, x: torch.Tensor, *, batch_size: Optional[int] = None) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (``N x ...`` -> ``N x C``), chunked, on the model's device, under inference_mode.

    The result stays on the model's device.
    """
    check_model(model)
    check_images(x)
    dev = model_device(model)
    bs = batch_size or chunk_size_for(bytes_per_image(x), device=dev)

    def run(a: int, b: int) -> torch.Tensor:
        with torch.inference_mode():
            return model(x[a:b].to(dev, non_blocking=True))

    return run_chunked(run, x.shape[0], bs)


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: Optional[int] = None) -> torch.Tensor:
    """Predicted labels (LongTensor ``N``) of ``model`` on ``x``; see :func:`forward`."""
    return forward(model, x, batch_size=batch_size).argmax(dim=1)
