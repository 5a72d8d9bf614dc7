"""Perturbations I for infidelity (Yeh et al., NeurIPS 2019); the perturbed input is ``x - I``.

Units, as in the authors' code: ``"local"`` (:class:`Gaussian`, :class:`NoisyBaseline`): ``I`` is real valued,
``IᵀΦ = Σ I·Φ`` (gradient-like Φ). ``"global"`` (:class:`ConstantBaseline`, :class:`Square`, :class:`ShapSubset`):
a mask ``M`` (1 = set to the baseline ``x0``), ``I = M ⊙ (x - x0)``, ``IᵀΦ = Σ M·Φ`` (Φ carries ``x - x0``: IG, SHAP).

Common random numbers: the built-ins draw their noise (or masks) once for all inputs (leading dimension 1 in a
:class:`Draw`), so a perturbation never depends on an input's position in the batch. Any object with ``units`` and
``sample(x, n, generator) -> I`` (``N x n x ...``), or a captum-style ``perturb_func(x) -> (I, x - I)``, is accepted.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from .baselines import make_baseline
from .validation import check_positive_int

__all__ = ["Draw", "Perturbation", "Gaussian", "NoisyBaseline", "ConstantBaseline", "Square", "ShapSubset",
           "Fixed", "FromFunction", "as_perturbation", "square_masks"]

BaselineLike = Union[float, int, torch.Tensor]


class Draw(NamedTuple):
    """``n`` perturbations: ``I`` and ``W`` (what multiplies Φ: ``I`` for local units, ``M`` for global ones), each
    ``N x n x ...`` or ``1 x n x ...`` (the same for every input), and optional weights ``N x n`` or ``1 x n``."""

    I: torch.Tensor
    W: torch.Tensor
    weights: Optional[torch.Tensor] = None


def _positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class Perturbation:
    """Base class: subclasses set ``units`` and implement ``draw(x, n, generator) -> Draw``."""

    units: str = "local"
    default_samples: int = 1000

    def draw_block(self, x: torch.Tensor, rows: slice, start: int, n: int, generator=None) -> Draw:
        """Samples ``start:start+n`` for the inputs ``x[rows]`` (what the evaluators call)."""
        return self.draw(x[rows], n, generator)

    def sample(self, x: torch.Tensor, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` perturbations ``I`` per input: ``N x n x ...``."""
        i = self.draw(x, n, generator).I
        return i.expand((x.shape[0],) + i.shape[1:])

    def baseline_for(self, x: torch.Tensor) -> torch.Tensor:
        """The baseline ``x0`` (0 if none) broadcastable to ``x``: ``1 x ...`` for a number or one input, else
        ``N x ...``."""
        x0 = getattr(self, "baseline", 0.0)
        if isinstance(x0, str):               # named baselines (helpers.baselines) may depend on the batch position
            raise TypeError(f"a perturbation's baseline must be a number or a tensor, got {x0!r}")
        shared = not isinstance(x0, torch.Tensor) or x0.dim() < x.dim() or x0.shape[0] == 1
        return make_baseline(x0, x[:1] if shared else x)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Gaussian(Perturbation):
    """``I ~ N(0, σ² Id)``: the vanishing-Gaussian perturbation (Grad is optimal as σ -> 0); ``E[IIᵀ] = σ² Id``."""

    def __init__(self, sigma: float = 0.1) -> None:
        self.sigma = _positive(sigma, "sigma")

    def draw(self, x, n, generator=None):
        i = torch.randn((1, n) + x.shape[1:], generator=generator, device=x.device, dtype=x.dtype) * self.sigma
        return Draw(i, i)

    def second_moment(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(u, D)`` with ``E[I] = u`` and ``E[IIᵀ] = u uᵀ + diag(D)``, each ``N x ...``."""
        return torch.zeros_like(x), torch.full_like(x, self.sigma ** 2)


def _clipped_normal_moments(m: torch.Tensor, sigma: float, lo: float, hi: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``clip(m + σ n, lo, hi)``, ``n ~ N(0, 1)``, elementwise (closed form, float64)."""
    m64 = m.double()
    a, b = (lo - m64) / sigma, (hi - m64) / sigma
    pa, pb = torch.special.ndtr(a), torch.special.ndtr(b)
    fa, fb = (torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi) for t in (a, b))
    mid = pb - pa
    e1 = m64 * mid + sigma * (fa - fb) + lo * pa + hi * (1 - pb)
    e2 = (m64 * m64 * mid + 2 * m64 * sigma * (fa - fb) + sigma ** 2 * (mid + a * fa - b * fb)
          + lo * lo * pa + hi * hi * (1 - pb))
    return e1.to(m.dtype), (e2 - e1 * e1).clamp_min(0.0).to(m.dtype)


class NoisyBaseline(Perturbation):
    """The authors' noisy baseline (NB): ``x - I = clip(x0 + σ n, lo, hi)``, ``n ~ N(0, Id)``, ``input_range=(lo, hi)``
    (``None``: no clipping). ``E[IIᵀ] = (x - μ)(x - μ)ᵀ + diag(v)`` (``μ``, ``v``: mean and variance of the clipped
    noisy baseline) is rank one plus diagonal: :func:`helpers.optimal.optimal_explanation` solves it in O(d)."""

    def __init__(self, sigma: float = 0.2, baseline: BaselineLike = 0.0,
                 input_range: Optional[Tuple[float, float]] = (0.0, 1.0)) -> None:
        self.sigma, self.baseline = _positive(sigma, "sigma"), baseline
        if input_range is not None and not (len(input_range) == 2 and input_range[0] < input_range[1]):
            raise ValueError(f"input_range must be None or (lo, hi) with lo < hi, got {input_range!r}")
        self.input_range = None if input_range is None else (float(input_range[0]), float(input_range[1]))

    def draw(self, x, n, generator=None):
        noise = torch.randn((1, n) + x.shape[1:], generator=generator, device=x.device, dtype=x.dtype)
        z = self.baseline_for(x).unsqueeze(1) + self.sigma * noise
        i = x.unsqueeze(1) - (z if self.input_range is None else z.clamp(*self.input_range))
        return Draw(i, i)

    def second_moment(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(u, D)``: ``u = E[I] = x - E[z]``, ``D = Var[z]``, each ``N x ...``."""
        x0 = self.baseline_for(x).expand_as(x)
        if self.input_range is None:
            return x - x0, torch.full_like(x, self.sigma ** 2)
        mu, var = _clipped_normal_moments(x0, self.sigma, *self.input_range)
        return x - mu, var


class _Masked(Perturbation):
    """Global perturbations: ``masks(x, n, generator) -> (M 1 x n x ..., weights or None)``, ``I = M ⊙ (x - x0)``."""

    units = "global"

    def __init__(self, baseline: BaselineLike = 0.0) -> None:
        self.baseline = baseline

    def draw(self, x, n, generator=None):
        m, w = self.masks(x, n, generator)
        return Draw(m * (x - self.baseline_for(x)).unsqueeze(1), m, w)


class ConstantBaseline(_Masked):
    """``I = x - x0`` with probability one (the mask is all ones): the perturbation for which IG is optimal."""

    default_samples = 1

    def __init__(self, value: BaselineLike = 0.0) -> None:
        super().__init__(value)

    def masks(self, x, n, generator=None):
        return torch.ones((1, n) + x.shape[1:], device=x.device, dtype=x.dtype), None


def square_masks(shape: Sequence[int], sizes: Sequence[int] = tuple(range(1, 11)), stride: int = 1,
                 device: Optional[torch.device] = None) -> torch.Tensor:
    """Every ``s x s`` square (``s`` in ``sizes``, corners every ``stride`` pixels) on a ``C x H x W`` image:
    bool ``K x C x H x W`` (K = 5,605 for sizes 1..10, stride 1 on 28 x 28, the authors' setting)."""
    c, h, w = tuple(shape)[-3:]
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    out = []
    for s in sizes:
        r0, c0 = torch.arange(0, h - s + 1, stride, device=device), torch.arange(0, w - s + 1, stride, device=device)
        rr = (rows[None] >= r0[:, None]) & (rows[None] < r0[:, None] + s)              # R x H
        cc = (cols[None] >= c0[:, None]) & (cols[None] < c0[:, None] + s)              # Q x W
        out.append((rr[:, None, :, None] & cc[None, :, None, :]).reshape(-1, h, w))
    m = torch.cat(out)
    return m[:, None].expand(m.shape[0], c, h, w).contiguous()


class Square(_Masked):
    """Square removal: an ``s x s`` square (``s`` in ``sizes``) of every channel set to the baseline, drawn
    uniformly with replacement from all ``n_masks`` squares (never in a fixed order). Images only (N x C x H x W)."""

    def __init__(self, sizes: Union[int, Sequence[int]] = tuple(range(1, 11)), stride: int = 1,
                 baseline: BaselineLike = 0.0) -> None:
        super().__init__(baseline)
        sizes = (sizes,) if isinstance(sizes, int) else tuple(sizes)
        if not sizes:
            raise ValueError("sizes must hold at least one square size, e.g. (1, 2, 3)")
        self.sizes = tuple(check_positive_int(s, "sizes") for s in sizes)
        self.stride = check_positive_int(stride, "stride")

    def all_masks(self, x: torch.Tensor) -> torch.Tensor:
        """Every mask, ``K x C x H x W`` float."""
        if x.dim() != 4:
            raise ValueError(f"Square needs images x of shape N x C x H x W, got {tuple(x.shape)}; for tabular or "
                             f"1-D inputs use ShapSubset, ConstantBaseline, Gaussian or NoisyBaseline")
        if max(self.sizes) > min(x.shape[-2:]):
            raise ValueError(f"square sizes {self.sizes} must fit in the image ({x.shape[-2]} x {x.shape[-1]})")
        return square_masks(x.shape[1:], self.sizes, self.stride, device=x.device).to(x.dtype)

    def masks(self, x, n, generator=None):
        allm = self.all_masks(x)
        return allm[torch.randint(allm.shape[0], (n,), generator=generator, device=x.device)].unsqueeze(0), None


def shapley_size_probs(d: int) -> torch.Tensor:
    """``P(|S| = z)``, ``z = 1..d-1``, of the Shapley kernel ``π(S) = (d-1) / (C(d,z) z (d-z))`` (float64)."""
    z = torch.arange(1, d, dtype=torch.float64)
    p = (d - 1) / (z * (d - z))
    return p / p.sum()


class ShapSubset(_Masked):
    """Random subsets of features set to the baseline, distributed as the Shapley kernel (SHAP is optimal for it):
    as KernelSHAP, a size ``z`` with probability ``∝ (d-1) / (z (d-z))``, then a uniform subset of that size."""

    def masks(self, x, n, generator=None):
        d = math.prod(x.shape[1:])
        if d < 2:
            raise ValueError(f"ShapSubset needs inputs with at least 2 features, got shape {tuple(x.shape[1:])}")
        z = torch.multinomial(shapley_size_probs(d).to(x.device), n, replacement=True, generator=generator) + 1
        order = torch.rand((n, d), generator=generator, device=x.device).argsort(1)      # a uniform permutation
        first = (torch.arange(d, device=x.device) < z.unsqueeze(1)).to(x.dtype)           # its first z positions
        m = torch.zeros_like(first).scatter_(1, order, first)     # one sort and a scatter: faster than two sorts
        return m.reshape((1, n) + x.shape[1:]), None


class Fixed(Perturbation):
    """Replays given tensors ``I`` (``N x n x ...``), optional ``W`` (default ``I``) and weights (``N x n``), in
    order, for cross-checks on the same perturbations (e.g. against captum)."""

    def __init__(self, I: torch.Tensor, W: Optional[torch.Tensor] = None, weights: Optional[torch.Tensor] = None,
                 units: str = "local") -> None:
        if units not in ("local", "global"):
            raise ValueError(f"units must be 'local' or 'global', got {units!r}")
        if W is not None and W.shape != I.shape:
            raise ValueError(f"W must have the shape of I {tuple(I.shape)}, got {tuple(W.shape)}")
        self.I, self.W, self.weights, self.units = I, (I if W is None else W), weights, units
        self.default_samples = int(I.shape[1])

    def draw_block(self, x: torch.Tensor, rows: slice, start: int, n: int, generator=None) -> Draw:
        if self.I.shape[0] != x.shape[0] or self.I.shape[2:] != x.shape[1:] or start + n > self.I.shape[1]:
            raise ValueError(f"Fixed perturbation of shape {tuple(self.I.shape)} does not fit x of shape "
                             f"{tuple(x.shape)} with {start + n} samples (expected N x n x ...)")
        cols, dev = slice(start, start + n), x.device
        w = None if self.weights is None else self.weights[rows, cols].to(dev)
        return Draw(self.I[rows, cols].to(dev), self.W[rows, cols].to(dev), w)

    def draw(self, x, n, generator=None):
        return self.draw_block(x, slice(0, x.shape[0]), 0, n)


class FromFunction(Perturbation):
    """A user's perturbation: a captum-style ``perturb_func(x) -> (I, x - I)`` (local units; the global RNG is
    reseeded from the generator) or an object with ``units`` and ``sample(x, n, generator) -> I`` (a global one's
    ``W`` is ``I / (x - x0)``, 0 where ``x == x0``)."""

    def __init__(self, perturb_func: Callable) -> None:
        self.perturb_func, self.units = perturb_func, getattr(perturb_func, "units", "local")
        self.baseline = getattr(perturb_func, "baseline", 0.0)
        self.default_samples = int(getattr(perturb_func, "default_samples", 1000))

    def draw(self, x, n, generator=None):
        shape = (x.shape[0], n) + x.shape[1:]
        if hasattr(self.perturb_func, "sample"):
            i = self.perturb_func.sample(x, n, generator)
        else:
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                if generator is not None:
                    torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator, device=x.device)))
                out = self.perturb_func(x.repeat_interleave(n, dim=0))
            i = out[0] if isinstance(out, (tuple, list)) else out
            i = i.reshape(shape) if isinstance(i, torch.Tensor) and i.shape == (x.shape[0] * n,) + x.shape[1:] else i
        if not isinstance(i, torch.Tensor) or i.shape != shape:
            raise ValueError(f"the perturbation must give I of shape N x n x ... = {tuple(shape)} (perturb_func: (I, "
                             f"x - I) with I (N n) x ...), got {getattr(i, 'shape', type(i).__name__)}")
        if self.units == "local":
            return Draw(i, i)
        diff = (x - self.baseline_for(x)).unsqueeze(1)
        return Draw(i, torch.where(diff == 0, torch.zeros_like(i), i / torch.where(diff == 0, 1.0, diff)))


def as_perturbation(p: object) -> Perturbation:
    """A :class:`Perturbation` from any object with ``units`` and ``sample(x, n, generator)``, or from a callable
    ``perturb_func(x) -> (I, x - I)`` (both wrapped in :class:`FromFunction`)."""
    if not callable(p) and not hasattr(p, "sample"):
        raise TypeError(f"perturbation must have units and sample(x, n, generator) -> I (e.g. NoisyBaseline(0.2)) "
                        f"or be a function perturb_func(x) -> (I, x - I), got {type(p).__name__}")
    if hasattr(p, "sample") and getattr(p, "units", None) not in ("local", "global"):
        raise ValueError(f"perturbation.units must be 'local' or 'global', got {getattr(p, 'units', None)!r}")
    return p if isinstance(p, Perturbation) else FromFunction(p)
