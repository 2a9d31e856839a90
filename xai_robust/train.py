"""Training and evaluation: ``fit`` / ``predict`` / ``evaluate`` / ``embed`` and the chapters' ERM models.

``fit`` trains any classifier on a :class:`~xai_robust.data.SampleDataset` with a progress bar, a seed, the
chosen device and a checkpoint cache keyed by a hash of everything that determines the result (initial
weights, data, recipe), written atomically and verified on load. ``erm`` is the standard model chapter 01
trains per dataset; later chapters call it and get the same network from the cache.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import cache_dir, progress
from . import device as default_device
from .cache import config_hash, load_verified, save_verified, state_digest
from .checks import check_count, check_finite, check_images, check_model_input, check_number, check_training_data
from .data.base import LazyImages, SampleDataset, batch_indices
from .metrics.groups import group_accuracies, mean_accuracy, worst_group_accuracy
from .models import check_input_channels

__all__ = ["fit", "predict", "evaluate", "embed", "erm", "progress", "state_digest"]


def _checkpoint_path(key: str):
    folder = cache_dir() / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}.pt"


def fit(model: nn.Module, dataset: SampleDataset, *, epochs: int, lr: float = 1e-3, batch_size: int = 128,
        weight_decay: float = 1e-4, optimizer: str = "adam", momentum: float = 0.9, schedule: str = "cosine",
        clip_norm: float = 0.0, seed: int = 0, sample_weights=None, loss_fn: Callable | None = None,
        loss_config: dict | None = None, device=None, cache: bool = True, progress_bar: bool = True,
        desc: str = "training") -> nn.Module:
    """Train a classifier with cross-entropy (or ``loss_fn``) and return it in eval mode.

    The one training loop of the package: chapter 01's ERM models, JTT (``sample_weights``), and the ISNets and
    RRR (:func:`xai_robust.isnet.fit` passes the heatmap loss as ``loss_fn``) all run through it.

    Parameters
    ----------
    model : nn.Module
        Freshly built classifier (its initial weights are part of the cache key).
    dataset : SampleDataset
        Training data.
    epochs, lr, batch_size, weight_decay : training recipe.
    optimizer : {'adam', 'sgd'}
        Adam, or SGD with ``momentum``.
    momentum : float
        SGD's momentum (ignored by Adam).
    schedule : {'cosine', 'constant'}
        Learning rate: cosine annealing to 0 over every step, or constant.
    clip_norm : float
        Clip the gradient norm of the trained parameters at this value before each step; 0 disables.
    seed : int
        Seed for the batch order (a ``torch.Generator`` also passed to ``loss_fn`` as ``batch["generator"]``).
    sample_weights : Tensor[N], optional
        Draw each epoch's samples with replacement in proportion to these weights (JTT upsampling).
    loss_fn : callable, optional
        ``loss_fn(model, batch) -> loss`` replacing cross-entropy. ``batch`` holds ``image``, ``label``,
        ``group``, ``index``, ``mask`` (when the dataset has masks), ``progress`` (the fraction of training done,
        in [0, 1)) and ``generator``. It returns the loss, or ``(loss, logits)``, or ``(loss, logits, parts)`` with
        ``parts`` a dict of floats to log; the logits give the training accuracy.
    loss_config : dict, optional
        Everything that determines ``loss_fn`` (its options), made part of the cache key; without it the key
        holds ``loss_fn.__name__``.
    device : torch.device, optional
        Default :func:`xai_robust.device`.
    cache : bool
        Load/save the trained weights under ``cache_dir()/checkpoints``.
    progress_bar : bool
        Show a progress bar over epochs.

    Returns
    -------
    nn.Module
        The trained model, in eval mode. ``model.fit_history`` holds one dict per epoch: the mean over its steps
        of ``loss``, ``acc`` and each of ``loss_fn``'s ``parts``.
    """
    # every check runs before the model changes (it is moved to the device, then trained)
    _check_model(model)
    if not all(hasattr(dataset, a) for a in ("images", "labels", "groups", "fingerprint")):
        raise TypeError(f"dataset must be a xai_robust.data.SampleDataset, got {type(dataset).__name__}; build one "
                        "with data.SampleDataset(images, labels, groups, class_names=..., group_names=...)")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    check_number(lr, "lr", low=0.0)
    check_number(weight_decay, "weight_decay", low=0.0)
    check_number(momentum, "momentum", low=0.0, high=1.0)
    check_number(clip_norm, "clip_norm", low=0.0)
    check_count(seed, "seed", minimum=0)
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be None or a callable loss_fn(model, batch) -> loss, got "
                        f"{type(loss_fn).__name__}")
    if loss_config is not None and not isinstance(loss_config, dict):
        raise TypeError(f"loss_config must be None or a dict of loss_fn's options, got {type(loss_config).__name__}")
    n = len(dataset)
    if n == 0:
        raise ValueError("dataset is empty")
    if sample_weights is not None:
        sample_weights = torch.as_tensor(sample_weights, dtype=torch.float64)
        if sample_weights.shape != (n,) or not bool(torch.isfinite(sample_weights).all()) \
                or (sample_weights < 0).any() or sample_weights.sum() == 0:
            raise ValueError(f"sample_weights must be {n} finite non-negative numbers, not all zero")
    device = device or default_device()
    model.to(device)
    first = dataset.images[torch.arange(1)].to(device)
    check_model_input(model, first, "dataset.images")
    check_input_channels(model, first, "dataset.images")
    if loss_fn is None:  # cross-entropy: the labels index the model's outputs
        check_training_data(model, dataset.images, dataset.labels, device)
    elif isinstance(dataset.images, torch.Tensor):
        check_finite(dataset.images, "dataset.images")
    recipe = dict(init=state_digest(model), data=dataset.fingerprint(), epochs=epochs, lr=lr,
                  batch_size=batch_size, weight_decay=weight_decay, optimizer=optimizer, seed=seed,
                  weights=None if sample_weights is None else hashlib.sha256(
                      sample_weights.numpy().tobytes()).hexdigest(),
                  loss=None if loss_fn is None else getattr(loss_fn, "__name__", repr(loss_fn)))
    # options that are off by default join the key only when set, so existing checkpoints stay valid
    if optimizer == "sgd":
        recipe["momentum"] = momentum
    if schedule != "cosine":
        recipe["schedule"] = schedule
    if clip_norm:
        recipe["clip_norm"] = clip_norm
    if loss_config is not None:
        recipe["loss_config"] = loss_config
    path = _checkpoint_path(config_hash(recipe))
    state = load_verified(path) if cache else None
    if state is not None:
        history = state.pop(_HISTORY, []) if isinstance(state, dict) else []
        model.load_state_dict(state)
        model.fit_history = history
        return model.to(device).eval()
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, lr=lr, weight_decay=weight_decay) if optimizer == "adam"
           else torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay))
    steps_per_epoch = (n + batch_size - 1) // batch_size
    total_steps = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total_steps) if schedule == "cosine" else None
    g = torch.Generator().manual_seed(seed)
    history = []
    step = 0
    bar = progress(range(epochs), desc=desc, disable=not progress_bar or None)
    for _ in bar:
        sums: dict[str, float] = {}
        total, correct, seen = 0.0, 0, 0
        for idx in batch_indices(n, batch_size, generator=g, weights=sample_weights):
            x = dataset.images[idx].to(device)
            y = dataset.labels[idx].to(device)
            parts = {}
            if loss_fn is None:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            else:
                batch = {"image": x, "label": y, "group": dataset.groups[idx].to(device), "index": idx,
                         "progress": step / total_steps, "generator": g}
                if dataset.masks is not None:
                    batch["mask"] = dataset.masks[idx].to(device)
                loss, logits, parts = _unpack_loss(loss_fn(model, batch))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the training loss became {loss.item()} at step {step} ({desc}); lower lr "
                                         "or check the loss's inputs")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_norm:
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            value = float(loss.detach())
            total += value * len(idx)
            seen += len(idx)
            logged = {"loss": value}
            if logits is not None:
                hits = int((logits.argmax(1) == y).sum())
                correct += hits
                logged["acc"] = hits / len(idx)
            for key, v in {**logged, **parts}.items():
                sums[key] = sums.get(key, 0.0) + v
        history.append({key: v / steps_per_epoch for key, v in sums.items()})
        postfix = {"loss": f"{total / seen:.3f}"}
        if "acc" in sums:
            postfix["acc"] = f"{correct / seen:.3f}"
        bar.set_postfix(postfix)
    model.eval()
    model.fit_history = history
    if cache:
        save_verified({**model.state_dict(), _HISTORY: history}, path)
    return model


_HISTORY = "__fit_history__"  # the per-epoch history, stored next to the weights in a checkpoint


def _unpack_loss(out):
    """``loss_fn``'s result as (loss, logits or None, parts dict)."""
    if isinstance(out, torch.Tensor):
        return out, None, {}
    if isinstance(out, tuple) and len(out) in (2, 3) and isinstance(out[0], torch.Tensor):
        loss, logits = out[0], out[1]
        parts = dict(out[2]) if len(out) == 3 else {}
        return loss, logits, parts
    raise TypeError("loss_fn must return the loss Tensor, (loss, logits) or (loss, logits, parts), got "
                    f"{type(out).__name__}")


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _images(x_or_dataset):
    images = x_or_dataset.images if isinstance(x_or_dataset, SampleDataset) else x_or_dataset
    if isinstance(images, np.ndarray):
        raise TypeError("x_or_dataset must be a float Tensor (N, C, H, W) or a SampleDataset, got a numpy array; "
                        "convert it with torch.from_numpy(x).float()")
    if not isinstance(images, (torch.Tensor, LazyImages)):
        raise TypeError(f"x_or_dataset must be a float Tensor (N, C, H, W) or a SampleDataset, got "
                        f"{type(images).__name__}; stack a list of images with torch.stack(images)")
    return images


def _device_of(model, device):
    if device is not None:
        return device
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _check_inference_input(model, images, batch_size, device):
    """The checks shared by :func:`predict` and :func:`embed` (before the model runs; ``model`` is a Module)."""
    check_count(batch_size, "batch_size")
    if isinstance(images, torch.Tensor):
        check_images(images, "x_or_dataset")
    if len(images) == 0:
        raise ValueError("x_or_dataset is empty: pass at least one image")
    first = images[torch.arange(1)].to(device)
    check_model_input(model, first, "x_or_dataset")
    check_input_channels(model, first, "x_or_dataset")


@torch.no_grad()
def predict(model: nn.Module, x_or_dataset, *, batch_size: int = 256, device=None) -> torch.Tensor:
    """Logits for a tensor of images or a dataset, in eval mode, batched, returned on the CPU."""
    from .attribution import restore_model

    images = _images(x_or_dataset)
    _check_model(model)
    device = _device_of(model, device)
    _check_inference_input(model, images, batch_size, device)
    out = []
    with restore_model(model):
        model.eval()
        for i in range(0, len(images), batch_size):
            out.append(model(images[i:i + batch_size].to(device)).cpu())
    return torch.cat(out)


def evaluate(model: nn.Module, dataset: SampleDataset, **kwargs) -> dict:
    """Accuracy, per-group accuracy and worst-group accuracy of a model on a dataset.

    Returns
    -------
    dict
        ``accuracy``, ``group_accuracy`` (list, NaN for empty groups), ``worst_group_accuracy``,
        ``pred`` (LongTensor) and ``logits``.
    """
    if not isinstance(dataset, SampleDataset):
        raise TypeError(f"dataset must be a xai_robust.data.SampleDataset (labels and groups are scored), got "
                        f"{type(dataset).__name__}; use train.predict(model, x) for a tensor of images")
    logits = predict(model, dataset, **kwargs)
    pred = logits.argmax(1)
    return {"accuracy": mean_accuracy(pred, dataset.labels),
            "group_accuracy": group_accuracies(pred, dataset.labels, dataset.groups, dataset.n_groups).tolist(),
            "worst_group_accuracy": worst_group_accuracy(pred, dataset.labels, dataset.groups),
            "pred": pred, "logits": logits}


def embed(model: nn.Module, x_or_dataset, *, batch_size: int = 256, device=None) -> torch.Tensor:
    """Penultimate embeddings (input of the last linear layer) for images or a dataset, on the CPU."""
    from .models import embed as embed_batch

    images = _images(x_or_dataset)
    _check_model(model)
    device = _device_of(model, device)
    _check_inference_input(model, images, batch_size, device)
    return torch.cat([embed_batch(model, images[i:i + batch_size].to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


def erm(name: str, *, profile: str = "ci", seed: int = 0, progress_bar: bool = True, **data_overrides):
    """The standard ERM classifier for a dataset (chapter 01), trained once and then loaded from the cache.

    Parameters
    ----------
    name : str
        A dataset name of :func:`xai_robust.data.load`. Under the ``colab``/``paper`` profiles a synthetic
        stand-in is replaced by its real dataset (spurious_scenes → waterbirds).
    profile : {'ci', 'colab', 'paper'}
    seed : int
        Seed for data, initialisation and batch order.
    **data_overrides
        Passed to :func:`xai_robust.data.load` for the training split.

    Returns
    -------
    model : nn.Module
        Trained, in eval mode.
    train_set : SampleDataset
    """
    from . import data, models
    from .profiles import REAL_DATASET, profile_settings

    recipes = profile_settings(profile)
    if profile != "ci":
        name = REAL_DATASET.get(name, name)
    if name not in recipes:
        raise ValueError(f"no ERM recipe for {name!r} under profile {profile!r}; known: {sorted(recipes)}")
    recipe = dict(recipes[name])
    arch = recipe.pop("arch")
    overrides = {**recipe.pop("data", {}), **data_overrides}
    model_kwargs = recipe.pop("model", {})
    pretrained = recipe.pop("pretrained", None)
    train_set = data.load(name, "train", profile=profile, seed=seed, **overrides)
    in_channels = train_set.images.shape[1]
    model = models.build(arch, train_set.num_classes, in_channels=in_channels, seed=seed, pretrained=pretrained,
                         progress_bar=progress_bar, **model_kwargs)
    fit(model, train_set, seed=seed, progress_bar=progress_bar, desc=f"ERM on {name}", **recipe)
    return model, train_set
