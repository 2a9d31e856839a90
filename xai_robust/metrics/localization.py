"""Localisation and perturbation metrics for saliency maps: LeRF/MoRF curves, greedy AUC-LeRF, MaxBoxAccV2.

Chapter 07 (Neuro-Activated Superpixels) uses them to compare pixel saliency maps with their
superpixelifications, as in NAS §4.3.2 (AUC-LeRF, Table 2) and §4.3.3 (weakly supervised object
localisation, Table 3). MaxBoxAccV2 follows Choe et al. (2020) and their code (clovaai/wsolevaluation).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..attribution import check_images, resolve_target, restore_model

__all__ = ["relevance_share", "relevance_curve", "lerf_curve", "morf_curve", "curve_auc", "greedy_lerf",
           "mask_boxes", "map_boxes", "box_iou", "max_box_acc_v2"]


def relevance_share(saliency: torch.Tensor, region: torch.Tensor, *, part: str = "abs") -> torch.Tensor:
    """Fraction of each map's relevance that lies inside a region, one number per image.

    The background share of the ISNet papers (chapters 01 and 03: ``region = 1 - mask``, ``part="abs"``) and
    the share of positive relevance on a bias mark (chapter 02, ``part="positive"``):
    ``Σ_{p∈region} r_p / Σ_p r_p`` with ``r = |h|`` or ``r = max(h, 0)``, summed over channels.

    Parameters
    ----------
    saliency : Tensor[N, C, H, W] or Tensor[N, H, W]
        Heatmaps.
    region : Tensor broadcastable to ``saliency`` (e.g. masks of shape (N, 1, H, W)), values in [0, 1]
        The region (1 = inside); soft values weight the pixels.
    part : {"abs", "positive"}
        Which relevance is counted.

    Returns
    -------
    Tensor[N]
        The share in [0, 1]; 0 for an all-zero map.
    """
    if part not in ("abs", "positive"):
        raise ValueError(f"part must be 'abs' or 'positive', got {part!r}")
    if not isinstance(saliency, torch.Tensor) or saliency.dim() not in (3, 4):
        raise TypeError("saliency must be a tensor of shape (N, H, W) or (N, C, H, W)")
    r = saliency.abs() if part == "abs" else saliency.clamp(min=0)
    region = torch.as_tensor(region, dtype=r.dtype, device=r.device)
    if saliency.dim() == 3 and region.dim() == 4:
        region = region[:, 0]
    try:
        inside = (r * region).flatten(1).sum(1)
    except RuntimeError as err:
        raise ValueError(f"region of shape {tuple(region.shape)} does not broadcast to the saliency maps of "
                         f"shape {tuple(saliency.shape)}; pass masks of shape (N, 1, H, W)") from err
    return inside / r.flatten(1).sum(1).clamp_min(1e-12)


# ----------------------------------------------------------------------------------------------------
# LeRF / MoRF curves
# ----------------------------------------------------------------------------------------------------
def _as_map(saliency: torch.Tensor, x: torch.Tensor, name: str = "saliency") -> torch.Tensor:
    if not isinstance(saliency, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, H, W) or (N, C, H, W)")
    n, _, h, w = x.shape
    if saliency.dim() == 4:
        saliency = saliency.sum(1)
    if saliency.shape != (n, h, w):
        raise ValueError(f"{name} must have shape (N, H, W) = {(n, h, w)} or (N, C, H, W), "
                         f"got {tuple(saliency.shape)}")
    return saliency.detach().to(x.device, torch.float64)


def _scores(model, x, t, batch_size):
    outs = []
    for s in range(0, x.shape[0], batch_size):
        outs.append(model(x[s:s + batch_size]).gather(1, t[s:s + batch_size, None])[:, 0])
    return torch.cat(outs)


def relevance_curve(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, target=None, *,
                       order: str = "lerf", steps: int = 20, baseline=0.0, scale: bool = True,
                       batch_size: int = 128):
    """Least- or most-relevant-first removal curve of the target's pre-softmax score (NAS §4.3.2).

    Pixels are removed (set to ``baseline``) in order of saliency — ascending for LeRF, descending for MoRF,
    ties in raster order — in ``steps`` equal fractions. With ``scale=True`` the curve is mapped to start at 1
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
        Number of removal steps; the curve has ``steps + 1`` points.
    baseline : float or Tensor broadcastable to (N, C, H, W)
        Value of removed pixels.
    scale : bool
        Scale to start at 1 and end at 0 (images whose two end scores coincide get NaN). The scaling presumes
        the score drops from the image to the fully removed one; where it rises, the scaled curve is mirrored
        and "larger AUC is better" no longer holds (report such images separately).

    Returns
    -------
    fractions : Tensor[steps + 1]
        Fraction of pixels removed.
    curve : Tensor[N, steps + 1]
    """
    check_images(x)
    if order not in ("lerf", "morf"):
        raise ValueError(f"order must be 'lerf' or 'morf', got {order!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    sal = _as_map(saliency, x)
    n, c, h, w = x.shape
    p = h * w
    flat = sal.reshape(n, p)
    rank = torch.argsort(flat if order == "lerf" else -flat, dim=1, stable=True)
    position = torch.empty_like(rank).scatter_(1, rank, torch.arange(p, device=x.device).expand(n, p))
    fractions = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    counts = (fractions * p).round().long()
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    with restore_model(model), torch.no_grad():
        model.eval()
        t = resolve_target(torch.cat([model(x[s:s + batch_size]) for s in range(0, n, batch_size)]), target)
        cols = []
        for k in counts.tolist():
            removed = (position < k).reshape(n, 1, h, w)
            cols.append(_scores(model, torch.where(removed, base, x), t, batch_size))
    curve = torch.stack(cols, 1).double().cpu()
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


def curve_auc(fractions: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """Area under a removal curve by the trapezoidal rule (NAS §4.3.2): Tensor[N]."""
    fractions = torch.as_tensor(fractions, dtype=torch.float64)
    curve = torch.as_tensor(curve, dtype=torch.float64)
    if curve.dim() == 1:
        curve = curve[None]
    if curve.shape[-1] != fractions.shape[-1]:
        raise ValueError(f"curve has {curve.shape[-1]} points but fractions has {fractions.shape[-1]}")
    return torch.trapezoid(curve, fractions, dim=-1)


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
        Superpixel labels.

    Returns
    -------
    dict with
        ``"auc"`` (Tensor[N]), ``"curves"`` (list of Tensor, one per image), ``"fractions"`` (list of Tensor),
        ``"order_map"`` (Tensor[N, H, W]: removal step / (S − 1) per pixel, 0 = removed first, 1 = last; a
        saliency map whose LeRF order is the greedy order).
    """
    check_images(x)
    n, c, h, w = x.shape
    if not isinstance(segments, torch.Tensor) or segments.shape != (n, h, w):
        raise ValueError(f"segments must be a LongTensor of shape (N, H, W) = {(n, h, w)}")
    segments = segments.to(x.device).long()
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    aucs, curves, fracs = [], [], []
    order_map = torch.zeros(n, h, w, dtype=torch.float64)
    it = range(n)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc="greedy LeRF", leave=False)
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
def _component_boxes(binary: np.ndarray) -> np.ndarray:
    """Boxes (x0, y0, x1, y1) around every 8-connected component, in wsolevaluation's convention.

    wsolevaluation takes ``cv2.boundingRect`` of each contour and writes ``x1 = min(x + w, W − 1)``; an
    empty mask gives the single box (0, 0, 0, 0). (cv2's tree mode also returns hole contours, whose boxes
    lie inside their component's box; they are not added here.)
    """
    from skimage.measure import label, regionprops

    h, w = binary.shape
    lab = label(binary, connectivity=2)
    boxes = []
    for region in regionprops(lab):
        y0, x0, y1, x1 = region.bbox  # exclusive ends = x + w of cv2.boundingRect
        boxes.append([x0, y0, min(x1, w - 1), min(y1, h - 1)])
    if not boxes:
        return np.zeros((1, 4), dtype=np.int64)
    return np.asarray(boxes, dtype=np.int64)


def mask_boxes(masks) -> list[np.ndarray]:
    """Ground-truth boxes from object masks: one box per connected component, same convention as the estimates.

    Parameters
    ----------
    masks : Tensor[N, H, W] or Tensor[N, 1, H, W]
        Foreground masks (> 0.5 is foreground).

    Returns
    -------
    list of int arrays (B_i, 4)
    """
    m = torch.as_tensor(masks)
    if m.dim() == 4:
        if m.shape[1] != 1:
            raise ValueError(f"masks must have shape (N, H, W) or (N, 1, H, W), got {tuple(m.shape)}")
        m = m[:, 0]
    if m.dim() != 3:
        raise ValueError(f"masks must have shape (N, H, W) or (N, 1, H, W), got {tuple(m.shape)}")
    out = []
    for i, mi in enumerate(m.cpu().numpy() > 0.5):
        if not mi.any():
            raise ValueError(f"masks[{i}] has an empty foreground; drop that image or pass gt_boxes")
        out.append(_component_boxes(mi))
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (A × B) of boxes (x0, y0, x1, y1) with the +1 pixel convention of wsolevaluation."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0 + 1, 0, None) * np.clip(iy1 - iy0 + 1, 0, None)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def map_boxes(saliency_map: np.ndarray, threshold: float) -> np.ndarray:
    """Boxes around all contours of a min-max normalised map thresholded at ``threshold`` (wsolevaluation).

    The map is quantised to uint8 (``map * 255``) and pixels strictly above ``int(threshold * max)`` are kept,
    as ``cv2.threshold(..., THRESH_BINARY)`` does in wsolevaluation.
    """
    q = (np.asarray(saliency_map, dtype=np.float64) * 255).astype(np.uint8)
    return _component_boxes(q > int(threshold * q.max()))


def _normalize_maps(saliency) -> np.ndarray:
    s = torch.as_tensor(saliency).detach().double().cpu()
    if s.dim() == 4:
        s = s.sum(1)
    if s.dim() != 3:
        raise ValueError(f"saliency must have shape (N, H, W) or (N, C, H, W), got {tuple(s.shape)}")
    s = s.numpy()
    lo = s.min(axis=(1, 2), keepdims=True)
    hi = s.max(axis=(1, 2), keepdims=True)
    return np.where(hi > lo, (s - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)


def max_box_acc_v2(saliency, masks=None, *, gt_boxes: Sequence[np.ndarray] | None = None,
                   thresholds=None, iou_thresholds=(0.3, 0.5, 0.7)) -> dict:
    """MaxBoxAccV2 (Choe et al., 2020) as used for weakly supervised localisation in NAS §4.3.3 (Table 3).

    Each map is min-max normalised; for every threshold τ, boxes are drawn around all contours of the map above
    τ and an image counts as localised at IoU level δ when its best box-to-ground-truth IoU is ≥ δ.
    ``BoxAcc(τ, δ)`` is the fraction of localised images; ``MaxBoxAcc(δ) = max_τ BoxAcc(τ, δ)`` (one threshold
    for the whole data set) and MaxBoxAccV2 is the mean over δ ∈ {0.3, 0.5, 0.7}.

    Parameters
    ----------
    saliency : Tensor[N, H, W] or Tensor[N, C, H, W]
        Saliency maps (summed over channels when 4-D).
    masks : Tensor[N, (1,) H, W], optional
        Object masks; their components' boxes are the ground truth (see :func:`mask_boxes`).
    gt_boxes : list of arrays (B_i, 4), optional
        Ground-truth boxes (x0, y0, x1, y1) instead of masks.
    thresholds : array, optional
        Default ``0, 0.01, …, 0.99`` (wsolevaluation uses a 0.001 step; 0.01 is the CPU choice of REFERENCE.md).
    iou_thresholds : sequence of float
        δ values.

    Returns
    -------
    dict
        ``"maxboxacc_v2"`` and ``"iou@30"``, ``"iou@50"``, ``"iou@70"`` (fractions in [0, 1]) plus
        ``"best_threshold@30"`` … (the τ achieving each maximum).
    """
    maps = _normalize_maps(saliency)
    n = maps.shape[0]
    if (masks is None) == (gt_boxes is None):
        raise ValueError("pass exactly one of masks= (object masks) or gt_boxes= (list of (B, 4) arrays)")
    if gt_boxes is None:
        gt_boxes = mask_boxes(masks)
    if len(gt_boxes) != n:
        raise ValueError(f"{len(gt_boxes)} ground truths for {n} saliency maps; pass one per image")
    if thresholds is None:
        thresholds = np.arange(0, 1, 0.01)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    best_iou = np.zeros((len(thresholds), n))
    for i in range(n):
        q = (maps[i] * 255).astype(np.uint8)
        qmax = q.max()
        cache = {}
        for j, tau in enumerate(thresholds):
            cut = int(tau * qmax)
            if cut not in cache:
                cache[cut] = box_iou(_component_boxes(q > cut), gt_boxes[i]).max()
            best_iou[j, i] = cache[cut]
    out = {}
    accs = []
    for delta in iou_thresholds:
        acc = (best_iou >= delta).mean(1)
        key = f"{int(round(delta * 100))}"
        out[f"iou@{key}"] = float(acc.max())
        out[f"best_threshold@{key}"] = float(thresholds[int(acc.argmax())])
        accs.append(acc.max())
    out["maxboxacc_v2"] = float(np.mean(accs))
    return out
