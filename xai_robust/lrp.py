"""LRP-Flex: Layer-wise Relevance Propagation for any ReLU network through a modified ReLU gradient.

Faster ISNet (Bassi, Decherchi & Cavalli), Sec. II-A (LRP rules, Eq. 1-5), Sec. II-F (explained
quantities of the Selective, Stochastic and Dual ISNets, Eq. 11-12), Sec. II-G (LRP-Flex) and
Sec. II-H (LRP deep supervision). Chapter 02 of the book derives and tests everything here.

The idea (Sec. II-G, step 1): replace the backward pass of every ReLU by

.. math:: G^{in}_k = \\frac{a^{out}_k}{a^{out}_k + \\varepsilon} G^{out}_k

and multiply the resulting "gradient" at the input by the input (step 4, :math:`R^0 = G^0 \\odot X`).
With :math:`R = a \\odot G` at every ReLU output, a conv/linear layer followed by a ReLU then applies
LRP-ε (Eq. 2) and every other linear operation (the logits, pooling, residual additions, BatchNorm in
eval mode, which is folded into the preceding layer) applies LRP-0. Relevance starts at the explained
logit (Eq. 3), i.e. the backward pass is seeded with 1.

How the hooks work
------------------
Every ``nn.ReLU`` *module* runs, for the duration of the call, a custom autograd function whose forward is
``relu`` and whose backward is the rule above (its ``forward`` is swapped; a subclass's output is replaced by a
forward hook); the backward is written with differentiable operations on the ReLU's output, so
``create_graph=True`` gives heatmaps whose gradient with respect to the parameters is exact (this is what the
ISNet losses of chapter 03 need; no ``register_full_backward_hook``, whose double backward broke in torch 1.13,
pytorch#88312). The rule is
switched on only while the explanation's own backward pass runs: any later backward through the same
graph (the second-order pass through a heatmap loss, or a classification loss on the returned logits)
sees the true ReLU derivative, as the paper prescribes (Sec. II-G, step 1).
In-place ReLUs stay in place where autograd allows it (else, and for every other rule, out of place) and reused
ReLU modules (one ``nn.ReLU(inplace=True)`` called twice per torchvision ResNet block) are patched once and fire on
every call, so no model is rebuilt. Everything (hooks, ``inplace`` flags, train/eval modes, ``requires_grad``)
is restored on exit, also when the forward pass raises.

Limits: functional ``torch.relu`` / ``F.relu`` calls inside a model's ``forward`` are invisible to module
hooks and are silently treated with their plain gradient (LRP-0 there); modules for other nonlinearities
(GELU, SiLU, ELU, LeakyReLU, Tanh, Sigmoid, Softplus, ...) are refused with a ``ValueError``.

BatchNorm and the batch
-----------------------
In training mode a BatchNorm layer normalises with the *batch* statistics, so every sample's heatmap
would depend on (and backpropagate into) the other samples of the batch - the official code does this.
By default (``batchnorm="eval"``) the explanation forward runs every BatchNorm layer in eval mode (running
statistics), even when the model is in training mode: heatmaps are then batch-independent, the running
statistics are not updated by the explanation pass, and gradients through the heatmap still reach the
BatchNorm affine parameters. ``batchnorm="batch"`` keeps the model's own modes (the official code's
behaviour: in training mode the heatmap backpropagates through the batch statistics, across samples).
``batchnorm="frozen"`` (the ISNets' training default) keeps the model's modes for the forward pass - the logits
are the training logits, so the classification loss can share the forward pass - but the explanation treats
a training-mode BatchNorm as the affine map with the batch's mean and variance held constant: no sample's
relevance flows through another sample, and the heatmap equals that of the eval-mode network whose running
statistics are the batch statistics (tested). The statistics stay differentiable for the training backward, so
the gradient of a heatmap loss is the exact gradient of these heatmaps (tested against finite differences).

Cost (training with heatmap losses, chapter 03)
-----------------------------------------------
An ISNet step is the forward pass, the explanation's backward with ``create_graph`` and the backward of both, so
about three plain steps at best. What keeps it near that (each path tested against the plain one it replaces,
``tests/test_speed_exactness.py``):

- the batch statistics of a frozen BatchNorm are read from the BatchNorm's own autograd node (no second pass over
  its input) and differentiated in closed form (:class:`_BatchStatistics`); the frozen map relabels the BatchNorm's
  output instead of copying it (:class:`_FrozenRoute`);
- with ``create_graph`` every convolution's explanation gradient is a :class:`_ConvInputGrad` node, whose own
  backward is a convolution and an ordinary weight gradient (autograd's double backward of a convolution computes
  the weight term as a batch-transposed convolution, several times slower on a CPU);
- an ``nn.ReLU`` computes its output once (its ``forward`` is swapped for the call, not hooked after the fact), in
  place where the model's own ReLU is;
- the z⁺ contributions of a layer are built only in the z⁺ map's own backward pass, where its explanation gradient
  arrives (:class:`_LazyReroute`): a layer that a BatchNorm folds into costs nothing, and on a ReLU output
  (``a ≥ 0``) the ``w⁻ a⁻`` term, a convolution of zeros whose gradient the ReLU stops, is left out;
- :func:`lrp_flex_maps` makes several maps (the Dual ISNet's joint LRP-ε and LRP-z⁺) from one forward pass.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .attribution import resolve_target, restore_model
from .checks import check_dtype, check_finite, check_target

__all__ = ["lrp_flex", "lrp_flex_result", "lrp_flex_maps", "LRPResult", "UNSUPPORTED_ACTIVATIONS", "SUPPORTED_MODULES"]

#: Nonlinearity modules LRP-Flex can see but not explain; ``lrp_flex`` refuses models containing them.
UNSUPPORTED_ACTIVATIONS = (nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.PReLU,
                           nn.SELU, nn.CELU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.ReLU6,
                           nn.RReLU, nn.Softsign, nn.LogSigmoid, nn.Tanhshrink, nn.Softmax, nn.LogSoftmax,
                           nn.Threshold, nn.Hardshrink, nn.Softshrink, nn.Softmax2d, nn.Softmin)
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
#: Leaf modules LRP-Flex explains: the layers, ReLU, BatchNorm, dropout, pooling and shape-only maps. Any
#: other leaf module (one without children) is refused, since its backward would be read as if it were
#: linear. Modules with children are containers whose own functional calls are invisible (module notes).
SUPPORTED_MODULES = (*_LAYERS, nn.ReLU, nn.modules.batchnorm._BatchNorm, *_DROPOUT,
                     nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                     nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                     nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Flatten, nn.Unflatten, nn.Identity,
                     nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)
_QUANTITIES = ("logit", "eta", "joint")
_RULES = ("epsilon", "zplus")
_BATCHNORM = ("eval", "batch", "frozen")


# --------------------------------------------------------------------------------------------------
# autograd functions
# --------------------------------------------------------------------------------------------------
class _Switch:
    """Which explanation's own backward pass is running: ``mode`` is ``None`` outside any, else the rule of the map
    being made (``"epsilon"`` or ``"zplus"``).

    The modified backward rules apply only while an explanation's own backward pass runs: any later backward
    through the same graph (a training loss on the returned logits, or the second-order pass that differentiates a
    ``create_graph`` heatmap) sees the true derivatives - the paper's "this backward pass modification has to be
    deactivated when not creating LRP heatmaps" (Sec. II-G, step 1). Rules that hold during every explanation
    (batch statistics held constant, the z^B first layer) test :attr:`active`; rules of one map only test a
    :class:`_During` view, so one forward pass can carry the LRP-ε and the LRP-z⁺ rules of the Dual ISNet's two
    maps (Sec. II-F1) and each backward pass applies its own.
    """

    def __init__(self):
        self.mode = None

    @property
    def active(self) -> bool:
        return self.mode is not None


class _During:
    """A :class:`_Switch` seen by the rules of one map: active only while that map's backward pass runs."""

    def __init__(self, switch: _Switch, mode: str):
        self.switch, self.mode = switch, mode

    @property
    def active(self) -> bool:
        return self.switch.mode == self.mode


class _EpsilonReLU(torch.autograd.Function):
    """``relu`` forward; LRP-ε backward ``G_in = a / (a + ε) * G_out`` (Faster ISNet, Sec. II-G, step 1)."""

    @staticmethod
    def forward(ctx, z, epsilon, gate, inplace=False):
        ctx.epsilon, ctx.gate = epsilon, gate
        ctx.set_materialize_grads(False)  # a backward pass that does not reach this ReLU computes nothing here
        if inplace:  # as the model's own nn.ReLU(inplace=True) does (z: a non-leaf, non-view tensor)
            ctx.mark_dirty(z)
            a = z.clamp_(min=0)
        else:
            a = z.clamp(min=0)
        # the output is saved, as torch's own relu saves its result: a > 0 exactly where z > 0, and a/(a+ε) needs a
        ctx.save_for_backward(a)
        return a

    @staticmethod
    def backward(ctx, grad):
        if grad is None:
            return None, None, None, None
        (a,) = ctx.saved_tensors
        eps = ctx.epsilon
        if not ctx.gate.active or eps == 0:  # the true ReLU derivative (ε = 0: LRP-0 = Gradient×Input)
            # the mask a > 0 has derivative 0: detached, a create_graph pass records no zero gradient for it
            return torch.ops.aten.threshold_backward(grad, a.detach(), 0), None, None, None
        if torch.is_grad_enabled():  # create_graph: one differentiable node (its derivatives are exact)
            # a carries this ReLU's own node: the heatmap loss's gradient reaches z through the ReLU's derivative
            return _EpsilonRule.apply(grad, a, eps), None, None, None
        d = a + eps  # fast path, in place: G_in = G_out * a / (a + ε)
        return torch.div(a, d, out=d).mul_(grad), None, None, None


class _EpsilonRule(torch.autograd.Function):
    """``G · r(a)`` with ``r = a / (a + ε)``, ``a = relu(z)``: the LRP-ε step of a ReLU as one node of the graph
    that a heatmap loss differentiates (``∂/∂G = r``, ``∂/∂a = G ε / (a + ε)²`` for a > 0, else 0; ``a`` is the
    ReLU's output, whose own derivative takes it on to z)."""

    @staticmethod
    def forward(ctx, grad, a, eps):
        d = a + eps
        ratio = a / d  # r = a / (a + ε)
        # dr/da = ε / (a + ε)² = (1 - r) / (a + ε) where a > 0, and 0 elsewhere (threshold_backward: the mask a > 0)
        slope = torch.ops.aten.threshold_backward(torch.rsub(ratio, 1).div_(d), a, 0)
        ctx.save_for_backward(grad, ratio, slope)
        return grad * ratio

    @staticmethod
    def backward(ctx, out_grad):
        grad, ratio, slope = ctx.saved_tensors
        g_grad = out_grad * ratio if ctx.needs_input_grad[0] else None
        g_a = (out_grad * grad).mul_(slope) if ctx.needs_input_grad[1] else None
        return g_grad, g_a, None


def _stabilize(z, epsilon):
    """``z + ε·sign(z)`` with sign(0) = +1 (Eq. 2, and zennit's stabilizer)."""
    # +ε where z >= 0, else -ε: a constant of the graph (0-d tensors keep z's dtype); z is added in place
    shift = torch.where(z.detach() >= 0, z.new_full((), epsilon), z.new_full((), -epsilon))
    return shift.add_(z)


class _Reroute(torch.autograd.Function):
    """Value of ``z``; while ``gate`` is active the gradient goes to ``zr`` only, scaled by ``z / stab(zr)``.

    Used for the z⁺ (Eq. 4) and z^B rules: the relevance at a layer output is ``R = z ⊙ G`` and the rule
    redistributes it in proportion to the contributions that make up ``zr``. The factor ``z / stab(zr)`` is an
    input (computed, differentiably, in the forward pass), so the explanation's backward is one product.
    """

    @staticmethod
    def forward(ctx, z, zr, factor, gate):
        ctx.gate = gate
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(factor)
        return z.clone()  # a new tensor: downstream in-place ops (``out += identity``) must not alter z

    @staticmethod
    def backward(ctx, grad):
        if grad is None:
            return None, None, None, None
        if not ctx.gate.active:  # outside this rule's explanation: the layer's true derivative
            return grad, None, None, None
        (factor,) = ctx.saved_tensors
        return None, grad * factor, None, None  # the gradient of zr (factor: differentiable with create_graph)


def _reroute(z, zr, epsilon, gate):
    """``z`` whose explanation gradient (while ``gate`` is active) goes to ``zr``, scaled by ``z / stab(zr)``."""
    return _Reroute.apply(z, zr, z / _stabilize(zr, epsilon), gate)


class _LazyReroute(torch.autograd.Function):
    """:class:`_Reroute` for a z⁺ layer whose contributions ``zr = part.zr(inp)`` are built only when its explanation
    gradient arrives: in the z⁺ map's own backward pass, differentiably when that pass has ``create_graph``.

    The gradient goes to the layer input, ``J_zr(inp)ᵀ (G ⊙ z / stab(zr))``: what autograd computes when ``zr`` is
    built in the forward pass (:class:`_Reroute`), so the heatmap and its gradient are those of the eager rule
    (tested); a layer that a BatchNorm folds into (its own z⁺ never used) or one outside the explained path then
    costs nothing, and the LRP-ε map of a Dual ISNet's shared forward pass does not carry the z⁺ convolutions.
    """

    @staticmethod
    def forward(ctx, z, inp, part, epsilon, gate):
        ctx.part, ctx.epsilon, ctx.gate = part, epsilon, gate
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(z, inp)
        return z.clone()  # a new tensor: downstream in-place ops (``out += identity``) must not alter z

    @staticmethod
    def backward(ctx, grad):
        if grad is None:
            return None, None, None, None, None
        if not ctx.gate.active:  # outside the z⁺ map's explanation: the layer's true derivative
            return grad, None, None, None, None
        z, inp = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return None, None, None, None, None
        part = ctx.part
        factor = grad * z / _stabilize(part.zr(inp), ctx.epsilon)  # differentiable iff create_graph
        return None, part.input_grad(factor, inp), None, None, None


class _ZPlusPart:
    """The z⁺ contributions ``zr = Σ_j (w_jk a_j)⁺`` of one layer (Eq. 4; positive bias included), given its input.

    ``w, b``: the layer's weights with a folded BatchNorm; ``gated``: the input is a ReLU output (``a ≥ 0``), so the
    ``w⁻ a⁻`` part is left out (see :class:`_TrackReLUOutputs`).
    """

    def __init__(self, layer, weight, bias, gated):
        self.layer, self.weight, self.bias, self.gated = layer, weight, bias, gated

    def _params(self, inp):
        """The weights in the input's dtype (a no-op unless the forward pass ran in mixed precision)."""
        return self.weight.to(inp.dtype), self.bias.to(inp.dtype)

    def zr(self, inp):
        (w, b), layer = self._params(inp), self.layer
        if self.gated:
            return _affine(layer, inp, w.clamp(min=0), b.clamp(min=0))
        pos = F.relu(inp)  # relu/threshold: a cheaper backward than clamp's
        return _affine(layer, pos, w.clamp(min=0), b.clamp(min=0)) + _affine(layer, inp - pos, w.clamp(max=0), None)

    def input_grad(self, s, inp):
        """``J_zr(inp)ᵀ s``, the operations autograd would run for :meth:`zr` (differentiable with grad mode on):
        ``w⁺ᵀ s`` for a ReLU input, else ``w⁻ᵀ s + [inp > 0] (w⁺ᵀ s - w⁻ᵀ s)`` (``pos = relu(inp)``,
        ``neg = inp - pos``)."""
        w, _ = self._params(inp)
        wp = w.clamp(min=0)
        if self.gated:
            return self._transposed(s, inp, wp)
        neg = self._transposed(s, inp, w.clamp(max=0))
        pos = torch.ops.aten.threshold_backward(self._transposed(s, inp, wp) - neg, F.relu(inp.detach()), 0)
        return neg + pos

    def _transposed(self, s, inp, weight):
        """``∂(layer_weight(inp))/∂inp`` applied to ``s`` (linear in ``s`` and ``weight``)."""
        if isinstance(self.layer, nn.Linear):
            return s.matmul(weight)
        params = _conv_params(self.layer)
        if params is not None:
            return _ConvInputGrad.apply(s, inp, weight, params)
        leaf = inp.detach().requires_grad_(True)  # other padding modes: autograd's own input gradient
        with torch.enable_grad():
            out = _affine(self.layer, leaf, weight, None)
        return torch.autograd.grad(out, leaf, s, create_graph=torch.is_grad_enabled())[0]


class _PixelZPlusPart(_ZPlusPart):
    """The z⁺ contributions of a first layer that reads ``normalize(x) = s x + t``, in pixel space: ``w⁺ (s x)⁺ +
    w⁻ (s x)⁻`` plus the composite's positive bias ``(w t + b)⁺`` (see :meth:`_LayerRules._zplus`); the gradient
    goes to the pixels ``x``."""

    def __init__(self, layer, weight, bias, shift, scale):
        super().__init__(layer, weight, bias, gated=False)
        self.shift, self.scale = shift, scale

    def zr(self, x):
        (w, b), layer = self._params(x), self.layer
        a = x * self.scale
        bias = _affine(layer, self.shift, w, b).clamp(min=0)  # a map: padding sees `shift`
        return (_affine(layer, a.clamp(min=0), w.clamp(min=0), None) + _affine(layer, a.clamp(max=0),
                                                                              w.clamp(max=0), None) + bias)

    def input_grad(self, s, x):
        """What autograd runs for :meth:`zr`: clamp's derivative passes ``a ≥ 0`` (min=0) and ``a ≤ 0`` (max=0)."""
        a = (x * self.scale).detach()
        w, _ = self._params(x)
        pos = torch.where(a >= 0, self._transposed(s, a, w.clamp(min=0)), 0.0)
        neg = torch.where(a <= 0, self._transposed(s, a, w.clamp(max=0)), 0.0)
        return (pos + neg) * self.scale


def _conv_params(conv):
    """(stride, padding, dilation, groups) of an ``nn.ConvNd`` whose input gradient :class:`_ConvInputGrad` can take
    (zero padding given as numbers), else None."""
    if not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or conv.padding_mode != "zeros" \
            or isinstance(conv.padding, str):
        return None
    return tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups


class _ConvInputGrad(torch.autograd.Function):
    """``∂(w * x)/∂x`` applied to ``grad``: a convolution's input gradient as one node of the graph that a heatmap
    loss differentiates.

    Autograd's own double backward of a convolution computes the weight term as a convolution of the batch-transposed
    tensors (slow on CPU); here it is the convolution's ordinary weight gradient with ``gg`` as the input, and the
    ``grad`` term is the convolution of ``gg`` (both exact: the map is bilinear in ``grad`` and ``w``).
    """

    @staticmethod
    def forward(ctx, grad, inp, weight, conv):
        stride, padding, dilation, groups = ctx.conv = conv
        ctx.save_for_backward(grad, weight)
        return torch.ops.aten.convolution_backward(grad, inp, weight, None, stride, padding, dilation, False,
                                                   [0] * len(stride), groups, [True, False, False])[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, gg):
        grad, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        g_grad = g_weight = None
        if ctx.needs_input_grad[0]:
            g_grad = torch.ops.aten.convolution(gg, weight, None, stride, padding, dilation, False, [0] * len(stride),
                                                groups)
        if ctx.needs_input_grad[2]:
            g_weight = torch.ops.aten.convolution_backward(grad, gg, weight, None, stride, padding, dilation, False,
                                                           [0] * len(stride), groups, [False, True, False])[1]
        return g_grad, None, g_weight, None


class _ConvRoute(torch.autograd.Function):
    """Value of a convolution's output ``out`` (re-labelled in place: the convolution's node saves no reference to
    it). While an explanation's backward pass runs with ``create_graph`` the gradient goes to the convolution's input
    through :class:`_ConvInputGrad` (the same values as autograd's, a cheaper double backward); any other backward
    pass gets the convolution's own derivatives."""

    @staticmethod
    def forward(ctx, out, inp, weight, conv, gate):
        ctx.conv, ctx.gate = conv, gate
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(inp, weight)
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        if grad is None:
            return None, None, None, None, None
        if not (ctx.gate.active and torch.is_grad_enabled()):
            return grad, None, None, None, None
        inp, weight = ctx.saved_tensors
        g = _ConvInputGrad.apply(grad, inp, weight, ctx.conv) if ctx.needs_input_grad[1] else None
        return None, g, None, None, None


def _route_conv(conv, inp, weight, out, switch):
    """``out = conv(inp)`` (weights ``weight``) with :class:`_ConvRoute`, where the convolution allows it."""
    params = _conv_params(conv)
    if params is None or type(out.grad_fn).__name__ != "ConvolutionBackward0" or not (
            out.dtype == inp.dtype == weight.dtype):  # (mixed precision: autograd's own node)
        return out
    return _ConvRoute.apply(out, inp, weight, params, switch)


# grad_fn of a BatchNorm output that saves no reference to the output itself: such an output can carry the frozen
# route in place (``mark_dirty``) instead of being copied
_OUTPUT_FREE_NODES = frozenset({"NativeBatchNormBackward0", "CudnnBatchNormBackward0", "MiopenBatchNormBackward0"})


class _FrozenRoute(torch.autograd.Function):
    """Value of a BatchNorm's output ``out``; during any explanation the gradient goes to the BatchNorm's input
    ``inp`` instead, times ``scale = γ/√(var + eps)``: the BatchNorm as the affine map with its batch statistics
    held constant (``batchnorm="frozen"``). Outside the explanation: the BatchNorm's true (training) derivative.

    ``scale`` is an input, so with ``create_graph`` the gradient of the explanation reaches γ and, through
    :class:`_BatchStatistics`, the batch statistics (exact second-order gradient).
    """

    @staticmethod
    def forward(ctx, out, inp, scale, gate, in_place):
        ctx.gate = gate
        ctx.view = (1, -1) + (1,) * (inp.dim() - 2)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(scale)
        if in_place:  # out's own node saved no reference to it: re-label it instead of copying it
            ctx.mark_dirty(out)
            return out
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        if grad is None:
            return None, None, None, None, None
        if not ctx.gate.active:
            return grad, None, None, None, None
        (scale,) = ctx.saved_tensors
        return None, grad * scale.reshape(ctx.view), None, None, None


class _BatchStatistics(torch.autograd.Function):
    """``(mean, 1/√(var + eps))`` of a BatchNorm input over every dimension but the channels (biased variance).

    Constants for every explanation's backward pass (no sample's relevance flows into the others through them), but
    differentiable for any other backward, with the closed form ``∂mean/∂x = 1/M`` and
    ``∂(1/√(var+eps))/∂x = -(var+eps)^{-3/2} (x - mean) / M`` (M values per channel): the gradient of a heatmap loss
    stays exact (tests: finite differences) and costs one pass over the input.
    """

    @staticmethod
    def forward(ctx, inp, mean, invstd, gate):
        ctx.gate = gate
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(inp, mean, invstd)
        return mean.clone(), invstd.clone()

    @staticmethod
    def backward(ctx, g_mean, g_invstd):
        if ctx.gate.active or (g_mean is None and g_invstd is None):
            return None, None, None, None
        inp, mean, invstd = ctx.saved_tensors
        view = (1, -1) + (1,) * (inp.dim() - 2)
        m = inp.numel() // inp.shape[1]
        coef = torch.zeros_like(invstd) if g_invstd is None else g_invstd * invstd.pow(3) * (-1.0 / m)
        const = -coef * mean if g_mean is None else g_mean / m - coef * mean
        return torch.addcmul(const.reshape(view), inp, coef.reshape(view)), None, None, None


# --------------------------------------------------------------------------------------------------
# layer helpers
# --------------------------------------------------------------------------------------------------
def _affine(module, inp, weight, bias):
    if isinstance(module, nn.Linear):
        return F.linear(inp, weight, bias)
    return module._conv_forward(inp, weight, bias)


def _uses_batch_stats(bn) -> bool:
    return bn.training or bn.running_mean is None


#: set to False to recompute the batch statistics instead of reading those the BatchNorm saved (tests compare both)
_READ_SAVED_STATISTICS = True


def _batch_statistics(bn, inp, out, switch):
    """(mean, 1/√(var + eps)) of the batch, as :class:`_BatchStatistics` outputs (held by the explanation).

    The BatchNorm's own autograd node saved both (``native_batch_norm``'s ``save_mean`` and ``save_invstd``); they
    are read from it, else (another kernel, a subclass computing differently) recomputed from ``inp``.
    """
    c = inp.shape[1]
    mean = invstd = None
    node = out.grad_fn
    if _READ_SAVED_STATISTICS and type(node).__name__ == "NativeBatchNormBackward0":
        mean, invstd = getattr(node, "_saved_result1", None), getattr(node, "_saved_result2", None)
    if not (isinstance(mean, torch.Tensor) and isinstance(invstd, torch.Tensor)
            and mean.shape == (c,) and invstd.shape == (c,)):
        with torch.no_grad():
            var, mean = torch.var_mean(inp, [d for d in range(inp.dim()) if d != 1], correction=0)
            invstd = torch.rsqrt(var + bn.eps)
    return _BatchStatistics.apply(inp, mean.to(inp.dtype), invstd.to(inp.dtype), switch)


def _merged_params(layer, bn, stats=None):
    """Weight and bias of ``bn ∘ layer`` (BatchNorm folded into the layer, as zennit's canonizers do), with the
    running statistics or, given ``stats = (mean, 1/√(var+eps))``, those (batch statistics held constant)."""
    w, b = layer.weight, layer.bias
    if b is None:
        b = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    if bn is None:
        return w, b
    if stats is not None:
        mean, scale = stats
    else:
        mean, scale = bn.running_mean, torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    view = (-1,) + (1,) * (w.dim() - 1)
    return w * scale.reshape(view), b * scale + shift


def _frozen_route(ex, bn, inp, out, stats=None):
    """Explain a batch-statistics BatchNorm as the affine map with those statistics held constant."""
    _, invstd = stats if stats is not None else _batch_statistics(bn, inp, out, ex.switch)
    scale = invstd if bn.weight is None else invstd * bn.weight
    return _FrozenRoute.apply(out, inp, scale, ex.switch, type(out.grad_fn).__name__ in _OUTPUT_FREE_NODES)


class _Explanation:
    """What the rules of one LRP-Flex call share: the input, ε, the switch, and where ``normalize`` put ``x``."""

    def __init__(self, x, epsilon):
        self.x, self.epsilon = x, epsilon
        self.switch = _Switch()
        self.normalize_out = None     # output of the model's normalize module when it reads x
        self.normalize_module = None
        self.in_prefix = False        # True while a rule re-runs normalize itself (no rule fires then)
        self.relu_inplace = {}        # id(nn.ReLU) -> its own inplace flag (the call switches the flags off)

    def run_prefix(self, fn, *args):
        """Call ``fn`` (e.g. ``normalize``) without any rule's hook firing."""
        self.in_prefix = True
        try:
            return fn(*args)
        finally:
            self.in_prefix = False


class _Rule:
    """One piece of LRP-Flex: it registers its forward hooks in :meth:`attach` and removes them in :meth:`remove`.

    A rule may keep tensors of the current forward pass; :meth:`replaced` tells it when another rule swapped one
    of them for a copy (the layer capture clones its module's output).
    """

    def __init__(self, ex: _Explanation):
        self.ex = ex
        self._handles = []

    def _hook(self, module: nn.Module, fn) -> None:
        self._handles.append(module.register_forward_hook(fn))

    def attach(self, model: nn.Module) -> None:
        raise NotImplementedError

    def replaced(self, old: torch.Tensor, new: torch.Tensor) -> None:
        """``old`` (a module output) continues as ``new`` downstream."""

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class _TrackNormalize(_Rule):
    """Records the output of the model's ``normalize`` (an elementwise affine map) when it reads ``x``."""

    def attach(self, model):
        for m in _normalizers(model):
            self._hook(m, self._forward)

    def _forward(self, module, args, out):
        ex = self.ex
        if not ex.in_prefix and ex.normalize_out is None and args[0] is ex.x:
            ex.normalize_out, ex.normalize_module = out, module

    def replaced(self, old, new):
        if self.ex.normalize_out is old:
            self.ex.normalize_out = new


class _EpsilonAtReLUs(_Rule):
    """LRP-ε (Eq. 2) through the ReLUs: each ``nn.ReLU``'s backward becomes ``G·a/(a+ε)`` (Sec. II-G, step 1).

    ``skip(t)`` names ReLU inputs that keep their plain gradient (the ReLU after a z^B first layer). The rule holds
    during the LRP-ε map's backward pass only (in the Dual ISNet's shared forward pass the z⁺ map's ReLUs pass
    relevance unchanged, i.e. their true derivative).
    """

    def __init__(self, ex, skip=lambda t: False):
        super().__init__(ex)
        self.skip = skip
        self.gate = _During(ex.switch, "epsilon")
        self._patched = []

    def attach(self, model):
        for m in model.modules():
            if type(m) is nn.ReLU:  # its forward is replaced for the call: the ReLU is computed once
                self._patched.append((m, m.__dict__.get("forward")))
                m.forward = self._relu_ if self.ex.relu_inplace.get(id(m), False) else self._relu
            elif isinstance(m, nn.ReLU):  # a subclass: its own forward runs, then a hook swaps the output
                self._hook(m, self._forward)

    def _relu(self, inp, inplace=False):
        if self.ex.in_prefix or self.skip(inp):
            return F.relu(inp, inplace=inplace)
        return _EpsilonReLU.apply(inp, self.ex.epsilon, self.gate, inplace)

    def _relu_(self, inp):
        """The model's ``nn.ReLU(inplace=True)``, kept in place where autograd allows it."""
        return self._relu(inp, inplace=inp.grad_fn is not None and not inp._is_view() and inp is not self.ex.x)

    def _forward(self, module, args, out):
        if self.ex.in_prefix or self.skip(args[0]):
            return None
        return _EpsilonReLU.apply(args[0], self.ex.epsilon, self.gate)

    def remove(self):
        super().remove()
        for m, forward in self._patched:
            if forward is None:
                del m.forward
            else:
                m.forward = forward
        self._patched.clear()


#: modules that pass "a ReLU output" on: every zero they output is a zero of ReLU outputs read at that position
_GATE_KEEPING = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                 nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Flatten, nn.Unflatten, nn.Identity)


class _TrackReLUOutputs(_Rule):
    """Records the outputs of ``nn.ReLU`` modules, and of pooling/reshaping modules that read one.

    The z⁺ rule of a layer whose input ``a`` is such a tensor needs no negative part: ``a⁻ = 0``, and the gradient
    that the ``w⁻ a⁻`` term would send to a zero of ``a`` ends at a ReLU whose input is ≤ 0 there, whose true
    derivative (the z⁺ map's) is exactly 0. Dropping the term skips a convolution of zeros and changes nothing,
    not the heatmap and not its gradient (tested against the full rule).
    """

    def __init__(self, ex):
        super().__init__(ex)
        self._outputs = {}  # id -> tensor (kept alive for the call, so ids are not reused)

    def attach(self, model):
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                self._hook(m, self._relu)
            elif isinstance(m, _GATE_KEEPING):
                self._hook(m, self._keep)

    def gated(self, t) -> bool:
        return self._outputs.get(id(t)) is t

    def _relu(self, module, args, out):
        if not self.ex.in_prefix:
            self._outputs[id(out)] = out

    def _keep(self, module, args, out):
        if not self.ex.in_prefix and args and self.gated(args[0]):
            self._outputs[id(out)] = out

    def replaced(self, old, new):
        if self.gated(old):
            self._outputs[id(new)] = new

    def remove(self):
        super().remove()
        self._outputs.clear()


class _ConvGradients(_Rule):
    """With ``create_graph``: every convolution's explanation gradient through :class:`_ConvInputGrad`."""

    def attach(self, model):
        for m in model.modules():
            if _conv_params(m) is not None:
                self._hook(m, self._forward)

    def _forward(self, module, args, out):
        if self.ex.in_prefix:
            return None
        return _route_conv(module, args[0], module.weight, out, self.ex.switch)


class _FrozenBatchNorm(_Rule):
    """``batchnorm="frozen"``: a training-mode BatchNorm is explained as an affine map with constant statistics."""

    def attach(self, model):
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                self._hook(m, self._forward)

    def _forward(self, module, args, out):
        if self.ex.in_prefix or not _uses_batch_stats(module):
            return None  # eval mode: a plain linear map (LRP-0)
        return _frozen_route(self.ex, module, args[0], out)


class _LayerRules(_Rule):
    """LRP-z⁺ (Eq. 4) at every conv/linear layer (``zplus``) and/or LRP-z^B at the first (``zb``).

    A BatchNorm that directly follows a layer is folded into it (its statistics must then be constant: running
    statistics, or the batch's held constant under ``batchnorm="frozen"``); any other BatchNorm is LRP-0, or the
    frozen affine map. The outputs that seed Eq. 5 at the logits are kept in ``zr_of``. With ``epsilon`` (the Dual
    ISNet's shared forward pass) the z⁺ rules hold during the z⁺ map's backward pass only, and a folded frozen
    BatchNorm also carries the frozen affine map for the LRP-ε map.
    """

    def __init__(self, ex, *, zplus: bool, zb: bool, bounds, frozen: bool, epsilon: bool = False, tracker=None,
                 route_convs: bool = False):
        super().__init__(ex)
        self.zplus, self.zb, self.bounds, self.frozen, self.epsilon = zplus, zb, bounds, frozen, epsilon
        self.tracker, self.route_convs = tracker, route_convs
        self.zplus_gate = _During(ex.switch, "zplus")
        self.last = None          # (rerouted output, layer, layer input, is_first) of the latest layer
        self.first_seen = False
        self.first_out = None     # output of the first layer (after folding a following BatchNorm)
        self.zr_of = []           # (rerouted output, z⁺ part, its input) per layer, to seed Eq. 5 at the logits
        self.bound_leaves = None  # (low, high) leaves in pixel space for z^B

    def attach(self, model):
        for m in model.modules():
            if isinstance(m, _LAYERS):
                self._hook(m, self._layer)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                self._hook(m, self._batchnorm)

    def replaced(self, old, new):
        if self.first_out is old:
            self.first_out = new
        if self.last is not None and self.last[0] is old:
            self.last = (new,) + self.last[1:]

    def _affine(self, layer, inp, weight, bias):
        """The layer's map with other weights (the rules' contributions), a convolution routed with create_graph."""
        out = _affine(layer, inp, weight, bias)
        return _route_conv(layer, inp, weight, out, self.ex.switch) if self.route_convs else out

    def _apply(self, layer, bn, inp, out, is_first, stats=None):
        if is_first and self.zb:
            out = self._zb(layer, bn, inp, out, stats)
            self.first_out = out
            return out
        return self._zplus(layer, bn, inp, out, is_first, stats)

    def _layer(self, module, args, out):
        if self.ex.in_prefix:
            return None
        is_first = not self.first_seen
        self.first_seen = True
        if not (self.zplus or (is_first and self.zb)):
            return None
        out = self._apply(module, None, args[0], out, is_first)
        self.last = (out, module, args[0], is_first)
        return out

    def _batchnorm(self, module, args, out):
        if self.ex.in_prefix:
            return None
        last = self.last
        folded = not (last is None or args[0] is not last[0] or out.dim() < 2)
        stats = None
        if _uses_batch_stats(module):
            if not self.frozen:
                if folded:  # lrp_flex refuses this before the forward pass; kept as a guard
                    raise ValueError("rule='zplus' and first_layer='zb' fold BatchNorm into the preceding layer, "
                                     "which needs constant statistics; use batchnorm='eval' (the default) or "
                                     "'frozen'")
                return None
            stats = _batch_statistics(module, args[0], out, self.ex.switch)
        if folded:
            _, layer, inp, is_first = last
            self.last = None
            if stats is not None and self.epsilon and not (is_first and self.zb):
                out = _frozen_route(self.ex, module, args[0], out, stats)  # the LRP-ε map's view of this BatchNorm
            return self._apply(layer, module, inp, out, is_first, stats)
        if stats is None:
            return None  # eval mode: a plain linear map (LRP-0)
        return _frozen_route(self.ex, module, args[0], out, stats)

    def _zplus(self, layer, bn, inp, out, is_first=False, stats=None):
        """LRP-z⁺ (Faster ISNet, Eq. 4): redistribute in proportion to ``(w_jk a_j)^+`` (positive bias included).

        When the first layer reads ``normalize``'s output, the rule is applied in pixel space to the composite
        map ``layer ∘ normalize`` (contributions ``w_jk s_j x_j`` with ``normalize(x) = s x + t``), so the
        heatmap of the pixels is non-negative, as z⁺ promises. When the layer reads a ReLU output (``a ≥ 0``),
        the contributions are ``w⁺ a`` alone (see :class:`_TrackReLUOutputs`).
        """
        ex = self.ex
        w, b = _merged_params(layer, bn, stats)
        if is_first and ex.normalize_out is not None and inp is ex.normalize_out:  # the pixels get the gradient
            shift = ex.run_prefix(ex.normalize_module, torch.zeros_like(ex.x))
            scale = ex.run_prefix(ex.normalize_module, torch.ones_like(ex.x)) - shift
            part, source = _PixelZPlusPart(layer, w, b, shift, scale), ex.x
        else:
            part = _ZPlusPart(layer, w, b, gated=self.tracker is not None and self.tracker.gated(inp))
            source = inp
        # built when its explanation gradient arrives (the logits' when the seed needs it)
        rerouted = _LazyReroute.apply(out, source, part, ex.epsilon, self.zplus_gate)
        self.zr_of.append((rerouted, part, source))
        return rerouted

    def zr_for(self, out):
        """The z⁺ contributions of the layer whose (rerouted) output is ``out`` (Eq. 5 seed), or None."""
        return next((part.zr(source) for rerouted, part, source in self.zr_of if rerouted is out), None)

    def _zb(self, layer, bn, inp, out, stats=None):
        """LRP-z^B on the first layer: ``x w - l w⁺ - h w⁻`` with pixel bounds mapped through ``normalize``."""
        ex = self.ex
        x = ex.x
        if self.bound_leaves is None:
            low, high = self.bounds
            low = torch.as_tensor(low, dtype=x.dtype, device=x.device).expand_as(x).clone().requires_grad_(True)
            high = torch.as_tensor(high, dtype=x.dtype, device=x.device).expand_as(x).clone().requires_grad_(True)
            self.bound_leaves = (low, high)
        low, high = self.bound_leaves
        if inp is x:
            low_in, high_in = low, high
        elif ex.normalize_out is not None and inp is ex.normalize_out:
            low_in, high_in = ex.run_prefix(ex.normalize_module, low), ex.run_prefix(ex.normalize_module, high)
        else:
            raise ValueError("first_layer='zb' needs the first conv/linear layer to receive the input directly or "
                             "through the model's `normalize` module (an elementwise affine map, e.g. "
                             "xai_robust.models.Normalize)")
        w, _ = _merged_params(layer, bn, stats)
        zb = (self._affine(layer, inp, w, None) - self._affine(layer, low_in, w.clamp(min=0), None)
              - self._affine(layer, high_in, w.clamp(max=0), None))
        return _reroute(out, zb, ex.epsilon, ex.switch)  # z^B holds in every map


class _Capture(_Rule):
    """The outputs of named modules, whose relevance ``a ⊙ G`` is returned too (LRP deep supervision, Sec. II-H)."""

    def __init__(self, ex, names, notify):
        super().__init__(ex)
        self.names, self.notify = list(names), notify
        self.captured: dict[str, torch.Tensor] = {}

    def attach(self, model):
        named = dict(model.named_modules())
        for name in self.names:
            self._hook(named[name], self._forward(name))

    def _forward(self, name):
        def hook(module, args, out):
            if not isinstance(out, torch.Tensor):
                raise ValueError(f"layers: module {name!r} does not return a tensor")
            if name in self.captured:
                raise ValueError(f"layers: module {name!r} runs more than once per forward pass (a reused module); "
                                 "name a module that runs once, e.g. a whole block such as 'layer1'")
            self.captured[name] = out
            clone = out.clone()  # downstream in-place ops (e.g. `out += identity`) must not alter the captured tensor
            self.notify(out, clone)
            return clone
        return hook


def _is_normalizer(module) -> bool:
    return type(module).__name__ == "Normalize"


def _normalizers(model):
    """``model.normalize`` and any module named like the package's ``Normalize`` (per-channel affine maps)."""
    found = [m for m in model.modules() if _is_normalizer(m)]
    norm = getattr(model, "normalize", None)
    if isinstance(norm, nn.Module) and norm not in found:
        found.append(norm)
    return found


class _Composite:
    """The rules of one LRP-Flex call, attached for the duration of a ``with`` block and undone on exit.

    Like zennit's ``Composite.context``: inside the block the model computes its ordinary forward pass with the
    rules' hooks in place; on exit every hook is removed and ``inplace`` flags, train/eval modes and
    ``requires_grad`` are restored, also when the block raises. ``rules`` lists the maps the forward pass serves
    (one, or ``("epsilon", "zplus")`` for the Dual ISNet's two maps of one forward pass).
    """

    def __init__(self, x, *, epsilon, rules, first_layer, bounds, layers, batchnorm, create_graph=False):
        self.ex = _Explanation(x, epsilon)
        self.batchnorm = batchnorm
        zplus, eps = "zplus" in rules, "epsilon" in rules
        folding = zplus or first_layer == "zb"
        self.tracker = _TrackReLUOutputs(self.ex) if zplus else None
        self.layer_rules = (_LayerRules(self.ex, zplus=zplus, zb=first_layer == "zb", bounds=bounds,
                                        frozen=batchnorm == "frozen", epsilon=eps, tracker=self.tracker,
                                        route_convs=create_graph)
                            if folding else None)
        self.capture = _Capture(self.ex, layers or [], self._replaced)
        self.rules = [_ConvGradients(self.ex)] if create_graph else []  # first: the layer rules see its output
        if folding:
            self.rules.append(_TrackNormalize(self.ex))
        if eps:  # under z⁺ the rule lives in the layers and ReLUs pass relevance (their gradient)
            skip = (lambda t: t is self.layer_rules.first_out) if first_layer == "zb" else (lambda t: False)
            self.rules.append(_EpsilonAtReLUs(self.ex, skip))
        if self.tracker is not None:  # after the ReLU rule: it records the tensors the model goes on with
            self.rules.append(self.tracker)
        if folding:
            self.rules.append(self.layer_rules)
        elif batchnorm == "frozen":
            self.rules.append(_FrozenBatchNorm(self.ex))
        self.rules.append(self.capture)  # last: it sees (and clones) the other rules' outputs

    def _replaced(self, old, new):
        for r in self.rules:
            r.replaced(old, new)

    @contextlib.contextmanager
    def context(self, model: nn.Module) -> Iterator[_Explanation]:
        relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        inplace = [(m, m.inplace) for m in relus]
        self.ex.relu_inplace = {id(m): flag for m, flag in inplace}
        with restore_model(model):
            try:
                for m in relus:
                    m.inplace = False
                if self.batchnorm == "eval":  # batch-independent and deterministic heatmaps
                    for m in model.modules():
                        if isinstance(m, (nn.modules.batchnorm._BatchNorm, *_DROPOUT)):
                            m.eval()
                for r in self.rules:
                    r.attach(model)
                yield self.ex
            finally:
                for r in self.rules:
                    r.remove()
                for m, flag in inplace:
                    m.inplace = flag


def _check(model, x, epsilon, quantity, mu, rules, first_layer, bounds, layers, batchnorm, target):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise TypeError("x must be a floating tensor with a batch dimension, e.g. images (N, C, H, W) in [0, 1]; "
                        "convert uint8 images with x.float() / 255 and add a batch dimension with x.unsqueeze(0)")
    if x.shape[0] == 0:
        raise ValueError(f"x is an empty batch (shape {tuple(x.shape)}): pass at least one sample")
    check_finite(x, "x")
    check_dtype(model, x)
    first = next((m for m in model.modules() if isinstance(m, _LAYERS)), None)
    wanted = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}.get(type(first))
    if wanted is not None and x.dim() != wanted:
        hint = " add a batch dimension with x.unsqueeze(0) for a single sample;" if x.dim() == wanted - 1 else ""
        raise ValueError(f"x has shape {tuple(x.shape)} but the model's first layer is {type(first).__name__}, which "
                         f"takes {wanted}-d batches (N, C, ...);{hint} images are (N, C, H, W)")
    from .models import check_input_channels

    check_input_channels(model, x)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a number >= 0 (0 gives LRP-0 = Gradient×Input), got {epsilon!r}")
    if quantity not in _QUANTITIES:
        raise ValueError(f"quantity must be one of {_QUANTITIES}, got {quantity!r}")
    for rule in rules:
        if rule not in _RULES:
            raise ValueError(f"rule must be one of {_RULES}, got {rule!r}")
    if first_layer not in (None, "zb"):
        raise ValueError(f"first_layer must be None or 'zb', got {first_layer!r}")
    if batchnorm not in _BATCHNORM:
        raise ValueError(f"batchnorm must be one of {_BATCHNORM}, got {batchnorm!r}")
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu) or mu <= 0:
        raise ValueError(f"mu must be a number > 0 (Faster ISNet uses 0.01), got {mu!r}")
    if quantity == "eta" and any(rule != "epsilon" for rule in rules):
        raise ValueError("quantity='eta' is defined for rule='epsilon' (Selective ISNet, Faster ISNet Sec. II-F)")
    if quantity == "joint" and target is not None:
        raise ValueError("quantity='joint' explains every logit at once; leave target=None")
    if isinstance(target, str) and target == "label":
        raise ValueError("target='label' is not accepted: pass the labels themselves as a LongTensor[N]")
    if quantity != "joint":
        check_target(model, target, x.shape[0])  # before the forward pass (batchnorm="batch" updates statistics)
    if first_layer == "zb":
        if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2):
            raise ValueError(f"bounds must be a pair (low, high) in pixel space, e.g. (0.0, 1.0), got {bounds!r}")
        low, high = (torch.as_tensor(b, dtype=torch.float64) for b in bounds)
        if not (bool(torch.isfinite(low).all()) and bool(torch.isfinite(high).all())):
            raise ValueError(f"bounds must be finite, got {bounds!r}")
        try:
            ordered = bool((low <= high).all())
        except RuntimeError as err:
            raise ValueError(f"bounds: low and high must broadcast together, got {bounds!r}") from err
        if not ordered:
            raise ValueError(f"bounds must be (low, high) with low <= high, got {bounds!r}")
    if layers is not None:
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
            raise TypeError("layers must be a list of module names, e.g. ['layer1', 'layer2']")
        names = dict(model.named_modules())
        missing = [n for n in layers if n not in names or n == ""]
        if missing:
            raise ValueError(f"layers: no module named {missing} in the model; see [n for n, _ in "
                             "model.named_modules()]")
    folding = "zplus" in rules or first_layer == "zb"
    for name, m in model.named_modules():
        if isinstance(m, UNSUPPORTED_ACTIVATIONS):
            raise ValueError(f"model.{name} is {type(m).__name__}: LRP-Flex explains ReLU networks only (Faster ISNet, "
                             "Sec. II-G); replace it by nn.ReLU, or apply output activations outside the model")
        if next(m.children(), None) is None and not isinstance(m, SUPPORTED_MODULES) and not _is_normalizer(m):
            raise ValueError(f"model.{name or '(root)'} is {type(m).__name__}, a module LRP-Flex cannot explain: its "
                             "backward pass would be read as a linear map. LRP-Flex explains networks of "
                             "xai_robust.lrp.SUPPORTED_MODULES (conv/linear layers, nn.ReLU, BatchNorm, dropout, "
                             "pooling, Flatten/Identity/padding) and a Normalize module")
        if (folding and batchnorm == "batch" and isinstance(m, nn.modules.batchnorm._BatchNorm)
                and _uses_batch_stats(m)):
            # checked before the forward pass, which would already have updated the running statistics
            raise ValueError(f"rule='zplus' and first_layer='zb' fold BatchNorm into the preceding layer, which needs "
                             f"constant statistics, but model.{name} uses batch statistics (training mode) and "
                             "batchnorm='batch' keeps them; use batchnorm='eval' (the default) or 'frozen'")


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------
class LRPResult(NamedTuple):
    """What :func:`lrp_flex_result` returns: the heatmap, the relevance at named layers, the logits."""

    heatmap: torch.Tensor
    relevances: dict
    logits: torch.Tensor


def lrp_flex(model: nn.Module, x: torch.Tensor, target=None, *, epsilon: float = 0.01, create_graph: bool = False,
             quantity: str = "logit", mu: float = 0.01, rule: str = "epsilon", first_layer: str | None = None,
             bounds=(0.0, 1.0), generator: torch.Generator | None = None, batchnorm: str = "eval",
             **removed) -> torch.Tensor:
    """LRP heatmaps of any ReLU network by a modified backward pass (LRP-Flex; Faster ISNet, Sec. II-G).

    Returns the heatmap only; :func:`lrp_flex_result` (same options plus ``layers``) also gives the relevance at
    hidden layers and the logits of the explanation's forward pass.

    Chapter 02 derives why this is LRP-ε and checks it against zennit; chapter 03 trains on these heatmaps.

    Parameters
    ----------
    model : nn.Module
        A classifier built from ``nn.ReLU`` modules, taking pixels (its first module may be ``normalize``).
    x : Tensor[N, C, H, W]
        Input batch (pixels; any floating dtype matching the model).
    target : None, int, LongTensor[N] or {'predicted', 'lowest', 'stochastic'}
        The class to explain per sample (see :func:`xai_robust.attribution.resolve_target`): ``None`` or
        ``'predicted'`` = highest logit; ``'lowest'`` = lowest logit (Selective ISNet); ``'stochastic'`` =
        highest logit with probability 0.5, else uniform over the others (Stochastic ISNet, drawn with
        ``generator``). To explain the labels pass them as a LongTensor. Must be None for ``quantity='joint'``.
    epsilon : float
        ε of LRP-ε (Eq. 2; 0.01 in the paper). ``0`` gives LRP-0, i.e. Gradient×Input. Also the stabiliser of
        the z⁺ (Eq. 4) and z^B denominators.
    create_graph : bool
        Keep the graph so the heatmap can be differentiated (heatmap losses, chapter 03).
    quantity : {'logit', 'eta', 'joint'}
        What is explained. ``'logit'``: the target logit, relevance seeded with its value (Eq. 3; Eq. 5 for z⁺).
        ``'eta'``: :math:`\\tilde\\eta_c = \\ln(P_c+\\mu) - \\ln(1-P_c+\\mu)` (Sec. II-G step 3, a bounded Eq. 11
        with P from Eq. 12); the backward starts from η̃ itself. ``'joint'``: every logit's relevance is its
        value, :math:`R_k = z_k` (Dual ISNet's joint LRP-ε map; with ``rule='zplus'`` the seed is
        :math:`R_k = \\sum_j (w_{jk} a_j)^+`, the joint LRP-z⁺ map, Sec. II-F1).
    mu : float
        μ of η̃ (0.01 in Sec. II-G).
    rule : {'epsilon', 'zplus'}
        ``'epsilon'``: LRP-ε through the modified ReLU gradient. ``'zplus'``: LRP-z⁺ (Eq. 4) at every
        conv/linear layer, with an eval-mode BatchNorm directly after a layer folded into it; ReLUs then pass
        relevance unchanged. Without folding, BatchNorm layers are linear maps (LRP-0).
    first_layer : None or 'zb'
        ``'zb'``: LRP-z^B at the first conv/linear layer (the paper's default input rule) with ``bounds`` in
        pixel space. When that layer reads the output of ``model.normalize`` (an elementwise affine map) the
        bounds are sent through ``normalize`` and the rule is applied to the composite map, so the heatmap is
        the z^B relevance of the pixels; the ReLU right after the layer passes relevance unchanged.
    bounds : (low, high)
        Pixel bounds for z^B: numbers or tensors broadcastable to ``x``.
    generator : torch.Generator, optional
        Randomness for ``target='stochastic'``.
    batchnorm : {'eval', 'batch', 'frozen'}
        ``'eval'`` (default): run BatchNorm with running statistics during the explanation, whatever the
        model's mode, so heatmaps are batch-independent (see the module notes). ``'batch'``: keep modes (a
        training-mode heatmap backpropagates through the batch statistics). ``'frozen'``: keep modes for the
        forward pass (training logits, shareable with the classification loss) but explain a training-mode
        BatchNorm as the affine map with the batch statistics held constant. With ``'batch'`` and ``'frozen'`` a
        model in training mode runs its training forward pass, which updates BatchNorm running statistics as
        any training step does: use them inside a training step (as :func:`xai_robust.isnet.isnet_loss` does).

    Returns
    -------
    Tensor
        The heatmap (shape of ``x``).

    Raises
    ------
    ValueError
        For unsupported nonlinearity modules, bad targets or options.

    Notes
    -----
    With ε on every ReLU and seed 1 at the target logit, the heatmap equals zennit's LRP with ``Epsilon(ε)``
    on every layer a ReLU follows, ``Norm()`` on pooling/output/residual branches and BatchNorm merged
    (tested to 1e-6 in float64, tests/test_lrp.py). Functional ``relu`` calls are invisible (plain gradient).
    """
    if removed:
        moved = sorted(set(removed) & {"layers", "return_logits"})
        if moved:
            raise TypeError(f"lrp_flex returns the heatmap only; for {moved} call lrp.lrp_flex_result(model, x, ...,"
                            " layers=[...]), which returns (heatmap, relevances, logits)")
        raise TypeError(f"lrp_flex() got unexpected keyword arguments {sorted(removed)}")
    return lrp_flex_result(model, x, target, epsilon=epsilon, create_graph=create_graph, quantity=quantity, mu=mu,
                           rule=rule, first_layer=first_layer, bounds=bounds, generator=generator,
                           batchnorm=batchnorm).heatmap


def lrp_flex_result(model: nn.Module, x: torch.Tensor, target=None, *, layers=None, **options) -> LRPResult:
    """:func:`lrp_flex` with its by-products: ``LRPResult(heatmap, relevances, logits)``.

    Parameters
    ----------
    model, x, target, **options
        As in :func:`lrp_flex` (``epsilon``, ``create_graph``, ``quantity``, ``mu``, ``rule``, ``first_layer``,
        ``bounds``, ``generator``, ``batchnorm``).
    layers : list of str, optional
        Module names (``model.named_modules()``) whose *output* relevance ``a ⊙ G`` to return as well (LRP deep
        supervision, Sec. II-H). Name ReLUs or blocks ('layer1'); a module called twice per forward is refused.

    Returns
    -------
    LRPResult
        ``heatmap`` (shape of ``x``), ``relevances`` (``{name: relevance}``, empty without ``layers``) and
        ``logits`` (of the explanation's forward pass; differentiable with ``create_graph``). Chapters 02, 03.
    """
    rule = options.pop("rule", "epsilon")
    return _explain(model, x, target, rules=(rule,), layers=layers, **options)[0]


def lrp_flex_maps(model: nn.Module, x: torch.Tensor, target=None, *, rules=("epsilon", "zplus"), layers=None,
                  **options) -> list[LRPResult]:
    """Several LRP-Flex maps of one forward pass: one :class:`LRPResult` per rule in ``rules``.

    The Dual ISNet penalises the joint LRP-ε and the joint LRP-z⁺ maps of the same image (Faster ISNet, Sec. II-F1):
    one forward pass carries both rules (the z⁺ contributions of every layer ride along the ordinary forward pass)
    and each map's backward pass applies its own, so the training forward pass, and its backward, are shared.
    Each result equals :func:`lrp_flex_result` with that ``rule`` (tested); every map explains the same target.

    Parameters
    ----------
    model, x, target, layers, **options
        As in :func:`lrp_flex_result` (``rule`` excepted).
    rules : sequence of {'epsilon', 'zplus'}
        The maps, in order (each at most once).

    Returns
    -------
    list of LRPResult
        One per rule; their ``logits`` are the one forward pass's.
    """
    rules = tuple(rules)
    if not rules or len(set(rules)) != len(rules):
        raise ValueError(f"rules must name each of {_RULES} at most once, got {rules!r}")
    return _explain(model, x, target, rules=rules, layers=layers, **options)


def _explain(model, x, target=None, *, rules, epsilon: float = 0.01, create_graph: bool = False,
             quantity: str = "logit", mu: float = 0.01, first_layer: str | None = None, bounds=(0.0, 1.0),
             layers=None, generator: torch.Generator | None = None, batchnorm: str = "eval") -> list[LRPResult]:
    """One forward pass with the rules of every map in ``rules``, then one explanation backward pass per map."""
    _check(model, x, epsilon, quantity, mu, rules, first_layer, bounds, layers, batchnorm, target)
    xg = x if (x.requires_grad and create_graph) else x.detach().requires_grad_(True)
    composite = _Composite(xg, epsilon=float(epsilon), rules=rules, first_layer=first_layer, bounds=bounds,
                           layers=layers, batchnorm=batchnorm, create_graph=create_graph)
    layer_rules, capture = composite.layer_rules, composite.capture
    results = []
    with torch.enable_grad(), composite.context(model) as ex:
        logits = model(xg)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ValueError("lrp_flex expects the model to return logits of shape (N, K)")
        start0, seed0 = logits, None
        if quantity == "joint":
            seed0 = torch.ones_like(logits)
        else:
            t = resolve_target(logits.detach(), target, generator)
            onehot = F.one_hot(t, logits.shape[1]).to(logits.dtype)
            if quantity == "logit":
                seed0 = onehot
            else:  # eta (Faster ISNet, Sec. II-G step 3; Eq. 11-12)
                p = torch.softmax(logits, dim=1).gather(1, t[:, None])
                start0 = torch.log(p + mu) - torch.log(1 - p + mu)
                seed0 = torch.ones_like(start0)
        bound_leaves = layer_rules.bound_leaves if layer_rules is not None else None
        inputs = [xg]
        if bound_leaves is not None:
            inputs += list(bound_leaves)
        names = list(capture.captured)
        inputs += [capture.captured[n] for n in names]
        missing = [n for n in capture.names if n not in capture.captured]
        if missing:
            raise ValueError(f"layers: modules {missing} did not run in the forward pass")
        for i, rule in enumerate(rules):
            start, seed = start0, seed0
            if rule == "zplus":  # Eq. 5 / joint z⁺ seed: R_k = sum_j (w_jk a_j)^+ at the output layer
                zp = layer_rules.zr_for(logits)
                if zp is None:
                    raise ValueError("rule='zplus' needs the logits to be the output of an nn.Linear or conv layer")
                start, seed = zp, seed * zp / _stabilize(zp, ex.epsilon)
            ex.switch.mode = rule
            try:
                grads = torch.autograd.grad(start, inputs, grad_outputs=seed, create_graph=create_graph,
                                            retain_graph=create_graph or i < len(rules) - 1, allow_unused=True)
            finally:
                ex.switch.mode = None
            grads = [torch.zeros_like(inp) if g is None else g for inp, g in zip(inputs, grads, strict=True)]
            heatmap = xg * grads[0]
            k = 1
            if bound_leaves is not None:
                low, high = bound_leaves
                heatmap = heatmap + low * grads[1] + high * grads[2]
                k = 3
            relevances = {n: capture.captured[n] * g for n, g in zip(names, grads[k:], strict=True)}
            results.append((heatmap, relevances))
    if not create_graph:
        logits = logits.detach()
        results = [(h.detach(), {n: r.detach() for n, r in rel.items()}) for h, rel in results]
    return [LRPResult(h, rel, logits) for h, rel in results]
