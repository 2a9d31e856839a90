"""Attribution methods and what they share: target choice, model restoration, one registry.

Every explanation function in the package has the calling shape ``f(model, x, target=None, *, ...)`` and returns
the heatmap Tensor (as captum's ``attribute(inputs, target=...)``), so methods are interchangeable:
:func:`explain` runs any of them by its function's name. This module holds the gradient family (plain gradient,
Gradient×Input, SmoothGrad, Integrated Gradients), Grad-CAM and occlusion; LRP-Flex lives in :mod:`xai_robust.lrp`,
the zennit/captum references in :mod:`xai_robust.references`, the super-pixel variants in :mod:`xai_robust.grouped`.
Chapter 01 uses :func:`gradient_x_input` as the first look at what a shortcut model attends to; chapter 02 shows it
is LRP-0 for ReLU networks.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from .checks import (
    check_baseline,
    check_count,
    check_images,
    check_labels,
    check_model_input,
    check_number,
    check_target,
)

__all__ = ["resolve_target", "restore_model", "input_gradient", "gradient_x_input", "smoothgrad",
           "integrated_gradients", "grad_cam", "occlusion", "explain", "methods", "check_images"]

_TARGET_WORDS = ("predicted", "lowest", "stochastic")


def resolve_target(logits: torch.Tensor, target=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Turn a target specification into one class index per sample.

    Parameters
    ----------
    logits : Tensor[N, K]
        The model's outputs for the batch.
    target : None, int, sequence of int, LongTensor[N] or str
        ``None`` or ``"predicted"``: the predicted (highest-logit) class. An int: that class for every
        sample. A LongTensor/sequence: one class per sample (e.g. the labels). ``"lowest"``: the class with
        the lowest logit (Selective ISNet, Faster ISNet Sec. II-H). ``"stochastic"``: the highest logit with
        probability 0.5, otherwise one of the other classes uniformly (Stochastic ISNet, Faster ISNet Sec. II-H).
    generator : torch.Generator, optional
        Source of randomness for ``"stochastic"``.

    Returns
    -------
    LongTensor[N]
        Class indices on the logits' device.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, K), got {tuple(logits.shape)}")
    n, k = logits.shape
    device = logits.device
    if target is None or (isinstance(target, str) and target == "predicted"):
        return logits.argmax(1)
    if isinstance(target, str):
        if target == "lowest":
            return logits.argmin(1)
        if target == "stochastic":
            top = logits.argmax(1)
            if k == 1:
                return top
            u = torch.rand(n, generator=generator, device="cpu").to(device)
            other = torch.randint(0, k - 1, (n,), generator=generator, device="cpu").to(device)
            other = other + (other >= top).long()  # uniform over the K-1 classes that are not the top
            return torch.where(u < 0.5, top, other)
        raise ValueError(f"target={target!r} is not understood; use None, an int, a LongTensor of class "
                         f"indices, or one of {_TARGET_WORDS}")
    if isinstance(target, bool):
        raise TypeError("target must be an int, a LongTensor or a string, not a bool")
    if isinstance(target, int):
        t = torch.full((n,), target, dtype=torch.long, device=device)
    else:
        t = torch.as_tensor(target, device=device)
        if t.is_floating_point():
            raise TypeError("target must hold integer class indices, got a floating tensor")
        t = t.long().reshape(-1)
        if t.numel() == 1 and n > 1:
            t = t.expand(n).clone()
        if t.numel() != n:
            raise ValueError(f"target has {t.numel()} entries but the batch has {n} samples; "
                             "pass one class index per sample or a single int")
    if (t < 0).any() or (t >= k).any():
        raise ValueError(f"target holds class indices outside [0, {k - 1}]")
    return t


@contextlib.contextmanager
def restore_model(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager that restores every submodule's train/eval mode and ``requires_grad`` flags on exit.

    Explanation functions run inside it so that the model is left exactly as found, even when the
    forward pass raises (docs/design.md, "Errors").
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def input_gradient(model: nn.Module, x: torch.Tensor, target=None, *, create_graph: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Gradient of the target logit with respect to the input (Simple Gradient / saliency).

    Parameters
    ----------
    model : nn.Module
        Classifier taking pixels in [0, 1].
    x : Tensor[N, C, H, W]
        Input batch.
    target : see :func:`resolve_target`
    create_graph : bool
        Keep the graph for a differentiable explanation (RRR, chapter 03).

    Returns
    -------
    Tensor
        ∂z_t/∂x with the shape of ``x``.

    Notes
    -----
    The model runs in eval mode (BatchNorm with running statistics), so one sample's explanation never
    depends on the rest of the batch; its mode is restored afterwards.
    """
    check_model_input(model, x)
    check_target(model, target, x.shape[0])
    with restore_model(model):
        model.eval()
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xg)
            t = resolve_target(logits, target, generator)
            selected = logits.gather(1, t[:, None]).sum()
            (grad,) = torch.autograd.grad(selected, xg, create_graph=create_graph)
    return grad


def gradient_x_input(model: nn.Module, x: torch.Tensor, target=None, *, create_graph: bool = False,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Gradient×Input heatmap :math:`x \\odot \\partial z_t/\\partial x` (Shrikumar et al., 2017).

    For a bias-free ReLU network this equals LRP-0 (Faster ISNet, Sec. II-G; chapter 02).

    Parameters
    ----------
    model, x, target, create_graph, generator
        As in :func:`input_gradient`.

    Returns
    -------
    Tensor
        Heatmap with the shape of ``x``.
    """
    return input_gradient(model, x, target, create_graph=create_graph, generator=generator) * x


# --------------------------------------------------------------------------------------------------
# SmoothGrad and Integrated Gradients (chapter 06 groups them over superpixels)
# --------------------------------------------------------------------------------------------------
_OUTPUTS = ("logit", "probability")


class _Softmax(nn.Module):
    """``softmax(model(x))`` without touching ``model``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), dim=1)


def _explained(model: nn.Module, output: str) -> nn.Module:
    """``model`` itself or its softmax (``model`` already checked by :func:`check_model_input`)."""
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
    return model if output == "logit" else _Softmax(model)


def _check_target(target, n: int) -> None:
    """Everything about ``target`` that can be checked before the model runs (type, integer dtype, length,
    sign); the upper bound (one index per model output) is checked by
    :func:`~xai_robust.attribution.resolve_target` on the logits, inside :func:`restore_model`."""
    if target is None:
        return
    if isinstance(target, str):
        if target not in _TARGET_WORDS:
            raise ValueError(f"target={target!r} is not understood; use None, an int, a LongTensor of class "
                             f"indices, or one of {_TARGET_WORDS}")
        return
    if isinstance(target, (bool, np.bool_)):
        raise TypeError("target must be an int, a LongTensor or a string, not a bool")
    if isinstance(target, (int, np.integer)):
        t = torch.tensor([int(target)])
    else:
        try:
            t = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"target must be None, an int, a LongTensor[N] or a string, got "
                            f"{type(target).__name__}") from err
        t = t.reshape(-1)
        if t.numel() != 1:
            check_labels(t, n, None, name="target")
        elif t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}; use target.long()")
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"target holds negative class indices (min {int(t.min())}); class indices are 0 .. K-1")


def _check_explanation(model, x, target, output, name="x") -> nn.Module:
    """The checks every gradient explanation shares, before the model is touched; returns the explained module."""
    check_model_input(model, x, name)
    explained = _explained(model, output)
    check_target(model, target, x.shape[0])
    return explained


def _resolve(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    with torch.no_grad():
        return resolve_target(model(x), target)


def _batched_gradient(model, inputs, target, batch_size, progress, desc):
    """Input gradients of a large stacked batch, ``batch_size`` images per backward pass."""
    chunks = range(0, inputs.shape[0], batch_size)
    if progress and len(chunks) > 1:
        from . import progress as progress_bar

        chunks = progress_bar(chunks, desc=desc)
    return torch.cat([input_gradient(model, inputs[i:i + batch_size], target[i:i + batch_size]) for i in chunks])


def _check_smoothgrad_options(n_samples, noise_level, seed, batch_size):
    check_count(n_samples, "n_samples")
    check_number(noise_level, "noise_level", low=0.0)
    check_count(seed, "seed", minimum=0)
    check_count(batch_size, "batch_size")


def _noisy_inputs(x, n_samples, noise_level, seed):
    _check_smoothgrad_options(n_samples, noise_level, seed, 1)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    eps = torch.randn((n_samples,) + tuple(x.shape), generator=gen, dtype=x.dtype).to(x.device)
    return (x.unsqueeze(0) + noise_level * span.unsqueeze(0) * eps).reshape(-1, *x.shape[1:])


def smoothgrad(model: nn.Module, x: torch.Tensor, target=None, *, n_samples: int = 16, noise_level: float = 0.15,
               seed: int = 0, batch_size: int = 256, output: str = "logit", progress: bool = False) -> torch.Tensor:
    """SmoothGrad (Smilkov et al., 2017): the input gradient averaged over noisy copies of ``x``.

    Parameters
    ----------
    model, x, target, output
        As in :func:`input_gradient`; ``output="probability"`` explains the softmax output. The target is
        resolved once on the clean images.
    n_samples : int
        Number of noisy copies per image.
    noise_level : float
        Standard deviation of the Gaussian noise as a fraction of each image's value range
        (``max - min``), as in Smilkov et al.
    seed : int
        Seed of the noise.
    batch_size : int
        Images per backward pass.

    Returns
    -------
    torch.Tensor
        Map with the shape of ``x``.
    """
    explained = _check_explanation(model, x, target, output)
    _check_smoothgrad_options(n_samples, noise_level, seed, batch_size)
    with restore_model(model):
        model.eval()
        t = _resolve(explained, x, target)
        noisy = _noisy_inputs(x, n_samples, noise_level, seed)
        grads = _batched_gradient(explained, noisy, t.repeat(n_samples), batch_size, progress, "SmoothGrad")
    return grads.view(n_samples, *x.shape).mean(0)


def integrated_gradients(model: nn.Module, x: torch.Tensor, target=None, *, baseline=0.0, n_steps: int = 32,
                         batch_size: int = 256, output: str = "logit", progress: bool = False) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al., 2017) with the midpoint Riemann rule.

    ``IG(x) = (x - x') * (1/m) * sum_k grad f(x' + (k + 1/2)/m (x - x'))`` — identical to captum's
    ``IntegratedGradients(..., method="riemann_middle", n_steps=m)``.

    Parameters
    ----------
    model, x, target, output
        As in :func:`smoothgrad`. The target is resolved once on ``x``.
    baseline : float or torch.Tensor
        Reference image ``x'`` (broadcastable to ``x``); default black.
    n_steps : int
        Number of points ``m`` on the path.
    batch_size : int
        Images per backward pass.

    Returns
    -------
    torch.Tensor
        Map with the shape of ``x``.
    """
    explained = _check_explanation(model, x, target, output)
    check_count(n_steps, "n_steps")
    check_count(batch_size, "batch_size")
    base = check_baseline(baseline, x)
    alphas = (torch.arange(n_steps, dtype=x.dtype, device=x.device) + 0.5) / n_steps
    with restore_model(model):
        model.eval()
        t = _resolve(explained, x, target)
        path = (base.unsqueeze(0) + alphas.view(-1, 1, 1, 1, 1) * (x - base).unsqueeze(0)).reshape(-1, *x.shape[1:])
        grads = _batched_gradient(explained, path, t.repeat(n_steps), batch_size, progress, "Integrated Gradients")
    return (x - base) * grads.view(n_steps, *x.shape).mean(0)


# --------------------------------------------------------------------------------------------------
# Grad-CAM and occlusion (chapter 07 compares them with and without superpixels)
# --------------------------------------------------------------------------------------------------
def _module(model: nn.Module, layer) -> nn.Module:
    if isinstance(layer, nn.Module):
        return layer
    names = dict(model.named_modules())
    if not isinstance(layer, str) or layer not in names or layer == "":
        raise ValueError(f"layer must be the name of a module of the model (e.g. 'layer4'), got {layer!r}; "
                         "see [n for n, _ in model.named_modules()]")
    return names[layer]


def grad_cam(model: nn.Module, x: torch.Tensor, target=None, *, layer, relu: bool = False,
             interpolate: str = "bilinear") -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017): the layer's activations weighted by their mean gradient.

    ``cam = Σ_c (mean_ij ∂z_t/∂A_cij) A_c``, upsampled to the input size. With ``relu=False`` (the default, as
    captum's ``LayerGradCam``) the map keeps its sign; the original Grad-CAM applies a ReLU (``relu=True``).

    Parameters
    ----------
    model, x, target
        As in :func:`input_gradient`.
    layer : str or nn.Module
        The layer whose output is weighted, by name (``"layer4"``) or as the module itself.
    relu : bool
        Keep only the positive part of the map.
    interpolate : {"bilinear", "nearest", "bicubic"}
        Upsampling of the layer-resolution map to ``x``'s height and width.

    Returns
    -------
    Tensor[N, 1, H, W]
        One channel, broadcastable to ``x``. Chapter 07.
    """
    check_model_input(model, x)
    check_target(model, target, x.shape[0])
    module = _module(model, layer)
    if interpolate not in ("bilinear", "nearest", "bicubic"):
        raise ValueError(f"interpolate must be 'bilinear', 'nearest' or 'bicubic', got {interpolate!r}")
    captured = {}
    handle = module.register_forward_hook(lambda m, args, out: captured.__setitem__("a", out))
    try:
        with restore_model(model), torch.enable_grad():
            model.eval()
            logits = model(x.detach())
            if not isinstance(captured.get("a"), torch.Tensor) or captured["a"].dim() != 4:
                raise ValueError(f"layer {layer!r} must output a (N, C, h, w) feature map for Grad-CAM")
            t = resolve_target(logits, target)
            (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), captured["a"])
    finally:
        handle.remove()
    a = captured["a"].detach()
    cam = (grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True)
    if relu:
        cam = cam.clamp(min=0)
    return torch.nn.functional.interpolate(cam, size=tuple(x.shape[-2:]), mode=interpolate)


def occlusion(model: nn.Module, x: torch.Tensor, target=None, *, window: int, stride: int | None = None,
              baseline=0.0, batch_size: int = 64) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus, 2014): how much the target logit drops when a square patch is replaced.

    captum's ``Occlusion`` in the package's calling shape: a ``window × window`` patch over all channels slides
    with ``stride``; each pixel gets the mean drop ``z_t(x) − z_t(x with the patch at the baseline)`` over the
    patches that cover it.

    Parameters
    ----------
    model, x, target
        As in :func:`input_gradient`.
    window : int
        Side of the square patch (pixels).
    stride : int, optional
        Step between patches; default ``window // 2``.
    baseline : float or Tensor
        The value a patch is replaced with (broadcastable to ``x``), e.g. the grey that the model's
        normalisation maps to 0.
    batch_size : int
        Occluded images per forward pass (captum's ``perturbations_per_eval``).

    Returns
    -------
    Tensor
        Map with the shape of ``x`` (equal across channels). Chapter 07.
    """
    from captum.attr import Occlusion

    check_model_input(model, x)
    check_target(model, target, x.shape[0])
    window = check_count(window, "window")
    if window > min(x.shape[-2:]):
        raise ValueError(f"window={window} is larger than the images ({x.shape[-2]}×{x.shape[-1]} pixels); pass a "
                         "patch side of at most the image side")
    stride = max(1, window // 2) if stride is None else check_count(stride, "stride")
    check_count(batch_size, "batch_size")
    base = check_baseline(baseline, x)
    c = x.shape[1]
    with restore_model(model):
        model.eval()
        t = _resolve(model, x, target)
        out = Occlusion(model).attribute(x, target=t, sliding_window_shapes=(c, window, window),
                                         strides=(c, stride, stride), baselines=base,
                                         perturbations_per_eval=batch_size)
    return out.detach()


# --------------------------------------------------------------------------------------------------
# one registry of every attribution
# --------------------------------------------------------------------------------------------------
def _registry() -> dict:
    from . import grouped, lrp, references

    functions = [input_gradient, gradient_x_input, smoothgrad, integrated_gradients, grad_cam, occlusion,
                 lrp.lrp_flex, references.zennit_heatmap, references.captum_lrp, grouped.grouped_gradient,
                 grouped.grouped_smoothgrad, grouped.grouped_integrated_gradients]
    return {fn.__name__: fn for fn in functions}


def methods() -> list[str]:
    """The names :func:`explain` accepts: every attribution method of the package, by its function's name."""
    return sorted(_registry())


def explain(name: str, model: nn.Module, x: torch.Tensor, target=None, **options) -> torch.Tensor:
    """Run the attribution method called ``name``: ``explain("lrp_flex", model, x)`` is ``lrp_flex(model, x)``.

    Every method has the calling shape ``f(model, x, target=None, *, ...)`` and returns the heatmap Tensor, so an
    experiment can loop over names (chapter 07 compares five methods this way).

    Parameters
    ----------
    name : str
        One of :func:`methods`: ``"input_gradient"``, ``"gradient_x_input"``, ``"smoothgrad"``,
        ``"integrated_gradients"``, ``"grad_cam"``, ``"occlusion"``, ``"lrp_flex"``, ``"zennit_heatmap"``,
        ``"captum_lrp"``, ``"grouped_gradient"``, ``"grouped_smoothgrad"``, ``"grouped_integrated_gradients"``.
    model, x, target
        As in :func:`input_gradient`.
    **options
        The method's keyword options (``segments=`` for the grouped ones, ``layer=`` for Grad-CAM, ...).

    Returns
    -------
    Tensor
        The heatmap: the shape of ``x`` (Grad-CAM: one channel, broadcastable to ``x``).
    """
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown attribution {name!r}; known: {sorted(registry)}")
    return registry[name](model, x, target, **options)
