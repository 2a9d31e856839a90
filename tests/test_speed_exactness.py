"""The fast paths of LRP-Flex and the ISNet losses (issue #18) compute what the plain paths compute.

Each fast path is switched off by the module flag or hook it depends on and the two results are compared in float64:
heatmaps and the parameter gradient of a heatmap loss (what training uses). Finite differences check the new
backward formulas directly. No test times anything.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from xai_robust import isnet, losses, lrp
from xai_robust.lrp import lrp_flex, lrp_flex_maps, lrp_flex_result
from xai_robust.models import Normalize

torch.set_num_threads(1)


def _bn_random(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(-0.2, 0.2, generator=gen)
            m.running_mean.uniform_(-0.1, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 1.5, generator=gen)
    return model


def _resnet18(k=5):
    """torchvision's ResNet with one BasicBlock per stage (shared in-place ReLU, downsampling shortcuts)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=k)
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    return _bn_random(nn.Sequential(Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]), net).double())


class _Mixed(nn.Module):
    """Every fast path at once: a conv reading a BatchNorm output (no ReLU: the full z⁺ rule), a functional ReLU
    (invisible: not a ReLU output for the z⁺ shortcut), a strided and a grouped convolution, max-pooling of a ReLU
    output, a residual sum, Conv1d, a BatchNorm1d, Linear layers."""

    def __init__(self, k=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)   # reads bn1's output directly
        self.bn2 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, dilation=1)
        self.conv1d = nn.Conv1d(6, 4, 2, dilation=2)
        self.bn3 = nn.BatchNorm1d(4)
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(4 * 0 + 4, 5)
        self.relu2 = nn.ReLU()
        self.fc2 = nn.Linear(5, k)

    def forward(self, x):
        h = self.bn1(self.conv1(x))
        h = self.relu(self.bn2(self.conv2(h)) + h)               # residual sum of two BatchNorm outputs
        h = self.conv3(self.pool(h))
        h = F.relu(h).flatten(2)                                  # functional ReLU, then (N, 6, L)
        h = self.relu2(self.bn3(self.conv1d(h))).mean(2)
        return self.fc2(self.relu2(self.fc1(h)))


def _mixed(seed=0):
    torch.manual_seed(seed)
    return _bn_random(_Mixed().double(), seed)


def _x(n=3, size=8, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _loss_grads(model, x, options, rules=None, target=None):
    """Heatmaps (and inner relevances) of one call and the parameter gradient of a loss on all of them."""
    model.zero_grad(set_to_none=True)
    if rules is None:
        results = [lrp_flex_result(model, x, target, create_graph=True, **options)]
    else:
        results = lrp_flex_maps(model, x, target, rules=rules, create_graph=True, **options)
    total = 0
    for r in results:
        total = total + (r.heatmap ** 2).sum() + sum((v ** 2).sum() for v in r.relevances.values())
    total = total + 0.1 * F.cross_entropy(results[0].logits, torch.arange(x.shape[0]) % results[0].logits.shape[1])
    total.backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return [r.heatmap.detach() for r in results], grads


def _close(a, b, rtol=1e-9, atol=1e-12):
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        scale = max(float(v.abs().max()), 1e-300)
        assert float((u - v).abs().max()) <= atol + rtol * scale, float((u - v).abs().max()) / scale


OPTIONS = [dict(), dict(quantity="eta"), dict(rule="zplus", quantity="joint"), dict(first_layer="zb"),
           dict(rule="zplus", first_layer="zb")]


# ---------------------------------------------------------------- BatchNorm statistics read from the BatchNorm
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("build", [_mixed, _resnet18])
def test_saved_batch_statistics_equal_recomputed(monkeypatch, build, options):
    model, x = build().train(), _x(4)
    target = None if options.get("quantity") == "joint" else torch.tensor([0, 1, 2, 0])
    kw = dict(options, batchnorm="frozen")
    fast = _loss_grads(copy.deepcopy(model), x, kw, target=target)
    monkeypatch.setattr(lrp, "_READ_SAVED_STATISTICS", False)
    slow = _loss_grads(copy.deepcopy(model), x, kw, target=target)
    _close(fast[0], slow[0])
    _close(fast[1], slow[1])


# ---------------------------------------------------------------- convolutions' double backward
@pytest.mark.parametrize("options", OPTIONS + [dict(batchnorm="frozen"), dict(rule="zplus", batchnorm="frozen")])
@pytest.mark.parametrize("build", [_mixed, _resnet18])
def test_conv_route_equals_autograd_double_backward(monkeypatch, build, options):
    model, x = build(), _x(3)
    model.train() if options.get("batchnorm") == "frozen" else model.eval()
    fast = _loss_grads(copy.deepcopy(model), x, options)
    monkeypatch.setattr(lrp, "_conv_params", lambda conv: None)  # every convolution through autograd's own nodes
    slow = _loss_grads(copy.deepcopy(model), x, options)
    _close(fast[0], slow[0])
    _close(fast[1], slow[1])


def test_conv_input_grad_matches_finite_differences():
    torch.manual_seed(0)
    for conv in (nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), nn.Conv1d(3, 2, 3, dilation=2, padding=2),
                 nn.Conv3d(2, 2, 2, stride=(1, 2, 1))):
        conv = conv.double()
        inp = torch.randn(2, conv.in_channels, *([7] * (conv.weight.dim() - 2)), dtype=torch.float64)
        out = conv(inp)
        grad = torch.randn_like(out, requires_grad=True)
        weight = conv.weight.detach().clone().requires_grad_(True)
        params = lrp._conv_params(conv)

        def f(g, w, params=params, inp=inp):
            return lrp._ConvInputGrad.apply(g, inp, w, params)

        assert torch.autograd.gradcheck(f, (grad, weight), eps=1e-6, atol=1e-8)
        ref = torch.autograd.grad(conv._conv_forward(inp.requires_grad_(True), weight, None), inp, grad)[0]
        assert torch.allclose(f(grad, weight), ref, rtol=1e-12, atol=1e-14)
        inp.requires_grad_(False)


# ---------------------------------------------------------------- z⁺ without the negative part on ReLU outputs
@pytest.mark.parametrize("options", [dict(rule="zplus", quantity="joint"), dict(rule="zplus", layers=["layer1"]),
                                     dict(rule="zplus", batchnorm="frozen"), dict(rule="zplus", first_layer="zb")])
def test_zplus_on_relu_outputs_equals_the_full_rule(monkeypatch, options):
    model, x = _resnet18(), _x(3)
    model.train() if options.get("batchnorm") == "frozen" else model.eval()
    if "layers" in options:
        options = dict(options, layers=["1.layer1"])
    results_fast, results_slow = [], []
    for results in (results_fast, results_slow):
        m = copy.deepcopy(model)
        r = lrp_flex_result(m, x, torch.tensor([0, 1, 2]) if "quantity" not in options else None,
                            create_graph=True, **options)
        loss = (r.heatmap ** 2).sum() + sum((v ** 2).sum() for v in r.relevances.values())
        grads = torch.autograd.grad(loss, list(m.parameters()))
        results += [r.heatmap.detach(), *[v.detach() for v in r.relevances.values()], *grads]
        monkeypatch.setattr(lrp._TrackReLUOutputs, "gated", lambda self, t: False)
    _close(results_fast, results_slow)


class _Call(nn.Module):
    """``fn(model)`` as a module, so that :func:`torch.func.functional_call` can swap ``model``'s parameters."""

    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self):
        return self.fn(self.model)


def _gradcheck_in_parameters(model, fn):
    """Finite differences of the scalar ``fn(model)`` in ``model``'s parameters (BatchNorm momentum 0, so the
    check's many training forward passes leave the running statistics alone)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0
    names = [f"model.{n}" for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
    call = _Call(model, fn)

    def loss(*ps):
        return torch.func.functional_call(call, dict(zip(names, ps, strict=True)), ())

    return torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_zplus_full_rule_matches_finite_differences():
    # the _Mixed model's conv2 reads a BatchNorm output and its conv3 a max-pool of a ReLU (both rules, lazily built)
    x = _x(2, size=6)

    def loss(model):
        maps = lrp_flex_maps(model, x, rules=("epsilon", "zplus"), quantity="joint", batchnorm="frozen",
                             create_graph=True)
        return sum((r.heatmap ** 2).sum() for r in maps)

    assert _gradcheck_in_parameters(_mixed().train(), loss)


# ---------------------------------------------------------------- the Dual ISNet's shared forward pass
@pytest.mark.parametrize("mode", ["eval", "frozen"])
@pytest.mark.parametrize("options", [dict(), dict(first_layer="zb"), dict(layers=["bn2"])])
def test_maps_of_one_forward_equal_separate_calls(mode, options):
    model, x = _mixed(), _x(4)
    model.train() if mode == "frozen" else model.eval()  # frozen: the training forward pass, batch statistics
    kw = dict(options, quantity="joint", batchnorm=mode)
    shared = _loss_grads(copy.deepcopy(model), x, kw, rules=("epsilon", "zplus"))
    eps = _loss_grads(copy.deepcopy(model), x, dict(kw, rule="epsilon"))
    zplus = _loss_grads(copy.deepcopy(model), x, dict(kw, rule="zplus"))
    _close(shared[0], eps[0] + zplus[0])
    # the loss on both maps: its gradient is the sum of the two maps' gradients, the cross-entropy counted once
    model_ce = copy.deepcopy(model)
    logits = model_ce(x)
    ce_grads = torch.autograd.grad(0.1 * F.cross_entropy(logits, torch.arange(4) % logits.shape[1]),
                                   list(model_ce.parameters()))
    _close(shared[1], [a + b - c for a, b, c in zip(eps[1], zplus[1], ce_grads, strict=True)], rtol=1e-8)


def test_maps_of_one_forward_results_and_refusals():
    model, x = _mixed().eval(), _x(2)
    maps = lrp_flex_maps(model, x, rules=("zplus", "epsilon"), quantity="joint", layers=["bn2"])
    assert [tuple(r.heatmap.shape) for r in maps] == [tuple(x.shape)] * 2
    assert torch.equal(maps[0].logits, maps[1].logits) and set(maps[0].relevances) == {"bn2"}
    assert torch.allclose(maps[0].heatmap, lrp_flex(model, x, rule="zplus", quantity="joint"), rtol=1e-12)
    for bad in ((), ("epsilon", "epsilon"), ("gamma",)):
        with pytest.raises(ValueError, match="rule"):
            lrp_flex_maps(model, x, rules=bad, quantity="joint")
    with pytest.raises(ValueError, match="eta"):
        lrp_flex_maps(model, x, rules=("epsilon", "zplus"), quantity="eta")


def test_dual_isnet_updates_running_statistics_once():
    # one forward pass per Dual ISNet step (both maps): the running statistics move as in one training forward
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 3)).train()
    plain = copy.deepcopy(model)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(6, 1, 8, 8)
    masks[..., 2:6, 2:6] = 1
    isnet.isnet_loss(model, x, torch.arange(6) % 3, masks, variant="dual", P=0.5, ranges=(1.0, 4.0))
    with torch.no_grad():
        plain(x)
    assert torch.allclose(model[1].running_mean, plain[1].running_mean)
    assert torch.allclose(model[1].running_var, plain[1].running_var)
    assert int(model[1].num_batches_tracked) == 1


# ---------------------------------------------------------------- the ISNet losses of a training step
@pytest.mark.parametrize("variant", ["selective", "stochastic", "dual"])
def test_isnet_loss_gradient_matches_finite_differences_resnet_frozen(variant):
    # a training-mode torchvision block (shared in-place ReLU, downsample, frozen BatchNorm): the exact gradient
    torch.manual_seed(0)
    block = torchvision.models.resnet.BasicBlock(2, 3, stride=2, downsample=nn.Sequential(
        nn.Conv2d(2, 3, 1, 2, bias=False), nn.BatchNorm2d(3)))
    model = _bn_random(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), block,
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3)).double()).train()
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    masks = torch.zeros(3, 1, 6, 6, dtype=torch.float64)
    masks[..., 1:4, 2:5] = 1
    y = torch.tensor([0, 1, 2])

    def loss(model):
        value, _ = isnet.isnet_loss(model, x, y, masks, variant=variant, P=0.7, ranges=(0.05, 2.0),
                                    generator=torch.Generator().manual_seed(0))
        return value

    assert _gradcheck_in_parameters(model, loss)


def test_lrp_loss_parts_match_the_separate_functions():
    # lrp_loss computes the maps' absolute values and the resized masks once for both terms
    g = torch.Generator().manual_seed(0)
    h = torch.randn(4, 2, 3, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    m = torch.zeros(4, 1, 16, 16, dtype=torch.float64)
    m[..., 4:12, 2:10] = 1
    m[1] = 0
    for empty in ("ignore",):
        got = losses.lrp_loss(h, m, c1=1.0, c2=25.0, d=0.8, E=0.5, w1=1.5, w2=3.0, empty=empty)
        bg = losses.background_loss(h, m, d=0.8, E=0.5, empty=empty)
        s = losses.foreground_relevance(h, m)
        fg_each = losses.foreground_loss(s, 1.0, 25.0, reduction="none").mean(1)
        keep = losses.resize_masks(m, (8, 8)).flatten(1).sum(1) > 0
        want = 1.5 * bg + 3.0 * (fg_each * keep).sum() / keep.sum()
        assert got.item() == pytest.approx(want.item(), rel=1e-14)
        g1 = torch.autograd.grad(got, h)[0]
        g2 = torch.autograd.grad(want, h)[0]
        assert torch.allclose(g1, g2, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="NaN or inf"):
        losses.lrp_loss(torch.full((4, 1, 3, 8, 8), float("nan")), m, c1=1.0, c2=2.0, empty="ignore")


# ---------------------------------------------------------------- ISNet training steps against a hand-written reference
def _reference_step_grads(model, x, y, masks, variant, eps=0.01, mu=0.01, P=0.7, ranges=(1.0, 25.0)):
    """The loss gradient of one Selective or Dual ISNet step of ``_conv_bn_net`` written out layer by layer: the
    training forward pass, LRP-ε (a ReLU's backward ``G·a/(a+ε)``) and LRP-z⁺ by hand, BatchNorm with its batch
    statistics held constant in the maps (``batchnorm="frozen"``), the heatmap loss from the separate loss functions.
    """
    conv1, bn, _, conv2, _, _, fc = model
    z1 = conv1(x)
    var, mean = torch.var_mean(z1, [0, 2, 3], correction=0)
    scale = bn.weight * torch.rsqrt(var + bn.eps)                 # differentiable: the training backward sees it
    b1 = bn(z1)                                                   # the training forward (updates running stats)
    a1 = torch.relu(b1)
    z2 = conv2(a1)
    a2 = torch.relu(z2)
    logits = fc(a2.flatten(1))

    def epsilon_map(g_logits):
        g = (g_logits @ fc.weight).view_as(a2) * a2 / (a2 + eps)
        g = F.conv_transpose2d(g, conv2.weight, padding=1) * a1 / (a1 + eps)
        return x * F.conv_transpose2d(g * scale.view(1, -1, 1, 1), conv1.weight, padding=1)

    def zplus_map():  # Eq. 4 at every layer (inputs ≥ 0), BatchNorm folded into conv1, seed R_k = zp_k (Eq. 5)
        wp = fc.weight.clamp(min=0)
        zp = a2.flatten(1) @ wp.T + fc.bias.clamp(min=0)
        g = ((zp / (zp + eps)) @ wp).view_as(a2) * (a2 > 0)
        zr = F.conv2d(a1, conv2.weight.clamp(min=0), conv2.bias.clamp(min=0), padding=1)
        g = F.conv_transpose2d(z2 * g / (zr + eps), conv2.weight.clamp(min=0), padding=1) * (a1 > 0)
        w1 = (conv1.weight * scale.view(-1, 1, 1, 1)).clamp(min=0)
        bias = ((conv1.bias - mean) * scale + bn.bias).clamp(min=0)
        zr = F.conv2d(x, w1, bias, padding=1)
        return x * F.conv_transpose2d(b1 * g / (zr + eps), w1, padding=1)

    if variant == "selective":  # η̃ of the lowest logit (Sec. II-F.2, II-G step 3)
        p = torch.softmax(logits, 1).gather(1, logits.detach().argmin(1, keepdim=True))
        eta = torch.log(p + mu) - torch.log(1 - p + mu)
        (g_logits,) = torch.autograd.grad(eta.sum(), logits, create_graph=True)
        maps = [epsilon_map(g_logits)]
    else:  # the joint LRP-ε and LRP-z⁺ maps (Sec. II-F.1)
        maps = [epsilon_map(torch.ones_like(logits)), zplus_map()]
    terms = []
    for h in maps:
        h = h[:, None]
        s = losses.foreground_relevance(h, masks)
        terms.append(losses.background_loss(h, masks) + losses.foreground_loss(s, *ranges, reduction="none").mean())
    loss = (1 - P) * F.cross_entropy(logits, y) + P * torch.stack(terms).mean()
    return torch.autograd.grad(loss, list(model.parameters()))


def _conv_bn_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    return _bn_random(net.double()).train()


@pytest.mark.parametrize("variant", ["selective", "dual"])
def test_isnet_training_steps_equal_a_hand_written_reference(variant):
    # isnet.step_function (isnet_loss with every fast path, a clipped SGD step) against _reference_step_grads
    model = _conv_bn_net()
    reference = copy.deepcopy(model)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(4, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    masks = torch.zeros(4, 1, 6, 6, dtype=torch.float64)
    masks[..., 1:5, 2:5] = 1
    step = isnet.step_function(model, x, y, masks, variant=variant)
    opt = torch.optim.SGD(reference.parameters(), lr=1e-4, momentum=0.9)
    for _ in range(3):
        step()
        for p, gr in zip(reference.parameters(), _reference_step_grads(reference, x, y, masks, variant), strict=True):
            p.grad = gr
        torch.nn.utils.clip_grad_norm_(list(reference.parameters()), 1.0)
        opt.step()
        _close([p.grad for p in model.parameters()], [p.grad for p in reference.parameters()], rtol=1e-10)
    state, ref_state = model.state_dict(), reference.state_dict()
    _close([v for v in state.values() if v.is_floating_point()],
           [v for v in ref_state.values() if v.is_floating_point()], rtol=1e-12)  # weights and running statistics
    assert int(model[1].num_batches_tracked) == int(reference[1].num_batches_tracked) == 3
