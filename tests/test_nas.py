"""Tests of Neuro-Activated Superpixels (xai_robust.nas; NAS Algorithm 1; chapter 07)."""
import pytest
import torch
from sklearn.cluster import AgglomerativeClustering
from sklearn.feature_extraction.image import grid_to_graph
from sklearn.metrics import adjusted_rand_score
from torch import nn

from xai_robust import kmeans, models, nas

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------- helpers
class Tiny(nn.Module):
    """A small conv net with named stages (stride 1, 2, 4 w.r.t. the input) and an inplace ReLU."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.layer2 = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(self.pool(self.layer2(self.layer1(self.stem(x)))).flatten(1))


class Planted(nn.Module):
    """'Activations' = the input's colour channels (1×1 identity conv), so planted colour regions are the truth."""

    def __init__(self):
        super().__init__()
        self.feat = nn.Conv2d(3, 3, 1, bias=False)
        self.down = nn.AvgPool2d(2)
        with torch.no_grad():
            self.feat.weight.copy_(torch.eye(3)[:, :, None, None])

    def forward(self, x):
        return self.down(self.feat(x)).mean((2, 3))


def planted_images(n=3, size=32, seed=0):
    """Images made of 3 rectangular regions of distinct colours plus noise; returns images and region labels."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.2, 0.9]])
    images, truth = [], []
    for _ in range(n):
        lab = torch.zeros(size, size, dtype=torch.long)
        r = int(torch.randint(size // 4, size // 2, (1,), generator=g))
        c = int(torch.randint(size // 4, 3 * size // 4, (1,), generator=g))
        lab[r:, :c] = 1
        lab[r:, c:] = 2
        img = colours[lab].permute(2, 0, 1) + 0.05 * torch.randn(3, size, size, generator=g)
        images.append(img.clamp(0, 1))
        truth.append(lab)
    return torch.stack(images), torch.stack(truth)


def snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
    }


def assert_same(a, b):
    assert a["training"] == b["training"]
    assert a["requires_grad"] == b["requires_grad"]
    assert a["hooks"] == b["hooks"]
    assert a["inplace"] == b["inplace"]
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k


# --------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("weight", [True, False])
def test_fast_path_equals_direct_given_same_init(normalize, weight):
    g = torch.Generator().manual_seed(1)
    acts = [torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64),
            torch.randn(3, 6, 4, 4, generator=g, dtype=torch.float64).relu(),
            torch.randn(3, 9, 2, 2, generator=g, dtype=torch.float64)]
    size = (32, 28)
    fast = kmeans._LowRes(acts, size, normalize=normalize, weight_by_channels=weight)
    dense = nas._features_from_activations(acts, size, normalize=normalize, weight_by_channels=weight)
    direct = kmeans._Dense(dense)
    # every building block is an exact re-ordering
    torch.testing.assert_close(fast.sq_norm, direct.sq_norm)
    idx = torch.randint(size[0] * size[1], (3, 5), generator=g)
    torch.testing.assert_close(fast.gather(idx), direct.gather(idx))
    centers = torch.randn(3, 5, dense.shape[1], generator=g, dtype=torch.float64)
    torch.testing.assert_close(fast.dots(centers), direct.dots(centers))
    labels = torch.randint(5, (3, size[0] * size[1]), generator=g)
    torch.testing.assert_close(fast.cluster_sums(labels, 5), direct.cluster_sums(labels, 5))
    torch.testing.assert_close(fast.dots(centers, -2.0), -2 * direct.dots(centers))
    keep = torch.tensor([2, 0])
    torch.testing.assert_close(fast.subset(keep).dots(centers[keep]), direct.dots(centers)[keep])
    # hence k-means from the same initial pixels returns the same labels and inertia
    l_fast, i_fast = kmeans.kmeans_pixels(fast, 5, init_pixels=idx)
    l_direct, i_direct = kmeans.kmeans_pixels(direct, 5, init_pixels=idx)
    assert torch.equal(l_fast, l_direct)
    torch.testing.assert_close(i_fast, i_direct)
    assert len(torch.unique(l_fast)) > 1


def test_public_fast_equals_direct_on_a_model():
    torch.manual_seed(0)
    model = Tiny().double().eval()
    x = torch.rand(4, 3, 24, 24, dtype=torch.float64)
    a = nas.neuro_activated_superpixels(model, x, ["stem", "layer1", "layer2"], 4, seed=3, fast=True)
    b = nas.neuro_activated_superpixels(model, x, ["stem", "layer1", "layer2"], 4, seed=3, fast=False)
    assert a.shape == (4, 24, 24) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert int(a.max()) <= 3 and int(a.min()) == 0


def test_direct_features_follow_algorithm_1():
    torch.manual_seed(0)
    model = Tiny().eval()
    x = torch.rand(2, 3, 16, 16)
    feats = nas.nas_features(model, x, ["layer1", "layer2"], size=(20, 20))
    assert feats.shape == (2, 8 + 12, 20, 20)
    # each block is unit-norm / (1 + c) per pixel (lines 10-11)
    torch.testing.assert_close(feats[:, :8].norm(dim=1), torch.full((2, 20, 20), 1 / 9))
    torch.testing.assert_close(feats[:, 8:].norm(dim=1), torch.full((2, 20, 20), 1 / 13))


# --------------------------------------------------------------------------------------------- recovery
def test_nas_recovers_planted_regions_kmeans_and_ward():
    model = Planted()
    x, truth = planted_images(3)
    seg = nas.neuro_activated_superpixels(model, x, ["feat", "down"], 3, seed=0, n_init=2)
    ward = nas.neuro_activated_superpixels(model, x, ["feat", "down"], 3, method="ward", size=(32, 32))
    for i in range(3):
        assert adjusted_rand_score(truth[i].flatten(), seg[i].flatten()) > 0.9
        assert adjusted_rand_score(truth[i].flatten(), ward[i].flatten()) > 0.9


# --------------------------------------------------------------------------------------------- determinism
def test_kmeans_deterministic_per_seed():
    torch.manual_seed(0)
    model = Tiny().eval()
    x = torch.rand(3, 3, 24, 24)
    runs = [nas.neuro_activated_superpixels(model, x, ["stem", "layer2"], 6, seed=s) for s in (0, 0, 1, 2, 3)]
    assert torch.equal(runs[0], runs[1])
    # on random noise k-means is unstable: some other seed gives another segmentation
    assert any(not torch.equal(runs[0], r) for r in runs[2:])


def test_ward_deterministic_and_equal_to_sklearn():
    torch.manual_seed(0)
    model = Tiny().eval()
    x = torch.rand(2, 3, 12, 12)
    a = nas.neuro_activated_superpixels(model, x, ["layer1", "layer2"], 4, method="ward", seed=0)
    b = nas.neuro_activated_superpixels(model, x, ["layer1", "layer2"], 4, method="ward", seed=7)
    assert torch.equal(a, b)
    feats = nas.nas_features(model, x, ["layer1", "layer2"])
    for i in range(2):
        ref = AgglomerativeClustering(4, linkage="ward", connectivity=grid_to_graph(12, 12)).fit_predict(
            feats[i].reshape(feats.shape[1], -1).T.double().numpy())
        assert adjusted_rand_score(ref, a[i].flatten().numpy()) == pytest.approx(1.0)
    c = nas.neuro_activated_superpixels(model, x, ["layer1", "layer2"], 4, method="ward", connectivity=None)
    assert c.shape == a.shape


def test_labels_are_canonical():
    labels = torch.tensor([[[2, 2, 0], [1, 0, 0]]])
    assert torch.equal(nas._first_appearance_ids(labels, 3), torch.tensor([[[0, 0, 1], [2, 1, 1]]]))


# --------------------------------------------------------------------------------------------- model untouched
def test_model_left_untouched_even_when_it_raises():
    torch.manual_seed(0)
    model = Tiny().train()
    model.layer1[0].weight.requires_grad_(False)
    before = snapshot(model)
    nas.neuro_activated_superpixels(model, torch.rand(2, 3, 16, 16), ["layer1", "layer2"], 3)
    assert_same(before, snapshot(model))
    with pytest.raises(RuntimeError):  # wrong channel count: the forward pass raises after hooks are in place
        nas.neuro_activated_superpixels(model, torch.rand(2, 4, 16, 16), ["layer1", "layer2"], 3)
    assert_same(before, snapshot(model))


def test_forward_stops_after_last_layer():
    class Boom(nn.Module):
        def forward(self, x):
            raise AssertionError("ran past the last requested layer")

    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 4, 3, padding=1))
    model.add_module("boom", Boom())
    seg = nas.neuro_activated_superpixels(model, torch.rand(1, 3, 8, 8), ["conv"], 2)
    assert seg.shape == (1, 8, 8)


def test_bad_input_errors():
    model = Tiny().eval()
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="layers"):
        nas.neuro_activated_superpixels(model, x, ["layer9"])
    with pytest.raises(ValueError, match="n_clusters"):
        nas.neuro_activated_superpixels(model, x, ["layer1"], 0)
    with pytest.raises(ValueError, match="n_clusters"):
        nas.neuro_activated_superpixels(model, x, ["layer1"], 10, size=(3, 3))
    with pytest.raises(ValueError, match="method"):
        nas.neuro_activated_superpixels(model, x, ["layer1"], method="dbscan")
    with pytest.raises(ValueError, match="upsample"):
        nas.neuro_activated_superpixels(model, x, ["layer1"], upsample="lanczos")
    with pytest.raises(ValueError, match="size"):
        nas.neuro_activated_superpixels(model, x, ["layer1"], size=(0, 4))
    with pytest.raises(ValueError, match="shape"):
        nas.neuro_activated_superpixels(model, x[0], ["layer1"])
    with pytest.raises(ValueError, match="layers"):
        nas.neuro_activated_superpixels(model, x, ["fc"])  # not a feature map


# --------------------------------------------------------------------------------------------- the optimised forward
def with_statistics(model, seed=0):
    """Non-trivial BatchNorm running statistics and affine parameters (what folding must carry)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
    return model


ARCHS = {
    "tiny": (lambda: Tiny(), ["stem", "layer1", "layer2"]),
    "small_resnet": (lambda: models.build("small_resnet", 3, seed=0), ["layer1", "layer2", "layer3"]),
    "resnet18": (lambda: models.build("resnet18", 3, seed=0, small_input=False), ["maxpool", "layer2", "layer4"]),
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_optimised_forward_equals_the_plain_one(arch, monkeypatch):
    """Folded BatchNorm and channels-last input: the same activations (float64) and NAS labels as the plain
    forward pass of the model itself; every BatchNorm of these models folds."""
    build, layers = ARCHS[arch]
    model = with_statistics(build()).double().eval()
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    net = nas._folded(model, layers)
    assert net is not None and not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the model keeps its own
    plain = nas._activations(model, x, layers, optimize=False)
    fast = nas.layer_activations(model, x, layers)
    for p, q in zip(plain, fast, strict=True):
        assert q.is_contiguous() and q.shape == p.shape
        torch.testing.assert_close(q, p, rtol=1e-10, atol=1e-12)
    a = nas.neuro_activated_superpixels(model, x, layers, 4, seed=0)
    real = nas._activations
    monkeypatch.setattr(nas, "_activations", lambda *args, **kw: real(*args, **{**kw, "optimize": False}))
    b = nas.neuro_activated_superpixels(model, x, layers, 4, seed=0)
    assert torch.equal(a, b)


def test_folded_copy_follows_the_model_and_never_changes_it():
    model = with_statistics(Tiny()).double().train()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    layers = ["layer1", "layer2"]
    before = snapshot(model)
    a = nas.layer_activations(model, x, layers)
    assert_same(before, snapshot(model))
    assert isinstance(model.layer1[1], nn.BatchNorm2d) and model.training
    net = nas._folded(model, layers)
    assert nas._folded(model, layers) is net  # cached while nothing changes
    with torch.no_grad():
        model.layer1[1].running_mean.add_(1.0)  # an in-place change of a buffer
    b = nas.layer_activations(model, x, layers)
    assert nas._folded(model, layers) is not net
    assert not torch.allclose(a[0], b[0])
    torch.testing.assert_close(b[0], nas._activations(model, x, layers, optimize=False)[0])
    model.layer1[1].eps = 0.5  # a plain attribute
    torch.testing.assert_close(nas.layer_activations(model, x, layers)[0],
                               nas._activations(model, x, layers, optimize=False)[0])
    model.layer1[0].weight = nn.Parameter(torch.randn_like(model.layer1[0].weight))  # a new parameter
    torch.testing.assert_close(nas.layer_activations(model, x, layers)[1],
                               nas._activations(model, x, layers, optimize=False)[1])


def test_which_batchnorms_fold():
    r18 = models.build("resnet18", 3, seed=0, small_input=False)
    pairs = nas._fold_pairs(r18, ["layer4"])
    assert len(pairs) == 1 + 8 * 2 + 3  # the stem, two per block, three projection shortcuts
    assert ("layer1.0", "conv1", "bn1") in pairs and ("layer2.0.downsample", "0", "1") in pairs
    # a requested convolution keeps the BatchNorm after it (its own output is wanted)
    assert ("layer1.0", "conv1", "bn1") not in nas._fold_pairs(r18, ["layer1.0.conv1"])

    class OwnForward(models.BasicBlock):  # a subclass may feed conv1's output elsewhere too
        def forward(self, x):
            y = self.conv1(x)
            return self.bn1(y) + y

    assert nas._fold_pairs(OwnForward(4, 4, 1), ["bn1"]) == []
    tiny = Tiny()
    handle = tiny.layer1.register_forward_hook(lambda *args: None)  # a user's hook sees the model's own forward
    assert nas._folded(tiny, ["layer2"]) is None
    handle.remove()
    assert nas._folded(tiny, ["layer2"]) is not None
    tiny.note = ["a list"]  # state a copy could not follow
    assert nas._folded(tiny, ["layer2"]) is None


def test_folded_forward_stops_after_last_layer():
    class Boom(nn.Module):
        def forward(self, x):
            raise AssertionError("ran past the last requested layer")

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), Boom())
    assert nas._folded(model, ["2"]) is not None
    seg = nas.neuro_activated_superpixels(model, torch.rand(1, 3, 8, 8), ["2"], 2)
    assert seg.shape == (1, 8, 8)


# --------------------------------------------------------------------------------------------- class-wise
def test_class_clustering_transfers_to_new_images():
    model = Planted()
    x_fit, _ = planted_images(4, seed=0)
    x_new, truth = planted_images(2, seed=5)
    cc = nas.class_clusters(model, x_fit, ["feat"], 3, n_pixels=600, seed=0)
    pred = cc.predict(x_new)
    assert pred.shape == truth.shape
    for i in range(2):
        assert adjusted_rand_score(truth[i].flatten(), pred[i].flatten()) > 0.9
    # class-cluster ids are shared across images: region 0 gets the same id in both images
    assert pred[0][truth[0] == 0].mode().values == pred[1][truth[1] == 0].mode().values
    with pytest.raises(ValueError, match="fit"):
        nas.ClassClustering(model, ["feat"]).predict(x_new)


def test_cluster_saliency_and_overlap_hand_computed():
    # two 2x2 images, 3 clusters; cluster 2 occurs in image 1 only
    labels = torch.tensor([[[0, 0], [1, 1]], [[0, 2], [2, 1]]])
    sal = torch.tensor([[[1.0, 3.0], [0.0, 2.0]], [[4.0, 0.0], [2.0, 4.0]]])
    mean, present = nas.cluster_saliency(sal, labels, 3, normalize=False)
    # cluster 0: image 0 mean 2, image 1 mean 4 -> 3; cluster 1: 1 and 4 -> 2.5; cluster 2: image 1 only -> 1
    torch.testing.assert_close(mean, torch.tensor([3.0, 2.5, 1.0]))
    assert present.tolist() == [True, True, True]
    # min-max per image: image 0 /3, image 1 /4
    mean, _ = nas.cluster_saliency(sal, labels, 4)
    torch.testing.assert_close(mean, torch.tensor([(2 / 3 + 1) / 2, (1 / 3 + 1) / 2, 0.25, 0.0]))
    _, present = nas.cluster_saliency(sal, labels, 4)
    assert present.tolist() == [True, True, True, False]
    masks = torch.tensor([[[[1, 0], [1, 1]]], [[[0, 0], [1, 0]]]])
    # cluster 0: pixels (1,0),(0,0) in img 0 + (0) in img 1 -> 1 of 3; cluster 1: 2 of 3; cluster 2: 1 of 2
    torch.testing.assert_close(nas.cluster_overlap(labels, masks, 4), torch.tensor([1 / 3, 2 / 3, 0.5, 0.0]))
    with pytest.raises(ValueError, match=r"0\.\.1"):
        nas.cluster_saliency(sal, labels, 2)
    with pytest.raises(ValueError, match="shape"):
        nas.cluster_saliency(sal[:, :1], labels, 3)


# --------------------------------------------------------------------------------------------- the API boundary
class Trip(nn.Module):
    """Identity, or a RuntimeError in the middle of the forward pass once armed."""

    def __init__(self):
        super().__init__()
        self.armed = False

    def forward(self, x):
        if self.armed:
            raise RuntimeError("tripped mid-forward")
        return x


class Probe(Tiny):
    """:class:`Tiny` with a trip wire between ``layer1`` and ``layer2``, counting forward passes and mode switches:
    a bad call must raise before either."""

    def __init__(self):
        super().__init__()
        self.trip = Trip()
        self.forwards = 0
        self.mode_calls = 0

    def forward(self, x):
        self.forwards += 1
        return self.fc(self.pool(self.layer2(self.trip(self.layer1(self.stem(x))))).flatten(1))

    def train(self, mode=True):
        self.mode_calls += 1
        return super().train(mode)


def mixed_mode_probe():
    """The BatchNorm of ``layer1`` in eval, every other submodule in train, one parameter frozen."""
    torch.manual_seed(0)
    model = Probe()
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        model(torch.rand(4, 3, 16, 16))
    model.layer1[1].eval()
    model.stem[0].weight.requires_grad_(False)
    model.forwards = model.mode_calls = 0
    return model


LAYERS = ["stem", "layer2"]  # the trip wire sits between them: the forward pass must reach it
NAS_CALLS = {
    "layer_activations": lambda m, x: nas.layer_activations(m, x, LAYERS),
    "nas_features": lambda m, x: nas.nas_features(m, x, LAYERS, size=8),
    "nas_kmeans_fast": lambda m, x: nas.neuro_activated_superpixels(m, x, LAYERS, 3, batch_size=1),
    "nas_kmeans_direct": lambda m, x: nas.neuro_activated_superpixels(m, x, LAYERS, 3, fast=False),
    "nas_ward": lambda m, x: nas.neuro_activated_superpixels(m, x, LAYERS, 3, method="ward", size=6),
    "class_clusters": lambda m, x: nas.class_clusters(m, x, LAYERS, 3, n_pixels=100, size=6),
    "class_clusters_predict": lambda m, x: nas.ClassClustering(m, LAYERS, 3, n_pixels=100, size=6).fit(
        x[:1]).predict(x),
}


@pytest.mark.parametrize("name", list(NAS_CALLS))
def test_mixed_mode_model_restored_per_submodule_even_when_raising_mid_forward(name):
    model = mixed_mode_probe()
    x = torch.rand(2, 3, 16, 16)
    before = snapshot(model)
    call = NAS_CALLS[name]
    call(model, x)
    assert_same(before, snapshot(model))
    assert model.layer1[1].training is False and model.layer1[0].training is True
    model.trip.armed = True  # after stem's hook and layer1's eval-mode BatchNorm ran, with the hooks in place
    with pytest.raises(RuntimeError, match="tripped"):
        call(model, x)
    assert_same(before, snapshot(model))
    calls = model.forwards, model.mode_calls
    with pytest.raises(TypeError, match=r"x has dtype torch\.float64 but the model's parameters are torch\.float32"):
        call(model, x.double())
    assert (model.forwards, model.mode_calls) == calls
    assert_same(before, snapshot(model))


class Overflow(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.big = nn.Identity()

    def forward(self, x):
        return self.big(self.conv(x) * float("inf"))


NX = torch.rand(2, 3, 16, 16)
FEATS = torch.randn(2, 5, 6, 6, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([[[0, 0], [1, 1]], [[0, 2], [2, 1]]])
SAL = torch.rand(2, 2, 2)
NAN, INF = float("nan"), float("inf")


def _planted(t, value):
    t = t.clone()
    t.view(-1)[3] = value
    return t


# (category, call(model), error type, pattern naming the argument)
BAD_CALLS = [
    ("non-finite input", lambda m: nas.neuro_activated_superpixels(m, _planted(NX, NAN), LAYERS), ValueError,
     r"x holds NaN or inf"),
    ("non-finite input", lambda m: nas.layer_activations(m, _planted(NX, INF), LAYERS), ValueError, r"x holds NaN"),
    ("non-finite input", lambda m: nas.nas_features(m, _planted(NX, -INF), LAYERS), ValueError, r"x holds NaN"),
    ("non-finite input", lambda m: nas.class_clusters(m, _planted(NX, NAN), LAYERS, 3), ValueError, r"x holds NaN"),
    ("non-finite input", lambda m: kmeans.kmeans_pixels(_planted(FEATS, INF), 3), ValueError, r"features holds NaN"),
    ("non-finite input", lambda m: nas.cluster_saliency(_planted(SAL, NAN), LABELS, 3), ValueError,
     r"saliency holds NaN"),
    ("non-finite input", lambda m: nas.cluster_overlap(LABELS, _planted(SAL, INF), 3), ValueError, r"masks holds NaN"),
    ("non-finite option", lambda m: kmeans.kmeans_pixels(FEATS, 3, tol=NAN), ValueError, r"tol must be finite"),
    ("non-finite option", lambda m: kmeans.kmeans_pixels(FEATS, 3, tol=-1e-4), ValueError, r"tol must be >= 0"),
    ("bad option", lambda m: nas.neuro_activated_superpixels(m, NX, LAYERS, fast="yes"), TypeError, r"fast must be"),
    ("bad option", lambda m: nas.neuro_activated_superpixels(m, NX, LAYERS, size=True), ValueError, r"size must be"),
    ("bad option", lambda m: nas.ClassClustering(m, LAYERS, size=(4, 0)), ValueError, r"size must be"),
    ("bad option", lambda m: nas.cluster_overlap(LABELS, torch.ones(2, 3, 2, 2), 3), ValueError,
     r"masks must have shape"),
    ("uint8", lambda m: nas.neuro_activated_superpixels(m, (NX * 255).byte(), LAYERS), TypeError,
     r"x\.float\(\) / 255"),
    ("uint8", lambda m: nas.layer_activations(m, (NX * 255).byte(), LAYERS), TypeError, r"x\.float\(\) / 255"),
    ("uint8", lambda m: nas.ClassClustering(m, LAYERS, 2).fit((NX * 255).byte()), TypeError, r"x\.float\(\) / 255"),
    ("dtype mismatch", lambda m: nas.neuro_activated_superpixels(m, NX.double(), LAYERS), TypeError,
     r"x has dtype torch\.float64 but the model's parameters are torch\.float32"),
    ("dtype mismatch", lambda m: nas.nas_features(m, NX.half(), LAYERS), TypeError,
     r"x has dtype torch\.float16 but the model's parameters are torch\.float32"),
    ("dtype mismatch", lambda m: kmeans.kmeans_pixels(FEATS.long(), 3), TypeError, r"features must be a floating"),
    ("dtype mismatch", lambda m: nas.cluster_saliency(SAL, LABELS.float(), 3), TypeError,
     r"labels must hold integer"),
    ("missing batch dim", lambda m: nas.neuro_activated_superpixels(m, NX[0], LAYERS), ValueError,
     r"x\.unsqueeze\(0\)"),
    ("missing batch dim", lambda m: nas.layer_activations(m, NX[0], LAYERS), ValueError, r"x\.unsqueeze\(0\)"),
    ("missing batch dim", lambda m: kmeans.kmeans_pixels(FEATS[0], 3), ValueError, r"features\.unsqueeze\(0\)"),
    ("missing batch dim", lambda m: nas.cluster_saliency(SAL[0], LABELS[0], 3), ValueError,
     r"saliency\.unsqueeze\(0\)"),
    ("missing batch dim", lambda m: nas.cluster_overlap(LABELS[0], SAL[0], 3), ValueError, r"labels\.unsqueeze\(0\)"),
    ("empty batch", lambda m: nas.neuro_activated_superpixels(m, NX[:0], LAYERS), ValueError, r"x is an empty batch"),
    ("empty batch", lambda m: nas.nas_features(m, NX[:0], LAYERS), ValueError, r"x is an empty batch"),
    ("empty batch", lambda m: kmeans.kmeans_pixels(FEATS[:0], 3), ValueError, r"features is empty"),
    ("empty batch", lambda m: nas.cluster_saliency(SAL[:0], LABELS[:0], 3), ValueError, r"saliency is an empty"),
    ("empty batch", lambda m: nas.cluster_overlap(LABELS[:0], SAL[:0], 3), ValueError, r"labels is an empty"),
    ("bad count", lambda m: nas.neuro_activated_superpixels(m, NX, LAYERS, 1.5), TypeError,
     r"n_clusters must be an int"),
    ("bad count", lambda m: nas.neuro_activated_superpixels(m, NX, LAYERS, True), TypeError, r"n_clusters"),
    ("bad count", lambda m: nas.neuro_activated_superpixels(m, NX, LAYERS, n_init=0), ValueError, r"n_init"),
    ("bad count", lambda m: nas.neuro_activated_superpixels(m, NX, LAYERS, max_iter=0), ValueError, r"max_iter"),
    ("bad count", lambda m: nas.neuro_activated_superpixels(m, NX, LAYERS, batch_size=0), ValueError, r"batch_size"),
    ("bad count", lambda m: nas.neuro_activated_superpixels(m, NX, LAYERS, seed=1.5), TypeError, r"seed"),
    ("bad count", lambda m: kmeans.kmeans_pixels(FEATS, 2.0), TypeError, r"n_clusters must be an int"),
    ("bad count", lambda m: kmeans.kmeans_pixels(FEATS, 3, n_init=0), ValueError, r"n_init"),
    ("bad count", lambda m: kmeans.kmeans_pixels(FEATS, 3, max_iter=2.5), TypeError, r"max_iter"),
    ("bad count", lambda m: nas.class_clusters(m, NX, LAYERS, 0), ValueError, r"n_clusters"),
    ("bad count", lambda m: nas.ClassClustering(m, LAYERS, n_pixels=10.5), TypeError, r"n_pixels"),
    ("bad count", lambda m: nas.ClassClustering(m, LAYERS, n_neighbors=0), ValueError, r"n_neighbors"),
    ("bad count", lambda m: nas.class_clusters(m, NX[:1], LAYERS, 2, size=2, n_neighbors=5), ValueError,
     r"n_neighbors=5 exceeds the 4 sampled pixels"),
    ("bad count", lambda m: nas.class_clusters(m, NX[:1], LAYERS, 5, size=2), ValueError,
     r"n_clusters=5 exceeds the 4 sampled pixels"),
    ("bad count", lambda m: kmeans.upsample_matrix(0, 4), ValueError, r"n_in"),
    ("bad count", lambda m: nas.cluster_saliency(SAL, LABELS, 2.5), TypeError, r"n_clusters"),
    ("bad target", lambda m: nas.cluster_saliency(SAL, LABELS, 2), ValueError, r"labels must lie in 0\.\.1"),
    ("bad target", lambda m: nas.cluster_saliency(SAL, LABELS[:1], 3), ValueError, r"labels of shape \(1, 2, 2\)"),
    ("bad target", lambda m: nas.cluster_overlap(LABELS - 1, SAL, 3), ValueError, r"labels must lie in 0\.\.2"),
    ("bad target", lambda m: kmeans.kmeans_pixels(FEATS, 3, init_pixels=torch.tensor([[0, 1, 36], [0, 1, 2]])),
     ValueError, r"init_pixels must be flat pixel indices in \[0, 36\)"),
    ("bad target", lambda m: kmeans.kmeans_pixels(FEATS, 3, init_pixels=torch.zeros(2, 3)), TypeError,
     r"init_pixels must hold integer"),
    ("bad target", lambda m: kmeans.kmeans_pixels(FEATS, 3, init_pixels=torch.zeros(2, 2, dtype=torch.long)),
     ValueError, r"init_pixels must have shape"),
    ("not a model", lambda m: nas.neuro_activated_superpixels(None, NX, LAYERS), TypeError, r"model must be"),
    ("not a model", lambda m: nas.ClassClustering("resnet", LAYERS), TypeError, r"model must be"),
    ("not features", lambda m: kmeans.kmeans_pixels(FEATS.numpy(), 3), TypeError, r"features must be"),
]


@pytest.mark.parametrize("category, call, error, pattern", BAD_CALLS,
                         ids=[f"{c}-{i}" for i, (c, *_rest) in enumerate(BAD_CALLS)])
def test_bad_input_raises_before_the_model_runs(category, call, error, pattern):
    """Every public function of nas: a clear error naming the argument, before any forward pass or mode switch."""
    model = mixed_mode_probe()
    before = snapshot(model)
    with pytest.raises(error, match=pattern):
        call(model)
    assert (model.forwards, model.mode_calls) == (0, 0), "the check ran after the model was touched"
    assert_same(before, snapshot(model))


def test_non_finite_activations_are_refused_and_the_model_restored():
    model = Overflow().train()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"layers: the output of module 'big' holds NaN or inf"):
        nas.neuro_activated_superpixels(model, NX, ["big"], 2)
    with pytest.raises(ValueError, match=r"'big' holds NaN or inf"):
        nas.nas_features(model, NX, ["conv", "big"])
    assert_same(before, snapshot(model))
    assert not torch.isfinite(nas.layer_activations(model, NX, ["big"])[0]).all()  # reading them stays possible


def test_numpy_and_list_labels_still_accepted():
    import numpy as np

    ref = nas.cluster_saliency(SAL, LABELS, 3)
    for labels in (LABELS.numpy(), LABELS.tolist(), LABELS.int()):
        got = nas.cluster_saliency(SAL, labels, 3)
        torch.testing.assert_close(got[0], ref[0])
        assert torch.equal(got[1], ref[1])
    masks = (SAL > 0.5)[:, None]
    torch.testing.assert_close(nas.cluster_overlap(LABELS, masks, np.int64(3)), nas.cluster_overlap(LABELS, masks, 3))
