"""One cached fast forward of a model, probed once, with a safe fallback to the model as written.

Perturbation methods run long series of forward passes, so their speed is the model's forward rate.
:func:`fast_forward` returns ``f(x) -> logits``:

* for inference (``need_grad=False``): ``torch.jit.trace`` + ``optimize_for_inference`` of a copy (frozen weights,
  fused conv + ReLU); no gradients flow through it;
* for input gradients (``need_grad=True``): a copy in channels-last memory format (faster convolutions on CPU and GPU).

Only models with 2-D convolutions on 4-D inputs get a fast form; others run as written. The form is built once per
(model, weights, input shape, device) and *probed*: if it cannot run the model (a CNN that flattens with ``.view``
fails on channels-last strides, an untraceable control flow) or its logits differ from the model's, the model as
written is used and the answer is remembered. A run-time failure of the fast form also falls back, once and for good.
The original model is never modified; the caller chooses ``inference_mode`` / ``enable_grad``.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from typing import Callable, Dict, Tuple

import torch
from torch import nn

__all__ = ["fast_forward"]

ForwardFn = Callable[[torch.Tensor], torch.Tensor]
_CACHE: "weakref.WeakKeyDictionary[nn.Module, Dict[tuple, Tuple[tuple, ForwardFn]]]" = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple:
    """Storage and version counter of every tensor: changes when a weight is replaced or modified in place."""
    return tuple((t.data_ptr(), t._version) for t in list(model.parameters()) + list(model.buffers()))


def _build(model: nn.Module, example: torch.Tensor, need_grad: bool) -> nn.Module:
    fast = copy.deepcopy(model).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    if need_grad:
        return fast.to(memory_format=torch.channels_last)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks torch.jit deprecated; it still works
        return torch.jit.optimize_for_inference(torch.jit.trace(fast, example))


class _Guarded:
    """Calls the fast form; on any error other than out-of-memory, switches to the model as written for good."""

    def __init__(self, fast: nn.Module, model: nn.Module, channels_last: bool) -> None:
        self.fast, self.model, self.channels_last = fast, model, channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast is not None:
            try:
                out = self.fast(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)
                if out.shape[0] == x.shape[0]:
                    return out
                self.fast = None
            except Exception as err:  # noqa: BLE001 - any failure of the fast form means: use the model
                from .batching import is_oom_error

                if is_oom_error(err):
                    raise
                self.fast = None
        return self.model(x)


def fast_forward(model: nn.Module, example: torch.Tensor, *, need_grad: bool = False) -> ForwardFn:
    """The cached fast forward of ``model`` for inputs shaped like ``example`` (``N x ...``, on the model's device).

    Returns ``model`` itself when no fast form applies or the probe on ``example[:2]`` fails or disagrees
    (``|fast - model| > 1e-3 (1 + |model|)``).
    """
    if example.dim() != 4 or not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return model
    key = (tuple(example.shape[1:]), str(example.device), example.dtype, need_grad)
    fp = _fingerprint(model)
    per = _CACHE.setdefault(model, {})
    hit = per.get(key)
    if hit is not None and hit[0] == fp:
        return hit[1]
    fn: ForwardFn = model
    probe = example[:2].detach()
    try:
        fast = _build(model, probe.contiguous(), need_grad)
        cand = _Guarded(fast, model, need_grad)
        with torch.no_grad():
            got, want = cand.fast(probe.contiguous(memory_format=torch.channels_last) if need_grad else probe), model(probe)
        if got.shape == want.shape and bool(((got - want).abs() <= 1e-3 * (1 + want.abs())).all()):
            fn = cand
    except Exception:  # noqa: BLE001 - the model as written always works
        fn = model
    per[key] = (fp, fn)
    return fn

