"""Digit datasets: offline from scikit-learn's 1,797 bundled 8×8 digits, or from real MNIST as the papers build them.

``source="sklearn"`` (the default, what the ``ci`` profile and the rendered book use): the source digits are
split once (fixed permutation) into disjoint train / val / test pools, so no test digit is ever seen in training
whatever the dataset seed; samples are drawn from a pool and rendered with a random affine jitter, so a few
thousand distinct images come from a few hundred digits.

``source="mnist"`` (what :func:`xai_robust.data.load` uses under the ``colab`` and ``paper`` profiles): the
28×28 MNIST digits themselves, read from the IDX files in ``root`` (:func:`xai_robust.data.real.mnist_arrays`;
train = the first 50,000 training images, val = the last 10,000, test = t10k), without jitter, with the
colour / mark / parity label of the paper. By default every image of the split is used once, in file order;
``n`` draws a seeded subset without replacement. These are built in memory on each call, in seconds (no dataset
cache: it would only copy the IDX files).

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

__all__ = ["colored_digits", "biased_digits", "parity_digits", "digit_pool", "mnist_pool", "render_digits",
           "mark_position", "SOURCES"]

SOURCES = ("sklearn", "mnist")

_POOL_FRACTIONS = {"train": (0.0, 0.6), "val": (0.6, 0.8), "test": (0.8, 1.0)}
COLOURS = torch.tensor([[1.0, 0.15, 0.15], [0.15, 1.0, 0.15]])  # red, green
COLOUR_NAMES = ["red", "green"]
# C-MNIST as ExMap Sec. 5.1 describes it: digits <= 4 are blue, digits > 4 red (colour index = the label it agrees with)
MNIST_COLOURS = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # blue, red
MNIST_COLOUR_NAMES = ["blue", "red"]
MNIST_CLEAR_ROWS = 4  # biased MNIST: rows 0-3 of the digit are cleared so the mark (rows 1-2) is always background


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


def mnist_pool(split: str, *, root=None):
    """The real MNIST digits (28×28 images in [0, 1] and their digit) of ``split`` ('train', 'val' or 'test').

    ``root`` defaults to ``default_root("mnist")`` (where :func:`xai_robust.data.download` puts them).
    """
    from . import default_root
    from .real import mnist_arrays

    if split not in _POOL_FRACTIONS:
        raise ValueError(f"split must be one of {sorted(_POOL_FRACTIONS)}, got {split!r}")
    return mnist_arrays(split, root=default_root("mnist") if root is None else root)


def _check_source(source, root) -> str:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES} (scikit-learn's 8×8 digits offline, or real MNIST read "
                         f"from root=), got {source!r}")
    if source == "sklearn" and root is not None:
        raise ValueError("root= is only read with source='mnist' (the MNIST IDX files); drop root= or pass "
                         "source='mnist'")
    return source


def _mnist_digits(split: str, n: int | None, size: int, root, generator: torch.Generator):
    """MNIST digits of a split as (n, 1, size, size) grayscale images: all of them (file order) or a seeded subset."""
    images, digits = mnist_pool(split, root=root)
    if n is not None:
        n = _check_n(n, len(digits))
        if n > len(digits):
            raise ValueError(f"n={n} exceeds the {len(digits)} MNIST images of split {split!r}; pass n <= "
                             f"{len(digits)}, or n=None for all of them")
        pick = torch.randperm(len(digits), generator=generator)[:n]
        images, digits = images[pick], digits[pick]
    gray = images[:, None]
    if size != gray.shape[-1]:
        gray = F.interpolate(gray, size=(size, size), mode="bilinear", align_corners=False,
                             antialias=size < gray.shape[-1]).clamp(0, 1)
    return gray.contiguous(), digits


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
                   correlation: float | None = None, source: str = "sklearn", root=None) -> SampleDataset:
    """Colored digits, C-MNIST (ExMap Sec. 5.1 "Datasets"; docs/design.md, "ExMap").

    Label = digit > 4. The colour equals the label's colour with probability ``correlation`` (0.99 in train, as
    in ExMap, and 0.5 in val/test by default). Groups = label × colour; ``spurious`` = the colour index (0 = the
    colour of digits < 5, 1 = the colour of digits > 4). ``source="sklearn"``: scikit-learn digits drawn in red
    (digit < 5) or green. ``source="mnist"``: the MNIST digit itself tinted as ExMap Sec. 5.1 describes C-MNIST —
    "any number lesser than or equal to four is assigned blue, while all numbers greater than four are assigned
    the color red, with a correlation of 99%" — so the stroke lives in the blue or the red channel only.

    Parameters
    ----------
    split : {'train', 'val', 'test'}
    n : int, optional
        Number of samples (default 3000 train, 1000 val/test; with ``source="mnist"`` all images of the split,
        and ``n`` a seeded subset of them).
    seed : int
        Dataset seed.
    size : int
        Image side (digits occupy the central ~70 %, as MNIST's 20×20 digit box in 28×28).
    correlation : float, optional
        Probability that the colour agrees with the label.
    source : {'sklearn', 'mnist'}
        Where the digits come from (see the module docstring).
    root : str or Path, optional
        With ``source="mnist"``: the folder with the MNIST IDX files (default ``default_root("mnist")``).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"colored_digits has splits 'train', 'val', 'test', not {split!r}")
    _check_generator_args(seed, size, 1)
    source = _check_source(source, root)
    if source == "sklearn":
        n = _check_n(n, 3000 if split == "train" else 1000)
    correlation = (0.99 if split == "train" else 0.5) if correlation is None else float(
        check_number(correlation, "correlation"))
    if not 0.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must lie in [0, 1], got {correlation}")
    if source == "mnist":
        return _colored_mnist(split, n, seed, size, correlation, root)
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


def _colored_mnist(split, n, seed, size, correlation, root) -> SampleDataset:
    g = _split_seed(seed, split)
    gray, digit = _mnist_digits(split, n, size, root, g)
    label = (digit > 4).long()
    agree = torch.rand(len(digit), generator=g) < correlation
    colour = torch.where(agree, label, 1 - label)
    images = gray * MNIST_COLOURS[colour][:, :, None, None]
    names = [f"{c} ({col})" for c in ("digit<5", "digit>4") for col in MNIST_COLOUR_NAMES]
    return SampleDataset(images, label, label * 2 + colour, class_names=["digit<5", "digit>4"], group_names=names,
                         masks=_foreground(gray), spurious=colour, attributes={"digit": digit},
                         name=f"C-MNIST ({split})")


def mark_position(cls, size: int = 28):
    """Column of the top-left pixel of the 2×2 bias mark that encodes class ``cls`` (biased digits)."""
    return 1 + torch.round(torch.as_tensor(cls, dtype=torch.float32) * (size - 5) / 9).long()


def biased_digits(split: str, *, n: int | None = None, seed: int = 0, size: int = 28,
                  bias: bool = True, source: str = "sklearn", root=None) -> SampleDataset:
    """Biased digits: Faster ISNet's synthetically biased MNIST (Sec. III-A, Table 1, Fig. 2).

    Ten classes (the digit). In 'train', 'val' and 'iid' a white 2×2 mark in the top rows sits at a column
    that encodes the class — the paper's "white background pixels whose positions correlate to the image
    classes" in "the images' upper region"; 'ood' has no mark; 'deceiving' carries the mark of another (random)
    class ("a bias that was correlated to MNIST digit 3 during training ... associate[d] to digit 4"). The mark
    is always background: the sklearn digit is drawn below row 5; an MNIST digit has its rows 0–3 cleared
    (MNIST centres a 20×20 digit box in 28×28, so those rows rarely hold ink). ``masks`` = digit foreground.
    ``spurious`` = the class whose mark is shown (-1: no mark). Groups = the class.

    With ``source="mnist"`` the three test versions are the paper's: 'iid', 'ood' and 'deceiving' hold the same
    MNIST test images (the same subset for the same ``seed`` and ``n``), with the training bias, no bias, and a
    deceiving bias.

    Parameters
    ----------
    split : {'train', 'val', 'iid', 'ood', 'deceiving'}
    n : int, optional
        Number of samples (default 3000 train, 1000 otherwise; with ``source="mnist"`` all images of the split,
        and ``n`` a seeded subset of them).
    seed : int
    size : int
        Image side (≥ 20).
    bias : bool
        ``False`` removes the mark everywhere (the paper's reference classifier is trained so).
    source : {'sklearn', 'mnist'}
        Where the digits come from (see the module docstring).
    root : str or Path, optional
        With ``source="mnist"``: the folder with the MNIST IDX files (default ``default_root("mnist")``).
    """
    splits = ("train", "val", "iid", "ood", "deceiving")
    if split not in splits:
        raise ValueError(f"biased_digits has splits {splits}, not {split!r}")
    check_count(size, "size")
    if size < 20:
        raise ValueError(f"size must be at least 20 pixels, got {size}")
    check_count(seed, "seed", minimum=0)
    bias = _check_flag(bias, "bias")
    if _check_source(source, root) == "mnist":
        return _biased_mnist(split, n, seed, size, bias, root)
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


def _biased_mnist(split, n, seed, size, bias, root) -> SampleDataset:
    test_version = split in ("iid", "ood", "deceiving")
    # the three test versions share their images: the subset is drawn from the same generator for all three
    gray, digit = _mnist_digits("test" if test_version else split, n, size, root,
                                _split_seed(seed, "test" if test_version else split))
    gray[:, :, :MNIST_CLEAR_ROWS] = 0
    masks = _foreground(gray)
    if not bias or split == "ood":
        mark = torch.full_like(digit, -1)
    elif split == "deceiving":
        mark = (digit + torch.randint(1, 10, digit.shape, generator=_split_seed(seed, split))) % 10
    else:
        mark = digit.clone()
    cols = mark_position(mark.clamp(min=0), size)
    columns = torch.arange(size)
    on = (columns >= cols[:, None]) & (columns < cols[:, None] + 2) & (mark >= 0)[:, None]  # (n, size)
    images = gray.clone()
    images[:, 0, 1:3] = torch.where(on[:, None, :], torch.ones(()), images[:, 0, 1:3])
    names = [str(d) for d in range(10)]
    return SampleDataset(images, digit, digit.clone(), class_names=names,
                         group_names=[f"digit {d}" for d in range(10)], masks=masks, spurious=mark,
                         name=f"biased MNIST ({split})")


def parity_digits(split: str, *, n: int | None = None, seed: int = 0, size: int = 28, source: str = "sklearn",
                  root=None) -> SampleDataset:
    """Parity digits, ParityMNIST (FCR Sec. 5.2, after Mahinpei et al., 2021): label = parity, digit = sub-class.

    'Class 0' holds the even digits, 'Class 1' the odd ones; the digit is the fictitious sub-class. Groups (and
    ``spurious``) = the digit, so removing "digit 3" is removing a sub-class of "odd". ``source="mnist"``: the
    grayscale MNIST digits as they are.

    Parameters
    ----------
    split : {'train', 'val', 'test'}
    n : int, optional
        Number of samples (default 3000 train, 1000 val/test; with ``source="mnist"`` all images of the split,
        and ``n`` a seeded subset of them).
    seed : int
    size : int
        Image side.
    source : {'sklearn', 'mnist'}
        Where the digits come from (see the module docstring).
    root : str or Path, optional
        With ``source="mnist"``: the folder with the MNIST IDX files (default ``default_root("mnist")``).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"parity_digits has splits 'train', 'val', 'test', not {split!r}")
    _check_generator_args(seed, size, 1)
    if _check_source(source, root) == "mnist":
        gray, digit = _mnist_digits(split, n, size, root, _split_seed(seed, split))
        return _parity_dataset(gray, digit, _foreground(gray), f"ParityMNIST ({split})")
    n = _check_n(n, 3000 if split == "train" else 1000)
    config = dict(name="parity_digits", split=split, n=n, seed=seed, size=size)

    def make():
        g = _split_seed(seed, split)
        m = round(size * 0.75)
        gray, digit = render_digits(*digit_pool(split), n, size=size,
                                    box=((size - m) // 2, (size - m) // 2, m, m), generator=g)
        return {"images": gray, "digit": digit, "masks": _foreground(gray)}

    t = cached("datasets", config, make)
    return _parity_dataset(t["images"], t["digit"], t["masks"], f"parity digits ({split})")


def _parity_dataset(images, digit, masks, name) -> SampleDataset:
    return SampleDataset(images, digit % 2, digit.clone(), class_names=["even", "odd"],
                         group_names=[f"digit {d} ({'odd' if d % 2 else 'even'})" for d in range(10)],
                         masks=masks, spurious=digit.clone(), name=name)
