"""The validation layer at the public API boundary: one place that says what bad input is.

Every public function checks its arguments with these helpers *before* any model state changes, so a
bad call raises a clear error naming the argument and the fix, never a silent wrong answer:

- images are non-empty, finite, floating ``(N, C, H, W)`` batches (uint8 → divide by 255; a single
  image → ``x.unsqueeze(0)``) whose dtype matches the model's parameters;
- tensors that feed a computation are finite (NaN/inf → ``ValueError`` naming the argument);
- numbers are finite and in range, counts are positive ints, labels are integer and in range.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["check_images", "check_model_input", "check_dtype", "known_outputs", "output_size", "check_training_data",
           "check_finite", "check_number", "check_count", "check_labels", "check_target", "check_baseline",
           "check_features"]


def check_images(x, name: str = "x", *, channels=None) -> None:
    """Raise a clear error unless ``x`` is a non-empty, finite floating tensor of shape (N, C, H, W).

    Parameters
    ----------
    x : Tensor
        The batch to check.
    name : str
        The argument name used in the error message.
    channels : int or tuple of int, optional
        Allowed channel counts.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}; "
                         f"add a batch dimension with {name}.unsqueeze(0) for a single image")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor with pixels in [0, 1], got dtype {x.dtype}; "
                        f"convert with {name}.float() / 255")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}): pass at least one image")
    if channels is not None:
        allowed = (channels,) if isinstance(channels, int) else tuple(channels)
        if x.shape[1] not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} channels, got shape "
                             f"{tuple(x.shape)}; images are (N, C, H, W), channels first")
    check_finite(x, name)


def _model_dtype(model: nn.Module):
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def check_model_input(model, x, name: str = "x") -> None:
    """:func:`check_images` plus: ``model`` is a Module whose parameters have ``x``'s dtype.

    A float64 batch into a float32 model would fail deep inside the first convolution ("expected
    scalar type"); this names both dtypes and the fix instead.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_images(x, name)
    check_dtype(model, x, name)
    from .models import check_input_channels

    check_input_channels(model, x, name)


def known_outputs(model: nn.Module) -> int | None:
    """The number of logits, when the model's last module is an ``nn.Linear`` (else None: unknown before a forward).

    Lets a target or label be checked against the model before the forward pass changes any state.
    """
    modules = list(model.modules())
    last = modules[-1] if modules else None
    return int(last.out_features) if isinstance(last, nn.Linear) else None


def check_dtype(model: nn.Module, x: torch.Tensor, name: str = "x") -> None:
    """Raise ``TypeError`` naming both dtypes when ``x``'s dtype differs from the model's parameters'."""
    dtype = _model_dtype(model)
    if dtype is not None and dtype != x.dtype:
        cast = {torch.float32: "float()", torch.float64: "double()", torch.float16: "half()",
                torch.bfloat16: "bfloat16()"}.get(dtype, f"to({dtype})")
        raise TypeError(f"{name} has dtype {x.dtype} but the model's parameters are {dtype}; "
                        f"cast the input with {name}.{cast} (or the model with model.to({x.dtype}))")


def check_finite(value, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` when a tensor or array holds NaN or inf."""
    if isinstance(value, torch.Tensor):
        # one reduction first: a sum of finite values is finite unless it overflows; only then the full check
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value.detach().sum())):
            if not bool(torch.isfinite(value.detach()).all()):
                raise ValueError(f"{name} holds NaN or inf values; check what produced it "
                                 f"(torch.isfinite({name}).all() is False)")
        return
    arr = np.asarray(value)
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or inf values; check what produced it (np.isfinite({name}).all() "
                         f"is False)")


def check_features(features, name: str, *, columns: int | None = None, min_rows: int = 1, hint: str = "") -> None:
    """A finite 2-D float ``(N, D)`` matrix of features (a Tensor or a numpy array) with at least ``min_rows``
    rows and, when ``columns`` is given, that many columns. ``hint`` ends the shape error (how to get the matrix).
    """
    if not isinstance(features, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (N, D), got "
                        f"{type(features).__name__}" + (f"; {hint}" if hint else ""))
    if features.ndim != 2:
        raise ValueError(f"{name} must be 2-D, of shape (N, D), got {tuple(features.shape)}"
                         + (f"; {hint}" if hint else ""))
    floating = features.is_floating_point() if isinstance(features, torch.Tensor) else features.dtype.kind == "f"
    if not floating:
        raise TypeError(f"{name} must hold floats, got dtype {features.dtype}; convert with {name}.float() "
                        f"(a Tensor) or {name}.astype(np.float32) (an array)")
    if columns is not None and features.shape[1] != columns:
        raise ValueError(f"{name} has {features.shape[1]} columns but {columns} are expected")
    if features.shape[0] < min_rows:
        empty = " is empty:" if features.shape[0] == 0 else ""
        raise ValueError(f"{name}{empty} has {features.shape[0]} rows (shape {tuple(features.shape)}); at least "
                         f"{min_rows} rows are needed")
    check_finite(features, name)


def check_number(value, name: str, *, low=None, high=None, low_open: bool = False,
                 high_open: bool = False) -> float:
    """A finite real number in ``[low, high]`` (ends open when asked), returned as a float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def check_count(value, name: str, *, minimum: int = 1) -> int:
    """An int ``>= minimum`` (bools, floats such as 1.5 and numbers below the minimum raise)."""
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_labels(labels, n: int | None, num_classes: int | None, name: str = "y") -> torch.Tensor:
    """Integer class labels of shape ``(n,)`` in ``[0, num_classes)``, returned as a LongTensor.

    ``n`` and ``num_classes`` may be None to skip that check.
    """
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a LongTensor of shape (N,), got {type(labels).__name__}")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"{name} must hold integer class indices, got dtype {labels.dtype}; use {name}.long()")
    if labels.dim() != 1 or (n is not None and labels.shape[0] != n):
        want = f"({n},)" if n is not None else "(N,)"
        raise ValueError(f"{name} must have shape {want}, one label per sample, got {tuple(labels.shape)}")
    if num_classes is not None and labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} must lie in [0, {num_classes}) (one per model output), got values in "
                             f"[{lo}, {hi}]; the model has {num_classes} outputs")
    return labels.long()


def output_size(model: nn.Module, x: torch.Tensor) -> int:
    """The number of logits ``model`` returns, from one eval-mode forward pass of ``x[:1]`` without gradients.

    The model's modes are restored and nothing is updated (eval-mode BatchNorm reads its statistics), so this
    can run before training to check the labels against the model.
    """
    from .attribution import restore_model

    with restore_model(model), torch.no_grad():
        model.eval()
        out = model(x[:1])
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ValueError(f"the model must return logits of shape (N, K), got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return int(out.shape[1])


def check_training_data(model: nn.Module, images, labels, device=None, *, names=("dataset.images",
                                                                                  "dataset.labels")) -> None:
    """Check a training set against the model before training starts (nothing about the model changes).

    The first image goes through :func:`check_model_input` (on ``device``); in-memory images are checked for
    NaN/inf as a whole; the labels must be integers in ``[0, K)`` for the model's K outputs, one per image.
    """
    n = len(images)
    if n == 0:
        raise ValueError(f"{names[0]} is empty: pass at least one training sample")
    first = images[torch.arange(1)]
    if device is not None:
        first = first.to(device)
    check_model_input(model, first, names[0])
    if isinstance(images, torch.Tensor):
        check_finite(images, names[0])
    check_labels(labels, n, output_size(model, first), names[1])


def check_target(model: nn.Module, target, n: int) -> None:
    """Everything about an explanation's ``target`` that can be checked before the forward pass.

    Type, integer dtype, length (1 or ``n``), sign, and the upper bound when the model's number of outputs is known
    (:func:`known_outputs`); string targets must be one of ``"predicted"``, ``"lowest"``, ``"stochastic"``.
    """
    from .attribution import _check_target

    _check_target(target, n)
    k = known_outputs(model)
    if k is None or target is None or isinstance(target, str):
        return
    t = torch.as_tensor(target).reshape(-1)
    if t.numel() and int(t.max()) >= k:
        raise ValueError(f"target holds class indices outside [0, {k - 1}] (max {int(t.max())}); the model has {k} "
                         "outputs")


def check_baseline(baseline, x: torch.Tensor) -> torch.Tensor:
    """A reference image (IG's ``x'``, the value of removed or occluded pixels): a finite number or real tensor,
    returned broadcast to ``x``'s shape, dtype and device."""
    if isinstance(baseline, (bool, int, float, np.generic)):
        b = torch.tensor(check_number(baseline, "baseline"), dtype=x.dtype, device=x.device)
    else:
        try:
            b = torch.as_tensor(baseline)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"baseline must be a number or a tensor broadcastable to x, "
                            f"got {type(baseline).__name__}") from err
        if b.is_complex():
            raise TypeError(f"baseline must be real, got dtype {b.dtype}")
        check_finite(b, "baseline")
        b = b.to(dtype=x.dtype, device=x.device)
        if not bool(torch.isfinite(b).all()):
            raise ValueError(f"baseline holds values beyond the range of x's dtype {x.dtype}")
    try:
        return b.expand_as(x)
    except RuntimeError as err:
        raise ValueError(f"baseline of shape {tuple(b.shape)} does not broadcast to x of shape "
                         f"{tuple(x.shape)}; pass a number or a tensor such as (1, C, 1, 1)") from err
