"""The one sample type every dataset yields, and the dataset cache.

Every dataset in the book is a :class:`SampleDataset`: images (N,C,H,W) in [0,1], class labels, group ids
(class × spurious attribute), and optionally foreground masks and the spurious attribute itself.
Indexing gives the sample dict ``{"image", "label", "group", "mask"?, "spurious"?, "index"}`` (docs/design.md).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import cache_dir
from ..cache import config_hash, content_digest, load_verified, save_verified
from ..checks import check_count, check_finite, check_images, check_labels

__all__ = ["SampleDataset", "LazyImages", "cached", "config_hash", "batch_indices"]

CACHE_VERSION = 3  # bump whenever a generator changes: cached data is keyed by configuration only


def batch_indices(n: int, batch_size: int, *, generator: torch.Generator | None = None,
                  weights: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The package's one batching helper: the sample indices of one pass over ``n`` samples, in batches.

    In order (``0 … n-1``) by default; a random permutation drawn from ``generator``; or ``n`` draws with
    replacement in proportion to ``weights`` (JTT's upsampling), also from ``generator``.

    Returns
    -------
    list of LongTensor
        Consecutive batches of at most ``batch_size`` indices.
    """
    batch_size = check_count(batch_size, "batch_size")
    if weights is not None:
        order = torch.multinomial(weights.double(), n, replacement=True, generator=generator)
    elif generator is not None:
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _check_n(n, default: int) -> int:
    """The number of samples to draw: ``default`` for None, else a positive int (0, negatives, floats raise)."""
    if n is None:
        return default
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (or None for the default {default}), got {n!r}")
    return n


def _check_flag(value, name: str) -> bool:
    """A dataset switch: True or False (a string such as 'no' would be truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def _check_generator_args(seed, size, min_size: int) -> None:
    """The seed (an int >= 0) and the image side (an int >= ``min_size``) of a synthetic dataset."""
    check_count(seed, "seed", minimum=0)
    check_count(size, "size", minimum=min_size)


def _as_ids(values, n: int, name: str) -> torch.Tensor:
    """Integer ids of shape (n,) (a list, array or tensor) as a LongTensor; floats and bools raise."""
    if isinstance(values, (list, tuple, range)):
        values = torch.as_tensor(values) if len(values) else torch.zeros(0, dtype=torch.long)
    return check_labels(values, n, None, name)


def _check_names(names, name: str) -> list:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"{name} must be a list of str (one per id), got {type(names).__name__} {names!r}")
    return list(names)


def cached(kind: str, config: dict, make: Callable[[], dict]) -> dict:
    """Return ``make()``'s dict of tensors, cached under ``cache_dir()/kind/<hash of config>.pt``.

    Writes are atomic (a temporary file unique to the process and thread, then rename) and verified on load
    with a SHA-256 digest of the whole file; a corrupt or stale file is rebuilt.
    """
    path = cache_dir() / kind / f"{config_hash({**config, '_version': CACHE_VERSION})}.pt"
    payload = load_verified(path)
    if isinstance(payload, dict) and "tensors" in payload:
        return payload["tensors"]
    tensors = make()
    save_verified({"tensors": tensors, "config": config}, path)
    return tensors


class LazyImages:
    """Images read from files on demand, indexable like a tensor (for the real datasets).

    Parameters
    ----------
    paths : sequence of Path
        Image files.
    size : int
        Images are resized (shorter side, then centre crop) to ``size × size``.
    kind : {'rgb', 'mask'}
        'rgb': colour images (3, size, size) in [0, 1]; 'mask': foreground masks (1, size, size) of 0 and 1, read
        from grayscale files (such as CUB's segmentations: a pixel is foreground at >= 50 % of the maximum).
    mask_paths : sequence of Path, optional
        With ``kind='rgb'``: foreground masks the images are multiplied by (the background set to black, as
        ExMap's foreground-only Waterbirds).
    """

    def __init__(self, paths: Sequence[Path], size: int, *, kind: str = "rgb", mask_paths=None):
        if kind not in ("rgb", "mask"):
            raise ValueError(f"kind must be 'rgb' or 'mask', got {kind!r}")
        self.paths = list(paths)
        self.size = int(size)
        self.kind = kind
        self.mask_paths = None if mask_paths is None else list(mask_paths)
        if self.mask_paths is not None and len(self.mask_paths) != len(self.paths):
            raise ValueError(f"mask_paths must hold one mask per image ({len(self.paths)}), got {len(self.mask_paths)}")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self):
        return (len(self.paths), 3 if self.kind == "rgb" else 1, self.size, self.size)

    def _read(self, path, mode: str) -> torch.Tensor:
        import numpy as np
        from PIL import Image

        with Image.open(path) as img:
            img = img.convert(mode)
            w, h = img.size
            scale = self.size / min(w, h)
            img = img.resize((max(self.size, round(w * scale)), max(self.size, round(h * scale))), Image.BILINEAR)
            w, h = img.size
            left, top = (w - self.size) // 2, (h - self.size) // 2
            img = img.crop((left, top, left + self.size, top + self.size))
            pixels = torch.from_numpy(np.asarray(img).copy()).float() / 255
        return pixels.permute(2, 0, 1) if mode == "RGB" else pixels[None]

    def _load(self, i: int) -> torch.Tensor:
        if self.kind == "mask":
            return (self._read(self.paths[i], "L") >= 0.5).float()
        image = self._read(self.paths[i], "RGB")
        if self.mask_paths is not None:
            image = image * (self._read(self.mask_paths[i], "L") >= 0.5).float()
        return image

    def select(self, indices) -> LazyImages:
        """The images at ``indices`` (a list of ints) as a new :class:`LazyImages` (nothing is read)."""
        return LazyImages([self.paths[i] for i in indices], self.size, kind=self.kind,
                          mask_paths=None if self.mask_paths is None else [self.mask_paths[i] for i in indices])

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self._load(int(index))
        if isinstance(index, slice):  # images[i:i + batch] (train.predict batches like this)
            index = list(range(len(self)))[index]
        else:
            index = torch.as_tensor(index).reshape(-1).tolist()
        if not index:
            return torch.zeros(0, *self.shape[1:])
        return torch.stack([self._load(i) for i in index])

    def describe(self) -> dict:
        """What identifies these images (their files and size), for :meth:`SampleDataset.fingerprint`."""
        out = {"paths": [str(p) for p in self.paths], "size": self.size}
        if self.kind != "rgb":
            out["kind"] = self.kind
        if self.mask_paths is not None:
            out["mask_paths"] = [str(p) for p in self.mask_paths]
        return out


class SampleDataset(Dataset):
    """A dataset of images with labels, group ids and optional masks / spurious attributes.

    Parameters
    ----------
    images : Tensor[N, C, H, W] or LazyImages
        Pixels in [0, 1].
    labels, groups : LongTensor[N]
        Class labels and group ids (0..G-1).
    class_names, group_names : list of str
        Names of the classes and groups (``group_names[g]`` describes group ``g``).
    masks : Tensor[N, 1, H, W] or LazyImages (kind='mask'), optional
        Foreground masks (1 = foreground), used by ISNet and localisation metrics.
    spurious : LongTensor[N], optional
        The spurious attribute (e.g. background family, colour, digit for parity).
    attributes : dict of LongTensor[N], optional
        Further per-sample attributes (e.g. ``{"cooccur": ...}`` for the second shortcut).
    name : str
        A short name used in titles.
    missing_masks : str, optional
        Without ``masks``: why there are none and how to get them (what :meth:`require_masks` raises).
    """

    def __init__(self, images, labels, groups, *, class_names, group_names, masks=None, spurious=None,
                 attributes=None, name="dataset", missing_masks=None):
        if isinstance(images, torch.Tensor):
            if not images.is_floating_point():
                raise TypeError(f"images must be floats in [0, 1], got dtype {images.dtype}; for 0-255 pixels pass "
                                "images.float() / 255")
            if images.dim() == 4 and images.shape[0] == 0:  # an empty dataset (e.g. an empty subset) is allowed
                pass
            else:
                check_images(images, "images")
        elif not isinstance(images, LazyImages):
            raise TypeError(f"images must be a float Tensor (N, C, H, W) with pixels in [0, 1] or LazyImages, got "
                            f"{type(images).__name__}; stack a list of images with torch.stack(images)")
        n = len(images)
        class_names = _check_names(class_names, "class_names")
        group_names = _check_names(group_names, "group_names")
        labels = _as_ids(labels, n, "labels")
        groups = _as_ids(groups, n, "groups")
        if labels.numel() and int(labels.min()) < 0:  # the upper bound is the model's: train.fit checks it
            raise ValueError(f"labels must be class indices >= 0, got a minimum of {int(labels.min())}")
        if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= len(group_names)):
            raise ValueError(f"groups must lie in [0, {len(group_names)}) (one id per entry of group_names), got "
                             f"values in [{int(groups.min())}, {int(groups.max())}]")
        if isinstance(masks, LazyImages):
            if masks.kind != "mask" or len(masks) != n or masks.size != tuple(images.shape)[-1]:
                raise ValueError(f"lazily read masks must be LazyImages(kind='mask') of {n} masks of the images' "
                                 f"size {tuple(images.shape)[-1]}, got kind={masks.kind!r}, {len(masks)} of size "
                                 f"{masks.size}")
        elif masks is not None:
            if not isinstance(masks, torch.Tensor):
                raise TypeError(f"masks must be a float Tensor of shape ({n}, 1, H, W), got {type(masks).__name__}; "
                                "convert an array with torch.from_numpy(masks).float()")
            hw = tuple(images.shape[2:])
            if masks.dim() != 4 or masks.shape[0] != n or masks.shape[1] != 1 or tuple(masks.shape[2:]) != hw:
                raise ValueError(f"masks must have shape ({n}, 1, {', '.join(map(str, hw))}) (one mask per image, "
                                 f"the images' size), got {tuple(masks.shape)}")
            check_finite(masks, "masks")
        if spurious is not None:
            spurious = _as_ids(spurious, n, "spurious")
        attributes = dict(attributes or {})
        for key, value in attributes.items():
            if not hasattr(value, "__len__") or len(value) != n:
                raise ValueError(f"attributes[{key!r}] must hold one value per sample ({n}), got "
                                 f"{len(value) if hasattr(value, '__len__') else type(value).__name__}")
        self.images = images
        self.labels = labels
        self.groups = groups
        self.masks = masks
        self.spurious = spurious
        self.attributes = attributes
        self.class_names = class_names
        self.group_names = group_names
        self.name = name
        self.missing_masks = missing_masks

    def require_masks(self):
        """``self.masks``, or a ``ValueError`` saying why this dataset has none and how to get them."""
        if self.masks is None:
            raise ValueError(f"{self.name} has no foreground masks, which this code needs. "
                             + (self.missing_masks or "Pass masks= (N, 1, H, W) to the dataset."))
        return self.masks

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        sample = {"image": self.images[index], "label": self.labels[index], "group": self.groups[index],
                  "index": index}
        if self.masks is not None:
            sample["mask"] = self.masks[index]
        if self.spurious is not None:
            sample["spurious"] = self.spurious[index]
        return sample

    def _indices(self, indices, name: str = "indices") -> torch.Tensor:
        """Integer indices in [-N, N) or a boolean mask of length N, as a 1-D LongTensor of positions."""
        n = len(self)
        if isinstance(indices, np.ndarray):
            indices = torch.from_numpy(indices)
        elif not isinstance(indices, torch.Tensor):
            try:
                indices = torch.as_tensor(list(indices) if isinstance(indices, range) else indices)
            except (TypeError, ValueError, RuntimeError) as err:
                raise TypeError(f"{name} must be integer indices or a boolean mask, got "
                                f"{type(indices).__name__}") from err
        if indices.numel() == 0:
            return torch.zeros(0, dtype=torch.long)
        if indices.dtype == torch.bool:
            if tuple(indices.shape) != (n,):
                raise ValueError(f"{name} as a boolean mask must have shape ({n},), one entry per sample, got "
                                 f"{tuple(indices.shape)}")
            return torch.nonzero(indices).reshape(-1)
        if indices.is_floating_point() or indices.is_complex():
            raise TypeError(f"{name} must hold integer indices, got dtype {indices.dtype}; use {name}.long()")
        idx = indices.long().reshape(-1)
        if int(idx.min()) < -n or int(idx.max()) >= n:
            raise ValueError(f"{name} must lie in [-{n}, {n}) for a dataset of {n} samples, got values in "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        return idx

    def subset(self, indices) -> SampleDataset:
        """A new dataset holding the samples at ``indices`` (integer positions or a boolean mask of length N;
        group names kept)."""
        idx = self._indices(indices)
        images = self.images[idx] if isinstance(self.images, torch.Tensor) else self.images.select(idx.tolist())
        masks = self.masks
        if masks is not None:
            masks = masks.select(idx.tolist()) if isinstance(masks, LazyImages) else masks[idx]
        return SampleDataset(images, self.labels[idx], self.groups[idx], class_names=self.class_names,
                             group_names=self.group_names, masks=masks,
                             spurious=None if self.spurious is None else self.spurious[idx],
                             attributes={k: v[idx] for k, v in self.attributes.items()}, name=self.name,
                             missing_masks=self.missing_masks)

    def group_counts(self) -> torch.Tensor:
        """Number of samples per group id."""
        return torch.bincount(self.groups, minlength=self.n_groups)

    def fingerprint(self) -> str:
        """A digest of the dataset's *full* content (used to key training checkpoints).

        Every image, label, group, mask, spurious attribute and extra attribute counts (no sampling); lazily
        loaded images count by their paths and size.
        """
        images = self.images if isinstance(self.images, torch.Tensor) else self.images.describe()
        masks = self.masks.describe() if isinstance(self.masks, LazyImages) else self.masks
        return content_digest(images, self.labels, self.groups, masks, self.spurious, self.attributes)

    def __repr__(self) -> str:
        shape = tuple(self.images.shape[1:])
        counts = ", ".join(f"{n}: {int(c)}" for n, c in zip(self.group_names, self.group_counts(), strict=True))
        return f"SampleDataset({self.name!r}, n={len(self)}, image={shape}, groups={{{counts}}})"

    def show(self, n: int = 16, *, indices=None, ncols: int = 8, title: str | None = None):
        """Draw a labelled grid of ``n`` samples (one per group first, then the rest in order)."""
        from ..viz import image_grid

        check_count(n, "n")
        if indices is None:
            first = [int((self.groups == g).nonzero()[0]) for g in range(self.n_groups)
                     if (self.groups == g).any()]
            rest = [i for i in range(len(self)) if i not in set(first)]
            indices = (first + rest)[:n]
        indices = self._indices(indices).tolist()
        if not indices:
            raise ValueError("indices selects no sample: pass at least one index to show")
        images = self.images[torch.tensor(indices)]
        titles = [self.group_names[int(self.groups[i])] for i in indices]
        return image_grid(images, titles, ncols=ncols, title=title or self.name)
