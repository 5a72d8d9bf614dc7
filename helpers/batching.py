"""Chunked evaluation over inputs x samples under a memory budget, counter-based randomness, and the one predict.

Every perturbation method (ABC, infidelity, sensitivity, smoothing) evaluates the model on ``N`` inputs x ``S``
copies. :func:`run_chunked` cuts the flat row range into chunks sized by *bytes* (not rows: a tabular row is
thousands of times smaller than an image) and runs each as one batched call; on an out-of-memory error the chunk is
halved and retried. Random numbers are a pure function of ``(seed, stream, counter)`` (:func:`hash_uniform`), with the
counter built from (input index, sample index, feature), so results do not depend on the chunk size, the batch
position of an input, or the device: this is the one random-number scheme of the package.
"""

from __future__ import annotations

import math
import os
from typing import Callable, List, Optional

import torch
from torch import nn

from .validation import check_images, check_model, model_device

__all__ = ["DEFAULT_CPU_BUDGET", "memory_budget", "chunk_size_for", "bytes_per_image", "is_oom_error", "run_chunked",
           "forward", "predict", "hash_uniform", "hash_normal", "keys", "mix_int"]

#: Bytes of activations one chunk may use on the CPU (override with ``HELPERS_MEMORY_BUDGET_MB``).
DEFAULT_CPU_BUDGET = 256 * 2**20


def memory_budget(device: Optional[torch.device] = None) -> int:
    """Bytes one chunk may use: ``HELPERS_MEMORY_BUDGET_MB`` if set, else a quarter of free CUDA memory, else
    256 MiB."""
    env = os.environ.get("HELPERS_MEMORY_BUDGET_MB")
    if env:
        return int(float(env) * 2**20)
    if device is not None and torch.device(device).type == "cuda":
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return max(DEFAULT_CPU_BUDGET, free // 4)
    return DEFAULT_CPU_BUDGET


def chunk_size_for(bytes_per_item: int, budget: Optional[int] = None, *, device: Optional[torch.device] = None,
                   minimum: int = 1, maximum: int = 1 << 20) -> int:
    """Number of items of ``bytes_per_item`` bytes that fit in ``budget`` bytes (clamped to ``[minimum, maximum]``)."""
    if bytes_per_item <= 0:
        raise ValueError(f"bytes_per_item must be > 0, got {bytes_per_item}")
    budget = memory_budget(device) if budget is None else budget
    return int(min(maximum, max(minimum, budget // bytes_per_item)))


def bytes_per_image(x: torch.Tensor, activation_factor: int = 64) -> int:
    """Rough bytes of activations one row of ``x`` (``N x ...``) costs in a pass of a small network: the row's bytes
    times ``activation_factor`` (64 covers a forward pass; about 160 a forward + backward)."""
    return max(1, x[0].numel() * x.element_size() * activation_factor)


def is_oom_error(err: BaseException) -> bool:
    """True for a CUDA (or MPS) out-of-memory error, the only error on which a smaller chunk can help."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def run_chunked(fn: Callable[[int, int], torch.Tensor], total: int, chunk_size: int, *,
                min_chunk: int = 1, on_oom: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """Evaluate ``fn(start, stop)`` over ``[0, total)`` in chunks and concatenate the results along dim 0.

    ``fn`` must be deterministic in ``(start, stop)`` (seed per-row randomness by row index, not by call order) so a
    retried chunk gives the same rows. On an out-of-memory error the chunk is halved down to ``min_chunk``;
    ``on_oom(new_size)`` is called after each halving.
    """
    if total < 1 or chunk_size < 1:
        raise ValueError(f"total and chunk_size must be >= 1, got {total} and {chunk_size}")
    parts: List[torch.Tensor] = []
    start = 0
    while start < total:
        stop = min(total, start + chunk_size)
        try:
            parts.append(fn(start, stop))
            start = stop
        except Exception as err:  # noqa: BLE001 - re-raised unless it is an OOM we can back off from
            if not is_oom_error(err) or chunk_size <= min_chunk:
                raise
            chunk_size = max(min_chunk, chunk_size // 2)
            torch.cuda.empty_cache()  # a no-op without CUDA
            if on_oom is not None:
                on_oom(chunk_size)
    return torch.cat(parts, dim=0)


def forward(model: nn.Module, x: torch.Tensor, *, batch_size: Optional[int] = None) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (``N x ...`` -> ``N x C``), chunked, on the model's device, under inference mode,
    through the cached fast forward (:func:`helpers.fastpath.fast_forward`). A single binary logit ``z`` (``N`` or
    ``N x 1``) becomes ``[-z, z]`` (class 1 iff ``z > 0``). The result stays on the model's device."""
    from .fastpath import fast_forward

    check_model(model)
    check_images(x)
    dev = model_device(model)
    bs = batch_size or chunk_size_for(bytes_per_image(x), device=dev)
    fwd = fast_forward(model, x[:bs].to(dev))

    def run(a: int, b: int) -> torch.Tensor:
        with torch.inference_mode():
            out = fwd(x[a:b].to(dev, non_blocking=True))
        if out.dim() == 1 or out.shape[1] == 1:  # one binary logit z: class scores [-z, z]
            out = torch.cat([-out.reshape(-1, 1), out.reshape(-1, 1)], dim=1)
        return out

    return run_chunked(run, x.shape[0], bs)


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: Optional[int] = None) -> torch.Tensor:
    """Predicted labels (LongTensor ``N``) of ``model`` on ``x``; see :func:`forward`."""
    return forward(model, x, batch_size=batch_size).argmax(dim=1)


# ------------------------------------------------------------------ counter-based randomness (splitmix64 hash)

_GOLDEN, _M1, _M2 = 0x9E3779B97F4A7C15 - (1 << 64), 0xBF58476D1CE4E5B9 - (1 << 64), 0x94D049BB133111EB - (1 << 64)


def _srl(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's ``>>`` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _finalise(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser of int64 values (the products wrap around modulo 2^64)."""
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


def mix_int(v: int) -> int:
    """splitmix64 finaliser of a Python int, as a signed 64-bit int: seeds derived from (seed, stream, item)."""
    return int(_finalise(torch.tensor((v + 2**63) % 2**64 - 2**63, dtype=torch.int64)))


def hash_uniform(seed: int, key: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """Uniform float32 numbers in ``[0, 1)`` (24 random bits), a pure function of ``(seed, stream, key)``: ``key``
    holds int64 counters of any shape (e.g. ``(input * S + sample) * d + feature``), the result has its shape and
    device, and the same key gives the same number on any device and in any chunk."""
    z = _finalise(key.to(torch.int64) * _GOLDEN + mix_int(int(seed) * 1000003 + int(stream) * 7919 + 12345))
    return _srl(z, 40).to(torch.float32) * (2.0 ** -24)


def hash_normal(seed: int, key: torch.Tensor, stream: int = 0) -> torch.Tensor:
    """Standard normal float32 numbers from :func:`hash_uniform` by Box-Muller (two derived streams)."""
    u1, u2 = hash_uniform(seed, key, 2 * stream + 101), hash_uniform(seed, key, 2 * stream + 102)
    return torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * math.pi * u2)


def keys(n: int, per: int, device: torch.device, start: int = 0) -> torch.Tensor:
    """int64 counters ``start .. start + n * per`` shaped ``n x per``."""
    return torch.arange(start, start + n * per, device=device, dtype=torch.int64).view(n, per)
