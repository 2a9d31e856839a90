"""Tests for xai_robust.cluster (ExMap pseudo-groups, chapter 04).

References: scikit-learn's SpectralClustering / cluster_qr / KMeans, scipy's normalized Laplacian,
and planted (class x attribute) groups.
"""
import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import laplacian
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from xai_robust import cluster, models, references


def planted(n_per_group=60, noise=0.3, dim=40, seed=0):
    """Representations with 2 classes x 2 attributes planted as orthogonal patterns + noise."""
    rng = np.random.default_rng(seed)
    patterns = np.linalg.qr(rng.standard_normal((dim, 4)))[0].T * 3  # class 0, class 1, attr 0, attr 1
    y, a, rows = [], [], []
    for c in (0, 1):
        for s in (0, 1):
            n = n_per_group if (c == s) else n_per_group // 3  # minority groups are smaller
            rows.append(patterns[c] + patterns[2 + s] + noise * rng.standard_normal((n, dim)))
            y += [c] * n
            a += [s] * n
    return np.concatenate(rows).astype(np.float32), np.array(y), np.array(a)


@pytest.mark.parametrize("centers", [3, 5])
def test_eigengap_finds_separated_blobs(centers):
    x, _ = make_blobs(300, centers=centers, n_features=8, cluster_std=0.5, center_box=(-20, 20), random_state=1)
    assert cluster.eigengap(x) == centers
    assert cluster.eigengap(cluster.knn_affinity(x)) == centers  # sparse input = an affinity


def test_laplacian_eigenvalues_match_dense_reference_dense_and_lobpcg_paths():
    for n in (300, 900):  # dense eigh below 500 nodes, LOBPCG above
        x, _ = make_blobs(n, centers=4, n_features=6, cluster_std=1.5, random_state=0)
        w = cluster.knn_affinity(x)
        ref = np.sort(np.linalg.eigvalsh(laplacian(w.toarray(), normed=True)))[:13]
        np.testing.assert_allclose(cluster.laplacian_eigenvalues(w, 13), ref, atol=1e-5)


def test_eigengap_rule_is_exmaps():
    # eigenvalues 0, 0, 0, .5, ...: three near-zero -> k = 3; the first gap (k=1) is never chosen
    lam = np.array([0, 0.01, 0.02, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    assert cluster._gap_k(lam, 10) == 3
    lam = np.array([0, 0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.0])
    assert cluster._gap_k(lam, 10) == 2  # argmax(diff(eig)[1:10]) + 2 ignores lambda_1 - lambda_0


def test_spectral_clustering_matches_sklearn():
    from sklearn.cluster import SpectralClustering

    x, truth = make_blobs(400, centers=4, n_features=5, cluster_std=2.5, random_state=3)
    n_neighbors = int(np.log(len(x)))
    ref = SpectralClustering(4, affinity="nearest_neighbors", n_neighbors=n_neighbors, assign_labels="cluster_qr",
                             random_state=0).fit_predict(x)
    ours, k = cluster.spectral_clustering(x, 4, pca=None)
    assert k == 4
    assert adjusted_rand_score(ref, ours) > 0.98
    auto, k_auto = cluster.spectral_clustering(x, pca=None)
    assert k_auto == 4 and adjusted_rand_score(truth, auto) > 0.9


def test_cluster_qr_matches_sklearn():
    from sklearn.cluster._spectral import cluster_qr as sk_cluster_qr

    v = np.random.default_rng(0).standard_normal((50, 4))
    np.testing.assert_array_equal(cluster.cluster_qr(v), sk_cluster_qr(v))


def test_kmeans_matches_sklearn():
    from sklearn.cluster import KMeans

    x, _ = make_blobs(200, centers=3, n_features=4, random_state=2)
    ours, k = cluster.kmeans(x, 3, seed=0)
    ref = KMeans(3, n_init=10, random_state=0).fit_predict(x.astype(np.float32))
    assert k == 3 and adjusted_rand_score(ours, ref) == 1.0


@pytest.mark.parametrize("method,scope", [("spectral", "global"), ("spectral", "local"),
                                          ("kmeans", "global"), ("kmeans", "local")])
def test_pseudo_groups_recover_planted_groups(method, scope):
    x, y, a = planted()
    truth = 2 * y + a
    k = None if method == "spectral" else (4 if scope == "global" else 2)
    g = cluster.pseudo_groups(torch.from_numpy(x), torch.from_numpy(y), method=method, scope=scope, k=k)
    assert g.dtype == torch.long and g.shape == (len(x),)
    assert adjusted_rand_score(truth, g.numpy()) > 0.95


def test_group_ids_disjoint_across_classes_and_consecutive():
    x, y, _ = planted(noise=2.0, seed=1)  # noisy: clusters straddle classes under global scope
    for scope in ("global", "local"):
        g, k = cluster.pseudo_groups(x, y, k=3, scope=scope, return_k=True)
        g = g.numpy()
        for gid in np.unique(g):
            assert len(np.unique(y[g == gid])) == 1, "a pseudo group mixes two classes"
        assert np.array_equal(np.unique(g), np.arange(g.max() + 1))
        assert k == 3 if scope == "global" else k == [3, 3]


def test_pca_option_keeps_the_clustering():
    x, y, a = planted(dim=300)
    g_full = cluster.pseudo_groups(x, y, pca=None)
    g_pca = cluster.pseudo_groups(x, y, pca=20)
    assert adjusted_rand_score(g_full.numpy(), g_pca.numpy()) > 0.95


def test_degenerate_inputs_raise_clear_errors():
    x, y, _ = planted()
    with pytest.raises(ValueError, match="single class"):
        cluster.pseudo_groups(x, np.zeros(len(x), dtype=np.int64))
    with pytest.raises(ValueError, match="fewer than k|only"):
        cluster.pseudo_groups(x[:6], np.array([0, 0, 0, 1, 1, 1]), k=4, scope="local")
    with pytest.raises(ValueError, match="only 6 samples"):
        cluster.pseudo_groups(x[:6], np.array([0, 0, 0, 1, 1, 1]), k=10)
    with pytest.raises(ValueError, match="at least 12 samples"):
        cluster.pseudo_groups(x[:6], np.array([0, 0, 0, 1, 1, 1]))
    with pytest.raises(ValueError, match="constant"):
        cluster.pseudo_groups(np.zeros((50, 10)), np.repeat([0, 1], 25))
    with pytest.raises(ValueError, match="NaN"):
        bad = x.copy()
        bad[0, 0] = np.nan
        cluster.pseudo_groups(bad, y)
    with pytest.raises(TypeError, match="integer"):
        cluster.pseudo_groups(x, y.astype(float))
    with pytest.raises(ValueError, match="shape"):
        cluster.pseudo_groups(x, y[:-1])
    with pytest.raises(ValueError, match="method"):
        cluster.pseudo_groups(x, y, method="dbscan")
    with pytest.raises(ValueError, match="scope"):
        cluster.pseudo_groups(x, y, scope="both")
    with pytest.raises(ValueError, match="2-D"):
        cluster.pseudo_groups(x[:, :, None], y)


def test_normalize_heatmaps():
    h = torch.randn(5, 3, 8, 8)
    h[2] = 0
    r = cluster.normalize_heatmaps(h)
    assert r.shape == (5, 3 * 64)
    np.testing.assert_allclose(r.abs().amax(1).numpy(), [1, 1, 0, 1, 1])
    assert torch.equal(torch.sign(r[0]), torch.sign(h[0].flatten()))  # signed
    r4 = cluster.normalize_heatmaps(h, size=4)
    ref = torch.nn.functional.interpolate(h, size=(4, 4), mode="bilinear", align_corners=False).flatten(1)
    ref = ref / ref.abs().amax(1, keepdim=True).clamp_min(1e-30)
    torch.testing.assert_close(r4, ref)
    with pytest.raises(ValueError, match="shape"):
        cluster.normalize_heatmaps(h[0])


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))

    def forward(self, x):
        return self.net(x)


def _grad_x_input(model, x, target=None):
    x = x.clone().requires_grad_(True)
    out = model(x)
    t = out.argmax(1) if target is None else torch.as_tensor(target).expand(len(x))
    (g,) = torch.autograd.grad(out.gather(1, t.view(-1, 1)).sum(), x)
    return (g * x).detach()


def test_heatmap_representations_with_any_attribution_and_model_restored():
    torch.manual_seed(0)
    model = _Tiny().train()
    x = torch.rand(10, 3, 6, 6)
    r = cluster.heatmap_representations(model, x, attribution=_grad_x_input, batch_size=4, progress=False,
                                        relevance="logit")
    assert model.training, "train mode must be restored"
    model.eval()
    ref = cluster.normalize_heatmaps(_grad_x_input(model, x))
    torch.testing.assert_close(r, ref)
    params = [p.clone() for p in model.parameters()]

    def broken(model, x, target):
        raise RuntimeError("boom")

    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        cluster.heatmap_representations(model, x, attribution=broken, progress=False)
    assert model.training
    assert all(torch.equal(p, q) for p, q in zip(params, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="expected the input"):
        cluster.heatmap_representations(model, x, attribution=lambda m, x, t: x[:, :1], progress=False)


def test_heatmap_representations_default_attribution_runs():
    torch.manual_seed(0)
    model = _Tiny().eval()
    r = cluster.heatmap_representations(model, torch.rand(4, 3, 6, 6), progress=False)
    assert r.shape == (4, 3 * 36) and torch.isfinite(r).all()


def test_heatmap_representations_restores_each_submodules_mode_also_when_it_raises():
    model = models.build("small_resnet", 2, seed=0).train()
    model.layer2.bn1.eval()  # a frozen BatchNorm inside a training model
    modes = {name: m.training for name, m in model.named_modules()}
    x = torch.rand(4, 3, 28, 28)
    cluster.heatmap_representations(model, x, attribution=_grad_x_input, progress=False)
    assert {name: m.training for name, m in model.named_modules()} == modes

    def broken(model, x, target=None):
        raise RuntimeError("mid-explanation failure")

    with pytest.raises(RuntimeError, match="mid-explanation"):
        cluster.heatmap_representations(model, x, attribution=broken, progress=False)
    assert {name: m.training for name, m in model.named_modules()} == modes


def test_relevance_seed_one_is_exmaps_zennit_one_hot_seed():
    """ExMap's code seeds the explained class with relevance 1 (zennit, one-hot output relevance)."""
    from zennit.attribution import Gradient

    torch.manual_seed(3)
    model = models.build("small_resnet", 2, seed=3).eval()
    x = torch.rand(12, 3, 16, 16)
    with torch.no_grad():  # shift the logits so that about half the predicted logits are negative
        models.last_linear(model).bias.sub_(model(x).max(1).values.median() + 1e-4)
    z = model(x).detach()
    t = z.argmax(1)
    assert (z.max(1).values < 0).any() and (z.max(1).values > 0).any()
    one = cluster.heatmap_representations(model, x, attribution=references.zennit_heatmap, progress=False)
    logit = cluster.heatmap_representations(model, x, attribution=references.zennit_heatmap, progress=False,
                                            relevance="logit")
    with Gradient(model=model, composite=references.exmap_composite()) as attributor:
        _, ref = attributor(x.clone().requires_grad_(True), torch.nn.functional.one_hot(t, 2).float())
    ref = ref * model.normalize.std  # relevance at the first layer's input, as zennit_heatmap returns it
    torch.testing.assert_close(one, cluster.normalize_heatmaps(ref), atol=1e-5, rtol=1e-4)
    negative = z.max(1).values < 0
    torch.testing.assert_close(one[negative], -logit[negative])
    torch.testing.assert_close(one[~negative], logit[~negative])
    with pytest.raises(ValueError, match="relevance"):
        cluster.heatmap_representations(model, x, relevance="value", progress=False)


def test_pca_is_off_by_default_as_in_exmaps_code():
    import inspect

    for fn in (cluster.pseudo_groups, cluster.spectral_clustering, cluster.kmeans, cluster.eigengap):
        assert inspect.signature(fn).parameters["pca"].default is None, fn.__name__


def test_heatmap_representations_read_image_files_batch_by_batch(tmp_path):
    """A real dataset's LazyImages (image files read per batch) give the representations of the same tensor."""
    from PIL import Image

    from xai_robust.data.base import LazyImages

    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(paths[-1])
    lazy = LazyImages(paths, 16)
    tensor = torch.stack([lazy[i] for i in range(6)])
    model = models.build("conv2net", 2, in_channels=3, seed=0).eval()
    ours = cluster.heatmap_representations(model, lazy, batch_size=4, progress=False)
    torch.testing.assert_close(ours, cluster.heatmap_representations(model, tensor, batch_size=4, progress=False))
