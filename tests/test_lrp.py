"""LRP-Flex (xai_robust.lrp) against independent references: zennit's rules, captum, finite differences.

Float64, random weights, small inputs so the whole file runs in seconds.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.core import Composite
from zennit.layer import Sum
from zennit.rules import Epsilon, Norm, ZBox, ZPlus
from zennit.torchvision import ResNetCanonizer

from xai_robust.lrp import lrp_flex, lrp_flex_result
from xai_robust.models import Normalize
from xai_robust.references import captum_lrp, epsilon_composite, exmap_composite, zennit_heatmap

torch.set_num_threads(1)
EPS = 0.01
TINY = 1e-12  # stabiliser of zennit's Norm(): an exact LRP-0 for float64
_WEIGHTED = (nn.Conv2d, nn.Linear)


def _randomize_bn(model, gen):
    """Random BatchNorm statistics; eps ~ 0 because zennit's merge leaves ``eps`` in the identity BatchNorm it
    keeps (x / sqrt(1 + eps), a 5e-6 relative error per BatchNorm with the default eps)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-12
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))


def _seq(bn=True, bias=True, normalize=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layers = [Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])] if normalize else []
    layers += [nn.Conv2d(3, 6, 3, padding=1, bias=bias)]
    layers += [nn.BatchNorm2d(6)] if bn else []
    layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1, bias=bias), nn.ReLU(),
               nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16, bias=bias), nn.ReLU(),
               nn.Linear(16, 4, bias=bias)]
    model = nn.Sequential(*layers).double()
    _randomize_bn(model, gen)
    return model.eval()


def _x(n=2, size=8, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _relu_followed(model):
    """Names of the modules whose output feeds an nn.ReLU (found by tracing the forward pass)."""
    owner, followed = {}, set()
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, Sum)):
            handles.append(m.register_forward_hook(lambda mod, i, o, name=name: owner.__setitem__(id(o), name)))
        elif isinstance(m, nn.ReLU):
            handles.append(m.register_forward_hook(
                lambda mod, i, o: followed.add(owner.get(id(i[0]))) if id(i[0]) in owner else None))
    return owner, followed, handles


def _epsilon_composite(model, x, canonizers, first=None):
    """zennit composite equal to LRP-ε: Epsilon(ε) on every layer a ReLU follows, Norm() elsewhere."""
    # trace with the canonizers applied, so residual Sum modules and merged BatchNorms are in place
    comp = Composite(module_map=lambda ctx, name, module: None, canonizers=canonizers)
    with comp.context(model):
        inplace = [(m, m.inplace) for m in model.modules() if isinstance(m, nn.ReLU)]
        for m, _ in inplace:
            m.inplace = False
        owner, followed, handles = _relu_followed(model)
        with torch.no_grad():
            model(x)
        for h in handles:
            h.remove()
        for m, flag in inplace:
            m.inplace = flag
        names = dict(model.named_modules())
    # a BatchNorm merged into its conv: the conv takes the BatchNorm's place
    eps_names = set()
    for name in followed:
        if isinstance(names[name], nn.BatchNorm2d):
            prev = list(names)
            idx = prev.index(name)
            eps_names.add(next(n for n in reversed(prev[:idx]) if isinstance(names[n], _WEIGHTED)))
        else:
            eps_names.add(name)

    def module_map(ctx, name, module):
        if first is not None and name == first[0]:
            return first[1]
        if isinstance(module, (*_WEIGHTED, Sum)):
            return Epsilon(EPS) if name in eps_names else Norm(TINY)
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
            return Norm(TINY)
        return None

    return Composite(module_map=module_map, canonizers=canonizers)


def _zennit(model, x, target, composite, seed_values=None):
    logits = model(x).detach()
    onehot = F.one_hot(target, logits.shape[1]).to(x.dtype)
    seed = onehot * (logits if seed_values is None else seed_values)
    with Gradient(model=model, composite=composite) as attributor:
        _, rel = attributor(x.clone().requires_grad_(True), seed)
    return rel.detach()


def _rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _snapshot(model):
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "inplace": [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                     for m in model.modules()),
        "grads": [p.grad for p in model.parameters()],
    }


def _assert_untouched(model, snap):
    now = _snapshot(model)
    assert now["modes"] == snap["modes"]
    assert now["inplace"] == snap["inplace"]
    assert now["hooks"] == snap["hooks"] == 0
    assert all(g is None for g in now["grads"])
    for k, v in snap["params"].items():
        assert torch.equal(now["params"][k], v), k


# ---------------------------------------------------------------- LRP-ε against zennit
def test_epsilon_matches_zennit_sequential_with_batchnorm():
    model, x = _seq(), _x()
    target = torch.tensor([1, 3])
    snap = _snapshot(model)
    ours = lrp_flex(model, x, target, epsilon=EPS)
    _assert_untouched(model, snap)
    ref = _zennit(model, x, target, _epsilon_composite(model, x, [SequentialMergeBatchNorm()]))
    assert _rel_diff(ours, ref) <= 1e-6


def test_epsilon_matches_zennit_vgg11():
    torch.manual_seed(0)
    # torchvision's VGG-11 feature extractor (in-place ReLUs, max-pools) with a small dense head
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["A"])
    head = nn.Sequential(nn.Linear(512, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 64), nn.ReLU(True),
                         nn.Dropout(), nn.Linear(64, 5))
    model = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).double().eval()
    x = _x(2, 32)
    snap = _snapshot(model)
    ours = lrp_flex(model, x, None, epsilon=EPS)
    _assert_untouched(model, snap)
    target = model(x).argmax(1)
    ref = _zennit(model, x, target, _epsilon_composite(model, x, [SequentialMergeBatchNorm()]))
    assert _rel_diff(ours, ref) <= 1e-6


def test_epsilon_matches_zennit_resnet18_reused_inplace_relu():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).double()
    _randomize_bn(model, torch.Generator().manual_seed(2))
    model.eval()
    assert model.layer1[0].relu.inplace  # one in-place ReLU module, called twice per block
    x = _x(2, 32)
    target = torch.tensor([0, 4])
    snap = _snapshot(model)
    ours = lrp_flex(model, x, target, epsilon=EPS)
    _assert_untouched(model, snap)
    ref = _zennit(model, x, target, _epsilon_composite(model, x, [ResNetCanonizer()]))
    assert _rel_diff(ours, ref) <= 1e-6


def test_epsilon_zero_is_gradient_x_input_captum():
    from captum.attr import InputXGradient

    model, x = _seq(), _x()
    ours = lrp_flex(model, x, 2, epsilon=0.0)
    ref = InputXGradient(model).attribute(x.clone().requires_grad_(True), target=2).detach()
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- z⁺ and z^B against zennit
@pytest.mark.parametrize("bn", [False, True])
def test_zplus_matches_zennit(bn):
    model, x = _seq(bn=bn), _x()
    target = torch.tensor([0, 2])
    ours = lrp_flex(model, x, target, rule="zplus", epsilon=EPS)
    # Eq. 5: the output relevance is sum_j (w_jc a_j)^+ (+ the positive bias, as zennit's ZPlus)
    feats = model[:-1](x)
    fc = model[-1]
    zp = F.linear(feats.clamp(min=0), fc.weight.clamp(min=0), fc.bias.clamp(min=0)) \
        + F.linear(feats.clamp(max=0), fc.weight.clamp(max=0))
    canon = [SequentialMergeBatchNorm()]

    def module_map(ctx, name, module):
        if isinstance(module, _WEIGHTED):
            return ZPlus(stabilizer=EPS)
        return Norm(TINY) if isinstance(module, nn.AdaptiveAvgPool2d) else None

    ref = _zennit(model, x, target, Composite(module_map=module_map, canonizers=canon), seed_values=zp.detach())
    assert _rel_diff(ours, ref) <= 1e-6
    assert (ours >= 0).all()  # z⁺ only propagates positive relevance


def test_zplus_after_normalize_is_pixel_space_and_nonnegative():
    # normalize + conv (no padding) is one affine map of the pixels; z⁺ must treat it as such
    torch.manual_seed(4)
    norm = Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]).double()
    conv = nn.Conv2d(3, 5, 3).double()
    tail = [nn.ReLU(), nn.Flatten(), nn.Linear(5 * 6 * 6, 3).double()]
    with_norm = nn.Sequential(norm, conv, *tail).eval()
    merged = nn.Conv2d(3, 5, 3).double()
    with torch.no_grad():
        merged.weight.copy_(conv.weight / norm.std.reshape(1, 3, 1, 1))
        merged.bias.copy_(conv.bias - (conv.weight * (norm.mean / norm.std).reshape(1, 3, 1, 1)).sum((1, 2, 3)))
    plain = nn.Sequential(merged, *tail).eval()
    x = _x(2, 8)
    assert torch.allclose(with_norm(x), plain(x))
    a = lrp_flex(with_norm, x, quantity="joint", rule="zplus", epsilon=EPS)
    b = lrp_flex(plain, x, quantity="joint", rule="zplus", epsilon=EPS)
    assert _rel_diff(a, b) <= 1e-10 and (a >= 0).all()


@pytest.mark.parametrize("normalize", [False, True])
def test_zb_first_layer_matches_zennit_zbox(normalize):
    model, x = _seq(normalize=normalize), _x()
    target = torch.tensor([3, 1])
    low, high = 0.0, 1.0
    first = "1" if normalize else "0"
    if normalize:  # zennit's rule sits after `normalize`: give it the bounds in that space
        norm = model[0]
        low_t, high_t = ((torch.full((1, 3, 1, 1), v, dtype=x.dtype) - norm.mean) / norm.std for v in (low, high))
    else:
        low_t, high_t = low, high
    ours = lrp_flex(model, x, target, first_layer="zb", bounds=(low, high), epsilon=EPS)
    comp = _epsilon_composite(model, x, [SequentialMergeBatchNorm()],
                              first=(first, ZBox(low_t, high_t, stabilizer=EPS)))
    ref = _zennit(model, x, target, comp)
    if normalize:  # zennit's relevance at normalize's output reached x through normalize's gradient
        ref = ref * norm.std
    assert _rel_diff(ours, ref) <= 1e-6


def test_zennit_heatmap_helper_relevance_after_normalize():
    model, x = _seq(normalize=True), _x()
    target = torch.tensor([0, 1])
    comp = _epsilon_composite(model, x, [SequentialMergeBatchNorm()])
    ours = zennit_heatmap(model, x, target, comp)
    # LRP-ε relevance at the output of `normalize` (the network input) from LRP-Flex
    _, rel, _ = lrp_flex_result(model, x, target, epsilon=EPS, layers=["0"])
    assert _rel_diff(ours, rel["0"]) <= 1e-6
    exmap = zennit_heatmap(model, x, target, exmap_composite(canonizers=[SequentialMergeBatchNorm()]))
    assert exmap.shape == x.shape and torch.isfinite(exmap).all() and _rel_diff(exmap, ours) > 1e-3


def test_package_reference_helpers_agree_with_lrp_flex():
    from xai_robust.models import build

    torch.manual_seed(0)
    model = build("conv2net", 4, in_channels=3).double().eval()
    x = _x(2, 16)
    target = torch.tensor([1, 2])
    _, rel, _ = lrp_flex_result(model, x, target, epsilon=EPS, layers=["normalize"])
    snap = _snapshot(model)
    via_zennit = zennit_heatmap(model, x, target, epsilon_composite(model, x, EPS))
    via_captum = captum_lrp(model, x, target, epsilon=EPS)
    _assert_untouched(model, snap)
    assert all(not hasattr(m, "rule") and not hasattr(m, "activations") for m in model.modules())
    assert _rel_diff(via_zennit, rel["normalize"]) <= 1e-6
    assert _rel_diff(via_captum, rel["normalize"]) <= 1e-6


# ---------------------------------------------------------------- conservation and quantities
def test_conservation_without_biases():
    model, x = _seq(bn=False, bias=False), _x()
    logits = model(x).detach()
    t = logits.argmax(1)
    h0 = lrp_flex(model, x, epsilon=0.0)
    assert torch.allclose(h0.sum((1, 2, 3)), logits.gather(1, t[:, None])[:, 0], rtol=1e-10)
    joint = lrp_flex(model, x, quantity="joint", epsilon=0.0)
    assert torch.allclose(joint.sum((1, 2, 3)), logits.sum(1), rtol=1e-10)
    # ε absorbs relevance: the total shrinks towards zero as ε grows, and tends to the logit as ε → 0
    small = lrp_flex(model, x, epsilon=1e-9).sum((1, 2, 3))
    assert torch.allclose(small, h0.sum((1, 2, 3)), rtol=1e-5)
    _, rel, _ = lrp_flex_result(model, x, epsilon=0.0, layers=["5", "9"])
    for name in ("5", "9"):  # every layer conserves the logit (LRP-0, no bias)
        assert torch.allclose(rel[name].flatten(1).sum(1), h0.sum((1, 2, 3)), rtol=1e-10)


def test_eta_quantity_is_modified_gradient_of_eta():
    model, x = _seq(bn=False), _x()
    mu = 0.01
    t = torch.tensor([0, 3])
    ours = lrp_flex(model, x, t, quantity="eta", mu=mu, epsilon=0.0)
    xg = x.clone().requires_grad_(True)
    p = torch.softmax(model(xg), 1).gather(1, t[:, None])
    eta = torch.log(p + mu) - torch.log(1 - p + mu)
    (g,) = torch.autograd.grad(eta.sum(), xg)
    assert torch.allclose(ours, g * x, rtol=1e-9, atol=1e-14)


def test_targets_lowest_and_stochastic():
    model, x = _seq(), _x(6)
    logits = model(x)
    low = lrp_flex(model, x, "lowest")
    assert torch.allclose(low, lrp_flex(model, x, logits.argmin(1)))
    a = lrp_flex(model, x, "stochastic", generator=torch.Generator().manual_seed(5))
    b = lrp_flex(model, x, "stochastic", generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_layers_returns_relevance_and_logits():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).double().eval()
    x = _x(2, 32)
    h, rel, logits = lrp_flex_result(model, x, layers=["layer1", "layer3"])
    assert rel["layer1"].shape == (2, 64, 8, 8) and rel["layer3"].shape == (2, 256, 2, 2)
    assert torch.allclose(h, lrp_flex(model, x))
    assert torch.allclose(logits, model(x))
    with pytest.raises(ValueError, match="more than once"):
        lrp_flex_result(model, x, layers=["layer1.0.relu"])


# ---------------------------------------------------------------- differentiability
def _tiny():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 9, 3), nn.ReLU(),
                         nn.Linear(3, 2)).double().eval()


@pytest.mark.parametrize("options", [dict(), dict(quantity="eta"), dict(rule="zplus", quantity="joint"),
                                     dict(first_layer="zb")])
def test_heatmap_gradient_matches_finite_differences(options):
    model = _tiny()
    x = torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
    target = torch.tensor([0, 1]) if options.get("quantity") != "joint" else None

    def loss(*ps):
        return (_heat(model, names, ps, x, target, options) ** 2).sum()

    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-6, rtol=1e-4)
    assert all(p.grad is None for p in model.parameters())


def _heat(model, names, ps, x, target, options):
    # swap the parameters in, explain with create_graph, swap back
    saved = {n: p for n, p in model.named_parameters()}
    mods = dict(model.named_modules())
    try:
        for n, p in zip(names, ps, strict=True):
            mod, attr = n.rsplit(".", 1)
            delattr(mods[mod], attr)
            setattr(mods[mod], attr, p)
        return lrp_flex(model, x, target, create_graph=True, **options)
    finally:
        for n, p in saved.items():
            mod, attr = n.rsplit(".", 1)
            delattr(mods[mod], attr)
            mods[mod].register_parameter(attr, p)


def test_returned_logits_backpropagate_true_gradients():
    # the modified rule is active only inside lrp_flex's own backward; a loss on the returned logits
    # (e.g. the ISNet's cross-entropy term) must get the ordinary gradient
    model, x = _seq(), _x(3)
    y = torch.tensor([0, 1, 2])
    _, _, logits = lrp_flex_result(model, x, y, create_graph=True)
    got = torch.autograd.grad(F.cross_entropy(logits, y), list(model.parameters()))
    want = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-14) for a, b in zip(got, want, strict=True))


# ---------------------------------------------------------------- batch independence and restoration
def test_batchnorm_train_mode_heatmaps_are_batch_independent():
    model = _seq()
    model.train()
    x = _x(4)
    stats = [b.clone() for b in model.buffers()]
    snap = _snapshot(model)
    batch = lrp_flex(model, x, torch.tensor([0, 1, 2, 3]))
    alone = lrp_flex(model, x[:1], torch.tensor([0]))
    assert torch.allclose(batch[:1], alone, rtol=1e-12, atol=1e-15)
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers(), strict=True))  # running stats not updated
    _assert_untouched(model, snap)
    assert model.training and model[1].training
    coupled = lrp_flex(model, x, torch.tensor([0, 1, 2, 3]), batchnorm="batch")
    assert not torch.allclose(coupled[:1], alone)  # the official behaviour couples samples


def _eval_copy_with_batch_stats(model, x):
    """An eval-mode copy of ``model`` whose running statistics are the batch statistics of ``x``."""
    ref = copy.deepcopy(model).train()
    stats, handles = {}, []
    for name, m in ref.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_hook(
                lambda mod, args, out, name=name: stats.__setitem__(
                    name, (args[0].mean((0, 2, 3)).detach(), args[0].var((0, 2, 3), unbiased=False).detach()))))
    with torch.no_grad():
        ref(x)
    for h in handles:
        h.remove()
    for name, m in ref.named_modules():
        if name in stats:
            m.running_mean.copy_(stats[name][0])
            m.running_var.copy_(stats[name][1])
    return ref.eval()


@pytest.mark.parametrize("options", [dict(), dict(quantity="eta"), dict(rule="zplus", quantity="joint"),
                                     dict(first_layer="zb")])
def test_frozen_batchnorm_is_eval_mode_with_the_batch_statistics(options):
    model = _seq(normalize=True)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(2))
            m.bias.data.uniform_(-0.2, 0.2, generator=torch.Generator().manual_seed(3))
    model.train()
    x = _x(5)
    target = None if options.get("quantity") == "joint" else torch.tensor([0, 1, 2, 3, 0])
    ref = _eval_copy_with_batch_stats(model, x)
    heat, _, logits = lrp_flex_result(model, x, target, batchnorm="frozen", **options)
    assert torch.allclose(heat, lrp_flex(ref, x, target, **options), rtol=1e-9, atol=1e-13)
    with torch.no_grad():
        assert torch.allclose(logits, copy.deepcopy(model).train()(x), rtol=1e-12)  # the training forward
    assert model.training and model[2].training


def test_frozen_batchnorm_keeps_relevance_inside_each_sample():
    # changing what the OTHER samples explain changes sample 0's heatmap only when relevance crosses the batch
    model = _seq().train()
    x = _x(4)
    a = lrp_flex(model, x, torch.tensor([0, 1, 2, 3]), batchnorm="frozen")
    b = lrp_flex(model, x, torch.tensor([0, 3, 3, 1]), batchnorm="frozen")
    assert torch.allclose(a[:1], b[:1], rtol=1e-12, atol=1e-15)
    a = lrp_flex(model, x, torch.tensor([0, 1, 2, 3]), batchnorm="batch")
    b = lrp_flex(model, x, torch.tensor([0, 3, 3, 1]), batchnorm="batch")
    assert not torch.allclose(a[:1], b[:1])


def test_frozen_batchnorm_heatmap_gradient_matches_finite_differences():
    # the statistics are constants for the relevance, not for the training gradient: d(loss)/d(params) is exact
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 9, 3),
                          nn.ReLU(), nn.Linear(3, 2)).double().train()
    x = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
    target = torch.tensor([0, 1, 1])

    def loss(*ps):
        return (_heat(model, names, ps, x, target, dict(batchnorm="frozen")) ** 2).sum()

    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-6, rtol=1e-4)


class _Boom(nn.Module):
    """A container (it has a child, so LRP-Flex accepts it) whose forward raises mid-pass."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Identity()

    def forward(self, x):
        raise RuntimeError("boom")


def test_model_restored_after_exception_in_forward():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), _Boom()).double()
    model.train()
    snap = _snapshot(model)
    for options in (dict(), dict(rule="zplus"), dict(first_layer="zb"), dict(layers=["2"])):
        with pytest.raises(RuntimeError, match="boom"):
            lrp_flex_result(model, _x(), 0, **options)
        _assert_untouched(model, snap)


# ---------------------------------------------------------------- clear errors
@pytest.mark.parametrize("act", [nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Softplus])
def test_unsupported_activation_refused(act):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), act(), nn.Linear(4, 2)).double()
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=act.__name__):
        lrp_flex(model, _x(2, 2))
    _assert_untouched(model, snap)


@pytest.mark.parametrize("target, match", [("label", "LongTensor"), (7, "outside"), ("highest", "not understood"),
                                           (torch.tensor([0, 1, 2]), r"shape \(2,\)")])
def test_bad_target(target, match):
    with pytest.raises(ValueError, match=match):
        lrp_flex(_seq(), _x(), target)


def test_bad_options():
    model, x = _seq(), _x()
    with pytest.raises(ValueError, match="quantity"):
        lrp_flex(model, x, quantity="prob")
    with pytest.raises(ValueError, match="rule"):
        lrp_flex(model, x, rule="gamma")
    with pytest.raises(ValueError, match="epsilon"):
        lrp_flex(model, x, epsilon=-1)
    with pytest.raises(ValueError, match="no module named"):
        lrp_flex_result(model, x, layers=["nope"])
    with pytest.raises(ValueError, match="joint"):
        lrp_flex(model, x, 1, quantity="joint")
    with pytest.raises(TypeError, match="floating"):
        lrp_flex(model, x.long())


def test_lrp_flex_returns_the_heatmap_only_and_points_to_lrp_flex_result():
    model = _seq()
    x = _x()
    heat = lrp_flex(model, x)
    assert isinstance(heat, torch.Tensor) and heat.shape == x.shape
    result = lrp_flex_result(model, x)
    torch.testing.assert_close(result.heatmap, heat)
    assert result.relevances == {} and result.logits.shape[0] == x.shape[0]
    for removed in (dict(layers=["0"]), dict(return_logits=True)):
        with pytest.raises(TypeError, match="lrp_flex_result"):
            lrp_flex(model, x, **removed)
