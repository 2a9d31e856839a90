"""Localisation and perturbation metrics for saliency maps: LeRF/MoRF curves, greedy AUC-LeRF, MaxBoxAccV2.

Chapter 07 (Neuro-Activated Superpixels) uses them to compare pixel saliency maps with their
superpixelifications, as in NAS §4.3.2 (AUC-LeRF, Table 2) and §4.3.3 (weakly supervised object
localisation, Table 3). MaxBoxAccV2 follows Choe et al. (2020) and their code (clovaai/wsolevaluation): boxes
around every contour that ``cv2.findContours`` in tree mode returns (outer boundaries and hole boundaries),
computed here with scipy's connected-component labelling, so OpenCV is not a dependency.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..attribution import resolve_target, restore_model
from ..checks import check_baseline, check_count, check_finite, check_model_input, check_number
from .saliency import curve_auc, perturbation_curve

__all__ = ["relevance_share", "relevance_curve", "lerf_curve", "morf_curve", "curve_auc", "greedy_lerf",
           "mask_boxes", "map_boxes", "box_iou", "max_box_acc_v2", "mean_lerf_auc", "best_cell_iou"]


def relevance_share(saliency: torch.Tensor, region: torch.Tensor, *, part: str = "abs") -> torch.Tensor:
    """Fraction of each map's relevance that lies inside a region, one number per image.

    The background share of the ISNet papers (chapters 01 and 03: ``region = 1 - mask``, ``part="abs"``) and
    the share of positive relevance on a bias mark (chapter 02, ``part="positive"``):
    ``Σ_{p∈region} r_p / Σ_p r_p`` with ``r = |h|`` or ``r = max(h, 0)``, summed over channels.

    Parameters
    ----------
    saliency : Tensor[N, C, H, W] or Tensor[N, H, W]
        Heatmaps (finite, at least one).
    region : Tensor broadcastable to ``saliency`` (e.g. masks of shape (N, 1, H, W)), values in [0, 1]
        The region (1 = inside); soft values weight the pixels. Finite.
    part : {"abs", "positive"}
        Which relevance is counted.

    Returns
    -------
    Tensor[N]
        The share in [0, 1]; 0 for an all-zero map.
    """
    if part not in ("abs", "positive"):
        raise ValueError(f"part must be 'abs' or 'positive', got {part!r}")
    if not isinstance(saliency, torch.Tensor):
        raise TypeError(f"saliency must be a torch.Tensor of shape (N, H, W) or (N, C, H, W), "
                        f"got {type(saliency).__name__}")
    if saliency.dim() not in (3, 4):
        raise ValueError(f"saliency must have shape (N, H, W) or (N, C, H, W), got {tuple(saliency.shape)}")
    if saliency.shape[0] == 0:
        raise ValueError(f"saliency is an empty batch (shape {tuple(saliency.shape)}): pass at least one map")
    if not saliency.is_floating_point():
        saliency = saliency.double()
    check_finite(saliency, "saliency")
    if not isinstance(region, torch.Tensor):
        try:
            region = torch.as_tensor(np.asarray(region, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise TypeError(f"region must be a tensor broadcastable to the saliency maps, "
                            f"got {type(region).__name__}") from err
    check_finite(region, "region")
    r = saliency.abs() if part == "abs" else saliency.clamp(min=0)
    region = region.to(dtype=r.dtype, device=r.device)
    if saliency.dim() == 3 and region.dim() == 4:
        region = region[:, 0]
    try:
        weighted = r * region
    except RuntimeError:
        weighted = None
    if weighted is None or weighted.shape != r.shape:
        raise ValueError(f"region of shape {tuple(region.shape)} does not broadcast to the saliency maps of "
                         f"shape {tuple(saliency.shape)}; pass masks of shape (N, 1, H, W)")
    return weighted.flatten(1).sum(1) / r.flatten(1).sum(1).clamp_min(1e-12)


# ----------------------------------------------------------------------------------------------------
# LeRF / MoRF curves
# ----------------------------------------------------------------------------------------------------
def _as_map(saliency: torch.Tensor, x: torch.Tensor, name: str = "saliency") -> torch.Tensor:
    if not isinstance(saliency, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, H, W) or (N, C, H, W), "
                        f"got {type(saliency).__name__}")
    n, _, h, w = x.shape
    if saliency.dim() == 4:
        saliency = saliency.sum(1)
    if saliency.shape != (n, h, w):
        raise ValueError(f"{name} must have shape (N, H, W) = {(n, h, w)} or (N, C, H, W), "
                         f"got {tuple(saliency.shape)}")
    saliency = saliency.detach().to(x.device, torch.float64)
    check_finite(saliency, name)  # after the channel sum, which can overflow
    return saliency


def _scores(model, x, t, batch_size):
    outs = []
    for s in range(0, x.shape[0], batch_size):
        outs.append(model(x[s:s + batch_size]).gather(1, t[s:s + batch_size, None])[:, 0])
    return torch.cat(outs)


def relevance_curve(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, target=None, *,
                    order: str = "lerf", steps: int = 20, baseline=0.0, scale: bool = True,
                    batch_size: int = 128):
    """Least- or most-relevant-first removal curve of the target's pre-softmax score (NAS §4.3.2).

    :func:`xai_robust.metrics.perturbation_curve` in NAS's setting: pixels are removed (set to ``baseline``) in
    order of saliency — ascending for LeRF, descending for MoRF, ties in raster order — in ``steps`` equal
    fractions, and the logit of the target is tracked. With ``scale=True`` the curve is mapped to start at 1
    (intact image) and end at 0 (every pixel removed), as in NAS §4.3.2, so that AUCs compare across images:
    ``c(t) = (f(x_t) − f(x_1)) / (f(x_0) − f(x_1))``.

    Parameters
    ----------
    model : nn.Module
        Classifier (run in eval mode, left as found).
    x : Tensor[N, C, H, W]
        Images.
    saliency : Tensor[N, H, W] or Tensor[N, C, H, W]
        Saliency maps (summed over channels when 4-D).
    target : see :func:`xai_robust.attribution.resolve_target`
        Class whose logit is tracked; default the predicted class on the intact image.
    order : {"lerf", "morf"}
    steps : int
        Number of removal steps (>= 1); the curve has ``steps + 1`` points.
    baseline : float or Tensor broadcastable to (N, C, H, W)
        Value of removed pixels (finite).
    scale : bool
        Scale to start at 1 and end at 0 (images whose two end scores coincide get NaN). The scaling presumes
        the score drops from the image to the fully removed one; where it rises, the scaled curve is mirrored
        and "larger AUC is better" no longer holds (report such images separately).
    batch_size : int
        Images per forward pass (>= 1).

    Returns
    -------
    fractions : Tensor[steps + 1]
        Fraction of pixels removed (``round(j H W / steps) / (H W)``).
    curve : Tensor[N, steps + 1]
    """
    check_model_input(model, x)
    if order not in ("lerf", "morf"):
        raise ValueError(f"order must be 'lerf' or 'morf', got {order!r}")
    steps = check_count(steps, "steps")
    batch_size = check_count(batch_size, "batch_size")
    sal = _as_map(saliency, x)
    fractions, curve = perturbation_curve(model, x, sal, target, mode="deletion", n_steps=steps, order=order,
                                          baseline=baseline, output="logit", ties="raster",
                                          batch_size=batch_size)
    curve = curve.double()
    if scale:
        curve = _scale(curve)
    return fractions, curve


def _scale(curve: torch.Tensor) -> torch.Tensor:
    den = curve[:, :1] - curve[:, -1:]
    out = (curve - curve[:, -1:]) / den
    return torch.where(den.abs() > 1e-12, out, torch.full_like(out, float("nan")))


def lerf_curve(model, x, saliency, target=None, **kwargs):
    """Least-relevant-first curve; see :func:`relevance_curve`."""
    return relevance_curve(model, x, saliency, target, order="lerf", **kwargs)


def morf_curve(model, x, saliency, target=None, **kwargs):
    """Most-relevant-first curve; see :func:`relevance_curve`."""
    return relevance_curve(model, x, saliency, target, order="morf", **kwargs)


def greedy_lerf(model: nn.Module, x: torch.Tensor, segments: torch.Tensor, target=None, *, baseline=0.0,
                batch_size: int = 128, progress: bool = False):
    """Greedy maximisation of AUC-LeRF over superpixels (NAS §4.3.1–4.3.2, "AUC Max.").

    At each step every remaining superpixel is tried and the one whose removal keeps the target's score highest
    is removed. The curve's x-axis is the fraction of removed pixels; it is scaled to start at 1 and end at 0.

    Parameters
    ----------
    model, x, target, baseline, batch_size
        As in :func:`relevance_curve`.
    segments : LongTensor[N, H, W]
        Superpixel labels (integers, or finite integer-valued floats).
    progress : bool
        Show a progress bar over the images.

    Returns
    -------
    dict with
        ``"auc"`` (Tensor[N]), ``"curves"`` (list of Tensor, one per image), ``"fractions"`` (list of Tensor),
        ``"order_map"`` (Tensor[N, H, W]: removal step / (S − 1) per pixel, 0 = removed first, 1 = last; a
        saliency map whose LeRF order is the greedy order).
    """
    check_model_input(model, x)
    n, c, h, w = x.shape
    if not isinstance(segments, torch.Tensor):
        raise TypeError(f"segments must be a LongTensor of shape (N, H, W) = {(n, h, w)}, "
                        f"got {type(segments).__name__}")
    if segments.shape != (n, h, w):
        raise ValueError(f"segments must be a LongTensor of shape (N, H, W) = {(n, h, w)}, "
                         f"got {tuple(segments.shape)}")
    if segments.is_floating_point():
        check_finite(segments, "segments")
        if not bool((segments == segments.round()).all()):
            raise ValueError("segments must hold integer superpixel labels, got fractional values")
    batch_size = check_count(batch_size, "batch_size")
    segments = segments.to(x.device).long()
    base = check_baseline(baseline, x)
    aucs, curves, fracs = [], [], []
    order_map = torch.zeros(n, h, w, dtype=torch.float64)
    it = range(n)
    if progress:
        from .. import progress as progress_bar

        it = progress_bar(it, desc="greedy LeRF")
    with restore_model(model), torch.no_grad():
        model.eval()
        t_all = resolve_target(torch.cat([model(x[s:s + batch_size]) for s in range(0, n, batch_size)]), target)
        for i in it:
            xi, bi, seg, t = x[i:i + 1], base[i:i + 1], segments[i], t_all[i:i + 1]
            ids = torch.unique(seg).tolist()
            n_seg = len(ids)
            removed = torch.zeros(h, w, dtype=torch.bool, device=x.device)
            score0 = model(xi).gather(1, t[:, None]).item()
            scores, frac = [score0], [0.0]
            for step in range(n_seg):
                masks = torch.stack([removed | (seg == s) for s in ids])[:, None]
                cand = torch.where(masks, bi, xi)
                vals = _scores(model, cand, t.expand(len(ids)), batch_size)
                best = int(vals.argmax())
                removed = masks[best, 0]
                order_map[i][(seg == ids[best]).cpu()] = step / (n_seg - 1) if n_seg > 1 else 1.0
                scores.append(vals[best].item())
                frac.append(removed.double().mean().item())
                ids.pop(best)
            curve = _scale(torch.tensor([scores], dtype=torch.float64))
            f = torch.tensor(frac, dtype=torch.float64)
            curves.append(curve[0])
            fracs.append(f)
            aucs.append(curve_auc(f, curve)[0])
    return {"auc": torch.stack(aucs), "curves": curves, "fractions": fracs, "order_map": order_map}


# ----------------------------------------------------------------------------------------------------
# MaxBoxAccV2 (Choe et al., 2020; clovaai/wsolevaluation)
# ----------------------------------------------------------------------------------------------------
#: Threshold step of :func:`max_box_acc_v2` when neither ``thresholds`` nor ``threshold_step`` is given.
#: wsolevaluation's own default (``cam_curve_interval`` of ``evaluate_wsol`` and of the training config that
#: produced the paper's numbers) is 0.001.
DEFAULT_THRESHOLD_STEP = 0.01

_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity (foreground, as cv2's border following)


def _contour_boxes(binary: np.ndarray, *, holes: bool = True) -> np.ndarray:
    """Boxes (x0, y0, x1, y1) of every contour of a binary image, as wsolevaluation finds and boxes them.

    wsolevaluation runs ``cv2.findContours(..., cv2.RETR_TREE, ...)``, which returns every border of the
    Suzuki–Abe border following: the *outer* border of each 8-connected foreground component and the *hole*
    border of each 4-connected background component enclosed by foreground (holes of holes included, at any
    depth). It boxes each contour with ``cv2.boundingRect`` → ``(x, y, w, h)`` and writes
    ``x1 = min(x + w, W − 1)``, ``y1 = min(y + h, H − 1)`` (an exclusive end, clipped). Here, without OpenCV:

    - an outer border runs over its component's own outermost pixels, so its box is the component's box;
    - a hole border runs over the foreground pixels 4-adjacent to the hole, so its box is the hole's box grown
      by one pixel on each side (the grown box stays inside the image: a hole never touches the image edge,
      which cv2 pads with background).

    An image without foreground gives the single box (0, 0, 0, 0), as in wsolevaluation. The box *set* equals
    OpenCV's (``tests/test_localization.py`` compares them when cv2 is importable; checked with cv2 4.14 and
    5.0); the order does not matter to MaxBoxAccV2, which takes the best box.
    """
    from scipy import ndimage

    h, w = binary.shape
    boxes = []
    lab, _ = ndimage.label(binary, structure=_EIGHT)
    for rows, cols in ndimage.find_objects(lab):
        boxes.append([cols.start, rows.start, min(cols.stop, w - 1), min(rows.stop, h - 1)])
    if holes and boxes:
        lab, _ = ndimage.label(~binary)  # 4-connectivity (background)
        for rows, cols in ndimage.find_objects(lab):
            if rows.start == 0 or cols.start == 0 or rows.stop == h or cols.stop == w:
                continue  # touches the image edge: the outside, not a hole
            # hole pixels rows.start .. rows.stop − 1; its border one pixel further out: boundingRect gives
            # x = cols.start − 1, w = (cols.stop − cols.start) + 2, so x + w = cols.stop + 1
            boxes.append([cols.start - 1, rows.start - 1, min(cols.stop + 1, w - 1), min(rows.stop + 1, h - 1)])
    if not boxes:
        return np.zeros((1, 4), dtype=np.int64)
    return np.asarray(boxes, dtype=np.int64)


def _check_boxes(boxes, name: str, *, allow_empty: bool = True) -> np.ndarray:
    """Boxes (x0, y0, x1, y1) as a float array (B, 4): finite, x1 >= x0 and y1 >= y0."""
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array of boxes (x0, y0, x1, y1) of shape (B, 4)") from err
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (B, 4) (x0, y0, x1, y1 per box) or (4,), got {arr.shape}")
    if not allow_empty and arr.shape[0] == 0:
        raise ValueError(f"{name} holds no box: pass at least one ground-truth box per image")
    check_finite(arr, name)
    if (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
        raise ValueError(f"{name} must hold boxes (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0")
    return arr


def _as_numpy(value, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16 or value.dtype == torch.float16:
            value = value.float()
        value = value.numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a tensor or array, got {type(value).__name__}") from err
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    check_finite(arr, name)
    return arr


def mask_boxes(masks) -> list[np.ndarray]:
    """Ground-truth boxes from object masks: one box per connected component, same convention as the estimates.

    Only the outer boundary of each 8-connected component is boxed (a hole in an object mask is not an object).

    Parameters
    ----------
    masks : Tensor[N, H, W] or Tensor[N, 1, H, W]
        Foreground masks (> 0.5 is foreground), finite.

    Returns
    -------
    list of int arrays (B_i, 4)
    """
    m = _as_numpy(masks, "masks")
    if m.ndim == 4:
        if m.shape[1] != 1:
            raise ValueError(f"masks must have shape (N, H, W) or (N, 1, H, W), got {tuple(m.shape)}")
        m = m[:, 0]
    if m.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W) or (N, 1, H, W), got {tuple(m.shape)}")
    if m.shape[0] == 0:
        raise ValueError(f"masks is an empty batch (shape {tuple(m.shape)}): pass at least one mask")
    out = []
    for i, mi in enumerate(m > 0.5):
        if not mi.any():
            raise ValueError(f"masks[{i}] has an empty foreground; drop that image or pass gt_boxes")
        out.append(_contour_boxes(mi, holes=False))
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (A × B) of boxes (x0, y0, x1, y1) with the +1 pixel convention of wsolevaluation.

    ``a`` and ``b`` are arrays of shape (A, 4) and (B, 4), or single boxes of shape (4,); coordinates must be
    finite with x1 >= x0 and y1 >= y0.
    """
    a = _check_boxes(a, "a")
    b = _check_boxes(b, "b")
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0 + 1, 0, None) * np.clip(iy1 - iy0 + 1, 0, None)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _quantize(normalized: np.ndarray) -> np.ndarray:
    return (normalized * 255).astype(np.uint8)


def map_boxes(saliency_map, threshold: float) -> np.ndarray:
    """Boxes around all contours of a min-max normalised map thresholded at ``threshold`` (wsolevaluation).

    The map is quantised to uint8 (``map * 255``) and pixels strictly above ``int(threshold * max)`` are kept,
    as ``cv2.threshold(..., THRESH_BINARY)`` does in wsolevaluation; every contour of the result is boxed,
    the outer boundary of each component and the boundary of each hole (see :func:`_contour_boxes`).

    Parameters
    ----------
    saliency_map : array or Tensor (H, W)
        Finite values in [0, 1] (min-max normalise first).
    threshold : float
        τ in [0, 1].

    Returns
    -------
    int array (B, 4)
    """
    m = _as_numpy(saliency_map, "saliency_map").astype(np.float64)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"saliency_map must be one non-empty (H, W) map, got shape {tuple(m.shape)}")
    if m.min() < 0 or m.max() > 1:
        raise ValueError(f"saliency_map must lie in [0, 1] (min-max normalise it first), got values in "
                         f"[{m.min():.4g}, {m.max():.4g}]")
    threshold = check_number(threshold, "threshold", low=0.0, high=1.0)
    q = _quantize(m)
    return _contour_boxes(q > int(threshold * q.max()))


def _normalize_maps(saliency) -> np.ndarray:
    s = _as_numpy(saliency, "saliency").astype(np.float64)
    if s.ndim == 4:
        s = s.sum(1)
    if s.ndim != 3:
        raise ValueError(f"saliency must have shape (N, H, W) or (N, C, H, W), got {tuple(s.shape)}")
    if s.shape[0] == 0 or s.shape[1] == 0 or s.shape[2] == 0:
        raise ValueError(f"saliency is empty (shape {tuple(s.shape)}): pass at least one (H, W) map")
    check_finite(s, "saliency")  # a channel sum can overflow to inf
    lo = s.min(axis=(1, 2), keepdims=True)
    hi = s.max(axis=(1, 2), keepdims=True)
    return np.where(hi > lo, (s - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)


def _threshold_list(thresholds, threshold_step) -> np.ndarray:
    if thresholds is not None and threshold_step is not None:
        raise ValueError("pass thresholds= or threshold_step=, not both")
    if thresholds is None:
        step = DEFAULT_THRESHOLD_STEP if threshold_step is None else threshold_step
        step = check_number(step, "threshold_step", low=0.0, high=1.0, low_open=True)
        return np.arange(0, 1, step)
    t = _as_numpy(thresholds, "thresholds").astype(np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence of τ in [0, 1], got shape {t.shape}")
    if t.min() < 0 or t.max() > 1:
        raise ValueError(f"thresholds must lie in [0, 1], got values in [{t.min():.4g}, {t.max():.4g}]")
    return t


def max_box_acc_v2(saliency, masks=None, *, gt_boxes: Sequence[np.ndarray] | None = None,
                   thresholds=None, threshold_step: float | None = None,
                   iou_thresholds=(0.3, 0.5, 0.7)) -> dict:
    """MaxBoxAccV2 (Choe et al., 2020) as used for weakly supervised localisation in NAS §4.3.3 (Table 3).

    Follows wsolevaluation's ``BoxEvaluator`` with ``multi_contour_eval=True`` and ``multi_iou_eval=True``
    (its MaxBoxAccV2 setting). Each map is min-max normalised and quantised to uint8; for every threshold τ,
    the pixels above ``int(τ · max)`` are kept and *every contour* of the result is boxed — the outer boundary
    of each 8-connected region and the boundary of each hole in it, as ``cv2.findContours`` in tree mode
    returns them (see :func:`map_boxes`). An image counts as localised at IoU level δ when its best
    box-to-ground-truth IoU (+1 pixel convention, :func:`box_iou`) is ≥ δ. ``BoxAcc(τ, δ)`` is the fraction
    of localised images; ``MaxBoxAcc(δ) = max_τ BoxAcc(τ, δ)`` (one threshold for the whole data set) and
    MaxBoxAccV2 is the mean over δ ∈ {0.3, 0.5, 0.7}.

    Parameters
    ----------
    saliency : Tensor[N, H, W] or Tensor[N, C, H, W]
        Saliency maps (summed over channels when 4-D); finite.
    masks : Tensor[N, (1,) H, W], optional
        Object masks of the maps' size; their components' boxes are the ground truth (see :func:`mask_boxes`).
    gt_boxes : list of arrays (B_i, 4), optional
        Ground-truth boxes (x0, y0, x1, y1) instead of masks, at least one per image.
    thresholds : sequence of float in [0, 1], optional
        The τ values, instead of a regular grid.
    threshold_step : float in (0, 1], optional
        Grid ``0, step, 2·step, … < 1`` (``np.arange(0, 1, step)``, wsolevaluation's ``cam_curve_interval``).
        Default :data:`DEFAULT_THRESHOLD_STEP` = 0.01 (the book's CPU choice, docs/design.md; also wsolevaluation's
        command-line default). wsolevaluation's ``evaluate_wsol`` and the configuration behind the paper's
        numbers use **0.001**: pass ``threshold_step=0.001`` to match them exactly. Because the map is
        quantised to 256 levels, 0.001 already tries every distinct cut (finer steps change nothing) and
        costs about 2.5 times the default; it can only raise each ``MaxBoxAcc(δ)``, never lower it.
    iou_thresholds : sequence of float in (0, 1]
        δ values.

    Returns
    -------
    dict
        ``"maxboxacc_v2"`` and ``"iou@30"``, ``"iou@50"``, ``"iou@70"`` (fractions in [0, 1]) plus
        ``"best_threshold@30"`` … (the first τ achieving each maximum).
    """
    maps = _normalize_maps(saliency)
    n, h, w = maps.shape
    if (masks is None) == (gt_boxes is None):
        raise ValueError("pass exactly one of masks= (object masks) or gt_boxes= (list of (B, 4) arrays)")
    thresholds = _threshold_list(thresholds, threshold_step)
    if isinstance(iou_thresholds, (int, float, np.number, torch.Tensor)) and np.ndim(iou_thresholds) == 0:
        iou_thresholds = [iou_thresholds]  # one IoU level
    if isinstance(iou_thresholds, (str, bytes)) or not hasattr(iou_thresholds, "__iter__"):
        raise TypeError(f"iou_thresholds must be a sequence of IoU levels in (0, 1], got {iou_thresholds!r}")
    deltas = [check_number(d, "iou_thresholds", low=0.0, high=1.0, low_open=True) for d in iou_thresholds]
    if not deltas:
        raise ValueError("iou_thresholds is empty: pass at least one IoU level, e.g. (0.3, 0.5, 0.7)")
    if gt_boxes is None:
        gt_boxes = mask_boxes(masks)
        if len(gt_boxes) != n:
            raise ValueError(f"masks has {len(gt_boxes)} masks for {n} saliency maps; pass one per image")
        mask_hw = tuple(np.shape(masks)[-2:])
        if mask_hw != (h, w):
            raise ValueError(f"masks are {mask_hw} but the saliency maps are {(h, w)}; resize the masks "
                             f"(nearest neighbour) to the maps' size")
    else:
        if isinstance(gt_boxes, (np.ndarray, torch.Tensor)) and np.ndim(gt_boxes) == 2:
            raise TypeError("gt_boxes must be a list with one (B_i, 4) array per image, not one array")
        gt_boxes = [_check_boxes(b, f"gt_boxes[{i}]", allow_empty=False) for i, b in enumerate(gt_boxes)]
        if len(gt_boxes) != n:
            raise ValueError(f"gt_boxes has {len(gt_boxes)} entries for {n} saliency maps; pass one per image")
    best_iou = np.zeros((len(thresholds), n))
    for i in range(n):
        q = _quantize(maps[i])
        cuts = (thresholds * int(q.max())).astype(np.int64)  # int(τ · max) as in cv2.threshold's call
        for cut in np.unique(cuts):
            best_iou[cuts == cut, i] = box_iou(_contour_boxes(q > cut), gt_boxes[i]).max()
    out = {}
    accs = []
    for delta in deltas:
        acc = (best_iou >= delta).mean(1)
        key = f"{int(round(delta * 100))}"
        out[f"iou@{key}"] = float(acc.max())
        out[f"best_threshold@{key}"] = float(thresholds[int(acc.argmax())])
        accs.append(acc.max())
    out["maxboxacc_v2"] = float(np.mean(accs))
    return out


def mean_lerf_auc(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, target=None, **kwargs) -> float:
    """Mean AUC-LeRF over a batch: the area under :func:`lerf_curve`, averaged over the images (NaNs skipped).

    The per-method score of NAS Table 2 (Sec. 4.3.2, larger is better): the least relevant pixels are removed
    first, so a map that ranks the pixels the model needs last keeps the score up longest.

    Parameters
    ----------
    model, x, saliency, target
        As in :func:`lerf_curve`.
    **kwargs
        :func:`lerf_curve`'s options (``steps``, ``baseline``, ...).

    Returns
    -------
    float
        The mean AUC as a fraction (``torch.nanmean`` of :func:`curve_auc` per image).
    """
    fractions, curve = lerf_curve(model, x, saliency, target, **kwargs)
    return float(torch.nanmean(curve_auc(fractions, curve)))


def best_cell_iou(segments: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean over images of the best IoU between the object mask and a single cell of the image's partition.

    How well one superpixel captures the object: NAS Sec. 4.2.2 (Fig. 3) reads this off the depth and number of
    clusters. 1 means one cell is exactly the object.

    Parameters
    ----------
    segments : LongTensor[N, H, W]
        One partition per image.
    masks : BoolTensor[N, H, W]
        The object masks.

    Returns
    -------
    float in [0, 1]
    """
    if not isinstance(segments, torch.Tensor) or not isinstance(masks, torch.Tensor):
        raise TypeError("segments and masks must be tensors of shape (N, H, W)")
    if segments.dim() != 3 or tuple(masks.shape) != tuple(segments.shape):
        raise ValueError(f"segments and masks must have the same shape (N, H, W), got {tuple(segments.shape)} and "
                         f"{tuple(masks.shape)}")
    masks = masks.bool().cpu()
    ious = []
    for s, mi in zip(segments.cpu(), masks, strict=True):
        best = 0.0
        for c in torch.unique(s):
            cell = s == c
            best = max(best, ((cell & mi).sum() / (cell | mi).sum()).item())
        ious.append(best)
    return float(np.mean(ious))
