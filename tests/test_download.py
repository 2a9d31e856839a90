"""data.download against a loopback HTTP server serving tiny archives in each dataset's published format."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import importlib
import io
import pickle
import socket
import tarfile
import threading
import urllib.parse
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from xai_robust import data
from xai_robust.data.download import DownloadError

dl = importlib.import_module("xai_robust.data.download")  # the module (data.download is the function)


class _Server:
    """127.0.0.1 only: serves ``files`` (path → bytes), counts requests, can cut a transfer short."""

    def __init__(self):
        self.files, self.pages, self.truncate, self.requests = {}, {}, set(), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                path = urllib.parse.urlsplit(self.path).path
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                key = f"{path}:{query['id']}" if "id" in query else path
                if key in server.pages:  # an HTML page (Google Drive's warning page)
                    body, kind = server.pages.pop(key).encode(), "text/html; charset=utf-8"
                elif key in server.files:
                    body, kind = server.files[key], "application/octet-stream"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if key in server.truncate else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def add(self, path, body):
        self.files[path] = body
        return self.url + path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    srv = _Server()
    yield srv
    srv.close()


def _sha(blob):
    return hashlib.sha256(blob).hexdigest()


def _jpeg(colour, size=(12, 10)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def _tar_gz(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buffer.getvalue()


def _zip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buffer.getvalue()


def _waterbirds_archive():
    top = "waterbird_complete95_forest2water2"
    rows = [("001.Albatross/a.jpg", 1, 0, 1), ("002.Laysan/b.jpg", 0, 0, 0), ("003.Sooty/c.jpg", 1, 1, 0),
            ("004.Crested/d.jpg", 0, 2, 1)]
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    members = {}
    for i, (f, y, split, place) in enumerate(rows):
        members[f"{top}/{f}"] = _jpeg((255 * y, 0, 255 * place))
        lines.append(f"{i + 1},{f},{y},{split},{place},/x/y.jpg")
    members[f"{top}/metadata.csv"] = ("\n".join(lines) + "\n").encode()
    return _tar_gz(members)


def _idx(array):
    array = np.asarray(array, dtype=np.uint8)
    return gzip.compress(bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
                         + array.tobytes())


def _mnist_files():
    rng = np.random.RandomState(0)
    return {"train-images-idx3-ubyte.gz": _idx(rng.randint(0, 256, (12, 28, 28))),
            "train-labels-idx1-ubyte.gz": _idx(np.arange(12) % 10),
            "t10k-images-idx3-ubyte.gz": _idx(rng.randint(0, 256, (4, 28, 28))),
            "t10k-labels-idx1-ubyte.gz": _idx([7, 2, 1, 0])}


def _cifar_archive():
    rng = np.random.RandomState(0)
    members = {f"cifar-10-batches-py/{name}": pickle.dumps({b"data": rng.randint(0, 256, (2, 3072)).astype(np.uint8),
                                                            b"labels": [3, 5]})
               for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]}
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]})
    return _tar_gz(members)


def _stl_archive():
    rng = np.random.RandomState(0)
    members = {}
    for stem in ("train", "test"):
        members[f"stl10_binary/{stem}_X.bin"] = rng.randint(0, 256, (2, 3, 96, 96)).astype(np.uint8).tobytes()
        members[f"stl10_binary/{stem}_y.bin"] = bytes([1, 10])
    return _tar_gz(members)


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
    assert train.labels.tolist()[:2] == {"cifar10": [3, 5], "stl10": [0, 9]}[name]
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
    ids = ["000001.jpg", "000002.jpg", "000003.jpg"]
    attr_csv = "image_id,Blond_Hair,Male\n000001.jpg,1,-1\n000002.jpg,-1,1\n000003.jpg,1,1\n"
    part_csv = "image_id,partition\n000001.jpg,0\n000002.jpg,0\n000003.jpg,2\n"
    # Kaggle's layout: the images one folder deeper, csv tables
    members = {f"img_align_celeba/img_align_celeba/{i}": _jpeg((200, 180, 40)) for i in ids}
    archive = _zip({**members, "list_attr_celeba.csv": attr_csv.encode(), "list_eval_partition.csv": part_csv.encode()})
    url = server.add("/celeba.zip", archive)
    with pytest.raises(ValueError, match="no published checksum"):
        data.download("celeba", tmp_path / "k", url=url)
    root = data.download("celeba", tmp_path / "k", url=url, sha256=_sha(archive), progress=False)
    train = data.load("celeba", "train", root=root, size=8)
    assert train.labels.tolist() == [1, 0] and train.spurious.tolist() == [0, 1]
    assert train[0]["image"].shape == (3, 8, 8)
    # the official Google Drive files: a warning page whose form leads to the file, then the files themselves
    monkeypatch.setattr(dl, "_GDRIVE", server.url + "/gdrive")
    official = {"img_align_celeba.zip": _zip({f"img_align_celeba/{i}": _jpeg((10, 20, 30)) for i in ids}),
                "list_attr_celeba.txt": b"3\nBlond_Hair Male\n000001.jpg 1 -1\n000002.jpg -1 1\n000003.jpg 1 1\n",
                "list_eval_partition.txt": b"000001.jpg 0\n000002.jpg 0\n000003.jpg 2\n"}
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
    junk = _tar_gz({"readme.txt": b"hello"})
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
