"""Post-hoc calibration on a validation split, scikit-learn style (``fit`` returns ``self``; ``predict_proba``;
``confidence`` = the estimated probability that the prediction is correct): :class:`TemperatureScaling` (Guo et al.
2017), :func:`platt_fit` / :class:`PlattScaling` (Platt 1999, as scikit-learn's ``CalibratedClassifierCV(method=
"sigmoid")``), :class:`CombinedConfidence` (several confidences). Logits are ``N x C`` or, for a single-output model,
``N`` / ``N x 1``: the log-odds ``z`` of class 1, read as the two columns ``(0, z)``.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from .metrics import _as_correct, _as_weights, as_array

__all__ = ["as_logits", "top_class_score", "fit_temperature", "TemperatureScaling", "platt_fit", "PlattScaling",
           "CombinedConfidence", "combination_confidences"]

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]


def as_logits(logits: ArrayLike, name: str = "logits") -> torch.Tensor:
    """``N x C`` float logits (a single output ``N`` / ``N x 1`` becomes ``N x 2`` = ``(0, z)``), checked."""
    t = (logits if isinstance(logits, torch.Tensor) else torch.as_tensor(np.asarray(logits))).detach()
    t = t.float() if not t.is_floating_point() else t
    if t.dim() == 1 or (t.dim() == 2 and t.shape[1] == 1):
        t = t.reshape(-1, 1)
        t = torch.cat([torch.zeros_like(t), t], dim=1)
    if t.dim() != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty N x C (or N: one binary logit), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains {int((~torch.isfinite(t)).sum())} NaN/Inf value(s)")
    return t


def _labels(labels: ArrayLike, n: int, n_classes: int, device: torch.device) -> torch.Tensor:
    if labels is None:
        raise ValueError("labels is None: give the N true labels of the validation examples")
    t = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    if t.is_floating_point() or t.dtype == torch.bool or t.shape != (n,):
        raise ValueError(f"labels must have length {n} (one integer per row of logits), got {t.dtype} of shape "
                         f"{tuple(t.shape)}")
    if int(t.min()) < 0 or int(t.max()) >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got min {int(t.min())} and max {int(t.max())}")
    return t.long().to(device)


def _like(p: torch.Tensor, like: ArrayLike):
    return p if isinstance(like, torch.Tensor) else p.cpu().numpy()


class _Calibrator:
    """What the calibrators of logits share: the fitted check and ``confidence``."""

    def _check_fitted(self, fitted: object) -> None:
        if fitted is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit(logits_val, labels_val) first")

    def confidence(self, logits: ArrayLike):
        """Calibrated probability of the predicted (arg-max logit) class, ``N`` (tensor or array, like ``logits``)."""
        z = as_logits(logits)
        return _like(self.predict_proba(z).gather(1, z.argmax(dim=1, keepdim=True)).squeeze(1), logits)


def top_class_score(logits: ArrayLike) -> torch.Tensor:
    """The top class's log-odds ``log p_max - log(1 - p_max) = z_max - logsumexp(z_others)`` (``N``), stably."""
    z = as_logits(logits)
    top = z.max(dim=1, keepdim=True)
    return top.values.squeeze(1) - torch.logsumexp(z.scatter(1, top.indices, float("-inf")), dim=1)


def fit_temperature(logits: ArrayLike, labels: ArrayLike, *, max_iter: int = 100) -> float:
    r"""``T* = argmin_T -(1/N) sum_i log softmax(z_i / T)_{y_i}`` (LBFGS on ``log T``, on the logits' device)."""
    z = as_logits(logits).double()
    y = _labels(labels, z.shape[0], z.shape[1], z.device)
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


class TemperatureScaling(_Calibrator):
    """``softmax(z / T)`` with ``T`` fitted on validation logits: ``TemperatureScaling().fit(z_val, y_val)``."""

    def __init__(self) -> None:
        self.temperature_: Optional[float] = None

    def fit(self, logits: ArrayLike, labels: ArrayLike) -> "TemperatureScaling":
        """Fit ``T`` on ``logits`` (``N x C``) and ``labels`` (``N``); returns ``self``."""
        self.temperature_ = fit_temperature(logits, labels)
        return self

    def predict_proba(self, logits: ArrayLike):
        """Calibrated class probabilities ``N x C`` (tensor in, tensor out; array in, array out)."""
        self._check_fitted(self.temperature_)
        return _like(torch.softmax(as_logits(logits).float() / self.temperature_, dim=1), logits)


def platt_fit(f: np.ndarray, y: np.ndarray, sample_weight: Optional[np.ndarray] = None,
              tol: float = 1e-12) -> Tuple[float, float]:
    """``(a, b)`` of ``P(y = 1 | f) = sigmoid(a f + b)``: the weighted log-loss against Platt's targets
    ``(N+ + 1)/(N+ + 2)`` and ``1/(N- + 2)`` (weighted counts), minimised by Newton steps with backtracking until
    the gradient of the mean loss is below ``tol``. ``f`` ``N`` floats, ``y`` ``N`` booleans."""
    w = np.ones(f.shape[0]) if sample_weight is None else sample_weight / sample_weight.mean()
    n_pos, n_neg = w[y].sum(), w[~y].sum()
    t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    x = np.stack([f, np.ones_like(f)], axis=1)
    theta = np.array([0.0, np.log((n_pos + 1.0) / (n_neg + 1.0))])

    def loss(th: np.ndarray) -> float:
        u = x @ th
        return float(np.mean(w * (np.logaddexp(0.0, u) - t * u)))

    for _ in range(200):
        p = expit(x @ theta)
        grad = x.T @ (w * (p - t)) / f.shape[0]
        if np.abs(grad).max() <= tol:
            break
        hess = (x * (w * p * (1 - p))[:, None]).T @ x / f.shape[0] + 1e-300 * np.eye(2)
        step, current, lr = np.linalg.solve(hess, grad), loss(theta), 1.0
        while loss(theta - lr * step) > current - 1e-4 * lr * (grad @ step) + 1e-14 * abs(current) and lr > 1e-10:
            lr /= 2  # Armijo backtracking (up to the loss's rounding error)
        if lr <= 1e-10:
            break  # at the floating-point floor of the loss
        theta = theta - lr * step
    return float(theta[0]), float(theta[1])


def _transform(s: np.ndarray, kind: str) -> np.ndarray:
    if kind == "logit":
        s = np.clip(s, 1e-6, 1 - 1e-6)
        return np.log(s) - np.log1p(-s)
    return np.log(np.maximum(s, 1e-12)) if kind == "log" else s


class PlattScaling(_Calibrator):
    r"""Platt scaling of a classifier's logits (``N x C``, or one binary logit ``N``).

    * ``mode="top"`` (default): :math:`\hat P(\text{correct}) = \sigma(a s + b)` on the top-class log-odds ``s``;
      ``predict_proba`` puts that mass on the predicted class and shares the rest as the softmax does.
    * ``mode="ovr"``: :math:`\sigma(a_k z_k + b_k)` per class against ``y == k``, renormalised to sum to 1; two
      classes get one sigmoid on ``z_1 - z_0`` (= the single logit), as scikit-learn does.
    """

    def __init__(self, mode: str = "top") -> None:
        if mode not in ("top", "ovr"):
            raise ValueError(f"mode must be 'top' or 'ovr', got {mode!r}")
        self.mode = mode
        self.params_: Optional[List[Tuple[float, float]]] = None
        self.coef_ = self.intercept_ = None

    def fit(self, logits: ArrayLike, labels: ArrayLike) -> "PlattScaling":
        """Fit on validation ``logits`` and ``labels`` (``N``); returns ``self``."""
        z = as_logits(logits).double()
        y = _labels(labels, z.shape[0], z.shape[1], z.device).cpu().numpy()
        cols = self._columns(z)
        if self.mode == "top":
            targets = [z.argmax(dim=1).cpu().numpy() == y]
        else:
            targets = [y == 1] if z.shape[1] == 2 else [y == k for k in range(z.shape[1])]
        if any(t.all() or not t.any() for t in targets):
            raise ValueError("labels (or the predictions' correctness) hold a single class for some sigmoid: "
                             "Platt scaling needs both outcomes in the validation set")
        self.params_ = [platt_fit(c, t) for c, t in zip(cols.T, targets)]
        self.coef_, self.intercept_ = self.params_[0] if self.mode == "top" else (None, None)  # a, b of the top fit
        return self

    def _columns(self, z: torch.Tensor) -> np.ndarray:
        if self.mode == "top":
            return top_class_score(z).double().cpu().numpy()[:, None]
        return (z[:, 1:] - z[:, :1] if z.shape[1] == 2 else z).cpu().numpy()

    def predict_proba(self, logits: ArrayLike):
        """Calibrated class probabilities ``N x C`` (tensor in, tensor out; array in, array out)."""
        self._check_fitted(self.params_)
        z = as_logits(logits)
        cols = self._columns(z)
        if cols.shape[1] != len(self.params_):
            raise ValueError(f"logits have {z.shape[1]} classes, the calibrator was fitted on another number")
        q = np.stack([expit(a * c + b) for (a, b), c in zip(self.params_, cols.T)], axis=1)
        q = torch.as_tensor(q, dtype=torch.float32, device=z.device)
        if self.mode == "ovr":
            if z.shape[1] == 2:
                return _like(torch.cat([1 - q, q], dim=1), logits)
            total = q.sum(dim=1, keepdim=True)
            return _like(torch.where(total > 0, q / total.clamp_min(1e-300), 1.0 / z.shape[1]), logits)
        p = torch.softmax(z.float(), dim=1)
        top = p.argmax(dim=1, keepdim=True)
        rest = p.scatter(1, top, 0.0)
        rest = rest / rest.sum(dim=1, keepdim=True).clamp_min(1e-30) * (1 - q)
        return _like(rest.scatter(1, top, q), logits)


class CombinedConfidence:
    """``P(correct)`` from several confidences: each mapped to an unbounded scale (``logit`` / ``log`` / identity,
    chosen on the fitting set) and standardised, then L2-regularised logistic regression (``model="logistic"``, a
    multi-feature Platt scaling) or histogram gradient-boosted trees (``model="gbm"``). Fit on validation only.

    Example: ``CombinedConfidence().fit({"platt": p_val, "abc": abc_val}, correct_val).confidence(test_dict)``.
    """

    def __init__(self, model: str = "logistic", C: float = 1.0, seed: int = 0) -> None:  # noqa: N803
        if model not in ("logistic", "gbm") or not C > 0:
            raise ValueError(f"model must be 'logistic' or 'gbm' and C > 0, got {model!r} and {C}")
        self.model, self.C, self.seed = model, C, seed
        self.feature_names_: Optional[List[str]] = None
        self._est = None

    def _matrix(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        if not isinstance(features, Mapping) or not features:
            raise ValueError("features must be a non-empty dict {name: N confidences}")
        names = self.feature_names_ or list(features)
        missing = [k for k in names if k not in features]
        if missing:
            raise ValueError(f"features lacks {missing}; the model was fitted on {names}")
        cols = [as_array(features[k], f"features[{k!r}]") for k in names]
        if len({c.shape[0] for c in cols}) != 1:
            raise ValueError(f"features must have the same length, got {[c.shape[0] for c in cols]}")
        return np.stack(cols, axis=1)

    def _unbounded(self, m: np.ndarray) -> np.ndarray:
        return np.stack([_transform(col, k) for col, k in zip(m.T, self.transforms_)], axis=1)

    def fit(self, features: Mapping[str, ArrayLike], correct: ArrayLike,
            sample_weight: ArrayLike = None) -> "CombinedConfidence":
        """Fit on ``features`` (``{name: N array}``) and ``correct`` (``N`` bools), weighted by ``sample_weight``."""
        self.feature_names_ = None
        m = self._matrix(features)
        c, w = _as_correct(correct, m.shape[0]), _as_weights(sample_weight, m.shape[0])
        if c.all() or not c.any():
            raise ValueError("correct contains a single class: cannot fit a model of P(correct)")
        self.feature_names_ = list(features)
        self.transforms_ = ["logit" if s.min() >= 0.0 and s.max() <= 1.0 else ("log" if s.min() > 0.0 else "identity")
                            for s in m.T]
        g = self._unbounded(m)
        self._mu, self._sd = g.mean(axis=0), np.maximum(g.std(axis=0), 1e-12)
        if self.model == "logistic":
            self._est = LogisticRegression(C=self.C, max_iter=1000)
        else:
            self._est = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                                       l2_regularization=1.0, random_state=self.seed)
        self._est.fit((g - self._mu) / self._sd, c, sample_weight=w)
        return self

    @property
    def coef_(self) -> Dict[str, float]:
        """Logistic weight per (standardised) feature: which confidence the combination leans on."""
        if self._est is None or self.model != "logistic":
            return {}
        return dict(zip(self.feature_names_, self._est.coef_[0].tolist()))

    def confidence(self, features: Mapping[str, ArrayLike]) -> np.ndarray:
        """``P(correct)`` per example, ``N``."""
        if self._est is None:
            raise RuntimeError("CombinedConfidence is not fitted yet; call fit(features_val, correct_val) first")
        return self._est.predict_proba((self._unbounded(self._matrix(features)) - self._mu) / self._sd)[:, 1]


def combination_confidences(val: Mapping[str, ArrayLike], correct_val: ArrayLike, test: Mapping[str, ArrayLike], *,
                            features: Sequence[str], sample_weight: ArrayLike = None,
                            models: Sequence[str] = ("logistic",), prefix: str = "") -> Dict[str, np.ndarray]:
    """``{"<prefix>combined (<model>)": N_test confidences}``: a :class:`CombinedConfidence` of ``features`` for
    each of ``models``, fitted on the validation dicts ``val`` / ``correct_val`` and applied to ``test``."""
    missing = [f for f in features if f not in val or f not in test]
    if missing:
        raise ValueError(f"features {missing} are missing from val or test")
    val_x, test_x = {f: val[f] for f in features}, {f: test[f] for f in features}
    return {f"{prefix}combined ({m})": CombinedConfidence(m).fit(val_x, correct_val, sample_weight).confidence(test_x)
            for m in models}
