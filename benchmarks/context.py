"""What every row shares: settings (sizes, repetitions), the device, cached models and images, the forward ceiling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch

__all__ = ["Context", "FULL_SIZES", "QUICK_SIZES"]

#: The sizes of the default run.
FULL_SIZES: Dict[str, int] = {
    "forward_batch": 1024,
    "ig_images": 32, "ig_steps": 50,
    "shap_background": 100, "shap_inputs": 32,
    "infid_images": 64, "infid_samples": 1000,
    "sens_images": 16, "sens_samples": 10, "sens_ig_steps": 16,
    "abc_images": 32, "abc_samples": 256, "abc_ig_steps": 32,
    "abc_loop_images": 8,
    "opt_images": 1, "opt_samples": 20000,
}

#: ``--quick``: a smoke run of the whole harness in a minute or two (ratios are less reliable).
QUICK_SIZES: Dict[str, int] = {
    "forward_batch": 1024,
    "ig_images": 16, "ig_steps": 20,
    "shap_background": 50, "shap_inputs": 8,
    "infid_images": 16, "infid_samples": 200,
    "sens_images": 8, "sens_samples": 5, "sens_ig_steps": 8,
    "abc_images": 16, "abc_samples": 64, "abc_ig_steps": 16,
    "abc_loop_images": 4,
    "opt_images": 1, "opt_samples": 5000,
}


@dataclass
class Context:
    """Settings and caches of one benchmark run.

    Attributes:
        quick: smaller sizes (:data:`QUICK_SIZES`) and fewer repetitions.
        repeats: timed repetitions per row (rows may stop earlier after ``max_seconds``).
        warmup: untimed rounds before timing.
        max_seconds: time budget of the timed rounds of one row (at least 3 rounds are always run).
        compile: include ``torch.compile`` in the forward row (costs ~30 s of compilation on a small CPU).
        seed: seed of every random draw.
        notebook_pattern: run only the notebooks whose file name matches (glob or substring).
    """

    quick: bool = False
    repeats: int = 5
    warmup: int = 1
    max_seconds: float = 30.0
    compile: bool = True
    seed: int = 0
    notebook_pattern: Optional[str] = None
    device: torch.device = field(default_factory=lambda: __import__("helpers").device())
    sizes: Dict[str, int] = field(default_factory=dict)
    _models: Dict[str, Any] = field(default_factory=dict, repr=False)
    _images: Optional[Tuple[torch.Tensor, torch.Tensor]] = field(default=None, repr=False)
    ceiling: Optional[Dict[str, Any]] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        base = QUICK_SIZES if self.quick else FULL_SIZES
        self.sizes = {**base, **self.sizes}

    def timing_kw(self) -> Dict[str, Any]:
        """Keyword arguments for :func:`benchmarks.harness.time_alternating`."""
        return {"warmup": self.warmup, "repeats": self.repeats, "device": self.device,
                "max_seconds": self.max_seconds}

    def model(self, name: str = "cnn"):
        """The cached model ``name`` on the run's device, eval mode."""
        if name not in self._models:
            from helpers.models import get_model

            self._models[name] = get_model(name, device=self.device)
        return self._models[name]

    def images(self, n: int, offset: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
        """Test images ``offset:offset+n`` (``n x 1 x 28 x 28`` on the device) and their labels."""
        if self._images is None:
            from helpers.data import load_mnist

            self._images = load_mnist("test")
        x, y = self._images
        if offset + n > x.shape[0]:
            raise ValueError(f"asked for test images {offset}:{offset + n}, only {x.shape[0]} exist")
        return x[offset:offset + n].to(self.device), y[offset:offset + n].to(self.device)

    def train_images(self, n: int) -> torch.Tensor:
        """The first ``n`` training images (a background set), on the device."""
        from helpers.data import load_mnist

        return load_mnist("train")[0][:n].to(self.device)
