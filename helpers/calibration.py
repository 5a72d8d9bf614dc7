"""Post-hoc calibration on a validation split: temperature scaling, Platt scaling, and combined confidences.

scikit-learn style: ``fit(...)`` returns ``self``; ``predict_proba(...)`` gives probabilities; ``confidence(...)``
gives one number per example, the estimated probability that the prediction is correct.

* :class:`TemperatureScaling` (Guo et al. 2017): ``softmax(z / T)`` with ``T`` minimising the validation NLL (LBFGS
  on ``log T``, on the logits' device). :func:`fit_temperature` is the bare function.
* :class:`PlattScaling` (Platt 1999): ``mode="top"`` fits ``P(correct) = sigmoid(a s + b)`` on the top-class score
  ``s = log p_max - log(1 - p_max)`` (binary Platt on the prediction's own score); ``mode="ovr"`` calibrates every
  class one-vs-rest with scikit-learn's ``CalibratedClassifierCV(method="sigmoid")`` and renormalises.
* :class:`ScoreCalibrator`: binary Platt on any score (ABC, Trust Score, MC-dropout agreement) -> ``P(correct)``.
* :class:`CombinedConfidence`: a logistic model (or gradient-boosted trees) of "the prediction is correct" from
  several confidences; fit it on the validation split only and judge it on the test split only.
* :func:`product_confidence`, :func:`min_confidence`: the simple combinations.

Bad input (NaN, mismatched lengths, an empty set, a single class in ``correct``) raises ``ValueError`` naming it.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import _as_weights as _weights  # one validation of sample_weight for both modules
from .metrics import as_array

__all__ = [
    "fit_temperature",
    "TemperatureScaling",
    "PlattScaling",
    "ScoreCalibrator",
    "CombinedConfidence",
    "product_confidence",
    "min_confidence",
    "top_class_score",
    "combination_confidences",
]

_EPS = 1e-6
ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]


# ----------------------------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------------------------

def _logits_tensor(logits: ArrayLike, name: str = "logits") -> torch.Tensor:
    t = logits if isinstance(logits, torch.Tensor) else torch.as_tensor(np.asarray(logits))
    if not t.is_floating_point():
        t = t.float()
    if t.dim() != 2:
        raise ValueError(f"{name} must be N x C, got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows): cannot fit or evaluate on an empty set")
    if t.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 classes (columns), got {t.shape[1]}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains {int((~torch.isfinite(t)).sum())} NaN/Inf value(s)")
    return t.detach()


def _labels_tensor(labels: ArrayLike, n: int, n_classes: int, device: torch.device) -> torch.Tensor:
    t = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor/array, got dtype {t.dtype}")
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"labels must have length {n} (one per row of logits), got shape {tuple(t.shape)}")
    if int(t.min()) < 0 or int(t.max()) >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got min {int(t.min())} and max {int(t.max())}")
    return t.long().to(device)


def _correct_array(correct: ArrayLike, n: int) -> np.ndarray:
    c = as_array(correct, "correct")
    if c.shape[0] != n:
        raise ValueError(f"correct has length {c.shape[0]} but the confidences have length {n}: they must match")
    if not np.isin(c, (0.0, 1.0)).all():
        raise ValueError("correct must hold booleans or 0/1 values")
    c = c.astype(bool)
    if c.all() or not c.any():
        raise ValueError(f"correct contains a single class (every prediction is {'correct' if c.all() else 'wrong'}): "
                         "cannot fit a model of P(correct)")
    return c


def _proba_tensor(p: torch.Tensor, like: ArrayLike):
    """Return ``p`` as a tensor when the input was a tensor, else as a numpy array."""
    return p if isinstance(like, torch.Tensor) else p.cpu().numpy()


def top_class_score(logits: ArrayLike) -> torch.Tensor:
    """The top class's log-odds ``log p_max - log(1 - p_max) = z_max - logsumexp(z_others)`` (``N``), computed stably."""
    z = _logits_tensor(logits)
    top = z.max(dim=1, keepdim=True)
    others = z.scatter(1, top.indices, float("-inf"))
    return (top.values.squeeze(1) - torch.logsumexp(others, dim=1)).float()


# ----------------------------------------------------------------------------------------------------------------
# temperature scaling
# ----------------------------------------------------------------------------------------------------------------

def fit_temperature(logits: ArrayLike, labels: ArrayLike, *, max_iter: int = 100) -> float:
    r"""The temperature :math:`T^\star = \arg\min_T \frac1N\sum_i -\log \mathrm{softmax}(z_i / T)_{y_i}` (LBFGS on log T).

    Args:
        logits: ``N x C`` validation logits (on any device; the fit runs there).
        labels: ``N`` true labels.

    Returns:
        ``T > 0`` as a float (``T > 1`` softens an over-confident model).
    """
    z = _logits_tensor(logits).double()
    y = _labels_tensor(labels, z.shape[0], z.shape[1], z.device)
    log_t = torch.zeros((), dtype=torch.float64, device=z.device, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.inference_mode(False), torch.enable_grad():
        opt.step(closure)
    return float(log_t.detach().exp())


class TemperatureScaling:
    """``softmax(z / T)`` with ``T`` fitted on validation logits by minimising the NLL.

    Example::

        ts = TemperatureScaling().fit(logits_val, y_val)
        conf = ts.confidence(logits_test)      # N, max calibrated probability
    """

    def __init__(self) -> None:
        self.temperature_: Optional[float] = None

    def fit(self, logits: ArrayLike, labels: ArrayLike) -> "TemperatureScaling":
        """Fit ``T`` on ``logits`` (``N x C``) and ``labels`` (``N``); returns ``self``."""
        self.temperature_ = fit_temperature(logits, labels)
        return self

    def _check_fitted(self) -> float:
        if self.temperature_ is None:
            raise RuntimeError("TemperatureScaling is not fitted yet; call fit(logits_val, labels_val) first")
        return self.temperature_

    def predict_proba(self, logits: ArrayLike):
        """Calibrated class probabilities ``N x C`` (tensor in, tensor out; array in, array out)."""
        t = self._check_fitted()
        z = _logits_tensor(logits)
        return _proba_tensor(torch.softmax(z.float() / t, dim=1), logits)

    def confidence(self, logits: ArrayLike):
        """Max calibrated probability ``N``."""
        p = self.predict_proba(logits)
        return p.max(dim=1).values if isinstance(p, torch.Tensor) else p.max(axis=1)


# ----------------------------------------------------------------------------------------------------------------
# Platt scaling
# ----------------------------------------------------------------------------------------------------------------

class ScoreCalibrator:
    r"""Binary Platt scaling of any score: :math:`P(\text{correct}) = \sigma(a\,g(s) + b)`.

    ``g`` is the identity, or ``log`` for a positive unbounded score (Trust Score), or ``logit`` for a score in
    ``[0, 1]`` (ABC, agreement); ``transform="auto"`` picks one from the fitted scores' range. Platt's target
    smoothing ``(N_+ + 1)/(N_+ + 2)``, ``1/(N_- + 2)`` keeps a nearly separable set from giving an infinite slope.
    """

    def __init__(self, transform: str = "auto") -> None:
        if transform not in ("auto", "identity", "log", "logit"):
            raise ValueError(f"transform must be 'auto', 'identity', 'log' or 'logit', got {transform!r}")
        self.transform = transform
        self.coef_: Optional[float] = None
        self.intercept_: Optional[float] = None
        self.transform_: Optional[str] = None

    @staticmethod
    def _auto(s: np.ndarray) -> str:
        if s.min() >= 0.0 and s.max() <= 1.0:
            return "logit"
        if s.min() > 0.0:
            return "log"
        return "identity"

    def _g(self, s: np.ndarray) -> np.ndarray:
        if self.transform_ == "logit":
            s = np.clip(s, _EPS, 1 - _EPS)
            return np.log(s) - np.log1p(-s)
        if self.transform_ == "log":
            return np.log(np.maximum(s, 1e-12))
        return s

    def fit(self, score: ArrayLike, correct: ArrayLike,
            sample_weight: Optional[ArrayLike] = None) -> "ScoreCalibrator":
        """Fit ``a, b`` on validation ``score`` (``N``) and ``correct`` (``N`` bools); returns ``self``.

        ``sample_weight`` (``N``, > 0) weights the log-loss, e.g. to undo an error-enriched subset.
        """
        s = as_array(score, "score")
        c = _correct_array(correct, s.shape[0])
        w = _weights(sample_weight, s.shape[0])
        self.transform_ = self._auto(s) if self.transform == "auto" else self.transform
        g = self._g(s)
        n_pos, n_neg = float(w[c].sum()), float(w[~c].sum())
        target = np.where(c, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
        gt = torch.as_tensor(g, dtype=torch.float64)
        tt = torch.as_tensor(target, dtype=torch.float64)
        wt = torch.as_tensor(w / w.mean(), dtype=torch.float64)
        mu, sd = float(gt.mean()), float(gt.std().clamp_min(1e-12)) if gt.numel() > 1 else 1.0
        params = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([params], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(params[0] * (gt - mu) / sd + params[1], tt, weight=wt)
            loss.backward()
            return loss

        with torch.inference_mode(False), torch.enable_grad():
            opt.step(closure)
        a, b = params.detach().tolist()
        self.coef_ = a / sd
        self.intercept_ = b - a * mu / sd
        return self

    def confidence(self, score: ArrayLike) -> np.ndarray:
        """``P(correct)`` for each score (``N``, numpy)."""
        if self.coef_ is None:
            raise RuntimeError("ScoreCalibrator is not fitted yet; call fit(score_val, correct_val) first")
        s = as_array(score, "score")
        return 1.0 / (1.0 + np.exp(-(self.coef_ * self._g(s) + self.intercept_)))

    predict = confidence


class _LogitsClassifier:
    """A fitted 'classifier' whose input *is* the logits: lets scikit-learn's CalibratedClassifierCV calibrate them."""

    _estimator_type = "classifier"

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.classes_ = np.arange(n_classes)

    def fit(self, X, y=None):  # noqa: N803 - scikit-learn API
        return self

    def decision_function(self, X):  # noqa: N803
        return np.asarray(X, dtype=np.float64)

    def predict(self, X):  # noqa: N803
        return np.asarray(X).argmax(axis=1)

    def get_params(self, deep: bool = True) -> Dict[str, int]:
        return {"n_classes": self.n_classes}

    def set_params(self, **params):
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())


class PlattScaling:
    r"""Platt scaling of a multi-class model's logits.

    * ``mode="top"`` (default): binary Platt on the top-class score ``s = log p_max - log(1 - p_max)``:
      :math:`\hat P(\text{correct}) = \sigma(a s + b)`. ``predict_proba`` puts that mass on the predicted class and
      shares ``1 - \hat P`` among the others in proportion to their softmax probabilities.
    * ``mode="ovr"``: one sigmoid per class on its logit (scikit-learn ``CalibratedClassifierCV(method="sigmoid")``
      around the frozen logits), renormalised to sum to 1.
    """

    def __init__(self, mode: str = "top") -> None:
        if mode not in ("top", "ovr"):
            raise ValueError(f"mode must be 'top' or 'ovr', got {mode!r}")
        self.mode = mode
        self._binary: Optional[ScoreCalibrator] = None
        self._ovr = None

    def fit(self, logits: ArrayLike, labels: ArrayLike) -> "PlattScaling":
        """Fit on validation ``logits`` (``N x C``) and ``labels`` (``N``); returns ``self``."""
        z = _logits_tensor(logits)
        y = _labels_tensor(labels, z.shape[0], z.shape[1], z.device)
        if self.mode == "top":
            correct = (z.argmax(dim=1) == y).cpu().numpy()
            self._binary = ScoreCalibrator("identity").fit(top_class_score(z).cpu().numpy(), correct)
        else:
            from sklearn.calibration import CalibratedClassifierCV
            from sklearn.frozen import FrozenEstimator

            if torch.unique(y).numel() < 2:
                raise ValueError("labels contain a single class: one-vs-rest Platt scaling needs several classes")
            self._ovr = CalibratedClassifierCV(FrozenEstimator(_LogitsClassifier(z.shape[1])), method="sigmoid")
            self._ovr.fit(z.double().cpu().numpy(), y.cpu().numpy())
        return self

    @property
    def coef_(self) -> Optional[float]:
        """Slope ``a`` of the top-class Platt fit (``mode="top"``)."""
        return None if self._binary is None else self._binary.coef_

    @property
    def intercept_(self) -> Optional[float]:
        """Intercept ``b`` of the top-class Platt fit (``mode="top"``)."""
        return None if self._binary is None else self._binary.intercept_

    def _check_fitted(self) -> None:
        if self._binary is None and self._ovr is None:
            raise RuntimeError("PlattScaling is not fitted yet; call fit(logits_val, labels_val) first")

    def predict_proba(self, logits: ArrayLike):
        """Calibrated class probabilities ``N x C`` (tensor in, tensor out; array in, array out)."""
        self._check_fitted()
        z = _logits_tensor(logits)
        if self.mode == "ovr":
            p = torch.as_tensor(self._ovr.predict_proba(z.double().cpu().numpy()), dtype=torch.float32)
            return _proba_tensor(p.to(z.device), logits)
        conf = torch.as_tensor(self._binary.confidence(top_class_score(z).cpu().numpy()), dtype=torch.float32,
                               device=z.device)
        p = torch.softmax(z.float(), dim=1)
        top = p.argmax(dim=1, keepdim=True)
        rest = p.scatter(1, top, 0.0)
        rest = rest / rest.sum(dim=1, keepdim=True).clamp_min(1e-30) * (1 - conf).unsqueeze(1)
        return _proba_tensor(rest.scatter(1, top, conf.unsqueeze(1)), logits)

    def confidence(self, logits: ArrayLike):
        """Calibrated probability of the predicted (arg-max logit) class, ``N``."""
        self._check_fitted()
        if self.mode == "top":
            z = _logits_tensor(logits)
            c = torch.as_tensor(self._binary.confidence(top_class_score(z).cpu().numpy()), dtype=torch.float32)
            return c.to(z.device) if isinstance(logits, torch.Tensor) else c.numpy()
        p = self.predict_proba(logits)
        z = _logits_tensor(logits)
        pred = z.argmax(dim=1)
        if isinstance(p, torch.Tensor):
            return p.gather(1, pred.unsqueeze(1)).squeeze(1)
        return p[np.arange(p.shape[0]), pred.cpu().numpy()]


# ----------------------------------------------------------------------------------------------------------------
# combinations
# ----------------------------------------------------------------------------------------------------------------

def _feature_matrix(features: Union[Mapping[str, ArrayLike], ArrayLike],
                    names: Optional[List[str]] = None) -> (np.ndarray, List[str]):
    if isinstance(features, Mapping):
        if not features:
            raise ValueError("features is empty: give at least one confidence")
        keys = list(features) if names is None else names
        missing = [k for k in keys if k not in features]
        if missing:
            raise ValueError(f"features lacks {missing}; the model was fitted on {keys}")
        cols = [as_array(features[k], f"features[{k!r}]") for k in keys]
        lengths = {c.shape[0] for c in cols}
        if len(lengths) != 1:
            raise ValueError(f"features must all have the same length, got {dict(zip(keys, [c.shape[0] for c in cols]))}")
        return np.stack(cols, axis=1), keys
    m = as_array(features, "features", ndim=2) if np.ndim(features if not hasattr(features, "detach")
                                                        else features.detach().cpu().numpy()) == 2 \
        else as_array(features, "features")[:, None]
    keys = [f"f{i}" for i in range(m.shape[1])] if names is None else names
    if m.shape[1] != len(keys):
        raise ValueError(f"features has {m.shape[1]} columns, the model was fitted on {len(keys)}")
    return m, keys


class CombinedConfidence:
    r"""A calibrated model of "the prediction is correct" from several confidences.

    Each feature is mapped to an unbounded scale first (``logit`` for a score in [0, 1], ``log`` for a positive
    unbounded one such as Trust Score, chosen on the fitting set), standardised, then

    * ``model="logistic"`` (default): :math:`P(\text{correct}) = \sigma(w^\top \tilde f + b)`, L2-regularised
      logistic regression (``C``) -- a multi-feature Platt scaling; calibrated by construction;
    * ``model="gbm"``: scikit-learn's histogram gradient-boosted trees (a non-linear lever), probabilities as given.

    Fit on the **validation** split only, evaluate on the **test** split only.

    Example::

        comb = CombinedConfidence().fit({"platt": p_val, "abc": abc_val}, correct_val)
        conf = comb.confidence({"platt": p_test, "abc": abc_test})
    """

    def __init__(self, model: str = "logistic", C: float = 1.0, seed: int = 0) -> None:  # noqa: N803
        if model not in ("logistic", "gbm"):
            raise ValueError(f"model must be 'logistic' or 'gbm', got {model!r}")
        if not C > 0:
            raise ValueError(f"C must be > 0, got {C}")
        self.model, self.C, self.seed = model, C, seed
        self.feature_names_: Optional[List[str]] = None
        self.transforms_: Optional[List[str]] = None
        self._est = None
        self._mu = self._sd = None

    def _transform(self, m: np.ndarray) -> np.ndarray:
        out = np.empty_like(m)
        for j, t in enumerate(self.transforms_):
            col = m[:, j]
            if t == "logit":
                col = np.clip(col, _EPS, 1 - _EPS)
                out[:, j] = np.log(col) - np.log1p(-col)
            elif t == "log":
                out[:, j] = np.log(np.maximum(col, 1e-12))
            else:
                out[:, j] = col
        return out

    def fit(self, features: Union[Mapping[str, ArrayLike], ArrayLike], correct: ArrayLike,
            sample_weight: Optional[ArrayLike] = None) -> "CombinedConfidence":
        """Fit on ``features`` (dict name -> ``N`` array, or an ``N x k`` matrix) and ``correct`` (``N`` bools).

        ``sample_weight`` (``N``, > 0) weights the examples, e.g. to undo an error-enriched subset
        (:func:`helpers.metrics.stratified_subset`).
        """
        m, names = _feature_matrix(features)
        c = _correct_array(correct, m.shape[0])
        w = _weights(sample_weight, m.shape[0])
        self.feature_names_ = names
        self.transforms_ = [ScoreCalibrator._auto(m[:, j]) for j in range(m.shape[1])]
        g = self._transform(m)
        self._mu, self._sd = g.mean(axis=0), np.maximum(g.std(axis=0), 1e-12)
        g = (g - self._mu) / self._sd
        if self.model == "logistic":
            from sklearn.linear_model import LogisticRegression

            self._est = LogisticRegression(C=self.C, max_iter=1000).fit(g, c, sample_weight=w)
        else:
            from sklearn.ensemble import HistGradientBoostingClassifier

            self._est = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                                       l2_regularization=1.0, random_state=self.seed).fit(g, c, sample_weight=w)
        return self

    @property
    def coef_(self) -> Dict[str, float]:
        """Logistic weights per (standardised) feature: which confidence the combination leans on."""
        if self._est is None or self.model != "logistic":
            return {}
        return dict(zip(self.feature_names_, self._est.coef_[0].tolist()))

    def predict_proba(self, features: Union[Mapping[str, ArrayLike], ArrayLike]) -> np.ndarray:
        """``N x 2`` probabilities of [wrong, correct]."""
        if self._est is None:
            raise RuntimeError("CombinedConfidence is not fitted yet; call fit(features_val, correct_val) first")
        m, _ = _feature_matrix(features, self.feature_names_)
        return self._est.predict_proba((self._transform(m) - self._mu) / self._sd)

    def confidence(self, features: Union[Mapping[str, ArrayLike], ArrayLike]) -> np.ndarray:
        """``P(correct)`` per example, ``N``."""
        return self.predict_proba(features)[:, 1]


def product_confidence(*confidences: ArrayLike) -> np.ndarray:
    """Element-wise product of confidences in [0, 1] (``N``): high only when every method is confident."""
    cols = _checked_columns(confidences, "product_confidence")
    return np.prod(cols, axis=0)


def min_confidence(*confidences: ArrayLike) -> np.ndarray:
    """Element-wise minimum of confidences (``N``): the most pessimistic method decides."""
    cols = _checked_columns(confidences, "min_confidence")
    return np.min(cols, axis=0)


def _checked_columns(confidences, fn: str) -> np.ndarray:
    if not confidences:
        raise ValueError(f"{fn} needs at least one confidence")
    cols = [as_array(c, f"confidences[{i}]") for i, c in enumerate(confidences)]
    if len({c.shape[0] for c in cols}) != 1:
        raise ValueError(f"{fn}: confidences must have the same length, got {[c.shape[0] for c in cols]}")
    return np.stack(cols)


def combination_confidences(val: Mapping[str, ArrayLike], correct_val: ArrayLike, test: Mapping[str, ArrayLike], *,
                            features: Sequence[str], base: str = "platt", sample_weight: Optional[ArrayLike] = None,
                            models: Sequence[str] = ("logistic",), simple: bool = True, seed: int = 0,
                            prefix: str = "") -> Dict[str, np.ndarray]:
    """Fit every combination of ``features`` on the validation split and return its confidence on the test split.

    * ``"<prefix>combined (<model>)"`` for each ``model`` in ``models``: :class:`CombinedConfidence` on ``features``.
    * ``"<prefix>product"`` / ``"<prefix>min"`` (when ``simple``): ``base`` times / minimum with every other feature
      first calibrated to ``P(correct)`` by :class:`ScoreCalibrator` (a product of uncalibrated scores would rank
      fine but mean nothing as a probability).

    Args:
        val, test: ``{name: N array}`` confidences on the validation and test examples (must hold ``features``).
        correct_val: ``N_val`` booleans. sample_weight: ``N_val`` weights (undo an enriched subset).
    """
    missing = [f for f in features if f not in val or f not in test]
    if missing:
        raise ValueError(f"features {missing} are missing from val or test")
    fv = {f: val[f] for f in features}
    ft = {f: test[f] for f in features}
    out: Dict[str, np.ndarray] = {}
    for model in models:
        comb = CombinedConfidence(model=model, seed=seed).fit(fv, correct_val, sample_weight=sample_weight)
        out[f"{prefix}combined ({model})"] = comb.confidence(ft)
    if simple and base in features and len(features) > 1:
        cal = [np.asarray(as_array(test[base], base))]
        for f in features:
            if f != base:
                sc = ScoreCalibrator().fit(val[f], correct_val, sample_weight=sample_weight)
                cal.append(sc.confidence(test[f]))
        out[f"{prefix}product"] = product_confidence(*cal)
        out[f"{prefix}min"] = min_confidence(*cal)
    return out
