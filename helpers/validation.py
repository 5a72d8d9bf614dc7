"""Input checks shared by every module: each raises an exception whose message names the bad argument.

:func:`as_classifier` turns what a user brings (one tensor or a tuple of inputs, extra forward arguments, a
single-logit binary model) into the one form every routine works on: a module mapping ``N x ...`` to logits ``N x C``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple, Union

import torch
from torch import nn

__all__ = ["check_images", "check_model", "check_target", "check_like", "check_positive_int", "check_n_samples",
           "check_finite", "model_device", "as_classifier", "Classifier"]


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``t`` contains NaN or Inf."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains {int((~torch.isfinite(t)).sum())} NaN/Inf value(s)")


def check_images(x: object, name: str = "x", *, min_dim: int = 2) -> torch.Tensor:
    """Check that ``x`` is a finite floating-point tensor with a batch dimension (``N x ...``, N >= 1)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (e.g. float32), got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have a batch dimension and at least {min_dim} dims (N x ...), got shape "
                         f"{tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (batch size 0)")
    check_finite(x, name)
    return x


def check_model(model: object) -> nn.Module:
    """Check that ``model`` is an ``nn.Module`` in eval mode (dropout/batch-norm would randomise every result)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError("model is in train mode; call model.eval() first (dropout or batch-norm in train mode would "
                         "make every confidence and attribution random)")
    return model


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    t = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if t is None else t.device


def check_target(target: Optional[torch.Tensor], n: int, n_classes: Optional[int] = None,
                 name: str = "target") -> Optional[torch.Tensor]:
    """Check a target: ``None``, an int, a list of ``N`` ints (as captum accepts) or an integer tensor of shape ``N``
    with values in ``[0, n_classes)``. Returns a LongTensor of shape ``N`` (or ``None``).
    """
    if target is None:
        return None
    if isinstance(target, list) and not all(isinstance(t, int) and not isinstance(t, bool) for t in target):
        raise TypeError(f"{name} given as a list must hold {n} ints (one class per row), got {target!r}")
    if isinstance(target, (int, list)) and not isinstance(target, bool):
        target = torch.tensor(target, dtype=torch.long)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name} must be None, an int or a LongTensor of shape ({n},), got {type(target).__name__}")
    if target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {target.dtype}")
    if target.dim() == 0:
        target = target.expand(n).contiguous()
    if target.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(target.shape)}")
    if n_classes is not None and n > 0:
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= n_classes:
            raise ValueError(f"{name} values must lie in [0, {n_classes}), got min {lo} and max {hi}")
    return target.long()


def check_like(t: object, x: torch.Tensor, name: str, *, allow_broadcast: bool = False) -> torch.Tensor:
    """Check that ``t`` is a finite floating-point tensor of the shape of ``x`` (or ``1 x ...`` / one sample's shape
    with ``allow_broadcast``)."""
    check_images(t, name, min_dim=1)
    if t.shape not in ((x.shape, x.shape[1:], (1,) + tuple(x.shape[1:])) if allow_broadcast else (x.shape,)):
        extra = " (or 1 x ... / one sample's shape)" if allow_broadcast else ""
        raise ValueError(f"{name} must have the shape of x {tuple(x.shape)}{extra}, got {tuple(t.shape)}")
    return t


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """The one check of a count (``n_samples``, ``n_steps``, ``seed`` with ``minimum=0``...): an int (numpy integers
    too) >= ``minimum``; returns it as an int."""
    if isinstance(value, (bool, torch.Tensor)) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_n_samples(value: object, name: str = "n_samples") -> int:
    """:func:`check_positive_int` of a sample count, by default named ``n_samples``."""
    return check_positive_int(value, name)


class _Adapter(nn.Module):
    """``model`` seen as a classifier of one tensor: unpacks ``N x D`` rows into its arguments (``slots``: a
    ``(shape, dtype)`` per packed argument, or ``("const", value)``) and turns a single logit ``z`` into ``[-z, z]``."""

    def __init__(self, model: nn.Module, slots: Optional[List[Tuple[Any, Any]]], binary: bool) -> None:
        super().__init__()
        self.model, self.slots, self.binary = model, slots, binary
        self.train(False)  # the wrapped model is in eval mode already

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        args, a = ([z] if self.slots is None else []), 0
        for shape, kind in self.slots or ():
            if shape == "const":
                args.append(kind)
                continue
            d = math.prod(shape)
            part = z[:, a:a + d].reshape(-1, *shape)
            args.append(part if kind.is_floating_point else part.round().to(kind))
            a += d
        out = self.model(*args)
        return torch.cat([-out.reshape(-1, 1), out.reshape(-1, 1)], dim=1) if self.binary else out


@dataclass
class Classifier:
    """What :func:`as_classifier` returns: ``model(x) -> N x C`` logits on one tensor ``x`` (on the model's device);
    ``n_features`` leading columns of a packed ``x`` are attributed (the rest carry per-row forward arguments), and
    ``unpack(A)`` turns an attribution of ``x`` back into the shape(s) of the user's inputs."""

    model: nn.Module
    x: torch.Tensor
    n_classes: int
    packed: bool
    n_features: int
    unpack: Callable[[torch.Tensor], Union[torch.Tensor, Tuple[torch.Tensor, ...]]]


def as_classifier(model: nn.Module, inputs: Union[torch.Tensor, Tuple[torch.Tensor, ...]],
                  additional_forward_args: Any = None) -> Classifier:
    """Check ``model`` and its inputs and return the one-tensor classifier view (see :class:`Classifier`).

    ``inputs``: a tensor ``N x ...`` or a tuple of them (``model(x1, x2, ...)``); ``additional_forward_args``: one
    value or a tuple appended to the call, as in captum; tensors with ``N`` rows travel with their row, other
    values are passed as they are. A model returning ``N`` or ``N x 1`` (one binary logit ``z``) is seen as
    returning ``[-z, z]``: the score of class 1 is the logit, that of class 0 its negative.
    """
    check_model(model)
    extra = () if additional_forward_args is None else additional_forward_args
    extra = extra if isinstance(extra, tuple) else (extra,)
    several = isinstance(inputs, (tuple, list))
    xs, packed = tuple(inputs) if several else (inputs,), several or len(extra) > 0
    if not xs:
        raise ValueError("inputs is an empty tuple; pass a tensor N x ... or a tuple of them")
    for i, t in enumerate(xs):
        check_images(t, f"inputs[{i}]" if several else "x")
    n = xs[0].shape[0]
    if any(t.shape[0] != n for t in xs):
        raise ValueError(f"every input must have the same number of rows N, got {[t.shape[0] for t in xs]}")
    p = next(iter(model.parameters()), None)
    if p is not None and p.is_floating_point() and xs[0].dtype != p.dtype:
        raise TypeError(f"x has dtype {xs[0].dtype} but the model's parameters are {p.dtype}; convert x "
                        f"(x.to({p.dtype}))")
    x, slots = xs[0].to(model_device(model)), None
    if packed:
        rows = [isinstance(e, torch.Tensor) and e.dim() >= 1 and e.shape[0] == n for e in extra]
        cols = list(xs) + [e for e, r in zip(extra, rows) if r]
        x = torch.cat([t.to(x.device, xs[0].dtype).reshape(n, -1) for t in cols], dim=1)
        slots = [(tuple(t.shape[1:]), t.dtype) for t in xs]
        slots += [(tuple(e.shape[1:]), e.dtype) if r else ("const", e) for e, r in zip(extra, rows)]
    f = _Adapter(model, slots, False) if packed else model
    try:
        with torch.inference_mode():
            out = f(x[:1])
    except Exception as err:  # noqa: BLE001 - re-raised with a message that names the inputs
        raise ValueError(f"the model does not accept inputs of shape {[tuple(t.shape) for t in xs]}: {err}") from err
    binary = out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1)
    if not binary and out.dim() != 2:
        raise ValueError(f"the model must return logits N x C (or one binary logit N / N x 1), got output shape "
                         f"{tuple(out.shape)}")
    sizes = [t[0].numel() for t in xs]

    def unpack(a: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        parts = [v.reshape(-1, *t.shape[1:]).to(t.device) for v, t in zip(a[:, :sum(sizes)].split(sizes, 1), xs)]
        return tuple(parts) if several else parts[0]

    return Classifier(_Adapter(model, slots, True) if binary else f, x, 2 if binary else int(out.shape[1]), packed,
                      sum(sizes), unpack if packed else lambda a: a)
