"""Offline digit datasets built from scikit-learn's 1,797 bundled 8×8 digits.

The source digits are split once (fixed permutation) into disjoint train / val / test pools, so no test
digit is ever seen in training whatever the dataset seed; samples are drawn from a pool and rendered
with a random affine jitter, so a few thousand distinct images come from a few hundred digits.

- :func:`colored_digits` — C-MNIST analog (ExMap Sec. 5.1): label = digit > 4, colour aligned with the label.
- :func:`biased_digits` — Faster ISNet's synthetic MNIST (Sec. III-A): a background mark encodes the class.
- :func:`parity_digits` — ParityMNIST analog (FCR Sec. 5.2): label = parity, the digit is a fictitious sub-class.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..checks import check_count, check_number
from .base import SampleDataset, _check_flag, _check_generator_args, _check_n, cached

__all__ = ["colored_digits", "biased_digits", "parity_digits", "digit_pool", "render_digits",
           "mark_position"]

_POOL_FRACTIONS = {"train": (0.0, 0.6), "val": (0.6, 0.8), "test": (0.8, 1.0)}
COLOURS = torch.tensor([[1.0, 0.15, 0.15], [0.15, 1.0, 0.15]])  # red, green
COLOUR_NAMES = ["red", "green"]


def _source_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    return images, torch.tensor(digits.target, dtype=torch.long)


def digit_pool(split: str):
    """The source digits (8×8 images and their digit) reserved for ``split`` ('train', 'val' or 'test')."""
    if split not in _POOL_FRACTIONS:
        raise ValueError(f"split must be one of {sorted(_POOL_FRACTIONS)}, got {split!r}")
    images, digits = _source_digits()
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(20240531))
    lo, hi = _POOL_FRACTIONS[split]
    idx = perm[int(lo * len(perm)):int(hi * len(perm))]
    return images[idx], digits[idx]


def render_digits(pool_images, pool_digits, n, *, size, box, generator, jitter=True):
    """Draw ``n`` digits from a pool and render them as grayscale ``size × size`` images.

    Parameters
    ----------
    pool_images, pool_digits : Tensor
        The 8×8 source images and their digits.
    n : int
        Number of samples.
    size : int
        Output side length.
    box : (top, left, height, width)
        Where the digit is drawn (before jitter).
    generator : torch.Generator
        Randomness source.
    jitter : bool
        Random rotation (±12°), scale (0.9–1.1) and shift (±1 px).

    Returns
    -------
    images : Tensor[n, 1, size, size]
    digits : LongTensor[n]
    """
    pick = torch.randint(0, len(pool_images), (n,), generator=generator)
    top, left, h, w = box
    small = F.interpolate(pool_images[pick][:, None], size=(h, w), mode="bicubic", align_corners=False)
    canvas = torch.zeros(n, 1, size, size)
    canvas[:, :, top:top + h, left:left + w] = small.clamp(0, 1)
    if jitter:
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(12)
        scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
        shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2.0 / size)  # ±1 px in [-1, 1] units
        cy, cx = (top + h / 2) / size * 2 - 1, (left + w / 2) / size * 2 - 1  # box centre, normalised
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin, cos
        # rotate/scale about the box centre, then shift
        theta[:, 0, 2] = cx - cos * cx + sin * cy - shift[:, 0]
        theta[:, 1, 2] = cy - sin * cx - cos * cy - shift[:, 1]
        grid = F.affine_grid(theta, canvas.shape, align_corners=False)
        canvas = F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return canvas.clamp(0, 1), pool_digits[pick]


def _foreground(gray: torch.Tensor) -> torch.Tensor:
    """Foreground mask of a rendered digit: stroke pixels (> 0.1) dilated by one pixel."""
    return F.max_pool2d((gray > 0.1).float(), 3, stride=1, padding=1)


def _split_seed(seed: int, split: str) -> torch.Generator:
    offset = {"train": 1, "val": 2, "test": 3, "iid": 4, "ood": 5, "deceiving": 6}[split]
    return torch.Generator().manual_seed(seed * 1000 + offset)


def colored_digits(split: str, *, n: int | None = None, seed: int = 0, size: int = 28,
                   correlation: float | None = None) -> SampleDataset:
    """Colored digits, the C-MNIST analog (ExMap Sec. 5.1; docs/design.md, "ExMap").

    Label = digit > 4. The digit is drawn in red or green; the colour equals the label with probability
    ``correlation`` (0.99 in train, 0.5 in val/test by default). Groups = label × colour.

    Parameters
    ----------
    split : {'train', 'val', 'test'}
    n : int, optional
        Number of samples (default 3000 train, 1000 val/test).
    seed : int
        Dataset seed.
    size : int
        Image side (digits occupy the central ~70 %).
    correlation : float, optional
        Probability that the colour agrees with the label.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"colored_digits has splits 'train', 'val', 'test', not {split!r}")
    _check_generator_args(seed, size, 1)
    n = _check_n(n, 3000 if split == "train" else 1000)
    correlation = (0.99 if split == "train" else 0.5) if correlation is None else float(
        check_number(correlation, "correlation"))
    if not 0.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must lie in [0, 1], got {correlation}")
    config = dict(name="colored_digits", split=split, n=n, seed=seed, size=size, correlation=correlation)

    def make():
        g = _split_seed(seed, split)
        pool = digit_pool(split)
        m = round(size * 0.7)
        gray, digit = render_digits(*pool, n, size=size, box=((size - m) // 2, (size - m) // 2, m, m), generator=g)
        label = (digit > 4).long()
        agree = torch.rand(n, generator=g) < correlation
        colour = torch.where(agree, label, 1 - label)
        images = gray * COLOURS[colour][:, :, None, None]
        return {"images": images, "labels": label, "colour": colour, "digit": digit, "masks": _foreground(gray)}

    t = cached("datasets", config, make)
    groups = t["labels"] * 2 + t["colour"]
    names = [f"{c} ({col})" for c in ("digit<5", "digit>4") for col in COLOUR_NAMES]
    return SampleDataset(t["images"], t["labels"], groups, class_names=["digit<5", "digit>4"], group_names=names,
                         masks=t["masks"], spurious=t["colour"], attributes={"digit": t["digit"]},
                         name=f"colored digits ({split})")


def mark_position(cls, size: int = 28):
    """Column of the top-left pixel of the 2×2 bias mark that encodes class ``cls`` (biased digits)."""
    return 1 + torch.round(torch.as_tensor(cls, dtype=torch.float32) * (size - 5) / 9).long()


def biased_digits(split: str, *, n: int | None = None, seed: int = 0, size: int = 28,
                  bias: bool = True) -> SampleDataset:
    """Biased digits: Faster ISNet's synthetically biased MNIST (Sec. III-A, Table 1).

    Ten classes (the digit). In 'train', 'val' and 'iid' a white 2×2 mark in the top rows sits at a column
    that encodes the class; 'ood' has no mark; 'deceiving' carries the mark of another (random) class.
    The digit is drawn below row 5, so the mark is always background. ``masks`` = digit foreground.
    ``spurious`` = the class whose mark is shown (-1: no mark). Groups = the class.

    Parameters
    ----------
    split : {'train', 'val', 'iid', 'ood', 'deceiving'}
    n : int, optional
        Number of samples (default 3000 train, 1000 otherwise).
    seed : int
    size : int
        Image side (≥ 20).
    bias : bool
        ``False`` removes the mark everywhere (the paper's reference classifier is trained so).
    """
    splits = ("train", "val", "iid", "ood", "deceiving")
    if split not in splits:
        raise ValueError(f"biased_digits has splits {splits}, not {split!r}")
    check_count(size, "size")
    if size < 20:
        raise ValueError(f"size must be at least 20 pixels, got {size}")
    check_count(seed, "seed", minimum=0)
    bias = _check_flag(bias, "bias")
    n = _check_n(n, 3000 if split == "train" else 1000)
    config = dict(name="biased_digits", split=split, n=n, seed=seed, size=size, bias=bias)

    def make():
        g = _split_seed(seed, split)
        pool = digit_pool({"train": "train", "val": "val"}.get(split, "test"))
        top = 6
        m = size - top - 1
        gray, digit = render_digits(*pool, n, size=size, box=(top, (size - m) // 2, m, m), generator=g)
        gray[:, :, :top - 1] = 0  # jitter never reaches the mark rows
        masks = _foreground(gray)
        if not bias or split == "ood":
            mark = torch.full((n,), -1, dtype=torch.long)
        elif split == "deceiving":
            mark = (digit + torch.randint(1, 10, (n,), generator=g)) % 10  # always another class
        else:
            mark = digit.clone()
        images = gray.clone()
        cols = mark_position(mark.clamp(min=0), size)
        for i in torch.nonzero(mark >= 0).flatten().tolist():
            images[i, 0, 1:3, cols[i]:cols[i] + 2] = 1.0
        return {"images": images, "labels": digit, "mark": mark, "masks": masks}

    t = cached("datasets", config, make)
    names = [str(d) for d in range(10)]
    return SampleDataset(t["images"], t["labels"], t["labels"].clone(), class_names=names,
                         group_names=[f"digit {d}" for d in range(10)], masks=t["masks"], spurious=t["mark"],
                         name=f"biased digits ({split})")


def parity_digits(split: str, *, n: int | None = None, seed: int = 0, size: int = 28) -> SampleDataset:
    """Parity digits, the ParityMNIST analog (FCR Sec. 5.2): label = parity, digit = fictitious sub-class.

    Groups (and ``spurious``) = the digit, so removing "digit 3" is removing a sub-class of "odd".
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"parity_digits has splits 'train', 'val', 'test', not {split!r}")
    _check_generator_args(seed, size, 1)
    n = _check_n(n, 3000 if split == "train" else 1000)
    config = dict(name="parity_digits", split=split, n=n, seed=seed, size=size)

    def make():
        g = _split_seed(seed, split)
        m = round(size * 0.75)
        gray, digit = render_digits(*digit_pool(split), n, size=size,
                                    box=((size - m) // 2, (size - m) // 2, m, m), generator=g)
        return {"images": gray, "digit": digit, "masks": _foreground(gray)}

    t = cached("datasets", config, make)
    digit = t["digit"]
    return SampleDataset(t["images"], digit % 2, digit.clone(), class_names=["even", "odd"],
                         group_names=[f"digit {d} ({'odd' if d % 2 else 'even'})" for d in range(10)],
                         masks=t["masks"], spurious=digit.clone(), name=f"parity digits ({split})")
