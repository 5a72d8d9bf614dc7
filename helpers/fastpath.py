"""The fastest way to run a model's forward pass on this machine: eager, channels-last or ``torch.compile``.

Every perturbation method (ABC, infidelity, sensitivity, smoothing) is a long run of forward passes over batches of
perturbed images, so its speed is bounded by the model's raw forward rate. :func:`fast_forward_fn` returns a callable
``f(x) -> logits`` in one of three forms:

* ``"eager"``         -- the model itself.
* ``"channels_last"`` -- a copy of the model in channels-last memory format; 4-D inputs are converted on the way in
  (oneDNN / cuDNN convolutions are often faster in NHWC).
* ``"jit"``           -- ``torch.jit.trace`` + ``torch.jit.optimize_for_inference`` (frozen weights, oneDNN conv + ReLU
  fusion): builds in a second or two; **inference only** (no gradients). torch marks it deprecated in favour of
  ``torch.compile``, but on a small CPU it was the fastest form we measured (see ``benchmarks/``).
* ``"compile"``       -- ``torch.compile(model)`` (Inductor: fused conv + ReLU + pool); compiling costs tens of seconds
  once per process and input shape, so it only pays off for long runs.
* ``"auto"``          -- time the candidates on an example batch and keep the fastest (cached per model, device and
  input shape). ``jit`` is a candidate unless ``need_grad=True``; ``compile`` only when ``allow_compile=True``.

The returned callable does not switch on ``inference_mode`` or ``no_grad``: the caller decides (gradients flow
through every form except ``"jit"``). The original model is never modified.
"""

from __future__ import annotations

import copy
import time
import warnings
import weakref
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from .validation import check_model, model_device

__all__ = ["MODES", "fast_forward_fn", "time_forward", "measure_forward_modes", "clear_cache", "channels_last_copy",
           "channels_last_forward", "jit_forward"]

#: The forward forms :func:`fast_forward_fn` can build.
MODES: Tuple[str, ...] = ("eager", "channels_last", "jit", "compile")

ForwardFn = Callable[[torch.Tensor], torch.Tensor]
_AUTO_CACHE: Dict[Tuple[int, str, Tuple[int, ...], bool, bool], str] = {}


_CHANNELS_LAST: "weakref.WeakKeyDictionary[nn.Module, Tuple[tuple, nn.Module]]" = weakref.WeakKeyDictionary()
_JIT: "weakref.WeakKeyDictionary[nn.Module, Tuple[tuple, ForwardFn]]" = weakref.WeakKeyDictionary()


def clear_cache() -> None:
    """Forget every choice made by ``mode="auto"`` and every cached channels-last copy."""
    _AUTO_CACHE.clear()
    _CHANNELS_LAST.clear()
    _JIT.clear()


def _fingerprint(model: nn.Module) -> tuple:
    """Storage and version counter of every tensor: changes when a weight is replaced or modified in place."""
    return tuple((t.data_ptr(), t._version) for t in list(model.parameters()) + list(model.buffers()))


def channels_last_copy(model: nn.Module) -> nn.Module:
    """A forward-only copy of ``model`` in channels-last memory format when it has 2-D convolutions, else ``model``.

    On the 2-core CPU this alone made the MNIST CNN's forward ~1.3-2x faster than eager (fp32, the same labels up to
    float round-off), and its input-gradient backward faster too. The copy is cached per model (weakly) and rebuilt
    when a weight changes; its parameters do not require grad (gradients w.r.t. the input still flow).
    """
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return model
    key = _fingerprint(model)
    hit = _CHANNELS_LAST.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    fast = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)
    _CHANNELS_LAST[model] = (key, fast)
    return fast


def jit_forward(model: nn.Module, example: torch.Tensor) -> ForwardFn:
    """A cached inference-only ``"jit"`` form of ``model`` (trace + ``optimize_for_inference``: frozen weights, fused
    conv + ReLU), traced on ``example[:8]``; the fastest forward measured on the 2-core CPU (``benchmarks/``).

    Rebuilt when a weight changes (like :func:`channels_last_copy`). If tracing fails, warns and falls back to
    :func:`channels_last_forward`. No gradients flow through the result.
    """
    key = (_fingerprint(model), tuple(example.shape[1:]), str(example.device))
    hit = _JIT.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        fn: ForwardFn = _build(model, "jit", example)
    except Exception as err:  # noqa: BLE001 - an untraceable model still gets a fast path
        warnings.warn(f"torch.jit could not trace the model ({type(err).__name__}: {err}); using channels_last",
                      stacklevel=2)
        fn = channels_last_forward(model)
    _JIT[model] = (key, fn)
    return fn


def channels_last_forward(model: nn.Module) -> ForwardFn:
    """``f(x) -> logits`` through :func:`channels_last_copy`, converting 4-D inputs to channels-last on the way in."""
    fast = channels_last_copy(model)
    if fast is model:
        return model

    def run(x: torch.Tensor) -> torch.Tensor:
        return fast(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)

    run.mode = "channels_last"  # type: ignore[attr-defined]
    return run


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def _build(model: nn.Module, mode: str, example: Optional[torch.Tensor] = None) -> ForwardFn:
    if mode == "eager":
        return model
    if mode == "channels_last":
        return channels_last_forward(model)
    if mode == "jit":
        if example is None:
            example = torch.zeros(8, 1, 28, 28, device=model_device(model))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch >= 2.6 marks torch.jit deprecated; it still works
            return torch.jit.optimize_for_inference(torch.jit.trace(copy.deepcopy(model).eval(), example[:8]))
    if mode == "compile":
        return torch.compile(model)
    raise ValueError(f"mode must be one of {MODES + ('auto',)}, got {mode!r}")


def time_forward(fn: ForwardFn, x: torch.Tensor, *, repeats: int = 5, warmup: int = 1) -> float:
    """Median seconds of ``fn(x)`` under ``inference_mode`` over ``repeats`` runs after ``warmup`` runs."""
    dev = x.device
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            _sync(dev)
            t0 = time.perf_counter()
            fn(x)
            _sync(dev)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def measure_forward_modes(model: nn.Module, x: torch.Tensor, *, modes: Sequence[str] = MODES, repeats: int = 5,
                          warmup: int = 1) -> Dict[str, float]:
    """Median seconds of one forward pass of ``model`` on ``x`` (``N x ...``) in each of ``modes``.

    A form that fails to build or run (e.g. ``compile`` without a C++ compiler) is reported as ``inf`` with a warning.
    """
    check_model(model)
    x = x.to(model_device(model))
    out: Dict[str, float] = {}
    for mode in modes:
        try:
            out[mode] = time_forward(_build(model, mode, x), x, repeats=repeats, warmup=warmup)
        except Exception as err:  # noqa: BLE001 - a missing compiler must not stop the other forms
            warnings.warn(f"forward mode {mode!r} failed: {type(err).__name__}: {err}", stacklevel=2)
            out[mode] = float("inf")
    return out


def fast_forward_fn(model: nn.Module, mode: str = "auto", *, example: Optional[torch.Tensor] = None,
                    allow_compile: bool = False, need_grad: bool = False, repeats: int = 3) -> ForwardFn:
    """A callable ``f(x) -> logits`` computing ``model(x)`` in the given form (see the module docstring).

    Args:
        model: an ``nn.Module`` in eval mode; it is not modified.
        mode: ``"eager"``, ``"channels_last"``, ``"jit"``, ``"compile"`` or ``"auto"`` (measured choice).
        example: an input batch (``N x ...``) to time the candidates on when ``mode="auto"`` and to trace ``"jit"``
            with; default a batch of 256 MNIST-shaped zeros.
        allow_compile: let ``"auto"`` consider ``torch.compile`` (slow to build: worth it for runs of minutes).
        need_grad: the caller will differentiate through the forward (``"auto"`` then never picks ``"jit"``).
        repeats: timed runs per candidate for ``"auto"``.

    Returns:
        The forward callable; :func:`chosen_mode` tells which form it is.
    """
    check_model(model)
    if mode != "auto":
        return _build(model, mode, example)
    dev = model_device(model)
    if example is None:
        example = torch.zeros(256, 1, 28, 28, device=dev)
    key = (id(model), str(dev), tuple(example.shape), allow_compile, need_grad)
    if key not in _AUTO_CACHE:
        modes = [m for m in MODES if (m != "compile" or allow_compile) and (m != "jit" or not need_grad)]
        times = measure_forward_modes(model, example, modes=modes, repeats=repeats)
        _AUTO_CACHE[key] = min(times, key=times.get)
    return _build(model, _AUTO_CACHE[key], example)


def chosen_mode(fn: ForwardFn) -> str:
    """Which form a callable returned by :func:`fast_forward_fn` is: one of :data:`MODES`."""
    if isinstance(fn, torch.jit.ScriptModule):
        return "jit"
    if hasattr(fn, "_orig_mod"):  # torch.compile's OptimizedModule
        return "compile"
    if getattr(fn, "mode", None) == "channels_last":
        return "channels_last"
    return "eager"


__all__.append("chosen_mode")
