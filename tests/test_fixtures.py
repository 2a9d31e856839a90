"""xai_robust.data.fixtures: tiny datasets in the real formats, the mirror table and the loopback server."""
from __future__ import annotations

import importlib
import urllib.error
import urllib.request

import numpy as np
import pytest

from xai_robust import data
from xai_robust.data import fixtures

dl = importlib.import_module("xai_robust.data.download")


@pytest.fixture()
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def test_mnist_digits_look_like_mnist():
    images, labels = fixtures.mnist_digits(50, seed=3)
    assert images.shape == (50, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.uint8
    assert set(labels.tolist()) <= set(range(10)) and len(set(labels.tolist())) > 5
    assert images[:, :2].max() == 0 and images[:, :, :2].max() == 0  # the digit sits in a centred box
    assert images.max() > 200 and (images > 0).mean() > 0.1
    again, _ = fixtures.mnist_digits(50, seed=3)
    assert np.array_equal(images, again)


def test_every_dataset_downloads_from_a_file_mirror_and_loads(tmp_path, monkeypatch):
    table = fixtures.write_mirror(tmp_path / "mirror", table=tmp_path / "mirrors.json")
    assert sorted(table) == ["celeba", "cifar10", "mnist", "stl10", "waterbirds"]
    assert table["cifar10"]["url"].startswith("file://")
    monkeypatch.setenv(dl.MIRRORS_ENV, str(tmp_path / "mirrors.json"))
    roots = {name: data.download(name, tmp_path / "data" / name, progress=False) for name in table}
    sizes = {s: len(data.load("mnist", s, root=roots["mnist"])) for s in ("train", "val", "test")}
    assert sizes == {"train": 600, "val": 120, "test": 240}
    for split, n in (("train", 240), ("val", 80), ("test", 120)):
        wb = data.load("waterbirds", split, root=roots["waterbirds"], size=32)
        assert len(wb) == n and wb.images[0].shape == (3, 32, 32)
        counts = wb.group_counts()
        assert bool((counts > 0).all()), (split, counts)  # every group, the minority groups too
        if split == "train":  # the background agrees with the class in about 95 % of the training images
            assert 0.85 < float((wb.spurious == wb.labels).float().mean()) < 1.0
        else:
            assert counts.tolist() == [n // 4] * 4
    cifar = {s: data.load("cifar10", s, root=roots["cifar10"]) for s in ("train", "val", "test")}
    assert [len(d) for d in cifar.values()] == [400, 100, 100] and cifar["train"].class_names[0] == "airplane"
    assert cifar["test"].labels.bincount().tolist() == [10] * 10
    assert len(data.load("stl10", "train", root=roots["stl10"])) == 20
    celeba = data.load("celeba", "train", root=roots["celeba"], size=16)
    assert len(celeba) == 18 and celeba.images[0].shape == (3, 16, 16)


def test_waterbirds_segmentations_follow_cub(tmp_path):
    from PIL import Image

    root = fixtures.write_waterbirds(tmp_path, counts=(4, 2, 2), segmentations=True)
    lines = (root / "metadata.csv").read_text().splitlines()
    first = lines[1].split(",")[1]
    assert first.split("/")[0] in ("029.American_Crow", "094.White_breasted_Nuthatch", "059.California_Gull",
                                   "086.Pacific_Loon")
    mask = np.asarray(Image.open(root / "segmentations" / first.replace(".jpg", ".png")))
    assert mask.shape == (64, 64) and set(np.unique(mask).tolist()) == {0, 255} and 0.03 < (mask > 0).mean() < 0.5


def test_loopback_server_serves_a_folder_and_memory(tmp_path, no_proxy):
    (tmp_path / "site" / "sub").mkdir(parents=True)
    (tmp_path / "site" / "sub" / "a.bin").write_bytes(b"abcdef")
    (tmp_path / "secret.txt").write_text("outside")
    with fixtures.serve(tmp_path / "site") as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.httpd.server_address[0] == "127.0.0.1"
        assert urllib.request.urlopen(server.url + "/sub/a.bin").read() == b"abcdef"
        assert urllib.request.urlopen(server.add("/mem.bin", b"xyz")).read() == b"xyz"
        for missing in ("/nothing.bin", "/../secret.txt", "/sub/../../secret.txt"):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(server.url + missing)
        server.truncate.add("/mem.bin")
        with urllib.request.urlopen(server.url + "/mem.bin") as response:
            assert response.headers["Content-Length"] == "3"
            with pytest.raises(Exception):  # noqa: B017 - http.client.IncompleteRead
                response.read()
        server.pages["/page"] = "<html>once</html>"
        with urllib.request.urlopen(server.url + "/page") as response:
            assert response.headers.get_content_type() == "text/html" and b"once" in response.read()
        assert server.requests[:2] == ["/sub/a.bin", "/mem.bin"]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url + "/sub/a.bin", timeout=2)


def test_bad_fixture_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown datasets"):
        fixtures.write_mirror(tmp_path / "m", datasets=["imagenet"])
    assert not (tmp_path / "m").exists()
    with pytest.raises(ValueError, match="fmt"):
        fixtures.celeba_files(fmt="parquet")


def test_colab_smoke_fake_imagenet_weights_load_offline(tmp_path, monkeypatch):
    """tools/colab_smoke.py's state dicts under torchvision's file names: pretrained='imagenet' loads them, offline."""
    import sys
    from pathlib import Path

    import torch

    from xai_robust import models, pretrain

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import colab_smoke

    assert {"resnet18", "resnet50"} <= set(colab_smoke.imagenet_archs())
    monkeypatch.setattr(colab_smoke, "imagenet_archs", lambda: ["resnet18"])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (path,) = colab_smoke.write_fake_imagenet_weights(tmp_path)
    assert path == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    state = pretrain.imagenet_state_dict("resnet18", progress=False)
    assert torch.equal(state["conv1.weight"], torch.load(path, weights_only=True)["conv1.weight"])
    model = models.build("resnet18", 2, pretrained="imagenet", progress_bar=False)
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
