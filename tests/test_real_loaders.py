"""Real-dataset loaders on tiny fixture files written in each dataset's published format."""
import pickle

import numpy as np
import pytest
import torch

from xai_robust import data
from xai_robust.data import fixtures
from xai_robust.data.real import DatasetNotFoundError


def test_waterbirds_metadata_csv(tmp_path):
    rows = [(1, 0, 1), (0, 0, 0), (1, 1, 0), (0, 2, 1), (1, 2, 1)]  # (y, split, place)
    fixtures.write_waterbirds(tmp_path, rows=rows, size=(40, 30))
    header = (tmp_path / "metadata.csv").read_text().splitlines()[0]
    assert header == "img_id,img_filename,y,split,place,place_filename"
    train = data.load("waterbirds", "train", root=tmp_path, size=16)
    assert len(train) == 2 and train.labels.tolist() == [1, 0] and train.groups.tolist() == [3, 0]
    test = data.load("waterbirds", "test", root=tmp_path, size=16)
    assert test.groups.tolist() == [1, 3]
    x = test[0]["image"]
    # place 1 = water: a blue background around the bird (JPEG-rounded)
    assert x.shape == (3, 16, 16) and float(x[2, 0, 0]) > 0.6 and float(x[0, 0, 0]) < 0.3
    assert test.images[torch.tensor([0, 1])].shape == (2, 3, 16, 16)
    # the profile mapping: spurious_scenes stands in for waterbirds outside ci
    assert len(data.load("spurious_scenes", "val", profile="colab", root=tmp_path, size=16)) == 1


def test_waterbirds_masks_from_cub_segmentations(tmp_path):
    rows = [(1, 0, 1), (0, 0, 0), (1, 1, 0), (0, 2, 1), (1, 2, 0)]
    fixtures.write_waterbirds(tmp_path, rows=rows, size=(40, 30), segmentations=True)
    test = data.load("waterbirds", "test", root=tmp_path, size=16)
    masks = test.require_masks()
    assert masks.shape == (2, 1, 16, 16) and masks[:2].shape == (2, 1, 16, 16)
    m = masks[0]
    assert set(m.unique().tolist()) == {0.0, 1.0} and 0.05 < float(m.mean()) < 0.6
    assert float(m[0, 0, 0]) == 0 and float(m[0, 8, 8]) == 1  # background in the corner, the bird in the middle
    fg = data.load("waterbirds", "test_fg_only", root=tmp_path, size=16)
    assert torch.equal(fg.images[0], test.images[0] * m) and float(fg.images[0][:, 0, 0].sum()) == 0
    assert test.subset([1]).masks[0].shape == (1, 16, 16) and len(test.images[0:2]) == 2  # slices read lazily too
    assert test.fingerprint() != data.load("waterbirds", "test", root=tmp_path, size=16,
                                           segmentations=tmp_path / "segmentations").subset([1, 0]).fingerprint()
    next((tmp_path / "segmentations").rglob("*.png")).unlink()
    with pytest.raises(DatasetNotFoundError, match="masks are missing.*segmentations.tgz"):
        for split in ("train", "val", "test"):
            data.load("waterbirds", split, root=tmp_path)


def test_waterbirds_without_masks_says_where_to_get_them(tmp_path):
    fixtures.write_waterbirds(tmp_path, rows=[(1, 0, 1), (0, 2, 0)], size=(20, 20))
    test = data.load("waterbirds", "test", root=tmp_path, size=8)
    assert test.masks is None
    with pytest.raises(ValueError, match="no foreground masks.*segmentations.tgz"):
        test.require_masks()
    with pytest.raises(DatasetNotFoundError, match="test_fg_only.*segmentations"):
        data.load("waterbirds", "test_fg_only", root=tmp_path)
    assert test.images[0:0].shape == (0, 3, 8, 8)


def test_celeba_official_txt(tmp_path):
    fixtures.write_celeba(tmp_path, n=3, partitions=[0, 0, 2], attributes=("Blond_Hair", "Male", "Smiling"),
                          values=[[1, -1, 1], [-1, 1, -1], [1, 1, 1]])
    assert (tmp_path / "list_attr_celeba.txt").read_text().splitlines()[:2] == ["3", "Blond_Hair Male Smiling"]
    tr = data.load("celeba", "train", root=tmp_path, size=24)
    assert tr.labels.tolist() == [1, 0] and tr.spurious.tolist() == [0, 1] and tr.groups.tolist() == [2, 1]
    assert tr[1]["image"].shape == (3, 24, 24)
    te = data.load("celeba", "test", root=tmp_path, size=24)
    assert te.groups.tolist() == [3]
    csv_root = fixtures.write_celeba(tmp_path / "csv", n=3, partitions=[0, 0, 2], fmt="csv",
                                     attributes=("Blond_Hair", "Male"), values=[[1, -1], [-1, 1], [1, 1]])
    assert data.load("celeba", "train", root=csv_root, size=8).groups.tolist() == [2, 1]


def test_mnist_idx(tmp_path):
    imgs = np.random.RandomState(0).randint(0, 256, (12, 28, 28))
    fixtures.write_mnist(tmp_path, raw_layout=True, compress=False, train=(imgs, np.arange(12) % 10),
                         test=(imgs[:3], [7, 2, 1]))
    assert (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()[:4] == bytes([0, 0, 8, 3])
    tr, va, te = (data.load("mnist", s, root=tmp_path) for s in ("train", "val", "test"))
    assert len(tr) + len(va) == 12 and te.labels.tolist() == [7, 2, 1]
    assert torch.allclose(te.images[0, 0], torch.tensor(imgs[0], dtype=torch.float32) / 255)


def test_cifar10_pickles(tmp_path):
    fixtures.write_cifar10(tmp_path, n_per_batch=4)
    folder = tmp_path / "cifar-10-batches-py"
    tr = data.load("cifar10", "train", root=tmp_path)
    assert len(tr) == 16 and tr.images.shape == (16, 3, 32, 32) and tr.class_names[3] == "cat"
    te = data.load("cifar10", "test", root=tmp_path)
    batch = pickle.loads((folder / "test_batch").read_bytes())
    raw = batch[b"data"][0].reshape(3, 32, 32)  # R, G, B planes of 1,024 row-major pixels each
    assert torch.allclose(te.images[0], torch.tensor(raw, dtype=torch.float32) / 255)
    assert te.labels.tolist() == batch[b"labels"]


def test_stl10_binary(tmp_path):
    fixtures.write_stl10(tmp_path, n_train=2, n_test=4)
    folder = tmp_path / "stl10_binary"
    stored = np.fromfile(folder / "train_X.bin", dtype=np.uint8).reshape(2, 3, 96, 96)
    labels = np.fromfile(folder / "train_y.bin", dtype=np.uint8)
    tr = data.load("stl10", "train", root=tmp_path)
    assert tr.labels.tolist() == (labels.astype(int) - 1).tolist() and set(labels) <= set(range(1, 11))
    # STL-10 stores images column-major: the loader transposes them back
    assert torch.allclose(tr.images[1], torch.tensor(stored[1].transpose(0, 2, 1), dtype=torch.float32) / 255)
    assert len(data.load("stl10", "val", root=tmp_path)) == 2 and tr.class_names[2] == "car"


@pytest.mark.parametrize("name", ["waterbirds", "celeba", "mnist", "cifar10", "stl10"])
def test_missing_dataset_says_where_to_get_it(tmp_path, name):
    with pytest.raises(DatasetNotFoundError, match="(?i)download"):
        data.load(name, "train", root=tmp_path / "nothing")
