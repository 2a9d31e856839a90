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

__all__ = ["glue", "image_grid", "show_heatmaps", "group_accuracy_bars", "to_numpy_image", "heatmap_2d", "HEATMAP_CMAP"]

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


def _grid(n, ncols, scale=1.6):
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def image_grid(images, titles=None, *, ncols: int = 8, title: str | None = None):
    """Show a batch of images (N,C,H,W) in [0,1] with optional per-image titles; returns the figure."""
    images = _check_pixels(images)
    titles = _check_titles(titles, len(images))
    check_count(ncols, "ncols")
    fig, axes = _grid(len(images), ncols)
    for i, img in enumerate(images):
        ax = axes.flat[i]
        arr = to_numpy_image(img)
        ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def show_heatmaps(images, heatmaps, titles=None, *, row_labels=None, title: str | None = None):
    """Images (top row) and their signed heatmaps (one row per method) with a symmetric colormap.

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
    rows = 1 + len(heatmaps)
    fig, axes = plt.subplots(rows, n, figsize=(1.6 * n + 0.8, 1.6 * rows + 0.3), squeeze=False)
    for j in range(n):
        arr = to_numpy_image(images[j])
        axes[0, j].imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
        if titles is not None:
            axes[0, j].set_title(str(titles[j]), fontsize=7)
        for r, maps in enumerate(heatmaps.values(), start=1):
            h = heatmap_2d(maps[j])
            lim = float(np.abs(h).max()) or 1.0
            axes[r, j].imshow(h, cmap=HEATMAP_CMAP, vmin=-lim, vmax=lim)
    for r in range(rows):
        for j in range(n):
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
        label = "input" if r == 0 else list(heatmaps)[r - 1]
        axes[r, 0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
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
        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(group_names), 3))
    else:
        fig = ax.figure
    width = 0.8 / max(1, len(table))
    x = np.arange(len(group_names))
    for k, (name, accs) in enumerate(table.items()):
        ax.bar(x + (k - (len(table) - 1) / 2) * width, 100 * np.asarray(accs, dtype=float), width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(group_names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
