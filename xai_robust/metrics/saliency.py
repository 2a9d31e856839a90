"""Saliency-map metrics: stability (SSIM, MeGe) and fidelity (deletion, insertion, mu-fidelity, ROAD).

Every function takes maps as ``[N, H, W]`` tensors (one value per pixel; reduce the channels first,
e.g. with :func:`xai_robust.grouped.saliency_map`). The fidelity metrics perturb the images, run
the model in eval mode under ``torch.no_grad`` and leave it exactly as they found it.

Used in chapter 06 (*Super-pixel gradients*) to reproduce Gong et al., *A Super-pixel-based Approach
to the Stable Interpretation of Neural Networks* (BMVC 2024): Fig. 2 (SSIM and MeGe between models
trained on different data), Table 1 (deletion, insertion, mu-fidelity) and Fig. 5 (ROAD).

References: SSIM (Wang et al. 2004, via scikit-image); MeGe (Fel et al., WACV 2022); deletion and
insertion (Petsiuk et al., RISE, 2018); mu-fidelity (Bhatt et al., IJCAI 2020); ROAD (Rong et al.,
ICML 2022).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..attribution import resolve_target, restore_model
from ..checks import (
    check_baseline,
    check_count,
    check_finite,
    check_images,
    check_labels,
    check_model_input,
    check_number,
)

__all__ = [
    "ssim",
    "spearman",
    "mege",
    "perturbation_curve",
    "curve_auc",
    "deletion_auc",
    "insertion_auc",
    "mu_fidelity",
    "noisy_linear_imputation",
    "road",
]

_OUTPUTS = ("probability", "logit")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _check_maps(maps, name="saliency", n=None, hw=None, keep_double=False) -> torch.Tensor:
    """Non-empty, finite ``(N, H, W)`` maps (matching ``n`` images of size ``hw``), as float32 (float64 maps stay
    float64 with ``keep_double``: a ranking then sees every distinct value)."""
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, H, W), got {type(maps).__name__}")
    if maps.dim() != 3:
        raise ValueError(
            f"{name} must have shape (N, H, W), got {tuple(maps.shape)}; reduce channels first with "
            "xai_robust.grouped.saliency_map(attribution)"
        )
    if maps.shape[0] == 0 or maps.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(maps.shape)}): pass at least one (H, W) map")
    if n is not None and maps.shape[0] != n:
        raise ValueError(f"{name} has {maps.shape[0]} maps but there are {n} images")
    if hw is not None and tuple(maps.shape[1:]) != tuple(hw):
        raise ValueError(f"{name} maps are {tuple(maps.shape[1:])} but the images are {tuple(hw)}")
    if maps.is_complex():
        raise TypeError(f"{name} must hold real values, got dtype {maps.dtype}")
    check_finite(maps, name)
    if keep_double and maps.dtype == torch.float64:
        return maps.detach()
    out = maps.detach().float()
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} holds values beyond the float32 range; rescale the maps (e.g. divide by "
                         f"their maximum absolute value)")
    return out


class _Evaluator:
    """Scores of the explained class for batches of perturbed images, model left as found.

    The caller has checked ``model`` and the images with :func:`xai_robust.checks.check_model_input`.
    """

    def __init__(self, model: nn.Module, output: str, batch_size: int):
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        self.batch_size = check_count(batch_size, "batch_size")
        self.model, self.output = model, output

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with restore_model(self.model), torch.no_grad():
            self.model.eval()
            return torch.cat([self.model(x[i:i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)])

    def scores(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = self.logits(x)
        if self.output == "probability":
            z = torch.softmax(z, dim=1)
        return z.gather(1, target.view(-1, 1)).squeeze(1)


def _target(evaluator: _Evaluator, x, target) -> torch.Tensor:
    return resolve_target(evaluator.logits(x), target)


def _ranking(saliency: torch.Tensor, order: str, seed: int, ties: str = "random") -> torch.Tensor:
    """Rank of every pixel (0 = removed first); ties broken at random (super-pixel maps tie a lot) or in raster
    order (``ties="raster"``)."""
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' (most relevant first) or 'lerf' (least relevant first), got {order!r}")
    if ties not in ("random", "raster"):
        raise ValueError(f"ties must be 'random' or 'raster', got {ties!r}")
    seed = check_count(seed, "seed", minimum=0)
    n = saliency.shape[0]
    flat = saliency.reshape(n, -1)
    if ties == "random":
        gen = torch.Generator().manual_seed(seed)
        perm = torch.rand(flat.shape, generator=gen).argsort(1).to(flat.device)
    else:
        perm = torch.arange(flat.shape[1], device=flat.device).expand(n, -1).contiguous()
    values = flat.gather(1, perm)
    idx = torch.sort(values, dim=1, descending=(order == "morf"), stable=True).indices
    ordered = perm.gather(1, idx)  # pixel indices, first removed first
    rank = torch.empty_like(ordered)
    rank.scatter_(1, ordered, torch.arange(flat.shape[1], device=flat.device).expand(n, -1).contiguous())
    return rank


# --------------------------------------------------------------------------------------------
# stability
# --------------------------------------------------------------------------------------------
def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = a.min(), a.max()
    return np.zeros_like(a) if hi - lo <= 0 else (a - lo) / (hi - lo)


def ssim(maps_a: torch.Tensor, maps_b: torch.Tensor, *, normalize: str = "minmax", win_size: int | None = None,
         gaussian_weights: bool = False) -> torch.Tensor:
    """Structural similarity between two sets of saliency maps, one value per pair.

    Parameters
    ----------
    maps_a, maps_b : torch.Tensor
        ``[N, H, W]`` maps (e.g. the same images explained by two models).
    normalize : {"minmax", "none"}
        ``"minmax"`` (default) rescales each map to [0, 1] before comparing (``data_range=1``);
        a constant map becomes all zeros. ``"none"`` compares raw values with the joint value range.
    win_size : int, optional
        Side of the (odd, >= 3) SSIM window; default 7, or the largest odd size that fits small maps (maps
        must be at least 3 × 3).
    gaussian_weights : bool
        Gaussian-weighted window (Wang et al.'s original) instead of scikit-image's uniform one.

    Returns
    -------
    torch.Tensor
        ``[N]`` SSIM values in [-1, 1]; 1 for identical maps.

    Notes
    -----
    Gong et al. (BMVC 2024), Fig. 2: SSIM between maps of models trained on disjoint halves of the
    training set. Computed with :func:`skimage.metrics.structural_similarity`. Chapter 06.
    """
    from skimage.metrics import structural_similarity

    a = _check_maps(maps_a, "maps_a")
    b = _check_maps(maps_b, "maps_b", n=a.shape[0], hw=a.shape[1:])
    if normalize not in ("minmax", "none"):
        raise ValueError(f"normalize must be 'minmax' or 'none', got {normalize!r}")
    side = min(a.shape[1:])
    if side < 3:
        raise ValueError(f"maps_a and maps_b are {tuple(a.shape[1:])} maps; SSIM needs maps of at least 3 x 3")
    if win_size is None:
        win_size = min(7, side if side % 2 else side - 1)
    win_size = check_count(win_size, "win_size", minimum=3)
    if win_size % 2 == 0 or win_size > side:
        raise ValueError(f"win_size must be odd, >= 3 and <= the map side {side}, got {win_size}")
    out = []
    for u, v in zip(a.cpu().double().numpy(), b.cpu().double().numpy(), strict=True):
        if normalize == "minmax":
            u, v, rng = _minmax(u), _minmax(v), 1.0
        else:
            rng = float(max(u.max(), v.max()) - min(u.min(), v.min())) or 1.0
        out.append(structural_similarity(u, v, data_range=rng, win_size=win_size,
                                         gaussian_weights=gaussian_weights))
    return torch.tensor(out, dtype=torch.float64)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between flattened maps, one value per pair (ties get average ranks).

    A constant map has no ranking; its correlation is defined as 0 here. ``a`` and ``b`` are finite tensors
    of the same shape ``(N, ...)``, N >= 1, at least one value per map.
    """
    from scipy.stats import rankdata

    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (N, ...), got {type(t).__name__}")
        if t.dim() < 2 or t.shape[0] == 0 or t.numel() == 0:
            raise ValueError(f"{name} must have shape (N, ...) with N >= 1 maps of at least one value, "
                             f"got {tuple(t.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    check_finite(a, "a")
    check_finite(b, "b")
    ra = rankdata(a.detach().reshape(a.shape[0], -1).cpu().double().numpy(), axis=1)
    rb = rankdata(b.detach().reshape(b.shape[0], -1).cpu().double().numpy(), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    rho = np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), 0.0)
    return torch.from_numpy(rho)


def mege(explanations: torch.Tensor, folds: torch.Tensor, *, distance: str = "spearman",
         correct: torch.Tensor | None = None) -> float:
    """Mean Generalizability (MeGe, Fel et al., WACV 2022).

    ``k`` models are trained on ``k - 1`` of ``k`` folds; model ``m`` never saw fold ``m``. For a
    sample of fold ``f``, the distance between the explanation of the model that did not see it
    (``f``) and each model that did (``m != f``) is averaged;
    ``MeGe = 1 / (1 + mean distance)`` (1 = explanations do not depend on whether the sample was
    in the training set).

    Parameters
    ----------
    explanations : torch.Tensor
        ``[k, N, ...]``: ``explanations[m, i]`` explains sample ``i`` with model ``m``.
    folds : torch.Tensor
        ``LongTensor[N]``: the fold of each sample (values in ``0 .. k-1``).
    distance : {"spearman", "l2"}
        ``sqrt(1 - |Spearman rho|)`` (Fel et al.'s choice) or the L2 norm of the difference
        (Gong et al.'s choice; scale-dependent, so normalise the maps first).
    correct : torch.Tensor, optional
        ``BoolTensor[k, N]``: whether model ``m`` classifies sample ``i`` correctly; when given, only
        pairs in which both models are correct count, as in Fel et al.

    Returns
    -------
    float

    Notes
    -----
    Gong et al. (BMVC 2024), Fig. 2 right (5 folds on CIFAR-10). Chapter 06.
    """
    if not isinstance(explanations, torch.Tensor):
        raise TypeError(f"explanations must be a tensor [k, N, ...] (k models, N samples), "
                        f"got {type(explanations).__name__}")
    if explanations.dim() < 3:
        raise ValueError(f"explanations must be a tensor [k, N, ...] (k models, N samples), "
                         f"got shape {tuple(explanations.shape)}")
    k, n = explanations.shape[:2]
    if k < 2:
        raise ValueError(f"MeGe needs k >= 2 models, got {k}")
    if n == 0 or explanations.numel() == 0:
        raise ValueError(f"explanations is empty (shape {tuple(explanations.shape)}): pass at least one sample")
    check_finite(explanations, "explanations")
    if not isinstance(folds, (torch.Tensor, np.ndarray)):
        folds = torch.as_tensor(folds)
    folds = check_labels(folds.reshape(-1), n, None, "folds")
    if int(folds.min()) < 0 or int(folds.max()) >= k:
        raise ValueError(f"folds must hold fold indices 0..{k - 1} (model m did not see fold m), got values in "
                         f"[{int(folds.min())}, {int(folds.max())}]")
    if distance not in ("spearman", "l2"):
        raise ValueError(f"distance must be 'spearman' or 'l2', got {distance!r}")
    if correct is not None:
        correct = torch.as_tensor(correct)
        check_finite(correct, "correct")
        if tuple(correct.shape) != (k, n):
            raise ValueError(f"correct must have shape (k, N) = {(k, n)}, got {tuple(correct.shape)}")
        correct = correct.bool()
    e = explanations.detach().cpu().double().reshape(k, n, -1)
    idx = torch.arange(n)
    unseen = e[folds, idx]  # [N, D] the explanation of the model that did not see the sample
    dists = []
    for m in range(k):
        keep = folds != m
        if correct is not None:
            keep &= correct[m] & correct[folds, idx]
        if not keep.any():
            continue
        a, b = e[m][keep], unseen[keep]
        if distance == "spearman":
            d = torch.sqrt((1 - spearman(a, b).abs()).clamp(min=0))
        else:
            d = (a - b).norm(dim=1)
        dists.append(d)
    if not dists:
        raise ValueError("no pair of (seen, unseen) explanations to compare; check folds/correct")
    return float(1.0 / (1.0 + torch.cat(dists).mean()))


# --------------------------------------------------------------------------------------------
# fidelity
# --------------------------------------------------------------------------------------------
def perturbation_curve(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, target=None, *,
                       mode: str = "deletion", n_steps: int = 20, order: str = "morf", baseline=0.0,
                       output: str = "probability", ties: str = "random", batch_size: int = 256, seed: int = 0):
    """Score of the explained class while pixels are deleted from (or inserted into) the image.

    Step ``j`` of ``n_steps`` replaces the ``round(j H W / n_steps)`` first pixels of the ranking (all
    channels of a pixel together) by ``baseline`` (deletion), or starts from the baseline image and
    restores them (insertion). The package's one perturbation curve: deletion/insertion AUC (chapter 06) and
    the LeRF/MoRF curves of NAS (:func:`xai_robust.metrics.relevance_curve`, chapter 07) are read from it, and
    :func:`curve_auc` integrates any of them.

    Parameters
    ----------
    model : nn.Module
        Classifier (run in eval mode, left as found).
    x : torch.Tensor
        ``[N, C, H, W]`` images.
    saliency : torch.Tensor
        ``[N, H, W]`` maps that rank the pixels.
    target : None, int or LongTensor[N]
        Explained class; None = predicted on ``x``.
    mode : {"deletion", "insertion"}
    n_steps : int
        Number of steps between 0 and all pixels (>= 1).
    order : {"morf", "lerf"}
        Most relevant first (the paper's setting) or least relevant first.
    baseline : float or torch.Tensor
        Value of deleted pixels / the start image of insertion (default black, "a blank image"); finite,
        a number or a tensor broadcastable to ``x``.
    output : {"probability", "logit"}
        Score tracked along the curve (the paper reports probabilities).
    ties : {"random", "raster"}
        Order between pixels of equal saliency: random (seeded by ``seed``), or raster order.
    batch_size : int
        Images per forward pass (>= 1).
    seed : int
        Seed of the random tie-break between pixels of equal saliency (>= 0).

    Returns
    -------
    fractions : torch.Tensor
        ``[n_steps + 1]`` fractions of perturbed pixels, 0 to 1 (float64: the pixels actually perturbed).
    scores : torch.Tensor
        ``[N, n_steps + 1]``.
    """
    check_model_input(model, x)
    n, c, h, w = x.shape
    sal = _check_maps(saliency, n=n, hw=(h, w), keep_double=True).to(x.device)
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    n_steps = check_count(n_steps, "n_steps")
    base = check_baseline(baseline, x)
    ev = _Evaluator(model, output, batch_size)
    rank = _ranking(sal, order, seed, ties).view(n, 1, 1, h, w)
    t = _target(ev, x, target)
    counts = torch.round(torch.arange(n_steps + 1, dtype=torch.float64) * (h * w) / n_steps).long().to(x.device)
    per_chunk = max(1, ev.batch_size // (n_steps + 1))  # images whose whole curve fits in one batch
    scores = []
    for i in range(0, n, per_chunk):
        sl = slice(i, i + per_chunk)
        hit = rank[sl] < counts.view(1, -1, 1, 1, 1)  # [n_i, S+1, 1, H, W]: perturbed pixels at each step
        xs, bs = x[sl].unsqueeze(1), base[sl].unsqueeze(1)
        images = torch.where(hit, bs, xs) if mode == "deletion" else torch.where(hit, xs, bs)
        m = images.shape[0]
        scores.append(ev.scores(images.reshape(-1, c, h, w), t[sl].repeat_interleave(n_steps + 1)).view(m, -1))
    scores = torch.cat(scores)
    return counts.double().cpu() / (h * w), scores.cpu()


def curve_auc(fractions: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """Area under a perturbation curve by the trapezoidal rule (Petsiuk et al., 2018; NAS §4.3.2): Tensor[N].

    ``fractions`` is a finite 1-D grid of at least two points; ``curve`` is (N, P) or (P,). A NaN in a curve
    (the marker :func:`xai_robust.metrics.relevance_curve` writes for an image whose two end scores coincide)
    gives that image a NaN area, so average with ``torch.nanmean``; an infinite value raises.
    """
    fractions = torch.as_tensor(fractions, dtype=torch.float64)
    curve = torch.as_tensor(curve, dtype=torch.float64)
    if fractions.dim() != 1 or fractions.numel() < 2:
        raise ValueError(f"fractions must be a 1-D grid of at least 2 points, got shape {tuple(fractions.shape)}")
    check_finite(fractions, "fractions")
    if curve.dim() == 1:
        curve = curve[None]
    if curve.dim() != 2 or curve.shape[0] == 0:
        raise ValueError(f"curve must have shape (N, P) or (P,) with N >= 1, got {tuple(curve.shape)}")
    if bool(torch.isinf(curve).any()):
        raise ValueError("curve holds inf values; check the scores that produced it (NaN marks a degenerate "
                         "image and is allowed)")
    if curve.shape[-1] != fractions.shape[-1]:
        raise ValueError(f"curve has {curve.shape[-1]} points but fractions has {fractions.shape[-1]}")
    return torch.trapezoid(curve, fractions, dim=-1)


def deletion_auc(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, target=None, **kwargs) -> torch.Tensor:
    """Area under the deletion curve (Petsiuk et al., 2018), one value per image; lower is better.

    Most relevant pixels are removed first (set to ``baseline``) and the probability of the explained
    class is integrated over the removed fraction (trapezoid rule). Keyword arguments as in
    :func:`perturbation_curve`. Gong et al. (BMVC 2024), Table 1. Chapter 06.
    """
    return curve_auc(*perturbation_curve(model, x, saliency, target, mode="deletion", **kwargs))


def insertion_auc(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, target=None, **kwargs) -> torch.Tensor:
    """Area under the insertion curve (Petsiuk et al., 2018), one value per image; higher is better.

    Starting from the baseline (blank) image, the most relevant pixels are restored first.
    Keyword arguments as in :func:`perturbation_curve`. Gong et al. (BMVC 2024), Table 1. Chapter 06.
    """
    return curve_auc(*perturbation_curve(model, x, saliency, target, mode="insertion", **kwargs))


def mu_fidelity(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, target=None, *, n_subsets: int = 64,
                subset_size: float | int = 0.1, baseline=0.0, output: str = "probability", batch_size: int = 256,
                seed: int = 0) -> torch.Tensor:
    """mu-fidelity (Bhatt et al., 2020): correlation between attribution mass and score drop.

    For ``n_subsets`` random pixel subsets ``S`` of fixed size, Pearson's correlation over the subsets
    between ``sum_{i in S} saliency_i`` and ``f(x) - f(x with S set to baseline)``.

    Parameters
    ----------
    model, x, saliency, target, baseline, output, batch_size
        As in :func:`perturbation_curve`.
    n_subsets : int
        Number of random subsets per image (>= 2).
    subset_size : float or int
        Pixels per subset: a fraction of ``H W`` in (0, 1] (float) or a count in [1, H W] (int).
    seed : int
        Seed of the subsets (>= 0).

    Returns
    -------
    torch.Tensor
        ``[N]`` correlations in [-1, 1] (0 where either side is constant).

    Notes
    -----
    Gong et al. (BMVC 2024), Table 1 and Fig. 5 left. Chapter 06.
    """
    check_model_input(model, x)
    n, c, h, w = x.shape
    sal = _check_maps(saliency, n=n, hw=(h, w)).to(x.device).double()
    n_subsets = check_count(n_subsets, "n_subsets", minimum=2)  # a correlation needs two subsets
    if isinstance(subset_size, (float, np.floating)):
        frac = check_number(subset_size, "subset_size", low=0.0, high=1.0, low_open=True)
        size = int(round(frac * h * w))
    else:
        size = check_count(subset_size, "subset_size", minimum=0)
    if not 1 <= size <= h * w:
        raise ValueError(f"subset_size gives {size} pixels; it must be between 1 and H*W={h * w}")
    seed = check_count(seed, "seed", minimum=0)
    base = check_baseline(baseline, x)
    ev = _Evaluator(model, output, batch_size)
    t = _target(ev, x, target)
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.rand(n, n_subsets, h * w, generator=gen).argsort(2)[..., :size]
    mask = torch.zeros(n, n_subsets, h * w, dtype=torch.bool).scatter_(2, chosen, True).to(x.device)
    attributed = (mask.double() * sal.reshape(n, 1, h * w)).sum(2)  # [N, S]
    clean = ev.scores(x, t).double()
    per_chunk = max(1, ev.batch_size // n_subsets)
    perturbed = []
    for i in range(0, n, per_chunk):
        sl = slice(i, i + per_chunk)
        m = mask[sl].view(-1, n_subsets, 1, h, w)
        images = torch.where(m, base[sl].unsqueeze(1), x[sl].unsqueeze(1)).reshape(-1, c, h, w)
        perturbed.append(ev.scores(images, t[sl].repeat_interleave(n_subsets)).double().view(-1, n_subsets))
    drop = clean.view(n, 1) - torch.cat(perturbed)
    a = attributed - attributed.mean(1, keepdim=True)
    d = drop - drop.mean(1, keepdim=True)
    den = (a.pow(2).sum(1) * d.pow(2).sum(1)).sqrt()
    return torch.where(den > 1e-12, (a * d).sum(1) / den.clamp(min=1e-300), torch.zeros_like(den)).cpu()


_NEIGHBOURS = [(-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
               (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12)]


def noisy_linear_imputation(x: torch.Tensor, removed: torch.Tensor, *, noise: float = 0.01,
                            seed: int = 0) -> torch.Tensor:
    """Replace removed pixels by the noisy linear imputation of ROAD (Rong et al., ICML 2022).

    Each removed pixel is set to the weighted mean of its 8 neighbours (weight 1/6 for the four
    direct, 1/12 for the four diagonal neighbours, renormalised at the border), solved jointly for
    all removed pixels as one sparse linear system per image; Gaussian noise of standard deviation
    ``noise`` is then added to the imputed pixels.

    Parameters
    ----------
    x : torch.Tensor
        ``[N, C, H, W]`` images (finite, at least one).
    removed : torch.Tensor
        ``BoolTensor[N, H, W]``: pixels to impute (not all pixels of an image).
    noise : float
        Standard deviation of the added noise (finite, >= 0).
    seed : int
        Seed of the noise (>= 0).

    Returns
    -------
    torch.Tensor
        Imputed copy of ``x``.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import spsolve

    check_images(x)
    n, c, h, w = x.shape
    if not isinstance(removed, torch.Tensor):
        raise TypeError(f"removed must be a BoolTensor of shape {(n, h, w)}, got {type(removed).__name__}")
    if tuple(removed.shape) != (n, h, w):
        raise ValueError(f"removed must be a BoolTensor of shape {(n, h, w)}, got {tuple(removed.shape)}")
    check_finite(removed, "removed")
    noise = check_number(noise, "noise", low=0.0)
    seed = check_count(seed, "seed", minimum=0)
    removed = removed.bool().cpu().numpy()
    if removed.reshape(n, -1).all(1).any():
        raise ValueError("removed covers a whole image: nothing is left to impute from; remove fewer pixels")
    rng = np.random.default_rng(seed)
    arr = x.detach().cpu().double().numpy().copy()
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    for k in range(n):
        rem = removed[k]
        m = int(rem.sum())
        if m == 0:
            continue
        index = -np.ones((h, w), dtype=np.int64)
        index[rem] = np.arange(m)
        pi, pj = ii[rem], jj[rem]
        rows, cols, vals = [], [], []
        diag = np.zeros(m)
        rhs = np.zeros((m, c))
        img = arr[k]  # [C, H, W]
        for di, dj, wt in _NEIGHBOURS:
            qi, qj = pi + di, pj + dj
            inside = (qi >= 0) & (qi < h) & (qj >= 0) & (qj < w)
            p = np.nonzero(inside)[0]
            qi, qj = qi[inside], qj[inside]
            diag[p] += wt
            q = index[qi, qj]
            unknown = q >= 0
            rows.append(p[unknown])
            cols.append(q[unknown])
            vals.append(np.full(int(unknown.sum()), -wt))
            known = ~unknown
            rhs[p[known]] += wt * img[:, qi[known], qj[known]].T
        rows = np.concatenate(rows + [np.arange(m)])
        cols = np.concatenate(cols + [np.arange(m)])
        vals = np.concatenate(vals + [diag])
        a = csr_matrix((vals, (rows, cols)), shape=(m, m))
        sol = np.asarray(spsolve(a, rhs)).reshape(m, c)
        sol = sol + noise * rng.standard_normal(sol.shape)
        img[:, pi, pj] = sol.T
    return torch.from_numpy(arr).to(dtype=x.dtype, device=x.device)


def road(model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, target=None, *,
         fractions=(0.1, 0.2, 0.3, 0.5, 0.7, 0.9), order: str = "morf", noise: float = 0.01,
         batch_size: int = 256, seed: int = 0) -> torch.Tensor:
    """ROAD: accuracy after removing pixels with noisy linear imputation (Rong et al., ICML 2022).

    For each fraction ``p``, the ``p H W`` first pixels of the ranking (most relevant first by
    default) are imputed by :func:`noisy_linear_imputation` and the model is evaluated. A faster drop
    means the map found the pixels the model needs.

    Parameters
    ----------
    model, x, saliency, batch_size
        As in :func:`perturbation_curve`.
    target : None, int or LongTensor[N]
        Class counted as correct (e.g. the labels); None = the prediction on ``x``.
    fractions : sequence of float
        Removed fractions, each in [0, 1) (at least one).
    order : {"morf", "lerf"}
        Most or least relevant first.
    noise : float
        Standard deviation of the imputation noise (finite, >= 0).
    seed : int
        Seed of the tie-break and the noise (>= 0).

    Returns
    -------
    torch.Tensor
        ``[len(fractions)]`` accuracies.

    Notes
    -----
    Gong et al. (BMVC 2024), Fig. 5 middle. Chapter 06.
    """
    check_model_input(model, x)
    n, c, h, w = x.shape
    sal = _check_maps(saliency, n=n, hw=(h, w))
    if isinstance(fractions, (int, float, torch.Tensor, np.ndarray)) and np.ndim(fractions) == 0:
        fractions = [fractions]
    fr = [check_number(f, "fractions", low=0.0, high=1.0, high_open=True) for f in np.ravel(fractions)]
    if not fr:
        raise ValueError("fractions is empty: pass at least one removed fraction in [0, 1)")
    noise = check_number(noise, "noise", low=0.0)
    seed = check_count(seed, "seed", minimum=0)
    ev = _Evaluator(model, "logit", batch_size)
    t = _target(ev, x, target)
    rank = _ranking(sal, order, seed).view(n, h, w).cpu()
    out = []
    for j, f in enumerate(fr):
        removed = rank < int(round(f * h * w))
        xi = noisy_linear_imputation(x, removed, noise=noise, seed=seed + j)
        out.append((ev.logits(xi).argmax(1) == t).double().mean())
    return torch.stack(out)
