"""The ISNet heatmap loss: GWRP, background and foreground losses, relevance range (chapter 03).

Faster ISNet (Bassi, Decherchi & Cavalli, 2024; :cite:`bassi2024faster`) trains a classifier on

.. math:: L_{IS} = (1 - P)\\,L_C + P\\,L_{LRP}, \\qquad L_{LRP} = w_1 L_1 + w_2 L_2 \\qquad (\\text{Eq. 6, 7})

where :math:`L_1` penalises relevance in the background of LRP heatmaps (the seven steps of §II-C,
:func:`background_loss`) and :math:`L_2` keeps the foreground's total absolute relevance inside a
natural range :math:`[C_1, C_2]` (Eq. 8, :func:`foreground_loss`), estimated from a standard
classifier's heatmaps with Welford's online algorithm (Eq. 9-10, :class:`Welford`,
:func:`relevance_range`). LRP Deep Supervision aggregates per-layer losses with GWRP
(Algorithm 1, :func:`deep_supervision`).

This module only holds tensor functions; :mod:`xai_robust.isnet` makes the heatmaps and trains.
The book explains every piece in chapter 03 (*Faster ISNet*).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_count, check_finite, check_number

__all__ = ["gwrp", "resize_masks", "background_loss", "foreground_relevance", "foreground_loss",
           "lrp_loss", "is_loss", "deep_supervision", "Welford", "relevance_range"]

#: Stabiliser added to the foreground mean before dividing (official code's value, §II-C step 2).
NORM_EPS = 1e-10
#: Upper clamp of the activated score before ``-ln(1 - f)`` (step 6), so the loss stays finite.
CLAMP = 1.0 - 1e-7


def gwrp(x: torch.Tensor, d: float) -> torch.Tensor:
    """Global Weighted Ranked Pooling over the last dimension.

    Sorts the last dimension in descending order and takes the weighted mean with weights
    :math:`d^0, d^1, \\dots, d^{n-1}` (Qiu, 2018), as in Faster ISNet §II-C step 4 and Algorithm 1
    line 7. ``d = 0`` is max pooling, ``d = 1`` is average pooling. Chapter 03.

    Parameters
    ----------
    x : Tensor[..., n]
        Values to pool (differentiable; gradients flow through the sort).
    d : float
        Decay in [0, 1].

    Returns
    -------
    Tensor[...]
        ``sum_i d^i x_(i) / sum_i d^i`` with ``x_(0) >= x_(1) >= ...``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last dimension to pool over, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
    check_finite(x, "x")
    return _gwrp(x, check_number(d, "d", low=0.0, high=1.0))


_WEIGHTS: dict = {}


def _gwrp(x: torch.Tensor, d: float) -> torch.Tensor:
    """:func:`gwrp` of checked arguments; the weights of each (d, n, dtype, device) are built once."""
    n = x.shape[-1]
    key = (d, n, x.dtype, x.device)
    weights = _WEIGHTS.get(key)
    if weights is None:
        # d**0 = 1 also for d = 0, so d = 0 keeps only the maximum.
        weights = torch.tensor([d ** i for i in range(n)], dtype=x.dtype, device=x.device)
        if len(_WEIGHTS) > 64:
            _WEIGHTS.clear()
        _WEIGHTS[key] = weights
    ranked = torch.sort(x, dim=-1, descending=True).values
    return (ranked * weights).sum(-1) / weights.sum()


def resize_masks(masks: torch.Tensor, size: tuple[int, int], *, upsample: str = "average") -> torch.Tensor:
    """Resize foreground masks to a heatmap's spatial size; any foreground in a cell makes it foreground.

    Adaptive average pooling to ``size``, then every non-zero cell becomes 1 — the official ISNet code's
    choice, which enlarges the foreground slightly (Faster ISNet Algorithm 1 line 4; the book's reference
    notes). The official code average-pools when the heatmap is *larger* than the mask too
    (``upsample="average"``, the default): an output cell straddling two mask pixels is foreground if either
    is. ``upsample="nearest"`` copies the nearest mask pixel instead (less foreground). Chapter 03's
    heatmaps are never larger than its masks, so its results do not depend on this choice.

    Parameters
    ----------
    masks : Tensor[N, 1, H, W] or Tensor[N, H, W]
        1 (or any non-zero value) on the foreground, 0 on the background.
    size : (int, int)
        Target (height, width).
    upsample : {"average", "nearest"}
        How to enlarge a mask smaller than ``size`` along either axis.

    Returns
    -------
    Tensor[N, 1, h, w]
        Binary float masks.
    """
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a torch.Tensor of shape (N, 1, H, W), got {type(masks).__name__}")
    if upsample not in ("average", "nearest"):
        raise ValueError(f"upsample must be 'average' (the official ISNet code) or 'nearest', got {upsample!r}")
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    if masks.dim() != 4 or masks.shape[1] != 1:
        raise ValueError(f"masks must have shape (N, 1, H, W) or (N, H, W), got {tuple(masks.shape)}")
    masks = masks.float() if not masks.is_floating_point() else masks
    check_finite(masks, "masks")
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        raise TypeError(f"size must be a pair (height, width) of positive ints, e.g. heatmaps.shape[-2:], got "
                        f"{size!r}")
    size = (check_count(size[0], "size[0]"), check_count(size[1], "size[1]"))
    if tuple(masks.shape[-2:]) != size:
        if upsample == "average" or (masks.shape[-2] >= size[0] and masks.shape[-1] >= size[1]):
            masks = F.adaptive_avg_pool2d(masks, size)
        else:
            masks = F.interpolate(masks, size=size, mode="nearest")
    return (masks != 0).to(masks.dtype)


def _as_maps(heatmaps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring heatmaps to (N, K, C, H, W) and masks to a broadcastable (N, 1, 1, H, W)."""
    if not isinstance(heatmaps, torch.Tensor):
        raise TypeError(f"heatmaps must be a torch.Tensor, got {type(heatmaps).__name__}")
    if heatmaps.dim() == 4:
        heatmaps = heatmaps.unsqueeze(1)
    if heatmaps.dim() != 5:
        raise ValueError("heatmaps must have shape (N, C, H, W) or (N, K, C, H, W) (K heatmaps per image); "
                         f"got {tuple(heatmaps.shape)} — a layer without spatial dimensions cannot be "
                         "supervised with a mask")
    if not heatmaps.is_floating_point():
        raise TypeError(f"heatmaps must be a floating tensor, got dtype {heatmaps.dtype}")
    check_finite(heatmaps, "heatmaps")
    if heatmaps.dtype in (torch.float16, torch.bfloat16):
        # NORM_EPS (1e-10) and the pooled sums do not fit half precision: compute the loss in float32
        heatmaps = heatmaps.float()
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a torch.Tensor of shape (N, 1, H, W), got {type(masks).__name__}")
    if masks.shape[0] != heatmaps.shape[0]:
        raise ValueError(f"masks has {masks.shape[0]} samples but heatmaps has {heatmaps.shape[0]}; "
                         "pass one mask per image")
    m = resize_masks(masks, heatmaps.shape[-2:]).to(heatmaps.dtype)
    return heatmaps, m.unsqueeze(1)  # (N, 1, 1, h, w)


def background_loss(heatmaps: torch.Tensor, masks: torch.Tensor, *, d: float = 0.9, E: float = 1.0,
                    empty: str = "raise", reduction: str = "mean") -> torch.Tensor:
    """Heatmap background loss :math:`L_1` (Faster ISNet §II-C, steps 1-7). Chapter 03.

    1. absolute heatmaps :math:`|h|`;
    2. divide each heatmap by its mean absolute relevance inside the foreground (+1e-10);
    3. zero the foreground;
    4. GWRP (:func:`gwrp`, decay ``d``) over the H·W positions of every channel;
    5. :math:`f(x) = x/(x+E)`;
    6. :math:`-\\ln(1-f)` (with :math:`f` clamped to :math:`1-10^{-7}`);
    7. mean over channels, heatmaps and batch.

    Parameters
    ----------
    heatmaps : Tensor[N, C, H, W] or Tensor[N, K, C, H, W]
        Heatmaps (K per image, e.g. one per class for the original ISNet); differentiable.
    masks : Tensor[N, 1, H', W'] or Tensor[N, H', W']
        Foreground masks (non-zero = foreground), resized to the heatmaps by :func:`resize_masks`.
    d : float
        GWRP decay in [0, 1] (official code: 0.9-0.996).
    E : float
        Positive constant of the activation (default 1).
    empty : {"raise", "ignore"}
        What to do with an image whose mask has no foreground (step 2 is undefined): raise a
        ``ValueError`` (default) or leave that image out of the mean (its loss is 0 with ``reduction="none"``).
    reduction : {"mean", "none"}
        ``"none"`` returns one value per image (mean over channels and heatmaps).

    Returns
    -------
    Tensor
        Scalar loss, or Tensor[N] with ``reduction="none"``. A full mask or an all-zero heatmap gives 0.
    """
    E = check_number(E, "E", low=0.0, low_open=True)
    if empty not in ("raise", "ignore"):
        raise ValueError(f"empty must be 'raise' or 'ignore', got {empty!r}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    h, m = _as_maps(heatmaps, masks)
    a = h.abs()                                                           # step 1
    return _background(h, m, a, (a * m).sum(dim=(-1, -2, -3), keepdim=True), d, E, empty, reduction)


def _background(h, m, a, fg_sum, d, E, empty, reduction):
    """Steps 2-7 of :func:`background_loss` from the maps ``h``, their absolute values ``a`` and the foreground
    totals ``fg_sum = Σ a·m`` (kept dimensions), which :func:`lrp_loss` shares with the foreground term."""
    n, k, c = h.shape[:3]
    has_fg = m.flatten(1).sum(1) > 0  # (N,)
    if not bool(has_fg.all()) and empty == "raise":
        bad = torch.nonzero(~has_fg).flatten().tolist()
        raise ValueError(f"masks of images {bad[:10]} have no foreground, so the heatmap normalisation "
                         "(mean foreground relevance, §II-C step 2) is undefined; drop these images or "
                         "pass empty='ignore'")
    d = check_number(d, "d", low=0.0, high=1.0)
    fg_count = (m.sum(dim=(-1, -2), keepdim=True) * c).clamp_min(1)       # foreground elements per map
    fg_mean = fg_sum / fg_count                                           # mean |h| on the foreground
    a = a / (fg_mean + NORM_EPS)                                          # step 2
    # Keep the pooled sum finite for exploding heatmaps; such values saturate step 6's clamp anyway.
    big = torch.finfo(a.dtype).max / (4 * a.shape[-1] * a.shape[-2])
    a = a.clamp(max=big).masked_fill(m > 0, 0)                            # step 3
    scores = _gwrp(a.flatten(-2), d)                                      # step 4: (N, K, C)
    f = scores / (scores + E)                                             # step 5
    per_channel = -torch.log1p(-f.clamp(max=CLAMP))                       # step 6
    per_image = per_channel.mean(dim=(1, 2)) * has_fg.to(h.dtype)          # step 7 (per image)
    if reduction == "none":
        return per_image
    return per_image.sum() / has_fg.sum().clamp_min(1).to(h.dtype)


def foreground_relevance(heatmaps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Total absolute foreground relevance :math:`s = \\sum |h| \\cdot mask` per heatmap (§II-C, L2 steps 1-3).

    Parameters
    ----------
    heatmaps : Tensor[N, C, H, W] or Tensor[N, K, C, H, W]
    masks : Tensor[N, 1, H', W'] or Tensor[N, H', W']

    Returns
    -------
    Tensor[N, K]
        One total per heatmap. Chapter 03.
    """
    h, m = _as_maps(heatmaps, masks)
    return (h.abs() * m).sum(dim=(-1, -2, -3))


def foreground_loss(s: torch.Tensor, c1: float, c2: float, *, kind: str = "hybrid",
                    reduction: str = "mean") -> torch.Tensor:
    """Foreground loss :math:`L_2` on the total absolute foreground relevance (Faster ISNet Eq. 8).

    .. math::
        f(s) = \\begin{cases} (C_1 - s)^2 / C_1^2 & s < C_1 \\\\ 0 & C_1 \\le s \\le C_2 \\\\
        (C_2 - s)^2 / C_1^2 & C_2 \\le s \\le C_2 + C_1 \\\\ 1 + s - (C_2 + C_1) & s \\ge C_2 + C_1 \\end{cases}

    ``kind="hybrid"`` is Eq. 8 (quadratic, then linear above :math:`C_2 + C_1`); ``kind="quadratic"`` is
    the original ISNet's pure square loss (§II-C step 4). Chapter 03.

    Parameters
    ----------
    s : Tensor
        Totals of absolute foreground relevance (see :func:`foreground_relevance`), any shape.
    c1, c2 : float
        The natural range, ``0 < c1 <= c2`` (see :func:`relevance_range`).
    kind : {"hybrid", "quadratic"}
    reduction : {"mean", "none"}

    Returns
    -------
    Tensor
        Mean over all elements of ``s`` (step 5), or elementwise with ``reduction="none"``.
    """
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"s must be a torch.Tensor, got {type(s).__name__}")
    check_finite(s, "s")
    c1 = check_number(c1, "c1", low=0.0, low_open=True)
    c2 = check_number(c2, "c2")
    if c2 < c1:
        raise ValueError(f"c2 must be >= c1 (the range is [C1, C2]), got c1={c1}, c2={c2}")
    if kind not in ("hybrid", "quadratic"):
        raise ValueError(f"kind must be 'hybrid' (Eq. 8) or 'quadratic' (original ISNet), got {kind!r}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    low = (c1 - s) ** 2 / c1 ** 2
    high = (c2 - s) ** 2 / c1 ** 2
    zero = torch.zeros_like(s)
    out = torch.where(s < c1, low, torch.where(s <= c2, zero, high))
    if kind == "hybrid":
        out = torch.where(s >= c2 + c1, 1 + s - (c2 + c1), out)
    return out.mean() if reduction == "mean" else out


def lrp_loss(heatmaps: torch.Tensor, masks: torch.Tensor, *, c1: float, c2: float, d: float = 0.9,
             E: float = 1.0, w1: float = 1.0, w2: float = 1.0, foreground: str = "hybrid",
             empty: str = "raise") -> torch.Tensor:
    """Heatmap loss :math:`L_{LRP} = w_1 L_1 + w_2 L_2` (Faster ISNet Eq. 7). Chapter 03.

    Parameters
    ----------
    heatmaps, masks
        As in :func:`background_loss`.
    c1, c2 : float
        Foreground range for :func:`foreground_loss`.
    d, E
        Background-loss settings (:func:`background_loss`).
    w1, w2 : float
        Positive weights (paper: 1 and 1 on MNIST, 1 and 3 elsewhere).
    foreground : {"hybrid", "quadratic"}
        Eq. 8 or the original quadratic.
    empty : {"raise", "ignore"}
        Handling of masks without foreground (``"ignore"`` leaves those images out of both terms).

    Returns
    -------
    Tensor
        Scalar loss.
    """
    w1 = check_number(w1, "w1", low=0.0, low_open=True)
    w2 = check_number(w2, "w2", low=0.0, low_open=True)
    E = check_number(E, "E", low=0.0, low_open=True)
    if empty not in ("raise", "ignore"):
        raise ValueError(f"empty must be 'raise' or 'ignore', got {empty!r}")
    # the maps, masks, |h| and the foreground totals once for both terms (background_loss, foreground_relevance)
    h, m = _as_maps(heatmaps, masks)
    a = h.abs()
    fg_sum = (a * m).sum(dim=(-1, -2, -3), keepdim=True)
    l1 = _background(h, m, a, fg_sum, d, E, empty, "mean")
    s = fg_sum.reshape(fg_sum.shape[:2])
    l2_each = foreground_loss(s, c1, c2, kind=foreground, reduction="none").mean(1)
    if empty == "ignore":
        keep = m.flatten(1).sum(1) > 0
        l2 = (l2_each * keep).sum() / keep.sum().clamp_min(1)
    else:
        l2 = l2_each.mean()
    return w1 * l1 + w2 * l2


def is_loss(classification: torch.Tensor, heatmap: torch.Tensor, P: float) -> torch.Tensor:
    """ISNet loss :math:`L_{IS} = (1-P) L_C + P L_{LRP}` (Faster ISNet Eq. 6). Chapter 03.

    Parameters
    ----------
    classification : Tensor
        :math:`L_C`, e.g. the cross-entropy.
    heatmap : Tensor
        :math:`L_{LRP}` (:func:`lrp_loss` or :func:`deep_supervision`).
    P : float
        Trade-off in [0, 1] (paper: P in (0, 1), official default 0.7; 0 allows a warm-up).
    """
    P = check_number(P, "P", low=0.0, high=1.0)
    check_finite(classification, "classification")
    check_finite(heatmap, "heatmap")
    return (1 - P) * classification + P * heatmap


def deep_supervision(layer_losses: Iterable[torch.Tensor] | torch.Tensor, d: float = 0.9) -> torch.Tensor:
    """Aggregate per-layer heatmap losses with GWRP (LRP Deep Supervision, Faster ISNet Algorithm 1 line 7).

    The highest layer loss gets weight 1, the next d, then d², …, so no supervised heatmap can keep much
    background attention. Chapter 03.

    Parameters
    ----------
    layer_losses : sequence of scalar Tensors or Tensor[L]
    d : float
        GWRP decay in [0, 1].
    """
    if isinstance(layer_losses, torch.Tensor):
        stacked = layer_losses.reshape(-1)
    else:
        items = list(layer_losses)
        if not items:
            raise ValueError("layer_losses is empty: pass at least one layer's loss")
        for i, v in enumerate(items):
            if not isinstance(v, (torch.Tensor, int, float, np.number)) or isinstance(v, bool) or (
                    isinstance(v, torch.Tensor) and v.numel() != 1):
                raise ValueError(f"layer_losses[{i}] must be one scalar loss per layer, got "
                                 f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
        stacked = torch.stack([torch.as_tensor(v).reshape(()) for v in items])
    if stacked.numel() == 0:
        raise ValueError("layer_losses is empty: pass at least one layer's loss")
    if not stacked.is_floating_point():
        raise TypeError(f"layer_losses must be floating losses, got dtype {stacked.dtype}")
    check_finite(stacked, "layer_losses")
    return gwrp(stacked, d)


class Welford:
    """Streaming mean and standard deviation (Welford, 1962), batched with Chan et al.'s update.

    Faster ISNet §II-E collects the total absolute relevance of every training heatmap during one
    epoch with Welford's online algorithm, so memory stays constant. ``update`` merges a whole batch
    of values at once (Chan, Golub & LeVeque's pairwise form of the same recurrence), which gives the
    same result as feeding the values one by one. Use one instance per supervised layer (LDS).
    Chapter 03.

    Examples
    --------
    >>> w = Welford(); w.update(torch.tensor([1.0, 2.0, 3.0])); w.update(torch.tensor([4.0]))
    >>> round(w.mean, 3), round(w.std, 3)
    (2.5, 1.291)
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0

    def update(self, values) -> Welford:
        """Add a batch of values (any shape; flattened). Non-finite values raise ``ValueError``."""
        if isinstance(values, torch.Tensor):
            v = values.detach().double().flatten().cpu()
        else:
            try:
                v = torch.as_tensor(np.asarray(values, dtype=np.float64)).flatten()
            except (TypeError, ValueError) as err:
                raise TypeError(f"values must be numbers (a tensor, array or sequence of heatmap totals), got "
                                f"{type(values).__name__}") from err
        if v.numel() == 0:
            return self
        if not bool(torch.isfinite(v).all()):
            raise ValueError("values must be finite; a heatmap total is inf/NaN — check the model's gradients")
        n_b = v.numel()
        mean_b = float(v.mean())
        m2_b = float(((v - mean_b) ** 2).sum())
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self._m2 += m2_b + delta ** 2 * self.count * n_b / n
        self.count = n
        return self

    @property
    def variance(self) -> float:
        """Sample variance (divides by n - 1); 0 for fewer than two values."""
        return self._m2 / (self.count - 1) if self.count > 1 else 0.0

    @property
    def std(self) -> float:
        """Sample standard deviation."""
        return math.sqrt(max(self.variance, 0.0))

    def range(self) -> tuple[float, float]:
        """(C1, C2) from the accumulated mean and standard deviation (Eq. 9-10)."""
        return _range_from(self.mean, self.std, self.count)

    def __repr__(self) -> str:
        return f"Welford(count={self.count}, mean={self.mean:.6g}, std={self.std:.6g})"


def _range_from(mean: float, std: float, count: int) -> tuple[float, float]:
    if count < 2:
        raise ValueError(f"need at least 2 heatmap totals to estimate the relevance range, got {count}")
    if not mean > 0:
        raise ValueError(f"the mean total absolute relevance is {mean}; heatmaps are all zero, so C1 would "
                         "be 0 — check the model (vanishing gradients?) before estimating the range")
    c1 = max(mean / 5, mean - 3 * std)      # Eq. 9
    c2 = min(25 * c1, mean + 3 * std)       # Eq. 10
    return c1, c2


def relevance_range(totals) -> tuple[float, float]:
    """The natural relevance range :math:`(C_1, C_2)` (Faster ISNet Eq. 9-10). Chapter 03.

    .. math:: C_1 = \\max(M/5, M - 3S), \\qquad C_2 = \\min(25 C_1, M + 3S)

    Parameters
    ----------
    totals : Tensor, sequence of float, or Welford
        The total absolute relevance :math:`\\sum_j |H_j|` of each heatmap of a standard classifier
        (or a :class:`Welford` accumulator that saw them). :math:`M` and :math:`S` are their mean and
        sample standard deviation.

    Returns
    -------
    (float, float)
        ``(c1, c2)`` with ``0 < c1 <= c2``.
    """
    if isinstance(totals, Welford):
        return totals.range()
    return Welford().update(totals).range()
