"""Explanation infidelity (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS 2019).

``INFD(Φ, f, x) = E_I[(IᵀΦ - (f(x) - f(x - I)))²]`` for a random perturbation ``I`` (:mod:`helpers.perturbations`,
whose ``units`` say how ``IᵀΦ`` is formed). With ``normalize=True`` the explanation is first rescaled by the optimal
``β = E[IᵀΦ Δf] / E[(IᵀΦ)²]`` (scale invariant, as the authors' code and captum's ``normalize=True``), so
``INFD = E[Δf²] - E[IᵀΦ Δf]² / E[(IᵀΦ)²]``.

Random numbers: the ``S`` perturbations are drawn in blocks of :data:`SAMPLE_BLOCK` from generators seeded by
``(seed, block)`` and shared by every input (common random numbers), so each input's estimate is an average of
``S`` independent draws, unbiased, and does not depend on the batch, the input's position in it, or the chunking.
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import fastpath
from .batching import bytes_per_image, chunk_size_for, run_chunked
from .perturbations import Draw, _baseline_like, as_perturbation, draw
from .validation import check_images, check_like, check_model, check_n_samples, check_target, model_device

__all__ = ["infidelity", "infidelity_from_samples", "beta_rescale", "to_units", "SAMPLE_BLOCK"]

#: Perturbations per generator block (fixed: results must not depend on the memory budget).
SAMPLE_BLOCK = 256

Attributions = Union[torch.Tensor, Mapping[str, torch.Tensor]]


def pack(xs: Sequence[torch.Tensor], name: str = "x") -> Tuple[torch.Tensor, Callable]:
    """Several inputs ``(x1 N x ..., x2 N x ..., ...)`` as one ``N x D`` tensor and its inverse ``unpack(flat)``."""
    if not xs or not all(isinstance(t, torch.Tensor) for t in xs):
        raise TypeError(f"{name} must be a tensor N x ... or a non-empty tuple of tensors")
    for i, t in enumerate(xs):
        check_images(t, f"{name}[{i}]")
    if any(t.shape[0] != xs[0].shape[0] for t in xs):
        raise ValueError(f"every input of {name} must have N rows, got {[t.shape[0] for t in xs]}")
    sizes, shapes = [t[0].numel() for t in xs], [tuple(t.shape[1:]) for t in xs]

    def unpack(flat: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(p.reshape((-1,) + sh) for p, sh in zip(flat.split(sizes, dim=1), shapes))
    return torch.cat([t.reshape(t.shape[0], -1) for t in xs], 1), unpack


def pack_like(a, xs: Sequence[torch.Tensor], name: str) -> torch.Tensor:
    """An explanation of several inputs (a tuple like ``xs``) packed like :func:`pack`."""
    if not isinstance(a, (tuple, list)) or len(a) != len(xs):
        raise TypeError(f"{name} must be a tuple of {len(xs)} tensors like the inputs x, got {type(a).__name__}")
    return torch.cat([check_like(v, t, f"{name}[{i}]").reshape(t.shape[0], -1) for i, (v, t) in enumerate(zip(a, xs))], 1)


class Packed(nn.Module):
    """``model(x1, x2, ...)`` seen as a model of one packed ``N x D`` tensor (see :func:`pack`)."""

    def __init__(self, model: nn.Module, unpack: Callable) -> None:
        super().__init__()
        self.model, self.unpack = model, unpack
        self.train(model.training)

    def forward(self, flat: torch.Tensor, *args) -> torch.Tensor:
        return self.model(*self.unpack(flat), *args)


def take(args: tuple, n: int, a: int, b: int, s: int = 1) -> tuple:
    """Rows ``a:b`` of the extra forward arguments that have ``n`` rows, each repeated ``s`` times (others as given)."""
    return tuple(v[a:b].repeat_interleave(s, 0) if torch.is_tensor(v) and v.dim() and len(v) == n else v for v in args)


def logits_at(fm: Callable, xs: torch.Tensor, target: torch.Tensor, args: tuple = ()) -> torch.Tensor:
    """``fm(xs, *args)[i, target[i]]`` (``xs``: ``B x ...``) -> ``B``, chunked by bytes, under inference mode."""
    rows, n = chunk_size_for(bytes_per_image(xs), device=xs.device), xs.shape[0]
    with torch.inference_mode():
        return run_chunked(lambda a, b: fm(xs[a:b], *take(args, n, a, b)).gather(1, target[a:b].view(-1, 1)).squeeze(1),
                           n, rows)


def resolve_target(model: nn.Module, x: torch.Tensor, target, args: tuple = ()) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(target, logits)``: ``target`` checked against the model's classes (``None`` -> the predicted class),
    both on ``x``'s device (``x``: ``N x ...`` on the model's device)."""
    rows = chunk_size_for(bytes_per_image(x), device=x.device)
    with torch.inference_mode():
        out = run_chunked(lambda a, b: model(x[a:b], *take(args, x.shape[0], a, b)), x.shape[0], rows)
    if out.dim() != 2:
        raise ValueError(f"model must return N x C logits, got shape {tuple(out.shape)}")
    t = check_target(target, x.shape[0], n_classes=out.shape[1])
    return (out.argmax(1) if t is None else t.to(x.device)).clone(), out.clone()


def generator(device: torch.device, seed: int, block: int = 0) -> torch.Generator:
    """The generator of sample block ``block`` for ``seed`` (the one random-number scheme of these modules)."""
    return torch.Generator(device=device).manual_seed((int(seed) * 1_000_003 + block) % (2**63))


def evaluate(model: nn.Module, x: torch.Tensor, perturbation, target, n_samples: Optional[int], seed: int,
             reduce: Callable[[slice, Draw, torch.Tensor], None], args: tuple = ()) -> Tuple[torch.Tensor, int]:
    """Draw the perturbations block by block, evaluate ``Δf = f(x) - f(x - I)`` and hand each block to
    ``reduce(rows, draw, diff)`` (``diff``: ``r x s``). Returns ``(target, n_samples)``.

    ``x`` (``N x ...``) is on the model's device; ``args``: extra forward arguments (tensors with ``N`` rows follow x).
    """
    p = as_perturbation(perturbation)
    n = int(getattr(p, "default_samples", 1000)) if n_samples is None else check_n_samples(n_samples)
    t, out = resolve_target(model, x, target, args)
    fx = out.gather(1, t.view(-1, 1)).squeeze(1)
    fm = fastpath.fast_forward(model, x[:8]) if not args else model          # the one fast forward
    shape = tuple(x.shape[1:])
    for b, s0 in enumerate(range(0, n, SAMPLE_BLOCK)):
        s = min(SAMPLE_BLOCK, n - s0)
        rows_per = max(1, chunk_size_for(bytes_per_image(x), device=x.device) // s)
        for a in range(0, x.shape[0], rows_per):
            rows = slice(a, min(x.shape[0], a + rows_per))
            d = draw(p, x, rows, s0, s, generator(x.device, seed, b))
            r = rows.stop - rows.start
            xp = (x[rows].unsqueeze(1) - d.I).reshape((-1,) + shape)
            extra = take(args, x.shape[0], rows.start, rows.stop, s)
            diff = fx[rows].unsqueeze(1) - logits_at(fm, xp, t[rows].repeat_interleave(s), extra).view(r, s)
            reduce(rows, d, diff)
    return t, n


def beta_rescale(dot: torch.Tensor, diff: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The optimal scale ``β = Σ w dot·diff / Σ w dot²`` per row (``dot``, ``diff``: ``N x S``) -> ``N``; 0 where
    ``dot`` is all zero (captum's ``safe_div``)."""
    w = torch.ones_like(dot) if weights is None else weights
    num, den = (w * dot * diff).sum(-1), (w * dot * dot).sum(-1)
    return num / torch.where(den == 0, torch.ones_like(den), den)


def infidelity_from_samples(dot: torch.Tensor, diff: torch.Tensor, weights: Optional[torch.Tensor] = None,
                            normalize: bool = False) -> torch.Tensor:
    """Infidelity from ``dot = IᵀΦ`` and ``diff = f(x) - f(x - I)`` (``N x S``, weights ``N x S``) -> ``N``."""
    w = torch.ones_like(dot) if weights is None else weights
    if normalize:
        dot = beta_rescale(dot, diff, w).unsqueeze(-1) * dot
    return (w * (dot - diff) ** 2).sum(-1) / w.sum(-1)


def infidelity(model: nn.Module, x: torch.Tensor, attributions: Attributions, perturbation, target=None,
               n_samples: Optional[int] = None, normalize: bool = False, seed: int = 0, additional_forward_args: tuple = ()
               ) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
    """Infidelity ``E_I[(IᵀΦ - (f(x) - f(x - I)))²]`` per input from ``n_samples`` perturbations.

    Args:
        model: classifier in eval mode returning ``B x C`` logits.
        x: inputs ``N x ...`` (any shape: ``N x d``, ``N x C x H x W``, ``N x C x L``), or a tuple of them for
            ``model(x1, x2, ...)``: the perturbation then acts on all inputs packed as one ``N x D`` tensor
            (perturbations that need images, such as Square, refuse it).
        attributions: ``Φ`` like ``x`` in the perturbation's units (a tuple like ``x`` for several inputs), or a
            dict ``name -> Φ``: every explanation is then scored on the same perturbations and forward passes.
        perturbation: a :class:`helpers.perturbations.Perturbation`, any object with ``units`` and
            ``sample(x, n, generator)``, or a captum-style ``perturb_func(x) -> (I, x - I)``.
        target: LongTensor ``N``, an int, or ``None`` (the predicted class).
        n_samples: perturbations per input (``None``: the perturbation's ``default_samples``, else 1,000).
        normalize: rescale ``Φ`` by the optimal ``β`` first.
        seed: seed of the perturbations (shared by every input, see the module docstring).
        additional_forward_args: extra arguments of ``model(x, *args)`` (tensors with ``N`` rows follow their input).
    Returns: ``N`` infidelities (float32, CPU), or a dict of them when ``attributions`` is a dict.
    """
    check_model(model)
    if isinstance(x, (tuple, list)):                          # several inputs: one packed N x D tensor
        xs = tuple(x)
        x, unpack = pack(xs)
        if isinstance(attributions, Mapping):
            attributions = {k: pack_like(v, xs, f"attributions[{k!r}]") for k, v in attributions.items()}
        else:
            attributions = pack_like(attributions, xs, "attributions")
        model = Packed(model, unpack)
    check_images(x)
    single = isinstance(attributions, torch.Tensor)
    attrs = {"_": attributions} if single else dict(attributions) if isinstance(attributions, Mapping) else None
    if not attrs:
        raise TypeError(f"attributions must be a tensor like x or a non-empty dict name -> tensor, got "
                        f"{type(attributions).__name__}")
    dev = model_device(model)
    xd = x.to(dev)
    phi = torch.stack([check_like(v, x, "attributions" if single else f"attributions[{k!r}]").to(dev).flatten(1)
                       for k, v in attrs.items()], dim=2)                                           # N x d x K
    acc = torch.zeros(x.shape[0], phi.shape[2], 5, dtype=torch.float64, device=dev)

    def reduce(rows: slice, d: Draw, diff: torch.Tensor) -> None:
        r, s = diff.shape
        W = d.W.reshape(d.W.shape[0], s, -1)
        dot = torch.matmul(W, phi[rows].to(W.dtype)).double()                                      # r x s x K
        df = diff.double().unsqueeze(-1)
        w = torch.ones_like(df) if d.weights is None else d.weights.double().reshape(-1, s, 1).expand(r, s, 1)
        acc[rows] += torch.stack([(w * (dot - df) ** 2).sum(1), (w * dot * dot).sum(1), (w * dot * df).sum(1),
                                  (w * df * df).sum(1).expand(r, dot.shape[2]), w.sum(1).expand(r, dot.shape[2])], -1)

    evaluate(model, xd, perturbation, target, n_samples, seed, reduce, tuple(additional_forward_args))
    sq, a, b, c, sw = acc.unbind(-1)
    if normalize:                                    # min over β of Σ w (β dot - df)² = Σ w df² - (Σ w dot df)² / Σ w dot²
        beta = b / torch.where(a == 0, torch.ones_like(a), a)
        sq = beta * beta * a - 2 * beta * b + c
    val = (sq / sw).float().cpu()
    out = {k: val[:, i].contiguous() for i, k in enumerate(attrs)}
    return out["_"] if single else out


def to_units(attributions: torch.Tensor, x: torch.Tensor, perturbation, to: str = "global") -> torch.Tensor:
    """Convert an explanation between local and global units: ``Φ_global = Φ_local ⊙ (x - x0)``.

    ``perturbation``: a perturbation (its ``baseline``, 0 if none) or a baseline (number or tensor);
    ``to="local"`` divides by ``(x - x0)`` (0 where ``x == x0``).
    """
    check_images(x)
    check_like(attributions, x, "attributions")
    if to not in ("global", "local"):
        raise ValueError(f"to must be 'global' or 'local', got {to!r}")
    x0 = perturbation if isinstance(perturbation, (int, float, torch.Tensor)) else getattr(perturbation, "baseline", 0.0)
    diff = x - _baseline_like(x0, x)
    if to == "global":
        return attributions * diff
    return torch.where(diff == 0, torch.zeros_like(attributions), attributions / torch.where(diff == 0, 1.0, diff))
