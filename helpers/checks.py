"""Graded checks for the classroom exercises: ``check_<exercise>(student_function)``.

An exercise is data: a list of cases, each building its inputs and judging the answer against a reference computed
*independently* (closed forms of a linear or quadratic model, hand cases, loops). One runner (:func:`evaluate`) calls
the student's function on every case; ``check_<exercise>`` prints ``✓`` or ``✗ <case>: expected ..., got ...`` per
case and returns ``True`` or raises ``AssertionError`` listing the failures; ``python -m helpers.student grade``
tabulates the same :class:`Result`. A stub gets a message saying what to do; a solution that calls the library's own
answer (:data:`SHORTCUTS`, by any import route) scores no points.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import itertools
import pkgutil
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

#: exercise function name -> name of its check in this module
EXERCISES = {n: f"check_{n}" for n in ("integrated_gradients", "abc_weights", "infidelity_estimate", "beta_rescale",
                                       "fit_temperature", "aurc")}
__all__ = ["EXERCISES", "SHORTCUTS", "Result", "evaluate", *EXERCISES.values()]

#: exercise -> the library functions ("module:qualified name") a solution must not call: using one scores 0
SHORTCUTS = {
    "integrated_gradients": ("helpers.attribution:attribute", "helpers.attribution:explain",
                             "helpers.attribution:integrated_gradients", "captum.attr:IntegratedGradients.attribute"),
    "abc_weights": ("helpers.abc:abc_weights", "helpers.abc:weights_from_multipliers",
                    "helpers.abc:inclusion_probabilities"),
    "infidelity_estimate": ("helpers.infidelity:infidelity", "helpers.infidelity:infidelity_from_samples",
                            "captum.metrics:infidelity"),
    "beta_rescale": ("helpers.infidelity:beta_rescale", "helpers.infidelity:infidelity_from_samples"),
    "fit_temperature": ("helpers.calibration:fit_temperature", "helpers.calibration:TemperatureScaling.fit"),
    "aurc": ("helpers.metrics:aurc", "helpers.metrics:risk_coverage"),
}


class _Wrong(Exception):
    """Raised by a judge: the answer cannot be compared (wrong type); the message says why."""


@dataclass
class Result:
    """The outcome of one exercise: ``(case, problem or None)`` per case, a shortcut used, a stub's message."""

    exercise: str
    cases: List[Tuple[str, Optional[str]]] = field(default_factory=list)
    shortcut: Optional[str] = None
    not_implemented: Optional[str] = None

    @property
    def points(self) -> int:
        """Cases passed; 0 when the solution calls the library's own answer or is not implemented."""
        return 0 if self.shortcut or self.not_implemented else sum(p is None for _, p in self.cases)

    @property
    def first_failure(self) -> str:
        return self.not_implemented or self.shortcut or next((f"{c}: {p}" for c, p in self.cases if p), "")

    def lines(self, ok: str = "✓", fail: str = "✗") -> List[str]:
        """One line per case (``ok``, or ``fail`` and the problem), then the stub's or the shortcut's message."""
        return ([f"  {ok} {c}" if p is None else f"  {fail} {c}: {p}" for c, p in self.cases]
                + [f"  {fail} {m}" for m in (self.not_implemented, self.shortcut) if m])


def evaluate(exercise: str, fn: Callable, *, allow_library: bool = False) -> Result:
    """Run every case of ``exercise`` on ``fn`` (on copies of the inputs); a call of a :data:`SHORTCUTS` function
    (unless ``allow_library``) is recorded, by whatever name or import route it was reached."""
    if not callable(fn):
        raise TypeError(f"check_{exercise} expects your function itself (e.g. check_{exercise}(my_function)), got "
                        f"{type(fn).__name__}")
    codes, used = {}, []
    for spec in () if allow_library else SHORTCUTS[exercise]:
        with contextlib.suppress(ImportError, AttributeError):  # captum may be absent
            codes[inspect.unwrap(pkgutil.resolve_name(spec)).__code__] = spec.replace(":", ".")

    def spy(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            used.append(codes[frame.f_code])

    result = Result(exercise)
    for case, args, judge in _CASES[exercise]():
        old = sys.getprofile()
        sys.setprofile(spy if codes else old)
        try:
            got = fn(*copy.deepcopy(args))
            sys.setprofile(old)
            problem = judge(got, *args)
        except NotImplementedError as err:
            name, task = getattr(fn, "__name__", "your function"), f" ({err})" if str(err) else ""
            result.not_implemented = (
                f"`{name}` is not implemented yet: it raised NotImplementedError{task}. Replace the line "
                "`raise NotImplementedError(...)` in the exercise cell with your code, run that cell again, then "
                "run this check.")
            return result
        except _Wrong as err:
            problem = str(err)
        except Exception as err:  # noqa: BLE001 - any error of the student's code is feedback
            problem = f"your function raised {type(err).__name__}: {err}"
        finally:
            sys.setprofile(old)
        result.cases.append((case, problem))
    if used:
        result.shortcut = (f"your function calls {used[0]}, the library's own answer: write the computation "
                           "yourself (no points for this exercise)")
    return result


def _make_check(exercise: str) -> Callable[[Callable], bool]:
    def check(fn: Callable) -> bool:
        r = evaluate(exercise, fn)
        print("\n".join([f"check_{exercise}", *r.lines()]))
        failures = [f"{c}: {p}" for c, p in r.cases if p is not None] + ([r.shortcut] if r.shortcut else [])
        if r.not_implemented or failures:
            raise AssertionError(f"check_{exercise}: " + (r.not_implemented or f"{len(failures)} problem(s) in "
                                                          f"{len(r.cases)} case(s):\n  - " + "\n  - ".join(failures)))
        print(f"  all {len(r.cases)} cases passed")
        return True

    check.__name__ = check.__qualname__ = f"check_{exercise}"
    check.__doc__ = _CASES[exercise].__doc__
    return check


# ---- comparing the student's answer -----------------------------------------------------------------------------

def _to_tensor(got, what: str) -> torch.Tensor:
    """The student's result as a float64 CPU tensor (from a tensor, numpy array or number), else :class:`_Wrong`."""
    if isinstance(got, torch.Tensor):
        return got.detach().cpu().to(torch.float64)
    if isinstance(got, (np.ndarray, np.generic, float, int)) and not isinstance(got, bool):
        return torch.as_tensor(np.asarray(got, dtype=np.float64))
    raise _Wrong(f"the {what} must be a torch.Tensor, got {type(got).__name__}")


def _as_float(got, what: str) -> float:
    """The student's result as one float, else :class:`_Wrong` naming what came back."""
    size = got.numel() if isinstance(got, torch.Tensor) else np.size(got) if isinstance(got, np.ndarray) else 1
    if size != 1 or isinstance(got, bool) or not isinstance(got, (int, float, np.generic, np.ndarray, torch.Tensor)):
        raise _Wrong(f"the {what} must be a single number, got {type(got).__name__} "
                     f"{tuple(getattr(got, 'shape', ()))}")
    return float(got.detach().cpu()) if isinstance(got, torch.Tensor) else float(got)


def _compare(got, expected: torch.Tensor, *, what: str, atol: float, rtol: float = 0.0,
             hint: str = "") -> Optional[str]:
    """``None`` if ``got`` matches ``expected`` (shape and values within ``atol + rtol |expected|``), else a message."""
    g, e = _to_tensor(got, what), expected.detach().cpu().to(torch.float64)
    if g.shape != e.shape:
        return f"expected {what} of shape {tuple(e.shape)}{f' ({hint})' if hint else ''}, got shape {tuple(g.shape)}"
    if not bool(torch.isfinite(g).all()):
        bad = torch.nonzero(~torch.isfinite(g))[0].tolist()
        return f"{what} contains NaN/Inf, e.g. at {bad} (expected {float(e[tuple(bad)]):.6g} there)"
    err, tol = (g - e).abs(), atol + rtol * e.abs()
    if bool((err <= tol).all()):
        return None
    idx = torch.nonzero(err - tol == (err - tol).max())[0].tolist()
    return (f"expected {what}{idx if idx else ''} = {float(e[tuple(idx)]):.6g}, got {float(g[tuple(idx)]):.6g} "
            f"(max |error| {float(err.max()):.3g}, tolerance {atol:.0e}{f' + {rtol:.0e}·|expected|' if rtol else ''})")


def _tensor(expected: Callable[..., torch.Tensor], what: str, atol: float = 1e-5, rtol: float = 0.0,
            hint: str = "") -> Callable[..., Optional[str]]:
    """A judge comparing the answer with the reference ``expected(*inputs)``."""
    return lambda got, *args: _compare(got, expected(*args), what=what, atol=atol, rtol=rtol, hint=hint)


# ---- small models with answers in closed form (the notebook's random stream is untouched) -------------------------

class _Quadratic(nn.Module):
    """Logits ``f_c(v) = vᵀ A_c v / 2 + w_cᵀ v`` of ``v = vec(x)`` (``A_c`` symmetric): gradient ``A_c v + w_c``;
    linear when ``A = 0``."""

    def __init__(self, a: torch.Tensor, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A", ((a + a.transpose(1, 2)) / 2).float())
        self.register_buffer("w", w.float())
        self.eval()  # as a trained model is given to the library

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)
        return 0.5 * torch.einsum("nd,cde,ne->nc", v, self.A, v) + v @ self.w.T


def _model(d: int, n_classes: int, seed: int, curvature: float = 0.5) -> _Quadratic:
    """A random quadratic model on ``d`` features; linear with ``curvature=0``."""
    g = torch.Generator().manual_seed(seed)
    return _Quadratic(curvature * torch.randn(n_classes, d, d, generator=g), torch.randn(n_classes, d, generator=g))


def _images(n: int, side: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def _t(*rows) -> torch.Tensor:
    return torch.tensor(rows)


# ---- 01: integrated gradients -------------------------------------------------------------------------------------

def _ig_closed_form(got, model, x, b, target, n_steps) -> Optional[str]:
    """IG of the quadratic model, ``(x - x') ⊙ (A_t (x + x')/2 + w_t)``, within a left/right Riemann sum's error
    ``(x - x')_i (A (x - x'))_i / (2 n_steps)`` (midpoint and trapezoid rules, and any rule when ``A = 0``, are
    exact)."""
    v, v0 = x.flatten(1).double(), b.flatten(1).double()
    a, w = model.A.double()[target], model.w.double()[target]
    expected = ((v - v0) * (torch.einsum("nde,ne->nd", a, (v + v0) / 2) + w)).reshape_as(x)
    curvature = float(((v - v0) * torch.einsum("nde,ne->nd", a, v - v0)).abs().max())
    return _compare(got, expected, what="IG", atol=curvature / n_steps + 1e-4, rtol=1e-3, hint="like x")


def _ig_completeness(got, model, x, b, target, n_steps) -> Optional[str]:
    g = _to_tensor(got, "IG")
    if g.shape != x.shape:
        return f"expected IG of shape {tuple(x.shape)} (like x), got shape {tuple(g.shape)}"
    with torch.no_grad():
        gap = (model(x) - model(b)).gather(1, target[:, None])[:, 0]
    return _compare(g.flatten(1).sum(1), gap, atol=2e-3, rtol=0.03,
                    what="sum of IG over pixels (should equal f_t(x) - f_t(baseline))")


def _cases_integrated_gradients() -> List[tuple]:
    r"""Check ``integrated_gradients(model, x, baseline, target, n_steps) -> Tensor like x``.

    :math:`\mathrm{IG}_i = (x_i - x'_i) \int_0^1 \partial_i f_t(x' + \alpha (x - x'))\, d\alpha`, one row per image and
    per-row targets; any Riemann rule within ``O(1/n_steps)`` of the closed forms of linear and quadratic models.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Softplus(), nn.Linear(12, 4)).eval()
    return [
        ("linear model, zero baseline: IG = W_t * x",
         (_model(9, 3, 1, 0.0), _images(2, 3, 2), torch.zeros(2, 1, 3, 3), _t(0, 2), 16), _ig_closed_form),
        ("linear model, non-zero baseline: IG = W_t * (x - baseline), per-row targets",
         (_model(9, 3, 1, 0.0), _images(2, 3, 2), _images(2, 3, 3), _t(0, 2), 16), _ig_closed_form),
        ("quadratic model: IG = (x - x') * (A_t (x + x')/2 + w_t)",
         (_model(4, 2, 4), _images(3, 2, 5), 0.2 * _images(3, 2, 6), _t(1, 0, 1), 64), _ig_closed_form),
        ("completeness on a small softplus network: sum(IG) = f_t(x) - f_t(x')",
         (net, _images(4, 4, 8), torch.zeros(4, 1, 4, 4), _t(0, 1, 2, 3), 128), _ig_completeness),
    ]


# ---- 01: ABC sampling weights -------------------------------------------------------------------------------------

def _abc_weights_by_loop(attr: torch.Tensor, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|A_i / (x_i - b_i)| normalised per row, 0 where x_i == b_i (feature by feature)."""
    a, xv, bv = (t.reshape(t.shape[0], -1).double() for t in (attr, x, b))
    out = torch.zeros_like(a)
    for n, i in itertools.product(range(a.shape[0]), range(a.shape[1])):
        if xv[n, i] != bv[n, i]:
            out[n, i] = abs(a[n, i] / (xv[n, i] - bv[n, i]))
    return out / out.sum(1, keepdim=True)


def _cases_abc_weights() -> List[tuple]:
    r"""Check ``abc_weights(attributions, x, baseline) -> Tensor N x d``.

    ABC (Jha et al. 2019) mutates feature ``i`` with probability
    :math:`p_i = |A_i / (x_i - x'_i)| / \sum_j |A_j / (x_j - x'_j)|` and :math:`p_i = 0` where :math:`x_i = x'_i`
    (nothing to mutate there; no division by zero). Rows are flattened images (``d = C·H·W``) and sum to 1.
    """
    g = torch.Generator().manual_seed(11)
    sparse = torch.rand(3, 1, 6, 6, generator=g)
    sparse[sparse < 0.6] = 0.0  # like MNIST: mostly background equal to the zero baseline
    g = torch.Generator().manual_seed(12)
    x2 = torch.rand(2, 1, 3, 3, generator=g) + 0.1
    by_loop = _tensor(_abc_weights_by_loop, "weights", hint="N x d: one flattened row per image, d = C·H·W")
    return [
        # |0.5/1|, |-0.5/0.5|, 0 (x == baseline), |0.1/0.25| = 0.5, 1, 0, 0.4 -> / 1.9
        ("hand case, zero baseline: weights 0.5, 1, 0, 0.4 normalised",
         (_t([[[0.5, -0.5], [0.0, 0.1]]]), _t([[[1.0, 0.5], [0.0, 0.25]]]), torch.zeros(1, 2, 2)), by_loop),
        # x - b = 0.5, 0 (excluded), -0.5, 0.25 -> |A/(x-b)| = 0.5, 0, 0.5, 2 -> / 3
        ("hand case, baseline 0.5: feature equal to the baseline gets weight 0",
         (_t([[[0.25, 0.3], [-0.25, 0.5]]]), _t([[[1.0, 0.5], [0.0, 0.75]]]), torch.full((1, 2, 2), 0.5)), by_loop),
        ("batch of 3 sparse images: N x d, rows sum to 1, no NaN where x == baseline",
         (torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(13)), sparse, torch.zeros_like(sparse)),
         by_loop),
        ("attributions of both signs, scaled by 3: the weights use |A| and are normalised",
         (-3.0 * torch.randn(2, 1, 3, 3, generator=g), x2, torch.zeros_like(x2)), by_loop),
    ]


# ---- 04: infidelity (local units) and the beta rescaling ----------------------------------------------------------

def _infidelity_by_loop(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, pert: torch.Tensor,
                        target: torch.Tensor) -> torch.Tensor:
    """One forward pass per (image, sample), in float64."""
    out = torch.zeros(x.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for n, s in itertools.product(range(pert.shape[0]), range(pert.shape[1])):
            i, t = pert[n, s], int(target[n])
            diff = float(model(x[n:n + 1])[0, t]) - float(model(x[n:n + 1] - i[None])[0, t])
            out[n] += (float((i.double() * attr[n].double()).sum()) - diff) ** 2
    return out / pert.shape[1]


def _linear_case(seed: int, n: int, s: int, scale: float, target: torch.Tensor, delta: bool) -> tuple:
    """A linear model, images, the explanation ``W_t (+ δ)`` and ``scale``-sized Gaussian perturbations."""
    model, x = _model(16, 3, seed, 0.0), _images(n, 4, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    attr = model.w[target].reshape_as(x) + (torch.randn(n, 1, 4, 4, generator=g) if delta else 0.0)
    return model, x, attr, scale * torch.randn(n, s, 1, 4, 4, generator=g), target


def _cases_infidelity_estimate() -> List[tuple]:
    r"""Check ``infidelity_estimate(model, x, attributions, perturbations, target) -> Tensor N``.

    Local units (Yeh et al. 2019): with perturbations ``I`` of shape ``N x S x (x.shape[1:])``,
    :math:`\mathrm{INFD}_n = \frac1S \sum_s \big(\sum_i I_{s,i} \Phi_i - (f_t(x) - f_t(x - I_s))\big)^2`.
    The reference loops over images and samples.
    """
    g = torch.Generator().manual_seed(29)
    quadratic = (_model(9, 2, 27), _images(2, 3, 28), torch.randn(2, 1, 3, 3, generator=g),
                 0.3 * torch.randn(2, 6, 1, 3, 3, generator=g), _t(0, 1))
    by_loop = _tensor(_infidelity_by_loop, "infidelity", 1e-4, 1e-3,
                      hint="one value per image, the mean over the S samples")
    return [
        # I·Φ = 2, f(x) - f(x - I) = 2 + 3 = 5 -> (2 - 5)^2 = 9
        ("hand case: I·Φ = 2, f(x) - f(x - I) = 5, infidelity (2 - 5)^2 = 9",
         (_Quadratic(torch.zeros(2, 2, 2), _t([2.0, 3.0], [1.0, -1.0])), _t([[[1.0, 1.0]]]), _t([[[1.0, 1.0]]]),
          _t([[[[1.0, 1.0]]]]), _t(0)), by_loop),
        ("linear model: the gradient W_t has infidelity 0", _linear_case(21, 2, 8, 0.1, _t(2, 0), False), by_loop),
        ("linear model, explanation W_t + δ: infidelity = mean_s (I_s·δ)^2",
         _linear_case(24, 3, 10, 0.5, _t(1, 1, 0), True), by_loop),
        ("quadratic model, per-row targets", quadratic, by_loop),
    ]


def _cases_beta_rescale() -> List[tuple]:
    r"""Check ``beta_rescale(dot, diff) -> Tensor N``.

    The scale :math:`\beta` that minimises :math:`\frac1S\sum_s (\beta\, I_s^\top\Phi - (f(x) - f(x - I_s)))^2` is
    :math:`\beta^* = \mathrm{mean}_s(\text{dot}\cdot\text{diff}) / \mathrm{mean}_s(\text{dot}^2)`, one per row of
    the ``N x S`` inputs (0 for a row whose dot is all zero). The reference is a least-squares fit per row.
    """
    def lstsq(dot: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
        d, y = dot.double().numpy(), diff.double().numpy()
        return torch.tensor([np.linalg.lstsq(d[n][:, None], y[n], rcond=None)[0][0] for n in range(d.shape[0])])

    g = torch.Generator().manual_seed(31)
    dot = torch.randn(4, 50, generator=g)
    noisy = (dot, _t(0.5, -1.0, 2.0, 0.0)[:, None] * dot + 0.3 * torch.randn(4, 50, generator=g))
    by_lstsq = _tensor(lstsq, "beta", 1e-4, 1e-4, hint="one beta per row: average over the S columns, not over rows")
    return [(name, (_t(*dot), _t(*diff)), _tensor(lstsq, "beta", hint="one beta per row")) for name, dot, diff in (
        ("hand case: diff = 2 * dot gives beta = 2", [[1.0, 2.0]], [[2.0, 4.0]]),
        ("hand case: dot = [1, 2], diff = [1, 6] gives beta = 13/5 (not the mean of the ratios)", [[1.0, 2.0]],
         [[1.0, 6.0]]),
        ("a row whose dot is all zero gets beta = 0 (not NaN)", [[0.0, 0.0], [1.0, 1.0]], [[1.0, 2.0], [1.0, 1.0]]),
        ("hand case: dot = [1, -1], diff = [1, 1] gives beta = 0", [[1.0, -1.0]], [[1.0, 1.0]]),
    )] + [("batch of 4 rows x 50 samples: the least-squares scale of each row", noisy, by_lstsq)]


# ---- 06: temperature scaling and AURC -----------------------------------------------------------------------------

def _judge_temperature(got, logits: torch.Tensor, labels: torch.Tensor) -> Optional[str]:
    """Within 2% of the NLL-minimising ``T`` (a bounded scalar minimisation over log T), or within 1e-4 of its NLL."""
    from scipy.optimize import minimize_scalar

    t = _as_float(got, "temperature")
    if not np.isfinite(t) or t <= 0:
        return f"the temperature must be a positive finite number, got {t}"

    def nll(temperature: float) -> float:
        return float(nn.functional.cross_entropy(logits.double() / temperature, labels))

    best = float(np.exp(minimize_scalar(lambda u: nll(np.exp(u)), bounds=(np.log(0.01), np.log(100.0)),
                                        method="bounded", options={"xatol": 1e-8}).x))
    if abs(t - best) <= 0.02 * best or nll(t) - nll(best) <= 1e-4:
        return None
    return (f"expected T = {best:.4f} (NLL {nll(best):.4f}), got T = {t:.4f} (NLL {nll(t):.4f}); "
            f"minimise the NLL of softmax(logits / T), e.g. over log T")


def _cases_fit_temperature() -> List[tuple]:
    r"""Check ``fit_temperature(logits, labels) -> float``.

    The temperature :math:`T > 0` minimising the mean negative log-likelihood
    :math:`-\frac1N \sum_n \log \mathrm{softmax}(z_n / T)_{y_n}` (Guo et al. 2017). Checked on synthetic logits that
    are too sharp (best ``T`` about 3), too flat (about 0.5) and calibrated (about 1), against a bounded scalar
    minimisation; a result within 2% of the best ``T``, or with an NLL within 1e-4 of the best, passes.
    """
    cases = []
    for what, sharpness, seed in (("overconfident", 3.0, 41), ("underconfident", 0.5, 42), ("calibrated", 1.0, 43)):
        g = torch.Generator().manual_seed(seed)
        z = 2.0 * torch.randn(2000, 10, generator=g)  # labels drawn from softmax(z): the best T is about sharpness
        labels = torch.multinomial(torch.softmax(z, 1), 1, generator=g)[:, 0]
        cases.append((f"{what} logits (best T about {sharpness:g})", ((sharpness * z).float(), labels),
                      _judge_temperature))
    return cases


def _aurc_by_loop(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Reference AURC with distinct confidences: mean over k of the error rate of the k most confident."""
    order = sorted(range(len(confidence)), key=lambda i: -confidence[i])
    total, errors = 0.0, 0
    for k, i in enumerate(order, start=1):
        errors += 0 if correct[i] else 1
        total += errors / k
    return total / len(order)


def _judge_aurc(got, conf: np.ndarray, correct: np.ndarray) -> Optional[str]:
    value, expected = _as_float(got, "AURC"), _aurc_by_loop(conf, correct)
    if abs(value - expected) <= 1e-6:
        return None
    if conf.size >= 10:
        return f"expected {expected:.6f}, got {value:.6f} (the inputs are not sorted: sort by decreasing confidence)"
    return f"confidence={conf.tolist()}, correct={correct.tolist()}: expected {expected:.6f}, got {value:.6f}"


def _cases_aurc() -> List[tuple]:
    r"""Check ``aurc(confidence, correct) -> float``.

    Sort by decreasing confidence; the risk at coverage ``k/N`` is the error rate of the ``k`` most confident
    predictions; :math:`\mathrm{AURC} = \frac1N\sum_{k=1}^N \mathrm{risk}(k)` (Geifman et al. 2019). Inputs are numpy
    arrays (``correct`` boolean); the cases have distinct confidences (no ties).
    """
    rng = np.random.default_rng(51)
    conf = rng.permutation(500) / 500.0 + rng.uniform(0, 1e-3)
    hand = [
        ("hand case, errors least confident: risks 0, 0, 1/3, 1/2 -> 0.208333", [0.9, 0.8, 0.7, 0.6],
         [True, True, False, False]),
        ("hand case, errors most confident: risks 1, 1, 2/3, 1/2 -> 0.791667", [0.9, 0.8, 0.7, 0.6],
         [False, False, True, True]),
        ("hand case, unsorted input: confidence [0.2, 0.9, 0.5], correct [F, T, T]", [0.2, 0.9, 0.5],
         [False, True, True]),
        ("all correct gives 0", [0.3, 0.1, 0.7], [True, True, True]),
        ("all wrong gives 1", [0.3, 0.1, 0.7], [False, False, False]),
        ("500 random predictions: against a loop over k", conf, rng.uniform(size=500) < 0.3 + 0.6 * conf),
    ]
    return [(name, (np.array(c, dtype=np.float64), np.array(k, dtype=bool)), _judge_aurc) for name, c, k in hand]


#: exercise -> its cases ``(name, inputs, judge)``: the student's function gets a copy of ``inputs``;
#: ``judge(answer, *inputs)`` returns ``None`` or what is wrong
_CASES: Dict[str, Callable[[], List[tuple]]] = {name: globals()[f"_cases_{name}"] for name in EXERCISES}
check_integrated_gradients = _make_check("integrated_gradients")
check_abc_weights = _make_check("abc_weights")
check_infidelity_estimate = _make_check("infidelity_estimate")
check_beta_rescale = _make_check("beta_rescale")
check_fit_temperature = _make_check("fit_temperature")
check_aurc = _make_check("aurc")
