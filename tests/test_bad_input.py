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


@pytest.mark.parametrize("target, match", [(3, "outside"), (torch.tensor([0, 1]), "entries"), ("label", "LongTensor")])
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
