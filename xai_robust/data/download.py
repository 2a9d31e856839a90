"""Fetch a real dataset into the folder :func:`xai_robust.data.load` reads, verified and extracted atomically.

:func:`download` knows where each real dataset of the ``colab`` and ``paper`` profiles is published, checks the
bytes it receives, and builds the dataset in a temporary folder next to the destination that it renames into
place only when everything is there: an interrupted or corrupt download never leaves a half dataset that
:func:`xai_robust.data.load` would accept.

- ``mnist``: the four IDX ``.gz`` files (torchvision's two mirrors, tried in turn);
- ``cifar10``: ``cifar-10-python.tar.gz`` (Krizhevsky's page);
- ``stl10``: ``stl10_binary.tar.gz`` (Coates' page);
- ``waterbirds``: ``waterbird_complete95_forest2water2.tar.gz`` (the Group DRO release of Sagawa et al., 2020);
- ``celeba``: ``img_align_celeba.zip``, ``list_attr_celeba.txt`` and ``list_eval_partition.txt`` (the Google
  Drive files torchvision lists), or one archive of them given by ``url=`` (such as Kaggle's).

No SHA-256 of these files is published by their authors or known to this package, so none is built in (none
is made up either): by default the check uses the MD5 that torchvision 0.29 publishes for the same file, and
Waterbirds, for which no checksum is published at all, needs ``sha256=`` (or the explicit opt-out
``sha256="unverified"``, which warns and reports the SHA-256 received so it can be pinned next time).

A mirror table replaces the published locations without changing any call: ``$XAI_ROBUST_MIRRORS`` names a JSON
file ``{name: {"url": ..., "sha256": ...}}`` (a lab's local mirror, or ``make colab-smoke``'s loopback server),
read by :func:`download` whenever ``url=`` is not given (:func:`mirror_table`).
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["download", "DownloadError", "DATASETS", "UNVERIFIED", "MIRRORS_ENV", "mirror_table"]

MIRRORS_ENV = "XAI_ROBUST_MIRRORS"  # path of a JSON mirror table {name: {"url": ..., "sha256": ...}}
UNVERIFIED = "unverified"  # sha256= value that downloads without any checksum (a warning reports the SHA-256)
_CHUNK = 1 << 20
_TIMEOUT_S = 60
# Google Drive's direct-download endpoint (the one gdown uses); confirm=t skips the "can't scan for viruses" page
_GDRIVE = "https://drive.usercontent.google.com/download"


class DownloadError(OSError):
    """A download failed: no network, an HTTP error, a truncated transfer or a checksum mismatch."""


@dataclass(frozen=True)
class _File:
    name: str                       # the file name saved
    urls: tuple[str, ...] = ()      # mirrors, tried in turn
    md5: str | None = None          # as torchvision 0.29 publishes it
    sha256: str | None = None       # a published SHA-256; None: none is known to this package
    extract: bool = False           # an archive to extract (tar, tar.gz or zip)
    gdrive: str | None = None       # a Google Drive file id (instead of urls)


@dataclass(frozen=True)
class _Spec:
    files: tuple[_File, ...]
    present: Callable[[Path], bool]  # are the files the loader reads in this folder?
    by_hand: str                     # how to get the files without this function
    url_is: str = "archive"          # what url= names: "archive" (one archive) or "folder" (a mirror folder)


def _sub(root: Path, name: str) -> Path:
    return root / name if (root / name).is_dir() else root


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")


def _mnist_present(root: Path) -> bool:
    base = root / "MNIST" / "raw" if (root / "MNIST" / "raw").exists() else root  # as real.mnist looks
    return all((base / f).is_file() or (base / f"{f}.gz").is_file() for f in _MNIST_FILES)


def _cifar_present(root: Path) -> bool:
    base = _sub(root, "cifar-10-batches-py")
    return all((base / f).is_file() for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])


def _stl_present(root: Path) -> bool:
    base = _sub(root, "stl10_binary")
    return all((base / f"{s}_{k}.bin").is_file() for s in ("train", "test") for k in ("X", "y"))


def _waterbirds_present(root: Path) -> bool:
    return (root / "metadata.csv").is_file()


def _celeba_present(root: Path) -> bool:
    def table(stem):
        return (root / f"{stem}.txt").is_file() or (root / f"{stem}.csv").is_file()

    return table("list_attr_celeba") and table("list_eval_partition") and (root / "img_align_celeba").is_dir()


_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_MNIST_MD5 = {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
              "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
              "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
              "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}
_WATERBIRDS_URL = "https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz"

DATASETS: dict[str, _Spec] = {
    "mnist": _Spec(
        files=tuple(_File(f, tuple(m + f for m in _MNIST_MIRRORS), md5=md5) for f, md5 in _MNIST_MD5.items()),
        present=_mnist_present, url_is="folder",
        by_hand="download the four MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from {_MNIST_MIRRORS[0]} into"),
    "cifar10": _Spec(
        files=(_File("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                     md5="c58f30108f718f92721af3b95e74349a", extract=True),),
        present=_cifar_present,
        by_hand="download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it (the folder "
                "cifar-10-batches-py) into"),
    "stl10": _Spec(
        files=(_File("stl10_binary.tar.gz", ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",),
                     md5="91f7769df0f17e558f3565bffb0c7dfb", extract=True),),
        present=_stl_present,
        by_hand="download http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz and extract it (the folder "
                "stl10_binary) into"),
    "waterbirds": _Spec(
        files=(_File("waterbird_complete95_forest2water2.tar.gz", (_WATERBIRDS_URL,), extract=True),),
        present=_waterbirds_present,
        by_hand=f"download {_WATERBIRDS_URL} (the Group DRO release of Sagawa et al., 2020), extract it and move "
                "the contents of its folder waterbird_complete95_forest2water2 (metadata.csv and the 200 bird "
                "folders) into"),
    "celeba": _Spec(
        files=(_File("img_align_celeba.zip", gdrive="0B7EVK8r0v71pZjFTYXZWM3FlRnM",
                     md5="00d2c5bc6d35e252742224ab0c1e8fcb", extract=True),
               _File("list_attr_celeba.txt", gdrive="0B7EVK8r0v71pblRyaVFSWGxPY0U",
                     md5="75e246fa4810816ffd6ee81facbd244c"),
               _File("list_eval_partition.txt", gdrive="0B7EVK8r0v71pY0NSMzRuSXJEVkk",
                     md5="d32c9cbf5e040fd4025c592c306e6668")),
        present=_celeba_present,
        by_hand="download img_align_celeba.zip, list_attr_celeba.txt and list_eval_partition.txt from the CelebA "
                "page (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, 'Align&Cropped Images' and 'Anno'; "
                "Google Drive) and extract the zip (the folder img_align_celeba) into"),
}
_DIGITS = ("colored_digits", "biased_digits", "parity_digits")


def _check_hex(value, name: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError(f"{name} must be a SHA-256 as 64 hexadecimal digits (what `sha256sum FILE` prints), or "
                         f"{UNVERIFIED!r} to skip the check; got {value!r}")
    return value.lower()


def _expected(name: str, files: tuple[_File, ...], sha256) -> dict[str, tuple[str, str] | None | bool]:
    """The checksum each file must have: ``{file name: (algorithm, hex digest), None (unverified) or False (none
    known: the caller raises, once it knows the dataset is not already in place)}``."""
    if isinstance(sha256, str) and sha256 == UNVERIFIED:
        return {f.name: None for f in files}
    if isinstance(sha256, dict):
        if len(files) == 1:
            raise ValueError(f"sha256 for {name!r} must be one SHA-256 string (the archive's), not a dict")
        unknown = sorted(set(sha256) - {f.name for f in files})
        if unknown:
            raise ValueError(f"sha256 names files {unknown} that {name!r} does not download; its files are "
                             f"{[f.name for f in files]}")
        given = {k: _check_hex(v, f"sha256[{k!r}]") for k, v in sha256.items()}
    elif sha256 is not None:
        if len(files) != 1:
            raise ValueError(f"{name!r} downloads {len(files)} files: pass sha256 as a dict {{file name: SHA-256}} "
                             f"over {[f.name for f in files]}, or {UNVERIFIED!r}")
        given = {files[0].name: _check_hex(sha256, "sha256")}
    else:
        given = {}
    out = {}
    for f in files:
        if f.name in given:
            out[f.name] = ("sha256", given[f.name])
        elif f.sha256:
            out[f.name] = ("sha256", f.sha256)
        elif f.md5:
            out[f.name] = ("md5", f.md5)
        else:
            out[f.name] = False
    return out


def _no_checksum(name: str, file: _File, url) -> ValueError:
    where = f"the archive at url={url!r}" if url is not None else file.name
    return ValueError(f"{name}: no published checksum of {where} is known to xai_robust, so it cannot be verified by "
                      "default. Pass sha256='<64 hex digits>' (the SHA-256 of a copy you trust, from `sha256sum`), "
                      f"or sha256={UNVERIFIED!r} to download it unchecked (a warning then reports the SHA-256 "
                      "received, to pin next time).")


def _files_for(name: str, spec: _Spec, url) -> tuple[_File, ...]:
    """The files to fetch: the published ones, or the same ones from the mirror ``url``."""
    if url is None:
        return spec.files
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise ValueError(f"url must be an http(s):// or file:// URL as a str, got {url!r}")
    if spec.url_is == "folder":
        if not url.endswith("/"):
            if url.rsplit("/", 1)[-1].endswith(".gz"):
                raise ValueError(f"url for {name!r} names the mirror folder holding the four IDX .gz files (it "
                                 f"ends with '/'), not one file; got {url!r}")
            url += "/"
        return tuple(_File(f.name, (url + f.name,), md5=f.md5, sha256=f.sha256) for f in spec.files)
    if len(spec.files) == 1:  # a mirror of the same archive: the published checksum still applies
        return (_File(spec.files[0].name, (url,), md5=spec.files[0].md5, sha256=spec.files[0].sha256,
                      extract=True),)
    # several published files (CelebA): url= is one archive holding all of them, with no published checksum
    filename = Path(urllib.parse.urlsplit(url).path).name or f"{name}-archive"
    return (_File(filename, (url,), extract=True),)


class _Failed(Exception):
    """A mirror failed (network, HTTP, truncation): try the next one."""


def _stream(url: str, dest: Path, desc: str, show: bool, *, binary: bool = False):
    """GET ``url`` into ``dest``; returns ``(sha256, md5)`` of the bytes, or ``("html", page)`` for an HTML page
    when a binary file was expected (``binary``: Google Drive's warning and quota pages)."""
    from .. import __version__, progress

    request = urllib.request.Request(url, headers={"User-Agent": f"xai_robust/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        raise _Failed(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _Failed(f"{url}: {getattr(err, 'reason', err)}") from err
    with response:
        if binary and response.headers.get_content_type() == "text/html":
            return "html", response.read(1 << 20).decode("utf-8", "replace")
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.strip().isdigit() else None
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        received = 0
        bar = progress(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                       disable=None if show else True)
        with dest.open("wb") as f, bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except http.client.IncompleteRead as err:
                    received += len(err.partial)
                    break
                except (OSError, http.client.HTTPException) as err:
                    raise _Failed(f"{url}: the connection broke after {received} bytes ({err})") from err
                if not chunk:
                    break
                f.write(chunk)
                sha.update(chunk)
                md5.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise _Failed(f"{url}: the transfer was cut short: {received} of the {total} bytes announced")
    return sha.hexdigest(), md5.hexdigest()


def _gdrive(file_id: str, dest: Path, desc: str, show: bool):
    """A Google Drive file: the direct endpoint with confirm=t, following one warning page's form if served."""
    url = f"{_GDRIVE}?" + urllib.parse.urlencode({"id": file_id, "export": "download", "confirm": "t"})
    for _ in range(2):
        result = _stream(url, dest, desc, show, binary=True)
        if result[0] != "html":
            return result
        page = result[1]
        action = re.search(r'<form[^>]*action="([^"]+)"', page)
        fields = dict(re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
        if not action or not fields:
            break
        url = urllib.parse.urljoin(url, action.group(1).replace("&amp;", "&")) + "?" + urllib.parse.urlencode(fields)
    raise _Failed(f"Google Drive served a web page instead of file {file_id} (its download quota is exceeded, or "
                  "the file moved)")


def _fetch(name: str, file: _File, dest: Path, expected, show: bool, manual: str) -> None:
    """Download ``file`` into ``dest`` from the first mirror that answers, and verify it."""
    failures = []
    for source in ([f"google drive id {file.gdrive}"] if file.gdrive else file.urls):
        desc = f"{name}: {file.name}"
        try:
            digests = _gdrive(file.gdrive, dest, desc, show) if file.gdrive else _stream(source, dest, desc, show)
        except _Failed as err:
            dest.unlink(missing_ok=True)
            failures.append(str(err))
            continue
        sha, md5 = digests
        if expected is None:
            warnings.warn(f"{name}: {file.name} was downloaded without a checksum (sha256={UNVERIFIED!r}); its "
                          f"SHA-256 is {sha} — pass sha256={sha!r} next time to pin it", stacklevel=3)
            return
        algorithm, want = expected
        got = sha if algorithm == "sha256" else md5
        if got != want.lower():
            dest.unlink(missing_ok=True)
            origin = "the sha256= given" if algorithm == "sha256" else "the MD5 torchvision publishes"
            raise DownloadError(f"{name}: the {algorithm.upper()} of {file.name} from {source} is {got}, but "
                                f"{origin} is {want}; the file was deleted. Retry (the transfer may have been "
                                "corrupted); if the mirror serves a different archive, pass its sha256=.")
        return
    raise DownloadError(f"{name}: could not download {file.name} ({'; '.join(failures)}). Without network access, "
                        f"{manual}, or pass url=<a mirror> (with sha256= its SHA-256) to "
                        "xai_robust.data.download.")


def _open_archive(path: Path):
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise DownloadError(f"{path.name} is neither a tar nor a zip archive; the mirror served something else")


def _extract(archive: Path, dest: Path, desc: str, show: bool) -> None:
    """Extract a tar (any compression) or zip archive into ``dest``, refusing paths that leave it."""
    from .. import progress

    kind = _open_archive(archive)
    bar = progress(total=archive.stat().st_size, desc=f"{desc} (extracting)", unit="B", unit_scale=True,
                   unit_divisor=1024, disable=None if show else True)
    with bar:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    zf.extract(info, dest)  # zipfile drops absolute paths and '..' components
                    bar.update(info.compress_size)
            return
        with archive.open("rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
            def members():
                for member in tar:
                    yield member
                    bar.update(max(0, raw.tell() - bar.n))

            tar.extractall(dest, members=members(), filter="data")


def _hoist_nested_celeba(folder: Path) -> None:
    """Kaggle's CelebA zip nests the images one level deeper (img_align_celeba/img_align_celeba/*.jpg)."""
    inner = folder / "img_align_celeba" / "img_align_celeba"
    if inner.is_dir():
        moved = folder / ".img_align_celeba"
        os.rename(inner, moved)
        shutil.rmtree(folder / "img_align_celeba")
        os.rename(moved, folder / "img_align_celeba")


def _dataset_folder(content: Path, spec: _Spec, name: str) -> Path | None:
    """The folder holding the loader's files: ``content`` itself or its one sub-folder (an archive's top folder)."""
    entries = [e for e in content.iterdir() if not e.name.startswith(".") and e.name != "__MACOSX"]
    candidates = [content] + ([entries[0]] if len(entries) == 1 and entries[0].is_dir() else [])
    for folder in candidates:
        if name == "celeba":
            _hoist_nested_celeba(folder)
        if spec.present(folder):
            return folder
    return None


def mirror_table(path=None) -> dict:
    """The mirror table: ``{name: {"url": str, "sha256": str or dict (optional)}}`` from ``$XAI_ROBUST_MIRRORS``.

    A lab with a local copy of the datasets (or ``make colab-smoke``, with its loopback server) points
    :func:`download` at it by writing this JSON file and setting ``$XAI_ROBUST_MIRRORS`` to its path; every
    ``download(name)`` without ``url=`` then fetches ``url`` (for ``mnist`` the folder holding the four ``.gz``
    files) and checks ``sha256`` (one SHA-256, or for ``mnist`` a dict over its files), unless ``sha256=`` is
    given. Datasets absent from the table use the published locations.

    Parameters
    ----------
    path : str or Path, optional
        The table to read (default ``$XAI_ROBUST_MIRRORS``; unset or empty: no mirror, ``{}``).

    Returns
    -------
    dict
        The table, validated.

    Raises
    ------
    ValueError
        The file is missing or not JSON, or an entry is not ``{"url": str, "sha256": ...}`` for a known dataset.
    """
    if path is None:
        path = os.environ.get(MIRRORS_ENV, "")
        if not path.strip():
            return {}
    where = f"the mirror table {str(path)!r}" + (f" (${MIRRORS_ENV})" if path == os.environ.get(MIRRORS_ENV) else "")
    try:
        table = json.loads(Path(path).expanduser().read_text())
    except OSError as err:
        raise ValueError(f"{where} cannot be read ({err}); unset ${MIRRORS_ENV} or point it at a JSON file") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON ({err})") from err
    if not isinstance(table, dict):
        raise ValueError(f"{where} must hold a JSON object {{name: {{\"url\": ..., \"sha256\": ...}}}}, got "
                         f"{type(table).__name__}")
    for name, entry in table.items():
        if name not in DATASETS:
            raise ValueError(f"{where} names an unknown dataset {name!r}; known: {sorted(DATASETS)}")
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str) or \
                set(entry) - {"url", "sha256"}:
            raise ValueError(f"{where}: the entry for {name!r} must be {{\"url\": \"...\", \"sha256\": ...}} "
                             f"(sha256 optional), got {entry!r}")
    return table


def download(name: str, root=None, *, url: str | None = None, sha256: str | dict | None = None,
             progress: bool = True) -> Path:
    """Download a real dataset, verify it and extract it into the folder :func:`xai_robust.data.load` reads.

    Nothing happens (and no network is used) when the dataset is already in ``root``: the files its loader
    reads exist (``metadata.csv`` for Waterbirds; the attribute and partition lists and ``img_align_celeba/``
    for CelebA; the four IDX files for MNIST; the pickle batches for CIFAR-10; the ``*_X.bin``/``*_y.bin``
    files for STL-10). Otherwise the files are downloaded into a temporary folder next to ``root``
    (``.<root name>.partial-*``), each checked against its checksum — a mismatch raises and deletes it, as
    does a transfer shorter than the announced length — and extracted there; only then is the finished folder
    renamed to ``root`` (one ``os.rename``). An interrupted run therefore leaves at most a ``.partial-*``
    folder that no loader reads (delete it at leisure), never a half dataset in ``root``.

    Checksums: no SHA-256 of these files is published by their authors (or known to this package), so none is
    built in. Without ``sha256=``, MNIST, CIFAR-10, STL-10 and CelebA (the official files) are checked against
    the MD5s torchvision 0.29 publishes for the same files, also when ``url=`` names a mirror of them;
    Waterbirds, and CelebA from a ``url=`` archive, have no published checksum and need ``sha256=`` (or
    ``sha256="unverified"``, which downloads unchecked and warns with the SHA-256 received).

    Parameters
    ----------
    name : {'mnist', 'cifar10', 'stl10', 'waterbirds', 'celeba'}
        The dataset (the chapters' digit datasets are built from 'mnist' under the colab and paper profiles).
    root : str or Path, optional
        Destination folder; default :func:`xai_robust.data.default_root` (``$XAI_ROBUST_DATA/<name>`` or
        ``cache_dir()/data/<name>``), the folder ``data.load(name, ...)`` reads. It must be absent, empty or
        hold the complete dataset already.
    url : str, optional
        A mirror (http, https or file URL). For 'mnist' the folder holding the four IDX ``.gz`` files; for the
        others one archive (tar, tar.gz or zip) of the dataset — for 'celeba' an archive holding
        ``list_attr_celeba`` and ``list_eval_partition`` (``.txt`` or ``.csv``) and ``img_align_celeba/``, such
        as Kaggle's. Default: the published location (MNIST: torchvision's two mirrors, tried in turn; CelebA:
        the Google Drive files torchvision lists), or the mirror table's ``url`` for ``name`` when
        ``$XAI_ROBUST_MIRRORS`` names one (:func:`mirror_table`).
    sha256 : str or dict, optional
        The expected SHA-256 (64 hex digits) of the archive, or for the datasets made of several files
        (MNIST's four files, CelebA's official three) a dict ``{file name: SHA-256}``; ``"unverified"`` skips
        the check. Default: the mirror table's ``sha256`` when its ``url`` is used, else the published checksum
        described above.
    progress : bool
        Show progress bars (``xai_robust.progress``; ``$XAI_ROBUST_PROGRESS`` still applies).

    Returns
    -------
    Path
        ``root``, to pass as ``data.load(name, split, root=...)`` (which reads :func:`default_root` by default).

    Raises
    ------
    ValueError
        An unknown ``name``, a malformed ``url`` or ``sha256``, no checksum known without ``sha256=``, or a
        ``root`` that holds other files.
    DownloadError
        No network or an HTTP error on every mirror (the message says how to download by hand into ``root``
        or which ``url=`` to pass), a truncated transfer, a checksum mismatch, or an archive without the
        dataset's files.
    """
    from . import default_root
    from .base import _check_flag

    if name not in DATASETS:
        hint = " (the digit datasets are built from MNIST: download('mnist'))" if name in _DIGITS else ""
        raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}{hint}")
    show = _check_flag(progress, "progress")
    spec = DATASETS[name]
    if url is None:
        mirror = mirror_table().get(name)
        if mirror is not None:
            url = mirror["url"]
            sha256 = mirror.get("sha256") if sha256 is None else sha256
    files = _files_for(name, spec, url)
    expected = _expected(name, files, sha256)
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a folder path (str or Path), got {type(root).__name__}")
    root = Path(default_root(name) if root is None else root).expanduser()
    if spec.present(root):
        return root
    for file in files:
        if expected[file.name] is False:
            raise _no_checksum(name, file, url)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"root={str(root)!r} exists but does not hold a complete {name} dataset; remove it (or "
                         f"move the files the {name} loader reads into it), or pass another root=")
    manual = f"{spec.by_hand} {root}"
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        content = work / "content"
        content.mkdir()
        for file in files:
            target = work / file.name
            _fetch(name, file, target, expected[file.name], show, manual)
            if file.extract:
                _extract(target, content, f"{name}: {file.name}", show)
                target.unlink()
            else:
                os.replace(target, content / file.name)
        folder = _dataset_folder(content, spec, name)
        if folder is None:
            raise DownloadError(f"{name}: the downloaded files do not hold what the {name} loader reads (see "
                                f"xai_robust.data.real); if url= names a differently packed archive, {manual}")
        try:
            if root.exists():
                root.rmdir()  # empty (checked above)
            os.rename(folder, root)
        except OSError:
            if not spec.present(root):  # another process may have finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root
