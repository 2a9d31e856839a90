"""Loaders for the real datasets of the ``colab`` and ``paper`` profiles, behind the same sample dict.

Nothing here downloads: each loader reads the files in their published format from ``root`` and, when
they are missing, raises an error that says where to get them (:func:`xai_robust.data.download` fetches,
verifies and extracts them into that layout). Tests run the loaders on tiny fixture files written in the
same formats.

- Waterbirds (Sagawa et al., 2020): ``metadata.csv`` (img_filename, y, split, place) + image files; the birds'
  masks from CUB-200-2011's ``segmentations/`` when present.
- CelebA (Liu et al., 2015): ``list_attr_celeba.txt``/``.csv``, ``list_eval_partition.txt``/``.csv``,
  ``img_align_celeba/``; label = Blond_Hair, spurious = Male (the group-robustness benchmark).
- MNIST (IDX files), CIFAR-10 (python pickle batches), STL-10 (binary ``*_X.bin``/``*_y.bin``).
"""
from __future__ import annotations

import csv
import gzip
import pickle
from pathlib import Path

import numpy as np
import torch

from .base import LazyImages, SampleDataset

__all__ = ["waterbirds", "celeba", "mnist", "mnist_arrays", "cifar10", "stl10", "DatasetNotFoundError"]

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


class DatasetNotFoundError(FileNotFoundError):
    """A real dataset's files are not where the loader looked."""


def _require(path: Path, name: str, where: str) -> Path:
    if not path.exists():
        key = name.lower().replace("-", "")
        raise DatasetNotFoundError(f"{name}: {path} not found. {where} Pass root=<folder> to "
                                   f"xai_robust.data.load(..., root=...) once the files are there, or fetch them "
                                   f"with xai_robust.data.download({key!r}, root={str(path.parent)!r}).")
    return path


def _check_split(split):
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)}, got {split!r}")


_CUB_SEGMENTATIONS = ("CUB-200-2011's segmentations.tgz (https://www.vision.caltech.edu/datasets/cub_200_2011/, "
                      "'Segmentations') holds them: extract its folder segmentations/ (one PNG per bird image, "
                      "<class folder>/<image>.png) into the Waterbirds folder, or pass segmentations=<that folder>.")


def waterbirds(split: str, *, root, size: int = 224, segmentations=None) -> SampleDataset:
    """Waterbirds from its ``metadata.csv`` (columns img_filename, y, split, place; split 0/1/2 = train/val/test).

    Groups = y × place: landbird on land, landbird on water, waterbird on land, waterbird on water.

    Parameters
    ----------
    split : {'train', 'val', 'test', 'test_fg_only'}
        'test_fg_only': the test images with the background set to black by the bird's mask (ExMap Table 4);
        it needs the segmentations.
    root : str or Path
        The folder holding ``metadata.csv`` and the bird folders.
    size : int
        Image side after resizing the shorter side and centre-cropping.
    segmentations : str or Path, optional
        CUB-200-2011's ``segmentations`` folder (``<class folder>/<image>.png``, the birds' foreground masks);
        default ``root/segmentations`` when it exists. With it the dataset has ``masks`` (read lazily, foreground
        where the PNG is at least half white); without it ``masks`` is None and
        :meth:`SampleDataset.require_masks` says how to get them.
    """
    fg_only = split == "test_fg_only"
    _check_split("test" if fg_only else split)
    root = Path(root)
    meta = _require(root / "metadata.csv", "Waterbirds",
                    "Download waterbird_complete95_forest2water2.tar.gz (the Group DRO release by Sagawa et al.) "
                    "and extract it;")
    code = _SPLIT_CODES["test" if fg_only else split]
    rows = [r for r in csv.DictReader(meta.open()) if int(r["split"]) == code]
    if not rows:
        raise ValueError(f"Waterbirds metadata at {meta} has no rows for split {split!r}")
    y = torch.tensor([int(r["y"]) for r in rows])
    place = torch.tensor([int(r["place"]) for r in rows])
    seg = Path(segmentations) if segmentations is not None else root / "segmentations"
    masks, missing = None, f"Waterbirds has none of its own; {_CUB_SEGMENTATIONS}"
    if segmentations is not None or seg.is_dir():
        mask_paths = [seg / Path(r["img_filename"]).with_suffix(".png") for r in rows]
        absent = [p for p in mask_paths if not p.is_file()]
        if absent:
            raise DatasetNotFoundError(f"Waterbirds: {len(absent)} of the {len(rows)} {split} masks are missing from "
                                       f"{seg} (e.g. {absent[0]}). {_CUB_SEGMENTATIONS}")
        masks = LazyImages(mask_paths, size, kind="mask")
    elif fg_only:
        raise DatasetNotFoundError(f"Waterbirds: split 'test_fg_only' needs the birds' masks, not found at {seg}. "
                                   f"{_CUB_SEGMENTATIONS}")
    images = LazyImages([root / r["img_filename"] for r in rows], size,
                        mask_paths=masks.paths if fg_only else None)
    names = [f"{c} on {b}" for c in ("landbird", "waterbird") for b in ("land", "water")]
    return SampleDataset(images, y, y * 2 + place, class_names=["landbird", "waterbird"], group_names=names,
                         spurious=place, attributes={"background": place}, masks=masks, missing_masks=missing,
                         name=f"Waterbirds ({split})")


def _read_table(path_txt: Path, path_csv: Path):
    """Rows of a CelebA table, from the official .txt or the common .csv format, as dicts."""
    if path_csv.exists():
        return list(csv.DictReader(path_csv.open()))
    lines = path_txt.read_text().splitlines()
    if path_txt.name.startswith("list_attr"):
        header = lines[1].split()
        return [dict(zip(["image_id"] + header, line.split(), strict=True)) for line in lines[2:] if line.strip()]
    return [dict(zip(["image_id", "partition"], line.split(), strict=True)) for line in lines if line.strip()]


def celeba(split: str, *, root, size: int = 224, target: str = "Blond_Hair", attribute: str = "Male") -> SampleDataset:
    """CelebA with label = ``target`` and spurious attribute = ``attribute`` (Blond_Hair × Male by default)."""
    _check_split(split)
    root = Path(root)
    where = "Download CelebA (img_align_celeba, list_attr_celeba, list_eval_partition) from its official page;"
    attr_txt, attr_csv = root / "list_attr_celeba.txt", root / "list_attr_celeba.csv"
    part_txt, part_csv = root / "list_eval_partition.txt", root / "list_eval_partition.csv"
    _require(attr_csv if attr_csv.exists() else attr_txt, "CelebA", where)
    _require(part_csv if part_csv.exists() else part_txt, "CelebA", where)
    attrs = {r["image_id"]: r for r in _read_table(attr_txt, attr_csv)}
    parts = _read_table(part_txt, part_csv)
    ids = [r["image_id"] for r in parts if int(r["partition"]) == _SPLIT_CODES[split]]
    for key in (target, attribute):
        if ids and key not in attrs[ids[0]]:
            raise ValueError(f"CelebA has no attribute {key!r}")
    y = torch.tensor([int(int(attrs[i][target]) > 0) for i in ids])
    a = torch.tensor([int(int(attrs[i][attribute]) > 0) for i in ids])
    images = LazyImages([root / "img_align_celeba" / i for i in ids], size)
    names = [f"{t} / {s}" for t in (f"not {target}", target) for s in (f"not {attribute}", attribute)]
    return SampleDataset(images, y, y * 2 + a, class_names=[f"not {target}", target], group_names=names,
                         spurious=a, name=f"CelebA ({split})")


def _open(path: Path):
    gz = path.with_name(path.name + ".gz")
    if path.exists():
        return path.open("rb")
    if gz.exists():
        return gzip.open(gz, "rb")
    raise DatasetNotFoundError(f"MNIST: {path} not found. Download the four MNIST IDX files "
                               "(train-images-idx3-ubyte, ...) into root, or root/MNIST/raw as torchvision does; "
                               f"xai_robust.data.download('mnist', root={str(path.parent)!r}) fetches them.")


def _idx(path: Path) -> np.ndarray:
    with _open(path) as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _mnist_root(root) -> Path:
    root = Path(root)
    return root / "MNIST" / "raw" if (root / "MNIST" / "raw").exists() else root


def mnist_arrays(split: str, *, root) -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST digits of ``split`` as read from the IDX files, before any processing.

    'train' = the first 50,000 training images, 'val' = the last 10,000 (for fewer than 10,000 training images,
    as in a test fixture: the first 5/6 and the rest), 'test' = the 10,000 t10k images.

    Parameters
    ----------
    split : {'train', 'val', 'test'}
    root : str or Path
        The folder with the four IDX files (raw or ``.gz``), or its parent when they sit in ``MNIST/raw``.

    Returns
    -------
    images : Tensor[N, 28, 28]
        Pixels in [0, 1] (the stored bytes / 255).
    digits : LongTensor[N]
    """
    _check_split(split)
    root = _mnist_root(root)
    prefix = "t10k" if split == "test" else "train"
    x = torch.from_numpy(_idx(root / f"{prefix}-images-idx3-ubyte").copy()).float() / 255
    y = torch.from_numpy(_idx(root / f"{prefix}-labels-idx1-ubyte").astype(np.int64))
    if len(x) != len(y):
        raise ValueError(f"MNIST at {root}: {len(x)} {prefix} images but {len(y)} labels; the files are from "
                         "different releases or truncated — download them again")
    if split != "test":
        cut = max(1, len(y) - 10000) if len(y) > 10000 else len(y) * 5 // 6
        sl = slice(0, cut) if split == "train" else slice(cut, None)
        x, y = x[sl], y[sl]
    return x, y


def mnist(split: str, *, root, size: int = 28) -> SampleDataset:
    """MNIST from its IDX files (``root`` or ``root/MNIST/raw``); 'val' = the last 10,000 training images."""
    x, y = mnist_arrays(split, root=root)
    x = x[:, None]
    if size != 28:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return SampleDataset(x, y, y.clone(), class_names=[str(d) for d in range(10)],
                         group_names=[f"digit {d}" for d in range(10)], name=f"MNIST ({split})")


def cifar10(split: str, *, root) -> SampleDataset:
    """CIFAR-10 from the python pickle batches (``root/cifar-10-batches-py`` or ``root``); 'val' = data_batch_5."""
    _check_split(split)
    root = Path(root)
    if (root / "cifar-10-batches-py").exists():
        root = root / "cifar-10-batches-py"
    files = {"train": [f"data_batch_{i}" for i in range(1, 5)], "val": ["data_batch_5"], "test": ["test_batch"]}[split]
    xs, ys = [], []
    for name in files:
        path = _require(root / name, "CIFAR-10", "Download cifar-10-python.tar.gz from the CIFAR page and extract it;")
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    meta_path = root / "batches.meta"
    names = [f"class {i}" for i in range(10)]
    if meta_path.exists():
        with meta_path.open("rb") as f:
            names = [n.decode() for n in pickle.load(f, encoding="bytes")[b"label_names"]]
    x = torch.from_numpy(np.concatenate(xs)).float() / 255
    y = torch.from_numpy(np.concatenate(ys))
    return SampleDataset(x, y, y.clone(), class_names=names, group_names=names, name=f"CIFAR-10 ({split})")


def stl10(split: str, *, root) -> SampleDataset:
    """STL-10 from its binary files (``root/stl10_binary``): 'train' = train_X.bin, 'val'/'test' halves of test."""
    _check_split(split)
    root = Path(root)
    if (root / "stl10_binary").exists():
        root = root / "stl10_binary"
    stem = "train" if split == "train" else "test"
    where = "Download stl10_binary.tar.gz from the STL-10 page and extract it;"
    x = np.fromfile(_require(root / f"{stem}_X.bin", "STL-10", where), dtype=np.uint8).reshape(-1, 3, 96, 96)
    x = torch.from_numpy(x.transpose(0, 1, 3, 2).copy()).float() / 255  # stored column-major
    y = torch.from_numpy(np.fromfile(_require(root / f"{stem}_y.bin", "STL-10", where), dtype=np.uint8)
                         .astype(np.int64) - 1)
    if split != "train":
        half = len(y) // 2
        sl = slice(0, half) if split == "val" else slice(half, None)
        x, y = x[sl], y[sl]
    names = [f"class {i}" for i in range(10)]
    names_path = root / "class_names.txt"
    if names_path.exists():
        names = names_path.read_text().split()
    return SampleDataset(x, y, y.clone(), class_names=names, group_names=names, name=f"STL-10 ({split})")
