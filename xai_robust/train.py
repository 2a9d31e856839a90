"""Training and evaluation: ``fit`` / ``predict`` / ``evaluate`` / ``embed`` and the chapters' ERM models.

``fit`` trains any classifier on a :class:`~xai_robust.data.SampleDataset` with a progress bar, a seed, the
chosen device and a checkpoint cache keyed by a hash of everything that determines the result (initial
weights, data, recipe), written atomically and verified on load. ``erm`` is the standard model chapter 01
trains per dataset; later chapters call it and get the same network from the cache.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import cache_dir, distributed, progress
from . import device as default_device
from .cache import config_hash, load_verified, save_verified, state_digest
from .checks import check_count, check_finite, check_images, check_model_input, check_number, check_training_data
from .data.base import LazyImages, SampleDataset, batch_indices
from .metrics.groups import group_accuracies, mean_accuracy, worst_group_accuracy
from .models import check_input_channels

__all__ = ["fit", "predict", "evaluate", "embed", "erm", "erm_recipe", "progress", "state_digest"]


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

    Notes
    -----
    **Under torchrun** (:func:`xai_robust.distributed.is_distributed`; every rank calls ``fit`` with the same
    model, data and options) training is data-parallel:

    * *Sharding.* Every rank draws the same batch order from the same seeded generator; each global batch of
      ``batch_size`` samples is split into contiguous per-rank shards (:func:`xai_robust.distributed.shard_bounds`:
      sizes differ by at most one, no divisibility needed). ``batch["index"]`` is the rank's shard.
      ``batch_size`` is the *global* batch and must be at least the number of processes; a short last batch may
      leave some ranks without samples for that step.
    * *Gradients.* Each rank's loss is the mean over its shard; its gradient is weighted by its share of the global
      batch and the weighted gradients are summed across ranks (one all-reduce per step, after ``backward``),
      which is the single-process gradient of the global batch's mean loss, unequal shards included. This is
      DistributedDataParallel's reduction done explicitly, because ``loss_fn`` receives the bare model: the
      ISNets' losses hook its modules by name and differentiate heatmaps (``create_graph``), which the DDP wrapper
      does not support. Clipping and the optimizer step then run on identical gradients on every rank.
    * *Buffers.* BatchNorm normalises each shard with the shard's statistics (as DDP without SyncBatchNorm does);
      the running statistics are updated with the share-weighted mean of the ranks' updates (exact for the
      running mean) and integer buffers follow rank 0. Without BatchNorm in training mode (and without
      randomness in ``loss_fn``), the weights equal a single-process run with the same ``batch_size`` to float
      tolerance.
    * *Randomness.* ``batch["generator"]`` is a generator of the rank's own, seeded from ``seed`` and the rank,
      and never the one that draws the batch order, so a ``loss_fn`` that draws from it (the Stochastic ISNet
      draws one class per sample) cannot desynchronise the ranks' batch orders, and the ranks' shards get
      independent draws. The draws are reproducible for a given number of processes but differ from a
      single-process run's (there the one generator serves both).
    * *Checkpoints.* The number of processes joins the cache key (a distributed run is not bit-for-bit a
      single-process one, so it never answers for one). Rank 0 alone reads and writes the cache; on a hit its
      weights and history are broadcast; after training every rank holds rank 0's weights (broadcast, so they are
      identical to the bit), rank 0 writes the checkpoint and the others wait for it (a barrier). The progress bar
      shows on rank 0 only, and the history (global-batch losses and accuracies) is the same on every rank.
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
    parallel = distributed.is_distributed()  # under torchrun: initialises the process group (and the rank's GPU)
    if parallel:
        world = distributed.world_size()
        if batch_size < world or n < world:
            raise ValueError(f"batch_size ({batch_size}) and the dataset's length ({n}) must each be at least the "
                             f"number of processes ({world}): batch_size is the global batch, split across them")
    device = device or default_device()
    model.to(device)
    if parallel:
        distributed.broadcast_module(model)  # every rank starts from rank 0's weights (and keys the cache on them)
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
    if parallel:
        recipe["world_size"] = world
    path = _checkpoint_path(config_hash(recipe))
    if parallel:  # a mismatch would hang the collectives (loss_config may hold a process-specific repr: left out)
        distributed.check_same(config_hash({k: v for k, v in recipe.items() if k != "loss_config"}),
                               "fit's model, data and recipe")
    state = load_verified(path) if cache and distributed.is_main() else None
    if parallel and cache and distributed.broadcast_object(state is not None):  # rank 0 found the checkpoint
        history = None
        if state is not None:
            history = state.pop(_HISTORY, []) if isinstance(state, dict) else []
            model.load_state_dict(state)
        distributed.broadcast_module(model)
        model.fit_history = distributed.broadcast_object(history)
        return model.to(device).eval()
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
    # under torchrun the loss draws from a generator of the rank's own: the batch order's generator stays in step
    loss_generator = torch.Generator().manual_seed(_rank_seed(seed, distributed.rank())) if parallel else g
    history = []
    step = 0
    bar = progress(range(epochs), desc=desc, disable=not progress_bar or not distributed.is_main() or None)
    for _ in bar:
        sums: dict[str, float] = {}
        total, correct, seen = 0.0, 0, 0
        for idx in batch_indices(n, batch_size, generator=g, weights=sample_weights):
            if parallel:  # this rank's shard: forward, backward, then the global batch's gradient on every rank
                value, hits, parts = _parallel_step(model, opt, params, dataset, idx, loss_fn, device,
                                                    step / total_steps, loss_generator, step, desc)
            else:
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
                    raise FloatingPointError(f"the training loss became {loss.item()} at step {step} ({desc}); lower "
                                             "lr or check the loss's inputs")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                value = float(loss.detach())
                hits = None if logits is None else int((logits.argmax(1) == y).sum())
            if clip_norm:
                torch.nn.utils.clip_grad_norm_(params, clip_norm)
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            total += value * len(idx)
            seen += len(idx)
            logged = {"loss": value}
            if hits is not None:
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
    if parallel:  # identical to the bit on every rank: rank 0's weights and history
        distributed.broadcast_module(model)
        history = distributed.broadcast_object(history)
    model.fit_history = history
    if cache and distributed.is_main():
        save_verified({**model.state_dict(), _HISTORY: history}, path)
    distributed.barrier()  # the other ranks return once the checkpoint exists
    return model


_HISTORY = "__fit_history__"  # the per-epoch history, stored next to the weights in a checkpoint


def _rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s ``batch["generator"]`` under torchrun: a digest of the run's seed and the rank."""
    digest = hashlib.sha256(f"xai_robust.train.fit/{seed}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _parallel_step(model, opt, params, dataset, idx, loss_fn, device, progress_done, generator, step, desc):
    """One data-parallel step's forward and backward (see :func:`fit`, Notes): this rank computes the loss of its
    shard of the global batch ``idx``; afterwards every rank's ``.grad`` holds the global batch's gradient and
    its floating buffers the share-weighted update. Returns the global batch's (loss, hits or None, parts)."""
    start, stop = distributed.shard_bounds(len(idx))
    shard = idx[start:stop]
    weight = len(shard) / len(idx)  # this rank's share: the global mean loss is the share-weighted sum of means
    buffers = list(model.buffers())
    floating = [b for b in buffers if b.is_floating_point()]
    integral = [b for b in buffers if not b.is_floating_point()]
    before = [b.detach().clone() for b in floating]
    opt.zero_grad(set_to_none=True)
    value, hits, has_logits, parts = 0.0, 0.0, 0.0, {}
    if len(shard):
        x = dataset.images[shard].to(device)
        y = dataset.labels[shard].to(device)
        logits = None
        if loss_fn is None:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        else:
            batch = {"image": x, "label": y, "group": dataset.groups[shard].to(device), "index": shard,
                     "progress": progress_done, "generator": generator}
            if dataset.masks is not None:
                batch["mask"] = dataset.masks[shard].to(device)
            loss, logits, parts = _unpack_loss(loss_fn(model, batch))
        value = float(loss.detach())
        if math.isfinite(value):  # a non-finite loss is reported on every rank after the reduction below
            loss.backward()
        if logits is not None:
            hits, has_logits = float((logits.argmax(1) == y).sum()), 1.0
    # the parts' names: the rank's own, or rank 0's when a short last batch left some rank without samples
    keys = list(parts)
    if len(idx) < distributed.world_size():
        keys = distributed.broadcast_object(keys)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    stats = [weight * value, hits, has_logits, *(weight * float(parts.get(k, 0.0)) for k in keys),
             *(float(p.grad is not None) for p in params)]
    stats = torch.tensor(stats, dtype=torch.float64)
    ints = [b.detach().reshape(-1).to("cpu", torch.float64) * float(distributed.is_main()) for b in integral]
    reduced = distributed.all_reduce_sum([g.detach() * weight for g in grads]
                                         + [(b.detach() - b0) * weight for b, b0 in zip(floating, before, strict=True)]
                                         + [stats] + ints)
    stats = reduced[len(grads) + len(floating)].tolist()
    total_loss = stats[0]
    if not math.isfinite(total_loss):
        raise FloatingPointError(f"the training loss became {total_loss} at step {step} ({desc}); lower lr or check "
                                 "the loss's inputs")
    flags = stats[3 + len(keys):]
    for p, g, flag in zip(params, reduced[:len(grads)], flags, strict=True):
        p.grad = g if flag > 0 else None  # a parameter no rank's loss reached keeps no gradient, as in one process
    with torch.no_grad():
        for b, b0, delta in zip(floating, before, reduced[len(grads):len(grads) + len(floating)], strict=True):
            b.copy_(b0 + delta)
        for b, v in zip(integral, reduced[len(grads) + len(floating) + 1:], strict=True):
            b.copy_(v.round().reshape(b.shape).to(b.dtype))
    parts = {k: v for k, v in zip(keys, stats[3:3 + len(keys)], strict=True)}
    return total_loss, (int(round(stats[1])) if stats[2] > 0 else None), parts


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
    """Penultimate embeddings (input of the last linear layer) for images or a dataset, on the CPU.

    Under torchrun (:func:`xai_robust.distributed.is_distributed`) each rank embeds its contiguous slice of the
    images (:func:`xai_robust.distributed.shard_bounds`) and every rank returns the full result, in the original
    order (an all-gather); every rank must call it with the same model and images.
    """
    from .models import embed as embed_batch

    images = _images(x_or_dataset)
    _check_model(model)
    device = _device_of(model, device)
    _check_inference_input(model, images, batch_size, device)
    if distributed.is_distributed():
        start, stop = distributed.shard_bounds(len(images))
        part = [embed_batch(model, images[i:min(i + batch_size, stop)].to(device)).cpu()
                for i in range(start, stop, batch_size)]
        return distributed.gather(torch.cat(part) if part else torch.empty(0))
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


def erm_recipe(name: str, *, profile: str = "ci") -> tuple[dict, dict]:
    """The ERM recipe of dataset ``name`` under ``profile``, split for :func:`xai_robust.models.build` and :func:`fit`.

    Chapter 04 trains JTT (Liu et al. 2021; ExMap Sec. 5.2) and a two-shortcut ERM with the same backbone and
    schedule as :func:`erm`.

    Parameters
    ----------
    name : str
        A key of :func:`xai_robust.profiles.profile_settings` (no real-dataset substitution).
    profile : {'ci', 'colab', 'paper'}

    Returns
    -------
    model_options : dict
        ``arch``, ``pretrained`` and the architecture's options: ``models.build(num_classes=..., **model_options)``.
    fit_options : dict
        The training options (``epochs``, ``lr``, ``batch_size``, ...) for :func:`fit`; the recipe's data
        overrides are left out.
    """
    from .profiles import profile_settings

    recipes = profile_settings(profile)
    if name not in recipes:
        raise ValueError(f"no ERM recipe for {name!r} under profile {profile!r}; known: {sorted(recipes)}")
    recipe = dict(recipes[name])
    model_options = {"arch": recipe.pop("arch"), "pretrained": recipe.pop("pretrained", None),
                     **recipe.pop("model", {})}
    recipe.pop("data", None)
    return model_options, recipe
