"""Interactive explorers (ipywidgets) for the notebooks: move a control, see the measurement change.

* :func:`abc_explorer` (notebook 01): pick a digit, an attribution method, a baseline, the mutation budget and the
  number of samples ``S``; see the attribution heat map, the sampling probabilities, a few sampled mutations with
  the label the model gives them, and the ABC value.
* :func:`smoothing_explorer` (notebook 05): infidelity and max-sensitivity of a smoothed explanation against the
  smoothing (SmoothGrad) radius, for a choice of kernel; the smoothed heat map at the chosen radius.
* :func:`risk_coverage_explorer` (notebook 06): the risk-coverage curve of every confidence method with a coverage
  slider and a table of the selective risk at that coverage.

Each explorer is an ``ipywidgets.VBox`` (so ``display(explorer)`` shows it) whose controls call one plain method,
``update(**values)``: it sets the controls, recomputes, redraws, stores and returns a dict of the numbers it shows
(``explorer.result``). The figure is a matplotlib ``Figure`` rendered to PNG into an ``ipywidgets.Image``
(``explorer.figure`` is the last one), so the callbacks run and are tested without a browser or a kernel.

Expensive work is cached: the ABC explorer caches per setting; the smoothing explorer computes a whole curve per
(kernel, method) once, and the radius slider only moves the marker and redraws one heat map.
"""

from __future__ import annotations

import html
import io
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

try:  # the explorers need ipywidgets; the rest of the package does not
    import ipywidgets as widgets
except ImportError:  # pragma: no cover - ipywidgets is a runtime dependency
    widgets = None

__all__ = ["abc_explorer", "smoothing_explorer", "risk_coverage_explorer", "AbcExplorer", "SmoothingExplorer",
           "RiskCoverageExplorer", "figure_png"]


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """PNG bytes of a matplotlib figure (no pyplot state involved)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _image(t: torch.Tensor) -> np.ndarray:
    a = t.detach().float().cpu().numpy()
    return a.reshape(a.shape[-2], a.shape[-1]) if a.ndim >= 2 else a


def _heat(ax, a: np.ndarray, title: str, cmap: str = "RdBu_r", symmetric: bool = True) -> None:
    lim = float(np.abs(a).max()) or 1.0
    ax.imshow(a, cmap=cmap, vmin=-lim if symmetric else 0.0, vmax=lim)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


if widgets is not None:
    _Base = widgets.VBox
else:  # pragma: no cover
    _Base = object


class _Explorer(_Base):
    """A VBox of ``controls`` + an info line + the figure; every control change calls :meth:`update`."""

    def __init__(self, controls: Sequence["widgets.Widget"], title: str) -> None:
        if widgets is None:  # pragma: no cover
            raise ImportError("the explorers need ipywidgets: pip install ipywidgets")
        self.controls: Dict[str, widgets.Widget] = {c.description: c for c in controls}
        self.info = widgets.HTML(value="")
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.result: Dict[str, Any] = {}
        self.figure: Optional[Figure] = None
        self._updating = False
        header = widgets.HTML(value=f"<b>{html.escape(title)}</b>")
        rows = [widgets.HBox(list(controls[i:i + 3])) for i in range(0, len(controls), 3)]
        super().__init__([header, *rows, self.info, self.image])
        for c in controls:
            c.observe(self._on_change, names="value")

    # the parameter name each control sets (subclasses fill ``self._names``: control -> keyword)
    _names: Dict[str, str] = {}

    def values(self) -> Dict[str, Any]:
        """The current setting of every control, as ``update`` keywords."""
        return {self._names[k]: c.value for k, c in self.controls.items()}

    def _on_change(self, change) -> None:
        if self._updating:
            return
        try:
            self.update()
        except Exception as err:  # noqa: BLE001 - shown to the person moving the slider, not swallowed silently
            self.info.value = f"<span style='color:#b00'>{html.escape(type(err).__name__)}: {html.escape(str(err))}</span>"

    def update(self, **values: Any) -> Dict[str, Any]:
        """Set the given controls (keywords as in :meth:`values`), recompute, redraw; return the numbers shown."""
        by_name = {v: k for k, v in self._names.items()}
        unknown = set(values) - set(by_name)
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}; valid: {sorted(by_name)}")
        self._updating = True
        try:
            for name, v in values.items():
                self.controls[by_name[name]].value = v
        finally:
            self._updating = False
        params = self.values()
        self.info.value = "<i>computing ...</i>"
        result = self.compute(**params)
        fig = self.render(result)
        png = figure_png(fig)
        self.image.value = png
        self.image.width = str(int.from_bytes(png[16:20], "big"))  # natural size: no blurry up-scaling
        self.info.value = self.describe(result)
        self.result, self.figure = result, fig
        return result

    def compute(self, **params: Any) -> Dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def render(self, result: Mapping[str, Any]) -> Figure:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self, result: Mapping[str, Any]) -> str:
        return ""


def _slider(kind, description: str, **kw):
    return kind(description=description, continuous_update=False, style={"description_width": "initial"}, **kw)


def _check_batch(x: torch.Tensor, y: Optional[torch.Tensor]) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty N x ... tensor of images, got {getattr(x, 'shape', type(x))}")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape[0] != x.shape[0]):
        raise ValueError(f"y must be None or a tensor of {x.shape[0]} labels, got {getattr(y, 'shape', type(y))}")


# ----------------------------------------------------------------------------------------------------------------
# 01: ABC
# ----------------------------------------------------------------------------------------------------------------

class AbcExplorer(_Explorer):
    """See :func:`abc_explorer`."""

    _names = {"digit": "index", "method": "method", "baseline": "baseline", "budget": "budget", "S": "n_samples"}

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                 n_show: int = 6, seed: int = 0, **abc_options: Any) -> None:
        from .abc import DEFAULT_BUDGET, DEFAULT_SAMPLES
        from .attribution import BASELINES, METHODS

        _check_batch(x, y)
        self.model, self.x, self.y = model, x, y
        self.n_show, self.seed, self.abc_options = int(n_show), int(seed), abc_options
        self._cache: Dict[tuple, Dict[str, Any]] = {}
        controls = [
            _slider(widgets.IntSlider, "digit", min=0, max=x.shape[0] - 1, value=0),
            widgets.Dropdown(description="method", options=list(METHODS), value="ig"),
            widgets.Dropdown(description="baseline", options=list(BASELINES), value="zero"),
            _slider(widgets.FloatLogSlider, "budget", base=10, min=0.0, max=2.6, step=0.05,
                    value=float(DEFAULT_BUDGET), readout_format=".3g"),
            _slider(widgets.IntSlider, "S", min=10, max=500, step=10, value=int(DEFAULT_SAMPLES)),
        ]
        super().__init__(controls, "ABC: attribution-based confidence of one digit")
        self.update()

    def compute(self, *, index: int, method: str, baseline: str, budget: float, n_samples: int) -> Dict[str, Any]:
        """ABC of digit ``index`` with the given setting, its attribution, and the first ``n_show`` mutations."""
        from .abc import abc_confidence
        from .attribution import MULTI_REFERENCE, make_baseline, make_references

        key = (int(index), method, baseline, float(budget), int(n_samples))
        if key in self._cache:
            return self._cache[key]
        xi = self.x[index:index + 1]
        det = abc_confidence(self.model, xi, method=method, baseline=baseline, n_samples=int(n_samples),
                             budget=float(budget), seed=self.seed, return_details=True, **self.abc_options)
        xc = xi.detach().cpu()
        if method in MULTI_REFERENCE:
            refs = make_references(baseline, xc, self.abc_options.get("n_references", 32), seed=self.seed)
        else:
            refs = make_baseline(baseline, xc, seed=self.seed).unsqueeze(1)
        k = min(self.n_show, int(n_samples))
        ref = refs[0, det.reference_index[0, :k]]                                    # k x ...
        mutations = torch.where(det.masks[0, :k], ref, xc.expand(k, *xc.shape[1:]))
        pred = int(det.predicted[0])
        result = {
            "index": int(index), "method": method, "baseline": baseline, "budget": float(budget),
            "n_samples": int(n_samples), "abc": float(det.confidence[0]), "predicted": pred,
            "label": None if self.y is None else int(self.y[index]),
            "attribution": det.attributions[0].numpy(), "weights": det.inclusion[0].reshape(xc.shape[1:]).numpy(),
            "mutations": mutations, "mutation_labels": det.labels[0, :k].tolist(),
            "kept": int((det.labels[0] == pred).sum()),
            "mutated_features": det.masks[0].flatten(1).sum(1).float().mean().item(),
        }
        self._cache[key] = result
        return result

    def render(self, r: Mapping[str, Any]) -> Figure:
        k = len(r["mutation_labels"])
        fig = Figure(figsize=(1.7 * (3 + k), 2.3))
        axes = fig.subplots(1, 3 + k)
        label = "" if r["label"] is None else f"label {r['label']}, "
        axes[0].imshow(_image(self.x[r["index"]]), cmap="gray", vmin=0, vmax=1)
        axes[0].set_title(f"{label}pred {r['predicted']}", fontsize=9)
        axes[0].axis("off")
        _heat(axes[1], _image(torch.as_tensor(r["attribution"])), f"{r['method']} attribution")
        _heat(axes[2], _image(torch.as_tensor(r["weights"])), "P(mutate pixel)", cmap="magma", symmetric=False)
        for j in range(k):
            ax = axes[3 + j]
            ax.imshow(_image(r["mutations"][j]), cmap="gray", vmin=0, vmax=1)
            same = r["mutation_labels"][j] == r["predicted"]
            ax.set_title(f"sample {j + 1}: {r['mutation_labels'][j]}", fontsize=9, color="green" if same else "red")
            ax.axis("off")
        fig.suptitle(f"ABC = {r['abc']:.2f}: {r['kept']} of {r['n_samples']} mutated copies keep the prediction "
                     f"{r['predicted']} (budget {r['budget']:g}, baseline {r['baseline']})", fontsize=10)
        fig.tight_layout()
        return fig

    def describe(self, r: Mapping[str, Any]) -> str:
        return (f"ABC = <b>{r['abc']:.3f}</b> &nbsp; ({r['kept']}/{r['n_samples']} samples keep the prediction "
                f"{r['predicted']}; {r['mutated_features']:.0f} pixels mutated per sample on average)")


def abc_explorer(model: torch.nn.Module, x: torch.Tensor, y: Optional[torch.Tensor] = None, **options: Any
                 ) -> AbcExplorer:
    """Explore ABC on the digits ``x`` (``N x 1 x 28 x 28``; ``y`` optional labels, shown in the titles).

    Controls: the digit, the attribution ``method`` and ``baseline`` (:mod:`helpers.attribution`), the ``budget``
    (expected mutated pixels per sample) and ``S`` (samples). Shows the digit, the attribution heat map, the
    per-pixel mutation probability, the first few sampled mutations (title: the model's label, green when it keeps
    the prediction) and ``ABC = fraction of the S samples that keep the prediction``
    (:func:`helpers.abc.abc_confidence` with ``return_details=True``, whose attributions are those of
    :func:`helpers.attribution.attribute`).

    ``options``: ``n_show`` (mutations shown, default 6), ``seed``, and extra keywords for ``abc_confidence``
    (e.g. ``n_steps``). Call ``.update(index=3, method="grad", baseline="blur", budget=100, n_samples=200)`` to
    change the setting from code; it returns the numbers shown.
    """
    return AbcExplorer(model, x, y, **options)


# ----------------------------------------------------------------------------------------------------------------
# 05: smoothing radius vs infidelity and sensitivity
# ----------------------------------------------------------------------------------------------------------------

DEFAULT_RADII = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)


class SmoothingExplorer(_Explorer):
    """See :func:`smoothing_explorer`."""

    _names = {"kernel": "kernel", "method": "method", "SG radius": "radius", "digit": "index"}

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                 radii: Sequence[float] = DEFAULT_RADII, perturbation=None, methods: Sequence[str] = ("grad", "gbp"),
                 n_smooth: int = 12, n_infidelity: int = 200, sensitivity_radius: float = 0.1,
                 n_sensitivity: int = 5, normalize: bool = False, seed: int = 0) -> None:
        from .fidelity import KERNELS, Gaussian

        _check_batch(x, y)
        if not radii or any(float(r) < 0 for r in radii):
            raise ValueError(f"radii must be a non-empty list of radii >= 0, got {radii!r}")
        self.model, self.x, self.y = model, x, y
        self.radii = tuple(sorted(float(r) for r in radii))
        self.perturbation = perturbation if perturbation is not None else Gaussian(0.1)
        self.n_smooth, self.n_infidelity, self.seed = int(n_smooth), int(n_infidelity), int(seed)
        self.sensitivity_radius, self.n_sensitivity, self.normalize = float(sensitivity_radius), int(n_sensitivity), normalize
        self._curves: Dict[tuple, Dict[str, np.ndarray]] = {}
        self._targets: Optional[torch.Tensor] = None
        default_radius = min(self.radii, key=lambda r: abs(r - 0.1))
        controls = [
            widgets.Dropdown(description="kernel", options=list(KERNELS), value=KERNELS[0]),
            widgets.Dropdown(description="method", options=list(methods), value=methods[0]),
            widgets.SelectionSlider(description="SG radius", options=list(self.radii), value=default_radius,
                                    continuous_update=False),
            _slider(widgets.IntSlider, "digit", min=0, max=x.shape[0] - 1, value=0),
        ]
        super().__init__(controls, "Smoothing an explanation: infidelity and sensitivity against the radius")
        self.update()

    def _target(self) -> torch.Tensor:
        if self._targets is None:
            from .validation import model_device

            with torch.no_grad():  # not inference_mode: the targets enter autograd graphs later
                self._targets = self.model(self.x.to(model_device(self.model))).argmax(1)
        return self._targets

    def curve(self, kernel: str, method: str) -> Dict[str, np.ndarray]:
        """Mean infidelity and max-sensitivity over ``x`` for every radius (cached per kernel and method)."""
        from .fidelity import explainer, infidelity, sensitivity_max, smooth

        key = (kernel, method)
        if key not in self._curves:
            base = explainer(self.model, method)
            t = self._target()
            xd = self.x.to(t.device)
            phis, sens = {}, []
            for r in self.radii:
                fn = smooth(base, kernel, r, self.n_smooth, seed=self.seed) if r > 0 else base
                phis[str(r)] = fn(xd, t)
                sens.append(float(sensitivity_max(fn, xd, self.sensitivity_radius, self.n_sensitivity,
                                                  seed=self.seed + 2, target=t).mean()))
            inf = infidelity(self.model, xd, phis, self.perturbation, target=t, n_samples=self.n_infidelity,
                             normalize=self.normalize, seed=self.seed + 1)
            self._curves[key] = {"radii": np.array(self.radii), "infidelity": np.array([float(inf[str(r)].mean())
                                                                                         for r in self.radii]),
                                 "sensitivity": np.array(sens), "phi": {r: phis[str(r)].cpu() for r in self.radii}}
        return self._curves[key]

    def compute(self, *, kernel: str, method: str, radius: float, index: int) -> Dict[str, Any]:
        c = self.curve(kernel, method)
        j = self.radii.index(float(radius))
        best = int(np.argmin(c["infidelity"]))
        return {"kernel": kernel, "method": method, "radius": float(radius), "index": int(index),
                "radii": c["radii"], "infidelity_curve": c["infidelity"], "sensitivity_curve": c["sensitivity"],
                "infidelity": float(c["infidelity"][j]), "sensitivity": float(c["sensitivity"][j]),
                "best_radius": float(self.radii[best]), "explanation": c["phi"][float(radius)][index].numpy(),
                "explanation_unsmoothed": c["phi"][self.radii[0]][index].numpy()}

    def render(self, r: Mapping[str, Any]) -> Figure:
        fig = Figure(figsize=(11.5, 2.9))
        gs = fig.add_gridspec(1, 4, width_ratios=[1.6, 1.6, 1, 1])
        ax_i, ax_s = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
        for ax, key, name, color in ((ax_i, "infidelity_curve", "infidelity", "C0"),
                                     (ax_s, "sensitivity_curve", "max-sensitivity", "C3")):
            ax.plot(r["radii"], r[key], "o-", color=color)
            ax.axvline(r["radius"], color="gray", ls="--", lw=1)
            ax.plot([r["radius"]], [r[key.replace("_curve", "")]], "o", ms=10, mfc="none", mec="k")
            ax.set_xlabel(f"SG radius ({r['kernel']} kernel)")
            ax.set_title(f"mean {name} of smoothed {r['method']}", fontsize=9)
        ax_i.axvline(r["best_radius"], color="C2", lw=1, label=f"least infidelity: r = {r['best_radius']:g}")
        ax_i.legend(fontsize=7)
        ax_d = fig.add_subplot(gs[2])
        ax_d.imshow(_image(self.x[r["index"]]), cmap="gray", vmin=0, vmax=1)
        ax_d.set_title(f"digit {r['index']}" + ("" if self.y is None else f" (label {int(self.y[r['index']])})"),
                       fontsize=9)
        ax_d.axis("off")
        _heat(fig.add_subplot(gs[3]), _image(torch.as_tensor(r["explanation"])),
              f"{r['method']} smoothed, r = {r['radius']:g}")
        fig.tight_layout()
        return fig

    def describe(self, r: Mapping[str, Any]) -> str:
        return (f"radius {r['radius']:g} ({r['kernel']}): infidelity <b>{r['infidelity']:.4g}</b>, max-sensitivity "
                f"<b>{r['sensitivity']:.4g}</b> (means over {self.x.shape[0]} digits; perturbation "
                f"{html.escape(repr(self.perturbation))}, sensitivity radius {self.sensitivity_radius:g})")


def smoothing_explorer(model: torch.nn.Module, x: torch.Tensor, y: Optional[torch.Tensor] = None, **options: Any
                       ) -> SmoothingExplorer:
    """Explore how smoothing an explanation (SmoothGrad) trades infidelity against sensitivity (Yeh et al. 2019).

    For every radius of ``radii`` (default ``0 ... 0.5``) the explanation ``method`` (``"grad"`` or ``"gbp"``) is
    smoothed with :func:`helpers.fidelity.smooth` (the chosen ``kernel``), then scored on the digits ``x`` with
    :func:`helpers.fidelity.infidelity` (``perturbation``, default ``Gaussian(0.1)``: by Stein's lemma the
    infidelity-optimal explanation is the gradient smoothed at that radius) and
    :func:`helpers.fidelity.sensitivity_max`. The radius slider marks a point on both curves and shows that
    smoothed heat map for the chosen digit.

    ``options``: ``radii``, ``perturbation``, ``methods``, ``n_smooth`` (12), ``n_infidelity`` (200),
    ``sensitivity_radius`` (0.1), ``n_sensitivity`` (5), ``normalize`` (False), ``seed``. Keep ``x`` small (8-32
    digits): each (kernel, method) curve costs ``len(radii) x n_smooth x (1 + n_sensitivity)`` gradients per digit.
    """
    return SmoothingExplorer(model, x, y, **options)


# ----------------------------------------------------------------------------------------------------------------
# 06: risk-coverage
# ----------------------------------------------------------------------------------------------------------------

def _risk_coverage_fallback(confidence: np.ndarray, correct: np.ndarray):
    order = np.argsort(-confidence, kind="mergesort")
    k = np.arange(1, len(order) + 1)
    return k / len(order), np.cumsum(~correct[order]) / k


def _risk_coverage_fn() -> Callable:
    try:
        from .metrics import risk_coverage
    except ImportError:  # pragma: no cover - helpers.metrics is part of the package
        return _risk_coverage_fallback
    return risk_coverage


class RiskCoverageExplorer(_Explorer):
    """See :func:`risk_coverage_explorer`."""

    _names = {"coverage": "coverage", "methods": "methods"}

    def __init__(self, confidences: Mapping[str, Any], correct: Any, *, coverage: float = 0.8) -> None:
        if not isinstance(confidences, Mapping) or not confidences:
            raise ValueError("confidences must be a non-empty dict {method name: N confidences}")
        corr = np.asarray(correct.detach().cpu() if hasattr(correct, "detach") else correct).astype(bool)
        if corr.ndim != 1 or corr.size == 0:
            raise ValueError(f"correct must be a non-empty 1-d array of booleans, got shape {corr.shape}")
        self.correct = corr
        self.confidences: Dict[str, np.ndarray] = {}
        rc = _risk_coverage_fn()
        self.curves: Dict[str, tuple] = {}
        for name, c in confidences.items():
            a = np.asarray(c.detach().cpu() if hasattr(c, "detach") else c, dtype=np.float64)
            if a.shape != corr.shape:
                raise ValueError(f"confidences[{name!r}] has shape {a.shape}, but correct has shape {corr.shape}")
            self.confidences[str(name)] = a
            cov, risk = rc(a, corr)
            self.curves[str(name)] = (np.asarray(cov), np.asarray(risk))
        if not 0.0 < coverage <= 1.0:
            raise ValueError(f"coverage must lie in (0, 1], got {coverage}")
        names = list(self.confidences)
        controls = [
            _slider(widgets.FloatSlider, "coverage", min=0.05, max=1.0, step=0.01, value=float(coverage),
                    readout_format=".2f"),
            widgets.SelectMultiple(description="methods", options=names, value=tuple(names),
                                   rows=min(6, len(names))),
        ]
        super().__init__(controls, "Selective prediction: risk against coverage for every confidence")
        self.update()

    def compute(self, *, coverage: float, methods: Sequence[str]) -> Dict[str, Any]:
        """Selective risk (error rate of the kept predictions) of each method at ``coverage``, and its AURC."""
        if not 0.0 < float(coverage) <= 1.0:
            raise ValueError(f"coverage must lie in (0, 1], got {coverage}")
        n = self.correct.shape[0]
        k = max(1, int(math.ceil(float(coverage) * n - 1e-9)))
        rows: List[Dict[str, Any]] = []
        for name in methods:
            cov, risk = self.curves[name]
            threshold = float(np.sort(self.confidences[name])[::-1][k - 1])
            rows.append({"method": name, "risk": float(risk[k - 1]), "aurc": float(np.mean(risk)),
                         "threshold": threshold, "kept": k})
        return {"coverage": float(coverage), "kept": k, "n": n, "rows": rows,
                "risk": {r["method"]: r["risk"] for r in rows}, "aurc": {r["method"]: r["aurc"] for r in rows},
                "error_rate": float(1.0 - self.correct.mean())}

    def render(self, r: Mapping[str, Any]) -> Figure:
        fig = Figure(figsize=(7.0, 3.3))
        ax = fig.add_subplot(1, 1, 1)
        for i, row in enumerate(r["rows"]):
            cov, risk = self.curves[row["method"]]
            ax.plot(cov, risk, color=f"C{i}", lw=1.5, label=f"{row['method']} (AURC {row['aurc']:.4f})")
            ax.plot([r["coverage"]], [row["risk"]], "o", color=f"C{i}")
        ax.axhline(r["error_rate"], color="gray", ls=":", lw=1, label=f"error rate {r['error_rate']:.3f}")
        ax.axvline(r["coverage"], color="k", ls="--", lw=1)
        ax.set_xlabel("coverage (fraction of predictions kept, most confident first)")
        ax.set_ylabel("risk (error rate of the kept)")
        ax.set_xlim(0, 1)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        return fig

    def describe(self, r: Mapping[str, Any]) -> str:
        head = "<tr><th>method</th><th>risk at coverage</th><th>threshold</th><th>AURC</th></tr>"
        body = "".join(f"<tr><td>{html.escape(x['method'])}</td><td>{x['risk']:.4f}</td><td>{x['threshold']:.4g}"
                       f"</td><td>{x['aurc']:.4f}</td></tr>" for x in sorted(r["rows"], key=lambda x: x["risk"]))
        return (f"coverage {r['coverage']:.2f}: the {r['kept']} most confident of {r['n']} predictions are kept"
                f"<table style='font-size:90%' cellpadding='4'>{head}{body}</table>")


def risk_coverage_explorer(confidences: Mapping[str, Any], correct: Any, **options: Any) -> RiskCoverageExplorer:
    """Explore selective prediction: the risk-coverage curve of every confidence in ``confidences``.

    Args:
        confidences: ``{method name: N confidences}`` (numpy arrays or tensors; higher = more confident).
        correct: ``N`` booleans, whether each prediction was right.
        options: ``coverage`` (initial slider value, default 0.8).

    The curves come from :func:`helpers.metrics.risk_coverage` (ties: expected risk); the table lists, at the
    slider's coverage, each method's selective risk, its confidence threshold and its AURC (the mean of the curve).
    ``.update(coverage=0.9)`` returns those numbers.
    """
    return RiskCoverageExplorer(confidences, correct, **options)
