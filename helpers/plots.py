"""The matplotlib figures the notebooks show. Each function returns the ``Figure`` it drew.

Add a function here for any figure more than one notebook draws (or that a student should not have to rewrite).
"""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["image_grid", "to_numpy_image", "risk_coverage_plot", "reliability_diagrams", "shift_curves",
           "explanation_grid"]


def to_numpy_image(img: torch.Tensor) -> np.ndarray:
    """``1 x H x W`` or ``H x W`` tensor -> ``H x W`` numpy array (on the CPU)."""
    a = img.detach().float().cpu().numpy()
    return a.reshape(a.shape[-2], a.shape[-1])


def image_grid(images: torch.Tensor, titles: Optional[Sequence[str]] = None, *, ncols: int = 10,
               cmap: str = "gray", vmin: Optional[float] = 0.0, vmax: Optional[float] = 1.0, size: float = 1.2,
               suptitle: Optional[str] = None) -> plt.Figure:
    """Show ``N x 1 x H x W`` images in a grid with optional per-image titles."""
    n = images.shape[0]
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(to_numpy_image(images[i]), cmap=cmap, vmin=vmin, vmax=vmax)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def risk_coverage_plot(confidences: dict, correct, *, ax=None, max_coverage: float = 1.0,
                       title: str = "Risk-coverage", sample_weight=None) -> plt.Figure:
    """Risk-coverage curves (error rate of the k most confident vs k / N), one line per confidence, AURC in the legend."""
    from .metrics import aurc, risk_coverage

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 4))
    for name, conf in confidences.items():
        cov, risk = risk_coverage(conf, correct, sample_weight)
        ax.plot(cov, 100 * risk, label=f"{name} (AURC {1000 * aurc(conf, correct, sample_weight):.2f}e-3)", lw=1.4)
    ax.set_xlim(0, max_coverage)
    ax.set_xlabel("coverage (fraction of predictions kept)")
    ax.set_ylabel("risk (fraction of errors among kept)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def reliability_diagrams(confidences: dict, correct, *, n_bins: int = 15, ncols: int = 4,
                         sample_weight=None) -> plt.Figure:
    """One reliability diagram per confidence: accuracy vs mean confidence per bin (bar width ~ bin), ECE in the title."""
    from .metrics import ece, reliability_bins

    n = len(confidences)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.8 * ncols, 2.8 * nrows), squeeze=False)
    for ax, (name, conf) in zip(axes.flat, confidences.items()):
        b = reliability_bins(conf, correct, n_bins, sample_weight)
        mid = (b["edges"][:-1] + b["edges"][1:]) / 2
        ok = b["count"] > 0
        ax.bar(mid[ok], b["accuracy"][ok], width=1 / n_bins, edgecolor="k", lw=0.5, alpha=0.8, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_title(f"{name}\nECE {100 * ece(conf, correct, n_bins, sample_weight):.2f}%", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.supxlabel("confidence", fontsize=9)
    fig.supylabel("accuracy", fontsize=9)
    fig.tight_layout()
    return fig


def shift_curves(table, *, x: str = "strength", kinds=None, methods=None, value: str = "mean_confidence",
                 accuracy: str = "accuracy", ncols: int = 5) -> plt.Figure:
    """Accuracy (black) and each method's mean confidence against shift strength, one panel per shift kind.

    ``table``: list of row dicts with keys ``kind``, ``x``, ``method``, ``value`` and ``accuracy``.
    """
    kinds = kinds or list(dict.fromkeys(r["kind"] for r in table))
    methods = methods or list(dict.fromkeys(r["method"] for r in table))
    ncols = min(ncols, len(kinds))
    nrows = (len(kinds) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.9 * nrows), squeeze=False, sharey=True)
    for ax, kind in zip(axes.flat, kinds):
        rows = [r for r in table if r["kind"] == kind]
        xs = sorted({r[x] for r in rows})
        acc = [next(r[accuracy] for r in rows if r[x] == v) for v in xs]
        ax.plot(xs, acc, "k-o", lw=2, ms=3, label="accuracy")
        for m in methods:
            pts = [(r[x], r[value]) for r in rows if r["method"] == m]
            if pts:
                pts.sort()
                ax.plot(*zip(*pts), "-", marker=".", lw=1.2, label=m)
        ax.set_title(kind, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(kinds):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    return fig


def explanation_grid(images: torch.Tensor, explanations: "dict", *, size: float = 1.3,
                     suptitle: Optional[str] = None) -> plt.Figure:
    """Rows = images (``N x 1 x H x W``), columns = the image then each explanation (``name -> N x 1 x H x W``).

    Each explanation panel uses a red-blue map symmetric about 0, scaled to that panel's largest |value|.
    """
    n, names = images.shape[0], list(explanations)
    fig, axes = plt.subplots(n, 1 + len(names), figsize=(size * (1 + len(names)), size * n * 1.05), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(to_numpy_image(images[i]), cmap="gray", vmin=0, vmax=1)
        for j, k in enumerate(names):
            a = to_numpy_image(explanations[k][i])
            v = float(np.abs(a).max()) or 1.0
            axes[i, j + 1].imshow(a, cmap="bwr", vmin=-v, vmax=v)
            if i == 0:
                axes[i, j + 1].set_title(k, fontsize=8)
        if i == 0:
            axes[i, 0].set_title("input", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig
