"""Interactive explorers (ipywidgets) for the notebooks: move a control, see the measurement change.

:class:`abc_explorer` (01: ABC of one digit for a method, baseline, budget and ``S``), :class:`smoothing_explorer`
(05: infidelity and max-sensitivity against the SmoothGrad radius) and :class:`risk_coverage_explorer` (06: the
selective risk at a chosen coverage). Each is an ``ipywidgets.VBox`` whose controls call one plain method,
``update(**values)``: it sets the controls, recomputes (cached), redraws a matplotlib figure into an
``ipywidgets.Image`` and returns the numbers shown (also ``explorer.result``), so it is tested without a browser.
"""

from __future__ import annotations

import html
import io
import math
from typing import Any, Dict, Mapping, Optional, Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["abc_explorer", "smoothing_explorer", "risk_coverage_explorer", "AbcExplorer", "SmoothingExplorer",
           "RiskCoverageExplorer", "figure_png"]


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """PNG bytes of a matplotlib figure (no pyplot state involved)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _heat(ax, image, title: str, cmap: str = "RdBu_r", symmetric: bool = True) -> None:
    """Show the last two dims of ``image`` (tensor or array; a diverging map around 0 when ``symmetric``)."""
    a = np.asarray(torch.as_tensor(image).detach().float().cpu())
    a = a.reshape(a.shape[-2:])
    lim = float(np.abs(a).max()) or 1.0
    ax.imshow(a, cmap=cmap, vmin=-lim if symmetric else 0.0, vmax=lim)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def _slider(kind, description: str, **kw):
    return kind(description=description, continuous_update=False, style={"description_width": "initial"}, **kw)


def _check_batch(x: torch.Tensor, y: Optional[torch.Tensor]) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty N x ... tensor of images, got {getattr(x, 'shape', type(x))}")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape[0] != x.shape[0]):
        raise ValueError(f"y must be None or a tensor of {x.shape[0]} labels, got {getattr(y, 'shape', type(y))}")


class _Explorer(widgets.VBox):
    """A title, the controls (``{compute keyword: widget}``, 3 per row), an info line and the figure; a control change
    calls :meth:`update`. Subclasses write ``compute``, ``render`` (a figure) and ``describe`` (the info line)."""

    def __init__(self, controls: Dict[str, widgets.Widget], title: str) -> None:
        self.controls: Dict[str, widgets.Widget] = {c.description: c for c in controls.values()}
        self._by_keyword = dict(controls)
        self.info, self.image = widgets.HTML(), widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.result: Dict[str, Any] = {}
        self.figure: Optional[Figure] = None
        self._updating = False
        rows = [widgets.HBox(list(controls.values())[i:i + 3]) for i in range(0, len(controls), 3)]
        super().__init__([widgets.HTML(f"<b>{html.escape(title)}</b>"), *rows, self.info, self.image])
        for c in controls.values():
            c.observe(self._on_change, names="value")
        self.update()

    def values(self) -> Dict[str, Any]:
        """The current setting of every control, as ``update`` keywords."""
        return {k: c.value for k, c in self._by_keyword.items()}

    def _on_change(self, change) -> None:
        if not self._updating:
            try:
                self.update()
            except Exception as err:  # noqa: BLE001 - shown to the person moving the slider
                self.info.value = f"<span style='color:#b00'>{html.escape(f'{type(err).__name__}: {err}')}</span>"

    def update(self, **values: Any) -> Dict[str, Any]:
        """Set the given controls (keywords as in :meth:`values`), recompute, redraw; return the numbers shown."""
        if set(values) - set(self._by_keyword):
            raise TypeError(f"unknown setting(s) {sorted(set(values) - set(self._by_keyword))}; valid: "
                            f"{sorted(self._by_keyword)}")
        self._updating = True
        try:
            for name, v in values.items():
                self._by_keyword[name].value = v
        finally:
            self._updating = False
        self.info.value = "<i>computing ...</i>"
        result = self.compute(**self.values())
        self.figure = self.render(result)
        png = figure_png(self.figure)
        self.image.value, self.image.width = png, str(int.from_bytes(png[16:20], "big"))  # natural size
        self.info.value, self.result = self.describe(result), result
        return result


class AbcExplorer(_Explorer):
    """ABC of one of the digits ``x`` (``N x 1 x 28 x 28``, ``y`` optional labels): its attribution, the per-pixel
    mutation probability, the first ``n_show`` sampled mutations (title: the model's label, green when it keeps the
    prediction) and ABC = the fraction of the ``S`` samples that keep it (:func:`helpers.abc.abc_confidence` with
    ``seed`` and ``abc_options``, e.g. ``n_steps``).
    ``update(index=3, method="grad", baseline="blur", budget=100, n_samples=200)`` returns the numbers shown.
    """

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                 n_show: int = 6, seed: int = 0, **abc_options: Any) -> None:
        from .abc import DEFAULT_BUDGET, DEFAULT_SAMPLES
        from .attribution import BASELINES, METHODS

        _check_batch(x, y)
        self.model, self.x, self.y, self.n_show, self.seed = model, x, y, int(n_show), int(seed)
        self.abc_options, self._cache = abc_options, {}
        super().__init__({
            "index": _slider(widgets.IntSlider, "digit", min=0, max=x.shape[0] - 1, value=0),
            "method": widgets.Dropdown(description="method", options=list(METHODS), value="ig"),
            "baseline": widgets.Dropdown(description="baseline", options=list(BASELINES), value="zero"),
            "budget": _slider(widgets.FloatLogSlider, "budget", base=10, min=0.0, max=2.6, step=0.05,
                              value=float(DEFAULT_BUDGET), readout_format=".3g"),
            "n_samples": _slider(widgets.IntSlider, "S", min=10, max=500, step=10, value=int(DEFAULT_SAMPLES)),
        }, "ABC: attribution-based confidence of one digit")

    def compute(self, *, index: int, method: str, baseline: str, budget: float, n_samples: int) -> Dict[str, Any]:
        """ABC of digit ``index`` with the given setting, its attribution, and the first ``n_show`` mutations."""
        from .abc import abc_confidence, mutated_copies

        key = (int(index), method, baseline, float(budget), int(n_samples))
        if key not in self._cache:
            xc = self.x[index:index + 1].detach().cpu()
            det = abc_confidence(self.model, self.x[index:index + 1], method=method, baseline=baseline,
                                 n_samples=int(n_samples), budget=float(budget), seed=self.seed, return_details=True,
                                 **self.abc_options)
            k, pred = min(self.n_show, int(n_samples)), int(det.predicted[0])
            self._cache[key] = {
                "index": int(index), "method": method, "baseline": baseline, "budget": float(budget),
                "n_samples": int(n_samples), "abc": float(det.confidence[0]), "predicted": pred,
                "label": None if self.y is None else int(self.y[index]), "attribution": det.attributions[0].numpy(),
                "weights": det.inclusion[0].reshape(xc.shape[1:]).numpy(),
                "mutations": mutated_copies(xc, det.references, det.inclusion, det.seed, 0, k)[0][0],
                "mutation_labels": det.labels[0, :k].tolist(), "kept": int((det.labels[0] == pred).sum()),
                "mutated_features": float(det.effective_budget[0])}
        return self._cache[key]

    def render(self, r: Mapping[str, Any]) -> Figure:
        k = len(r["mutation_labels"])
        fig = Figure(figsize=(min(10.0, 1.3 * (3 + k)), 2.4))
        axes = fig.subplots(1, 3 + k)
        label = "" if r["label"] is None else f"label {r['label']}, "
        _heat(axes[0], self.x[r["index"]], f"{label}pred {r['predicted']}", cmap="gray", symmetric=False)
        _heat(axes[1], r["attribution"], f"{r['method']} attribution")
        _heat(axes[2], r["weights"], "P(mutate pixel)", cmap="magma", symmetric=False)
        for j, (mutation, got) in enumerate(zip(r["mutations"], r["mutation_labels"])):
            _heat(axes[3 + j], mutation, f"sample {j + 1}: {got}", cmap="gray", symmetric=False)
            axes[3 + j].title.set_color("green" if got == r["predicted"] else "red")
        fig.tight_layout()
        return fig

    def describe(self, r: Mapping[str, Any]) -> str:
        return (f"ABC = <b>{r['abc']:.3f}</b> &nbsp; ({r['kept']}/{r['n_samples']} mutated copies keep the prediction "
                f"{r['predicted']}; budget {r['budget']:g}, baseline {r['baseline']}: {r['mutated_features']:.0f} "
                "pixels mutated per copy on average)")


class SmoothingExplorer(_Explorer):
    """Infidelity and max-sensitivity of a smoothed explanation (``method`` "grad" or "gbp", SmoothGrad with the
    chosen kernel) against the smoothing radius, averaged over the digits ``x`` (keep it small: 8-32 digits); the
    heat map at the chosen radius. ``perturbation`` defaults to ``Gaussian(0.1)``: by Stein's lemma its optimal
    explanation is the gradient smoothed at that radius.
    """

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: Optional[torch.Tensor] = None, *,
                 radii: Sequence[float] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5), perturbation=None,
                 methods: Sequence[str] = ("grad", "gbp"), n_smooth: int = 12, n_infidelity: int = 200,
                 sensitivity_radius: float = 0.1, n_sensitivity: int = 5, normalize: bool = False,
                 seed: int = 0) -> None:
        from .perturbations import Gaussian
        from .smoothing import KERNELS

        _check_batch(x, y)
        if not radii or any(float(r) < 0 for r in radii):
            raise ValueError(f"radii must be a non-empty list of radii >= 0, got {radii!r}")
        self.model, self.x, self.y, self.radii = model, x, y, tuple(sorted(float(r) for r in radii))
        self.perturbation = perturbation if perturbation is not None else Gaussian(0.1)
        self.n_smooth, self.n_infidelity, self.n_sensitivity = int(n_smooth), int(n_infidelity), int(n_sensitivity)
        self.sensitivity_radius, self.normalize, self.seed = float(sensitivity_radius), normalize, int(seed)
        self._curves: Dict[tuple, tuple] = {}  # (kernel, method) -> infidelity, sensitivity, explanations
        with torch.no_grad():  # not inference_mode: the targets enter autograd graphs later
            self._targets = model(x.to(next(model.parameters()).device)).argmax(1)
        super().__init__({
            "kernel": widgets.Dropdown(description="kernel", options=list(KERNELS), value=KERNELS[0]),
            "method": widgets.Dropdown(description="method", options=list(methods), value=methods[0]),
            "radius": _slider(widgets.SelectionSlider, "SG radius", options=list(self.radii),
                              value=min(self.radii, key=lambda r: abs(r - 0.1))),
            "index": _slider(widgets.IntSlider, "digit", min=0, max=x.shape[0] - 1, value=0),
        }, "Smoothing an explanation: infidelity and sensitivity against the radius")

    def compute(self, *, kernel: str, method: str, radius: float, index: int) -> Dict[str, Any]:
        """Mean infidelity and max-sensitivity over ``x`` for every radius (cached per kernel and method), those at
        ``radius`` and the explanation of digit ``index`` there."""
        from .infidelity import infidelity
        from .sensitivity import sensitivity_max
        from .smoothing import explainer, smooth

        if (kernel, method) not in self._curves:
            base, t = explainer(self.model, method), self._targets
            xd = self.x.to(t.device)
            fns = [smooth(base, kernel, r, self.n_smooth, seed=self.seed) if r > 0 else base for r in self.radii]
            phis = {str(r): fn(xd, t) for r, fn in zip(self.radii, fns)}
            inf = infidelity(self.model, xd, phis, self.perturbation, target=t, n_samples=self.n_infidelity,
                             normalize=self.normalize, seed=self.seed + 1)
            sens = [sensitivity_max(fn, xd, self.sensitivity_radius, self.n_sensitivity, seed=self.seed + 2, target=t)
                    for fn in fns]
            self._curves[(kernel, method)] = ([float(inf[k].mean()) for k in phis], [float(v.mean()) for v in sens],
                                              [v.cpu() for v in phis.values()])
        inf, sens, phis = self._curves[(kernel, method)]
        j = self.radii.index(float(radius))
        return {"kernel": kernel, "method": method, "radius": float(radius), "index": int(index),
                "radii": np.array(self.radii), "infidelity_curve": np.array(inf), "sensitivity_curve": np.array(sens),
                "infidelity": inf[j], "sensitivity": sens[j], "best_radius": self.radii[int(np.argmin(inf))],
                "explanation": phis[j][index].numpy()}

    def render(self, r: Mapping[str, Any]) -> Figure:
        fig = Figure(figsize=(10.0, 2.9))
        gs = fig.add_gridspec(1, 4, width_ratios=[1.6, 1.6, 1, 1])
        for i, (key, name, color) in enumerate((("infidelity", "infidelity", "C0"),
                                                ("sensitivity", "max-sensitivity", "C3"))):
            ax = fig.add_subplot(gs[i])
            ax.plot(r["radii"], r[f"{key}_curve"], "o-", color=color)
            ax.plot([r["radius"]], [r[key]], "o", ms=10, mfc="none", mec="k")
            ax.axvline(r["radius"], color="gray", ls="--", lw=1)
            ax.set(xlabel=f"SG radius ({r['kernel']} kernel, pixel units)", ylabel=f"{name} (mean over digits)",
                   title=f"{name} of smoothed {r['method']}")
        fig.axes[0].axvline(r["best_radius"], color="C2", lw=1, label=f"least infidelity: r = {r['best_radius']:g}")
        fig.axes[0].legend()
        label = "" if self.y is None else f" (label {int(self.y[r['index']])})"
        _heat(fig.add_subplot(gs[2]), self.x[r["index"]], f"digit {r['index']}{label}", "gray", False)
        _heat(fig.add_subplot(gs[3]), r["explanation"], f"{r['method']} smoothed, r = {r['radius']:g}")
        fig.tight_layout()
        return fig

    def describe(self, r: Mapping[str, Any]) -> str:
        return (f"radius {r['radius']:g} ({r['kernel']}): infidelity <b>{r['infidelity']:.4g}</b>, max-sensitivity "
                f"<b>{r['sensitivity']:.4g}</b> (means over {self.x.shape[0]} digits; perturbation "
                f"{html.escape(repr(self.perturbation))}, sensitivity radius {self.sensitivity_radius:g})")


class RiskCoverageExplorer(_Explorer):
    """Selective prediction: the risk-coverage curve (:func:`helpers.metrics.risk_coverage`) of every confidence in
    ``confidences`` (``{name: N scores}``, higher = more confident) for predictions whose correctness is ``correct``
    (``N`` booleans); at the slider's ``coverage`` (initially 0.8), each method's selective risk, threshold and AURC.
    """

    def __init__(self, confidences: Mapping[str, Any], correct: Any, *, coverage: float = 0.8) -> None:
        from .metrics import as_array, risk_coverage

        if not isinstance(confidences, Mapping) or not confidences:
            raise ValueError("confidences must be a non-empty dict {method name: N confidences}")
        if not 0.0 < coverage <= 1.0:
            raise ValueError(f"coverage must lie in (0, 1], got {coverage}")
        self.curves, self.sorted = {}, {}  # name -> (coverage, risk); name -> confidences, most confident first
        for name, c in confidences.items():
            try:
                a = as_array(c, "confidence")
                self.curves[str(name)] = risk_coverage(a, correct)
            except (TypeError, ValueError) as err:
                raise ValueError(f"confidences[{name!r}] and correct: {err}") from err
            self.sorted[str(name)] = -np.sort(-a)
        names = tuple(self.curves)
        super().__init__({
            "coverage": _slider(widgets.FloatSlider, "coverage", min=0.05, max=1.0, step=0.01, value=float(coverage),
                                readout_format=".2f"),
            "methods": widgets.SelectMultiple(description="methods", options=names, value=names,
                                              rows=min(6, len(names))),
        }, "Selective prediction: risk against coverage for every confidence")

    def compute(self, *, coverage: float, methods: Sequence[str]) -> Dict[str, Any]:
        """Selective risk (error rate of the kept predictions) of each method at ``coverage``, and its AURC."""
        risk_all = next(iter(self.curves.values()))[1]  # the same predictions for every method
        n = len(risk_all)
        k = max(1, int(math.ceil(float(coverage) * n - 1e-9)))
        rows = [{"method": m, "risk": float(self.curves[m][1][k - 1]), "aurc": float(np.mean(self.curves[m][1])),
                 "threshold": float(self.sorted[m][k - 1]), "kept": k} for m in methods]
        return {"coverage": float(coverage), "kept": k, "n": n, "rows": rows,
                "risk": {r["method"]: r["risk"] for r in rows}, "aurc": {r["method"]: r["aurc"] for r in rows},
                "error_rate": float(risk_all[-1])}

    def render(self, r: Mapping[str, Any]) -> Figure:
        fig = Figure(figsize=(7.0, 3.6))
        ax = fig.add_subplot(1, 1, 1)
        for i, row in enumerate(r["rows"]):
            ax.plot(*self.curves[row["method"]], color=f"C{i}", label=f"{row['method']} (AURC {row['aurc']:.4f})")
            ax.plot([r["coverage"]], [row["risk"]], "o", color=f"C{i}")
        ax.axhline(r["error_rate"], color="gray", ls=":", lw=1, label=f"error rate {r['error_rate']:.3f}")
        ax.axvline(r["coverage"], color="k", ls="--", lw=1)
        ax.set(xlabel="coverage (fraction kept, most confident first)", ylabel="risk (error rate of the kept, 0-1)",
               xlim=(0, 1), ylim=(0, None))
        ax.legend(fontsize=9, loc="upper left")
        fig.tight_layout()
        return fig

    def describe(self, r: Mapping[str, Any]) -> str:
        body = "".join(f"<tr><td>{html.escape(x['method'])}</td><td>{x['risk']:.4f}</td><td>{x['threshold']:.4g}"
                       f"</td><td>{x['aurc']:.4f}</td></tr>" for x in sorted(r["rows"], key=lambda x: x["risk"]))
        return (f"coverage {r['coverage']:.2f}: the {r['kept']} most confident of {r['n']} predictions are kept"
                "<table style='font-size:90%' cellpadding='4'><tr><th>method</th><th>risk at coverage</th>"
                f"<th>threshold</th><th>AURC</th></tr>{body}</table>")


#: the explorers under the names the notebooks use
abc_explorer, smoothing_explorer, risk_coverage_explorer = AbcExplorer, SmoothingExplorer, RiskCoverageExplorer
