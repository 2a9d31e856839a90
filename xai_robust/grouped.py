"""Grouped (super-pixel) gradients: g-SG, g-SmoothGrad, g-IG and segment averaging of any attribution.

Gong, Zhang, Dou, Farnia, *A Super-pixel-based Approach to the Stable Interpretation of Neural
Networks* (BMVC 2024), Sec. 3.2. The gradient with respect to group indicators ``g`` that shift all
pixels of a group together, ``A^T grad_g f(x + A W g)``, equals the input gradient averaged inside
each group and broadcast back to the group's pixels (Eq. 3, ``g-SG(x) = kappa(x) grad_x f(x)``).
Computing it therefore costs one ordinary gradient plus a scatter-add: :func:`grouped_gradient`.

For SmoothGrad and Integrated Gradients the paper keeps the partition of the *original* image fixed
and averages the method's map over each group; by linearity of expectation/integration (Sec. 3.2,
last paragraph) averaging the per-sample gradients first gives the same result.
:func:`xai_robust.superpixels.superpixelify` (also ``grouped.segment_average``) groups any attribution, e.g.
one computed with captum.

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

import torch
from torch import nn

from .attribution import _check_explanation, input_gradient, integrated_gradients, restore_model, smoothgrad
from .checks import check_images, check_model_input
from .superpixels import _check_values, _segment_mean, check_segments, superpixelify

__all__ = [
    "grouped_gradient",
    "grouped_smoothgrad",
    "grouped_integrated_gradients",
    "grouped_attribution",
    "saliency_map",
]

_REDUCTIONS = ("abs_sum", "sum", "abs_max", "l2")


def _check_segments_for(segments, x) -> torch.Tensor:
    return check_segments(segments, (x.shape[0], x.shape[2], x.shape[3])).to(x.device)


#: The same function as :func:`xai_robust.superpixels.superpixelify`, the package's one segment average (Eq. 3's
#: operator kappa); any attribution, e.g. captum's, can be grouped with it.
segment_average = superpixelify


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
    result = attribute(x, **kwargs)
    if not isinstance(result, torch.Tensor) or tuple(result.shape) not in (tuple(x.shape), (x.shape[0], *x.shape[2:])):
        shape = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
        raise ValueError(f"attribute returned {shape}, expected a map with the shape of x {tuple(x.shape)} or "
                         f"(N, H, W); check the attribution callable")
    return segment_average(result, segments)


def _legacy_order(target, legacy, segments, name):
    """Accept the older order ``f(model, x, segments, target)``: a partition (an integer tensor of shape
    (N, H, W)) in the ``target`` position is the partition, and the next positional argument the target."""
    looks_like_partition = isinstance(target, torch.Tensor) and target.dim() == 3 and not target.is_floating_point()
    if segments is None and looks_like_partition:
        if len(legacy) > 1:
            raise TypeError(f"{name}() takes model, x, target and keyword options; got {2 + 1 + len(legacy)} "
                            "positional arguments")
        return (legacy[0] if legacy else None), target
    if legacy:
        raise TypeError(f"{name}() takes at most 3 positional arguments (model, x, target); pass segments=... "
                        "and the options by keyword")
    if segments is None:
        raise TypeError(f"{name}() needs segments=: a LongTensor[N, H, W] partition of x "
                        "(xai_robust.superpixels.segment)")
    return target, segments


def grouped_gradient(model: nn.Module, x: torch.Tensor, target=None, *legacy, segments: torch.Tensor | None = None,
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
    target : None, int, LongTensor[N] or str
        Explained class (:func:`xai_robust.attribution.resolve_target`); None = predicted class, as in
        the paper's Definition 1.
    segments : torch.Tensor
        ``LongTensor[N, H, W]`` partition of ``x`` (:func:`xai_robust.superpixels.segment`), by keyword. The
        older order ``grouped_gradient(model, x, segments, target)`` is still accepted.
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
    target, segments = _legacy_order(target, legacy, segments, "grouped_gradient")
    explained = _check_explanation(model, x, target, output)
    segments = _check_segments_for(segments, x)
    with restore_model(model):
        model.eval()
        grad = input_gradient(explained, x, target)
    return _segment_mean(grad, segments)


def grouped_smoothgrad(model: nn.Module, x: torch.Tensor, target=None, *legacy, segments: torch.Tensor | None = None,
                       **kwargs) -> torch.Tensor:
    """Grouped SmoothGrad: SmoothGrad averaged over the segments of the clean image.

    The partition is computed once on the original image and kept fixed for every noisy copy, as in
    Gong et al. (BMVC 2024), Sec. 3.2; by linearity this equals averaging each noisy gradient over
    the segments first. With ``noise_level=0`` it equals :func:`grouped_gradient`.

    Parameters
    ----------
    model, x, target, segments
        As in :func:`grouped_gradient` (``segments`` by keyword).
    **kwargs
        ``n_samples``, ``noise_level``, ``seed``, ``batch_size``, ``output``, ``progress`` of
        :func:`xai_robust.attribution.smoothgrad`.

    Notes
    -----
    Chapter 06.
    """
    target, segments = _legacy_order(target, legacy, segments, "grouped_smoothgrad")
    check_model_input(model, x)
    segments = _check_segments_for(segments, x)
    return _segment_mean(smoothgrad(model, x, target, **kwargs), segments)


def grouped_integrated_gradients(model: nn.Module, x: torch.Tensor, target=None, *legacy,
                                 segments: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """Grouped Integrated Gradients: the IG map averaged over the segments of ``x``.

    Parameters
    ----------
    model, x, target, segments
        As in :func:`grouped_gradient` (``segments`` by keyword).
    **kwargs
        ``baseline``, ``n_steps``, ``batch_size``, ``output``, ``progress`` of
        :func:`xai_robust.attribution.integrated_gradients`.

    Notes
    -----
    Gong et al. (BMVC 2024), Sec. 3.2 (the grouping applied to the saliency map of a composite
    method, with the partition of the original image). Averaging keeps IG's completeness: the sum
    of the grouped map over each segment equals that of the IG map. Chapter 06.
    """
    target, segments = _legacy_order(target, legacy, segments, "grouped_integrated_gradients")
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
