"""Independent references for LRP: zennit and captum behind the package's calling shape (chapters 02 and 04).

LRP-Flex (:mod:`xai_robust.lrp`) is checked against these: :func:`epsilon_composite` is the zennit composite that
computes what ``lrp_flex`` computes (equal to float precision, tests/test_lrp.py), :func:`exmap_composite` is the
composite ExMap's code uses, :func:`zennit_heatmap` runs any composite, and :func:`captum_lrp` is captum's LRP with
the same ε rule. Each leaves the model as it found it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attribution import resolve_target, restore_model
from .checks import check_model_input
from .lrp import _LAYERS, _normalizers

__all__ = ["relu_fed_layers", "epsilon_composite", "exmap_composite", "zennit_heatmap", "captum_lrp"]


def relu_fed_layers(model: nn.Module, x: torch.Tensor, extra_types=()) -> set:
    """Names of the conv/linear modules (and ``extra_types``) whose output feeds an ``nn.ReLU``.

    Found by tracing one forward pass. A BatchNorm between a layer and its ReLU counts for the layer (as if
    merged). These are the layers where LRP-Flex applies LRP-ε; every other layer gets LRP-0 (chapter 02).
    """
    owner, followed, handles = {}, set(), []
    inplace = [(m, m.inplace) for m in model.modules() if isinstance(m, nn.ReLU)]

    def layer_hook(name):
        def hook(module, args, out):
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                src = owner.get(id(args[0]))
                if src is not None:
                    owner[id(out)] = src
                return
            owner[id(out)] = name
        return hook

    def relu_hook(module, args, out):
        src = owner.get(id(args[0]))
        if src is not None:
            followed.add(src)

    try:
        for m, _ in inplace:
            m.inplace = False
        with restore_model(model):
            model.eval()
            for name, m in model.named_modules():
                if isinstance(m, (*_LAYERS, nn.modules.batchnorm._BatchNorm, *extra_types)):
                    handles.append(m.register_forward_hook(layer_hook(name)))
                elif isinstance(m, nn.ReLU):
                    handles.append(m.register_forward_hook(relu_hook))
            with torch.no_grad():
                model(x)
    finally:
        for h in handles:
            h.remove()
        for m, flag in inplace:
            m.inplace = flag
    return followed


def epsilon_composite(model: nn.Module, x: torch.Tensor, epsilon: float = 0.01, *, canonizers=None,
                      first_layer=None):
    """The zennit composite that computes what :func:`lrp_flex` computes (chapter 02's reference).

    ``Epsilon(ε)`` on every conv/linear (or residual ``Sum``) a ReLU follows, ``Norm()`` (LRP-0) on the other
    layers, pooling and the output layer, BatchNorm merged by the canonizers (default: zennit's
    ``ResNetCanonizer``, which also merges conv→BatchNorm pairs of any model in sequential order).

    Parameters
    ----------
    model : nn.Module
    x : Tensor
        A batch to trace which layers feed a ReLU (with the canonizers applied).
    epsilon : float
    canonizers : list, optional
    first_layer : (name, zennit rule), optional
        A rule for one named module, e.g. ``("conv1", ZBox(low, high))``.

    Returns
    -------
    zennit.core.Composite
    """
    from zennit.core import Composite
    from zennit.layer import Sum
    from zennit.rules import Epsilon, Norm
    from zennit.torchvision import ResNetCanonizer

    canonizers = [ResNetCanonizer()] if canonizers is None else canonizers
    tracer = Composite(module_map=lambda ctx, name, module: None, canonizers=canonizers)
    with tracer.context(model):
        followed = relu_fed_layers(model, x, extra_types=(Sum,))
    tiny = 1e-12 if x.dtype == torch.float64 else 1e-30

    def module_map(ctx, name, module):
        if first_layer is not None and name == first_layer[0]:
            return first_layer[1]
        if isinstance(module, (*_LAYERS, Sum)):
            return Epsilon(epsilon) if name in followed else Norm(tiny)
        if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                               nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
            return Norm(tiny)
        return None

    return Composite(module_map=module_map, canonizers=canonizers)


def captum_lrp(model: nn.Module, x: torch.Tensor, target=None, *, epsilon: float = 0.01,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """LRP-ε from captum's ``LRP`` with the same rule placement as :func:`lrp_flex` (chapter 02).

    ``EpsilonRule(ε)`` on the layers a ReLU follows, a (near) zero ε elsewhere (pooling, ``Flatten``, the
    output layer), ``IdentityRule`` on other modules captum has no rule for (``normalize``), so the result is
    the relevance at the network input after ``normalize``, as for :func:`zennit_heatmap`. captum refuses
    weighted or pooling modules that run twice, merges no BatchNorm and has no rule for residual sums written
    as ``+`` in ``forward`` (the sum passes relevance as a gradient, duplicating it), so on ResNets its map is
    not LRP-ε; on plain ReLU networks (Conv2Net, VGG) it is. The attributes captum attaches are removed.

    Returns
    -------
    Tensor
        Relevance with the shape of ``x``.

    Raises
    ------
    NotImplementedError
        A module runs more than once per forward pass (torchvision's ResNet blocks call their one ``ReLU``
        twice), which captum's LRP cannot handle (it fails deep in its backward hooks otherwise).
    """
    from captum.attr import LRP
    from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS
    from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule

    check_model_input(model, x)
    reused = _reused_modules(model, x[:1])
    if reused:
        raise NotImplementedError(f"captum's LRP cannot explain this {type(model).__name__}: module(s) {reused[:3]} "
                                  "run more than once per forward pass (e.g. torchvision's ResNet blocks reuse their "
                                  "ReLU); compare on a plain ReLU network (Conv2Net, VGG) or use zennit_heatmap")
    followed = relu_fed_layers(model, x)
    before = {m: set(vars(m)) for m in model.modules()}
    tiny = 1e-12 if x.dtype == torch.float64 else 1e-30
    try:
        with restore_model(model):
            model.eval()
            with torch.no_grad():
                t = resolve_target(model(x), target, generator)
            for name, m in model.named_modules():
                if len(list(m.children())) > 0:
                    continue
                if isinstance(m, _LAYERS):
                    m.rule = EpsilonRule(epsilon if name in followed else tiny)
                elif type(m) in SUPPORTED_LAYERS_WITH_RULES or isinstance(m, nn.Flatten):
                    m.rule = EpsilonRule(tiny)  # LRP-0: pooling, and reshaping (relevance moves with its value)
                elif type(m) not in SUPPORTED_NON_LINEAR_LAYERS:
                    m.rule = IdentityRule()
            with torch.enable_grad():
                relevance = LRP(model).attribute(x.detach().clone().requires_grad_(True), target=t)
    finally:
        for m, keys in before.items():
            for key in set(vars(m)) - keys:
                delattr(m, key)
    return relevance.detach()


def _reused_modules(model: nn.Module, x: torch.Tensor) -> list:
    """Names of the leaf modules called more than once in one forward pass of ``x``."""
    calls, handles = {}, []
    for name, m in model.named_modules():
        if len(list(m.children())) == 0:
            handles.append(m.register_forward_hook(lambda mod, a, o, name=name: calls.__setitem__(
                name, calls.get(name, 0) + 1)))
    try:
        with restore_model(model), torch.no_grad():
            model.eval()
            model(x)
    finally:
        for h in handles:
            h.remove()
    return sorted(n for n, c in calls.items() if c > 1)


def exmap_composite(gamma: float = 4.0, epsilon: float = 1e-6, canonizers=None):
    """The zennit composite ExMap uses: ``Epsilon(ε)`` on linear layers, ``Gamma(γ)`` on convolutions.

    ExMap (Chakraborty et al., 2024) computes its heatmaps with zennit, a ResNet canonizer (BatchNorm merged,
    residual sums made explicit), ε = 1e-6 on dense layers and γ = 4 on all convolutions (chapter 04; chapter
    02 compares it with LRP-Flex). Pooling and sums get ``Norm()``, activations pass relevance.

    Parameters
    ----------
    gamma : float
        γ of the γ-rule on convolutions.
    epsilon : float
        ε on linear layers.
    canonizers : list, optional
        zennit canonizers; default ``[ResNetCanonizer()]`` (which also merges BatchNorm in sequential order).

    Returns
    -------
    zennit.composites.LayerMapComposite
    """
    from zennit.composites import LayerMapComposite
    from zennit.layer import Sum
    from zennit.rules import Epsilon, Gamma, Norm, Pass
    from zennit.torchvision import ResNetCanonizer
    from zennit.types import Activation, AvgPool, Convolution

    if canonizers is None:
        canonizers = [ResNetCanonizer()]
    layer_map = [(Activation, Pass()), (Sum, Norm()), (AvgPool, Norm()), (nn.Linear, Epsilon(epsilon)),
                 (Convolution, Gamma(gamma))]
    return LayerMapComposite(layer_map=layer_map, canonizers=canonizers)


def zennit_heatmap(model: nn.Module, x: torch.Tensor, target=None, composite=None, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """LRP heatmap from zennit (Anders et al.) with relevance seeded at the target logit's value.

    The model is evaluated in eval mode (zennit's canonizers merge BatchNorm with running statistics) and
    left as found. When the model starts with the package's ``normalize`` module (no rule there), zennit's
    result is the relevance at the network input after ``normalize`` sent back through its gradient; we undo
    that gradient (multiply by ``normalize.std``) so the map is the relevance at the first layer's input - for
    z^B/γ first layers this equals the pixel relevance (chapter 02).

    Parameters
    ----------
    model : nn.Module
    x : Tensor[N, C, H, W]
    target : see :func:`xai_robust.attribution.resolve_target`
    composite : zennit composite, e.g. :func:`exmap_composite` (default ``exmap_composite()``)
    generator : torch.Generator, optional

    Returns
    -------
    Tensor
        Relevance with the shape of ``x``.
    """
    from zennit.attribution import Gradient

    check_model_input(model, x)
    if isinstance(target, str) and target == "label":
        raise ValueError("target='label' is not accepted: pass the labels themselves as a LongTensor[N]")
    composite = exmap_composite() if composite is None else composite
    def seed(out):  # relevance starts at the target logit's value (Faster ISNet, Eq. 3)
        t = resolve_target(out, target, generator)
        return F.one_hot(t, out.shape[1]).to(out.dtype) * out

    with restore_model(model):
        model.eval()
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad(), Gradient(model=model, composite=composite) as attributor:
            _, relevance = attributor(xg, seed)
    norms = [m for m in _normalizers(model) if isinstance(getattr(m, "std", None), torch.Tensor)]
    if norms:
        relevance = relevance * norms[0].std.to(relevance)
    return relevance.detach()
