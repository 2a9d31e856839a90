"""Partitions and super-pixel averaging (chapter 06)."""
import pytest
import torch

from xai_robust import superpixels as sp

torch.set_num_threads(1)


def images(c=3, n=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    # piecewise-constant images (four coloured quadrants) plus a little noise, so super-pixels have structure
    x = torch.zeros(n, c, size, size)
    h = size // 2
    for a, b in [(0, 0), (0, h), (h, 0), (h, h)]:
        x[:, :, a:a + h, b:b + h] = torch.rand(n, c, 1, 1, generator=g)
    return (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("method, params", [
    ("slic", {"n_segments": 20}), ("quickshift", {}), ("felzenszwalb", {}), ("watershed", {"n_segments": 16}),
    ("squares", {"patch_size": 5}), ("random", {"n_segments": 30}),
])
@pytest.mark.parametrize("c", [1, 3])
def test_partition_covers_every_pixel_once(method, params, c):
    x = images(c)
    seg = sp.segment(x, method, cache=False, **params)
    assert seg.dtype == torch.long and seg.shape == (3, 16, 16)
    for s in seg:  # ids are exactly 0..K-1: every pixel in one segment, no empty segment
        ids = s.unique()
        assert torch.equal(ids, torch.arange(len(ids)))
        assert torch.bincount(s.flatten()).sum() == 256
    assert sp.count_segments(seg).min() >= 2


def test_superpixels_respect_the_quadrants():
    x = images(3)
    for method in ("slic", "felzenszwalb"):
        seg = sp.segment(x, method, cache=False, **({"n_segments": 4, "compactness": 1.0} if method == "slic" else {}))
        # no segment straddles two quadrants of different colour
        quadrant = (torch.arange(16) >= 8).long().view(-1, 1) * 2 + (torch.arange(16) >= 8).long().view(1, -1)
        for s in seg:
            for k in s.unique():
                assert quadrant[s == k].unique().numel() == 1, method


def test_square_and_random_partitions():
    seg = sp.square_partition(2, 10, 10, patch_size=4)
    assert sp.count_segments(seg).tolist() == [9, 9]
    assert (seg[0] == 0).sum() == 16 and (seg[0] == 8).sum() == 4
    assert sp.count_segments(sp.square_partition(1, 28, 28, n_segments=49)).item() == 49
    r = sp.random_partition(2, 10, 10, n_segments=7, seed=1)
    sizes = torch.bincount(r[0].flatten())
    assert sizes.numel() == 7 and sizes.max() - sizes.min() <= 1
    assert not torch.equal(r[0], r[1])
    assert torch.equal(r, sp.random_partition(2, 10, 10, n_segments=7, seed=1))
    with pytest.raises(ValueError, match="n_segments"):
        sp.random_partition(1, 4, 4, n_segments=17)


def test_segment_mean_vectorised_matches_loop():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 2, 9, 9, generator=g)
    seg = torch.randint(0, 6, (3, 9, 9), generator=g)
    seg[1] = seg[1] * 2  # non-contiguous ids are fine
    out = sp.segment_mean(v, seg)
    for n in range(3):
        for c in range(2):
            for k in seg[n].unique():
                m = seg[n] == k
                torch.testing.assert_close(out[n, c][m], v[n, c][m].mean().expand(int(m.sum())))
    # [N,H,W] maps via superpixelify; hand-computed 2x2 case
    s = torch.tensor([[[0, 0], [1, 1]]])
    torch.testing.assert_close(sp.superpixelify(torch.tensor([[[1.0, 3.0], [4.0, 8.0]]]), s),
                               torch.tensor([[[2.0, 2.0], [6.0, 6.0]]]))
    # differentiable
    v.requires_grad_(True)
    sp.segment_mean(v, seg).sum().backward()
    torch.testing.assert_close(v.grad, torch.ones_like(v))


def test_cache_memory_and_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_ROBUST_CACHE", str(tmp_path))
    sp.clear_cache()
    x = images(3)
    a = sp.segment(x, "slic", n_segments=10, cache="disk")
    assert len(list((tmp_path / "segments").glob("*.pt"))) == 1
    a[0, 0, 0] = 99  # callers get a copy, not the cached tensor
    b = sp.segment(x, "slic", n_segments=10)
    assert b[0, 0, 0] != 99
    sp.clear_cache()
    c = sp.segment(x, "slic", n_segments=10, cache="disk")  # from disk
    assert torch.equal(b, c)
    d = sp.segment(x, "slic", n_segments=5, cache=False)
    assert not torch.equal(c, d)


def test_bad_inputs():
    x = images(3)
    with pytest.raises(ValueError, match="method"):
        sp.segment(x, "kmeans")
    with pytest.raises(ValueError, match="1 or 3 channels"):
        sp.segment(torch.rand(2, 4, 8, 8))
    with pytest.raises(TypeError, match="float"):
        sp.segment((x * 255).byte())
    with pytest.raises(TypeError, match="parameter"):
        sp.segment(x, "slic", n_segmentz=3, cache=False)
    # a 4-d attribution is averaged per channel: the same as averaging its channels' map
    a = torch.rand(3, 2, 16, 16)
    seg4 = torch.zeros(3, 16, 16, dtype=torch.long)
    torch.testing.assert_close(sp.superpixelify(a, seg4).sum(1), sp.superpixelify(a.sum(1), seg4))
    with pytest.raises(ValueError, match="shape"):
        sp.superpixelify(torch.rand(3, 1, 1, 16, 16), seg4)
    with pytest.raises(ValueError, match="segments has shape"):
        sp.superpixelify(torch.rand(3, 16, 16), torch.zeros(2, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="non-negative"):
        sp.superpixelify(torch.rand(1, 2, 2), torch.tensor([[[0, -1], [0, 0]]]))


# --------------------------------------------------------------------------------------------- the API boundary
def _planted(t, value, at=(0, 0, 0, 0)):
    t = t.clone()
    t[at[:t.dim()]] = value
    return t


X = images(3, n=2, size=8)
SEG = sp.square_partition(2, 8, 8, patch_size=4)
MAPS = torch.rand(2, 8, 8)
NAN, INF = float("nan"), float("inf")

# (category, call, error type, pattern naming the argument); partitions have no model, so "dtype mismatch"
# means a partition or map of the wrong dtype and "bad target" a partition that does not fit the images
BAD_CALLS = [
    ("non-finite input", lambda: sp.segment(_planted(X, NAN), cache=False), ValueError, r"images holds NaN or inf"),
    ("non-finite input", lambda: sp.segment(_planted(X, INF), "squares"), ValueError, r"images holds NaN or inf"),
    ("non-finite input", lambda: sp.superpixelify(_planted(MAPS, INF), SEG), ValueError, r"saliency holds NaN"),
    ("non-finite input", lambda: sp.segment_mean(_planted(MAPS, -INF), SEG), ValueError, r"saliency holds NaN"),
    ("non-finite option", lambda: sp.segment(X, "slic", compactness=NAN, cache=False), ValueError,
     r"compactness must be finite"),
    ("non-finite option", lambda: sp.segment(X, "felzenszwalb", scale=INF, cache=False), ValueError,
     r"scale must be finite"),
    ("non-finite option", lambda: sp.segment(X, "quickshift", ratio=NAN, cache=False), ValueError,
     r"ratio must be finite"),
    ("non-finite option", lambda: sp.segment(X, "slic", sigma=(NAN, 1.0), cache=False), ValueError,
     r"sigma holds NaN or inf"),
    ("bad option", lambda: sp.segment(X, "slic", compactness=0.0, cache=False), ValueError, r"compactness must be > 0"),
    ("bad option", lambda: sp.segment(X, "felzenszwalb", sigma=-1.0, cache=False), ValueError, r"sigma must be >= 0"),
    ("bad option", lambda: sp.segment(X, "slic", cache="memory"), ValueError, r"cache must be"),
    ("bad option", lambda: sp.square_partition(1, 8, 8, patch_size=2, n_segments=4), ValueError,
     r"patch_size or n_segments"),
    ("uint8", lambda: sp.segment((X * 255).byte()), TypeError, r"images\.float\(\) / 255"),
    ("uint8", lambda: sp.segment((X[0] * 255).byte(), "squares"), TypeError, r"images\.float\(\) / 255"),
    ("dtype mismatch", lambda: sp.superpixelify(MAPS, SEG.float()), TypeError, r"segments must hold integer"),
    ("dtype mismatch", lambda: sp.superpixelify((MAPS * 10).long(), SEG), TypeError,
     r"saliency must be a floating tensor"),
    ("dtype mismatch", lambda: sp.segment_mean(MAPS > 0.5, SEG), TypeError, r"saliency must be a floating tensor"),
    ("missing batch dim", lambda: sp.superpixelify(MAPS[0], SEG[0]), ValueError, r"saliency\.unsqueeze\(0\)"),
    ("missing batch dim", lambda: sp.segment(X[0, 0]), ValueError, r"images\.unsqueeze\(0\)"),
    ("missing batch dim", lambda: sp.segment_mean(MAPS[0], SEG[0]), ValueError, r"saliency\.unsqueeze\(0\)"),
    ("empty batch", lambda: sp.segment(X[:0]), ValueError, r"images is an empty batch"),
    ("empty batch", lambda: sp.superpixelify(MAPS[:0], SEG[:0]), ValueError, r"saliency is an empty batch"),
    ("empty batch", lambda: sp.count_segments(SEG[:0]), ValueError, r"segments is an empty batch"),
    ("empty batch", lambda: sp.segment(torch.rand(1, 3, 0, 8)), ValueError, r"images has no pixels"),
    ("bad count", lambda: sp.segment(X, "slic", n_segments=1.5, cache=False), TypeError, r"n_segments must be an int"),
    ("bad count", lambda: sp.segment(X, "watershed", n_segments=0, cache=False), ValueError, r"n_segments"),
    ("bad count", lambda: sp.segment(X, "squares", patch_size=True), TypeError, r"patch_size must be an int"),
    ("bad count", lambda: sp.segment(X, "felzenszwalb", min_size=2.5, cache=False), TypeError, r"min_size"),
    ("bad count", lambda: sp.segment(X, "random", seed=-1), ValueError, r"seed must be an int >= 0"),
    ("bad count", lambda: sp.square_partition(0, 8, 8), ValueError, r"n must be an int >= 1"),
    ("bad count", lambda: sp.random_partition(2, 8.0, 8), TypeError, r"height must be an int"),
    ("bad count", lambda: sp.random_partition(2, 8, 8, n_segments=65), ValueError, r"n_segments must be between"),
    ("bad target", lambda: sp.superpixelify(MAPS, SEG[:1]), ValueError, r"segments has shape \(1, 8, 8\)"),
    ("bad target", lambda: sp.segment_mean(MAPS, SEG - 1), ValueError, r"segments must hold non-negative"),
    ("not a tensor", lambda: sp.superpixelify(MAPS.numpy(), SEG), TypeError, r"saliency must be a torch\.Tensor"),
    ("not a tensor", lambda: sp.segment(X.numpy()), TypeError, r"images must be a torch\.Tensor"),
]


@pytest.mark.parametrize("category, call, error, pattern", BAD_CALLS,
                         ids=[f"{c}-{i}" for i, (c, *_rest) in enumerate(BAD_CALLS)])
def test_bad_input_names_the_argument(category, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_single_image_and_valid_variants_still_accepted():
    x = images(3, n=1)
    sp.clear_cache()
    assert torch.equal(sp.segment(x[0], "slic", n_segments=10, cache=False),
                       sp.segment(x, "slic", n_segments=10, cache=False))  # [C, H, W] is one image
    # integer-valued floats as numbers, numpy ints as counts
    import numpy as np

    assert torch.equal(sp.segment(x, "quickshift", kernel_size=2, max_dist=3, cache=False),
                       sp.segment(x, "quickshift", kernel_size=2.0, max_dist=3.0, cache=False))
    assert torch.equal(sp.segment(x, "squares", n_segments=np.int64(16)), sp.segment(x, "squares", n_segments=16))
    # sparse ids far beyond H*W give the same means as the compact ones
    v = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(sp.segment_mean(v, SEG * 10 ** 12 + 7), sp.segment_mean(v, SEG))
