"""One figure style for every notebook, and the figures more than one notebook draws.

Importing this module applies :data:`STYLE` (or call :func:`style` once): figures at most 10 inches wide, every
font at least 9 pt, a light grid. The rest is up to the figure's author: every axis labelled with its unit
("coverage (% of predictions kept)"), legends in words ("max softmax", not ``msp``). :func:`problems` lists what a
figure breaks (``save_results`` prints it for every figure it saves). Each drawing function returns its ``Figure``.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["STYLE", "MAX_WIDTH_IN", "MIN_FONT_PT", "style", "problems", "image_grid", "to_numpy_image",
           "risk_coverage_plot", "reliability_diagrams", "shift_curves", "explanation_grid"]

MAX_WIDTH_IN, MIN_FONT_PT = 10.0, 9.0
STYLE: Dict[str, object] = {
    "figure.figsize": (6.4, 4.0), "figure.dpi": 100, "savefig.dpi": 110, "savefig.bbox": "tight",
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "figure.titlesize": 11,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9,
    "axes.grid": True, "grid.alpha": 0.3, "lines.linewidth": 1.5,
}


def style() -> None:
    """Apply :data:`STYLE` to matplotlib (done once when ``helpers.plots`` is imported; call again after a reset)."""
    plt.rcParams.update(STYLE)


style()


def problems(fig: plt.Figure) -> List[str]:
    """What ``fig`` breaks of the style: wider than 10 in, text under 9 pt, a data axis without x or y label."""
    out = []
    fig.draw_without_rendering()  # creates the tick labels
    width = fig.get_size_inches()[0]
    if width > MAX_WIDTH_IN + 1e-6:
        out.append(f"figure is {width:.1f} in wide (at most {MAX_WIDTH_IN:g})")
    small = {t.get_text()[:30] for t in fig.findobj(plt.Text)
             if t.get_visible() and t.get_text().strip() and t.get_fontsize() < MIN_FONT_PT - 1e-6}
    if small:
        out.append(f"text under {MIN_FONT_PT:g} pt: {sorted(small)[:5]}")
    for i, ax in enumerate(fig.axes):
        plotted = ax.axison and not ax.images and (ax.lines or ax.collections or ax.patches)
        missing = [k for k, lab in (("x", ax.get_xlabel()), ("y", ax.get_ylabel())) if not lab]
        if plotted and missing:
            out.append(f"axes {i} ({ax.get_title()[:30]!r}) has no {' or '.join(missing)} label")
    return out


def to_numpy_image(img: torch.Tensor) -> np.ndarray:
    """``1 x H x W`` or ``H x W`` tensor -> ``H x W`` numpy array (on the CPU)."""
    a = img.detach().float().cpu().numpy()
    return a.reshape(a.shape[-2], a.shape[-1])


def _grid(n: int, ncols: int, panel: float, height: float = 1.0):
    """``nrows x ncols`` axes for ``n`` panels, the figure at most :data:`MAX_WIDTH_IN` wide."""
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    panel = min(panel, MAX_WIDTH_IN / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols, panel * nrows * height), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, axes


def image_grid(images: torch.Tensor, titles: Optional[Sequence[str]] = None, *, ncols: int = 10,
               cmap: str = "gray", vmin: Optional[float] = 0.0, vmax: Optional[float] = 1.0, size: float = 1.2,
               suptitle: Optional[str] = None) -> plt.Figure:
    """Show ``N x 1 x H x W`` images (pixel values in ``[vmin, vmax]``) in a grid with optional titles."""
    fig, axes = _grid(images.shape[0], ncols, size, 1.2)
    for i, ax in enumerate(axes.flat[:images.shape[0]]):
        ax.axis("off")
        ax.imshow(to_numpy_image(images[i]), cmap=cmap, vmin=vmin, vmax=vmax)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=MIN_FONT_PT)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def risk_coverage_plot(confidences: Mapping[str, object], correct, *, ax=None, max_coverage: float = 1.0,
                       title: str = "Risk against coverage", sample_weight=None) -> plt.Figure:
    """Risk-coverage curves in percent (errors among the kept against the share kept), AURC in the legend.

    Line styles alternate so that curves lying on top of each other (all at 0 % risk) stay visible.
    """
    from .metrics import aurc, risk_coverage

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 4.2))
    for i, (name, conf) in enumerate(confidences.items()):
        cov, risk = risk_coverage(conf, correct, sample_weight)
        ax.plot(100 * np.asarray(cov), 100 * np.asarray(risk), ls=("-", "--", ":", "-.")[i % 4],
                label=f"{name} (AURC {100 * aurc(conf, correct, sample_weight):.3f} %)")
    ax.set_xlim(0, 100 * max_coverage)
    ax.set_xlabel("coverage (% of predictions kept, most confident first)")
    ax.set_ylabel("risk (% errors among the kept)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def reliability_diagrams(confidences: Mapping[str, object], correct, *, n_bins: int = 15, ncols: int = 4,
                         sample_weight=None) -> plt.Figure:
    """One reliability diagram per confidence: accuracy against mean confidence per bin, ECE in the title."""
    from .metrics import ece, reliability_bins

    fig, axes = _grid(len(confidences), ncols, 2.5)
    for ax, (name, conf) in zip(axes.flat, confidences.items()):
        b = reliability_bins(conf, correct, n_bins, sample_weight)
        mid, ok = (b["edges"][:-1] + b["edges"][1:]) / 2, b["count"] > 0
        ax.bar(mid[ok], b["accuracy"][ok], width=1 / n_bins, edgecolor="k", lw=0.5, alpha=0.8)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_title(f"{name}\nECE {100 * ece(conf, correct, n_bins, sample_weight):.2f} %", fontsize=MIN_FONT_PT)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (bin mean)", ylabel="accuracy (fraction right)")
    fig.tight_layout()
    return fig


def shift_curves(table: Sequence[Mapping[str, object]], *, x: str = "strength", kinds=None, methods=None,
                 value: str = "mean_confidence", accuracy: str = "accuracy", ncols: int = 3,
                 xlabels: Optional[Mapping[str, str]] = None) -> plt.Figure:
    """Accuracy (black) and each method's mean confidence against shift strength, one panel per shift kind.

    ``table``: row dicts with keys ``kind``, ``x``, ``method``, ``value`` and ``accuracy``; ``xlabels``: the x-axis
    label (with its unit) of each kind, e.g. ``{"rotation": "angle (degrees)"}``.
    """
    kinds = kinds or list(dict.fromkeys(r["kind"] for r in table))
    methods = methods or list(dict.fromkeys(r["method"] for r in table))
    fig, axes = _grid(len(kinds), ncols, 3.3, 0.85)
    for ax, kind in zip(axes.flat, kinds):
        rows = [r for r in table if r["kind"] == kind]
        xs = sorted({r[x] for r in rows})
        ax.plot(xs, [next(r[accuracy] for r in rows if r[x] == v) for v in xs], "k-o", lw=2, ms=3, label="accuracy")
        for m in methods:
            pts = sorted((r[x], r[value]) for r in rows if r["method"] == m)
            if pts:
                ax.plot(*zip(*pts), marker=".", label=f"{m} (mean confidence)")
        ax.set(title=kind, ylim=(-0.02, 1.02), xlabel=(xlabels or {}).get(kind, f"{kind} {x}"),
               ylabel="accuracy or confidence (0-1)")
    axes.flat[0].legend(loc="lower left", fontsize=MIN_FONT_PT)
    fig.tight_layout()
    return fig


def explanation_grid(images: torch.Tensor, explanations: Mapping[str, torch.Tensor], *, size: float = 1.3,
                     suptitle: Optional[str] = None) -> plt.Figure:
    """Rows = images (``N x 1 x H x W``), columns = the image then each explanation (``name -> N x 1 x H x W``).

    Each explanation panel uses a red-blue map symmetric about 0 (red: raises the score), scaled to that panel's
    largest |value|.
    """
    n, names = images.shape[0], list(explanations)
    fig, axes = _grid(n * (1 + len(names)), 1 + len(names), size, 1.05)
    for i in range(n):
        axes[i, 0].imshow(to_numpy_image(images[i]), cmap="gray", vmin=0, vmax=1)
        for j, k in enumerate(names):
            a = to_numpy_image(explanations[k][i])
            v = float(np.abs(a).max()) or 1.0
            axes[i, j + 1].imshow(a, cmap="bwr", vmin=-v, vmax=v)
    for j, k in enumerate(["input", *names]):
        axes[0, j].set_title(k, fontsize=MIN_FONT_PT)
    for ax in axes.flat:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
