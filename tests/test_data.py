"""Synthetic datasets: determinism, group proportions, masks, the deceiving split, the sample dict."""
import pytest
import torch
import torch.nn.functional as F

from xai_robust import data
from xai_robust.data.digits import mark_position


def test_determinism_per_seed():
    a = data.load("colored_digits", "train", seed=3, n=200)
    b = data.load("colored_digits", "train", seed=3, n=200)
    c = data.load("colored_digits", "train", seed=4, n=200)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    s1 = data.spurious_scenes("val", n=40, seed=1, size=32)
    s2 = data.spurious_scenes("val", n=40, seed=1, size=32)
    assert torch.equal(s1.images, s2.images) and torch.equal(s1.masks, s2.masks)


def test_cache_hit_equals_fresh_build(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_ROBUST_CACHE", str(tmp_path))
    first = data.load("parity_digits", "val", n=50)
    assert list((tmp_path / "datasets").glob("*.pt")), "the dataset was not cached"
    second = data.load("parity_digits", "val", n=50)
    assert torch.equal(first.images, second.images)
    # a corrupt cache file is rebuilt, not trusted
    for f in (tmp_path / "datasets").glob("*.pt"):
        f.write_bytes(b"garbage")
    third = data.load("parity_digits", "val", n=50)
    assert torch.equal(first.images, third.images)


@pytest.mark.parametrize("corr", [0.99, 0.9])
def test_colored_digits_group_proportions(corr):
    ds = data.load("colored_digits", "train", n=3000, correlation=corr)
    agree = (ds.spurious == ds.labels).float().mean().item()
    assert abs(agree - corr) < 3 * (corr * (1 - corr) / 3000) ** 0.5 + 0.005
    assert ds.groups.tolist() == (ds.labels * 2 + ds.spurious).tolist()
    test = data.load("colored_digits", "test", n=2000)
    assert abs((test.spurious == test.labels).float().mean().item() - 0.5) < 0.05
    # the colour really is in the pixels: red images have more red than green
    red = ds.images[:, 0].flatten(1).sum(1) > ds.images[:, 1].flatten(1).sum(1)
    assert torch.equal(red, ds.spurious == 0)
    # label is digit > 4
    assert torch.equal(ds.labels, (ds.attributes["digit"] > 4).long())


def test_scenes_proportions_and_balance():
    tr = data.spurious_scenes("train", n=1000, size=32)
    agree = (tr.spurious == tr.labels).float().mean().item()
    assert abs(agree - 0.95) < 0.025
    te = data.spurious_scenes("test", n=1000, size=32)
    for c in (0, 1):  # background balanced within each class, as in Waterbirds
        frac = (te.spurious[te.labels == c] == 0).float().mean().item()
        assert abs(frac - 0.5) < 0.07
    two = data.spurious_scenes("train", n=1000, size=32, second_shortcut=True, cooccur_correlation=0.8)
    assert two.n_groups == 8
    assert abs((two.attributes["cooccur"] == two.labels).float().mean().item() - 0.8) < 0.04


def test_scene_masks_cover_exactly_the_object():
    te = data.spurious_scenes("test", n=30, size=32)
    fg = data.spurious_scenes("test_fg_only", n=30, size=32)
    assert set(te.masks.unique().tolist()) <= {0.0, 1.0}
    # the fg-only split is zero exactly outside the mask and equals the scene inside it
    assert torch.all(fg.images * (1 - te.masks) == 0)
    assert torch.allclose(fg.images * te.masks, te.images * te.masks)
    assert (te.masks.flatten(1).sum(1) > 0).all()


def test_digit_masks_cover_exactly_the_foreground():
    ds = data.load("biased_digits", "ood", n=50)  # no mark: the image is the digit alone
    expected = F.max_pool2d((ds.images > 0.1).float(), 3, stride=1, padding=1)
    assert torch.equal(ds.masks, expected)


def test_biased_digits_marks_and_deceiving_split():
    size = 28
    iid = data.load("biased_digits", "iid", n=200)
    dec = data.load("biased_digits", "deceiving", n=200)
    ood = data.load("biased_digits", "ood", n=200)
    assert torch.equal(iid.spurious, iid.labels)
    assert (dec.spurious != dec.labels).all() and (dec.spurious >= 0).all()
    assert (ood.spurious == -1).all() and ood.images[:, :, :5].abs().sum() == 0
    for ds in (iid, dec):
        cols = mark_position(ds.spurious, size)
        for i in range(len(ds)):
            c = int(cols[i])
            assert torch.all(ds.images[i, 0, 1:3, c:c + 2] == 1.0)  # the mark of class spurious[i]
            assert ds.images[i, 0, :5].sum() == 4.0                  # and nothing else in the top rows
            assert ds.masks[i, 0, 1:3, c:c + 2].sum() == 0           # the mark is background
    # marks of different classes sit at different columns
    assert len(set(mark_position(torch.arange(10), size).tolist())) == 10


def test_biased_digits_without_bias():
    ds = data.load("biased_digits", "train", n=100, bias=False)
    assert (ds.spurious == -1).all() and ds.images[:, :, :5].sum() == 0


def test_parity_digits():
    ds = data.load("parity_digits", "train", n=300)
    assert torch.equal(ds.labels, ds.spurious % 2)
    assert ds.n_groups == 10 and torch.equal(ds.groups, ds.spurious)


def test_splits_use_disjoint_source_digits():
    tr, _ = data.digits.digit_pool("train")
    te, _ = data.digits.digit_pool("test")
    flat_tr = {tuple(x.flatten().tolist()) for x in tr}
    overlap = sum(tuple(x.flatten().tolist()) in flat_tr for x in te)
    assert overlap <= 2  # sklearn's digits contain a couple of exact duplicates


def test_sample_dict_and_subset():
    ds = data.load("spurious_scenes", "val", n=20, size=32)
    s = ds[3]
    assert set(s) == {"image", "label", "group", "mask", "spurious", "index"}
    assert s["image"].shape == (3, 32, 32) and 0 <= s["image"].min() and s["image"].max() <= 1
    sub = ds.subset([1, 3, 5])
    assert len(sub) == 3 and torch.equal(sub.images[1], ds.images[3]) and sub.group_names == ds.group_names


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        data.load("colored_digits", "holdout")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("imagenet", "train")
    with pytest.raises(ValueError, match="correlation"):
        data.load("colored_digits", "train", correlation=1.5)
    with pytest.raises(ValueError, match="profile"):
        data.load("colored_digits", "train", profile="gpu")


@pytest.mark.parametrize("n", [0, -3, 1.5, True])
def test_bad_sample_counts_raise(n):
    from xai_robust import data

    for name in ("colored_digits", "spurious_scenes"):
        with pytest.raises(ValueError, match="n must be a positive int"):
            data.load(name, "train", n=n)
