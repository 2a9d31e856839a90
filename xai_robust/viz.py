"""Figures: image grids, signed heatmaps with a symmetric colormap, group-accuracy bars, curves.

Heatmaps are shown with a diverging colormap centred at zero (red = evidence for the explained class,
blue = against it), scaled per image to its largest absolute value, so sign and relative size read at once.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from .checks import check_count, check_finite, check_images

__all__ = ["glue", "image_grid", "show_heatmaps", "group_accuracy_bars", "to_numpy_image", "heatmap_2d", "HEATMAP_CMAP",
           "overlay_segments", "boundary_frequency", "minmax", "panels", "saliency_rows", "image_rows", "signed_row"]

HEATMAP_CMAP = "bwr"


def glue(name: str, value, display: bool = False):
    """Store a number for the chapter's prose (``{glue:text}`name:.1f```) via :func:`myst_nb.glue`.

    NumPy and torch scalars are turned into plain Python numbers first: myst-nb formats the value from its
    text representation, and NumPy 2 writes ``np.float64(0.5)``, which it cannot format.
    """
    from myst_nb import glue as _glue

    if isinstance(value, torch.Tensor) or isinstance(value, (np.generic, np.ndarray)):
        value = value.item()
    return _glue(name, value, display=display)


def to_numpy_image(img) -> np.ndarray:
    """(C,H,W) tensor in [0,1] → (H,W,3) or (H,W) numpy array for ``imshow``."""
    img = torch.as_tensor(img).detach().float().cpu()
    if img.dim() == 3 and img.shape[0] in (1, 3):
        img = img.permute(1, 2, 0)
    arr = img.numpy()
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return np.clip(arr, 0, 1)


def heatmap_2d(heatmap) -> np.ndarray:
    """Sum a (C,H,W) heatmap over channels to (H,W) (relevance is additive over channels)."""
    h = torch.as_tensor(heatmap).detach().float().cpu()
    if h.dim() == 3:
        h = h.sum(0)
    if h.dim() != 2:
        raise ValueError(f"heatmap must have shape (C,H,W) or (H,W), got {tuple(h.shape)}")
    return h.numpy()


def _check_pixels(images, name: str = "images") -> torch.Tensor:
    """A finite float (N, C, H, W) batch with C = 1 or 3 and pixels in [0, 1] (a list of (C, H, W) images is
    stacked). Values a little outside [0, 1] (noise, interpolation) are clipped when drawn; values far outside
    are 0-255 pixels or normalised inputs, which clipping would turn into a wrong picture."""
    if isinstance(images, (list, tuple)) and images and all(isinstance(i, torch.Tensor) for i in images):
        images = torch.stack(list(images))
    elif isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    check_images(images, name, channels=(1, 3))
    lo, hi = float(images.min()), float(images.max())
    if lo < -0.5 or hi > 1.5:
        raise ValueError(f"{name} must hold pixels in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; divide 0-255 "
                         f"pixels by 255 and undo any input normalisation (the models normalise internally)")
    return images


def _check_titles(titles, n: int, name: str = "titles"):
    if titles is None:
        return None
    if isinstance(titles, str) or not hasattr(titles, "__len__"):
        raise TypeError(f"{name} must be a list of {n} strings (one per image), got {type(titles).__name__}")
    if len(titles) != n:
        raise ValueError(f"{name} has {len(titles)} entries for {n} images; pass one title per image")
    return titles


#: Widest figure the helpers draw (inches): at 100 dpi it stays legible in a 368-px phone column (at least half size).
MAX_WIDTH = 7.0
#: Most panels per row.
MAX_COLUMNS = 8
_FONT = 9  # points: the smallest text the helpers write


def _wrap(text, width_in: float) -> str:
    import textwrap

    chars = max(6, int(width_in * 72 / (0.65 * _FONT)))  # characters of a 9-pt font that fit the panel
    return "\n".join(textwrap.wrap(str(text), chars)) or str(text)


def _grid(n, ncols):
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, n, MAX_COLUMNS))
    nrows = math.ceil(n / ncols)
    side = min(1.6, MAX_WIDTH / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols, (side + 0.35) * nrows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes, side


def image_grid(images, titles=None, *, ncols: int = 8, title: str | None = None):
    """Show a batch of images (N,C,H,W) in [0,1] with optional per-image titles; returns the figure.

    At most :data:`MAX_COLUMNS` images per row (more wrap onto further rows) and :data:`MAX_WIDTH` inches wide, with
    9-pt titles, so the figure stays legible on a phone.
    """
    images = _check_pixels(images)
    titles = _check_titles(titles, len(images))
    check_count(ncols, "ncols")
    fig, axes, side = _grid(len(images), ncols)
    for i, img in enumerate(images):
        ax = axes.flat[i]
        arr = to_numpy_image(img)
        ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
        if titles is not None:
            ax.set_title(_wrap(titles[i], side), fontsize=_FONT)
    if title:
        fig.suptitle(title, fontsize=_FONT + 1)
    fig.tight_layout()
    return fig


def show_heatmaps(images, heatmaps, titles=None, *, row_labels=None, title: str | None = None):
    """Images and their signed heatmaps (one row per method) with a symmetric colormap and a colorbar.

    Each heatmap is divided by its largest absolute value, so colours compare within a map (red: evidence for the
    class, blue: against; the colorbar gives the scale). At most :data:`MAX_COLUMNS` images per row: larger
    batches continue in further blocks of rows; the figure is at most :data:`MAX_WIDTH` inches wide.

    Parameters
    ----------
    images : Tensor[N, C, H, W]
    heatmaps : Tensor[N, C, H, W] or dict of name → Tensor
        One heatmap batch, or several (one row each, labelled by the dict keys).
    titles : list of str, optional
        Column titles.
    """
    import matplotlib.pyplot as plt

    images = _check_pixels(images)
    n = len(images)
    titles = _check_titles(titles, n)
    if not isinstance(heatmaps, Mapping):
        heatmaps = {"heatmap": heatmaps}
    for key, maps in heatmaps.items():
        label = "heatmaps" if list(heatmaps) == ["heatmap"] else f"heatmaps[{key!r}]"
        if not isinstance(maps, torch.Tensor):
            raise TypeError(f"{label} must be a Tensor of shape (N, C, H, W) or (N, H, W), got {type(maps).__name__}")
        if maps.dim() not in (3, 4) or maps.shape[0] != n:
            raise ValueError(f"{label} must have shape ({n}, C, H, W) or ({n}, H, W), one heatmap per image, got "
                             f"{tuple(maps.shape)}")
        check_finite(maps, label)
    per_block = 1 + len(heatmaps)
    ncols = min(n, MAX_COLUMNS)
    blocks = math.ceil(n / ncols)
    side = min(1.6, (MAX_WIDTH - 1.1) / ncols)
    fig, axes = plt.subplots(per_block * blocks, ncols, figsize=(side * ncols + 1.1, (side + 0.25) * per_block * blocks
                                                                 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    image = None
    for j in range(n):
        block, col = divmod(j, ncols)
        top = block * per_block
        arr = to_numpy_image(images[j])
        axes[top, col].imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
        axes[top, col].set_frame_on(True)
        if titles is not None:
            axes[top, col].set_title(_wrap(titles[j], side), fontsize=_FONT)
        for r, maps in enumerate(heatmaps.values(), start=1):
            h = heatmap_2d(maps[j])
            lim = float(np.abs(h).max()) or 1.0
            image = axes[top + r, col].imshow(h / lim, cmap=HEATMAP_CMAP, vmin=-1, vmax=1)
            axes[top + r, col].set_frame_on(True)
    for block in range(blocks):
        for r in range(per_block):
            label = "input" if r == 0 else list(heatmaps)[r - 1]
            axes[block * per_block + r, 0].set_ylabel(_wrap(label, 1.2), fontsize=_FONT)
    if title:
        fig.suptitle(title, fontsize=_FONT + 1)
    right = 1 - 0.75 / fig.get_size_inches()[0]  # room for the colorbar and its labels
    fig.tight_layout(rect=(0, 0, right, 1))
    if image is not None:
        cax = fig.add_axes((right + 0.01, 0.2, 0.15 / fig.get_size_inches()[0], 0.6))
        bar = fig.colorbar(image, cax=cax, ticks=[-1, 0, 1])
        bar.ax.tick_params(labelsize=_FONT)
        bar.set_label("relevance / max |rel.|", fontsize=_FONT)
    return fig


def group_accuracy_bars(table: dict, group_names, *, title: str | None = None, ax=None):
    """Grouped bar chart of per-group accuracies.

    Parameters
    ----------
    table : dict of name → sequence of float
        One entry per model/method, each with one accuracy (in [0,1]) per group.
    group_names : list of str
    """
    import matplotlib.pyplot as plt

    if not isinstance(table, Mapping):
        raise TypeError(f"table must be a dict of name -> per-group accuracies, got {type(table).__name__}; "
                        "e.g. {'ERM': accuracies}")
    if isinstance(group_names, str) or not hasattr(group_names, "__len__"):
        raise TypeError(f"group_names must be a list of str, got {type(group_names).__name__}")
    for name, accs in table.items():
        a = np.asarray(accs.detach().cpu() if isinstance(accs, torch.Tensor) else accs, dtype=float).reshape(-1)
        if a.shape[0] != len(group_names):
            raise ValueError(f"table[{name!r}] has {a.shape[0]} accuracies for {len(group_names)} group_names; "
                             "pass one accuracy per group")
        finite = a[~np.isnan(a)]  # NaN: an empty group (metrics.group_accuracies), drawn as no bar
        if np.isinf(finite).any() or (finite < 0).any() or (finite > 1).any():
            raise ValueError(f"table[{name!r}] must hold accuracies as fractions in [0, 1] (NaN for empty groups), "
                             f"got values in [{finite.min():.4g}, {finite.max():.4g}]; divide percentages by 100")
    if ax is None:
        fig, ax = plt.subplots(figsize=(min(MAX_WIDTH, 1.2 + 1.1 * len(group_names)), 3))
    else:
        fig = ax.figure
    width = 0.8 / max(1, len(table))
    x = np.arange(len(group_names))
    for k, (name, accs) in enumerate(table.items()):
        ax.bar(x + (k - (len(table) - 1) / 2) * width, 100 * np.asarray(accs, dtype=float), width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(group_names, rotation=20, ha="right", fontsize=_FONT)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=_FONT)
    if title:
        ax.set_title(title, fontsize=_FONT + 1)
    fig.tight_layout()
    return fig


def overlay_segments(image, segments, color=(1, 1, 0)) -> np.ndarray:
    """An image with the borders of its partition drawn in ``color``.

    How chapters 06 and 07 show superpixels (NAS Fig. 1: the cells' borders over the image).

    Parameters
    ----------
    image : Tensor[C, H, W] in [0, 1]
    segments : LongTensor[H, W]
        The image's partition.
    color : (float, float, float)
        The border colour (default yellow).

    Returns
    -------
    numpy.ndarray (H, W, 3)
    """
    from skimage.segmentation import mark_boundaries

    seg = torch.as_tensor(segments).detach().cpu()
    if seg.dim() != 2:
        raise ValueError(f"segments must be one image's partition, shape (H, W), got {tuple(seg.shape)}")
    return mark_boundaries(to_numpy_image(image), seg.numpy(), color=color)


def boundary_frequency(segmentations) -> np.ndarray:
    """Per pixel, the fraction of the partitions that draw a border there.

    Shows how stable the borders of a clustering are over seeds (NAS Sec. 3.2: k-means depends on its start):
    1 where every run draws a border, 0 where none does.

    Parameters
    ----------
    segmentations : sequence of LongTensor[H, W]
        Partitions of one image (e.g. one per seed).

    Returns
    -------
    numpy.ndarray (H, W) in [0, 1]
    """
    from skimage.segmentation import find_boundaries

    segs = [torch.as_tensor(s).detach().cpu().numpy() for s in segmentations]
    if not segs or any(s.ndim != 2 or s.shape != segs[0].shape for s in segs):
        raise ValueError("segmentations must be a non-empty sequence of (H, W) partitions of one image")
    return np.mean([find_boundaries(s, mode="outer") for s in segs], axis=0)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Each map rescaled to [0, 1] by its own minimum and maximum (a flat map becomes 0).

    How NAS Fig. 4 and Table 1 (Sec. 4.2.3) make maps of different methods comparable.

    Parameters
    ----------
    maps : Tensor[..., H, W]

    Returns
    -------
    Tensor[..., H, W]
    """
    maps = maps - maps.amin((-2, -1), keepdim=True)
    return maps / maps.amax((-2, -1), keepdim=True).clamp_min(1e-12)


def panels(arrays, titles=None, *, ncols: int | None = None, row_labels=None, cmap=None, vmin=None, vmax=None,
           figsize=None):
    """Arrays shown side by side (rows of ``ncols``, at most :data:`MAX_COLUMNS`), axes off; returns the figure.

    Chapter 07's superpixel figures (NAS Fig. 1 and 3 analogs) are grids of :func:`overlay_segments`.

    Parameters
    ----------
    arrays : sequence of ndarray (H, W) or (H, W, 3)
        The panels, row by row (e.g. :func:`overlay_segments` of several partitions).
    titles : sequence of str, optional
        One title per panel (9 pt).
    ncols : int, optional
        Panels per row (default: all in one row, at most :data:`MAX_COLUMNS`).
    row_labels : sequence of str, optional
        One label per row, written at the left above the row's first panel.
    cmap : str or sequence of str, optional
        Colormap for 2-D panels, one for all or one per panel.
    vmin, vmax : float, optional
        The colour range of 2-D panels (e.g. 0 and 9 for ten cluster labels), default each panel's own range.
    figsize : (float, float), optional
        Default: :data:`MAX_WIDTH` inches wide, square panels.
    """
    import matplotlib.pyplot as plt

    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays)
    if n == 0:
        raise ValueError("panels needs at least one array")
    titles = _check_titles(titles, n)
    ncols = min(ncols or n, n, MAX_COLUMNS)
    check_count(ncols, "ncols")
    nrows = math.ceil(n / ncols)
    if row_labels is not None and len(row_labels) != nrows:
        raise ValueError(f"row_labels must hold one label per row ({nrows}), got {len(row_labels)}")
    cmaps = list(cmap) if isinstance(cmap, (list, tuple)) else [cmap] * n
    if len(cmaps) != n:
        raise ValueError(f"cmap must be one colormap or one per panel ({n}), got {len(cmaps)}")
    side = MAX_WIDTH / ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize or (MAX_WIDTH, (side + 0.35) * nrows + 0.2),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, arr in enumerate(arrays):
        ax = axes.flat[i]
        if arr.ndim == 2:
            ax.imshow(arr, cmap=cmaps[i], vmin=vmin, vmax=vmax, interpolation="nearest")
        else:
            ax.imshow(arr, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=_FONT)
    for r, label in enumerate(row_labels or []):
        axes[r, 0].set_title(label, loc="left", fontsize=_FONT)
    fig.tight_layout()
    return fig


def saliency_rows(first, rows, *, first_titles, titles, cmap: str = "inferno", scale: str = "minmax",
                  label: str | None = None, figsize=None):
    """Rows of saliency maps, each scaled to [0, 1], after a first column (the image or its cells), one colorbar.

    NAS Fig. 4 (maps and their superpixelifications) and Gong et al. Fig. 1 (gradients of several models).

    Parameters
    ----------
    first : sequence of ndarray (H, W, 3)
        The first panel of each row (e.g. the image, or :func:`overlay_segments`).
    rows : sequence of sequence of Tensor[H, W]
        The maps of each row (the same number per row).
    scale : {"minmax", "max"}
        Each map rescaled to [0, 1] by :func:`minmax`, or divided by its maximum (non-negative maps such as
        |gradient|); the colorbar's label says which (or ``label``).
    first_titles : sequence of str
        The first panel's title in each row.
    titles : sequence of sequence of str
        Every map's title.
    """
    import matplotlib.pyplot as plt

    if scale not in ("minmax", "max"):
        raise ValueError(f"scale must be 'minmax' or 'max', got {scale!r}")
    if label is None:
        label = "saliency (min-max per map)" if scale == "minmax" else "saliency / its maximum"
    if len(first) != len(rows) or len(first_titles) != len(rows) or len(titles) != len(rows) or not rows:
        raise ValueError("first, rows, first_titles and titles must have one entry per row (at least one row)")
    width = len(rows[0])
    if any(len(r) != width for r in rows) or any(len(t) != width for t in titles):
        raise ValueError("every row must hold the same number of maps, each with a title")
    fig, axes = plt.subplots(len(rows), width + 1, figsize=figsize or (MAX_WIDTH, 1.53 * len(rows)),
                             layout="constrained", squeeze=False)
    image = None
    for r, maps in enumerate(rows):
        axes[r, 0].imshow(first[r])
        axes[r, 0].set_title(first_titles[r], fontsize=_FONT)
        for c, m in enumerate(maps):
            m = torch.as_tensor(m).detach().float().cpu()
            m = minmax(m) if scale == "minmax" else m / m.max().clamp_min(1e-12)
            image = axes[r, c + 1].imshow(m.numpy(), cmap=cmap, vmin=0, vmax=1)
            axes[r, c + 1].set_title(titles[r][c], fontsize=_FONT)
    for a in axes.flat:
        a.axis("off")
    fig.colorbar(image, ax=axes[:, 1:], shrink=0.6, label=label)
    return fig


def image_rows(rows, *, titles=None, masks=None, title: str | None = None, mask_color: str = "tab:green"):
    """One labelled row of images per entry of ``rows`` (e.g. per test split), optionally with mask outlines.

    Parameters
    ----------
    rows : dict of label → Tensor[n, C, H, W] in [0, 1]
        The images of each row (at most :data:`MAX_COLUMNS` each); the label is written at the row's left.
    titles : dict of label → list of str, optional
        Per-image titles of each row.
    masks : dict of label → Tensor[n, 1, H, W], optional
        Object masks, outlined at 0.5 (chapter 03: the region an ISNet keeps its relevance in).
    title : str, optional
        The figure's title: what the reader should see.
    """
    import matplotlib.pyplot as plt

    if not isinstance(rows, Mapping) or not rows:
        raise TypeError("rows must be a non-empty dict of row label -> images (n, C, H, W)")
    rows = {label: _check_pixels(images, f"rows[{label!r}]") for label, images in rows.items()}
    ncols = max(len(images) for images in rows.values())
    if ncols > MAX_COLUMNS:
        raise ValueError(f"at most {MAX_COLUMNS} images per row, got {ncols}")
    side = min(1.6, MAX_WIDTH / ncols)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(side * ncols, (side + 0.2) * len(rows) + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for r, (label, images) in enumerate(rows.items()):
        row_titles = _check_titles(None if titles is None else titles.get(label), len(images), f"titles[{label!r}]")
        for j, img in enumerate(images):
            arr = to_numpy_image(img)
            axes[r, j].imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
            axes[r, j].set_frame_on(True)
            if masks is not None and label in masks:
                axes[r, j].contour(heatmap_2d(masks[label][j]), levels=[0.5], colors=mask_color, linewidths=0.6)
            if row_titles is not None:
                axes[r, j].set_title(row_titles[j], fontsize=_FONT)
        axes[r, 0].set_ylabel(label, fontsize=_FONT)
    if title:
        fig.suptitle(title, fontsize=_FONT + 1)
    fig.tight_layout()
    return fig


def signed_row(maps, titles, *, figsize=(7, 2.3), label: str = "R / max |R|"):
    """One row of signed heatmaps, each divided by its largest absolute value, with one colorbar.

    How chapter 02 compares LRP variants on one image (Faster ISNet Sec. II-B: ε and the explained quantity change
    where the relevance goes, red for and blue against the class).

    Parameters
    ----------
    maps : sequence of Tensor[C, H, W] or Tensor[H, W]
        The heatmaps (channels are summed).
    titles : sequence of str
        One title per map.
    figsize : (float, float)
    label : str
        The colorbar's label.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    maps = list(maps)
    if not maps or len(titles) != len(maps) or len(maps) > MAX_COLUMNS:
        raise ValueError(f"signed_row needs 1 to {MAX_COLUMNS} maps with one title each")
    fig, axes = plt.subplots(1, len(maps), figsize=figsize, layout="constrained", squeeze=False)
    for ax, h, t in zip(axes[0], maps, titles, strict=True):
        m = heatmap_2d(h)
        v = float(np.abs(m).max()) or 1.0
        image = ax.imshow(m / v, cmap=HEATMAP_CMAP, vmin=-1, vmax=1)
        ax.set_title(t, fontsize=_FONT)
        ax.axis("off")
    fig.colorbar(image, ax=axes[0], shrink=0.9, label=label)
    return fig
