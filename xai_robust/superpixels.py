"""Partitions of the pixel grid and super-pixel averaging.

A *partition* (or segmentation) of a batch of images is a ``LongTensor[N, H, W]`` whose entry
``segments[n, i, j]`` is the id of the group that pixel ``(i, j)`` of image ``n`` belongs to; the ids
of each image are ``0 .. K_n - 1``. Every partition in the book uses this one format: the
scikit-image super-pixel algorithms wrapped here (SLIC, Quickshift, Felzenszwalb, compact
watershed), the two baselines of the super-pixel-gradient paper (square patches and random
partitions), and the Neuro-Activated Superpixels of chapter 07 (:mod:`xai_robust.nas`).

:func:`superpixelify` is the one segment average behind grouped saliency maps: it replaces every
value of an ``[N, H, W]`` map or ``[N, C, H, W]`` attribution by the mean over its segment with two
scatter-adds and one gather (no Python loop over segments).

Every public function checks its input first (:mod:`xai_robust.checks`): images and maps are non-empty,
finite float tensors, partitions non-negative integer ids of the right shape, counts positive ints and
float parameters finite; errors name the argument.

Paper: Gong, Zhang, Dou, Farnia, *A Super-pixel-based Approach to the Stable Interpretation of
Neural Networks* (BMVC 2024), Sec. 3.2 (Eq. 3, the averaging operator kappa) and Sec. 3.3 (the
super-pixel algorithms). Chapter 06, *Super-pixel gradients*.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .checks import check_count, check_finite, check_images, check_number

__all__ = [
    "METHODS",
    "segment",
    "square_partition",
    "random_partition",
    "superpixelify",
    "count_segments",
    "check_segments",
    "clear_cache",
    "connected_pieces",
    "matched_parameter",
    "refinement",
]

#: Partition methods understood by :func:`segment`.
METHODS = ("slic", "quickshift", "felzenszwalb", "watershed", "squares", "random")

# Defaults per scikit-image method (chosen for 28-64 px images; the paper's settings are SLIC with
# 100 segments on CIFAR-10 and Quickshift with max_dist=3 on ImageNet).
_DEFAULTS = {
    "slic": {"n_segments": 100, "compactness": 10.0, "sigma": 0.0},
    "quickshift": {"kernel_size": 2.0, "max_dist": 3.0, "ratio": 1.0},
    "felzenszwalb": {"scale": 50.0, "sigma": 0.5, "min_size": 5},
    "watershed": {"n_segments": 100, "compactness": 0.01},
}

_MEMORY_CACHE: OrderedDict[str, torch.Tensor] = OrderedDict()
_MEMORY_CACHE_SIZE = 32


def clear_cache() -> None:
    """Empty the in-memory cache of :func:`segment`."""
    _MEMORY_CACHE.clear()


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------
def _check_images(images, name: str = "images") -> torch.Tensor:
    """:func:`xai_robust.checks.check_images` with C = 1 or 3; a single ``[C, H, W]`` image becomes a batch of one."""
    if isinstance(images, torch.Tensor) and images.dim() == 3:
        images = images.unsqueeze(0)
    check_images(images, name, channels=(1, 3))
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"{name} has no pixels (shape {tuple(images.shape)}); pass images of at least 1x1")
    return images


def _check_values(values, name: str, dims, shape_text: str) -> torch.Tensor:
    """A non-empty, finite floating tensor with one of the dimensions ``dims`` (maps, attributions)."""
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_text}, got {type(values).__name__}")
    if values.dim() not in dims:
        hint = (f"; add a batch dimension with {name}.unsqueeze(0) for a single map"
                if values.dim() == min(dims) - 1 else "")
        raise ValueError(f"{name} must have shape {shape_text}, got {tuple(values.shape)}{hint}")
    if not values.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {values.dtype}; use {name}.float()")
    if values.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(values.shape)}): pass at least one map")
    check_finite(values, name)
    return values


def check_segments(segments, shape=None) -> torch.Tensor:
    """Validate a partition and return it as a ``LongTensor[N, H, W]``.

    Parameters
    ----------
    segments : torch.Tensor
        Integer tensor ``[N, H, W]`` (or ``[H, W]`` for one image) of non-negative segment ids.
    shape : tuple, optional
        ``(N, H, W)`` the partition must match (the batch and spatial size of the images it partitions).

    Raises
    ------
    TypeError
        If ``segments`` is not an integer tensor.
    ValueError
        If its shape is wrong, the batch is empty or an id is negative.
    """
    if not isinstance(segments, torch.Tensor):
        raise TypeError(f"segments must be a torch.LongTensor[N, H, W], got {type(segments).__name__}")
    if segments.is_floating_point() or segments.dtype == torch.bool:
        raise TypeError(f"segments must hold integer segment ids, got dtype {segments.dtype}; use segments.long()")
    if segments.dim() == 2:
        segments = segments.unsqueeze(0)
    if segments.dim() != 3:
        raise ValueError(f"segments must have shape (N, H, W), got {tuple(segments.shape)}")
    if segments.shape[0] == 0:
        raise ValueError(f"segments is an empty batch (shape {tuple(segments.shape)}): pass one partition per image")
    if shape is not None and tuple(segments.shape) != tuple(shape):
        raise ValueError(
            f"segments has shape {tuple(segments.shape)} but the images/maps need {tuple(shape)}; "
            "compute the partition on the same batch (superpixels.segment(images, ...))"
        )
    if segments.numel() and int(segments.min()) < 0:
        raise ValueError("segments must hold non-negative ids (0 .. K-1 per image)")
    return segments.long()


def count_segments(segments: torch.Tensor) -> torch.Tensor:
    """Number of distinct segments of each image, ``LongTensor[N]``."""
    segments = check_segments(segments)
    return torch.tensor([int(torch.unique(s).numel()) for s in segments], dtype=torch.long)


# --------------------------------------------------------------------------------------------
# the averaging kernel (Eq. 3)
# --------------------------------------------------------------------------------------------
def _segment_mean(values: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """The kernel of :func:`superpixelify` on checked input: ``values`` [N, C, H, W], ``segments`` a LongTensor
    [N, H, W] on the same device (callers that checked both already, e.g. :mod:`xai_robust.grouped`)."""
    n, c, h, w = values.shape
    k = int(segments.max()) + 1 if segments.numel() else 1
    if k <= h * w:
        offsets = torch.arange(n, device=values.device).view(n, 1) * k
        flat = (segments.reshape(n, h * w) + offsets).reshape(-1)  # [N*HW] global segment ids
    else:  # sparse ids (e.g. 0 and 10**12): number the (image, id) pairs 0.. so the buckets fit; same means
        image = torch.arange(n, device=values.device).repeat_interleave(h * w)
        flat = torch.unique(torch.stack([image, segments.reshape(-1)]), dim=1, return_inverse=True)[1]
        k = h * w
    src = values.reshape(n, c, h * w).transpose(1, 2).reshape(-1, c)  # [N*HW, C]
    sums = torch.zeros(n * k, c, dtype=values.dtype, device=values.device).index_add(0, flat, src)
    counts = torch.bincount(flat, minlength=n * k).to(values.dtype).clamp_(min=1)
    means = sums / counts.unsqueeze(1)
    return means.index_select(0, flat).reshape(n, h * w, c).transpose(1, 2).reshape(n, c, h, w)


def superpixelify(saliency: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Replace every value by the mean of its super-pixel (the operator kappa of Gong et al., Eq. 3).

    ``out[n, c, i] = mean{ saliency[n, c, j] : segments[n, j] == segments[n, i] }`` — per image and per
    channel, computed with scatter-adds (``index_add``) and a gather, so the cost is linear in the
    number of pixels and independent of the number of segments. Differentiable in ``saliency``. This is the
    package's one segment average: ``superpixels.segment_mean`` and ``grouped.segment_average`` are the same
    function under the names older code used.

    Parameters
    ----------
    saliency : torch.Tensor
        ``[N, H, W]`` maps or ``[N, C, H, W]`` attributions (each channel averaged separately); float.
    segments : torch.Tensor
        ``LongTensor[N, H, W]`` partition of the same images (ids need not be contiguous).

    Returns
    -------
    torch.Tensor
        The shape, dtype and device of ``saliency``; constant inside every super-pixel.

    Notes
    -----
    Gong et al., *A Super-pixel-based Approach to the Stable Interpretation of Neural Networks* (BMVC 2024),
    Eq. 3: ``g-SG(x) = kappa(x) grad_x f(x)`` with ``kappa_ij = 1/|S_k|`` when pixels i and j share group
    ``S_k``. For a linear reduction of the channels, averaging first or reducing first gives the same map.
    Chapters 06 and 07.
    """
    saliency = _check_values(saliency, "saliency", (3, 4), "(N, H, W) or (N, C, H, W)")
    squeeze = saliency.dim() == 3
    n, h, w = saliency.shape[0], saliency.shape[-2], saliency.shape[-1]
    segments = check_segments(segments, (n, h, w)).to(saliency.device)
    out = _segment_mean(saliency.unsqueeze(1) if squeeze else saliency, segments)
    return out.squeeze(1) if squeeze else out


#: The same function as :func:`superpixelify` (the name older code used).
segment_mean = superpixelify


# --------------------------------------------------------------------------------------------
# partitions
# --------------------------------------------------------------------------------------------
def _check_grid(n, height, width):
    """Batch size and image size of a baseline partition: positive ints."""
    return check_count(n, "n"), check_count(height, "height"), check_count(width, "width")


def _consecutive_ids(labels: np.ndarray) -> np.ndarray:
    """Map arbitrary integer labels to 0 .. K-1, keeping their sorted order (scikit-image's ids, compressed).

    NAS numbers its clusters differently, by first appearance in raster order (``nas._first_appearance_ids``): its
    cluster ids carry no order of their own.
    """
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape)


def square_partition(n: int, height: int, width: int, *, patch_size: int | None = None,
                     n_segments: int | None = None) -> torch.Tensor:
    """Square patches: the 'square' baseline partition of Gong et al. (Table 1).

    Parameters
    ----------
    n, height, width : int
        Batch size and image size.
    patch_size : int, optional
        Side of each square (the last row/column of patches may be smaller).
    n_segments : int, optional
        Approximate number of patches instead of ``patch_size``: the side is
        ``round(sqrt(H W / n_segments))``. Default 100.
    """
    n, height, width = _check_grid(n, height, width)
    if patch_size is None:
        n_segments = 100 if n_segments is None else check_count(n_segments, "n_segments")
        patch_size = max(1, int(round((height * width / n_segments) ** 0.5)))
    elif n_segments is not None:
        raise ValueError("pass patch_size or n_segments, not both")
    patch_size = check_count(patch_size, "patch_size")
    cols = -(-width // patch_size)
    rows = torch.arange(height).div(patch_size, rounding_mode="floor")
    colsid = torch.arange(width).div(patch_size, rounding_mode="floor")
    grid = rows.view(-1, 1) * cols + colsid.view(1, -1)
    return grid.unsqueeze(0).expand(n, height, width).clone().long()


def random_partition(n: int, height: int, width: int, *, n_segments: int = 100, seed: int = 0) -> torch.Tensor:
    """Random partition: every pixel goes to one of ``n_segments`` groups of (almost) equal size.

    The 'rand' baseline of Gong et al. (Table 1): same number of groups as the super-pixels, but
    groups that ignore the image. Each image draws its own partition from one seeded generator.
    """
    n, height, width = _check_grid(n, height, width)
    n_segments = check_count(n_segments, "n_segments")
    if n_segments > height * width:
        raise ValueError(f"n_segments must be between 1 and H*W={height * width}, got {n_segments}")
    gen = torch.Generator().manual_seed(check_count(seed, "seed", minimum=0))
    order = torch.rand(n, height * width, generator=gen).argsort(dim=1)
    ids = torch.empty(n, height * width, dtype=torch.long)
    ids.scatter_(1, order, (torch.arange(height * width) % n_segments).expand(n, -1).contiguous())
    return ids.view(n, height, width)


def _segment_one(img: np.ndarray, method: str, params: dict) -> np.ndarray:
    """Run one scikit-image algorithm on one ``[H, W, C]`` image in [0, 1]."""
    from skimage import segmentation

    if method == "slic":
        lab = segmentation.slic(img, start_label=0, channel_axis=-1, convert2lab=img.shape[-1] == 3, **params)
    elif method == "quickshift":
        rgb = img if img.shape[-1] == 3 else np.repeat(img, 3, axis=-1)
        lab = segmentation.quickshift(rgb.astype(np.float64), channel_axis=-1, **params)
    elif method == "felzenszwalb":
        lab = segmentation.felzenszwalb(img, channel_axis=-1, **params)
    elif method == "watershed":
        from skimage.color import rgb2gray
        from skimage.filters import sobel

        gray = rgb2gray(img) if img.shape[-1] == 3 else img[..., 0]
        p = dict(params)
        markers = int(p.pop("n_segments"))
        lab = segmentation.watershed(sobel(gray), markers=markers, **p)
    else:  # pragma: no cover - guarded by segment()
        raise ValueError(method)
    return _consecutive_ids(np.asarray(lab))


# ranges of the scikit-image parameters (and of the baselines'): counts are ints >= the minimum, numbers are
# (low, low_open); any other float, array or tensor parameter must be finite
_COUNTS = {"n_segments": 1, "patch_size": 1, "min_size": 0, "max_num_iter": 1, "seed": 0}
_NUMBERS = {
    "slic": {"compactness": (0.0, True), "sigma": (0.0, False)},
    "quickshift": {"kernel_size": (1.0, False), "max_dist": (0.0, False), "sigma": (0.0, False)},
    "felzenszwalb": {"scale": (0.0, False), "sigma": (0.0, False)},
    "watershed": {"compactness": (0.0, False)},
}


def _check_params(method: str, params: dict) -> None:
    """Counts are ints, numbers finite and in range, array parameters finite: before any algorithm runs."""
    numbers = _NUMBERS.get(method, {})
    for name, value in params.items():
        if name in _COUNTS:
            check_count(value, name, minimum=_COUNTS[name])
        elif name in numbers and not isinstance(value, (list, tuple, np.ndarray, torch.Tensor)):
            low, low_open = numbers[name]
            check_number(value, name, low=low, low_open=low_open)
        elif isinstance(value, (float, np.floating)):
            check_number(value, name)
        elif isinstance(value, (list, tuple, np.ndarray, torch.Tensor)):
            check_finite(np.asarray(value) if isinstance(value, (list, tuple)) else value, name)


def _cache_key(method: str, params: dict, images: torch.Tensor) -> str:
    """Digest of the method, its parameters and the images' full content (dtype and every byte)."""
    from .cache import content_digest

    return content_digest(method, json.dumps(params, sort_keys=True, default=str), images)


def _disk_path(key: str) -> Path:
    from . import cache_dir

    return Path(cache_dir()) / "segments" / f"{key}.pt"


def segment(images: torch.Tensor, method: str = "slic", *, cache: bool | str = True,
            progress: bool = False, **params) -> torch.Tensor:
    """Partition a batch of images into super-pixels (or a baseline partition).

    Parameters
    ----------
    images : torch.Tensor
        ``[N, C, H, W]`` float images in [0, 1] (C = 1 or 3), finite; a single ``[C, H, W]`` image is
        treated as a batch of one.
    method : {"slic", "quickshift", "felzenszwalb", "watershed", "squares", "random"}
        ``"slic"`` (Achanta et al.; ``n_segments``, ``compactness``, ``sigma``), ``"quickshift"``
        (Vedaldi & Soatto; ``kernel_size``, ``max_dist``, ``ratio``), ``"felzenszwalb"`` (graph based;
        ``scale``, ``sigma``, ``min_size``), ``"watershed"`` (compact watershed of the Sobel gradient,
        Neubert & Protzel; ``n_segments`` markers, ``compactness``), ``"squares"`` (``patch_size`` or
        ``n_segments``), ``"random"`` (``n_segments``, ``seed``).
    cache : bool or "disk"
        ``True`` keeps recent results in memory, keyed by method, parameters and a hash of the
        images; ``"disk"`` also stores them under ``cache_dir()/segments``; ``False`` recomputes.
    progress : bool
        Show a progress bar over the images.
    **params
        Passed to the algorithm (defaults in ``superpixels._DEFAULTS``).

    Returns
    -------
    torch.LongTensor
        ``[N, H, W]`` on the images' device; ids ``0 .. K_n - 1`` in each image.

    Notes
    -----
    Gong et al. (BMVC 2024), Sec. 3.3: SLIC with 100 segments on CIFAR-10, Quickshift with
    ``max_dist=3`` on ImageNet; Table 1 compares with square and random partitions of the same
    number of groups. Chapter 06.
    """
    images = _check_images(images)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if cache not in (True, False, "disk"):
        raise ValueError(f"cache must be True, False or 'disk', got {cache!r}")
    _check_params(method, params)
    n, _, h, w = images.shape
    if method == "squares":
        return square_partition(n, h, w, **params).to(images.device)
    if method == "random":
        return random_partition(n, h, w, **params).to(images.device)

    full = {**_DEFAULTS[method], **params}
    key = _cache_key(method, full, images) if cache else None
    if key is not None and key in _MEMORY_CACHE:
        _MEMORY_CACHE.move_to_end(key)
        return _MEMORY_CACHE[key].clone().to(images.device)
    path = _disk_path(key) if cache == "disk" else None
    if path is not None:
        from .cache import load_verified

        out = load_verified(path)  # None when missing, truncated or corrupt (SHA-256 checked): recompute
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (n, h, w):
            _remember(key, out)
            return out.clone().to(images.device)

    arr = images.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
    iterator = range(n)
    if progress:
        from . import progress as progress_bar

        iterator = progress_bar(iterator, desc=f"{method} segments")
    try:
        labels = np.stack([_segment_one(arr[i], method, full) for i in iterator])
    except TypeError as err:
        raise TypeError(f"bad parameter for method={method!r}: {err}") from err
    out = torch.from_numpy(labels).long()

    if key is not None:
        _remember(key, out)
    if path is not None:
        from .cache import save_verified

        save_verified(out, path)
    return out.clone().to(images.device)


def _remember(key: str, value: torch.Tensor) -> None:
    _MEMORY_CACHE[key] = value
    _MEMORY_CACHE.move_to_end(key)
    while len(_MEMORY_CACHE) > _MEMORY_CACHE_SIZE:
        _MEMORY_CACHE.popitem(last=False)


def connected_pieces(segments: torch.Tensor) -> np.ndarray:
    """Number of 4-connected pieces of each image's partition (a cell split in two counts twice).

    NAS cells are clusters of pixels, not necessarily connected (NAS Sec. 3, Fig. 1): this counts the
    superpixels a reader sees. Chapter 07 sets it next to the number of clusters K.

    Parameters
    ----------
    segments : LongTensor[N, H, W]
        A partition (ids ``0 .. K_n - 1`` per image).

    Returns
    -------
    numpy.ndarray of int, shape (N,)
    """
    from skimage.measure import label

    seg = check_segments(segments).cpu().numpy()
    return np.array([label(s + 1, connectivity=1, background=0).max() for s in seg])


def matched_parameter(images: torch.Tensor, method: str, name: str, grid, target: float, **fixed):
    """The value of parameter ``name`` in ``grid`` whose mean number of segments on ``images`` is nearest ``target``.

    NAS Sec. 4.2.1 compares NAS with SLIC and Felzenszwalb set to give about as many superpixels as NAS has
    clusters; chapter 07 matches them on eight test images. The first grid value wins a tie.

    Parameters
    ----------
    images : Tensor[N, C, H, W]
        The images segmented for every grid value (:func:`segment`, cached).
    method : str
        One of :data:`METHODS`.
    name : str
        The parameter searched, e.g. ``"n_segments"`` (SLIC) or ``"scale"`` (Felzenszwalb).
    grid : sequence
        Candidate values.
    target : float
        The wanted mean number of segments per image.
    **fixed
        The method's other parameters.

    Returns
    -------
    The chosen value of ``grid``.
    """
    grid = list(grid)
    if not grid:
        raise ValueError("grid must hold at least one candidate value")
    check_number(target, "target", low=0.0)
    counts = [count_segments(segment(images, method, **{name: v}, **fixed)).float().mean().item() for v in grid]
    return grid[int(np.argmin([abs(c - target) for c in counts]))]


def refinement(fine: torch.Tensor, coarse: torch.Tensor) -> float:
    """Fraction of the cells of partition ``fine`` that lie inside a single cell of ``coarse``.

    1 means ``fine`` refines ``coarse`` (every fine cell is a union-free piece of one coarse cell), as the cuts of
    one Ward dendrogram at K and K' < K do (NAS Sec. 3.2, hierarchical clustering); k-means at two K need not.

    Parameters
    ----------
    fine, coarse : LongTensor[H, W]
        Two partitions of one image.

    Returns
    -------
    float in [0, 1]
    """
    for value, label in ((fine, "fine"), (coarse, "coarse")):
        if not isinstance(value, torch.Tensor) or value.dim() != 2:
            raise ValueError(f"{label} must be a LongTensor[H, W] (one image's partition)")
    if fine.shape != coarse.shape:
        raise ValueError(f"fine and coarse must have the same shape, got {tuple(fine.shape)} and {tuple(coarse.shape)}")
    cells = torch.unique(fine)
    return float(np.mean([len(torch.unique(coarse[fine == c])) == 1 for c in cells]))
