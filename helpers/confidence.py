"""Confidence baselines for a classifier's predictions: max softmax, MC dropout, Trust Score, and ABC.

Each returns one score per input, higher = more likely correct:

* :func:`max_softmax` -- ``max_c softmax(z)_c`` (Hendrycks & Gimpel 2017).
* :func:`mc_dropout` -- ``T`` stochastic passes with only the ``nn.Dropout`` modules switched on (Gal & Ghahramani
  2016): the mean probability of the scored class and the fraction of passes that agree with it.
* :class:`TrustScore` -- ``d(x, nearest other class) / d(x, predicted class)`` on penultimate features (Jiang, Kim,
  Guan & Gupta 2018), k-NN distances computed with batched ``torch.cdist`` on the features' device.
* :func:`penultimate_features` -- the ``.features(x)`` of a model, chunked, under inference mode.

ABC itself is :func:`helpers.abc.abc_confidence`; the calibrated combinations are in :mod:`helpers.calibration`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional, Union

import numpy as np
import torch
from torch import nn

from .batching import bytes_per_image, chunk_size_for, forward, run_chunked
from .validation import check_images, check_model, check_positive_int, check_target, model_device

__all__ = ["max_softmax", "dropout_enabled", "MCDropoutResult", "mc_dropout", "penultimate_features", "TrustScore",
           "baseline_confidences", "ConfidenceSuite", "shift_sweep"]


def max_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``max_c softmax(logits)_c`` (``N x C`` -> ``N``)."""
    if logits.dim() != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty N x C tensor, got shape {tuple(logits.shape)}")
    return torch.softmax(logits.float(), dim=1).max(dim=1).values


@contextlib.contextmanager
def dropout_enabled(model: nn.Module) -> Iterator[nn.Module]:
    """Switch only the ``nn.Dropout*`` modules to train mode inside the block (batch-norm etc. stay in eval)."""
    drops = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    if not drops:
        raise ValueError("model has no nn.Dropout module: MC dropout needs a model trained with dropout "
                         "(e.g. get_model('cnn_dropout'))")
    states = [m.training for m in drops]
    try:
        for m in drops:
            m.train()
        yield model
    finally:
        for m, s in zip(drops, states):
            m.train(s)


@dataclass
class MCDropoutResult:
    """MC-dropout statistics (CPU tensors).

    Attributes:
        mean_probs: ``N x C``, softmax averaged over the ``T`` passes.
        scored: LongTensor ``N``, the class each input is scored on (``target``, or the arg-max of ``mean_probs``).
        confidence: ``N``, ``mean_probs`` at ``scored``.
        agreement: ``N``, fraction of passes whose arg-max equals ``scored``.
        entropy: ``N``, entropy of ``mean_probs`` (nats; high = uncertain).
    """

    mean_probs: torch.Tensor
    scored: torch.Tensor
    confidence: torch.Tensor
    agreement: torch.Tensor
    entropy: torch.Tensor


def mc_dropout(model: nn.Module, x: torch.Tensor, *, n_passes: int = 20, target: Optional[torch.Tensor] = None,
               seed: int = 0, chunk_size: Optional[int] = None) -> MCDropoutResult:
    """``T = n_passes`` stochastic forward passes of ``model`` (dropout on, everything else in eval mode).

    Each chunk of ``b`` inputs is repeated ``T`` times into one batch of ``b T`` images (dropout masks are drawn per
    row, so the copies are independent passes) and run on the model's device. The dropout RNG of the chunk starting
    at input ``a`` is seeded with ``seed + a`` inside a forked RNG state, so results do not depend on other code.

    Args:
        model: an eval-mode model with ``nn.Dropout`` modules, logits ``N x C``.
        x: ``N x 1 x 28 x 28``.
        n_passes: ``T``.
        target: class to score (``N``; e.g. another model's prediction), default the MC-averaged arg-max.
    """
    check_model(model)
    check_images(x)
    check_positive_int(n_passes, "n_passes")
    target = check_target(target, x.shape[0])
    dev = model_device(model)
    bs = chunk_size or max(1, chunk_size_for(bytes_per_image(x) * n_passes, device=dev))

    def run(a: int, b: int) -> torch.Tensor:
        xb = x[a:b].to(dev)
        rep = xb.repeat_interleave(n_passes, dim=0)
        devices = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed + a)
            probs = torch.softmax(model(rep).float(), dim=1)
        return probs.view(b - a, n_passes, -1).cpu()

    with dropout_enabled(model):
        probs = run_chunked(run, x.shape[0], bs)  # N x T x C
    mean = probs.mean(dim=1)
    scored = mean.argmax(dim=1) if target is None else target.cpu()
    conf = mean.gather(1, scored.unsqueeze(1)).squeeze(1)
    agree = (probs.argmax(dim=2) == scored.unsqueeze(1)).float().mean(dim=1)
    entropy = -(mean * mean.clamp_min(1e-12).log()).sum(dim=1)
    return MCDropoutResult(mean, scored, conf, agree, entropy)


def penultimate_features(model: nn.Module, x: torch.Tensor, *, batch_size: Optional[int] = None) -> torch.Tensor:
    """``model.features(x)`` (``N x D``, e.g. ``N x 128`` for :class:`helpers.models.MnistCNN`), chunked, on the
    model's device, under inference mode."""
    check_model(model)
    check_images(x)
    if not hasattr(model, "features"):
        raise ValueError(f"{type(model).__name__} has no .features(x) method giving penultimate features")
    dev = model_device(model)
    bs = batch_size or chunk_size_for(bytes_per_image(x), device=dev)

    def run(a: int, b: int) -> torch.Tensor:
        with torch.inference_mode():
            return model.features(x[a:b].to(dev)).flatten(1)

    return run_chunked(run, x.shape[0], bs)


def _kth_distance(q: torch.Tensor, ref: torch.Tensor, k: int, chunk: Optional[int] = None) -> torch.Tensor:
    """Euclidean distance from each row of ``q`` (``M x D``) to its ``k``-th nearest row of ``ref`` (``R x D``)."""
    k_eff = min(k, ref.shape[0])
    bs = chunk or chunk_size_for(max(1, ref.shape[0]) * 4 * 3, device=q.device, maximum=8192)

    def run(a: int, b: int) -> torch.Tensor:
        d = torch.cdist(q[a:b].float(), ref.float(), compute_mode="donot_use_mm_for_euclid_dist")
        return d.topk(k_eff, dim=1, largest=False).values[:, -1]

    return run_chunked(run, q.shape[0], bs)


class TrustScore:
    r"""Trust Score (Jiang et al. 2018): :math:`\frac{d(x, \hat H_{\tilde c})}{d(x, \hat H_{c}) + \epsilon}`.

    ``c`` is the predicted class, :math:`\tilde c` the closest *other* class, and :math:`d(x, \hat H_c)` the distance
    from ``x`` to its ``k``-th nearest training point of class ``c`` (``k=2`` as in the authors' code), after the
    optional density filter that drops the ``alpha`` fraction of each class's training points with the largest
    ``k_filter``-NN radius. Distances are exact (batched ``torch.cdist`` on the features' device), so this equals
    the authors' KD-tree implementation.

    Example::

        ts = TrustScore().fit(penultimate_features(model, x_train), y_train)
        score = ts.score(penultimate_features(model, x_test), predicted)   # N, > 1 = nearer the predicted class
    """

    def __init__(self, k: int = 2, alpha: float = 0.0, k_filter: int = 10, min_dist: float = 1e-12) -> None:
        check_positive_int(k, "k")
        check_positive_int(k_filter, "k_filter")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
        self.k, self.alpha, self.k_filter, self.min_dist = k, alpha, k_filter, min_dist
        self.class_features_: Optional[list] = None

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> "TrustScore":
        """Store the (filtered) training features of each class. ``features`` ``N x D``, ``labels`` ``N``."""
        features = torch.as_tensor(features)
        if features.dim() != 2 or features.shape[0] == 0:
            raise ValueError(f"features must be a non-empty N x D tensor, got shape {tuple(features.shape)}")
        if not bool(torch.isfinite(features).all()):
            raise ValueError("features contains NaN/Inf values")
        labels = check_target(torch.as_tensor(labels), features.shape[0], name="labels").to(features.device)
        n_classes = int(labels.max()) + 1
        self.class_features_ = []
        for c in range(n_classes):
            fc = features[labels == c]
            if fc.shape[0] == 0:
                raise ValueError(f"labels has no example of class {c}: every class needs training points")
            if self.alpha > 0 and fc.shape[0] > self.k_filter:
                radius = _kth_distance(fc, fc, self.k_filter)  # includes the point itself, as a KD-tree query does
                keep = radius <= torch.quantile(radius.double(), 1.0 - self.alpha).to(radius.dtype)
                fc = fc[keep]
            self.class_features_.append(fc)
        return self

    def class_distances(self, features: torch.Tensor) -> torch.Tensor:
        """``N x C``: distance from each row to its ``k``-th nearest training point of each class."""
        if self.class_features_ is None:
            raise RuntimeError("TrustScore is not fitted yet; call fit(train_features, train_labels) first")
        features = torch.as_tensor(features)
        if features.dim() != 2 or features.shape[0] == 0:
            raise ValueError(f"features must be a non-empty N x D tensor, got shape {tuple(features.shape)}")
        if not bool(torch.isfinite(features).all()):
            raise ValueError("features contains NaN/Inf values")
        return torch.stack([_kth_distance(features, fc.to(features.device), self.k)
                            for fc in self.class_features_], dim=1)

    def score(self, features: torch.Tensor, predicted: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        """Trust score ``N`` of the predictions ``predicted`` (``N``) for rows of ``features`` (``N x D``)."""
        d = self.class_distances(features)
        pred = check_target(torch.as_tensor(predicted), d.shape[0], d.shape[1], name="predicted").to(d.device)
        d_pred = d.gather(1, pred.unsqueeze(1)).squeeze(1)
        d_other = d.scatter(1, pred.unsqueeze(1), float("inf")).min(dim=1).values
        return d_other / (d_pred + self.min_dist)


def baseline_confidences(model: nn.Module, splits: dict, *, calibrate_on: Union[str, tuple] = "val",
                         dropout_model: Optional[nn.Module] = None, n_passes: int = 20,
                         trust_train: Optional[tuple] = None, seed: int = 0, timings: Optional[dict] = None) -> dict:
    """Every logit- and feature-based confidence of ``model``'s predictions on each split.

    Args:
        model: the classifier whose predictions are scored (eval mode; ``.features`` for Trust Score).
        splits: ``{name: (x, y)}``.
        calibrate_on: the split temperature / Platt are fitted on, or a ``(logits, labels)`` pair of another
            (e.g. larger) validation set.
        dropout_model: a model with dropout (``get_model("cnn_dropout")``): its MC-dropout passes score ``model``'s
            prediction (mean probability and agreement); skipped when ``None``.
        trust_train: ``(x_train, y_train)`` for Trust Score on ``model``'s penultimate features; skipped when ``None``.
        timings: a dict that receives seconds per method (for the performance table).

    Returns:
        ``{split: {"pred", "correct", "logits", "max softmax", "temperature", "platt", "platt (ovr)",
        ["mc dropout", "mc agreement"], ["trust score"]}}``; numpy arrays (logits: a tensor).
    """
    import time

    from .calibration import PlattScaling, TemperatureScaling

    if isinstance(calibrate_on, str) and calibrate_on not in splits:
        raise ValueError(f"splits must contain the calibration split {calibrate_on!r}, got {list(splits)}")
    timings = {} if timings is None else timings
    clock = time.perf_counter
    out: dict = {}
    t0 = clock()
    for name, (x, y) in splits.items():
        z = forward(model, x)
        pred = z.argmax(dim=1).cpu()
        out[name] = {"logits": z, "pred": pred.numpy(), "correct": (pred == y.cpu()).numpy(),
                     "max softmax": max_softmax(z).cpu().numpy()}
    timings["forward + max softmax"] = clock() - t0
    if isinstance(calibrate_on, str):
        zc, yc = out[calibrate_on]["logits"], splits[calibrate_on][1]
    else:  # (logits, labels) of a (larger) calibration set
        zc, yc = calibrate_on
    t0 = clock()
    cals = {"temperature": TemperatureScaling().fit(zc, yc), "platt": PlattScaling().fit(zc, yc),
            "platt (ovr)": PlattScaling("ovr").fit(zc, yc)}
    for name in splits:
        for key, cal in cals.items():
            c = cal.confidence(out[name]["logits"])
            out[name][key] = c.cpu().numpy() if isinstance(c, torch.Tensor) else np.asarray(c)
    timings["temperature + platt"] = clock() - t0
    if dropout_model is not None:
        t0 = clock()
        for name, (x, _) in splits.items():
            r = mc_dropout(dropout_model, x, n_passes=n_passes, target=torch.as_tensor(out[name]["pred"]), seed=seed)
            out[name]["mc dropout"] = r.confidence.numpy()
            out[name]["mc agreement"] = r.agreement.numpy()
        timings[f"mc dropout (T={n_passes})"] = clock() - t0
    if trust_train is not None:
        t0 = clock()
        ts = TrustScore().fit(penultimate_features(model, trust_train[0]), trust_train[1].to(model_device(model)))
        for name, (x, _) in splits.items():
            out[name]["trust score"] = ts.score(penultimate_features(model, x),
                                                torch.as_tensor(out[name]["pred"])).cpu().numpy()
        timings["trust score"] = clock() - t0
    return out


class ConfidenceSuite:
    """Every confidence of one model's predictions, fitted once and applied to any batch (clean or shifted).

    ``fit`` fits temperature and Platt scaling on validation logits and Trust Score on training features;
    ``scores(x)`` returns ``{"pred", "max softmax", "temperature", "platt", ["mc dropout", "mc agreement"],
    ["trust score"], [ABC methods]}`` as numpy arrays. ABC is computed on the first ``abc_n`` inputs only (it costs
    ``S`` forward passes per input), so its arrays may be shorter than the others.
    """

    def __init__(self, model: nn.Module, *, dropout_model: Optional[nn.Module] = None, n_passes: int = 20,
                 abc_methods: Optional[dict] = None, abc_samples: int = 100, seed: int = 0) -> None:
        check_model(model)
        self.model, self.dropout_model, self.n_passes = model, dropout_model, n_passes
        self.abc_methods = dict(abc_methods or {})
        self.abc_samples, self.seed = abc_samples, seed
        self.calibrators_: dict = {}
        self.trust_: Optional[TrustScore] = None

    def fit(self, x_val: torch.Tensor, y_val: torch.Tensor, x_train: Optional[torch.Tensor] = None,
            y_train: Optional[torch.Tensor] = None) -> "ConfidenceSuite":
        """Fit temperature / Platt on ``(x_val, y_val)`` and Trust Score on ``(x_train, y_train)`` (if given)."""
        from .calibration import PlattScaling, TemperatureScaling

        z = forward(self.model, x_val)
        self.calibrators_ = {"temperature": TemperatureScaling().fit(z, y_val), "platt": PlattScaling().fit(z, y_val)}
        if x_train is not None:
            if y_train is None:
                raise ValueError("y_train is required with x_train (Trust Score needs the training labels)")
            self.trust_ = TrustScore().fit(penultimate_features(self.model, x_train),
                                           y_train.to(model_device(self.model)))
        return self

    def scores(self, x: torch.Tensor, *, abc_n: Optional[int] = None) -> dict:
        """All confidences of the model's predictions on ``x`` (``N x 1 x 28 x 28``); see the class docstring."""
        from .abc import abc_confidence

        if not self.calibrators_:
            raise RuntimeError("ConfidenceSuite is not fitted yet; call fit(x_val, y_val, ...) first")
        z = forward(self.model, x)
        pred = z.argmax(dim=1)
        out = {"pred": pred.cpu().numpy(), "max softmax": max_softmax(z).cpu().numpy()}
        for k, cal in self.calibrators_.items():
            c = cal.confidence(z)
            out[k] = c.cpu().numpy() if isinstance(c, torch.Tensor) else np.asarray(c)
        if self.dropout_model is not None:
            r = mc_dropout(self.dropout_model, x, n_passes=self.n_passes, target=pred.cpu(), seed=self.seed)
            out["mc dropout"], out["mc agreement"] = r.confidence.numpy(), r.agreement.numpy()
        if self.trust_ is not None:
            out["trust score"] = self.trust_.score(penultimate_features(self.model, x), pred).cpu().numpy()
        n = x.shape[0] if abc_n is None else min(abc_n, x.shape[0])
        dev = model_device(self.model)
        for name, opts in self.abc_methods.items():
            out[name] = abc_confidence(self.model, x[:n].to(dev), n_samples=self.abc_samples, seed=self.seed,
                                       **opts).cpu().numpy()
        return out


def shift_sweep(suite: ConfidenceSuite, x: torch.Tensor, y: torch.Tensor, grids: dict, *,
                abc_n: Optional[int] = None, seed: int = 0) -> tuple:
    """Accuracy and every confidence of ``suite.model`` against shift strength.

    Args:
        grids: ``{kind: strengths}`` with kinds of :func:`helpers.shifts.apply_shift` (attacks are white-box against
            ``suite.model``).
        abc_n: ABC on the first ``abc_n`` images of each shifted batch.

    Returns:
        ``rows`` (list of dicts: ``kind``, ``strength``, ``method``, ``mean_confidence``, ``accuracy`` -- the accuracy
        on the same images the method was averaged over -- and ``error_auroc`` where both right and wrong
        predictions exist) and ``scores`` (``{(kind, strength): scores dict + "correct"}``).
    """
    from .metrics import error_auroc
    from .shifts import apply_shift

    y_cpu = y.cpu().numpy()
    rows, scores = [], {}
    clean = None
    for kind, strengths in grids.items():
        for s in strengths:
            if float(s) == 0.0 and clean is not None:
                sc = clean  # strength 0 is the clean batch for every kind: computed once
            else:
                xs = apply_shift(kind, x, float(s), y=y, model=suite.model, seed=seed)
                sc = suite.scores(xs, abc_n=abc_n)
                sc["correct"] = sc["pred"] == y_cpu
                if float(s) == 0.0:
                    clean = sc
            correct = sc["correct"]
            scores[(kind, float(s))] = sc
            for method, conf in sc.items():
                if method in ("pred", "correct"):
                    continue
                c = correct[: len(conf)]
                row = {"kind": kind, "strength": float(s), "method": method, "mean_confidence": float(np.mean(conf)),
                       "accuracy": float(c.mean()), "n": int(len(conf))}
                row["error_auroc"] = error_auroc(conf, c) if 0 < c.sum() < len(c) else float("nan")
                rows.append(row)
    return rows, scores
