"""Tiny datasets in the real datasets' published formats, and a loopback HTTP server that serves them.

For tests, ``make colab-smoke`` (``tools/colab_smoke.py``), and readers trying the ``colab`` code paths offline:
every writer here produces the files :mod:`xai_robust.data.real` reads and :func:`xai_robust.data.download`
fetches, byte for byte in the same layout, only with a few hundred small images instead of tens of thousands.

- :func:`write_mnist` / :func:`mnist_files`: the four IDX files (raw or ``.gz``), MNIST-like 28×28 digits drawn
  from scikit-learn's bundled 8×8 digits (centred in a 20×20 box, as MNIST centres its digits).
- :func:`write_waterbirds` / :func:`waterbirds_archive`: ``metadata.csv`` and JPEG images in CUB's class folders
  (the Group DRO release, ``waterbird_complete95_forest2water2.tar.gz`` with its top folder).
- :func:`write_cifar10` / :func:`cifar10_archive`: the python pickle batches (``cifar-10-python.tar.gz``).
- :func:`write_stl10` / :func:`stl10_archive`: the column-major binaries (``stl10_binary.tar.gz``).
- :func:`write_celeba` / :func:`celeba_files` / :func:`celeba_archive`: ``img_align_celeba/`` and the attribute
  and partition lists, in the official ``.txt`` format or Kaggle's ``.csv`` zip.
- :func:`write_mirror`: every archive above in one folder, laid out as a mirror, and the mirror table
  (``{name: {"url", "sha256"}}``, what ``$XAI_ROBUST_MIRRORS`` names) that points :func:`xai_robust.data.download`
  at it.
- :func:`serve` / :class:`LoopbackServer`: an HTTP server bound to 127.0.0.1 only, serving a folder and/or
  in-memory files, that records its requests and can cut a transfer short (to test truncation).

The image content is synthetic but not random noise: digits are digits, a Waterbirds image is a bird-like blob
whose shape depends on the class on a background (land or water) given by ``place``, so the chapters' models
have something to learn in a smoke run. Nothing here uses the network.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import http.server
import io
import json
import pickle
import tarfile
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["idx_bytes", "write_idx", "mnist_digits", "write_mnist", "mnist_files", "waterbirds_rows",
           "write_waterbirds", "waterbirds_archive", "write_cifar10", "cifar10_archive", "write_stl10",
           "stl10_archive", "write_celeba", "celeba_files", "celeba_archive", "tar_gz", "zip_bytes", "sha256",
           "write_mirror", "LoopbackServer", "serve", "WATERBIRDS_TOP", "MNIST_FILES"]

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
WATERBIRDS_TOP = "waterbird_complete95_forest2water2"  # the release archive's top folder
_LANDBIRDS = ("029.American_Crow", "094.White_breasted_Nuthatch")
_WATERBIRDS = ("059.California_Gull", "086.Pacific_Loon")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def sha256(blob: bytes) -> str:
    """The SHA-256 of ``blob`` as 64 hex digits (what ``sha256sum`` prints and ``download(sha256=)`` takes)."""
    return hashlib.sha256(blob).hexdigest()


def tar_gz(members: dict) -> bytes:
    """A ``.tar.gz`` archive of ``{member path: bytes}``, as bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buffer.getvalue()


def zip_bytes(members: dict) -> bytes:
    """A ``.zip`` archive of ``{member path: bytes}``, as bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buffer.getvalue()


def _files_to_dict(root: Path, prefix: str = "") -> dict:
    return {prefix + p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write(path: Path, blob: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path


# ---------------------------------------------------------------------------------------------------- MNIST


def idx_bytes(array, *, compress: bool = False) -> bytes:
    """An IDX file (MNIST's format: magic ``0 0 8 ndim``, big-endian dimensions, uint8 data) holding ``array``.

    Parameters
    ----------
    array : array_like of uint8
        Images ``(N, 28, 28)`` or labels ``(N,)``.
    compress : bool
        Gzip the file (the published files are ``.gz``).
    """
    array = np.asarray(array, dtype=np.uint8)
    blob = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
    return gzip.compress(blob, mtime=0) if compress else blob


def write_idx(path, array, *, compress: bool = False) -> Path:
    """Write ``array`` as an IDX file at ``path`` (``path.gz`` when ``compress``); returns the path written."""
    path = Path(path)
    if compress:
        path = path.with_name(path.name + ".gz")
    return _write(path, idx_bytes(array, compress=compress))


def mnist_digits(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` MNIST-like digits: scikit-learn's 8×8 digits upsampled into a 20×20 box centred in 28×28 (± 2 px).

    Returns
    -------
    images : ndarray of uint8, shape (n, 28, 28)
    labels : ndarray of uint8, shape (n,)
        The digits (0-9).
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.RandomState(seed)
    pick = rng.randint(0, len(digits.target), n)
    small = torch.tensor(digits.images[pick], dtype=torch.float32)[:, None] / 16.0
    big = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)[:, 0].clamp(0, 1).numpy()
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        top, left = 4 + rng.randint(-2, 3), 4 + rng.randint(-2, 3)
        images[i, top:top + 20, left:left + 20] = np.round(255 * big[i])
    return images, digits.target[pick].astype(np.uint8)


def mnist_files(*, n_train: int = 720, n_test: int = 240, train=None, test=None, compress: bool = True,
                seed: int = 0) -> dict:
    """The four MNIST IDX files as ``{file name: bytes}`` (``train-images-idx3-ubyte.gz``, ...).

    Parameters
    ----------
    n_train, n_test : int
        Number of training and t10k digits drawn by :func:`mnist_digits` (the loader's 'train' split is the first
        5/6 of the training images below 10,000 of them, 'val' the rest).
    train, test : (images, labels), optional
        Arrays to write instead (uint8 ``(N, 28, 28)`` and ``(N,)``).
    compress : bool
        ``.gz`` files, as published (the loader reads both).
    seed : int
    """
    train = mnist_digits(n_train, seed=seed) if train is None else train
    test = mnist_digits(n_test, seed=seed + 1) if test is None else test
    suffix = ".gz" if compress else ""
    arrays = dict(zip(MNIST_FILES, (train[0], train[1], test[0], test[1]), strict=True))
    return {f + suffix: idx_bytes(a, compress=compress) for f, a in arrays.items()}


def write_mnist(root, *, raw_layout: bool = False, **kwargs) -> Path:
    """Write the four MNIST IDX files into ``root`` (or ``root/MNIST/raw``, torchvision's layout); returns ``root``.

    Takes the arguments of :func:`mnist_files`.
    """
    root = Path(root)
    folder = root / "MNIST" / "raw" if raw_layout else root
    for name, blob in mnist_files(**kwargs).items():
        _write(folder / name, blob)
    return root


# ----------------------------------------------------------------------------------------------- Waterbirds


def _bird(y: int, place: int, size: tuple[int, int], rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 image (H, W, 3) of a bird-like blob (class ``y``) on land or water (``place``), and its mask."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if place == 1:  # water: blue with ripples
        base = np.stack([0.1 + 0.05 * np.sin(yy / 2.0), 0.3 + 0.1 * np.sin(yy / 3.0 + xx / 9.0),
                         0.8 + 0.1 * np.sin(yy / 2.5)], -1)
    else:  # land: green-brown with speckles
        base = np.stack([0.35 + 0.1 * rng.rand(h, w), 0.5 + 0.15 * rng.rand(h, w), 0.15 + 0.05 * rng.rand(h, w)], -1)
    cy, cx = h * (0.5 + 0.1 * rng.uniform(-1, 1)), w * (0.5 + 0.1 * rng.uniform(-1, 1))
    ry, rx = h * rng.uniform(0.18, 0.26), w * rng.uniform(0.18, 0.26)
    if y == 1:  # waterbird: a wide, flat, light body
        mask = ((yy - cy) / (0.7 * ry)) ** 2 + ((xx - cx) / (1.3 * rx)) ** 2 <= 1
        colour = np.array([0.92, 0.92, 0.88])
    else:  # landbird: a round, dark body with a head
        mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1) | \
               (((yy - cy + ry) / (0.45 * ry)) ** 2 + ((xx - cx - 0.6 * rx) / (0.45 * rx)) ** 2 <= 1)
        colour = np.array([0.45, 0.25, 0.1])
    image = np.where(mask[..., None], colour * (0.85 + 0.15 * rng.rand(h, w, 1)), base)
    return np.round(255 * image.clip(0, 1)).astype(np.uint8), mask


def waterbirds_rows(counts=(240, 80, 120), *, correlation: float = 0.95, seed: int = 0) -> list[tuple[int, int, int]]:
    """Rows ``(y, split, place)`` as Waterbirds draws them: ``place`` agrees with ``y`` with probability
    ``correlation`` in train, and is balanced within each class in val and test.

    Parameters
    ----------
    counts : (int, int, int)
        Images in train, val and test.
    correlation : float
    seed : int
    """
    rng = np.random.RandomState(seed)
    rows = []
    for split, n in enumerate(counts):
        y = np.arange(n) % 2
        if split == 0:
            place = np.where(rng.rand(n) < correlation, y, 1 - y)
        else:
            place = (np.arange(n) // 2) % 2
        rows += [(int(a), split, int(b)) for a, b in zip(y, place, strict=True)]
    return rows


def write_waterbirds(root, *, rows=None, counts=(240, 80, 120), size=(64, 64), segmentations: bool = False,
                     seed: int = 0) -> Path:
    """Write a Waterbirds folder: ``metadata.csv`` (img_id, img_filename, y, split, place, place_filename) and
    one JPEG per row in a CUB class folder (``029.American_Crow/...``); returns ``root``.

    Parameters
    ----------
    root : str or Path
        The folder (``data.load("waterbirds", split, root=root)`` reads it).
    rows : list of (y, split, place), optional
        The images to write (split 0/1/2 = train/val/test); default :func:`waterbirds_rows` of ``counts``.
    counts : (int, int, int)
        Images per split when ``rows`` is not given.
    size : (int, int)
        Image width and height in pixels (the loader resizes and centre-crops).
    segmentations : bool
        Also write CUB's foreground masks, ``segmentations/<class folder>/<image>.png`` (0 = background,
        255 = bird), as in CUB-200-2011's ``segmentations.tgz``.
    seed : int
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.RandomState(seed)
    rows = waterbirds_rows(counts, seed=seed) if rows is None else rows
    lines = [["img_id", "img_filename", "y", "split", "place", "place_filename"]]
    for i, (y, split, place) in enumerate(rows):
        folder = (_WATERBIRDS if y else _LANDBIRDS)[i % 2]
        filename = f"{folder}/{folder.split('.', 1)[1]}_{i + 1:04d}.jpg"
        image, mask = _bird(int(y), int(place), tuple(size), rng)
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / filename, format="JPEG", quality=90)
        if segmentations:
            seg = root / "segmentations" / Path(filename).with_suffix(".png")
            seg.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((255 * mask).astype(np.uint8)).save(seg)
        place_file = f"/{'o/ocean' if place else 'b/bamboo_forest'}/{i + 1:08d}.jpg"
        lines.append([i + 1, filename, int(y), int(split), int(place), place_file])
    root.mkdir(parents=True, exist_ok=True)
    with (root / "metadata.csv").open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(lines)
    return root


def waterbirds_archive(path=None, *, work=None, **kwargs) -> bytes:
    """``waterbird_complete95_forest2water2.tar.gz`` (its top folder holding what :func:`write_waterbirds`
    writes), as bytes; also written to ``path`` when given. ``work``: a scratch folder (default a temporary one)."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=work) as tmp:
        folder = write_waterbirds(Path(tmp) / WATERBIRDS_TOP, **kwargs)
        blob = tar_gz(_files_to_dict(folder, f"{WATERBIRDS_TOP}/"))
    if path is not None:
        _write(Path(path), blob)
    return blob


# ----------------------------------------------------------------------------------------- CIFAR-10, STL-10


def _class_images(labels, side: int, rng: np.random.RandomState) -> np.ndarray:
    """RGB uint8 images (N, 3, side, side): the digit of each label in a class colour on a noisy background."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = np.asarray(labels)
    out = (rng.rand(len(labels), 3, side, side) * 90).astype(np.float32)
    for i, c in enumerate(labels):
        glyph = digits.images[rng.choice(np.nonzero(digits.target == c)[0])] / 16.0
        box = side * 5 // 8
        big = F.interpolate(torch.tensor(glyph, dtype=torch.float32)[None, None], size=(box, box),
                            mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()
        colour = np.array([(c * 97) % 256, (c * 57 + 80) % 256, (c * 151 + 40) % 256], dtype=np.float32)
        top, left = rng.randint(0, side - box + 1, 2)
        patch = out[i, :, top:top + box, left:left + box]
        out[i, :, top:top + box, left:left + box] = patch * (1 - big) + colour[:, None, None] * big
    return out.round().clip(0, 255).astype(np.uint8)


def write_cifar10(root, *, n_per_batch: int = 100, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py``: ``data_batch_1`` … ``data_batch_5``, ``test_batch`` (pickled dicts with
    ``b"data"`` (N, 3072) uint8 rows, R then G then B planes, and ``b"labels"``) and ``batches.meta``; returns
    ``root``. ``n_per_batch`` images per batch (the published batches hold 10,000)."""
    root = Path(root)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.permutation(np.arange(n_per_batch) % 10)
        batch = {b"batch_label": name.encode(), b"labels": [int(c) for c in labels],
                 b"data": _class_images(labels, 32, rng).reshape(n_per_batch, 3072),
                 b"filenames": [f"{names[c]}_{i}.png".encode() for i, c in enumerate(labels)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names],
                                                         b"num_cases_per_batch": n_per_batch, b"num_vis": 3072}))
    return root


def cifar10_archive(path=None, *, work=None, **kwargs) -> bytes:
    """``cifar-10-python.tar.gz`` (top folder ``cifar-10-batches-py``) as bytes, also written to ``path``."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=work) as tmp:
        write_cifar10(tmp, **kwargs)
        blob = tar_gz(_files_to_dict(Path(tmp)))
    if path is not None:
        _write(Path(path), blob)
    return blob


def write_stl10(root, *, n_train: int = 20, n_test: int = 20, seed: int = 0) -> Path:
    """Write ``root/stl10_binary``: ``train_X.bin``/``test_X.bin`` (uint8 images (N, 3, 96, 96) stored
    column-major), ``train_y.bin``/``test_y.bin`` (labels 1-10) and ``class_names.txt``; returns ``root``."""
    root = Path(root)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for stem, n in (("train", n_train), ("test", n_test)):
        labels = rng.permutation(np.arange(n) % 10)
        _class_images(labels, 96, rng).transpose(0, 1, 3, 2).tofile(folder / f"{stem}_X.bin")
        (labels + 1).astype(np.uint8).tofile(folder / f"{stem}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse",
                                                       "monkey", "ship", "truck"]) + "\n")
    return root


def stl10_archive(path=None, *, work=None, **kwargs) -> bytes:
    """``stl10_binary.tar.gz`` (top folder ``stl10_binary``) as bytes, also written to ``path``."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=work) as tmp:
        write_stl10(tmp, **kwargs)
        blob = tar_gz(_files_to_dict(Path(tmp)))
    if path is not None:
        _write(Path(path), blob)
    return blob


# --------------------------------------------------------------------------------------------------- CelebA

_CELEBA_ATTRIBUTES = ("Blond_Hair", "Male", "Smiling")


def _celeba_tables(n: int, partitions, rng, attributes) -> tuple[list, list]:
    ids = [f"{i + 1:06d}.jpg" for i in range(n)]
    parts = list(partitions) if partitions is not None else [0 if i < n * 0.6 else 1 if i < n * 0.8 else 2
                                                             for i in range(n)]
    attrs = [[1 if v else -1 for v in rng.rand(len(attributes)) < 0.5] for _ in ids]
    return list(zip(ids, attrs, strict=True)), list(zip(ids, parts, strict=True))


def celeba_files(*, n: int = 30, partitions=None, attributes=_CELEBA_ATTRIBUTES, values=None, fmt: str = "txt",
                 seed: int = 0) -> dict:
    """CelebA's files as ``{relative path: bytes}``: ``img_align_celeba/000001.jpg`` … (178×218 JPEGs) and the
    attribute and partition lists.

    Parameters
    ----------
    n : int
        Number of images.
    partitions : sequence of int, optional
        Partition (0/1/2 = train/val/test) of each image; default the first 60 % train, the next 20 % val.
    attributes : sequence of str
        Attribute columns (CelebA has 40; the loader needs ``Blond_Hair`` and ``Male`` by default).
    values : sequence of sequence of int, optional
        The ±1 attribute values per image (default random).
    fmt : {'txt', 'csv'}
        The official ``list_attr_celeba.txt`` (a count line, a header line, space-separated rows) and
        ``list_eval_partition.txt``, or Kaggle's ``.csv`` tables.
    seed : int
    """
    from PIL import Image

    if fmt not in ("txt", "csv"):
        raise ValueError(f"fmt must be 'txt' or 'csv', got {fmt!r}")
    rng = np.random.RandomState(seed)
    attrs, parts = _celeba_tables(n, partitions, rng, attributes)
    if values is not None:
        attrs = [(i, list(v)) for (i, _), v in zip(attrs, values, strict=True)]
    files = {}
    for image_id, row in attrs:
        tone = np.array([200, 170, 40] if row[0] > 0 else [60, 40, 30], dtype=np.float32)
        pixels = (tone * (0.8 + 0.2 * rng.rand(218, 178, 1))).clip(0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        files[f"img_align_celeba/{image_id}"] = buffer.getvalue()
    if fmt == "txt":
        files["list_attr_celeba.txt"] = (f"{n}\n{' '.join(attributes)}\n" + "".join(
            f"{i} {' '.join(f'{v:2d}' for v in row)}\n" for i, row in attrs)).encode()
        files["list_eval_partition.txt"] = "".join(f"{i} {p}\n" for i, p in parts).encode()
    else:
        files["list_attr_celeba.csv"] = ("image_id," + ",".join(attributes) + "\n" + "".join(
            f"{i}," + ",".join(str(v) for v in row) + "\n" for i, row in attrs)).encode()
        files["list_eval_partition.csv"] = ("image_id,partition\n" + "".join(f"{i},{p}\n" for i, p in parts)).encode()
    return files


def write_celeba(root, **kwargs) -> Path:
    """Write CelebA's files (:func:`celeba_files`, same arguments) into ``root``; returns ``root``."""
    root = Path(root)
    for name, blob in celeba_files(**kwargs).items():
        _write(root / name, blob)
    return root


def celeba_archive(path=None, *, kaggle: bool = True, **kwargs) -> bytes:
    """One zip of CelebA (what ``download("celeba", url=...)`` takes), as bytes, also written to ``path``.

    ``kaggle=True``: Kaggle's layout — ``.csv`` tables and the images one folder deeper
    (``img_align_celeba/img_align_celeba/*.jpg``); ``False``: the official files side by side. Other arguments
    as :func:`celeba_files`.
    """
    kwargs.setdefault("fmt", "csv" if kaggle else "txt")
    files = celeba_files(**kwargs)
    if kaggle:
        files = {("img_align_celeba/" + k if k.startswith("img_align_celeba/") else k): v for k, v in files.items()}
    blob = zip_bytes(files)
    if path is not None:
        _write(Path(path), blob)
    return blob


# --------------------------------------------------------------------------------------------- the mirror


def write_mirror(folder, *, base_url: str | None = None, datasets=None, table=None, mnist=None, waterbirds=None,
                 cifar10=None, stl10=None, celeba=None) -> dict:
    """Write every dataset's archive into ``folder`` as a mirror, and return the mirror table pointing at it.

    Layout: ``mnist/<the four .gz files>``, ``waterbird_complete95_forest2water2.tar.gz``,
    ``cifar-10-python.tar.gz``, ``stl10_binary.tar.gz``, ``celeba.zip`` (Kaggle's layout). The Waterbirds archive
    also holds CUB's ``segmentations/`` by default (``waterbirds=dict(segmentations=False)`` for the release as
    published), as the folder of a reader who extracted CUB-200-2011's ``segmentations.tgz`` into it.

    Parameters
    ----------
    folder : str or Path
        Where the mirror's files go (created).
    base_url : str, optional
        The URL ``folder`` is served at (e.g. :attr:`LoopbackServer.url`); default ``folder``'s ``file://`` URL.
    datasets : sequence of str, optional
        The datasets to write (default all five).
    table : str or Path, optional
        Also write the table as JSON there (the file ``$XAI_ROBUST_MIRRORS`` names).
    mnist, waterbirds, cifar10, stl10, celeba : dict, optional
        Arguments of :func:`mnist_files`, :func:`write_waterbirds`, :func:`write_cifar10`, :func:`write_stl10`
        and :func:`celeba_archive`.

    Returns
    -------
    dict
        ``{name: {"url": ..., "sha256": ...}}`` — for MNIST the folder URL and a dict of the four files'
        SHA-256s, for the others the archive's URL and SHA-256: what :func:`xai_robust.data.download` reads from
        ``$XAI_ROBUST_MIRRORS``.
    """
    datasets = ("mnist", "waterbirds", "cifar10", "stl10", "celeba") if datasets is None else tuple(datasets)
    unknown = sorted(set(datasets) - {"mnist", "waterbirds", "cifar10", "stl10", "celeba"})
    if unknown:
        raise ValueError(f"unknown datasets {unknown}; the fixtures cover mnist, waterbirds, cifar10, stl10, celeba")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = (base_url if base_url is not None else folder.resolve().as_uri()).rstrip("/") + "/"
    out = {}
    if "mnist" in datasets:
        files = mnist_files(**(mnist or {}))
        for name, blob in files.items():
            _write(folder / "mnist" / name, blob)
        out["mnist"] = {"url": base + "mnist/", "sha256": {k: sha256(v) for k, v in files.items()}}
    waterbirds = {"segmentations": True, **(waterbirds or {})}
    archives = {"waterbirds": (f"{WATERBIRDS_TOP}.tar.gz", waterbirds_archive, waterbirds),
                "cifar10": ("cifar-10-python.tar.gz", cifar10_archive, cifar10),
                "stl10": ("stl10_binary.tar.gz", stl10_archive, stl10),
                "celeba": ("celeba.zip", celeba_archive, celeba)}
    for name, (filename, make, kwargs) in archives.items():
        if name in datasets:
            blob = make(folder / filename, **(kwargs or {}))
            out[name] = {"url": base + filename, "sha256": sha256(blob)}
    if table is not None:
        _write(Path(table), (json.dumps(out, indent=1) + "\n").encode())
    return out


class LoopbackServer:
    """An HTTP server on 127.0.0.1 (a free port) serving a folder and in-memory files, in a daemon thread.

    Parameters
    ----------
    folder : str or Path, optional
        Served at the root: ``GET /a/b.gz`` returns ``folder/a/b.gz`` (paths outside ``folder`` are refused).

    Attributes
    ----------
    url : str
        ``http://127.0.0.1:<port>`` (no trailing slash).
    files : dict
        In-memory files ``{"/path": bytes}``, served before the folder's; a query ``?id=X`` is looked up as
        ``"/path:X"`` (Google Drive's ``download?id=...``).
    pages : dict
        HTML pages ``{"/path" or "/path:id": str}``, each served once (``text/html``), before ``files``.
    truncate : set
        Paths whose body is cut to half of the announced ``Content-Length`` (a truncated transfer).
    requests : list of str
        Every request path received, in order.
    """

    def __init__(self, folder=None):
        self.folder = None if folder is None else Path(folder).resolve()
        self.files, self.pages, self.truncate, self.requests = {}, {}, set(), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                parts = urllib.parse.urlsplit(self.path)
                path = urllib.parse.unquote(parts.path)
                query = dict(urllib.parse.parse_qsl(parts.query))
                key = f"{path}:{query['id']}" if "id" in query else path
                body = server._body(key, path)
                if body is None:
                    self.send_error(404)
                    return
                blob, kind = body
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                self.wfile.write(blob[:len(blob) // 2] if key in server.truncate else blob)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def _body(self, key: str, path: str):
        if key in self.pages:
            return self.pages.pop(key).encode(), "text/html; charset=utf-8"
        if key in self.files:
            return self.files[key], "application/octet-stream"
        if self.folder is not None:
            target = (self.folder / path.lstrip("/")).resolve()
            if target.is_relative_to(self.folder) and target.is_file():
                return target.read_bytes(), "application/octet-stream"
        return None

    def add(self, path: str, body: bytes) -> str:
        """Serve ``body`` at ``path`` (``"/x.tar.gz"``); returns its URL."""
        self.files[path] = body
        return self.url + path

    def close(self) -> None:
        """Stop serving and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def serve(folder=None) -> Iterator[LoopbackServer]:
    """``with serve(folder) as server:`` — a :class:`LoopbackServer` on 127.0.0.1, closed on exit.

    Callers whose environment sets an HTTP proxy should add ``127.0.0.1`` to ``NO_PROXY`` (urllib honours it).
    """
    server = LoopbackServer(folder)
    try:
        yield server
    finally:
        server.close()
