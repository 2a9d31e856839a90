"""The digit datasets built from real MNIST (source="mnist"), on tiny IDX fixture files written here."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xai_robust import data
from xai_robust.data import fixtures
from xai_robust.data.digits import MNIST_CLEAR_ROWS, mark_position
from xai_robust.data.real import DatasetNotFoundError

N_TRAIN, N_TEST = 60, 24  # 'train' = the first 50 training images, 'val' = the last 10 (5/6 cut below 10,000)


def _fake_digits(n, rng):
    """Random 'digits': a bright blob inside MNIST's central 20×20 box, some ink in the top rows too."""
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        top, left = rng.randint(2, 12), rng.randint(4, 14)
        images[i, top:top + 12, left:left + 10] = rng.randint(60, 256, (12, 10))
    return images


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    rng = np.random.RandomState(0)
    train, test = _fake_digits(N_TRAIN, rng), _fake_digits(N_TEST, rng)
    fixtures.write_idx(root / "train-images-idx3-ubyte", train, compress=True)  # the loader reads .gz and raw files
    fixtures.write_idx(root / "train-labels-idx1-ubyte", np.arange(N_TRAIN) % 10, compress=True)
    fixtures.write_idx(root / "t10k-images-idx3-ubyte", test)
    fixtures.write_idx(root / "t10k-labels-idx1-ubyte", (np.arange(N_TEST) * 3) % 10)
    return root, torch.tensor(train).float() / 255, torch.tensor(test).float() / 255


def test_colored_mnist_follows_exmap(mnist_root):
    root, train, _ = mnist_root
    ds = data.colored_digits("train", source="mnist", root=root, seed=0)
    assert len(ds) == 50 and ds.images.shape == (50, 3, 28, 28)
    digit = torch.arange(50) % 10
    assert torch.equal(ds.attributes["digit"], digit) and torch.equal(ds.labels, (digit > 4).long())
    gray = train[:50]
    # ExMap Sec. 5.1: digits <= 4 blue, digits > 4 red; the stroke is the MNIST digit itself
    blue = ds.spurious == 0
    assert torch.equal(ds.images[:, 1], torch.zeros(50, 28, 28))
    assert torch.equal(ds.images[blue, 2], gray[blue]) and torch.equal(ds.images[~blue, 0], gray[~blue])
    assert float(ds.images[blue, 0].abs().sum()) == 0 and float(ds.images[~blue, 2].abs().sum()) == 0
    assert ds.group_names == ["digit<5 (blue)", "digit<5 (red)", "digit>4 (blue)", "digit>4 (red)"]
    assert torch.equal(ds.groups, ds.labels * 2 + ds.spurious)
    assert torch.equal(ds.masks, torch.nn.functional.max_pool2d((gray[:, None] > 0.1).float(), 3, 1, 1))
    aligned = data.colored_digits("train", source="mnist", root=root, correlation=1.0)
    assert torch.equal(aligned.spurious, aligned.labels)
    flipped = data.colored_digits("test", source="mnist", root=root, correlation=0.0)
    assert len(flipped) == N_TEST and torch.equal(flipped.spurious, 1 - flipped.labels)


def test_subsets_are_seeded_and_without_replacement(mnist_root):
    root, train, _ = mnist_root
    a = data.parity_digits("train", source="mnist", root=root, n=20, seed=1)
    b = data.parity_digits("train", source="mnist", root=root, n=20, seed=1)
    c = data.parity_digits("train", source="mnist", root=root, n=20, seed=2)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    # every image is one of the 50 training images, none twice
    match = (a.images[:, 0].reshape(20, 1, -1) == train[:50].reshape(1, 50, -1)).all(-1)
    assert torch.equal(match.sum(1), torch.ones(20, dtype=torch.long))
    assert len(set(match.float().argmax(1).tolist())) == 20
    with pytest.raises(ValueError, match="n=51 exceeds the 50 MNIST images"):
        data.colored_digits("train", source="mnist", root=root, n=51)
    with pytest.raises(ValueError, match="n must be a positive int"):
        data.parity_digits("train", source="mnist", root=root, n=0)


def test_parity_mnist_follows_fcr(mnist_root):
    root, train, test = mnist_root
    val = data.parity_digits("val", source="mnist", root=root)
    assert len(val) == 10 and torch.equal(val.images[:, 0], train[50:])  # val = the last training images
    te = data.parity_digits("test", source="mnist", root=root)
    digit = (torch.arange(N_TEST) * 3) % 10
    assert torch.equal(te.images[:, 0], test) and torch.equal(te.labels, digit % 2)
    assert torch.equal(te.spurious, digit) and torch.equal(te.groups, digit) and te.class_names == ["even", "odd"]
    big = data.parity_digits("test", source="mnist", root=root, size=32)
    assert big.images.shape == (N_TEST, 1, 32, 32) and big.masks.shape == (N_TEST, 1, 32, 32)
    assert float(big.images.min()) >= 0 and float(big.images.max()) <= 1


def test_biased_mnist_follows_faster_isnet(mnist_root):
    root, _, test = mnist_root
    tests = {s: data.biased_digits(s, source="mnist", root=root, seed=0) for s in ("iid", "ood", "deceiving")}
    digit = (torch.arange(N_TEST) * 3) % 10
    cleared = test.clone()
    cleared[:, :MNIST_CLEAR_ROWS] = 0
    for split, ds in tests.items():
        # Sec. III-A: the three test versions are the same test images with the bias, without it, or deceiving
        assert torch.equal(ds.labels, digit), split
        assert torch.equal(ds.images[:, 0, 3:], cleared[:, 3:]), split
        assert float(ds.masks[:, :, :3].sum()) == 0, split  # the mark rows are background
    assert torch.equal(tests["iid"].spurious, digit) and torch.equal(tests["ood"].spurious, torch.full_like(digit, -1))
    assert float(tests["ood"].images[:, :, :MNIST_CLEAR_ROWS].sum()) == 0
    deceiving = tests["deceiving"].spurious
    assert bool((deceiving != digit).all()) and bool((deceiving >= 0).all())
    for ds in (tests["iid"], tests["deceiving"]):
        expected = torch.zeros(N_TEST, 3, 28)
        for i, cls in enumerate(ds.spurious.tolist()):
            col = int(mark_position(cls))
            expected[i, 1:3, col:col + 2] = 1.0
        assert torch.equal(ds.images[:, 0, :3], expected)
    train = data.biased_digits("train", source="mnist", root=root, n=12, seed=0)
    assert torch.equal(train.spurious, train.labels) and len(train) == 12
    reference = data.biased_digits("train", source="mnist", root=root, bias=False)
    assert float(reference.images[:, :, :MNIST_CLEAR_ROWS].sum()) == 0 and bool((reference.spurious == -1).all())
    with pytest.raises(ValueError, match="size must be at least 20"):
        data.biased_digits("iid", source="mnist", root=root, size=16)


def test_load_uses_mnist_outside_ci(mnist_root, monkeypatch, tmp_path):
    root, train, test = mnist_root
    # paper: every image of the split; colab: 20,000 training images unless n is given
    paper = data.load("parity_digits", "train", profile="paper", root=root)
    assert len(paper) == 50 and torch.equal(paper.images[:, 0], train[:50])
    assert len(data.load("colored_digits", "train", profile="colab", root=root, n=8)) == 8
    with pytest.raises(ValueError, match="n=20000 exceeds"):
        data.load("colored_digits", "train", profile="colab", root=root)
    assert len(data.load("biased_digits", "deceiving", profile="colab", root=root)) == N_TEST
    # the default root is default_root("mnist"), where data.download("mnist") puts the files
    (tmp_path / "mnist").symlink_to(root, target_is_directory=True)
    monkeypatch.setenv("XAI_ROBUST_DATA", str(tmp_path))
    assert torch.equal(data.load("parity_digits", "test", profile="paper").images[:, 0], test)
    # source="sklearn" still gives the offline digits outside ci, and ci never reads MNIST
    offline = data.load("parity_digits", "train", profile="colab", source="sklearn", n=30)
    assert torch.equal(offline.images, data.parity_digits("train", n=30).images)
    assert torch.equal(data.load("parity_digits", "test", n=30).images, data.parity_digits("test", n=30).images)


def test_mnist_raw_layout_and_missing_files(mnist_root, tmp_path):
    root, _, test = mnist_root
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in root.iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    assert torch.equal(data.parity_digits("test", source="mnist", root=tmp_path).images[:, 0], test)
    with pytest.raises(DatasetNotFoundError, match=r"download\('mnist'"):
        data.colored_digits("train", source="mnist", root=tmp_path / "nothing")


def test_bad_source_arguments(mnist_root):
    root, _, _ = mnist_root
    with pytest.raises(ValueError, match="source must be one of"):
        data.colored_digits("train", source="MNIST")
    with pytest.raises(ValueError, match="root= is only read with source='mnist'"):
        data.parity_digits("train", root=root)
    with pytest.raises(ValueError, match="splits"):
        data.biased_digits("test", source="mnist", root=root)
