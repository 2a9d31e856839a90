"""Bad input at the public API boundary: one case per category of the reliability probe (issue #14).

Every case asserts the error type and that the message names the argument (or the fix), and the model-state
cases assert that explanation functions leave every submodule exactly as found, also when they raise.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from xai_robust import attribution, checks, cluster, data, isnet, losses, lrp, metrics, references, sca, train


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _x(n=4, seed=0):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _nan_x():
    x = _x()
    x[0, 0, 0, 0] = float("nan")
    return x


def _dataset(n=16, labels=None):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g) if labels is None else labels
    return data.SampleDataset(torch.rand(n, 3, 8, 8, generator=g), y, torch.zeros(n, dtype=torch.long),
                              group_names=["all"], class_names=["a", "b", "c"])


EXPLAINERS = {
    "input_gradient": lambda m, x, **kw: attribution.input_gradient(m, x, **kw),
    "gradient_x_input": lambda m, x, **kw: attribution.gradient_x_input(m, x, **kw),
    "lrp_flex": lambda m, x, **kw: lrp.lrp_flex(m, x, **kw),
    "lrp_flex_zplus": lambda m, x, **kw: lrp.lrp_flex(m, x, rule="zplus", **kw),
    "zennit_heatmap": lambda m, x, **kw: references.zennit_heatmap(m, x, **kw),
    "isnet_heatmaps": lambda m, x, **kw: isnet.isnet_heatmaps(m, x, variant="selective", **kw),
    "heatmap_representations": lambda m, x, **kw: cluster.heatmap_representations(m, x, progress=False, **kw),
    "smoothgrad": lambda m, x, **kw: attribution.smoothgrad(m, x, n_samples=2, **kw),
    "integrated_gradients": lambda m, x, **kw: attribution.integrated_gradients(m, x, n_steps=2, **kw),
    "grad_cam": lambda m, x, **kw: attribution.grad_cam(
        m, x, layer=next(mod for mod in m.modules() if isinstance(mod, nn.ReLU)), **kw),
    "occlusion": lambda m, x, **kw: attribution.occlusion(m, x, window=4, **kw),
}


# ------------------------------------------------------------------------------------------------ inputs
@pytest.mark.parametrize("name", sorted(EXPLAINERS))
@pytest.mark.parametrize("x, error, match", [
    (_nan_x(), ValueError, "NaN"),
    ((_x() * 255).to(torch.uint8), TypeError, "255"),
    (_x()[0], ValueError, "unsqueeze"),
    (_x()[:0], ValueError, "empty"),
    (_x().double(), TypeError, "float64"),
], ids=["nan", "uint8", "no-batch-dim", "empty", "float64-into-float32"])
def test_explainers_refuse_bad_images_before_touching_the_model(name, x, error, match):
    model = _model().train()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=match):
        EXPLAINERS[name](model, x)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "running statistics changed"


@pytest.mark.parametrize("target, match", [(3, "outside"), (torch.tensor([0, 1]), r"shape \(4,\)"),
                                           ("label", "LongTensor")])
def test_out_of_range_or_malformed_targets(target, match):
    with pytest.raises(ValueError, match=match):
        attribution.input_gradient(_model().eval(), _x(), target)


@pytest.mark.parametrize("option, value", [("epsilon", float("nan")), ("epsilon", -1.0), ("mu", float("inf")),
                                           ("mu", 0.0)])
def test_lrp_flex_float_options(option, value):
    with pytest.raises(ValueError, match=option):
        lrp.lrp_flex(_model().eval(), _x(), **{option: value})


# ------------------------------------------------------------------------------------------------ lrp_flex modules
class _Leaf(nn.Module):
    """A leaf module with its own nonlinearity that LRP-Flex cannot see into."""

    def forward(self, x):
        return x * x.abs()


@pytest.mark.parametrize("module", [nn.LayerNorm([4, 8, 8]), nn.GroupNorm(2, 4), _Leaf(), nn.Threshold(0.1, 0.0),
                                    nn.Hardshrink(), nn.Softmax2d(), nn.Upsample(scale_factor=2)],
                         ids=lambda m: type(m).__name__)
def test_lrp_flex_refuses_modules_it_cannot_explain(module):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), module, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    with pytest.raises(ValueError, match=type(module).__name__):
        lrp.lrp_flex(model, _x())


def test_lrp_flex_zplus_with_batch_statistics_refused_before_the_forward_pass():
    model = _model().train()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="batchnorm='eval'"):
        lrp.lrp_flex(model, _x(), rule="zplus", batchnorm="batch")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_train_mode_dropout_does_not_make_heatmaps_random():
    model = _model().train()
    a, b = lrp.lrp_flex(model, _x()), lrp.lrp_flex(model, _x())
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert model[3].training, "the dropout module's own mode is restored"


# ------------------------------------------------------------------------------------------------ model state
class _Fail(nn.Module):
    """A container that raises in the middle of the forward pass after the first layers have run."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        self.armed = False

    def forward(self, x):
        h = self.body(x)
        if self.armed:
            raise RuntimeError("mid-forward failure")
        return self.head(h)


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_explainers_restore_every_submodule_also_when_the_forward_raises(name):
    model = _Fail().train()
    model.body[1].eval()  # a frozen BatchNorm inside a training model
    modes = {n: m.training for n, m in model.named_modules()}
    flags = [p.requires_grad for p in model.parameters()]
    model.body[0].weight.requires_grad_(False)
    flags[0] = False
    EXPLAINERS[name](model, _x())
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    model.armed = True
    with pytest.raises(RuntimeError, match="mid-forward"):
        EXPLAINERS[name](model, _x())
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(isinstance(m.inplace, bool) for m in model.modules() if isinstance(m, nn.ReLU))


# ------------------------------------------------------------------------------------------------ training
def test_fit_refuses_labels_out_of_range_before_training():
    ds = _dataset(labels=torch.full((16,), 5))
    model = _model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="dataset.labels"):
        train.fit(model, ds, epochs=1, cache=False, progress_bar=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_fit_names_a_dtype_mismatch():
    with pytest.raises(TypeError, match="float64"):
        train.fit(_model().double(), _dataset(), epochs=1, cache=False, progress_bar=False)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(epochs=1.5), ValueError, "epochs"), (dict(epochs=1, batch_size=0), ValueError, "batch_size"),
    (dict(epochs=1, sample_weights=torch.full((16,), float("nan"))), ValueError, "sample_weights"),
])
def test_fit_counts_and_weights(kwargs, error, match):
    with pytest.raises(error, match=match):
        train.fit(_model(), _dataset(), cache=False, progress_bar=False, **kwargs)


@pytest.mark.parametrize("call, error, match", [
    (lambda: train.predict(_model(), _x(), batch_size=0), ValueError, "batch_size"),
    (lambda: train.predict(_model(), _x().double()), TypeError, "float64"),
    (lambda: train.predict(_model(), (_x() * 255).to(torch.uint8)), TypeError, "255"),
    (lambda: train.embed(_model(), _nan_x()), ValueError, "NaN"),
    (lambda: data.load("colored_digits", "train", n=0), ValueError, "n must be"),
    (lambda: data.load("colored_digits", "train", n=-3), ValueError, "n must be"),
], ids=["predict-batch0", "predict-float64", "predict-uint8", "embed-nan", "load-n0", "load-negative"])
def test_predict_embed_load(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_isnet_loss_labels_out_of_range():
    x, masks = _x(), torch.ones(4, 1, 8, 8)
    with pytest.raises(ValueError, match="y must lie"):
        isnet.isnet_loss(_model(), x, torch.tensor([0, 1, 2, 7]), masks, variant="selective", ranges=(1.0, 2.0), P=0.5)
    with pytest.raises(TypeError, match="integer"):
        isnet.isnet_loss(_model(), x, torch.zeros(4), masks, variant="selective", ranges=(1.0, 2.0), P=0.5)


# ------------------------------------------------------------------------------------------------ losses
@pytest.mark.parametrize("call, match", [
    (lambda h, m: losses.background_loss(h, m), "heatmaps"),
    (lambda h, m: losses.foreground_relevance(h, m), "heatmaps"),
    (lambda h, m: losses.lrp_loss(h, m, c1=1.0, c2=2.0), "heatmaps"),
    (lambda h, m: losses.foreground_loss(h.flatten(1).sum(1), 1.0, 2.0), "s"),
    (lambda h, m: losses.gwrp(h.flatten(1), 0.9), "x"),
    (lambda h, m: losses.is_loss(torch.tensor(float("nan")), torch.tensor(1.0), 0.5), "classification"),
    (lambda h, m: losses.background_loss(torch.rand(2, 1, 4, 4), m.float() * float("nan")), "masks"),
])
def test_losses_refuse_non_finite_values(call, match):
    h = torch.rand(2, 1, 4, 4)
    h[0, 0, 0, 0] = float("inf")
    m = torch.zeros(2, 1, 4, 4)
    m[:, :, 1:3, 1:3] = 1
    with pytest.raises(ValueError, match=match):
        call(h, m)


def test_background_loss_in_half_precision_is_finite_and_equals_float32():
    h = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    m = torch.zeros(2, 1, 8, 8)
    m[:, :, 2:5, 2:5] = 1
    half = losses.background_loss(h.half(), m)
    assert torch.isfinite(half)
    torch.testing.assert_close(half, losses.background_loss(h.half().float(), m))


def test_resize_masks_upsamples_as_the_official_code_or_nearest():
    m = torch.zeros(1, 1, 3, 3)
    m[0, 0, 1, 1] = 1
    official = losses.resize_masks(m, (4, 4))  # adaptive average pooling, also when enlarging
    nearest = losses.resize_masks(m, (4, 4), upsample="nearest")
    expected = torch.zeros(4, 4)
    expected[1:3, 1:3] = 1  # every output cell that overlaps the foreground pixel
    torch.testing.assert_close(official[0, 0], expected)
    assert nearest.sum() < official.sum()
    with pytest.raises(ValueError, match="upsample"):
        losses.resize_masks(m, (4, 4), upsample="bicubic")


# ------------------------------------------------------------------------------------------------ groups, SCA
def test_group_ids_beyond_n_groups_raise():
    with pytest.raises(ValueError, match="n_groups"):
        zeros = torch.zeros(3, dtype=torch.long)
        metrics.group_accuracies(zeros, zeros, torch.tensor([0, 1, 2]), n_groups=2)


@pytest.mark.parametrize("features, error, match", [
    (torch.empty(0, 4), ValueError, "empty"), (torch.full((6, 4), float("nan")), ValueError, "NaN"),
    (torch.rand(6, 5), ValueError, "columns"),
])
def test_sca_features(features, error, match):
    lin = nn.Linear(4, 2)
    labels = torch.zeros(len(features), dtype=torch.long)
    with pytest.raises(error, match=match):
        sca.sca_scores(features, labels, lin, 0)


def test_remove_class_absent_from_labels_raises_and_edits_nothing():
    lin = nn.Linear(4, 3)
    before = lin.weight.detach().clone()
    with pytest.raises(ValueError, match="class 2 does not occur in labels"):
        sca.remove_class(lin, torch.rand(6, 4), torch.zeros(6, dtype=torch.long), 2)
    assert torch.equal(before, lin.weight)


# ------------------------------------------------------------------------------------------------ checks itself
@pytest.mark.parametrize("call, error, match", [
    (lambda: checks.check_count(True, "k"), TypeError, "k"),
    (lambda: checks.check_count(1.5, "steps"), TypeError, "steps"),
    (lambda: checks.check_count(0, "n"), ValueError, "n must"),
    (lambda: checks.check_number(float("nan"), "lam"), ValueError, "lam"),
    (lambda: checks.check_number(2.0, "P", high=1.0), ValueError, "P"),
    (lambda: checks.check_labels(torch.tensor([0.0, 1.0]), 2, 2, "y"), TypeError, "y"),
    (lambda: checks.check_labels(torch.tensor([0, 1]), 3, 2, "y"), ValueError, r"\(3,\)"),
    (lambda: checks.check_labels(np.array([0, 4]), 2, 2, "labels"), ValueError, "labels"),
    (lambda: checks.check_finite(np.array([1.0, np.inf]), "weights"), ValueError, "weights"),
])
def test_check_helpers(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------------------------------------ reliability probe
# Regression cases for the findings of the issue #14 probe in data, train, models, pretrain, dfr, cluster, sca,
# losses, metrics, superpixels, nas, viz, cache and profiles: each bad call raises a ValueError/TypeError that names
# the argument, before any model state changes.
def _probe_dataset(n=12, **kw):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    masks = torch.zeros(n, 1, 8, 8)
    masks[:, :, 2:6, 2:6] = 1
    args = dict(images=torch.rand(n, 3, 8, 8, generator=g), labels=y, groups=y.clone(), masks=masks,
                class_names=["a", "b", "c"], group_names=["a", "b", "c"])
    args.update(kw)
    return data.SampleDataset(args.pop("images"), args.pop("labels"), args.pop("groups"), **args)


class _UnusedHead(nn.Module):
    """A model whose last nn.Linear never runs (no embedding to capture)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def _probe_cases():
    """name -> (call, error type, pattern the message must match)."""
    from xai_robust import cache, dfr, models, nas, pretrain, profiles, superpixels, viz

    nan = float("nan")
    x, z = _x(), torch.zeros(4, dtype=torch.long)
    emb = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    ey, eg = torch.arange(40) % 2, torch.arange(40) % 4
    feats, flin = torch.rand(20, 6), nn.Linear(6, 3)
    flab = torch.arange(20) % 3
    fitted = dfr.DFR(n_tune_splits=1, n_refits=1).fit(emb + ey[:, None], ey, eg)
    rng = np.random.default_rng(0)
    fit = lambda **kw: train.fit(_model(), _probe_dataset(), cache=False, progress_bar=False,  # noqa: E731
                                 **{"epochs": 1, **kw})
    uint8_ds = _probe_dataset()
    uint8_ds.images = (uint8_ds.images * 255).to(torch.uint8)
    return {
        # data
        "load seed=1.5": (lambda: data.load("parity_digits", "train", n=4, seed=1.5), TypeError, "seed"),
        "load size=0": (lambda: data.load("colored_digits", "train", n=4, size=0), ValueError, "size"),
        "load scenes size=30.5": (lambda: data.load("spurious_scenes", "train", n=4, size=30.5), TypeError, "size"),
        "load bias='no'": (lambda: data.load("biased_digits", "train", n=4, bias="no"), TypeError, "bias"),
        "dataset NaN images": (lambda: _probe_dataset(images=torch.full((12, 3, 8, 8), nan)), ValueError, "images"),
        "dataset float labels": (lambda: _probe_dataset(labels=torch.rand(12)), TypeError, "labels"),
        "dataset negative label": (lambda: _probe_dataset(labels=-torch.ones(12).long()), ValueError, "labels"),
        "dataset group id beyond group_names": (lambda: _probe_dataset(groups=torch.full((12,), 7)), ValueError,
                                                "group_names"),
        "dataset single image": (lambda: _probe_dataset(images=torch.rand(3, 8, 8), labels=z[:3], groups=z[:3],
                                                        masks=None), ValueError, "unsqueeze"),
        "dataset masks of another size": (lambda: _probe_dataset(masks=torch.ones(12, 1, 4, 4)), ValueError, "masks"),
        "dataset NaN masks": (lambda: _probe_dataset(masks=torch.full((12, 1, 8, 8), nan)), ValueError, "masks"),
        "dataset numpy masks": (lambda: _probe_dataset(masks=np.ones((12, 1, 8, 8))), TypeError, "masks"),
        "dataset spurious of wrong length": (lambda: _probe_dataset(spurious=z[:3]), ValueError, "spurious"),
        "dataset attribute of wrong length": (lambda: _probe_dataset(attributes={"bg": z[:2]}), ValueError,
                                              "attributes"),
        "dataset images as a list": (lambda: _probe_dataset(images=[torch.rand(3, 8, 8)] * 12), TypeError, "images"),
        "dataset class_names a string": (lambda: _probe_dataset(class_names="abc"), TypeError, "class_names"),
        "subset index out of range": (lambda: _probe_dataset().subset([0, 20]), ValueError, "indices"),
        "subset fractional indices": (lambda: _probe_dataset().subset([0.5, 1.7]), TypeError, "indices"),
        "subset mask of wrong length": (lambda: _probe_dataset().subset(torch.ones(4).bool()), ValueError, "indices"),
        "show n=0": (lambda: _probe_dataset().show(n=0), ValueError, "n must"),
        # train
        "fit model a list": (lambda: train.fit([nn.Linear(2, 2)], _probe_dataset(), epochs=1), TypeError, "model"),
        "fit dataset a tuple": (lambda: train.fit(_model(), (x, z), epochs=1), TypeError, "dataset"),
        "fit lr=nan": (lambda: fit(lr=nan), ValueError, "lr"),
        "fit lr as a string": (lambda: fit(lr="1e-3"), TypeError, "lr"),
        "fit weight_decay=nan": (lambda: fit(weight_decay=nan), ValueError, "weight_decay"),
        "fit seed=1.5": (lambda: fit(seed=1.5), TypeError, "seed"),
        "fit loss_fn not callable": (lambda: fit(loss_fn="ce"), TypeError, "loss_fn"),
        "fit uint8 images with a loss_fn": (lambda: train.fit(_model(), uint8_ds, epochs=1, cache=False,
                                                              loss_fn=lambda m, b: m(b["image"]).sum()),
                                            TypeError, "255"),
        "fit 1-channel data": (lambda: train.fit(_model(), _probe_dataset(images=torch.rand(12, 1, 8, 8)),
                                                 epochs=1, cache=False), ValueError, "channels"),
        "predict numpy": (lambda: train.predict(_model(), x.numpy()), TypeError, "x_or_dataset"),
        "predict list": (lambda: train.predict(_model(), [x[0]]), TypeError, "x_or_dataset"),
        "predict model a string": (lambda: train.predict("resnet", x), TypeError, "model"),
        "predict 1-channel x": (lambda: train.predict(_model(), x[:, :1]), ValueError, "channels"),
        "evaluate a tensor": (lambda: train.evaluate(_model(), x), TypeError, "dataset"),
        # models
        "build num_classes=1.5": (lambda: models.build("conv2net", 1.5), TypeError, "num_classes"),
        "build num_classes=True": (lambda: models.build("conv2net", True), TypeError, "num_classes"),
        "build in_channels=0": (lambda: models.build("conv2net", 2, in_channels=0), ValueError, "in_channels"),
        "build seed=1.5": (lambda: models.build("conv2net", 2, seed=1.5), TypeError, "seed"),
        "build pretrained missing file": (lambda: models.build("conv2net", 2, pretrained="bogus"), ValueError,
                                          "pretrained"),
        "last_linear of a list": (lambda: models.last_linear([nn.Linear(2, 2)]), TypeError, "model"),
        "embed uint8": (lambda: models.embed(_model(), (x * 255).to(torch.uint8)), TypeError, "255"),
        "embed NaN": (lambda: models.embed(_model(), _nan_x()), ValueError, "NaN"),
        "embed single image": (lambda: models.embed(_model(), x[0]), ValueError, "unsqueeze"),
        "embed float64": (lambda: models.embed(_model(), x.double()), TypeError, "float64"),
        "embed unused last linear": (lambda: models.embed(_UnusedHead(), x), ValueError, "did not run"),
        # pretrain
        "shapes_corpus n=1.5": (lambda: pretrain.shapes_corpus(1.5), TypeError, "n must"),
        "glyphs_corpus seed=1.5": (lambda: pretrain.glyphs_corpus(4, seed=1.5), TypeError, "seed"),
        "pretrained_backbone unknown arch": (lambda: pretrain.pretrained_backbone("vgg16", "glyphs"), ValueError,
                                             "arch"),
        "initialize list values": (lambda: pretrain.initialize(models.build("conv2net", 2), "conv2net",
                                                               {"conv1.weight": [[0.0]]}), TypeError, "pretrained"),
        # dfr
        "DFR c_grid a string": (lambda: dfr.DFR(c_grid="abc"), TypeError, "c_grid"),
        "DFR c_grid a scalar": (lambda: dfr.DFR(c_grid=0.1), TypeError, "c_grid"),
        "DFR n_refits=True": (lambda: dfr.DFR(n_refits=True), ValueError, "n_refits"),
        "DFR min_group_size=-1": (lambda: dfr.DFR(min_group_size=-1), ValueError, "min_group_size"),
        "DFR seed=-1": (lambda: dfr.DFR(seed=-1), ValueError, "seed"),
        "DFR fit empty": (lambda: dfr.DFR().fit(emb[:0], ey[:0], eg[:0]), ValueError, "empty"),
        "DFR fit c=nan": (lambda: dfr.DFR(n_refits=1).fit(emb, ey, eg, c=nan), ValueError, r"\bc\b"),
        "DFR fit c as a string": (lambda: dfr.DFR(n_refits=1).fit(emb, ey, eg, c="0.1"), TypeError, r"\bc\b"),
        "DFR predict NaN": (lambda: fitted.predict(torch.full((2, 3), nan)), ValueError, "embeddings"),
        "DFR predict before fit is a ValueError": (lambda: dfr.DFR().predict(emb), ValueError, "fit"),
        "balanced_subsample rng an int": (lambda: dfr.balanced_subsample(np.array([0, 1]), 0), TypeError, "rng"),
        "balanced_subsample empty": (lambda: dfr.balanced_subsample(np.array([], dtype=int), rng), ValueError,
                                     "groups"),
        "balanced_subsample 2-D": (lambda: dfr.balanced_subsample(np.zeros((2, 3), int), rng), ValueError, "groups"),
        "balanced_subsample float ids": (lambda: dfr.balanced_subsample(np.array([0.5, 1.0]), rng), TypeError,
                                         "groups"),
        "balanced_subsample min_size=nan": (lambda: dfr.balanced_subsample(np.array([0, 1]), rng, min_size=nan),
                                            TypeError, "min_size"),
        "jtt_weights fractional y": (lambda: dfr.jtt_weights(z[:2], torch.tensor([0.7, 1.2])), TypeError, "y"),
        "jtt_weights upweight=inf": (lambda: dfr.jtt_weights(z, z, upweight=float("inf")), ValueError, "upweight"),
        "jtt_weights upweight a string": (lambda: dfr.jtt_weights(z, z, upweight="20"), TypeError, "upweight"),
        "jtt_weights NaN logits": (lambda: dfr.jtt_weights(torch.full((4, 2), nan), z), ValueError, "pred"),
        "jtt upweights a scalar": (lambda: dfr.jtt(_model, _probe_dataset(), x, z, z, identification_model=_model(),
                                                   upweights=20.0, epochs=1, lr=1e-3), TypeError, "upweights"),
        "jtt upweights below 1": (lambda: dfr.jtt(_model, _probe_dataset(), x, z, z, identification_model=_model(),
                                                  upweights=[0.5], epochs=1, lr=1e-3), ValueError, "upweights"),
        "jtt val_groups of wrong length": (lambda: dfr.jtt(_model, _probe_dataset(), x, z, z[:2],
                                                           identification_model=_model(), epochs=1, lr=1e-3),
                                           ValueError, "val_groups"),
        "jtt float val_y": (lambda: dfr.jtt(_model, _probe_dataset(), x, z.float(), z, identification_model=_model(),
                                            epochs=1, lr=1e-3), TypeError, "val_y"),
        # cluster
        "normalize_heatmaps empty": (lambda: cluster.normalize_heatmaps(x[:0]), ValueError, "empty"),
        "normalize_heatmaps size=1.5": (lambda: cluster.normalize_heatmaps(x, size=1.5), ValueError, "size"),
        "normalize_heatmaps size=True": (lambda: cluster.normalize_heatmaps(x, size=True), ValueError, "size"),
        "heatmap_representations size=0": (lambda: cluster.heatmap_representations(_model(), x, size=0,
                                                                                    progress=False), ValueError,
                                           "size"),
        "knn_affinity n_neighbors=True": (lambda: cluster.knn_affinity(emb, True), TypeError, "n_neighbors"),
        "eigengap NaN affinity": (lambda: cluster.eigengap(__import__("scipy.sparse").sparse.csr_matrix(
            np.where(np.eye(20) > 0, nan, 1.0)), 3), ValueError, "affinity"),
        "eigengap negative affinity": (lambda: cluster.eigengap(__import__("scipy.sparse").sparse.csr_matrix(
            -np.ones((20, 20))), 3), ValueError, "affinity"),
        "eigengap seed=-1": (lambda: cluster.eigengap(emb, 3, seed=-1), ValueError, "seed"),
        "spectral_clustering k=True": (lambda: cluster.spectral_clustering(emb, True), ValueError, r"\bk\b"),
        "spectral_clustering pca=True": (lambda: cluster.spectral_clustering(emb, 2, pca=True), ValueError, "pca"),
        "kmeans seed=-1": (lambda: cluster.kmeans(emb, 2, seed=-1), ValueError, "seed"),
        # sca
        "entropy NaN": (lambda: sca.entropy(torch.tensor([1.0, nan])), ValueError, "values"),
        "entropy dim out of range": (lambda: sca.entropy(torch.ones(3), dim=5), ValueError, "dim"),
        "ca_scores eps=0": (lambda: sca.ca_scores(sca.accumulate(feats, flab, flin), eps=0.0), ValueError, "eps"),
        "edit_weights columns an int": (lambda: sca.edit_weights(nn.Linear(6, 3), 0, 3), TypeError, "columns"),
        "select_edges NaN scores": (lambda: sca.select_edges(torch.tensor([nan, 1.0]), torch.ones(2)), ValueError,
                                    "scores"),
        "select_edges w_row a list": (lambda: sca.select_edges(torch.ones(2), [1.0, 1.0]), TypeError, "w_row"),
        "remove_class target out of range": (lambda: sca.remove_class(nn.Linear(6, 3), feats, flab, 5), ValueError,
                                             "target"),
        "fit_fictitious_head max_iter=0": (lambda: sca.fit_fictitious_head(feats, flab, max_iter=0), ValueError,
                                           "max_iter"),
        "fit_fictitious_head weight_decay=nan": (lambda: sca.fit_fictitious_head(feats, flab, weight_decay=nan),
                                                 ValueError, "weight_decay"),
        "fit_fictitious_head num_fictitious=1.5": (lambda: sca.fit_fictitious_head(feats, flab, num_fictitious=1.5),
                                                   TypeError, "num_fictitious"),
        "fit_fictitious_head dtype a string": (lambda: sca.fit_fictitious_head(feats, flab, dtype="float"),
                                               TypeError, "dtype"),
        "fictitious_to_real labels a list": (lambda: sca.fictitious_to_real(flab, flab.tolist()), TypeError,
                                             "labels"),
        "fictitious_to_real float labels": (lambda: sca.fictitious_to_real(flab.float() + 0.5, flab), TypeError,
                                            "fictitious_labels"),
        # losses
        "resize_masks size an int": (lambda: losses.resize_masks(torch.ones(1, 1, 4, 4), 5), TypeError, "size"),
        "resize_masks size=(0, 4)": (lambda: losses.resize_masks(torch.ones(1, 1, 4, 4), (0, 4)), ValueError,
                                     "size"),
        "resize_masks size=(1.5, 4)": (lambda: losses.resize_masks(torch.ones(1, 1, 4, 4), (1.5, 4)), TypeError,
                                       "size"),
        "deep_supervision NaN": (lambda: losses.deep_supervision([torch.tensor(1.0), torch.tensor(nan)]),
                                 ValueError, "layer_losses"),
        "deep_supervision non-scalar": (lambda: losses.deep_supervision([torch.tensor(1.0), torch.ones(2)]),
                                        ValueError, "layer_losses"),
        "deep_supervision empty tensor": (lambda: losses.deep_supervision(torch.ones(0)), ValueError,
                                          "layer_losses"),
        "Welford strings": (lambda: losses.Welford().update(["a"]), TypeError, "values"),
        # metrics
        "group_accuracies n_groups=True": (lambda: metrics.group_accuracies(z, z, z, n_groups=True), ValueError,
                                           "n_groups"),
        "group_counts negative id": (lambda: metrics.group_counts(torch.tensor([0, -2])), ValueError, "groups"),
        "weighted_mean_accuracy float train_groups": (lambda: metrics.weighted_mean_accuracy(
            z, z, z, torch.tensor([0.5])), TypeError, "train_groups"),
        "weighted_mean_accuracy negative train_groups": (lambda: metrics.weighted_mean_accuracy(
            z, z, z, torch.tensor([-1, 0])), ValueError, "train_groups"),
        "max_box_acc_v2 iou_thresholds a string": (lambda: metrics.max_box_acc_v2(
            torch.rand(2, 8, 8), torch.ones(2, 8, 8), iou_thresholds="0.5"), TypeError, "iou_thresholds"),
        # nas
        "cluster_overlap masks of another size": (lambda: nas.cluster_overlap(z.reshape(1, 2, 2), torch.ones(1, 4, 4),
                                                                              2), ValueError, "masks"),
        "cluster_overlap masks of another batch": (lambda: nas.cluster_overlap(z.reshape(1, 2, 2),
                                                                               torch.ones(2, 2, 2), 2),
                                                   ValueError, "masks"),
        # superpixels
        "random_partition seed=-1": (lambda: superpixels.random_partition(1, 4, 4, n_segments=4, seed=-1),
                                     ValueError, "seed"),
        # viz
        "image_grid uint8": (lambda: viz.image_grid((x * 255).to(torch.uint8)), TypeError, "255"),
        "image_grid 0-255 floats": (lambda: viz.image_grid(x * 255), ValueError, r"\[0, 1\]"),
        "image_grid empty": (lambda: viz.image_grid(x[:0]), ValueError, "empty"),
        "image_grid too few titles": (lambda: viz.image_grid(x, ["a"]), ValueError, "titles"),
        "image_grid ncols=0": (lambda: viz.image_grid(x, ncols=0), ValueError, "ncols"),
        "image_grid 2 channels": (lambda: viz.image_grid(x[:, :2]), ValueError, "channels"),
        "show_heatmaps too few heatmaps": (lambda: viz.show_heatmaps(x, x[:3]), ValueError, "heatmaps"),
        "show_heatmaps NaN heatmap": (lambda: viz.show_heatmaps(x, _nan_x()), ValueError, "heatmaps"),
        "show_heatmaps uint8 images": (lambda: viz.show_heatmaps((x * 255).to(torch.uint8), x), TypeError, "255"),
        "group_accuracy_bars percentages": (lambda: viz.group_accuracy_bars({"ERM": [85.0, 40.0]}, ["a", "b"]),
                                            ValueError, "percentages"),
        "group_accuracy_bars length mismatch": (lambda: viz.group_accuracy_bars({"ERM": [0.5]}, ["a", "b"]),
                                                ValueError, "group_names"),
        "group_accuracy_bars table a list": (lambda: viz.group_accuracy_bars([0.5], ["a"]), TypeError, "table"),
        # cache
        "atomic_write text": (lambda: cache.atomic_write("/tmp/xai_robust_never_written.txt", "text"), TypeError,
                              "bytes"),
        "state_digest of a list": (lambda: cache.state_digest([1]), TypeError, "model"),
        "load_verified bad map_location": (lambda: cache.load_verified("/no/such/file.pt", map_location="gpu0"),
                                           ValueError, "map_location"),
        # profiles
        "profile_settings unknown": (lambda: profiles.profile_settings("gpu"), ValueError, "profile"),
    }


_PROBE_CASES = _probe_cases()


@pytest.mark.parametrize("name", sorted(_PROBE_CASES))
def test_reliability_probe_findings_raise_clear_errors(name):
    import matplotlib.pyplot as plt

    call, error, match = _PROBE_CASES[name]
    try:
        with pytest.raises(error, match=match):
            call()
    finally:
        plt.close("all")


def _modes(model):
    return {n: m.training for n, m in model.named_modules()}, [p.requires_grad for p in model.parameters()]


@pytest.mark.parametrize("kwargs", [dict(lr=float("nan")), dict(lr=-1.0), dict(weight_decay=float("nan")),
                                    dict(seed=1.5), dict(loss_fn="ce")], ids=lambda kw: next(iter(kw)))
def test_fit_refuses_bad_options_before_the_model_changes(kwargs):
    model = _model().eval()
    before, flags = _modes(model), copy.deepcopy(model.state_dict())
    with pytest.raises((ValueError, TypeError), match=next(iter(kwargs))):
        train.fit(model, _probe_dataset(), epochs=1, cache=False, progress_bar=False, **kwargs)
    assert _modes(model) == before, "fit left the model in training mode"
    assert all(torch.equal(flags[k], v) for k, v in model.state_dict().items())


def test_initialize_refuses_non_finite_weights_and_copies_nothing():
    from xai_robust import models, pretrain

    model = models.build("conv2net", 2, seed=0, width=4, hidden=8)
    before = copy.deepcopy(model.state_dict())
    bad = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in before.items()}
    with pytest.raises(ValueError, match="NaN"):
        pretrain.initialize(model, "conv2net", bad)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_inference_helpers_leave_a_train_mode_model_as_found():
    from xai_robust import models

    model = _model().train()
    model[1].eval()
    before, state = _modes(model), copy.deepcopy(model.state_dict())
    train.predict(model, _x())
    train.embed(model, _x())
    models.embed(model, _x())
    train.evaluate(model, _probe_dataset())
    assert _modes(model) == before
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), "BatchNorm statistics changed"


def test_valid_inputs_that_used_to_fail_or_mislead():
    import matplotlib.pyplot as plt

    from xai_robust import cache, profiles, viz

    ds = _probe_dataset()
    mask = torch.arange(12) < 3  # a boolean mask selects, it is not read as the indices 0 and 1
    assert torch.equal(ds.subset(mask).labels, ds.labels[:3])
    assert len(ds.subset([])) == 0 and torch.equal(ds.subset(range(2)).labels, ds.labels[:2])
    # a training group absent from the test data carries no weight instead of raising
    z = torch.zeros(4, dtype=torch.long)
    acc = metrics.weighted_mean_accuracy(z, z, torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 1, 5]))
    assert acc == pytest.approx(1.0)
    one = metrics.max_box_acc_v2(torch.rand(2, 8, 8), torch.ones(2, 8, 8), iou_thresholds=0.5)
    assert one["maxboxacc_v2"] == one["iou@50"]
    # bfloat16 models get a digest; float32 digests are unchanged (the raw bytes, as before)
    assert len(cache.state_digest(nn.Linear(2, 2).bfloat16())) == 64
    lin = nn.Linear(2, 2)
    import hashlib

    h = hashlib.sha256()
    for k, v in lin.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    assert cache.state_digest(lin) == h.hexdigest()
    recipes = profiles.profile_settings("ci")
    recipes["colored_digits"]["epochs"] = 999  # a chapter's edit does not leak into the module's recipes
    assert profiles.profile_settings("ci")["colored_digits"]["epochs"] != 999
    viz.group_accuracy_bars({"ERM": [0.8, float("nan")]}, ["a", "b"])  # NaN: an empty group
    viz.image_grid([_x()[0], _x()[1]])  # a list of (C, H, W) images is stacked
    plt.close("all")


# ------------------------------------------------------------------------------------------------ lrp, attribution,
# grouped, isnet: the probe's last findings (silent answers, unclear errors, state changes before a raise)
def _bn_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("options, match", [
    (dict(epsilon=True), "epsilon"), (dict(quantity="eta", mu=True), "mu"),
    (dict(first_layer="zb", bounds=(float("nan"), 1.0)), "finite"),
    (dict(first_layer="zb", bounds=(1.0, 0.0)), "low <= high"),
])
def test_lrp_flex_options_that_used_to_pass_silently(options, match):
    with pytest.raises(ValueError, match=match):
        lrp.lrp_flex(_model().eval(), _x(), **options)


def test_channel_mismatch_is_named_before_the_forward_pass():
    for call in (lambda m: lrp.lrp_flex(m, _x()[:, :1]), lambda m: attribution.input_gradient(m, _x()[:, :1])):
        with pytest.raises(ValueError, match="channels"):
            call(_model().eval())


def test_occlusion_window_larger_than_the_image():
    with pytest.raises(ValueError, match="window"):
        attribution.occlusion(_model().eval(), _x(), window=20)


def test_grouped_attribution_names_a_wrong_attribution_shape():
    from xai_robust import grouped, superpixels

    x = _x()
    seg = superpixels.segment(x, "squares", n_segments=4)
    with pytest.raises(ValueError, match="attribute returned"):
        grouped.grouped_attribution(lambda xx: xx[:, :1, :4], x, seg)


def test_target_out_of_range_refused_before_a_batch_statistics_forward():
    model = _model().train()
    before = _bn_stats(model)
    with pytest.raises(ValueError, match="outside"):
        lrp.lrp_flex(model, _x(), 7, batchnorm="batch")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("bad, match", [
    (dict(y=torch.tensor([0, 1, 2, 7])), "y must lie"), (dict(masks=torch.ones(3, 1, 8, 8)), "masks"),
    (dict(ranges=(float("nan"), 2.0)), "ranges"), (dict(ranges=(2.0, 1.0)), "c1 <= c2"),
    (dict(masks=torch.full((4, 1, 8, 8), float("nan"))), "masks"), (dict(d=2.0), "d must be"),
])
def test_isnet_loss_checks_everything_before_the_forward_pass(bad, match):
    model = _model().train()
    before = _bn_stats(model)
    args = dict(y=torch.tensor([0, 1, 2, 0]), masks=torch.ones(4, 1, 8, 8), ranges=(1.0, 2.0), d=0.9)
    args.update(bad)
    with pytest.raises((ValueError, TypeError), match=match):
        isnet.isnet_loss(model, _x(), args["y"], args["masks"], variant="selective", P=0.5, ranges=args["ranges"],
                         d=args["d"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="y must lie"):
        isnet.rrr_loss(model, _x(), torch.tensor([0, 1, 2, 7]), torch.ones(4, 1, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("options, match", [(dict(batch_size=0), "batch_size"), (dict(lr=float("nan")), "lr"),
                                            (dict(P=1.5), "P")])
def test_isnet_fit_refuses_bad_options_before_training(options, match):
    ds = data.SampleDataset(_x(8), torch.randint(0, 3, (8,)), torch.zeros(8, dtype=torch.long),
                            class_names=["a", "b", "c"], group_names=["all"], masks=torch.ones(8, 1, 8, 8))
    model = _model().eval()
    before = _bn_stats(model)
    kwargs = dict(variant="selective", epochs=1, lr=1e-3, ranges=(1.0, 2.0), cache=False, progress=False)
    kwargs.update(options)
    with pytest.raises(ValueError, match=match):
        isnet.fit(model, ds, **kwargs)
    assert not model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="batch_size"):
        isnet.estimate_ranges(model, ds, variant="selective", batch_size=0, progress=False)


def test_isnet_fit_without_masks_raises_before_training():
    ds = data.SampleDataset(_x(8), torch.randint(0, 3, (8,)), torch.zeros(8, dtype=torch.long),
                            class_names=["a", "b", "c"], group_names=["all"])
    model = _model().eval()
    with pytest.raises(ValueError, match="masks"):
        isnet.fit(model, ds, variant="selective", epochs=1, lr=1e-3, ranges=(1.0, 2.0), cache=False, progress=False)
    assert not model.training


def test_check_baseline_is_the_one_reference_image_check():
    x = _x()
    torch.testing.assert_close(checks.check_baseline(0.5, x), torch.full_like(x, 0.5))
    assert checks.check_baseline(torch.zeros(1, 3, 1, 1), x).shape == x.shape
    for bad, error, match in ((float("nan"), ValueError, "baseline"), (torch.zeros(2, 2), ValueError, "broadcast"),
                              (torch.zeros(1, dtype=torch.complex64), TypeError, "real")):
        with pytest.raises(error, match=match):
            checks.check_baseline(bad, x)
