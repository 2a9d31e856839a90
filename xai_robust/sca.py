"""Fictitious class unlearning: SCA scores and single-weight class removal.

Implements Hakemi, Hassan, Akhtar & Mian, *Post-hoc Spurious Correlation Neutralization with
Single-Weight Fictitious Class Unlearning* (FCR), §4, Eq. 3–8 and Algorithms 1–2
(:cite:`hakemi2025fictitious`). Chapter 05 (*Fictitious class unlearning*) explains every function.

The method works on the **last layer** of a classifier, ``logits = W a + b`` with ``a`` the
penultimate features (``xai_robust.models.embed``) and ``W`` the weight of
``xai_robust.models.last_linear(model)``. For the edge ``e_kd`` from feature ``d`` to output ``k``:

* Eq. 3, class-wise accumulative activation: ``A[c, d] = Σ_{s∈S_c} a_d(s)``. The paper writes
  ``a_j`` for an edge ``e_ji``; we read it as the edge's *input* activation (the penultimate feature),
  the natural reading for last-layer edges (docs/design.md lists this ambiguity). It does not depend on ``k``.
* Eq. 4, class-wise accumulative gradient magnitude: ``G[c, k, d] = Σ_{s∈S_c} |∂L(s)/∂W_kd|``. For the
  cross-entropy loss ``∂L/∂W_kd = δ_k a_d`` with ``δ = softmax(z) − onehot(y)``, so
  ``G[c] = |Δ_c|ᵀ |A_c|``: one matrix product per class, no per-sample autograd.
* Eq. 5, CA score: ``Γ_CA(e_kd) = H(G[:, k, d]) / H(A[:, d])``, ``H`` the entropy (natural log) of the
  class-wise values normalised to sum to one.
* Eq. 6, SCA score: ``Γ^c_SCA(e_kd) = Γ_CA(e_kd) · G[c, k, d] · A[c, d]``.
* Eq. 7, orthogonalisation: replacing ``w_kj`` by ``−(‖w_k‖² − w_kj² + 1)/w_kj`` makes the normal
  ``(w_k, −1)`` of the hyperplane ``y_k = w_kᵀa + b_k`` orthogonal to its original state.
* Eq. 8, partial feature neutralisation (PFN): ``r · Eq.7 + (1 − r) · w_kj``.

Algorithm 1 (:func:`remove_class`) edits the edge of the removed class's row with the highest SCA score.
Algorithm 2 (:func:`remove_fictitious_class`) fits a copy's last layer on fictitious (sub-)class labels,
selects the edge there, and edits the same feature's weight in the original model's row of the *real*
class that contains the fictitious class. Every edit returns an :class:`EditRecord` whose
:meth:`EditRecord.undo` restores the weights bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .checks import check_count, check_features, check_finite, check_labels, check_number
from .data.base import batch_indices

__all__ = [
    "Accumulations", "accumulate", "entropy", "ca_scores", "sca_scores", "orthogonal_weight",
    "WeightEdit", "EditRecord", "edit_weights", "select_edges", "remove_class",
    "fit_fictitious_head", "fictitious_to_real", "remove_fictitious_class",
    "class_accuracies", "removal_matrix", "removal_effects", "most_confident_subclass", "neutralise",
    "fictitious_removal_curves",
]

_SCORES = ("sca", "accumulative", "activation", "gradient")


# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------
def _check_linear(linear, name: str = "linear") -> None:
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"{name} must be a torch.nn.Linear (the model's last layer; get it with "
                        f"xai_robust.models.last_linear(model)), got {type(linear).__name__}")


def _check_features(features, in_features: int | None, name: str = "features") -> None:
    """Penultimate features for a linear layer with ``in_features`` inputs (:func:`checks.check_features`)."""
    if isinstance(features, np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D), got a numpy array; convert it with "
                        f"torch.from_numpy({name})")
    check_features(features, name, columns=in_features, hint=f"compute it with xai_robust.models.embed(model, x); "
                   f"flatten with {name}.flatten(1)")


def _check_labels(labels, n: int, num_classes: int, name: str = "labels") -> None:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a LongTensor of shape (N,), got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match the features, got {tuple(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must hold integer class indices, got dtype {labels.dtype}; use {name}.long()")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}) (one per output of the linear layer), got "
                         f"values in [{int(labels.min())}, {int(labels.max())}]")


def _check_index(value, size: int, name: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value < size:
        raise ValueError(f"{name} must lie in [0, {size}), got {value}")
    return value


def _check_rate(rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise TypeError(f"rate must be a number in [0, 1], got {type(rate).__name__}")
    rate = float(rate)
    if not (0.0 <= rate <= 1.0):
        raise ValueError(f"rate must lie in [0, 1] (0 = no edit, 1 = full orthogonalisation, Eq. 8), got {rate}")
    return rate


# --------------------------------------------------------------------------------------------------
# Eq. 3 and Eq. 4: class-wise accumulations in closed form
# --------------------------------------------------------------------------------------------------
@dataclass
class Accumulations:
    """Class-wise accumulative activations and gradient magnitudes of a last layer (FCR, Eq. 3–4).

    Attributes
    ----------
    activations : Tensor[C, D]
        ``A[c, d] = Σ_{s∈S_c} a_d(s)`` (Eq. 3); the same for every output row ``k``.
    gradients : Tensor[C, K, D]
        ``G[c, k, d] = Σ_{s∈S_c} |δ_k(s) a_d(s)|`` (Eq. 4), ``δ = softmax(z) − onehot(y)``.
    counts : Tensor[C]
        Number of samples of each class.
    """

    activations: torch.Tensor
    gradients: torch.Tensor
    counts: torch.Tensor


def _feature_batches(features, labels, batch_size: int):
    """(features, labels) batches from a tensor and its labels, or from an iterable of batches as given."""
    if isinstance(features, torch.Tensor):
        if labels is None:
            raise ValueError("labels is required when features is a tensor (one class index per row)")
        if not isinstance(labels, torch.Tensor) or labels.shape[:1] != features.shape[:1]:
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"labels must be a LongTensor of {features.shape[0]} class indices, one per row of "
                             f"features, got {got}")
        for idx in batch_indices(features.shape[0], batch_size):
            yield features[idx], labels[idx]
    else:
        if labels is not None:
            raise ValueError("pass labels=None when features is an iterable of (features, labels) batches")
        for batch in features:
            if isinstance(batch, dict):
                yield batch["features"], batch["label"]
            else:
                yield batch[0], batch[1]


def accumulate(features, labels, linear: nn.Linear, *, batch_size: int = 4096,
               progress: bool = False) -> Accumulations:
    """Class-wise accumulative activations (Eq. 3) and gradient magnitudes (Eq. 4) of a last layer.

    The per-sample gradient of the cross-entropy loss with respect to the last-layer weight is the outer
    product ``δ aᵀ``, so ``Σ_{s∈S_c} |∂L/∂W_kd| = Σ_s |δ_k(s)| |a_d(s)|`` is a matrix product per class.
    Nothing is differentiated and ``linear`` is only read (FCR, Eq. 3–4; chapter 05).

    Parameters
    ----------
    features : Tensor[N, D] or iterable of (Tensor[n, D], LongTensor[n])
        Penultimate features (the input of ``linear``), or batches of them with their labels
        (e.g. a ``DataLoader`` over a ``TensorDataset``) to stream large sets.
    labels : LongTensor[N] or None
        Class index of each sample (an output of ``linear``); ``None`` when ``features`` yields batches.
    linear : nn.Linear
        The last layer (``K`` outputs, ``D`` inputs).
    batch_size : int
        Rows per step when ``features`` is a tensor.
    progress : bool
        Show a progress bar over the batches.

    Returns
    -------
    Accumulations
        ``activations`` [K, D], ``gradients`` [K, K, D], ``counts`` [K] (float64, on the layer's device).

    Notes
    -----
    Eq. 3 sums the activation ``a_d`` itself; for ReLU features (ours: every model ends in ReLU + pooling)
    this is its magnitude. Negative features are accumulated as magnitudes ``|a_d|`` so the entropy of Eq. 5
    stays defined.
    """
    _check_linear(linear)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    K, D = linear.weight.shape
    dev = linear.weight.device
    weight = linear.weight.detach().to(torch.float64)
    bias = None if linear.bias is None else linear.bias.detach().to(torch.float64)
    acts = torch.zeros(K, D, dtype=torch.float64, device=dev)
    grads = torch.zeros(K, K, D, dtype=torch.float64, device=dev)
    counts = torch.zeros(K, dtype=torch.float64, device=dev)
    iterator = _feature_batches(features, labels, batch_size)
    if progress:
        from . import progress as progress_bar
        total = None
        if isinstance(features, torch.Tensor):
            total = math.ceil(features.shape[0] / batch_size)
        iterator = progress_bar(iterator, total=total, desc="accumulating (Eq. 3-4)")
    with torch.no_grad():
        for a, y in iterator:
            _check_features(a, D)
            _check_labels(y, a.shape[0], K)
            a = a.detach().to(dev, torch.float64)
            y = y.to(dev).long()
            delta = torch.softmax(F.linear(a, weight, bias), dim=1)
            delta[torch.arange(a.shape[0], device=dev), y] -= 1.0
            a_abs, d_abs = a.abs(), delta.abs()
            acts.index_add_(0, y, a_abs)
            counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
            for c in torch.unique(y).tolist():
                rows = y == c
                grads[c] += d_abs[rows].T @ a_abs[rows]
    if not bool(counts.sum() > 0):
        raise ValueError("features is empty (no samples to accumulate): pass at least one row of penultimate "
                         "features with its label")
    return Accumulations(acts, grads, counts)


# --------------------------------------------------------------------------------------------------
# Eq. 5 and Eq. 6: CA and SCA scores
# --------------------------------------------------------------------------------------------------
def entropy(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Shannon entropy (natural log) of non-negative values normalised along ``dim``.

    ``p = v / Σ v``, ``H = −Σ p ln p`` with ``0 ln 0 = 0``; an all-zero slice has entropy 0.
    Used for both entropies of the CA score (FCR, Eq. 5; chapter 05).
    """
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
    check_finite(values, "values")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -max(values.dim(), 1) <= dim < max(values.dim(), 1):
        raise ValueError(f"dim must be an int in [{-max(values.dim(), 1)}, {max(values.dim(), 1)}) for values of "
                         f"shape {tuple(values.shape)}, got {dim!r}")
    if (values < 0).any():
        raise ValueError("values must be non-negative (accumulated magnitudes) to form a distribution")
    total = values.sum(dim=dim, keepdim=True)
    p = values / torch.where(total > 0, total, torch.ones_like(total))
    return -torch.special.xlogy(p, p).sum(dim=dim)


def ca_scores(acc: Accumulations, *, eps: float = 1e-12) -> torch.Tensor:
    """Class association score of every last-layer edge (FCR, Eq. 5; chapter 05).

    ``Γ_CA(e_kd) = H(G[:, k, d]) / H(A[:, d])``: high when the edge's gradient magnitudes are spread over
    many classes (Theorem 1b) and its activations concentrated on few (Theorem 1a).

    Parameters
    ----------
    acc : Accumulations
        From :func:`accumulate`.
    eps : float
        Floor of the denominator: a feature active for a single class has ``H(A) = 0``; the score is then
        ``H(G) / eps`` (very large, finite) and exactly 0 when ``H(G) = 0`` too.

    Returns
    -------
    Tensor[K, D]
    """
    if not isinstance(acc, Accumulations):
        raise TypeError(f"acc must be an Accumulations from xai_robust.sca.accumulate, got {type(acc).__name__}")
    eps = check_number(eps, "eps", low=0.0, low_open=True)
    h_grad = entropy(acc.gradients, dim=0)              # [K, D]
    h_act = entropy(acc.activations, dim=0)             # [D]
    return h_grad / h_act.clamp_min(eps)[None, :]


def sca_scores(features, labels, linear: nn.Linear, target: int, *, accumulations: Accumulations | None = None,
               score: str = "sca", batch_size: int = 4096) -> torch.Tensor:
    """SCA score of every edge into output ``target`` (FCR, Eq. 6; Algorithm 1 lines 1–6; chapter 05).

    ``Γ^c_SCA(e_cd) = Γ_CA(e_cd) · G[c, c, d] · A[c, d]`` with ``c = target``: the edges of the target's
    own row (the hyperplane that Eq. 7 will edit), scored with the target class's samples.

    Parameters
    ----------
    features : Tensor[N, D] or iterable of batches
        Penultimate features (see :func:`accumulate`); ignored when ``accumulations`` is given.
    labels : LongTensor[N] or None
        Class indices (outputs of ``linear``).
    linear : nn.Linear
        The last layer.
    target : int
        The class whose edges are scored.
    accumulations : Accumulations, optional
        Precomputed :func:`accumulate` result, to score many targets without re-reading the data.
    score : {"sca", "accumulative", "activation", "gradient"}
        ``"sca"``: Eq. 6. ``"accumulative"``: ``G · A`` without the CA factor (the ablation of the paper's
        Fig. 8, left). ``"activation"`` / ``"gradient"``: one accumulation alone.
    batch_size : int
        Rows per step of the accumulation.

    Returns
    -------
    Tensor[D]
        One score per input feature of ``linear`` (float64).
    """
    _check_linear(linear)
    K, D = linear.weight.shape
    target = _check_index(target, K, "target")
    if score not in _SCORES:
        raise ValueError(f"score must be one of {_SCORES}, got {score!r}")
    acc = accumulations if accumulations is not None else accumulate(features, labels, linear,
                                                                      batch_size=batch_size)
    if not isinstance(acc, Accumulations):
        raise TypeError(f"accumulations must be an Accumulations, got {type(acc).__name__}")
    if acc.gradients.shape != (K, K, D):
        raise ValueError(f"accumulations has gradients of shape {tuple(acc.gradients.shape)}, expected "
                         f"{(K, K, D)} for this linear layer; recompute them with accumulate(..., linear)")
    g, a = acc.gradients[target, target], acc.activations[target]
    if score == "activation":
        return a.clone()
    if score == "gradient":
        return g.clone()
    if score == "accumulative":
        return g * a
    return ca_scores(acc)[target] * g * a


# --------------------------------------------------------------------------------------------------
# Eq. 7 and Eq. 8: the single-weight edit
# --------------------------------------------------------------------------------------------------
def orthogonal_weight(w_row, j: int, rate: float = 1.0) -> float:
    """New value of ``w_row[j]`` that tilts the hyperplane orthogonal to itself (FCR, Eq. 7 and Eq. 8).

    With ``y = wᵀa + b`` the hyperplane has normal ``n = (w, −1)``. Replacing ``w_j`` by
    ``f = −(‖w‖² − w_j² + 1) / w_j`` gives ``n·n' = Σ_{i≠j} w_i² + w_j f + 1 = 0`` (Eq. 7). Partial
    feature neutralisation interpolates: ``r · f + (1 − r) · w_j`` (Eq. 8). Computed in float64.
    The bias is not part of the normal. Chapter 05.

    Parameters
    ----------
    w_row : Tensor[D] or sequence of float
        The weight row of the class being edited.
    j : int
        Index of the edited weight.
    rate : float
        Neutralisation rate ``r`` in [0, 1]; 1 is Eq. 7, 0 leaves the weight unchanged.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``w_row[j]`` is zero and ``rate > 0``: no finite weight makes the hyperplane orthogonal
        (``n·n' = ‖w‖² + 1 > 0`` whatever ``f``). Choose another edge (:func:`select_edges` skips zeros).
    """
    if not isinstance(w_row, torch.Tensor):
        try:
            w_row = torch.as_tensor(w_row, dtype=torch.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"w_row must be a 1-D tensor or sequence of numbers, got {type(w_row).__name__}") from err
    if w_row.dim() != 1:
        raise ValueError(f"w_row must be one weight row of shape (D,), got {tuple(w_row.shape)}; "
                         f"pass linear.weight[k]")
    if not (w_row.is_floating_point() or w_row.dtype in (torch.int64, torch.int32)):
        raise TypeError(f"w_row must hold real numbers, got dtype {w_row.dtype}")
    j = _check_index(j, w_row.shape[0], "j")
    rate = _check_rate(rate)
    w = w_row.detach().to(torch.float64)
    wj = float(w[j])
    if not math.isfinite(wj) or not torch.isfinite(w).all():
        raise ValueError("w_row must be finite")
    if rate == 0.0:
        return wj
    if wj == 0.0:
        raise ValueError(f"w_row[{j}] is 0: no finite value makes this hyperplane orthogonal to itself (Eq. 7 "
                         f"divides by it); choose another edge (select_edges skips zero weights) or rate=0")
    others = float((w * w).sum()) - wj * wj
    f = -(others + 1.0) / wj
    return rate * f + (1.0 - rate) * wj


@dataclass
class WeightEdit:
    """One edited element ``linear.weight[row, col]`` with its old and new values (bit-exact copies)."""

    linear: nn.Linear
    row: int
    col: int
    old: torch.Tensor
    new: torch.Tensor


@dataclass
class EditRecord:
    """The weight edits made by :func:`remove_class` / :func:`remove_fictitious_class` (chapter 05).

    ``record.undo()`` restores every edited element bit for bit (in reverse order); the record is also a
    context manager that undoes the edit on exit: ``with remove_class(...): evaluate(...)``.

    Attributes
    ----------
    edits : list of WeightEdit
    scores : Tensor[D] or None
        The selection scores of the scored row.
    source_row : int or None
        The scored row (the fictitious class of the copy's head for Algorithm 2).
    """

    edits: list = field(default_factory=list)
    scores: torch.Tensor | None = None
    source_row: int | None = None
    undone: bool = False

    @property
    def columns(self) -> list[int]:
        """The edited feature indices, in order."""
        return [e.col for e in self.edits]

    @property
    def rows(self) -> list[int]:
        """The edited rows (classes), in order."""
        return [e.row for e in self.edits]

    def undo(self) -> None:
        """Restore the original weights bit for bit. Calling it twice is a no-op."""
        if self.undone:
            return
        with torch.no_grad():
            for e in reversed(self.edits):
                e.linear.weight[e.row, e.col] = e.old
        self.undone = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.undo()
        return False


def edit_weights(linear: nn.Linear, row: int, columns, rate: float = 1.0) -> EditRecord:
    """Apply Eq. 8 to ``linear.weight[row, j]`` for each ``j`` in ``columns``, one after another.

    Each edit uses the row as left by the previous one (so ``‖w‖²`` includes earlier edits). Only the
    listed elements change; the bias and every other weight keep their bits. FCR, Eq. 7–8; chapter 05.

    Returns
    -------
    EditRecord
    """
    _check_linear(linear)
    K, D = linear.weight.shape
    row = _check_index(row, K, "row")
    rate = _check_rate(rate)
    if isinstance(columns, (str, bytes)) or not hasattr(columns, "__iter__") or (
            isinstance(columns, torch.Tensor) and columns.dim() == 0):
        raise TypeError(f"columns must be a sequence of feature indices, e.g. [{columns!r}], got "
                        f"{type(columns).__name__}")
    cols = [_check_index(c, D, "columns[i]") for c in columns]
    if len(set(cols)) != len(cols):
        raise ValueError(f"columns must be distinct, got {cols}")
    record = EditRecord()
    with torch.no_grad():
        for col in cols:
            new_value = orthogonal_weight(linear.weight[row], col, rate)
            old = linear.weight[row, col].clone()
            linear.weight[row, col] = new_value
            if not bool(torch.isfinite(linear.weight[row, col])):  # e.g. beyond float16's range
                linear.weight[row, col] = old
                record.undo()
                raise ValueError(f"the edited weight ({new_value:.3g}) is not representable in the layer's "
                                 f"{linear.weight.dtype}; edit a float32 copy (linear.float()) or lower rate")
            record.edits.append(WeightEdit(linear, row, col, old, linear.weight[row, col].clone()))
    return record


def select_edges(scores: torch.Tensor, w_row: torch.Tensor, n_weights: int = 1, *,
                 edges: str = "positive") -> list[int]:
    """Indices of the ``n_weights`` highest-scoring eligible edges (Algorithm 1, line 7; chapter 05).

    Parameters
    ----------
    scores : Tensor[D]
        Selection scores (:func:`sca_scores`).
    w_row : Tensor[D]
        The weight row that will be edited.
    n_weights : int
        How many edges to return (best first).
    edges : {"positive", "nonzero"}
        Eligible edges. ``"nonzero"`` is the paper's literal Algorithm 1 minus zero weights (Eq. 7 cannot
        orthogonalise a zero weight, see :func:`orthogonal_weight`). ``"positive"`` (default, our decision:
        the paper is silent on signs) keeps only edges whose weight *supports* the class: Eq. 7 turns a
        positive ``w_j`` into a large negative weight (the class is suppressed wherever feature ``j`` fires),
        but a negative ``w_j`` into a large *positive* one, which makes the class absorb every input with
        that feature instead of removing it. SCA scores are sign-blind (they use magnitudes).

    Returns
    -------
    list of int
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1:
        raise ValueError("scores must be a 1-D tensor (one score per feature)")
    check_finite(scores, "scores")
    if not isinstance(w_row, torch.Tensor):
        raise TypeError(f"w_row must be the weight row as a tensor (linear.weight[k]), got {type(w_row).__name__}")
    if w_row.shape != scores.shape:
        raise ValueError(f"w_row has shape {tuple(w_row.shape)} but scores has {tuple(scores.shape)}")
    if isinstance(n_weights, bool) or not isinstance(n_weights, int) or n_weights < 1:
        raise ValueError(f"n_weights must be a positive int, got {n_weights!r}")
    if edges not in ("positive", "nonzero"):
        raise ValueError(f'edges must be "positive" or "nonzero", got {edges!r}')
    w = w_row.detach().to(scores.device)
    eligible = w > 0 if edges == "positive" else w != 0
    if int(eligible.sum()) < n_weights:
        raise ValueError(f"n_weights={n_weights} but the row has only {int(eligible.sum())} {edges} weights; "
                         f"lower n_weights" + (' or pass edges="nonzero"' if edges == "positive" else ""))
    masked = torch.where(eligible, scores.to(torch.float64),
                         torch.full(scores.shape, -math.inf, dtype=torch.float64, device=scores.device))
    return torch.argsort(masked, descending=True, stable=True)[:n_weights].tolist()


def remove_class(linear: nn.Linear, features=None, labels=None, target: int | None = None, rate: float = 1.0,
                 n_weights: int = 1, *, score: str = "sca", edges: str = "positive",
                 accumulations: Accumulations | None = None) -> EditRecord:
    """Remove a class by editing its most significant last-layer weight(s) (FCR, Algorithm 1; chapter 05).

    Scores the target row's edges (Eq. 3–6, :func:`sca_scores`), picks the ``n_weights`` best non-zero
    ones, and applies Eq. 8 (Eq. 7 at ``rate=1``) to them in place.

    Parameters
    ----------
    linear : nn.Linear
        The model's last layer, edited in place.
    features, labels
        Penultimate features and class labels (see :func:`accumulate`); leave them out when ``accumulations``
        is given: ``remove_class(linear, target=c, accumulations=acc)``.
    target : int
        The class to remove (required).
    rate : float
        Neutralisation rate ``r`` of Eq. 8.
    n_weights : int
        Number of weights edited (the paper uses 1; its Fig. 6 goes up to 3).
    score : str
        Selection score, see :func:`sca_scores`.
    edges : {"positive", "nonzero"}
        Eligible edges, see :func:`select_edges`.
    accumulations : Accumulations, optional
        Precomputed accumulations of the *unedited* layer (reuse them to remove several classes).

    Returns
    -------
    EditRecord
        ``record.undo()`` restores the layer bit for bit.
    """
    _check_linear(linear)
    rate = _check_rate(rate)
    if target is None:
        raise TypeError("remove_class needs target=: the class to remove")
    target = _check_index(target, linear.out_features, "target")
    if accumulations is None:
        if features is None or labels is None:
            raise TypeError("remove_class needs features and labels, or accumulations=sca.accumulate(...)")
        _check_features(features, linear.in_features)
    if accumulations is None and isinstance(labels, torch.Tensor) and isinstance(target, int) \
            and not bool((labels == target).any()):
        raise ValueError(f"class {target} does not occur in labels: there is nothing to score its edges on; "
                         f"pass samples of that class")
    scores = sca_scores(features, labels, linear, target, accumulations=accumulations, score=score)
    cols = select_edges(scores, linear.weight[target], n_weights, edges=edges)
    record = edit_weights(linear, target, cols, rate)
    record.scores, record.source_row = scores, int(target)
    return record


# --------------------------------------------------------------------------------------------------
# Algorithm 2: fictitious classes
# --------------------------------------------------------------------------------------------------
def fit_fictitious_head(features: torch.Tensor, fictitious_labels: torch.Tensor, *,
                        num_fictitious: int | None = None, max_iter: int = 200, weight_decay: float = 1e-4,
                        dtype: torch.dtype = torch.float32) -> nn.Linear:
    """The copy's new last layer, trained to classify fictitious classes (FCR, Algorithm 2, lines 1–4).

    The copy ``M'`` shares every layer but the last with ``M`` and those stay frozen, so fine-tuning ``M'``
    is exactly multinomial logistic regression on ``M``'s penultimate features; we fit it full-batch with
    L-BFGS from a zero start (deterministic, no seed). Chapter 05.

    Parameters
    ----------
    features : Tensor[N, D]
        Penultimate features of ``M``.
    fictitious_labels : LongTensor[N]
        Fictitious class of each sample (e.g. the digit inside a parity class, a colour, a pseudo group).
    num_fictitious : int, optional
        Number of fictitious classes (default ``max(label) + 1``).
    max_iter : int
        L-BFGS iterations.
    weight_decay : float
        L2 penalty ``λ/2 ‖W‖²`` added to the mean cross-entropy.
    dtype : torch.dtype
        Precision of the fit.

    Returns
    -------
    nn.Linear
        ``D → num_fictitious``, in eval mode, gradients disabled.
    """
    _check_features(features, None)
    if not isinstance(fictitious_labels, torch.Tensor):
        raise TypeError(f"fictitious_labels must be a LongTensor of shape (N,), got {type(fictitious_labels).__name__}"
                        + ("; convert with torch.from_numpy(...)" if isinstance(fictitious_labels, np.ndarray) else ""))
    check_labels(fictitious_labels, features.shape[0], None, "fictitious_labels")
    check_count(max_iter, "max_iter")
    weight_decay = check_number(weight_decay, "weight_decay", low=0.0)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float32, got {dtype!r}")
    if num_fictitious is not None and (isinstance(num_fictitious, bool) or not isinstance(num_fictitious, int)):
        raise TypeError(f"num_fictitious must be an int >= 2 or None, got {num_fictitious!r}")
    if num_fictitious is None:
        num_fictitious = int(fictitious_labels.max()) + 1 if fictitious_labels.numel() else 0
    if num_fictitious < 2:
        raise ValueError(f"num_fictitious must be at least 2 (a head needs two classes), got {num_fictitious}")
    _check_labels(fictitious_labels, features.shape[0], num_fictitious, "fictitious_labels")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    x = features.detach().to(dtype)
    y = fictitious_labels.to(x.device).long()
    head = nn.Linear(x.shape[1], num_fictitious).to(device=x.device, dtype=dtype)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12, history_size=20)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y) + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    head.eval()
    head.requires_grad_(False)
    return head


def fictitious_to_real(fictitious_labels: torch.Tensor, labels: torch.Tensor) -> dict[int, int]:
    """The real class containing each fictitious class: the majority real label of its samples.

    Answers docs/design.md's ambiguity of Algorithm 2 line 6 (which row of ``M`` receives the edit).
    """
    for name, t in (("fictitious_labels", fictitious_labels), ("labels", labels)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a LongTensor of shape (N,), got {type(t).__name__}")
        check_labels(t, None, None, name)
    if fictitious_labels.shape != labels.shape:
        raise ValueError("fictitious_labels and labels must have the same shape")
    out = {}
    for f in torch.unique(fictitious_labels).tolist():
        out[int(f)] = int(torch.mode(labels[fictitious_labels == f]).values)
    return out


def remove_fictitious_class(linear: nn.Linear, features, fictitious_labels, fictitious_target: int,
                            real_class: int | None = None, rate: float = 1.0, n_weights: int = 1, *,
                            labels: torch.Tensor | None = None, head: nn.Linear | None = None,
                            score: str = "sca", edges: str = "positive",
                            accumulations: Accumulations | None = None, **head_options) -> EditRecord:
    """Neutralise a fictitious (sub-)class inside a real class (FCR, Algorithm 2; chapter 05).

    1–4. A copy ``M'`` with a new last layer classifies the fictitious classes (:func:`fit_fictitious_head`,
    or pass ``head``). 5. Algorithm 1 lines 1–7 on ``M'``: the edge ``(fictitious_target, d*)`` with the
    highest score. 6. Eq. 8 applied to ``M``'s weight ``(real_class, d*)``, computed with ``M``'s row:
    both models share the features, so column ``d*`` carries the same feature in ``M``.

    Parameters
    ----------
    linear : nn.Linear
        ``M``'s last layer, edited in place.
    features : Tensor[N, D]
        Penultimate features (shared by ``M`` and ``M'``).
    fictitious_labels : LongTensor[N]
        Fictitious class of each sample.
    fictitious_target : int
        The fictitious class to remove.
    real_class : int, optional
        The row of ``M`` to edit; default: the majority real label (``labels``) of the fictitious class.
    rate : float
        Neutralisation rate ``r`` (Eq. 8).
    n_weights : int
        Number of edited weights.
    labels : LongTensor[N], optional
        Real labels, used only to infer ``real_class``.
    head : nn.Linear, optional
        A fitted fictitious head (reuse one head for many removals and rates).
    score : str
        Selection score (see :func:`sca_scores`).
    edges : {"positive", "nonzero"}
        Eligible edges, judged on ``M``'s row (the one edited), see :func:`select_edges`.
    accumulations : Accumulations, optional
        Precomputed accumulations *of the head* on ``(features, fictitious_labels)``.
    **head_options
        Passed to :func:`fit_fictitious_head`.

    Returns
    -------
    EditRecord
        ``source_row`` = the fictitious class; ``rows`` = the real class edited.
    """
    _check_linear(linear)
    rate = _check_rate(rate)
    if head is None:
        _check_features(features, linear.in_features)
        head = fit_fictitious_head(features, fictitious_labels, **head_options)
    _check_linear(head, "head")
    if head.in_features != linear.in_features:
        raise ValueError(f"head has {head.in_features} inputs but linear has {linear.in_features}; "
                         f"both must read the same penultimate features")
    fictitious_target = _check_index(fictitious_target, head.out_features, "fictitious_target")
    if real_class is None:
        if labels is None:
            raise ValueError("give real_class (the row of the original model to edit) or labels to infer it")
        real_class = fictitious_to_real(fictitious_labels, labels).get(fictitious_target)
        if real_class is None:
            raise ValueError(f"fictitious class {fictitious_target} has no samples; cannot infer real_class")
    real_class = _check_index(real_class, linear.out_features, "real_class")
    scores = sca_scores(features, fictitious_labels, head, fictitious_target, accumulations=accumulations,
                        score=score)
    cols = select_edges(scores, linear.weight[real_class], n_weights, edges=edges)
    record = edit_weights(linear, real_class, cols, rate)
    record.scores, record.source_row = scores, fictitious_target
    return record


# --------------------------------------------------------------------------------------------------
# evaluating edits (chapter 05)
# --------------------------------------------------------------------------------------------------
def class_accuracies(linear: nn.Linear, features: torch.Tensor, labels: torch.Tensor,
                     num_classes: int) -> torch.Tensor:
    """Accuracy of each class (recall, float64, on the CPU) of the last layer ``linear`` on penultimate features.

    What FCR Fig. 6 and 7 plot after a removal: the removed class should drop to 0, the others stay.

    Parameters
    ----------
    linear : nn.Linear
    features : Tensor[N, D]
    labels : LongTensor[N]
    num_classes : int

    Returns
    -------
    Tensor[num_classes] of float64
        NaN for a class without samples.
    """
    _check_linear(linear)
    _check_features(features, linear.in_features)
    with torch.no_grad():
        pred = linear(features).argmax(1)
    return torch.stack([(pred[labels == c] == c).double().mean() for c in range(num_classes)]).cpu()


def removal_matrix(linear: nn.Linear, features: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                   accumulations: Accumulations, n_weights: int = 1, rate: float = 1.0,
                   edges: str = "positive") -> torch.Tensor:
    """Class accuracies after removing each class in turn with :func:`remove_class` (FCR Fig. 6).

    Row ``c`` holds :func:`class_accuracies` while class ``c`` is removed with ``n_weights`` edited weights;
    every edit is undone before the next, so ``linear`` ends as it began, bit for bit.

    Parameters
    ----------
    linear : nn.Linear
        The last layer (edited and restored).
    features, labels : Tensor[N, D], LongTensor[N]
        The evaluation features and labels (e.g. the test set).
    num_classes : int
    accumulations : Accumulations
        Of the unedited layer on the training features (:func:`accumulate`).
    n_weights, rate, edges
        As in :func:`remove_class` (``edges="nonzero"``: the paper-literal selection).

    Returns
    -------
    Tensor[num_classes, num_classes] of float64
        ``[removed class, evaluated class]``.
    """
    mat = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    for c in range(num_classes):
        with remove_class(linear, target=c, rate=rate, n_weights=n_weights, accumulations=accumulations,
                          edges=edges):
            mat[c] = class_accuracies(linear, features, labels, num_classes)
    return mat


def removal_effects(matrix: torch.Tensor, before: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a :func:`removal_matrix` into what is left of each removed class and how the others moved.

    Parameters
    ----------
    matrix : Tensor[K, K]
        ``[removed class, evaluated class]`` accuracies.
    before : Tensor[K]
        The class accuracies before any edit.

    Returns
    -------
    removed : Tensor[K]
        The removed class's accuracy (the diagonal).
    others : Tensor[K, K - 1]
        The change of every other class's accuracy (row: the removed class).
    """
    k = matrix.shape[0]
    if matrix.shape != (k, k) or before.shape != (k,):
        raise ValueError(f"matrix must be (K, K) and before (K,), got {tuple(matrix.shape)} and {tuple(before.shape)}")
    change = matrix - before[None, :]
    off = ~torch.eye(k, dtype=torch.bool)
    return matrix.diagonal(), change[off].view(k, k - 1)


def most_confident_subclass(linear: nn.Linear, features: torch.Tensor, fictitious_labels: torch.Tensor,
                            labels: torch.Tensor, *, min_count: int = 5) -> dict[int, int]:
    """For each real class, the fictitious sub-class on which the model is most confident (no group labels needed).

    FCR Sec. 4.2 neutralises the sub-class the model relies on most; its mean softmax probability of the true class
    picks it. Sub-classes with at most ``min_count`` samples of the class are skipped.

    Parameters
    ----------
    linear : nn.Linear
        The model's last layer.
    features : Tensor[N, D]
    fictitious_labels, labels : LongTensor[N]
        The sub-class (e.g. pseudo group) and the real class of each sample.

    Returns
    -------
    dict of real class → fictitious class
    """
    _check_linear(linear)
    with torch.no_grad():
        prob = torch.softmax(linear(features), 1)[torch.arange(len(labels)), labels]
    pick = {}
    for c in torch.unique(labels).tolist():
        subs = torch.unique(fictitious_labels[labels == c]).tolist()
        conf = {f: float(prob[(fictitious_labels == f) & (labels == c)].mean()) for f in subs
                if int(((fictitious_labels == f) & (labels == c)).sum()) > min_count}
        pick[c] = max(conf, key=conf.get)
    return pick


def neutralise(linear: nn.Linear, features: torch.Tensor, fictitious_labels: torch.Tensor, rate: float,
               pick: dict[int, int], *, head: nn.Linear, accumulations: Accumulations) -> list[EditRecord]:
    """One single-weight Algorithm-2 edit per real class: neutralise sub-class ``pick[c]`` inside class ``c``.

    FCR Sec. 4.2 (spurious-feature neutralisation, Fig. 9 and Table 1). Undo with
    ``for r in reversed(records): r.undo()``.

    Parameters
    ----------
    linear : nn.Linear
        Edited in place.
    features, fictitious_labels
        As in :func:`remove_fictitious_class`.
    rate : float
        The neutralisation rate r of Eq. 8.
    pick : dict of real class → fictitious class
        E.g. :func:`most_confident_subclass`.
    head, accumulations
        The fictitious head and its accumulations (:func:`fit_fictitious_head`, :func:`accumulate`).

    Returns
    -------
    list of EditRecord
        In the order applied.
    """
    return [remove_fictitious_class(linear, features, fictitious_labels, f, c, rate=rate, head=head,
                                    accumulations=accumulations) for c, f in pick.items()]


def fictitious_removal_curves(linear: nn.Linear, features: torch.Tensor, fictitious_labels: torch.Tensor,
                              real_of: dict[int, int], rates, *, eval_features: torch.Tensor,
                              eval_labels: torch.Tensor, eval_fictitious: torch.Tensor, head: nn.Linear,
                              accumulations: Accumulations, score: str = "sca") -> dict:
    """Remove each fictitious class at every rate r and measure every fictitious class's accuracy (FCR Fig. 8).

    For each fictitious class d and rate r, :func:`remove_fictitious_class` edits row ``real_of[d]`` of
    ``linear`` (and undoes it); the accuracy of the real label on each fictitious class's evaluation samples is
    read off. FCR Sec. 5.2 plots the removed class's accuracy and the retained classes' mean against r.

    Parameters
    ----------
    linear : nn.Linear
        The model's last layer (edited and restored).
    features, fictitious_labels : Tensor[N, D], LongTensor[N]
        Training features and fictitious labels (the scores' data).
    real_of : dict of fictitious class → real class
        :func:`fictitious_to_real`.
    rates : sequence of float
        The neutralisation rates r.
    eval_features, eval_labels, eval_fictitious : Tensor[M, D], LongTensor[M], LongTensor[M]
        The evaluation samples, their real labels and fictitious classes.
    head, accumulations
        The fictitious head and its accumulations.
    score : str
        The edge score (:func:`sca_scores`).

    Returns
    -------
    dict
        ``before``: Tensor[F] accuracies without an edit; ``removed``, ``retained``: arrays [F, len(rates)], the
        removed class's accuracy and the mean over the others; ``siblings``, ``others``: arrays [F], at the last
        rate, the mean accuracy of the other fictitious classes of the same real class and of the other real classes.
    """
    n_fict = len(real_of)

    def accuracies():
        with torch.no_grad():
            correct = (linear(eval_features).argmax(1) == eval_labels).double()
        return torch.stack([correct[eval_fictitious == d].mean() for d in range(n_fict)]).cpu()

    before = accuracies()
    removed, retained = np.zeros((n_fict, len(rates))), np.zeros((n_fict, len(rates)))
    siblings, others = np.zeros(n_fict), np.zeros(n_fict)
    for d in range(n_fict):
        for i, r in enumerate(rates):
            with remove_fictitious_class(linear, features, fictitious_labels, d, real_of[d], rate=float(r),
                                         head=head, accumulations=accumulations, score=score):
                a = accuracies()
            removed[d, i] = float(a[d])
            retained[d, i] = float(torch.cat([a[:d], a[d + 1:]]).mean())
        same = [s for s in range(n_fict) if s != d and real_of[s] == real_of[d]]
        siblings[d] = float(a[same].mean())
        others[d] = float(a[[s for s in range(n_fict) if real_of[s] != real_of[d]]].mean())
    return dict(before=before, removed=removed, retained=retained, siblings=siblings, others=others)
