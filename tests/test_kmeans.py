"""Tests of the batched pixel k-means (xai_robust.kmeans, the engine of NAS; chapter 07) and its CPU kernels."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from xai_robust import kmeans, nas

torch.set_num_threads(1)


def _mixed_acts(dtype, seed=2):
    """Activations at four resolutions for a 20×18 output: two upsampled, one at the output's resolution (an
    identity 'upsampling') and one larger (downsampled)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 5, 7, 6, generator=g, dtype=dtype),
            torch.randn(3, 7, 3, 4, generator=g, dtype=dtype).relu(),
            torch.randn(3, 4, 20, 18, generator=g, dtype=dtype),
            torch.randn(3, 3, 26, 23, generator=g, dtype=dtype)]


# --------------------------------------------------------------------------------------------- upsampling
@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "nearest"])
def test_upsample_matrix_and_norms_match_interpolate(mode):
    a = torch.randn(2, 5, 6, 7, dtype=torch.float64)
    uy = kmeans.upsample_matrix(6, 23, mode, dtype=torch.float64)
    ux = kmeans.upsample_matrix(7, 19, mode, dtype=torch.float64)
    kw = {} if mode == "nearest" else {"align_corners": False}
    up = F.interpolate(a, size=(23, 19), mode=mode, **kw)
    torch.testing.assert_close(uy @ a @ ux.T, up)
    torch.testing.assert_close(kmeans._upsampled_sq_norms(a, uy, ux), (up ** 2).sum(1))


@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "nearest"])
def test_kernel_norms_match_interpolate(mode):
    """The compiled ‖(U a)_p‖² (local Gram terms) for every layer, including one smaller than the kernel support."""
    pytest.importorskip("numba")
    acts = _mixed_acts(torch.float64) + [torch.randn(3, 2, 1, 2, dtype=torch.float64)]
    feats = kmeans._LowRes(acts, (20, 18), upsample=mode, normalize=False, weight_by_channels=False)
    off, taps, weights, pixel_major, pixel = kmeans._kernel_layout(feats)
    norms = torch.from_numpy(kmeans._kernels().upsampled_sq_norms(off, taps, weights, pixel_major, 18))
    kw = {} if mode == "nearest" else {"align_corners": False}
    for li, a in enumerate(acts):
        torch.testing.assert_close(norms[:, li], (F.interpolate(a, size=(20, 18), mode=mode, **kw) ** 2).sum(1))
    # without normalisation and weighting the per-pixel array holds the plain squared norms
    torch.testing.assert_close(torch.from_numpy(pixel[:, 0]), norms.sum(1))


def test_kernel_layout_packs_the_geometry():
    """Five offset rows, the (at most 4) taps of every output row and column, the activations pixel-major."""
    pytest.importorskip("numba")
    acts = _mixed_acts(torch.float64)
    feats = kmeans._LowRes(acts, (20, 18))
    off, taps, weights, pixel_major, pixel = kmeans._kernel_layout(feats)
    channels = [a.shape[1] for a in acts]
    assert off.shape == (5, 5) and off.dtype == np.int64
    assert off[0].tolist() == np.cumsum([0] + channels).tolist()  # D
    assert off[4, -1] == sum(a[0].numel() for a in acts)  # A
    assert taps.shape == weights.shape == (20 + 18, 4, 4) and taps.dtype == np.int64
    assert pixel.shape == (3, 1 + 4, 20, 18)
    # the taps rebuild the interpolation matrices; the identity layer has one tap of weight 1
    for li, (_, uy, ux, _) in enumerate(feats.blocks):
        for u, first, n_out in ((uy, 0, 20), (ux, 20, 18)):
            dense = torch.zeros(n_out, acts[li].shape[2 if first == 0 else 3], dtype=torch.float64)
            for o in range(n_out):
                for t in range(4):
                    dense[o, taps[first + o, li, t]] += weights[first + o, li, t]
            torch.testing.assert_close(dense, torch.eye(n_out, dtype=torch.float64) if u is None else u)
    # layer 0's block of image 1, pixel-major: pixel (y, x) at (y * w + x) * c
    a = acts[0][1]
    block = pixel_major[1, off[4, 0]:off[4, 1]].reshape(7 * 6, 5)
    torch.testing.assert_close(torch.from_numpy(block), a.flatten(1).T)


# --------------------------------------------------------------------------------------------- recovery and references
def test_kmeans_recovers_planted_regions_from_low_resolution_activations():
    # synthetic activations: 3 blocks at 8×8 with distinct prototype vectors plus noise, upsampled to 32×32
    g = torch.Generator().manual_seed(0)
    proto = torch.randn(3, 16, generator=g) * 3
    lab = torch.zeros(8, 8, dtype=torch.long)
    lab[4:, :4] = 1
    lab[4:, 4:] = 2
    a = (proto[lab].permute(2, 0, 1) + 0.3 * torch.randn(16, 8, 8, generator=g))[None].repeat(2, 1, 1, 1)
    feats = kmeans._LowRes([a], (32, 32))
    labels, _ = kmeans.kmeans_pixels(feats, 3, seed=0, n_init=3)
    truth = lab.repeat_interleave(4, 0).repeat_interleave(4, 1)
    for i in range(2):
        assert adjusted_rand_score(truth.flatten(), labels[i].flatten()) > 0.9


def test_kmeans_matches_scikit_learn_lloyd_from_the_same_centroids():
    from sklearn.cluster import KMeans

    g = torch.Generator().manual_seed(4)
    feats = torch.randn(2, 6, 12, 12, generator=g, dtype=torch.float64)
    feats[:, :, :6] += 2.0
    idx = torch.randint(144, (2, 4), generator=g)
    labels, inertia = kmeans.kmeans_pixels(feats, 4, init_pixels=idx, tol=0.0, max_iter=300)
    for i in range(2):
        pts = feats[i].reshape(6, -1).T.numpy()
        ref = KMeans(4, init=pts[idx[i].numpy()], n_init=1, algorithm="lloyd", tol=0.0, max_iter=300).fit(pts)
        assert adjusted_rand_score(ref.labels_, labels[i].flatten().numpy()) == pytest.approx(1.0)
        assert float(inertia[i]) == pytest.approx(ref.inertia_, rel=1e-9)


# --------------------------------------------------------------------------------------------- CPU kernels
@pytest.mark.parametrize("upsample", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("normalize", [True, False])
def test_cpu_kernels_equal_the_pytorch_path(monkeypatch, upsample, normalize):
    """The numba kernels (norms, k-means++ and Lloyd, one image per task) and the batched PyTorch path make the same
    seeding picks, labels and inertia (float64)."""
    pytest.importorskip("numba")
    size = (20, 18)
    feats = kmeans._LowRes(_mixed_acts(torch.float64), size, upsample=upsample, normalize=normalize)
    calls = []
    real = kmeans._kernels
    monkeypatch.setattr(kmeans, "_kernels", lambda: calls.append(1) or real())
    idx_k = kmeans._kmeans_pp_init(feats, 5, torch.Generator().manual_seed(3))
    lab_k, in_k = kmeans.kmeans_pixels(feats, 5, seed=3)
    assert calls, "the CPU kernels were not used"
    monkeypatch.setattr(kmeans, "_kernels", lambda: None)
    torch_feats = kmeans._LowRes(_mixed_acts(torch.float64), size, upsample=upsample, normalize=normalize)
    assert not hasattr(torch_feats, "_layout")  # the PyTorch norms and path
    torch.testing.assert_close(torch_feats.sq_norm, feats.sq_norm)
    idx_t = kmeans._kmeans_pp_init(torch_feats, 5, torch.Generator().manual_seed(3))
    lab_t, in_t = kmeans.kmeans_pixels(torch_feats, 5, seed=3)
    assert torch.equal(idx_k, idx_t)
    assert torch.equal(lab_k, lab_t)
    torch.testing.assert_close(in_k, in_t)
    for max_iter in (0, 1, 3):  # the same stopping, image by image
        a = kmeans._lloyd(torch_feats, idx_t, max_iter)
        monkeypatch.setattr(kmeans, "_kernels", real)
        b = kmeans._lloyd(feats, idx_t, max_iter)
        monkeypatch.setattr(kmeans, "_kernels", lambda: None)
        assert torch.equal(a[0], b[0])
        torch.testing.assert_close(a[1], b[1])


def test_cpu_kernel_matches_scikit_learn_lloyd_on_nas_features():
    """Independent reference for the kernel path: scikit-learn's Lloyd on the materialised features."""
    from sklearn.cluster import KMeans

    pytest.importorskip("numba")
    acts = _mixed_acts(torch.float64, seed=5)
    size = (20, 18)
    feats = kmeans._LowRes(acts, size)
    dense = nas._features_from_activations(acts, size)
    idx = torch.randint(size[0] * size[1], (3, 4), generator=torch.Generator().manual_seed(6))
    labels, inertia = kmeans.kmeans_pixels(feats, 4, init_pixels=idx, tol=0.0, max_iter=300)
    for i in range(3):
        pts = dense[i].reshape(dense.shape[1], -1).T.numpy()
        ref = KMeans(4, init=pts[idx[i].numpy()], n_init=1, algorithm="lloyd", tol=0.0, max_iter=300).fit(pts)
        assert adjusted_rand_score(ref.labels_, labels[i].flatten().numpy()) == pytest.approx(1.0)
        assert float(inertia[i]) == pytest.approx(ref.inertia_, rel=1e-9)


def test_cpu_kernels_float32_agree_with_float64():
    pytest.importorskip("numba")
    acts = _mixed_acts(torch.float64, seed=7)
    a = kmeans.kmeans_pixels(kmeans._LowRes(acts, (20, 18)), 4, seed=1)[0]
    b = kmeans.kmeans_pixels(kmeans._LowRes([t.float() for t in acts], (20, 18)), 4, seed=1)[0]
    assert (a == b).float().mean() > 0.99


def test_cpu_kernels_fall_back_to_pytorch_for_unsupported_upsampling():
    """An upsampling with more than 4 taps per output row (none of PyTorch's modes) runs the PyTorch path."""
    acts = _mixed_acts(torch.float64, seed=8)[:2]
    feats = kmeans._LowRes(acts, (20, 18))
    assert kmeans._use_kernels(feats) is (kmeans._kernels() is not None)
    a, uy, ux, s = feats.blocks[0]
    feats.blocks[0] = (a, torch.full_like(uy, 1 / uy.shape[1]), ux, s)  # every output row mixes all input rows
    feats = kmeans._LowRes.subset(feats, torch.arange(3))  # a fresh object (no cached kernel layout)
    assert not kmeans._use_kernels(feats)
    labels, inertia = kmeans.kmeans_pixels(feats, 4, seed=0)
    assert labels.shape == (3, 20, 18) and torch.isfinite(inertia).all()


def test_cpu_kernels_on_the_thread_pool_equal_one_thread():
    """The kernels run image by image on torch.get_num_threads() Python threads: the same result as inline."""
    pytest.importorskip("numba")
    acts = _mixed_acts(torch.float32, seed=9)
    runs = []
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            feats = kmeans._LowRes(acts, (20, 18))
            runs.append((feats.sq_norm, *kmeans.kmeans_pixels(feats, 4, seed=2)))
        finally:
            torch.set_num_threads(before)
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
