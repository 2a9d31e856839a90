"""Group-robust retraining with (pseudo) group labels: DFR and JTT.

Two off-the-shelf strategies that ExMap feeds with its pseudo-groups (ExMap, Sec. 4.2 and
Table 6; chapter 04 "ExMap"):

* **DFR** -- Deep Feature Reweighting (Kirichenko et al., ICLR 2023): keep the ERM network, retrain
  only its last layer on a *group-balanced* set drawn from the validation split. Here: features
  standardised, an L1 logistic regression, the inverse regularisation ``C`` tuned on random
  half-splits of the validation set by worst-(pseudo-)group accuracy, and the final model the
  average of 20 fits on group-balanced subsamples (docs/design.md, "ExMap").
  :class:`DFR` works with true groups (oracle DFR) and with ExMap's or GEORGE's pseudo groups.
* **JTT** -- Just Train Twice (Liu et al., ICML 2021): train ERM for ``T`` epochs, collect the
  training samples it gets wrong (the error set), train a second model with those samples
  upweighted ``lambda`` times (:func:`jtt_weights`, :func:`jtt`). Model selection (which ``lambda``,
  which epoch) uses worst-group accuracy on the validation split -- with true groups in JTT, with
  ExMap's pseudo groups in JTT+ExMap.

This module takes tensors (embeddings, predictions); it does not train networks itself, except
:func:`jtt`, which receives the training function to use.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .checks import check_count, check_finite, check_labels, check_number

__all__ = ["C_GRID", "balanced_subsample", "DFR", "jtt_weights", "jtt", "NotFittedError"]

#: DFR's grid of inverse L1 regularisation strengths (DFR and ExMap code).
C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)


def _np(a, name):
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(a).__name__}")
    return a


class NotFittedError(RuntimeError, ValueError):
    """A :class:`DFR` used before :meth:`DFR.fit` (a ``RuntimeError`` and a ``ValueError``)."""


def _worst_group(pred: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    return min(float((pred[groups == g] == y[groups == g]).mean()) for g in np.unique(groups))


def balanced_subsample(groups: np.ndarray, rng: np.random.Generator, min_size: int = 5) -> np.ndarray:
    """Indices of a group-balanced subsample (DFR; ExMap's code).

    Every group is subsampled without replacement to the size of the smallest group that has
    more than ``min_size`` samples; smaller groups are kept whole (they are too small to set the
    budget but still carry information). Chapter 04.

    Parameters
    ----------
    groups : ndarray (N,) of group ids
    rng : numpy Generator
    min_size : int

    Returns
    -------
    ndarray of indices (sorted by group)
    """
    if isinstance(groups, torch.Tensor):
        groups = groups.detach().cpu().numpy()
    elif not isinstance(groups, np.ndarray):
        try:
            groups = np.asarray(groups)
        except (TypeError, ValueError) as err:
            raise TypeError(f"groups must be a 1-D array of integer group ids, got {type(groups).__name__}") from err
    if groups.ndim != 1:
        raise ValueError(f"groups must be a 1-D array of group ids (one per sample), got shape {groups.shape}")
    if groups.size == 0:
        raise ValueError("groups is empty: pass the group id of at least one sample")
    if groups.dtype.kind not in "iu":
        raise TypeError(f"groups must hold integer group ids, got dtype {groups.dtype}; use groups.astype(int)")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    check_count(min_size, "min_size", minimum=0)
    ids, counts = np.unique(groups, return_counts=True)
    big = counts[counts > min_size]
    budget = int(big.min()) if len(big) else int(counts.max())
    parts = []
    for g in ids:
        idx = np.flatnonzero(groups == g)
        parts.append(rng.permutation(idx)[:budget])
    return np.concatenate(parts)


class DFR:
    """Deep Feature Reweighting on validation embeddings with (pseudo) groups (Kirichenko et al.; ExMap Sec. 5).

    ``fit`` tunes ``C`` and fits the averaged last layer; ``predict`` classifies embeddings.
    Chapter 04.

    Parameters
    ----------
    c_grid : sequence of float
        Inverse L1 regularisation strengths to try (default :data:`C_GRID`).
    n_tune_splits : int
        Random half-splits of the validation set used to score each ``C`` (scores are summed).
        For each split, the model is trained on a group-balanced subsample of one half and scored by
        worst-group accuracy on the other half.
    n_refits : int
        Group-balanced subsamples of the whole validation set whose fits are averaged (DFR: 20).
    min_group_size : int
        Groups with at most this many samples do not set the balanced size (ExMap's code: 5).
    seed : int

    Attributes
    ----------
    best_c_ : float
    tune_scores_ : dict float -> mean worst-group accuracy on the held-out halves
    coef_ : ndarray (K', D), intercept_ : ndarray (K',)
        Averaged logistic-regression parameters on *standardised* embeddings
        (``K' = 1`` for two classes, as in scikit-learn).
    mean_, scale_ : ndarray (D,)
        The StandardScaler fitted on all validation embeddings.
    """

    def __init__(self, c_grid: Sequence[float] = C_GRID, *, n_tune_splits: int = 5, n_refits: int = 20,
                 min_group_size: int = 5, seed: int = 0):
        if isinstance(c_grid, (str, bytes)) or not hasattr(c_grid, "__iter__"):
            raise TypeError(f"c_grid must be a sequence of positive numbers (e.g. dfr.C_GRID), got "
                            f"{type(c_grid).__name__} {c_grid!r}; pass c=... to fit for a single C")
        c_grid = list(c_grid)
        if len(c_grid) == 0:
            raise ValueError(f"c_grid must hold positive numbers, got {c_grid!r}")
        for c in c_grid:
            check_number(c, "c_grid", low=0.0, low_open=True)
        for name, v in (("n_tune_splits", n_tune_splits), ("n_refits", n_refits)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        check_count(min_group_size, "min_group_size", minimum=0)
        check_count(seed, "seed", minimum=0)
        self.c_grid = tuple(float(c) for c in c_grid)
        self.n_tune_splits = n_tune_splits
        self.n_refits = n_refits
        self.min_group_size = min_group_size
        self.seed = seed

    # -- pieces -------------------------------------------------------------------------------
    def _logreg(self, c: float, n_classes: int):
        from sklearn.linear_model import LogisticRegression

        # scikit-learn >= 1.8 spells L1 as l1_ratio=1 (penalty= is deprecated); liblinear is DFR's solver
        # but handles two classes only, so more classes use saga.
        if n_classes == 2:
            return LogisticRegression(C=c, l1_ratio=1.0, solver="liblinear", random_state=self.seed)
        return LogisticRegression(C=c, l1_ratio=1.0, solver="saga", max_iter=2000, random_state=self.seed)

    @staticmethod
    def _scaler(x):
        from sklearn.preprocessing import StandardScaler

        return StandardScaler().fit(x)

    def _check(self, embeddings, y, groups=None):
        x = _np(embeddings, "embeddings").astype(np.float64)
        if x.ndim != 2:
            raise ValueError(f"embeddings must have shape (N, D), got {x.shape}; use train.embed(model, dataset)")
        if x.shape[0] == 0:
            raise ValueError(f"embeddings is empty (shape {x.shape}): pass the embeddings of the validation samples")
        yy = _np(y, "y")
        if yy.shape != (len(x),):
            raise ValueError(f"y must have shape ({len(x)},), got {yy.shape}")
        if not np.issubdtype(yy.dtype, np.integer):
            raise TypeError(f"y must hold integer class labels, got dtype {yy.dtype}")
        if not np.isfinite(x).all():
            raise ValueError("embeddings contain NaN or inf")
        if groups is None:
            return x, yy
        gg = _np(groups, "groups")
        if gg.shape != (len(x),):
            raise ValueError(f"groups must have shape ({len(x)},), got {gg.shape}")
        if not np.issubdtype(gg.dtype, np.integer):
            raise TypeError(f"groups must hold integer group ids, got dtype {gg.dtype}")
        return x, yy, gg

    # -- API ----------------------------------------------------------------------------------
    def tune(self, embeddings, y, groups) -> dict:
        """Score every ``C`` on random half-splits by held-out worst-group accuracy (DFR's tuning).

        Returns
        -------
        dict C -> mean worst-group accuracy over the splits.
        """
        x, yy, gg = self._check(embeddings, y, groups)
        n_classes = len(np.unique(yy))
        rng = np.random.default_rng(self.seed)
        scores = {c: 0.0 for c in self.c_grid}
        for _ in range(self.n_tune_splits):
            perm = rng.permutation(len(x))
            half = len(x) // 2
            tr, te = perm[half:], perm[:half]
            sub = tr[balanced_subsample(gg[tr], rng, self.min_group_size)]
            if len(np.unique(yy[sub])) < n_classes:
                continue  # this split lost a class; skip it
            scaler = self._scaler(x[sub])
            xs, xt = scaler.transform(x[sub]), scaler.transform(x[te])
            for c in self.c_grid:
                model = self._logreg(c, n_classes).fit(xs, yy[sub])
                scores[c] += _worst_group(model.predict(xt), yy[te], gg[te]) / self.n_tune_splits
        return scores

    def fit(self, embeddings, y, groups, *, c: float | None = None) -> DFR:
        """Tune ``C`` (unless given) and fit the averaged last layer on validation data.

        Parameters
        ----------
        embeddings : (N, D) penultimate features of the validation split (eval mode)
        y : (N,) class labels
        groups : (N,) group ids -- true groups (oracle DFR) or pseudo groups (GEORGE, ExMap)
        c : float, optional
            Skip tuning and use this ``C``.

        Returns
        -------
        self
        """
        x, yy, gg = self._check(embeddings, y, groups)
        classes = np.unique(yy)
        if len(classes) < 2:
            raise ValueError(f"y contains a single class ({classes.tolist()}); DFR needs at least two")
        if len(x) < 4 * len(classes):
            raise ValueError(f"DFR needs at least {4 * len(classes)} validation samples, got {len(x)}")
        for g in np.unique(gg):
            if len(np.unique(yy[gg == g])) > 1:
                warnings.warn(f"group {g} mixes several classes; DFR expects groups inside classes "
                              "(use cluster.pseudo_groups, whose ids are class-disjoint)", stacklevel=2)
                break
        if c is None:
            self.tune_scores_ = self.tune(x, yy, gg)
            self.best_c_ = max(self.c_grid, key=lambda cc: self.tune_scores_[cc])  # first of ties = strongest C
        else:
            c = check_number(c, "c", low=0.0, low_open=True)
            self.tune_scores_, self.best_c_ = {}, float(c)
        scaler = self._scaler(x)
        xs = scaler.transform(x)
        rng = np.random.default_rng(self.seed + 1)
        coefs, intercepts = [], []
        for _ in range(self.n_refits):
            sub = balanced_subsample(gg, rng, self.min_group_size)
            model = self._logreg(self.best_c_, len(classes)).fit(xs[sub], yy[sub])
            coefs.append(model.coef_)
            intercepts.append(model.intercept_)
        self.classes_ = classes
        self.mean_, self.scale_ = scaler.mean_, scaler.scale_
        self.coef_ = np.mean(coefs, axis=0)
        self.intercept_ = np.mean(intercepts, axis=0)
        return self

    def decision_function(self, embeddings) -> torch.Tensor:
        """Logits for every class, shape (N, K) (two classes: ``[-s/2, s/2]`` with s the LR score)."""
        if not hasattr(self, "coef_"):
            raise NotFittedError("call fit(embeddings, y, groups) before predicting")
        x = _np(embeddings, "embeddings").astype(np.float64)
        if x.ndim != 2 or x.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"embeddings must have shape (N, {self.coef_.shape[1]}), got {x.shape}")
        check_finite(x, "embeddings")
        s = ((x - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_
        if s.shape[1] == 1:
            s = np.concatenate([-s / 2, s / 2], axis=1)
        return torch.as_tensor(s, dtype=torch.float32)

    def predict(self, embeddings) -> torch.Tensor:
        """Predicted class labels (LongTensor (N,))."""
        idx = self.decision_function(embeddings).argmax(1).numpy()
        return torch.as_tensor(self.classes_[idx], dtype=torch.long)

    def to_linear(self) -> torch.nn.Linear:
        """The retrained last layer as an ``nn.Linear`` on raw embeddings (scaler folded in).

        Put it in place of the ERM model's final layer to explain the DFR model (ExMap, Fig. 4).
        Classes must be ``0..K-1``.
        """
        if not hasattr(self, "coef_"):
            raise NotFittedError("call fit(embeddings, y, groups) before to_linear()")
        if not np.array_equal(self.classes_, np.arange(len(self.classes_))):
            raise ValueError(f"to_linear needs classes 0..K-1, got {self.classes_.tolist()}")
        w = self.coef_ / self.scale_
        b = self.intercept_ - (self.coef_ * self.mean_ / self.scale_).sum(1)
        if w.shape[0] == 1:
            w, b = np.concatenate([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(w))
            lin.bias.copy_(torch.as_tensor(b))
        return lin


def jtt_weights(pred, y, *, upweight: float = 20.0) -> torch.Tensor:
    """JTT sample weights: ``lambda`` on the error set, 1 elsewhere (Liu et al., 2021, Alg. 1; ExMap Table 6).

    Parameters
    ----------
    pred : (N,) predicted classes or (N, K) logits of the identification model (ERM after T epochs)
        on the training set.
    y : (N,) true labels.
    upweight : float
        lambda (JTT: 20, 50 or 100 on Waterbirds-like data).

    Returns
    -------
    FloatTensor (N,)
        Weights to pass to ``train.fit(..., sample_weights=...)`` (equivalent in expectation to
        upsampling the error set lambda times).
    """
    p = torch.as_tensor(pred)
    if p.dim() == 2:
        check_finite(p, "pred")
        p = p.argmax(1)
    if p.is_floating_point():
        raise TypeError("pred must be class indices (LongTensor) or (N, K) logits")
    yy = y if isinstance(y, (torch.Tensor, np.ndarray)) else torch.as_tensor(y)
    if yy.ndim == 1:
        yy = check_labels(yy, None, None, "y")
    yy = torch.as_tensor(yy).long()
    if p.shape != yy.shape or p.dim() != 1:
        raise ValueError(f"pred and y must both have shape (N,), got {tuple(p.shape)} and {tuple(yy.shape)}")
    upweight = check_number(upweight, "upweight", low=1.0)
    w = torch.ones(len(yy))
    w[p.cpu() != yy.cpu()] = float(upweight)
    return w


def jtt(make_model: Callable[[], torch.nn.Module], train_set, val_images, val_y, val_groups, *,
        identification_model: torch.nn.Module, upweights: Sequence[float] = (20.0,), epochs: int, lr: float,
        fit: Callable | None = None, predict: Callable | None = None, seed: int = 0, **fit_kwargs):
    """Just Train Twice with model selection by validation worst-(pseudo-)group accuracy (ExMap, Table 6).

    Collects the error set of ``identification_model`` (ERM stopped at epoch T) on ``train_set``,
    trains one fresh model per ``lambda`` in ``upweights`` with :func:`jtt_weights`, and keeps the one
    whose worst-group accuracy on the validation split (grouped by ``val_groups``: true groups for JTT,
    ExMap pseudo groups for JTT+ExMap) is highest. Chapter 04.

    Parameters
    ----------
    make_model : callable () -> nn.Module
        Builds a fresh network for the second training run.
    train_set : dataset with ``images`` and ``labels``
    val_images, val_y, val_groups : validation tensors used for model selection
    identification_model : nn.Module
        The first-stage model (its training predictions define the error set).
    upweights : sequence of float
        Candidate lambdas.
    epochs, lr : second-stage training settings
    fit, predict : callables, optional
        ``fit(model, dataset, *, epochs, lr, sample_weights, seed, ...) -> model`` and
        ``predict(model, x) -> logits``; default :func:`xai_robust.train.fit` / :func:`xai_robust.train.predict`.
    seed : int
    **fit_kwargs : passed on to ``fit``.

    Returns
    -------
    model : the selected nn.Module
    info : dict with ``upweight`` (selected lambda), ``val_worst`` (dict lambda -> validation worst-group
        accuracy) and ``error_set_size``.
    """
    if fit is None or predict is None:
        from xai_robust import train as _train  # the default trainer; the module itself trains nothing

        fit = fit or _train.fit
        predict = predict or _train.predict
    # every check before the first (expensive) training run
    if isinstance(upweights, (str, bytes)) or not hasattr(upweights, "__iter__"):
        raise TypeError(f"upweights must be a sequence of lambdas >= 1, e.g. (20.0,), got {upweights!r}")
    upweights = list(upweights)
    if len(upweights) == 0:
        raise ValueError("upweights must list at least one lambda")
    for lam in upweights:
        check_number(lam, "upweights", low=1.0)
    if not (hasattr(train_set, "images") and hasattr(train_set, "labels")):
        raise TypeError(f"train_set must be a dataset with images and labels (a SampleDataset), got "
                        f"{type(train_set).__name__}")
    if isinstance(val_images, torch.Tensor):  # any input ``predict`` takes (images for train.predict)
        check_finite(val_images, "val_images")
    vy_checked = check_labels(torch.as_tensor(val_y) if isinstance(val_y, (list, tuple)) else val_y,
                              len(val_images), None, "val_y")
    check_labels(torch.as_tensor(val_groups) if isinstance(val_groups, (list, tuple)) else val_groups,
                 len(vy_checked), None, "val_groups")
    y_train = torch.as_tensor(train_set.labels).long()
    # the error set: training samples the identification model gets wrong (weight > 1 under any lambda > 1)
    errors = jtt_weights(predict(identification_model, train_set.images).cpu(), y_train, upweight=2.0) > 1
    vy = _np(val_y, "val_y")
    vg = _np(val_groups, "val_groups")
    best, best_score, scores = None, -1.0, {}
    for lam in upweights:
        w = torch.where(errors, torch.tensor(float(lam)), torch.tensor(1.0))
        model = fit(make_model(), train_set, epochs=epochs, lr=lr, sample_weights=w, seed=seed, **fit_kwargs)
        pred = predict(model, val_images).argmax(1).cpu().numpy()
        scores[float(lam)] = _worst_group(pred, vy, vg)
        if scores[float(lam)] > best_score:
            best, best_score, best_lam = model, scores[float(lam)], float(lam)
    return best, {"upweight": best_lam, "val_worst": scores, "error_set_size": int(errors.sum())}
