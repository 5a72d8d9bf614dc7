"""Perturbations I for infidelity (Yeh et al., NeurIPS 2019), sampled on the device from a ``torch.Generator``.

A perturbation is a random variable ``I`` of the shape of one input; the perturbed input is ``x - I``. Every class
here draws ``n`` perturbations for each of ``N`` inputs at once (``N x n x ...``) and states its *units*, as in the
authors' code:

* ``units = "local"`` (:class:`Gaussian`, :class:`NoisyBaseline`, :class:`LinfBall`): ``I`` is real valued and pairs
  with gradient-like explanations, ``Iᵀ Φ = Σ I · Φ``.
* ``units = "global"`` (:class:`ConstantBaseline`, :class:`Square`, :class:`ShapSubset`): the draw is a mask ``M``
  and ``I = M ⊙ (x - x0)`` for a baseline ``x0``; it pairs with explanations that already carry the factor
  ``(x - x0)`` (IG, SHAP, gradient ⊙ input): ``Iᵀ Φ = Σ M · Φ``.

:meth:`Perturbation.draw` returns a :class:`Draw` ``(I, W, weights)``: ``I`` the perturbation, ``W`` what multiplies
the explanation (``I`` itself for local units, ``M`` for global ones) and optional per-sample weights ``N x n``
(the Shapley kernel of :class:`ShapSubset`; ``None`` = uniform).

Write your own perturbation by subclassing :class:`Perturbation` and implementing ``_draw`` (see
``notebooks/05_infidelity_optimization.ipynb`` for a "strokes only" example).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "Draw",
    "Perturbation",
    "Gaussian",
    "NoisyBaseline",
    "LinfBall",
    "ConstantBaseline",
    "Square",
    "ShapSubset",
    "Fixed",
    "square_masks",
]

Number = Union[float, int]
BaselineLike = Union[Number, torch.Tensor]


class Draw(NamedTuple):
    """One batch of perturbations for ``N`` inputs and ``n`` samples each.

    Attributes:
        I: ``N x n x ...`` the perturbation; the perturbed input is ``x[:, None] - I``.
        W: ``N x n x ...`` the factor that multiplies the explanation in ``Iᵀ Φ`` (``I`` for local units, the mask
            ``M`` for global ones).
        weights: ``N x n`` non-negative sample weights, or ``None`` for uniform weights.
        perturbed: optionally ``x[:, None] - I`` itself, when the perturbation builds it anyway (saves a pass).
    """

    I: torch.Tensor
    W: torch.Tensor
    weights: Optional[torch.Tensor] = None
    perturbed: Optional[torch.Tensor] = None


def _check_sigma(sigma: object, name: str = "sigma") -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(sigma).__name__}")
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {sigma}")
    return float(sigma)


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n_samples must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n_samples must be >= 1, got {n}")
    return n


def _baseline_like(baseline: BaselineLike, x: torch.Tensor, name: str = "baseline") -> torch.Tensor:
    """The baseline as a tensor broadcastable to ``x`` (``N x ...``): a number, one image (``...``) or ``N x ...``."""
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full((1,) + tuple(x.shape[1:]), float(baseline), dtype=x.dtype, device=x.device)
    if not isinstance(baseline, torch.Tensor):
        raise TypeError(f"{name} must be a number or a tensor, got {type(baseline).__name__}")
    b = baseline.to(device=x.device, dtype=x.dtype)
    if b.shape == x.shape[1:]:
        b = b.unsqueeze(0)
    if b.dim() != x.dim() or b.shape[1:] != x.shape[1:] or b.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"{name} must be a number, one image of shape {tuple(x.shape[1:])} or a batch of shape "
                         f"{tuple(x.shape)}, got {tuple(b.shape)}")
    return b


class Perturbation:
    """Base class: subclasses set ``units`` and implement ``_draw(x, n, generator) -> Draw``.

    ``x`` is ``N x ...`` on the device where the model runs; the generator lives on the same device.
    """

    units: str = "local"
    #: ``True`` when the masks do not depend on ``x`` (global perturbations), so one draw can serve every input.
    shared_masks: bool = False

    def validate(self, x: torch.Tensor) -> None:
        """Raise a clear error if this perturbation cannot act on inputs like ``x`` (default: accept)."""

    def default_samples(self, x: torch.Tensor) -> int:
        """The number of samples used when ``n_samples`` is ``None``."""
        return 1000

    def draw(self, x: torch.Tensor, n: int, generator: Optional[torch.Generator] = None, start: int = 0) -> Draw:
        """Draw ``n`` perturbations for each input of ``x`` (``N x ...``): a :class:`Draw` of ``N x n x ...`` tensors.

        ``start`` is the index of the first sample (deterministic mask sets such as :class:`Square` continue from it).
        """
        _check_n(n)
        self.validate(x)
        d = self._draw(x, n, generator, start)
        if not isinstance(d, Draw):
            d = Draw(*d)
        expected = (x.shape[0], n) + tuple(x.shape[1:])
        if tuple(d.I.shape) != expected or tuple(d.W.shape) != expected:
            raise ValueError(f"{type(self).__name__}._draw must return N x n x ... tensors of shape {expected}, got "
                             f"I {tuple(d.I.shape)} and W {tuple(d.W.shape)}")
        return d

    def sample(self, x: torch.Tensor, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` perturbations ``I`` per input: ``N x n x ...`` (the perturbed inputs are ``x[:, None] - I``)."""
        return self.draw(x, n, generator).I

    def draw_block(self, x: torch.Tensor, rows: slice, start: int, n: int,
                   generator: Optional[torch.Generator] = None) -> Draw:
        """Samples ``start:start+n`` for the inputs ``x[rows]`` (the chunked evaluators call this)."""
        return self.draw(x[rows], n, generator, start)

    def draw_perturbed(self, x: torch.Tensor, rows: slice, start: int, n: int,
                       generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
        """Only the perturbed inputs ``x[rows, None] - I`` (``r x n x ...``) of the same draw as :meth:`draw_block`,
        when the perturbation can build them without ``I`` (cheaper); ``None`` (the default) when it cannot.

        For local units ``W = I = x - (x - I)``, so an evaluator can form ``IᵀΦ = xᵀΦ - (x - I)ᵀΦ`` from them.
        """
        return None

    def baseline_for(self, x: torch.Tensor) -> torch.Tensor:
        """The baseline ``x0`` of a global perturbation, broadcastable to ``x`` (zero for local ones)."""
        return _baseline_like(getattr(self, "baseline", 0.0), x)

    def _draw(self, x: torch.Tensor, n: int, generator: Optional[torch.Generator], start: int = 0) -> Draw:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


# ---------------------------------------------------------------------------------------------------- local ones


class Gaussian(Perturbation):
    """``I ~ N(0, σ² Id)``: the paper's vanishing-Gaussian perturbation (Grad is infidelity-optimal as σ -> 0).

    ``E[I Iᵀ] = σ² Id`` is known, so :func:`helpers.fidelity.optimal_explanation` solves it in closed form.
    """

    units = "local"

    def __init__(self, sigma: float = 0.1) -> None:
        self.sigma = _check_sigma(sigma)

    def _draw(self, x, n, generator, start=0):
        shape = (x.shape[0], n) + tuple(x.shape[1:])
        i = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype).mul_(self.sigma)
        return Draw(i, i)

    def second_moment(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(u, D)`` with ``E[I Iᵀ] = u uᵀ + diag(D)``, each ``N x ...``."""
        return torch.zeros_like(x), torch.full_like(x, self.sigma ** 2)


class LinfBall(Perturbation):
    """``I ~ Uniform([-r, r]^d)``: the uniform L-infinity ball of max-sensitivity (captum's default) and of SG's
    uniform kernel in the authors' code."""

    units = "local"

    def __init__(self, radius: float = 0.02) -> None:
        if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not math.isfinite(radius):
            raise TypeError(f"radius must be a finite float, got {radius!r}")
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        self.radius = float(radius)

    def _draw(self, x, n, generator, start=0):
        shape = (x.shape[0], n) + tuple(x.shape[1:])
        i = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype).mul_(2 * self.radius)
        i.sub_(self.radius)
        return Draw(i, i)


def _clipped_normal_moments(m: torch.Tensor, sigma: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``clip(m + σ n, 0, 1)``, ``n ~ N(0, 1)``, elementwise (closed form, float64 inside)."""
    m64 = m.double()
    a, b = (0.0 - m64) / sigma, (1.0 - m64) / sigma
    cdf = torch.special.ndtr
    pdf = lambda t: torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)  # noqa: E731
    pa, pb, fa, fb = cdf(a), cdf(b), pdf(a), pdf(b)
    mid = pb - pa
    upper = 1.0 - pb                                                   # P(z = 1)
    e1 = m64 * mid + sigma * (fa - fb) + upper
    e2 = m64 * m64 * mid + 2 * m64 * sigma * (fa - fb) + sigma ** 2 * (mid + a * fa - b * fb) + upper
    var = (e2 - e1 * e1).clamp_min(0.0)
    return e1.to(m.dtype), var.to(m.dtype)


class NoisyBaseline(Perturbation):
    """The authors' "noisy baseline" (NB): the perturbed input is ``x - I = clip(x0 + σ n, 0, 1)``, ``n ~ N(0, Id)``.

    With ``x0 = 0`` (their code) about half the pixels of the perturbed image are 0 and the rest |σ n|.
    ``clip=False`` gives the unclipped ``x - I = x0 + σ n``.

    ``E[I Iᵀ] = (x - μ)(x - μ)ᵀ + diag(v)`` with ``μ``, ``v`` the mean and variance of the (clipped) noisy baseline,
    since its pixels are independent: rank one plus diagonal, which :func:`optimal_explanation` inverts in O(d) by
    Sherman-Morrison (the closed form holds with clipping too; the issue's unclipped case is ``μ = x0, v = σ²``).
    """

    units = "local"

    def __init__(self, sigma: float = 0.2, baseline: BaselineLike = 0.0, clip: bool = True) -> None:
        self.sigma = _check_sigma(sigma)
        self.baseline = baseline
        self.clip = bool(clip)

    def _noisy(self, x: torch.Tensor, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        """``z = clip(x0 + σ n)``, ``N x n x ...``: two passes (normal_ with the mean, clamp_) for a number ``x0``."""
        shape = (x.shape[0], n) + tuple(x.shape[1:])
        z = torch.empty(shape, device=x.device, dtype=x.dtype)
        if isinstance(self.baseline, (int, float)) and not isinstance(self.baseline, bool):
            z.normal_(float(self.baseline), self.sigma, generator=generator)   # z = x0 + σ n in one pass
        else:
            z.normal_(0.0, self.sigma, generator=generator)
            z.add_(_baseline_like(self.baseline, x).unsqueeze(1))
        return z.clamp_(0.0, 1.0) if self.clip else z

    def _draw(self, x, n, generator, start=0):
        z = self._noisy(x, n, generator)
        i = x.unsqueeze(1) - z                                             # I = x - z
        return Draw(i, i, None, z)

    def draw_perturbed(self, x, rows, start, n, generator=None):
        """The noisy baselines ``z = x - I`` alone (the same draw as :meth:`draw_block`, without forming ``I``)."""
        self.validate(x)
        return self._noisy(x[rows], _check_n(n), generator)

    def moments(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance (each broadcastable to ``x``) of the perturbed input ``z = x - I``."""
        x0 = _baseline_like(self.baseline, x).expand_as(x)
        if not self.clip:
            return x0, torch.full_like(x, self.sigma ** 2)
        return _clipped_normal_moments(x0, self.sigma)

    def second_moment(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(u, D)`` with ``E[I Iᵀ] = u uᵀ + diag(D)``: ``u = x - E[z]``, ``D = Var[z]``, each ``N x ...``."""
        mu, var = self.moments(x)
        return x - mu, var.expand_as(x).clone()


# --------------------------------------------------------------------------------------------------- global ones


class _Global(Perturbation):
    units = "global"

    def __init__(self, baseline: BaselineLike = 0.0) -> None:
        self.baseline = baseline

    def masks(self, x: torch.Tensor, n: int, generator: Optional[torch.Generator],
              start: int = 0) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(M, weights)``: masks ``N x n x ...`` (1 = replaced by the baseline) and optional weights ``N x n``."""
        raise NotImplementedError  # pragma: no cover

    def _draw(self, x, n, generator, start=0):
        m, w = self.masks(x, n, generator, start)
        m = m.to(x.dtype).expand((x.shape[0], n) + tuple(x.shape[1:]))
        diff = (x - _baseline_like(self.baseline, x)).unsqueeze(1)
        return Draw(m * diff, m, w)


class ConstantBaseline(_Global):
    """``I = x - x0`` with probability one (the mask is all ones): the perturbation for which IG is optimal.

    ``value`` is a number or a tensor (one image or ``N x ...``). Every sample is the same, so ``n = 1`` suffices.
    """

    shared_masks = True

    def __init__(self, value: BaselineLike = 0.0) -> None:
        super().__init__(value)

    def default_samples(self, x):
        return 1

    def masks(self, x, n, generator, start=0):
        return torch.ones((1, n) + tuple(x.shape[1:]), device=x.device, dtype=x.dtype), None


def square_masks(shape: Sequence[int], sizes: Sequence[int] = tuple(range(1, 11)), stride: int = 1,
                 device: Optional[torch.device] = None) -> torch.Tensor:
    """Every ``s x s`` square mask (``s`` in ``sizes``, top-left corners every ``stride`` pixels) on an image.

    Args:
        shape: ``C x H x W`` (or ``H x W``) of one image; a mask covers every channel.

    Returns:
        Bool tensor ``K x C x H x W`` (``K = Σ_s ((H - s)//stride + 1)((W - s)//stride + 1)``; 5,605 for sizes 1..10
        and stride 1 on 28 x 28, the authors' setting).
    """
    shape = tuple(shape)
    if len(shape) == 2:
        shape = (1,) + shape
    c, h, w = shape[-3:]
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    out = []
    for s in sizes:
        r0 = torch.arange(0, h - s + 1, stride, device=device)
        c0 = torch.arange(0, w - s + 1, stride, device=device)
        rr = (rows[None] >= r0[:, None]) & (rows[None] < r0[:, None] + s)            # R x H
        cc = (cols[None] >= c0[:, None]) & (cols[None] < c0[:, None] + s)            # Q x W
        m = rr[:, None, :, None] & cc[None, :, None, :]                               # R x Q x H x W
        out.append(m.reshape(-1, h, w))
    m = torch.cat(out)
    return m[:, None].expand(m.shape[0], c, h, w).reshape((m.shape[0],) + shape)


class Square(_Global):
    """Square removal (the paper's "Square"): an ``s x s`` square, ``s`` in ``sizes``, set to the baseline.

    ``sample=False`` (default) cycles through all masks in a fixed order, so ``n_samples = n_masks(x)`` (5,605 on
    28 x 28 with sizes 1..10) evaluates every mask once, like the authors' code; ``sample=True`` draws masks
    uniformly with replacement (a cheaper unbiased estimate).
    """

    shared_masks = True

    def __init__(self, sizes: Union[int, Sequence[int]] = tuple(range(1, 11)), stride: int = 1,
                 baseline: BaselineLike = 0.0, sample: bool = False) -> None:
        super().__init__(baseline)
        if isinstance(sizes, int) and not isinstance(sizes, bool):
            sizes = (sizes,)
        sizes = tuple(sizes)
        if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"sizes must be positive ints, got {sizes!r}")
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be an int >= 1, got {stride!r}")
        self.sizes, self.stride, self.sample_masks = sizes, stride, bool(sample)
        self._cache: dict = {}

    def validate(self, x):
        h, w = x.shape[-2], x.shape[-1]
        if x.dim() < 3:
            raise ValueError(f"Square needs images (N x [C x] H x W), got x of shape {tuple(x.shape)}")
        too_big = [s for s in self.sizes if s > min(h, w)]
        if too_big:
            raise ValueError(f"square sizes {too_big} are larger than the image ({h} x {w})")

    def all_masks(self, x: torch.Tensor) -> torch.Tensor:
        """Every mask, ``K x ...`` (cached per shape and device)."""
        key = (tuple(x.shape[1:]), str(x.device))
        if key not in self._cache:
            self._cache[key] = square_masks(x.shape[1:], self.sizes, self.stride, device=x.device)
        return self._cache[key]

    def n_masks(self, x: torch.Tensor) -> int:
        self.validate(x)
        return int(self.all_masks(x).shape[0])

    def default_samples(self, x):
        return self.n_masks(x)

    def masks(self, x, n, generator, start=0):
        allm = self.all_masks(x)
        k = allm.shape[0]
        if self.sample_masks:
            idx = torch.randint(k, (x.shape[0] * n,), generator=generator, device=x.device)
            return allm[idx].reshape((x.shape[0], n) + tuple(x.shape[1:])), None
        idx = torch.arange(start, start + n, device=x.device) % k
        return allm[idx].unsqueeze(0), None

    def __repr__(self):
        return f"Square(sizes={self.sizes}, stride={self.stride}, baseline={self.baseline!r}, sample={self.sample_masks})"


def _log_shapley_kernel(z: torch.Tensor, d: int) -> torch.Tensor:
    """``log π(z)`` of the Shapley kernel ``π(z) = (d - 1) / (C(d, z) z (d - z))`` for subsets of size ``z``."""
    z = z.double()
    log_binom = math.lgamma(d + 1) - torch.lgamma(z + 1) - torch.lgamma(d - z + 1)
    return math.log(d - 1) - log_binom - torch.log(z) - torch.log(d - z)


class ShapSubset(_Global):
    """Random subsets of pixels set to the baseline, weighted by the Shapley kernel (SHAP is optimal for it).

    As in the authors' code, each pixel is removed with probability ``p = 1/2`` (all subsets equally likely; the
    empty and the full subset are redrawn) and a sample of ``z`` removed pixels has the kernel weight
    ``π(z) = (d - 1) / (C(d, z) z (d - z))`` (importance weights, normalised to mean 1 per input).
    ``weighted=False`` drops the weights.
    """

    def __init__(self, baseline: BaselineLike = 0.0, p: float = 0.5, weighted: bool = True) -> None:
        super().__init__(baseline)
        if not 0.0 < float(p) < 1.0:
            raise ValueError(f"p must lie in (0, 1), got {p}")
        self.p, self.weighted = float(p), bool(weighted)

    def masks(self, x, n, generator, start=0):
        shape = (x.shape[0], n) + tuple(x.shape[1:])
        d = int(math.prod(x.shape[1:]))
        if d < 2:
            raise ValueError(f"ShapSubset needs inputs with at least 2 features, got shape {tuple(x.shape[1:])}")
        m = torch.rand(shape, generator=generator, device=x.device) < self.p
        z = m.flatten(2).sum(-1)
        bad = (z == 0) | (z == d)
        while bool(bad.any()):                                              # redraw the empty / full subsets
            redo = torch.rand((int(bad.sum()),) + tuple(x.shape[1:]), generator=generator, device=x.device) < self.p
            m[bad] = redo
            z = m.flatten(2).sum(-1)
            bad = (z == 0) | (z == d)
        if not self.weighted:
            return m, None
        logw = _log_shapley_kernel(z, d)
        w = torch.exp(logw - logw.max(dim=1, keepdim=True).values)
        return m, (w / w.mean(dim=1, keepdim=True)).to(x.dtype)


class Fixed(Perturbation):
    """Replays given tensors: ``I`` (``N x n x ...``), optional ``W`` (default ``I``) and weights (``N x n``).

    For cross-checks on the same perturbation tensors (e.g. against captum) and for perturbations computed elsewhere.
    """

    def __init__(self, I: torch.Tensor, W: Optional[torch.Tensor] = None, weights: Optional[torch.Tensor] = None,
                 units: str = "local") -> None:
        if units not in ("local", "global"):
            raise ValueError(f"units must be 'local' or 'global', got {units!r}")
        if W is not None and W.shape != I.shape:
            raise ValueError(f"W must have the shape of I {tuple(I.shape)}, got {tuple(W.shape)}")
        self.I, self.W, self.weights, self.units = I, (I if W is None else W), weights, units

    def validate(self, x):
        if self.I.shape[0] != x.shape[0] or self.I.shape[2:] != x.shape[1:]:
            raise ValueError(f"Fixed perturbation of shape {tuple(self.I.shape)} does not fit x of shape "
                             f"{tuple(x.shape)} (expected N x n x ...)")

    def default_samples(self, x):
        return int(self.I.shape[1])

    def _draw(self, x, n, generator, start=0):
        return self.draw_block(x, slice(0, x.shape[0]), start, n, generator)

    def draw_block(self, x, rows, start, n, generator=None):
        if start + n > self.I.shape[1]:
            raise ValueError(f"n_samples must be <= the {self.I.shape[1]} stored samples, got {start + n}")
        self.validate(x)
        dev, cols = x.device, slice(start, start + n)
        w = None if self.weights is None else self.weights[rows, cols].to(dev)
        return Draw(self.I[rows, cols].to(dev), self.W[rows, cols].to(dev), w)

    def __repr__(self):
        return f"Fixed(I={tuple(self.I.shape)}, units={self.units!r})"
