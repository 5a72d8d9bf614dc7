"""Graded checks for the classroom exercises: ``check_<exercise>(student_function)``.

An exercise is data: a list of cases, each building its inputs and computing the expected answer *independently*
(closed forms of a linear or quadratic model, hand cases, loops). One runner (:func:`evaluate`) calls the student's
function on every case and compares; ``check_<exercise>`` prints ``✓`` or ``✗ <case>: expected ..., got ...`` per case
and returns ``True`` or raises ``AssertionError`` listing the failures; ``python -m helpers.student grade`` tabulates
the same :class:`Result`. A stub gets a message saying what to do; a solution that calls the library's own answer
(:data:`SHORTCUTS`, by any import route) scores no points.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

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


class _Case(NamedTuple):
    """A named case: ``inputs()`` builds the arguments; ``judge(got, *inputs)`` (with ``fn=`` the student's function
    when ``with_fn``) returns ``None`` or what is wrong."""

    name: str
    inputs: Callable[[], tuple]
    judge: Callable[..., Optional[str]]
    with_fn: bool = False


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


def _library_codes(exercise: str) -> Dict[object, str]:
    """Code objects of the exercise's forbidden library functions (those that exist) -> their dotted names."""
    codes = {}
    for spec in SHORTCUTS.get(exercise, ()):
        module, qualname = spec.split(":")
        try:
            obj = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            continue
        code = getattr(inspect.unwrap(obj), "__code__", None)
        if code is not None:
            codes[code] = f"{module}.{qualname}"
    return codes


def evaluate(exercise: str, fn: Callable, *, allow_library: bool = False) -> Result:
    """Run every case of ``exercise`` on ``fn`` (on clones of the inputs); a call of a :data:`SHORTCUTS` function
    (unless ``allow_library``) is recorded, by whatever name or import route it was reached."""
    if not callable(fn):
        raise TypeError(f"check_{exercise} expects your function itself (e.g. check_{exercise}(my_function)), got "
                        f"{type(fn).__name__}")
    codes, used = ({} if allow_library else _library_codes(exercise)), []

    def spy(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            used.append(codes[frame.f_code])

    result = Result(exercise)
    for case in _CASES[exercise]():
        args = case.inputs()
        old = sys.getprofile()
        sys.setprofile(spy if codes else old)
        try:
            got = fn(*[a.clone() if isinstance(a, torch.Tensor) else a.copy() if isinstance(a, np.ndarray) else a
                       for a in args])
            sys.setprofile(old)
            problem = case.judge(got, *args, fn=fn) if case.with_fn else case.judge(got, *args)
        except NotImplementedError as err:
            name, task = getattr(fn, "__name__", "your function"), f" ({err})" if str(err) else ""
            result.not_implemented = (
                f"`{name}` is not implemented yet: it raised NotImplementedError{task}. Replace the line "
                "`raise NotImplementedError(...)` in the exercise cell with your code, run that cell again, then "
                "run this check.")
            return result
        except Exception as err:  # noqa: BLE001 - any error of the student's code is feedback
            problem = f"your function raised {type(err).__name__}: {err}"
        finally:
            sys.setprofile(old)
        result.cases.append((case.name, problem))
    if used:
        result.shortcut = (f"your function calls {used[0]}, the library's own answer: write the computation "
                           "yourself (no points for this exercise)")
    return result


def _check(exercise: str, fn: Callable) -> bool:
    """Print one line per case; return True when all pass, else raise AssertionError listing the failures."""
    r = evaluate(exercise, fn)
    print(f"check_{exercise}")
    if r.not_implemented:
        print(f"  ✗ {r.not_implemented}")
        raise AssertionError(f"check_{exercise}: {r.not_implemented}")
    for case, problem in r.cases:
        print(f"  ✓ {case}" if problem is None else f"  ✗ {case}: {problem}")
    failures = [f"{c}: {p}" for c, p in r.cases if p is not None] + ([r.shortcut] if r.shortcut else [])
    if r.shortcut:
        print(f"  ✗ {r.shortcut}")
    if failures:
        raise AssertionError(f"check_{exercise}: {len(failures)} problem(s) in {len(r.cases)} case(s):\n  - "
                             + "\n  - ".join(failures))
    print(f"  all {len(r.cases)} cases passed")
    return True


# ---- comparing the student's answer -----------------------------------------------------------------------------

def _to_tensor(got, what: str = "result") -> torch.Tensor:
    """The student's result as a float64 CPU tensor (accepts tensors, numpy arrays, numbers)."""
    if isinstance(got, torch.Tensor):
        return got.detach().cpu().to(torch.float64)
    if isinstance(got, (np.ndarray, np.generic, float, int)) and not isinstance(got, bool):
        return torch.as_tensor(np.asarray(got, dtype=np.float64))
    raise TypeError(f"the {what} must be a torch.Tensor, got {type(got).__name__}")


def _compare(got, expected: torch.Tensor, *, atol: float, rtol: float = 0.0, what: str = "result",
             shape_hint: str = "") -> Optional[str]:
    """``None`` if ``got`` matches ``expected`` (shape and values within ``atol + rtol |expected|``), else a message."""
    try:
        g, e = _to_tensor(got, what), expected.detach().cpu().to(torch.float64)
    except TypeError as err:
        return str(err)
    if tuple(g.shape) != tuple(e.shape):
        return f"expected {what} of shape {tuple(e.shape)}{f' ({shape_hint})' if shape_hint else ''}, got shape " \
               f"{tuple(g.shape)}"
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
    """A judge comparing the answer with ``expected(*inputs)``."""
    return lambda got, *args: _compare(got, expected(*args), atol=atol, rtol=rtol, what=what, shape_hint=hint)


def _as_float(got, what: str = "result") -> float:
    """The student's result as one float; TypeError naming what came back otherwise."""
    size = got.numel() if isinstance(got, torch.Tensor) else np.size(got) if isinstance(got, np.ndarray) else 1
    if size != 1 or isinstance(got, bool) or not isinstance(got, (int, float, np.generic, np.ndarray, torch.Tensor)):
        raise TypeError(f"the {what} must be a single number, got {type(got).__name__} "
                        f"{tuple(getattr(got, 'shape', ()))}")
    return float(got.detach().cpu()) if isinstance(got, torch.Tensor) else float(got)


# ---- small models with answers in closed form (the notebook's random stream is untouched) -------------------------

class _Linear(nn.Module):
    """Logits ``W vec(x) + b``: gradient ``W_t``, IG ``W_t ⊙ (x - x0)``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight.clone().float()), nn.Parameter(bias.clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


class _Quadratic(nn.Module):
    """Logits ``f_c(v) = vᵀ A_c v / 2 + w_cᵀ v`` (``A_c`` symmetric): gradient ``A_c v + w_c``."""

    def __init__(self, a: torch.Tensor, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A", ((a + a.transpose(1, 2)) / 2).float())
        self.register_buffer("w", w.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)
        return 0.5 * torch.einsum("nd,cde,ne->nc", v, self.A, v) + v @ self.w.T


def _linear_model(d: int, n_classes: int, seed: int) -> _Linear:
    g = torch.Generator().manual_seed(seed)
    return _Linear(torch.randn(n_classes, d, generator=g), torch.randn(n_classes, generator=g)).eval()


def _quadratic_model(d: int, n_classes: int, seed: int) -> _Quadratic:
    g = torch.Generator().manual_seed(seed)
    return _Quadratic(0.5 * torch.randn(n_classes, d, d, generator=g), torch.randn(n_classes, d, generator=g)).eval()


def _softplus_net(d: int, n_classes: int, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(d, 12), nn.Softplus(), nn.Linear(12, n_classes)).eval()


def _images(n: int, side: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


def _t(*rows) -> torch.Tensor:
    return torch.tensor(rows)


# ---- 01: integrated gradients -------------------------------------------------------------------------------------

def _ig_quadratic(model, x, b, target, n_steps) -> Callable[..., Optional[str]]:
    """IG of the quadratic model, ``(x - x') ⊙ (A_t (x + x')/2 + w_t)``, judged within a left/right Riemann sum's
    error ``(x - x')_i (A (x - x'))_i / (2 n_steps)`` (midpoint and trapezoid rules are exact)."""
    v, v0 = x.flatten(1).double(), b.flatten(1).double()
    a, w = model.A.double()[target], model.w.double()[target]
    expected = ((v - v0) * (torch.einsum("nde,ne->nd", a, (v + v0) / 2) + w)).reshape_as(x)
    curvature = ((v - v0) * torch.einsum("nde,ne->nd", a, v - v0)).abs().max()
    return _tensor(lambda *_: expected, "IG", atol=float(curvature) / n_steps + 1e-4, hint="like x")


def _ig_completeness(got, model, x, b, target, n_steps) -> Optional[str]:
    try:
        g = _to_tensor(got, "IG")
    except TypeError as err:
        return str(err)
    if tuple(g.shape) != tuple(x.shape):
        return f"expected IG of shape {tuple(x.shape)} (like x), got shape {tuple(g.shape)}"
    with torch.no_grad():
        gap = (model(x) - model(b)).gather(1, target[:, None])[:, 0].double()
    return _compare(g.flatten(1).sum(1), gap, atol=2e-3, rtol=0.03,
                    what="sum of IG over pixels (should equal f_t(x) - f_t(baseline))")


def _cases_integrated_gradients() -> List[_Case]:
    r"""Check ``integrated_gradients(model, x, baseline, target, n_steps) -> Tensor like x``.

    :math:`\mathrm{IG}_i = (x_i - x'_i) \int_0^1 \partial_i f_t(x' + \alpha (x - x'))\, d\alpha`, one row per image and
    per-row targets. Cases: a linear model (IG = ``W_t ⊙ (x - x')`` exactly, zero and non-zero baselines); a quadratic
    model (IG = ``(x - x') ⊙ (A_t (x + x')/2 + w_t)``, any Riemann rule within ``O(1/n_steps)``); completeness
    (``Σ IG = f_t(x) - f_t(x')``) on a small softplus network.
    """
    linear = _tensor(lambda m, x, b, t, n: m.weight.detach()[t].reshape_as(x) * (x - b), "IG", 1e-4, 1e-3, "like x")
    return [
        _Case("linear model, zero baseline: IG = W_t * x",
              lambda: (_linear_model(9, 3, 1), _images(2, 3, 2), torch.zeros(2, 1, 3, 3), _t(0, 2), 16), linear),
        _Case("linear model, non-zero baseline: IG = W_t * (x - baseline), per-row targets",
              lambda: (_linear_model(9, 3, 1), _images(2, 3, 2), _images(2, 3, 3), _t(0, 2), 16), linear),
        _Case("quadratic model: IG = (x - x') * (A_t (x + x')/2 + w_t)",
              lambda: (_quadratic_model(4, 2, 4), _images(3, 2, 5), 0.2 * _images(3, 2, 6), _t(1, 0, 1), 64),
              lambda got, *args: _ig_quadratic(*args)(got)),
        _Case("completeness on a small softplus network: sum(IG) = f_t(x) - f_t(x')",
              lambda: (_softplus_net(16, 4, 7), _images(4, 4, 8), torch.zeros(4, 1, 4, 4), _t(0, 1, 2, 3), 128),
              _ig_completeness),
    ]


# ---- 01: ABC sampling weights -------------------------------------------------------------------------------------

def _expected_abc_weights(attr: torch.Tensor, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|A_i / (x_i - b_i)| normalised per row, 0 where x_i == b_i (computed with numpy, feature by feature)."""
    a_np, x_np, b_np = (t.reshape(t.shape[0], -1).double().numpy() for t in (attr, x, b))
    out = np.zeros_like(a_np)
    for n in range(a_np.shape[0]):
        for i in range(a_np.shape[1]):
            if x_np[n, i] != b_np[n, i]:
                out[n, i] = abs(a_np[n, i] / (x_np[n, i] - b_np[n, i]))
        out[n] /= out[n].sum()
    return torch.from_numpy(out)


def _sparse_batch() -> tuple:
    g = torch.Generator().manual_seed(11)
    x = torch.rand(3, 1, 6, 6, generator=g)
    x[x < 0.6] = 0.0  # like MNIST: mostly background equal to the zero baseline
    return torch.randn(3, 1, 6, 6, generator=g), x, torch.zeros_like(x)


def _weights_sum_to_one(got, a, x, b) -> Optional[str]:
    return (_compare(got, _expected_abc_weights(a, x, b), atol=1e-5, what="weights", shape_hint="N x d with d = 36")
            or _compare(_to_tensor(got).sum(1), torch.ones(3, dtype=torch.float64), atol=1e-5, what="row sums"))


def _cases_abc_weights() -> List[_Case]:
    r"""Check ``abc_weights(attributions, x, baseline) -> Tensor N x d``.

    ABC (Jha et al. 2019) mutates feature ``i`` with probability
    :math:`p_i = |A_i / (x_i - x'_i)| / \sum_j |A_j / (x_j - x'_j)|` and :math:`p_i = 0` where :math:`x_i = x'_i`
    (nothing to mutate there; no division by zero). Rows are flattened images (``d = C·H·W``) and sum to 1.
    """
    x0 = _t([[[1.0, 0.5], [0.0, 0.25]]])
    x1 = _t([[[1.0, 0.5], [0.0, 0.75]]])
    g = torch.Generator().manual_seed(12)
    x2 = torch.rand(2, 1, 3, 3, generator=g) + 0.1
    a2 = torch.randn(2, 1, 3, 3, generator=g)
    return [
        # |0.5/1|, |-0.5/0.5|, 0 (x == baseline), |0.1/0.25| = 0.5, 1, 0, 0.4 -> / 1.9
        _Case("hand case, zero baseline: weights 0.5, 1, 0, 0.4 normalised",
              lambda: (_t([[[0.5, -0.5], [0.0, 0.1]]]), x0, torch.zeros_like(x0)),
              _tensor(lambda *_: _t([0.5, 1.0, 0.0, 0.4]) / 1.9, "weights",
                      hint="N x d, one flattened row per image")),
        # x - b = 0.5, 0 (excluded), -0.5, 0.25 -> |A/(x-b)| = 0.5, 0, 0.5, 2 -> / 3
        _Case("hand case, baseline 0.5: feature equal to the baseline gets weight 0",
              lambda: (_t([[[0.25, 0.3], [-0.25, 0.5]]]), x1, torch.full_like(x1, 0.5)),
              _tensor(lambda *_: _t([0.5, 0.0, 0.5, 2.0]) / 3.0, "weights")),
        _Case("batch of 3 sparse images: N x d, rows sum to 1, no NaN where x == baseline", _sparse_batch,
              _weights_sum_to_one),
        _Case("invariant to the sign and scale of the attributions", lambda: (a2, x2, torch.zeros_like(x2)),
              lambda got, a, x, b, fn: _compare(fn(-3.0 * a, x, b), _to_tensor(got), atol=1e-5,
                                                what="weights for attributions * (-3)",
                                                shape_hint="weights must not depend on the sign or scale of the "
                                                           "attributions"), with_fn=True),
    ]


# ---- 04: infidelity (local units) and the beta rescaling ----------------------------------------------------------

def _infidelity_by_loop(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, pert: torch.Tensor,
                        target: torch.Tensor) -> torch.Tensor:
    """Reference: one forward pass per (image, sample), in float64."""
    out = torch.zeros(x.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for n in range(x.shape[0]):
            t = int(target[n])
            fx = float(model(x[n:n + 1])[0, t])
            for s in range(pert.shape[1]):
                i = pert[n, s]
                diff = fx - float(model(x[n:n + 1] - i[None])[0, t])
                out[n] += (float((i.double() * attr[n].double()).sum()) - diff) ** 2
    return out / pert.shape[1]


def _linear_case(seed: int, n: int, s: int, scale: float, target: torch.Tensor, delta: bool) -> tuple:
    """A linear model, images, the explanation ``W_t (+ δ)`` and ``scale``-sized Gaussian perturbations."""
    model, x = _linear_model(16, 3, seed), _images(n, 4, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    attr = model.weight.detach()[target].reshape_as(x) + (torch.randn(n, 1, 4, 4, generator=g) if delta else 0.0)
    return model, x, attr, scale * torch.randn(n, s, 1, 4, 4, generator=g), target


def _cases_infidelity_estimate() -> List[_Case]:
    r"""Check ``infidelity_estimate(model, x, attributions, perturbations, target) -> Tensor N``.

    Local units (Yeh et al. 2019): with perturbations ``I`` of shape ``N x S x (x.shape[1:])``,
    :math:`\mathrm{INFD}_n = \frac1S \sum_s \big(\sum_i I_{s,i} \Phi_i - (f_t(x) - f_t(x - I_s))\big)^2`.
    Cases: a hand case; a linear model whose gradient has infidelity exactly 0; a linear model with a wrong
    explanation (``mean_s (I_s · δ)^2``); a quadratic model against a loop over samples.
    """
    def wrong(model, x, attr, pert, target):
        delta = attr.double() - model.weight.detach().double()[target].reshape_as(x)
        return ((pert.double() * delta[:, None]).flatten(2).sum(2) ** 2).mean(1)

    def quadratic():
        g = torch.Generator().manual_seed(29)
        attr = torch.randn(2, 1, 3, 3, generator=g)
        return _quadratic_model(9, 2, 27), _images(2, 3, 28), attr, 0.3 * torch.randn(2, 6, 1, 3, 3, generator=g), \
            _t(0, 1)

    per_image = "one value per image, the mean over the S samples"
    return [
        # I·Φ = 2, f(x) - f(x - I) = 2 + 3 = 5 -> (2 - 5)^2 = 9
        _Case("hand case: I·Φ = 2, f(x) - f(x - I) = 5, infidelity (2 - 5)^2 = 9",
              lambda: (_Linear(_t([2.0, 3.0], [1.0, -1.0]), torch.zeros(2)).eval(), _t([[[1.0, 1.0]]]),
                       _t([[[1.0, 1.0]]]), _t([[[[1.0, 1.0]]]]), _t(0)),
              _tensor(lambda *_: _t(9.0), "infidelity", 1e-4, hint="one value per image")),
        _Case("linear model: the gradient W_t has infidelity 0", lambda: _linear_case(21, 2, 8, 0.1, _t(2, 0), False),
              _tensor(lambda *a: torch.zeros(2, dtype=torch.float64), "infidelity", 1e-4, hint=per_image)),
        _Case("linear model, explanation W_t + δ: infidelity = mean_s (I_s·δ)^2",
              lambda: _linear_case(24, 3, 10, 0.5, _t(1, 1, 0), True),
              _tensor(wrong, "infidelity", 1e-4, 1e-3, hint=per_image)),
        _Case("quadratic model, per-row targets: against a loop over samples", quadratic,
              _tensor(_infidelity_by_loop, "infidelity", 1e-4, 1e-3)),
    ]


def _beta_lstsq(dot: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    d, y = dot.double().numpy(), diff.double().numpy()
    return torch.tensor([np.linalg.lstsq(d[n][:, None], y[n], rcond=None)[0][0] for n in range(d.shape[0])])


def _cases_beta_rescale() -> List[_Case]:
    r"""Check ``beta_rescale(dot, diff) -> Tensor N``.

    The scale :math:`\beta` that minimises :math:`\frac1S\sum_s (\beta\, I_s^\top\Phi - (f(x) - f(x - I_s)))^2` is
    :math:`\beta^* = \mathrm{mean}_s(\text{dot}\cdot\text{diff}) / \mathrm{mean}_s(\text{dot}^2)`, one per row of
    the ``N x S`` inputs. Checked by hand cases and against a least-squares fit per row.
    """
    def hand(name: str, dot, diff, beta) -> _Case:
        return _Case(name, lambda: (_t(*dot), _t(*diff)), _tensor(lambda *_: _t(*beta), "beta", hint="one beta per row"))

    def batch():
        g = torch.Generator().manual_seed(31)
        dot = torch.randn(4, 50, generator=g)
        noise = torch.randn(4, 50, generator=g)
        return dot, _t(0.5, -1.0, 2.0, 0.0)[:, None] * dot + 0.3 * noise

    return [
        hand("hand case: diff = 2 * dot gives beta = 2", [[1.0, 2.0]], [[2.0, 4.0]], [2.0]),
        hand("hand case: dot = [1, 2], diff = [1, 6] gives beta = 13/5 (not the mean of the ratios)",
             [[1.0, 2.0]], [[1.0, 6.0]], [2.6]),
        hand("a row whose dot is all zero gets beta = 0 (not NaN)", [[0.0, 0.0], [1.0, 1.0]], [[1.0, 2.0], [1.0, 1.0]],
             [0.0, 1.0]),
        hand("hand case: dot = [1, -1], diff = [1, 1] gives beta = 0", [[1.0, -1.0]], [[1.0, 1.0]], [0.0]),
        _Case("batch of 4 rows x 50 samples: the least-squares scale of each row", batch,
              _tensor(_beta_lstsq, "beta", 1e-4, 1e-4,
                      hint="one beta per row: average over the S columns, not over rows")),
    ]


# ---- 06: temperature scaling and AURC -----------------------------------------------------------------------------

def _nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(1, keepdims=True)
    return float(-(z[np.arange(len(labels)), labels] - np.log(np.exp(z).sum(1))).mean())


def _synthetic_logits(sharpness: float, seed: int, n: int = 2000, c: int = 10) -> tuple:
    """Logits ``sharpness * z`` with labels drawn from ``softmax(z)``: the best temperature is about ``sharpness``."""
    g = torch.Generator().manual_seed(seed)
    z = 2.0 * torch.randn(n, c, generator=g)
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=g)[:, 0]
    return (sharpness * z).float(), labels


def _judge_temperature(got, logits: torch.Tensor, labels: torch.Tensor) -> Optional[str]:
    """Within 2% of the NLL-minimising ``T`` (a bounded scalar minimisation over log T), or within 1e-4 of its NLL."""
    from scipy.optimize import minimize_scalar

    try:
        t = _as_float(got, "temperature")
    except TypeError as err:
        return str(err)
    if not np.isfinite(t) or t <= 0:
        return f"the temperature must be a positive finite number, got {t}"
    lg, lb = logits.double().numpy(), labels.numpy()
    best = float(np.exp(minimize_scalar(lambda u: _nll(lg, lb, float(np.exp(u))), bounds=(np.log(0.01), np.log(100.0)),
                                        method="bounded", options={"xatol": 1e-8}).x))
    nll_got, nll_best = _nll(lg, lb, t), _nll(lg, lb, best)
    if abs(t - best) <= 0.02 * best or nll_got - nll_best <= 1e-4:
        return None
    return (f"expected T = {best:.4f} (NLL {nll_best:.4f}), got T = {t:.4f} (NLL {nll_got:.4f}); "
            f"minimise the NLL of softmax(logits / T), e.g. over log T")


def _cases_fit_temperature() -> List[_Case]:
    r"""Check ``fit_temperature(logits, labels) -> float``.

    The temperature :math:`T > 0` minimising the mean negative log-likelihood
    :math:`-\frac1N \sum_n \log \mathrm{softmax}(z_n / T)_{y_n}` (Guo et al. 2017). Checked on synthetic logits that
    are too sharp (best ``T`` about 3), too flat (about 0.5) and calibrated (about 1), against a bounded scalar
    minimisation; a result within 2% of the best ``T``, or with an NLL within 1e-4 of the best, passes.
    """
    return [_Case(f"{what} logits (best T about {s:g})", lambda s=s, seed=seed: _synthetic_logits(s, seed),
                  _judge_temperature)
            for what, s, seed in (("overconfident", 3.0, 41), ("underconfident", 0.5, 42), ("calibrated", 1.0, 43))]


def _aurc_by_loop(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Reference AURC with distinct confidences: mean over k of the error rate of the k most confident."""
    order = sorted(range(len(confidence)), key=lambda i: -confidence[i])
    total, errors = 0.0, 0
    for k, i in enumerate(order, start=1):
        errors += 0 if correct[i] else 1
        total += errors / k
    return total / len(order)


def _judge_aurc(got, conf: np.ndarray, correct: np.ndarray) -> Optional[str]:
    try:
        value = _as_float(got, "AURC")
    except TypeError as err:
        return str(err)
    expected = _aurc_by_loop(conf, correct)
    if abs(value - expected) <= 1e-6:
        return None
    where = (f"confidence={conf.tolist()}, correct={correct.tolist()}: " if conf.size < 10 else "")
    return f"{where}expected {expected:.6f}, got {value:.6f}" + (
        "" if where else " (the inputs are not sorted: sort by decreasing confidence)")


def _random_predictions() -> tuple:
    rng = np.random.default_rng(51)
    conf = rng.permutation(500) / 500.0 + rng.uniform(0, 1e-3)
    return conf, rng.uniform(size=500) < 0.3 + 0.6 * conf  # confident predictions are more often right


def _cases_aurc() -> List[_Case]:
    r"""Check ``aurc(confidence, correct) -> float``.

    Sort by decreasing confidence; the risk at coverage ``k/N`` is the error rate of the ``k`` most confident
    predictions; :math:`\mathrm{AURC} = \frac1N\sum_{k=1}^N \mathrm{risk}(k)` (Geifman et al. 2019). Inputs are numpy
    arrays (``correct`` boolean); the cases have distinct confidences (no ties).
    """
    def hand(name: str, conf: Sequence[float], corr: Sequence[bool]) -> _Case:
        return _Case(name, lambda: (np.array(conf, dtype=np.float64), np.array(corr, dtype=bool)), _judge_aurc)

    return [
        hand("hand case, errors least confident: risks 0, 0, 1/3, 1/2 -> 0.208333", [0.9, 0.8, 0.7, 0.6],
             [True, True, False, False]),
        hand("hand case, errors most confident: risks 1, 1, 2/3, 1/2 -> 0.791667", [0.9, 0.8, 0.7, 0.6],
             [False, False, True, True]),
        hand("hand case, unsorted input: confidence [0.2, 0.9, 0.5], correct [F, T, T]", [0.2, 0.9, 0.5],
             [False, True, True]),
        hand("all correct gives 0", [0.3, 0.1, 0.7], [True, True, True]),
        hand("all wrong gives 1", [0.3, 0.1, 0.7], [False, False, False]),
        _Case("500 random predictions: against a loop over k", _random_predictions, _judge_aurc),
    ]


_CASES: Dict[str, Callable[[], List[_Case]]] = {name: globals()[f"_cases_{name}"] for name in EXERCISES}


def _make_check(exercise: str) -> Callable[[Callable], bool]:
    def check(fn: Callable) -> bool:
        return _check(exercise, fn)

    check.__name__ = check.__qualname__ = f"check_{exercise}"
    check.__doc__ = _CASES[exercise].__doc__
    return check


check_integrated_gradients = _make_check("integrated_gradients")
check_abc_weights = _make_check("abc_weights")
check_infidelity_estimate = _make_check("infidelity_estimate")
check_beta_rescale = _make_check("beta_rescale")
check_fit_temperature = _make_check("fit_temperature")
check_aurc = _make_check("aurc")
