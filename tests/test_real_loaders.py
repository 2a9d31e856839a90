"""Real-dataset loaders on tiny fixture files written in each dataset's published format."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from xai_robust import data
from xai_robust.data.real import DatasetNotFoundError


def _png(path, colour, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_waterbirds_metadata_csv(tmp_path):
    rows = [("001.Black_footed_Albatross/a.jpg", 1, 0, 1), ("002.Laysan/b.jpg", 0, 0, 0),
            ("003.Sooty/c.jpg", 1, 1, 0), ("004.Crested/d.jpg", 0, 2, 1), ("005.Least/e.jpg", 1, 2, 1)]
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    for i, (f, y, s, p) in enumerate(rows):
        _png(tmp_path / f, (255 * y, 0, 255 * p))
        lines.append(f"{i + 1},{f},{y},{s},{p},/x/y.jpg")
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    train = data.load("waterbirds", "train", root=tmp_path, size=16)
    assert len(train) == 2 and train.labels.tolist() == [1, 0] and train.groups.tolist() == [3, 0]
    test = data.load("waterbirds", "test", root=tmp_path, size=16)
    assert test.groups.tolist() == [1, 3]
    x = test[0]["image"]
    # blue = place 1 (JPEG-rounded)
    assert x.shape == (3, 16, 16) and float(x[2].mean()) > 0.95 and float(x[0].mean()) < 0.05
    assert test.images[torch.tensor([0, 1])].shape == (2, 3, 16, 16)
    # the profile mapping: spurious_scenes stands in for waterbirds outside ci
    assert len(data.load("spurious_scenes", "val", profile="colab", root=tmp_path, size=16)) == 1


def test_celeba_official_txt(tmp_path):
    ids = ["000001.jpg", "000002.jpg", "000003.jpg"]
    for i in ids:
        _png(tmp_path / "img_align_celeba" / i, (10, 20, 30), (178, 218))
    header = "Blond_Hair Male Smiling"
    attrs = {"000001.jpg": "1 -1 1", "000002.jpg": "-1 1 -1", "000003.jpg": "1 1 1"}
    (tmp_path / "list_attr_celeba.txt").write_text(
        f"3\n{header}\n" + "\n".join(f"{i} {attrs[i]}" for i in ids) + "\n")
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n000003.jpg 2\n")
    tr = data.load("celeba", "train", root=tmp_path, size=24)
    assert tr.labels.tolist() == [1, 0] and tr.spurious.tolist() == [0, 1] and tr.groups.tolist() == [2, 1]
    assert tr[1]["image"].shape == (3, 24, 24)
    te = data.load("celeba", "test", root=tmp_path, size=24)
    assert te.groups.tolist() == [3]


def _idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def test_mnist_idx(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = np.random.RandomState(0).randint(0, 256, (12, 28, 28))
    _idx(raw / "train-images-idx3-ubyte", imgs)
    _idx(raw / "train-labels-idx1-ubyte", np.arange(12) % 10)
    _idx(raw / "t10k-images-idx3-ubyte", imgs[:3])
    _idx(raw / "t10k-labels-idx1-ubyte", [7, 2, 1])
    tr, va, te = (data.load("mnist", s, root=tmp_path) for s in ("train", "val", "test"))
    assert len(tr) + len(va) == 12 and te.labels.tolist() == [7, 2, 1]
    assert torch.allclose(te.images[0, 0], torch.tensor(imgs[0], dtype=torch.float32) / 255)


def test_cifar10_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.randint(0, 256, (4, 3072)).astype(np.uint8), b"labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    tr = data.load("cifar10", "train", root=tmp_path)
    assert len(tr) == 16 and tr.images.shape == (16, 3, 32, 32) and tr.class_names[3] == "c3"
    te = data.load("cifar10", "test", root=tmp_path)
    raw = pickle.loads((folder / "test_batch").read_bytes())[b"data"][0].reshape(3, 32, 32)
    assert torch.allclose(te.images[0], torch.tensor(raw, dtype=torch.float32) / 255)


def test_stl10_binary(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    x = np.random.RandomState(0).randint(0, 256, (2, 3, 96, 96)).astype(np.uint8)
    x.transpose(0, 1, 3, 2).tofile(folder / "train_X.bin")  # STL-10 stores images column-major
    np.array([1, 10], dtype=np.uint8).tofile(folder / "train_y.bin")
    tr = data.load("stl10", "train", root=tmp_path)
    assert tr.labels.tolist() == [0, 9]
    assert torch.allclose(tr.images[1], torch.tensor(x[1], dtype=torch.float32) / 255)


@pytest.mark.parametrize("name", ["waterbirds", "celeba", "mnist", "cifar10", "stl10"])
def test_missing_dataset_says_where_to_get_it(tmp_path, name):
    with pytest.raises(DatasetNotFoundError, match="(?i)download"):
        data.load(name, "train", root=tmp_path / "nothing")
