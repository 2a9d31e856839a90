"""Group-robustness metrics (chapter 01; ExMap Sec. 5, FCR Sec. 5.3).

The group-robust objective (ExMap Eq. 2, FCR Eq. 1) asks for a model whose *worst* group does well,
not only its average. These functions measure that from predictions, labels and group ids.
"""
from __future__ import annotations

import torch

__all__ = ["group_accuracies", "worst_group_accuracy", "mean_accuracy", "weighted_mean_accuracy",
           "group_counts", "worst_and_mean", "shortcut_gaps"]


def _as_long(name, values):
    t = torch.as_tensor(values)
    if t.is_floating_point():
        raise TypeError(f"{name} must hold integer ids, got a floating tensor; pass logits.argmax(1) for predictions")
    return t.long().reshape(-1).cpu()


def _check(pred, y, groups):
    pred, y, groups = _as_long("pred", pred), _as_long("y", y), _as_long("groups", groups)
    if not (pred.numel() == y.numel() == groups.numel()):
        raise ValueError(f"pred, y and groups must have the same length, got {pred.numel()}, {y.numel()}, "
                         f"{groups.numel()}")
    if pred.numel() == 0:
        raise ValueError("pred is empty: there is nothing to score")
    if (groups < 0).any():
        raise ValueError("groups must be non-negative ids")
    return pred, y, groups


def _check_ids(name, values):
    """Non-negative integer group ids as a flat LongTensor (floats and negative ids raise)."""
    t = _as_long(name, values)
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name} must be non-negative ids, got {int(t.min())}")
    return t


def _n_groups(groups, n_groups):
    if n_groups is None:
        return int(groups.max()) + 1 if groups.numel() else 0
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1:
        raise ValueError(f"n_groups must be a positive int, got {n_groups!r}")
    if groups.numel() and int(groups.max()) >= n_groups:
        raise ValueError(f"groups holds id {int(groups.max())} but n_groups={n_groups}: pass n_groups > "
                         f"{int(groups.max())} (or None to count the ids present)")
    return n_groups


def group_counts(groups, n_groups: int | None = None) -> torch.Tensor:
    """Number of samples in each group id 0..n_groups-1 (an id >= n_groups raises a ValueError)."""
    groups = _check_ids("groups", groups)
    n = _n_groups(groups, n_groups)
    return torch.bincount(groups, minlength=n)[:n]


def group_accuracies(pred, y, groups, n_groups: int | None = None) -> torch.Tensor:
    """Accuracy within each group.

    Parameters
    ----------
    pred, y, groups : LongTensor[N]
        Predicted classes, true classes and group ids (0..G-1).
    n_groups : int, optional
        Number of groups G; groups absent from the data get NaN. An id >= G raises a ValueError (it is never
        dropped silently).

    Returns
    -------
    Tensor[G]
        Float accuracies in [0, 1], NaN for empty groups.
    """
    pred, y, groups = _check(pred, y, groups)
    n = _n_groups(groups, n_groups)
    correct = torch.bincount(groups, weights=(pred == y).double(), minlength=n)[:n]
    counts = torch.bincount(groups, minlength=n)[:n].double()
    acc = correct / counts
    acc[counts == 0] = float("nan")
    return acc


def worst_group_accuracy(pred, y, groups) -> float:
    """Lowest accuracy over the groups present in the data (ExMap Eq. 2, the quantity to maximise)."""
    acc = group_accuracies(pred, y, groups)
    return float(acc[~torch.isnan(acc)].min())


def mean_accuracy(pred, y) -> float:
    """Plain (sample-averaged) accuracy."""
    pred, y = _as_long("pred", pred), _as_long("y", y)
    if pred.numel() != y.numel() or pred.numel() == 0:
        raise ValueError("pred and y must be non-empty and of the same length")
    return float((pred == y).double().mean())


def weighted_mean_accuracy(pred, y, groups, train_groups) -> float:
    """Mean accuracy weighted by the training group proportions.

    Waterbirds-style test sets are group-balanced, so their plain mean over-weights minority groups;
    DFR and ExMap report the per-group accuracies averaged with the *training* proportions
    (docs/design.md, "ExMap").

    Parameters
    ----------
    pred, y, groups : LongTensor[N]
        Test predictions, labels and group ids.
    train_groups : LongTensor[M]
        Group ids of the training set, whose proportions weight the groups.
    """
    acc = group_accuracies(pred, y, groups)
    train_groups = _check_ids("train_groups", train_groups)
    # training groups that the test data lacks carry no weight here (their accuracy is not measured)
    size = max(acc.numel(), int(train_groups.max()) + 1 if train_groups.numel() else 0)
    weights = torch.bincount(train_groups, minlength=size)[:acc.numel()].double()
    present = ~torch.isnan(acc)
    if weights[present].sum() == 0:
        raise ValueError("no training sample falls in any group present in the test data")
    return float((acc[present] * weights[present]).sum() / weights[present].sum())


def worst_and_mean(pred, y, groups, train_groups) -> tuple[float, float]:
    """Worst-group and train-weighted mean accuracy: the two numbers of every ExMap and FCR results table.

    ExMap Sec. 5.1 and FCR Sec. 5.3 report both; see :func:`worst_group_accuracy` and
    :func:`weighted_mean_accuracy`.

    Parameters
    ----------
    pred, y, groups : LongTensor[N]
        Test predictions, labels and group ids.
    train_groups : LongTensor[M]
        Group ids of the training set (the weights of the mean).

    Returns
    -------
    (float, float)
        Both as fractions.
    """
    return worst_group_accuracy(pred, y, groups), weighted_mean_accuracy(pred, y, groups, train_groups)


#: Training shares of UrbanCars' four cells (both shortcuts agree with the class 95 % of the time, independently):
#: (both agree, background disagrees, co-object disagrees, both disagree).
URBANCARS_WEIGHTS = (0.9025, 0.0475, 0.0475, 0.0025)


def shortcut_gaps(pred, y, first, second, *, weights=URBANCARS_WEIGHTS) -> tuple[float, float, float]:
    """Accuracy gaps (points) where one shortcut, the other or both disagree with the class (UrbanCars metric).

    Li et al. (2023, "Whac-A-Mole") and ExMap Table 3 report, for a test set in which two shortcut attributes
    (background and co-occurring object) are independent of the class, the accuracy on the images where the first
    disagrees (BG gap), the second disagrees (CoObj gap) or both disagree (BG+CoObj gap), each minus the
    in-distribution accuracy: the cells' accuracies weighted by their training shares ``weights``.

    Parameters
    ----------
    pred, y : LongTensor[N]
        Predictions and labels.
    first, second : LongTensor[N]
        The two shortcut attributes, in the label's coding (equal to ``y`` where the shortcut agrees).
    weights : 4 floats
        Training shares of (both agree, first disagrees, second disagrees, both disagree).

    Returns
    -------
    (float, float, float)
        The three gaps in points (negative: worse than in distribution).
    """
    pred, y = _as_long("pred", pred), _as_long("y", y)
    first, second = _as_long("first", first), _as_long("second", second)
    if not (pred.shape == y.shape == first.shape == second.shape) or y.numel() == 0:
        raise ValueError("pred, y, first and second must be non-empty and of the same length")
    if len(weights) != 4:
        raise ValueError(f"weights must give the training shares of the four cells, got {weights!r}")
    first_ok, second_ok = first == y, second == y
    correct = (pred == y).double()
    cells = {"id": first_ok & second_ok, "bg": ~first_ok & second_ok, "co": first_ok & ~second_ok,
             "both": ~first_ok & ~second_ok}
    acc = {c: float(correct[m].mean()) for c, m in cells.items()}
    in_dist = weights[0] * acc["id"] + weights[1] * acc["bg"] + weights[2] * acc["co"] + weights[3] * acc["both"]
    return tuple(100 * (acc[c] - in_dist) for c in ("bg", "co", "both"))
