"""The matplotlib figures the notebooks show. Each function returns the ``Figure`` it drew.

Add a function here for any figure more than one notebook draws (or that a student should not have to rewrite).
"""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["image_grid", "to_numpy_image"]


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
