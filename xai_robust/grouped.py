"""Grouped (super-pixel) gradients: g-SG, g-SmoothGrad, g-IG and segment averaging of any attribution.

Gong, Zhang, Dou, Farnia, *A Super-pixel-based Approach to the Stable Interpretation of Neural
Networks* (BMVC 2024), Sec. 3.2. The gradient with respect to group indicators ``g`` that shift all
pixels of a group together, ``A^T grad_g f(x + A W g)``, equals the input gradient averaged inside
each group and broadcast back to the group's pixels (Eq. 3, ``g-SG(x) = kappa(x) grad_x f(x)``).
Computing it therefore costs one ordinary gradient plus a scatter-add: :func:`grouped_gradient`.

For SmoothGrad and Integrated Gradients the paper keeps the partition of the *original* image fixed
and averages the method's map over each group; by linearity of expectation/integration (Sec. 3.2,
last paragraph) averaging the per-sample gradients first gives the same result.
:func:`segment_average` groups any attribution, e.g. one computed with captum.

Our choices where the paper is silent (chapter 06 documents them):

* Channels are grouped separately (``kappa`` acts per colour channel), so the grouped map keeps
  the shape of ``x``; :func:`saliency_map` reduces channels afterwards.
* The explained output is the target *logit* by default (the same quantity as captum's
  ``Saliency``); ``output="probability"`` explains the softmax output, as Definition 1 of the paper
  (``f`` is post-softmax) literally says.
* The model is explained in eval mode; every submodule's own mode and the ``requires_grad`` flags are
  restored afterwards, also when the call raises (:func:`xai_robust.attribution.restore_model`).

Inputs are checked at the API boundary (:mod:`xai_robust.checks`) before the model is touched: ``x`` is a
non-empty, finite float batch of the model's dtype, ``segments`` a partition of it, ``target`` integer class
indices of the right length (their upper bound is checked on the logits), counts are positive ints and float
options finite; a bad call raises a ``ValueError``/``TypeError`` that names the argument.

Chapter 06, *Super-pixel gradients*.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .attribution import input_gradient, resolve_target, restore_model
from .checks import check_count, check_finite, check_images, check_labels, check_model_input, check_number
from .superpixels import _check_values, _segment_mean, check_segments

__all__ = [
    "grouped_gradient",
    "grouped_smoothgrad",
    "grouped_integrated_gradients",
    "smoothgrad",
    "integrated_gradients",
    "segment_average",
    "grouped_attribution",
    "saliency_map",
]

_OUTPUTS = ("logit", "probability")
_REDUCTIONS = ("abs_sum", "sum", "abs_max", "l2")
_TARGET_WORDS = ("predicted", "lowest", "stochastic")


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
    _check_target(target, x.shape[0])
    return explained


def _check_segments_for(segments, x) -> torch.Tensor:
    return check_segments(segments, (x.shape[0], x.shape[2], x.shape[3])).to(x.device)


def _resolve(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    with torch.no_grad():
        return resolve_target(model(x), target)


def _batched_gradient(model, inputs, target, batch_size, progress, desc):
    """Input gradients of a large stacked batch, ``batch_size`` images per backward pass."""
    chunks = range(0, inputs.shape[0], batch_size)
    if progress and len(chunks) > 1:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=desc, leave=False)
    return torch.cat([input_gradient(model, inputs[i:i + batch_size], target[i:i + batch_size]) for i in chunks])


def segment_average(attribution: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Average any attribution over the segments of a partition (Eq. 3's operator kappa).

    Parameters
    ----------
    attribution : torch.Tensor
        ``[N, C, H, W]`` (each channel grouped separately) or ``[N, H, W]``.
    segments : torch.Tensor
        ``LongTensor[N, H, W]`` from :func:`xai_robust.superpixels.segment` (or NAS, chapter 07).

    Returns
    -------
    torch.Tensor
        Same shape as ``attribution``; constant inside every segment.

    Examples
    --------
    Group captum's Saliency (any captum attribution works the same way)::

        from captum.attr import Saliency
        g = segment_average(Saliency(model).attribute(x, target=y, abs=False), segments)

    Notes
    -----
    Gong et al. (BMVC 2024), Eq. 3. Chapter 06.
    """
    attribution = _check_values(attribution, "attribution", (3, 4), "(N, C, H, W) or (N, H, W)")
    n, h, w = attribution.shape[0], attribution.shape[-2], attribution.shape[-1]
    segments = check_segments(segments, (n, h, w)).to(attribution.device)
    if attribution.dim() == 3:
        return _segment_mean(attribution.unsqueeze(1), segments).squeeze(1)
    return _segment_mean(attribution, segments)


def grouped_attribution(attribute, x: torch.Tensor, segments: torch.Tensor, **kwargs) -> torch.Tensor:
    """Run an attribution method and average its result over ``segments``.

    Parameters
    ----------
    attribute : callable
        ``attribute(x, **kwargs) -> Tensor`` with the shape of ``x`` — e.g. the bound method
        ``captum.attr.IntegratedGradients(model).attribute`` or ``functools.partial(lrp_flex, model)``.
    x : torch.Tensor
        ``[N, C, H, W]`` images.
    segments : torch.Tensor
        ``LongTensor[N, H, W]`` partition of ``x``.
    **kwargs
        Passed to ``attribute`` (``target=...``, ``n_steps=...``).

    Notes
    -----
    Gong et al. (BMVC 2024), Sec. 3.2: the grouping "can be adapted to other well-known variants of
    the Simple Gradient". Chapter 06.
    """
    if not callable(attribute):
        raise TypeError(f"attribute must be a callable attribute(x, **kwargs) -> Tensor, got "
                        f"{type(attribute).__name__}")
    check_images(x)
    segments = check_segments(segments, (x.shape[0], x.shape[2], x.shape[3]))
    return segment_average(attribute(x, **kwargs), segments)


def grouped_gradient(model: nn.Module, x: torch.Tensor, segments: torch.Tensor, target=None, *,
                     output: str = "logit") -> torch.Tensor:
    """Grouped Simple Gradient, g-SG (Gong et al., BMVC 2024, Eq. 3).

    Per channel, the mean input gradient over each segment, broadcast back to the segment's pixels:
    the gradient with respect to one indicator per group that shifts all its pixels at once, scaled
    by ``1/|S|``.

    Parameters
    ----------
    model : nn.Module
        Classifier taking pixels in [0, 1]; explained in eval mode and left as found.
    x : torch.Tensor
        ``[N, C, H, W]`` images.
    segments : torch.Tensor
        ``LongTensor[N, H, W]`` partition of ``x`` (:func:`xai_robust.superpixels.segment`).
    target : None, int, LongTensor[N] or str
        Explained class (:func:`xai_robust.attribution.resolve_target`); None = predicted class, as in
        the paper's Definition 1.
    output : {"logit", "probability"}
        Explain the logit (default, as captum's ``Saliency``) or the softmax probability.

    Returns
    -------
    torch.Tensor
        Map with the shape of ``x``, constant over each segment in each channel.

    Notes
    -----
    Chapter 06, *Super-pixel gradients*. The cost is one gradient plus ``O(N C H W)`` scatter-adds
    (``benchmarks/grouped_speed.py`` measures the ratio to a plain gradient).
    """
    explained = _check_explanation(model, x, target, output)
    segments = _check_segments_for(segments, x)
    with restore_model(model):
        model.eval()
        grad = input_gradient(explained, x, target)
    return _segment_mean(grad, segments)


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
        As in :func:`grouped_gradient`. The target is resolved once on the clean images.
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


def grouped_smoothgrad(model: nn.Module, x: torch.Tensor, segments: torch.Tensor, target=None,
                       **kwargs) -> torch.Tensor:
    """Grouped SmoothGrad: SmoothGrad averaged over the segments of the clean image.

    The partition is computed once on the original image and kept fixed for every noisy copy, as in
    Gong et al. (BMVC 2024), Sec. 3.2; by linearity this equals averaging each noisy gradient over
    the segments first. With ``noise_level=0`` it equals :func:`grouped_gradient`.

    Parameters
    ----------
    model, x, segments, target
        As in :func:`grouped_gradient`.
    **kwargs
        ``n_samples``, ``noise_level``, ``seed``, ``batch_size``, ``output``, ``progress`` of :func:`smoothgrad`.

    Notes
    -----
    Chapter 06.
    """
    check_model_input(model, x)
    segments = _check_segments_for(segments, x)
    return _segment_mean(smoothgrad(model, x, target, **kwargs), segments)


def _check_baseline(baseline, x) -> torch.Tensor:
    """The IG reference image as a tensor with the shape, dtype and device of ``x``: finite and broadcastable."""
    if isinstance(baseline, (list, tuple)):
        baseline = np.asarray(baseline, dtype=np.float64)
    if isinstance(baseline, (torch.Tensor, np.ndarray)):
        check_finite(baseline, "baseline")
        base = torch.as_tensor(baseline, device=x.device)
        if base.is_complex():
            raise TypeError(f"baseline must be real, got dtype {base.dtype}")
        try:
            shape = torch.broadcast_shapes(base.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(f"baseline of shape {tuple(base.shape)} does not broadcast to x's shape "
                             f"{tuple(x.shape)}; pass a number, one image (1, C, H, W) or one per image")
        return base.to(x.dtype).expand_as(x)
    check_number(baseline, "baseline")
    return torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)


def integrated_gradients(model: nn.Module, x: torch.Tensor, target=None, *, baseline=0.0, n_steps: int = 32,
                         batch_size: int = 256, output: str = "logit", progress: bool = False) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al., 2017) with the midpoint Riemann rule.

    ``IG(x) = (x - x') * (1/m) * sum_k grad f(x' + (k + 1/2)/m (x - x'))`` — identical to captum's
    ``IntegratedGradients(..., method="riemann_middle", n_steps=m)``.

    Parameters
    ----------
    model, x, target, output
        As in :func:`grouped_gradient`. The target is resolved once on ``x``.
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
    base = _check_baseline(baseline, x)
    alphas = (torch.arange(n_steps, dtype=x.dtype, device=x.device) + 0.5) / n_steps
    with restore_model(model):
        model.eval()
        t = _resolve(explained, x, target)
        path = (base.unsqueeze(0) + alphas.view(-1, 1, 1, 1, 1) * (x - base).unsqueeze(0)).reshape(-1, *x.shape[1:])
        grads = _batched_gradient(explained, path, t.repeat(n_steps), batch_size, progress, "Integrated Gradients")
    return (x - base) * grads.view(n_steps, *x.shape).mean(0)


def grouped_integrated_gradients(model: nn.Module, x: torch.Tensor, segments: torch.Tensor, target=None,
                                 **kwargs) -> torch.Tensor:
    """Grouped Integrated Gradients: the IG map averaged over the segments of ``x``.

    Parameters
    ----------
    model, x, segments, target
        As in :func:`grouped_gradient`.
    **kwargs
        ``baseline``, ``n_steps``, ``batch_size``, ``output``, ``progress`` of :func:`integrated_gradients`.

    Notes
    -----
    Gong et al. (BMVC 2024), Sec. 3.2 (the grouping applied to the saliency map of a composite
    method, with the partition of the original image). Averaging keeps IG's completeness: the sum
    of the grouped map over each segment equals that of the IG map. Chapter 06.
    """
    check_model_input(model, x)
    segments = _check_segments_for(segments, x)
    return _segment_mean(integrated_gradients(model, x, target, **kwargs), segments)


def saliency_map(attribution: torch.Tensor, reduction: str = "abs_sum") -> torch.Tensor:
    """Reduce an ``[N, C, H, W]`` attribution to one ``[N, H, W]`` map.

    Parameters
    ----------
    attribution : torch.Tensor
        ``[N, C, H, W]`` (an ``[N, H, W]`` map is returned unchanged).
    reduction : {"abs_sum", "sum", "abs_max", "l2"}
        ``abs_sum`` (default; importance regardless of sign), ``sum`` (signed), ``abs_max``
        (Simonyan et al.'s max over channels of the absolute value), ``l2`` (norm over channels).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    attribution = _check_values(attribution, "attribution", (3, 4), "(N, C, H, W)")
    if attribution.dim() == 3:
        return attribution
    if reduction == "abs_sum":
        return attribution.abs().sum(1)
    if reduction == "sum":
        return attribution.sum(1)
    if reduction == "abs_max":
        return attribution.abs().amax(1)
    if reduction == "l2":
        return attribution.norm(dim=1)
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
