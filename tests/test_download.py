"""data.download against a loopback HTTP server serving tiny archives in each dataset's published format."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib
import io
import json
import pickle
import socket
import zipfile

import numpy as np
import pytest
import torch

from xai_robust import data
from xai_robust.data import fixtures
from xai_robust.data.download import DownloadError

dl = importlib.import_module("xai_robust.data.download")  # the module (data.download is the function)
WATERBIRDS_ROWS = [(1, 0, 1), (0, 0, 0), (1, 1, 0), (0, 2, 1)]  # (y, split, place): 2 train, 1 val, 1 test


@pytest.fixture()
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv(dl.MIRRORS_ENV, raising=False)
    with fixtures.serve() as srv:
        yield srv


_sha = fixtures.sha256


def _waterbirds_archive():
    return fixtures.waterbirds_archive(rows=WATERBIRDS_ROWS, size=(12, 10))


def _mnist_files():
    rng = np.random.RandomState(0)
    return fixtures.mnist_files(train=(rng.randint(0, 256, (12, 28, 28)), np.arange(12) % 10),
                                test=(rng.randint(0, 256, (4, 28, 28)), [7, 2, 1, 0]))


def _cifar_archive():
    return fixtures.cifar10_archive(n_per_batch=2)


def _stl_archive():
    return fixtures.stl10_archive(n_train=2, n_test=2)


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir())


def test_waterbirds_download_then_load_then_in_place(server, tmp_path):
    archive = _waterbirds_archive()
    url = server.add("/dro/waterbird_complete95_forest2water2.tar.gz", archive)
    root = tmp_path / "waterbirds"
    assert dl.download("waterbirds", root, url=url, sha256=_sha(archive).upper(), progress=False) == root
    train = data.load("waterbirds", "train", root=root, size=8)
    assert len(train) == 2 and train.labels.tolist() == [1, 0] and train.groups.tolist() == [3, 0]
    assert len(data.load("waterbirds", "test", root=root, size=8)) == 1
    assert _leftovers(tmp_path) == ["waterbirds"]  # the temporary folder is gone
    contacted = len(server.requests)
    assert contacted == 1
    # already in place: no network, also without url= or the sha256= Waterbirds otherwise needs
    assert data.download("waterbirds", root, url=url, sha256=_sha(archive)) == root
    assert data.download("waterbirds", root) == root
    assert len(server.requests) == contacted


@pytest.mark.parametrize("name", ["cifar10", "stl10"])
def test_archive_datasets_download_then_load(server, tmp_path, name):
    archive = {"cifar10": _cifar_archive, "stl10": _stl_archive}[name]()
    url = server.add(f"/{name}.tar.gz", archive)
    root = data.download(name, tmp_path / name, url=url, sha256=_sha(archive), progress=False)
    train = data.load(name, "train", root=root)
    assert len(train) == {"cifar10": 8, "stl10": 2}[name] and train.images.shape[1] == 3
    if name == "cifar10":
        first = pickle.loads((root / "cifar-10-batches-py" / "data_batch_1").read_bytes())[b"labels"]
    else:
        first = (np.fromfile(root / "stl10_binary" / "train_y.bin", dtype=np.uint8).astype(int) - 1).tolist()
    assert train.labels.tolist()[:2] == first[:2]
    data.download(name, root, url=url)  # in place: no network, no checksum needed
    assert len(server.requests) == 1 and _leftovers(tmp_path) == [name]


def test_mnist_mirror_folder_and_default_root(server, tmp_path, monkeypatch):
    files = _mnist_files()
    for f, blob in files.items():
        server.add(f"/mnist/{f}", blob)
    monkeypatch.setenv("XAI_ROBUST_DATA", str(tmp_path))
    root = data.download("mnist", url=server.url + "/mnist", sha256={f: _sha(b) for f, b in files.items()},
                         progress=False)
    assert root == data.default_root("mnist") == tmp_path / "mnist"
    assert data.load("mnist", "test", profile="paper").labels.tolist() == [7, 2, 1, 0]  # load reads the default root
    assert len(data.parity_digits("train", source="mnist", root=root)) == 10
    assert len(server.requests) == 4
    data.download("mnist")
    assert len(server.requests) == 4


def test_mirrors_are_tried_in_turn(server, tmp_path, monkeypatch):
    files = _mnist_files()
    for f, blob in files.items():
        server.add(f"/live/{f}", blob)
    dead = server.url + "/dead/"  # answers 404
    spec = dataclasses.replace(dl.DATASETS["mnist"], files=tuple(
        dataclasses.replace(f, urls=(dead + f.name, server.url + "/live/" + f.name),
                            md5=hashlib.md5(files[f.name]).hexdigest())
        for f in dl.DATASETS["mnist"].files))
    monkeypatch.setitem(dl.DATASETS, "mnist", spec)
    root = data.download("mnist", tmp_path / "m", progress=False)  # checked against the (patched) default MD5s
    assert len(data.load("mnist", "train", root=root)) == 10 and len(server.requests) == 8


def test_wrong_checksum_raises_and_leaves_nothing(server, tmp_path):
    archive = _waterbirds_archive()
    url = server.add("/wb.tar.gz", archive)
    with pytest.raises(DownloadError, match="SHA256 of waterbird_complete95_forest2water2.tar.gz .* deleted"):
        data.download("waterbirds", tmp_path / "wb", url=url, sha256="0" * 64, progress=False)
    assert _leftovers(tmp_path) == []
    # without sha256=, a mirror of MNIST is checked against the MD5s torchvision publishes (the fixture differs)
    for f, blob in _mnist_files().items():
        server.add(f"/mnist/{f}", blob)
    with pytest.raises(DownloadError, match="MD5 .* torchvision publishes"):
        data.download("mnist", tmp_path / "mnist", url=server.url + "/mnist/", progress=False)
    assert _leftovers(tmp_path) == []
    with pytest.raises(data.DatasetNotFoundError):
        data.load("waterbirds", "train", root=tmp_path / "wb")


def test_truncated_transfer_raises_and_leaves_nothing(server, tmp_path):
    archive = _waterbirds_archive()
    url = server.add("/wb.tar.gz", archive)
    server.truncate.add("/wb.tar.gz")
    with pytest.raises(DownloadError, match=f"cut short: {len(archive) // 2} of the {len(archive)} bytes"):
        data.download("waterbirds", tmp_path / "wb", url=url, sha256=_sha(archive), progress=False)
    assert _leftovers(tmp_path) == []


def test_no_network_says_how_to_download_by_hand(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "cifar"
    with pytest.raises(DownloadError) as err:
        data.download("cifar10", root, url=f"http://127.0.0.1:{port}/cifar-10-python.tar.gz", progress=False)
    message = str(err.value)
    assert str(root) in message and "url=" in message and "cifar-10-python.tar.gz" in message
    assert _leftovers(tmp_path) == []


def test_celeba_from_a_url_archive_and_from_google_drive(server, tmp_path, monkeypatch):
    tables = dict(n=3, partitions=[0, 0, 2], attributes=("Blond_Hair", "Male"), values=[[1, -1], [-1, 1], [1, 1]])
    # Kaggle's layout: the images one folder deeper, csv tables
    archive = fixtures.celeba_archive(kaggle=True, **tables)
    assert "img_align_celeba/img_align_celeba/000001.jpg" in zipfile.ZipFile(io.BytesIO(archive)).namelist()
    url = server.add("/celeba.zip", archive)
    with pytest.raises(ValueError, match="no published checksum"):
        data.download("celeba", tmp_path / "k", url=url)
    root = data.download("celeba", tmp_path / "k", url=url, sha256=_sha(archive), progress=False)
    train = data.load("celeba", "train", root=root, size=8)
    assert train.labels.tolist() == [1, 0] and train.spurious.tolist() == [0, 1]
    assert train[0]["image"].shape == (3, 8, 8)
    # the official Google Drive files: a warning page whose form leads to the file, then the files themselves
    monkeypatch.setattr(dl, "_GDRIVE", server.url + "/gdrive")
    files = fixtures.celeba_files(fmt="txt", **tables)
    official = {"img_align_celeba.zip": fixtures.zip_bytes({k: v for k, v in files.items() if k.endswith(".jpg")}),
                "list_attr_celeba.txt": files["list_attr_celeba.txt"],
                "list_eval_partition.txt": files["list_eval_partition.txt"]}
    for f in dl.DATASETS["celeba"].files:
        server.add(f"/gdrive:{f.gdrive}", official[f.name])
    zip_id = dl.DATASETS["celeba"].files[0].gdrive
    server.pages[f"/gdrive:{zip_id}"] = (f'<html><form id="download-form" action="{server.url}/gdrive" method="get">'
                                         f'<input type="hidden" name="id" value="{zip_id}">'
                                         '<input type="hidden" name="confirm" value="t">'
                                         '<input type="hidden" name="uuid" value="u-1"></form></html>')
    root = data.download("celeba", tmp_path / "g", sha256={f: _sha(b) for f, b in official.items()}, progress=False)
    assert data.load("celeba", "test", root=root, size=8).groups.tolist() == [3]
    assert any("uuid=u-1" in r for r in server.requests)


def test_unverified_download_warns_with_the_sha256(server, tmp_path):
    archive = _waterbirds_archive()
    url = server.add("/wb.tar.gz", archive)
    with pytest.warns(UserWarning, match=_sha(archive)):
        data.download("waterbirds", tmp_path / "wb", url=url, sha256="unverified", progress=False)
    assert len(data.load("waterbirds", "val", root=tmp_path / "wb", size=8)) == 1


def test_progress_bar_is_the_package_one(server, tmp_path, monkeypatch, capsys):
    archive = _stl_archive()
    url = server.add("/stl.tar.gz", archive)
    monkeypatch.setenv("XAI_ROBUST_PROGRESS", "static")
    data.download("stl10", tmp_path / "stl", url=url, sha256=_sha(archive))
    out = capsys.readouterr().out
    assert f"stl10: stl10_binary.tar.gz: {len(archive)}/{len(archive)}" in out and "(extracting)" in out


def test_bad_arguments_name_the_fix(server, tmp_path):
    with pytest.raises(ValueError, match="name must be one of"):
        data.download("imagenet")
    with pytest.raises(ValueError, match=r"download\('mnist'\)"):
        data.download("colored_digits")
    with pytest.raises(ValueError, match="sha256 must be a SHA-256 as 64 hexadecimal digits"):
        data.download("cifar10", tmp_path / "c", sha256="abc123")
    with pytest.raises(ValueError, match="one SHA-256 string"):
        data.download("cifar10", tmp_path / "c", sha256={"cifar-10-python.tar.gz": "0" * 64})
    with pytest.raises(ValueError, match="dict"):
        data.download("mnist", tmp_path / "m", sha256="0" * 64)
    with pytest.raises(ValueError, match="does not download"):
        data.download("mnist", tmp_path / "m", sha256={"train.gz": "0" * 64})
    with pytest.raises(ValueError, match="url must be"):
        data.download("stl10", tmp_path / "s", url="ftp://example.org/stl.tar.gz")
    with pytest.raises(ValueError, match="mirror folder"):
        data.download("mnist", tmp_path / "m", url=server.url + "/train-images-idx3-ubyte.gz")
    with pytest.raises(ValueError, match="sha256="):  # Waterbirds has no published checksum
        data.download("waterbirds", tmp_path / "wb", url=server.add("/wb.tar.gz", _waterbirds_archive()))
    with pytest.raises(TypeError, match="progress"):
        data.download("stl10", tmp_path / "s", progress="yes")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="root=.*remove it"):
        data.download("cifar10", busy, url=server.url + "/c.tar.gz")
    assert server.requests == [] and (busy / "notes.txt").read_text() == "mine"
    # an archive without the dataset's files is refused, nothing renamed into place
    junk = fixtures.tar_gz({"readme.txt": b"hello"})
    with pytest.raises(DownloadError, match="do not hold"):
        data.download("stl10", tmp_path / "s", url=server.add("/junk.tar.gz", junk), sha256=_sha(junk),
                      progress=False)
    assert not (tmp_path / "s").exists()


def test_fixture_pixels_round_trip(server, tmp_path):
    """The downloaded MNIST bytes are the ones served (gz files kept as they are)."""
    files = _mnist_files()
    for f, blob in files.items():
        server.add(f"/m/{f}", blob)
    with pytest.warns(UserWarning):
        root = data.download("mnist", tmp_path / "m", url=server.url + "/m/", sha256="unverified", progress=False)
    raw = np.frombuffer(gzip.decompress(files["t10k-images-idx3-ubyte.gz"]), np.uint8, offset=16).reshape(4, 28, 28)
    assert torch.equal(data.load("mnist", "test", root=root).images[:, 0], torch.tensor(raw).float() / 255)


def test_mirror_table_points_download_and_load_at_a_mirror(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with fixtures.serve(tmp_path / "mirror") as srv:
        table = fixtures.write_mirror(tmp_path / "mirror", base_url=srv.url, datasets=("mnist", "waterbirds"),
                                      table=tmp_path / "mirrors.json", mnist=dict(n_train=60, n_test=12),
                                      waterbirds=dict(rows=WATERBIRDS_ROWS, size=(12, 10)))
        written = tmp_path / "mirrors.json"
        assert json.loads(written.read_text()) == table == dl.mirror_table(written)
        assert table["mnist"]["url"] == srv.url + "/mnist/" and len(table["mnist"]["sha256"]) == 4
        monkeypatch.setenv(dl.MIRRORS_ENV, str(tmp_path / "mirrors.json"))
        # no url= and no sha256=: the table gives both (Waterbirds has no published checksum)
        root = data.download("waterbirds", tmp_path / "wb", progress=False)
        assert srv.requests == ["/waterbird_complete95_forest2water2.tar.gz"]
        assert data.load("waterbirds", "train", root=root, size=8).labels.tolist() == [1, 0]
        # a sha256= given wins over the table's; a url= given bypasses the table
        with pytest.raises(DownloadError, match="SHA256"):
            data.download("waterbirds", tmp_path / "wb2", sha256="0" * 64, progress=False)
        with pytest.raises(ValueError, match="no published checksum"):
            data.download("waterbirds", tmp_path / "wb3", url=srv.url + "/elsewhere.tar.gz")
        # outside ci, load downloads a missing dataset into its default root (MNIST for the digit datasets)
        monkeypatch.setenv("XAI_ROBUST_DATA", str(tmp_path / "data"))
        before = len(srv.requests)
        assert len(data.load("parity_digits", "test", seed=0)) == 1000 and len(srv.requests) == before  # ci: offline
        test = data.load("parity_digits", "test", profile="colab")
        assert len(test) == 12 and (tmp_path / "data" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
        assert len(srv.requests) == before + 4
        scenes = data.load("spurious_scenes", "val", profile="colab", size=8)
        assert len(scenes) == 1 and (tmp_path / "data" / "waterbirds" / "metadata.csv").is_file()
        data.load("colored_digits", "val", profile="paper")  # in place: no network
        assert len(srv.requests) == before + 5
        # root= given: never downloaded
        with pytest.raises(data.DatasetNotFoundError):
            data.load("waterbirds", "train", profile="colab", root=tmp_path / "nothing")
        assert len(srv.requests) == before + 5


def test_load_without_a_checksum_names_the_way_out(tmp_path, monkeypatch):
    monkeypatch.delenv(dl.MIRRORS_ENV, raising=False)
    monkeypatch.setenv("XAI_ROBUST_DATA", str(tmp_path))
    with pytest.raises(data.DatasetNotFoundError, match=r"(?s)no published checksum.*XAI_ROBUST_MIRRORS"):
        data.load("waterbirds", "train", profile="colab")
    assert list(tmp_path.iterdir()) == []


def test_bad_mirror_tables_say_what_is_wrong(tmp_path, monkeypatch):
    monkeypatch.delenv(dl.MIRRORS_ENV, raising=False)
    assert dl.mirror_table() == {}
    monkeypatch.setenv(dl.MIRRORS_ENV, "")
    assert dl.mirror_table() == {}
    table = tmp_path / "m.json"
    monkeypatch.setenv(dl.MIRRORS_ENV, str(table))
    with pytest.raises(ValueError, match="cannot be read"):
        data.download("cifar10", tmp_path / "c")
    cases = {"{": "not valid JSON", "[]": "JSON object", '{"imagenet": {"url": "http://x/"}}': "unknown dataset",
             '{"cifar10": {"sha256": "00"}}': "must be", '{"cifar10": {"url": "http://x/", "md5": "0"}}': "must be",
             '{"cifar10": "http://x/c.tar.gz"}': "must be"}
    for text, message in cases.items():
        table.write_text(text)
        with pytest.raises(ValueError, match=message):
            data.download("cifar10", tmp_path / "c")
    # a bad sha256 in the table is reported like a bad sha256= argument
    table.write_text('{"cifar10": {"url": "http://127.0.0.1:9/c.tar.gz", "sha256": "abc"}}')
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        data.download("cifar10", tmp_path / "c")
