"""Shared pieces of every attribution method: target choice, model restoration, plain gradients.

Every explanation function in the package has the calling shape ``f(model, x, target=None, ...)``
(as in captum's ``attribute(inputs, target=...)``), so methods are interchangeable in experiments.
This module holds what they all need. Chapter 01 uses :func:`gradient_x_input` as the first look at
what a shortcut model attends to; chapter 02 shows it is LRP-0 for ReLU networks.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from .checks import check_images, check_model_input

__all__ = ["resolve_target", "restore_model", "input_gradient", "gradient_x_input", "check_images"]

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
