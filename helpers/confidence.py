"""Confidences of a classifier's predictions (higher = more likely correct), one pipeline for notebooks 06 and 07:
:func:`max_softmax`, :func:`mc_dropout` (Gal & Ghahramani 2016), :class:`TrustScore` (Jiang et al. 2018), and
:class:`ConfidenceSuite`, which fits temperature / Platt scaling and Trust Score once and scores any batch (with ABC).
``"mc dropout"`` is true MC dropout (the dropout network's *own* prediction); ``"dropout agreement"`` is the
probability the dropout network gives to the *scored model's* prediction, an agreement between two models.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .abc import abc_confidence
from .batching import bytes_per_image, chunk_size_for, forward, run_chunked
from .calibration import PlattScaling, TemperatureScaling, as_logits
from .validation import check_images, check_model, check_positive_int, check_target, model_device

__all__ = ["max_softmax", "mc_dropout", "penultimate_features", "TrustScore", "ConfidenceSuite", "correct_of"]


def max_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``max_c softmax(logits)_c`` (``N x C``, or one binary logit ``N`` -> ``N``)."""
    return torch.softmax(as_logits(logits).float(), dim=1).max(dim=1).values


def mc_dropout(model: nn.Module, x: torch.Tensor, *, n_passes: int = 20, seed: int = 0,
               batch_size: Optional[int] = None) -> torch.Tensor:
    """Mean softmax ``N x C`` of ``T = n_passes`` passes of ``model`` (in eval mode) whose ``nn.Dropout`` /
    ``nn.Dropout2d`` layers apply ``T`` masks drawn once from ``seed``, pass ``t`` using mask ``t`` for every input
    (so a score does not depend on the batch or the chunk). The layers before the first dropout run once; their
    output is repeated ``T`` times (the same numbers for a network without branches around its dropouts)."""
    check_model(model)
    check_images(x)
    check_positive_int(n_passes, "n_passes")
    drops = [m for m in model.modules() if isinstance(m, (nn.Dropout, nn.Dropout2d))]
    if not drops:
        raise ValueError("model has no nn.Dropout module: MC dropout needs a model trained with dropout "
                         "(e.g. get_model('cnn_dropout'))")
    gen, masks, rows = torch.Generator().manual_seed(seed), {}, [0]

    def hook(mod: nn.Module, _inp, out: torch.Tensor) -> torch.Tensor:
        if mod not in masks:  # drawn on first use, in module call order: the same masks for every chunk
            shape = out.shape[1:2] + (1,) * (out.dim() - 2) if isinstance(mod, nn.Dropout2d) else out.shape[1:]
            keep = torch.rand((n_passes, *shape), generator=gen) >= mod.p
            masks[mod] = keep.to(out.device, out.dtype) / (1.0 - mod.p)
        if out.shape[0] == rows[0]:  # the first dropout of this chunk: the T copies start here
            out = out.repeat_interleave(n_passes, dim=0)
        return (out.view(-1, n_passes, *out.shape[1:]) * masks[mod]).view(out.shape)

    dev = model_device(model)
    handles = [m.register_forward_hook(hook) for m in drops]
    try:
        def run(a: int, b: int) -> torch.Tensor:
            rows[0] = b - a
            with torch.inference_mode():
                z = as_logits(model(x[a:b].to(dev)))
            if z.shape[0] != (b - a) * n_passes:
                raise ValueError(f"mc_dropout: the model returned {z.shape[0]} rows for {b - a} inputs x {n_passes} "
                                 "passes; every path to the output must go through the first dropout layer")
            return torch.softmax(z.float(), dim=1).view(b - a, n_passes, -1).mean(dim=1).cpu()

        return run_chunked(run, x.shape[0], batch_size or chunk_size_for(bytes_per_image(x) * n_passes, device=dev))
    finally:
        for h in handles:
            h.remove()


def penultimate_features(model: nn.Module, x: torch.Tensor, *, batch_size: Optional[int] = None) -> torch.Tensor:
    """``model.features(x)`` flattened (``N x D``), chunked, on the model's device, under inference mode."""
    check_model(model)
    check_images(x)
    if not hasattr(model, "features"):
        raise ValueError(f"{type(model).__name__} has no .features(x) method giving penultimate features")
    dev = model_device(model)

    def run(a: int, b: int) -> torch.Tensor:
        with torch.inference_mode():
            return model.features(x[a:b].to(dev)).flatten(1)

    return run_chunked(run, x.shape[0], batch_size or chunk_size_for(bytes_per_image(x), device=dev))


def _kth_distance(q: torch.Tensor, ref: torch.Tensor, k: int, margin: int = 16) -> torch.Tensor:
    """Euclidean distance ``M`` from each row of ``q`` (``M x D``) to its ``k``-th nearest row of ``ref`` (``R x D``):
    the fast matrix-product distance only picks the ``k + margin`` nearest candidates, whose distances ``||q - r||``
    are then computed directly (exact unless more than ``margin`` rows tie with the ``k``-th within ~1e-7)."""
    k_eff = min(k, ref.shape[0])
    n_cand = min(ref.shape[0], k_eff + margin)
    centre = ref.float().mean(dim=0)
    ref = ref.float() - centre

    def run(a: int, b: int) -> torch.Tensor:
        qa = q[a:b].float() - centre
        cand = torch.cdist(qa, ref, compute_mode="use_mm_for_euclid_dist").topk(n_cand, dim=1, largest=False).indices
        exact = (qa.unsqueeze(1) - ref[cand]).norm(dim=2)  # B x n_cand direct distances
        return exact.sort(dim=1).values[:, k_eff - 1]

    return run_chunked(run, q.shape[0], chunk_size_for(max(1, ref.shape[0]) * 12 + n_cand * q.shape[1] * 4,
                                                       device=q.device, maximum=8192))


class TrustScore:
    r"""Trust Score (Jiang et al. 2018): :math:`d(x, \hat H_{\tilde c}) / (d(x, \hat H_c) + \epsilon)`, ``c`` the
    predicted class, :math:`\tilde c` the closest other class, ``d`` the distance to the ``k``-th nearest training
    point of a class (``k=2`` as in the authors' code) after dropping the ``alpha`` share of each class's points
    with the largest ``k_filter``-NN radius. Exact, so it equals the authors' KD-tree implementation."""

    def __init__(self, k: int = 2, alpha: float = 0.0, k_filter: int = 10, min_dist: float = 1e-12) -> None:
        check_positive_int(k, "k")
        check_positive_int(k_filter, "k_filter")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
        self.k, self.alpha, self.k_filter, self.min_dist = k, alpha, k_filter, min_dist
        self.class_features_: Optional[list] = None

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> "TrustScore":
        """Keep the (filtered) training features (``N x D``) of each class of ``labels`` (``N``)."""
        features = check_images(torch.as_tensor(features), "features").flatten(1)
        labels = check_target(torch.as_tensor(labels), features.shape[0], name="labels").to(features.device)
        self.class_features_ = []
        for c in range(int(labels.max()) + 1):
            fc = features[labels == c]
            if fc.shape[0] == 0:
                raise ValueError(f"labels has no example of class {c}: every class needs training points")
            if self.alpha > 0 and fc.shape[0] > self.k_filter:
                radius = _kth_distance(fc, fc, self.k_filter)  # includes the point itself, as a KD-tree query does
                fc = fc[radius <= torch.quantile(radius.double(), 1.0 - self.alpha).to(radius.dtype)]
            self.class_features_.append(fc)
        return self

    def score(self, features: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """Trust score ``N`` of the predictions ``predicted`` (``N``) for the rows of ``features`` (``N x D``)."""
        if self.class_features_ is None:
            raise RuntimeError("TrustScore is not fitted yet; call fit(train_features, train_labels) first")
        features = check_images(torch.as_tensor(features), "features").flatten(1)
        d = torch.stack([_kth_distance(features, fc.to(features.device), self.k) for fc in self.class_features_], 1)
        pred = check_target(torch.as_tensor(predicted), d.shape[0], d.shape[1], name="predicted").to(d.device)
        d_pred = d.gather(1, pred.unsqueeze(1)).squeeze(1)
        return d.scatter(1, pred.unsqueeze(1), float("inf")).min(dim=1).values / (d_pred + self.min_dist)


class ConfidenceSuite:
    """Every confidence of one model's predictions, fitted once (``fit``) and applied to any batch (``scores``).

    ``abc_methods``: ``{name: options of helpers.abc.abc_confidence}``; ``dropout_model``: a network with dropout
    for ``"mc dropout"`` (``n_passes`` passes) and ``"dropout agreement"``.
    """

    def __init__(self, model: nn.Module, *, dropout_model: Optional[nn.Module] = None, n_passes: int = 20,
                 abc_methods: Optional[dict] = None, abc_samples: int = 100, seed: int = 0) -> None:
        self.model, self.dropout_model, self.n_passes = check_model(model), dropout_model, n_passes
        self.abc_methods, self.abc_samples, self.seed = dict(abc_methods or {}), abc_samples, seed
        self.calibrators_: Dict[str, object] = {}
        self.trust_: Optional[TrustScore] = None

    def fit(self, x_val: torch.Tensor, y_val: torch.Tensor, x_train: Optional[torch.Tensor] = None,
            y_train: Optional[torch.Tensor] = None) -> "ConfidenceSuite":
        """Fit temperature and Platt scaling (top-class and one-vs-rest) on the logits of ``(x_val, y_val)`` and Trust
        Score on the penultimate features of ``(x_train, y_train)`` when given; returns ``self``."""
        z = forward(self.model, x_val)
        self.calibrators_ = {"temperature": TemperatureScaling().fit(z, y_val), "platt": PlattScaling().fit(z, y_val),
                             "platt (ovr)": PlattScaling("ovr").fit(z, y_val)}
        if x_train is not None:
            if y_train is None:
                raise ValueError("y_train is required with x_train (Trust Score needs the training labels)")
            self.trust_ = TrustScore().fit(penultimate_features(self.model, x_train), y_train)
        return self

    def scores(self, x: torch.Tensor, *, abc_n: Optional[int] = None) -> Dict[str, np.ndarray]:
        """Numpy arrays ``N`` for ``x`` (``N x ...``): ``"pred"``, ``"max softmax"``, ``"temperature"``, ``"platt"``,
        ``"platt (ovr)"``; with a ``dropout_model`` ``"mc dropout"``, ``"mc dropout pred"``, ``"dropout agreement"``;
        ``"trust score"`` when fitted with training data; one per ABC method, on ``x[:abc_n]`` (default all)."""
        if not self.calibrators_:
            raise RuntimeError("ConfidenceSuite is not fitted yet; call fit(x_val, y_val, ...) first")
        z = as_logits(forward(self.model, x))
        pred = z.argmax(dim=1)
        out = {"pred": pred.cpu().numpy(), "max softmax": max_softmax(z).cpu().numpy()}
        out.update({k: c.confidence(z).cpu().numpy() for k, c in self.calibrators_.items()})
        if self.dropout_model is not None:
            mean = mc_dropout(self.dropout_model, x, n_passes=self.n_passes, seed=self.seed)
            out["mc dropout"], out["mc dropout pred"] = (t.numpy() for t in mean.max(dim=1))
            out["dropout agreement"] = mean.gather(1, pred.cpu().unsqueeze(1)).squeeze(1).numpy()
        if self.trust_ is not None:
            out["trust score"] = self.trust_.score(penultimate_features(self.model, x), pred).cpu().numpy()
        if abc_n is None or abc_n > 0:
            out.update(self.abc_scores(x[:abc_n]))
        return out

    def abc_scores(self, x: torch.Tensor, *, n_samples: Optional[int] = None,
                   methods: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
        """ABC confidence ``N`` of each of ``abc_methods`` (or of the ones named in ``methods``), with ``S =
        n_samples`` mutated copies per input (default ``abc_samples``)."""
        names = list(self.abc_methods) if methods is None else list(methods)
        unknown = [m for m in names if m not in self.abc_methods]
        if unknown:
            raise ValueError(f"methods {unknown} are not among abc_methods {list(self.abc_methods)}")
        s = self.abc_samples if n_samples is None else check_positive_int(n_samples, "n_samples")
        return {name: abc_confidence(self.model, x, n_samples=s, seed=self.seed, **self.abc_methods[name]).cpu().numpy()
                for name in names}


def correct_of(scores: Dict[str, np.ndarray], y: np.ndarray, method: str) -> np.ndarray:
    """Whether each prediction scored by ``method`` is right: the dropout network's own for ``"mc dropout"``."""
    pred = scores["mc dropout pred"] if method == "mc dropout" else scores["pred"]
    return pred[: len(scores[method])] == y[: len(scores[method])]
