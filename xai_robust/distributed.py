"""Data parallelism under ``torchrun``: the launch, the process group, sharding and collectives.

Launched as ``torchrun --nproc_per_node K script.py``, every process gets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` in its environment; :func:`is_distributed` reads them and initialises the process group once
(NCCL when CUDA is available, each process on the GPU ``LOCAL_RANK``; gloo on CPUs). :func:`xai_robust.train.fit`
(and through it :func:`xai_robust.isnet.fit`), :func:`xai_robust.train.embed` and
:func:`xai_robust.cluster.heatmap_representations` then split their work across the processes. Without
``torchrun`` (or with one process) :func:`is_distributed` is False, nothing here initialises anything and those
functions run exactly their single-process code.

Conventions: rank 0 is the main process (it alone writes checkpoints and results, and shows progress bars); a
sharded pass over ``n`` samples gives rank ``r`` the contiguous slice :func:`shard_bounds` (sizes differing by at
most one, the first ranks taking the remainder), so concatenating the ranks' parts in rank order
(:func:`gather`) restores the original order.
"""
from __future__ import annotations

import os
import pickle

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["launched", "init", "is_distributed", "rank", "local_rank", "world_size", "is_main", "barrier",
           "backend", "shard_bounds", "split", "gather", "all_reduce_sum", "broadcast_object", "broadcast_module",
           "check_same"]


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"${name} must be an integer (torchrun sets it), got {value!r}") from err


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher) as one of several.

    True when ``WORLD_SIZE`` is above 1 and ``RANK`` is set; reads the environment only.
    """
    size = _env_int("WORLD_SIZE")
    return size is not None and size > 1 and _env_int("RANK") is not None


def init(backend: str | None = None) -> bool:
    """Initialise the default process group once, if this process was launched as one of several.

    Parameters
    ----------
    backend : {'nccl', 'gloo'}, optional
        Default NCCL when CUDA is available (each process then uses the GPU ``LOCAL_RANK``), else gloo.

    Returns
    -------
    bool
        Whether a process group of more than one process is in place (see :func:`is_distributed`). A group the
        caller initialised already is used as it is.
    """
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if not launched():
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl' (GPUs) or 'gloo' (CPUs), got {backend!r}")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())  # torch.device("cuda") (xai_robust.device()) now means this rank's GPU
    dist.init_process_group(backend)
    return dist.get_world_size() > 1


def is_distributed() -> bool:
    """True inside a process group of several processes (initialising it on first call under ``torchrun``)."""
    return init()


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    """This process's rank on its machine: ``$LOCAL_RANK`` (0 when unset)."""
    return _env_int("LOCAL_RANK") or 0


def world_size() -> int:
    """The number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, and always when not distributed: the process that writes files and shows progress."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (nothing when not distributed)."""
    if is_distributed():
        dist.barrier()


def backend() -> str | None:
    """The process group's backend ('nccl', 'gloo'), or None when not distributed."""
    return str(dist.get_backend()) if is_distributed() else None


def _comm_device() -> torch.device:
    """Where collective tensors must live: this rank's GPU for NCCL, else the CPU."""
    if backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard_bounds(n: int, *, world: int | None = None, index: int | None = None) -> tuple[int, int]:
    """The slice ``[start, stop)`` of ``n`` samples that a rank handles.

    Contiguous and balanced: the first ``n % world`` ranks take one sample more, a rank may get none when
    ``n < world``. Concatenating the slices in rank order gives ``0 … n-1``.

    Parameters
    ----------
    n : int
    world, index : int, optional
        The number of ranks and the rank; default :func:`world_size` and :func:`rank`.
    """
    world = world_size() if world is None else world
    index = rank() if index is None else index
    base, extra = divmod(int(n), world)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def split(items: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous part of ``items`` along dim 0 (:func:`shard_bounds`); all of it when not distributed."""
    start, stop = shard_bounds(len(items))
    return items[start:stop]


def gather(part: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """Every rank's ``part`` joined along dim 0, returned on every rank (on ``part``'s device).

    Parts may differ in length (an empty part is fine, even when this rank cannot know the other dimensions);
    they must agree in dtype and trailing dimensions. Without ``index`` the parts are concatenated in rank order,
    which restores the original order of contiguous shards (:func:`shard_bounds`, :func:`split`). With ``index``
    (LongTensor, one entry per row of ``part``: the row's position in the full result) rows are put at those
    positions, for any disjoint sharding that covers ``0 … N-1``. Not distributed: ``part`` itself (reordered by
    ``index`` when given).
    """
    if not isinstance(part, torch.Tensor) or part.dim() == 0:
        raise TypeError("part must be a Tensor with a leading sample dimension")
    if index is not None:
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if len(index) != len(part):
            raise ValueError(f"index has {len(index)} entries but part has {len(part)} rows")
    if not is_distributed():
        if index is None:
            return part
        out = part.new_empty(part.shape)
        out[index.to(part.device)] = part
        return out
    meta = [None] * world_size()
    mine = (len(part), tuple(part.shape[1:]), str(part.dtype).removeprefix("torch.")) if len(part) else None
    dist.all_gather_object(meta, mine)
    known = [m for m in meta if m is not None]
    if not known:
        return part
    lengths = [0 if m is None else m[0] for m in meta]
    trailing, dtype = known[0][1], getattr(torch, known[0][2])
    if any(m[1] != trailing or m[2] != known[0][2] for m in known):
        raise ValueError(f"the ranks' parts disagree in trailing shape or dtype: {meta}")
    dev = _comm_device()
    longest = max(lengths)
    padded = torch.zeros((longest, *trailing), dtype=dtype, device=dev)
    if len(part):
        padded[:len(part)] = part.to(dev)
    pieces = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(pieces, padded)
    out = torch.cat([p[:m] for p, m in zip(pieces, lengths, strict=True)]).to(part.device)
    if index is None:
        return out
    indices = [torch.zeros(longest, dtype=torch.long, device=dev) for _ in lengths]
    mine_index = torch.zeros(longest, dtype=torch.long, device=dev)
    mine_index[:len(index)] = index.to(dev)
    dist.all_gather(indices, mine_index)
    where = torch.cat([i[:m] for i, m in zip(indices, lengths, strict=True)]).to(part.device)
    if len(where) != len(torch.unique(where)) or (len(where) and int(where.max()) != len(where) - 1):
        raise ValueError("the ranks' index entries must cover 0 … N-1 exactly once")
    result = out.new_empty(out.shape)
    result[where] = out
    return result


def all_reduce_sum(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The element-wise sum over ranks of each tensor, in one collective per dtype (flattened, then split).

    Returns new tensors on the inputs' devices; the inputs are left as they are. Not distributed: the inputs.
    """
    if not is_distributed() or not tensors:
        return list(tensors)
    dev = _comm_device()
    out: list[torch.Tensor | None] = [None] * len(tensors)
    groups: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(t.dtype, []).append(i)
    for dtype in sorted(groups, key=str):  # the same order on every rank
        members = groups[dtype]
        flat = torch.cat([tensors[i].detach().reshape(-1).to(dev) for i in members])
        dist.all_reduce(flat)
        offset = 0
        for i in members:
            size = tensors[i].numel()
            out[i] = flat[offset:offset + size].reshape(tensors[i].shape).to(tensors[i].device)
            offset += size
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` (any picklable object) on every rank; ``obj`` itself when not distributed."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_module(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``model``, in place (one collective per dtype).

    Nothing happens when not distributed. Every rank's model must have the same parameter and buffer shapes.
    """
    if not is_distributed():
        return
    tensors = list(model.parameters()) + list(model.buffers())
    shapes = [tuple(t.shape) for t in tensors]
    if broadcast_object(shapes, src) != shapes:
        raise ValueError("the ranks' models differ in their parameter or buffer shapes; build the same model on "
                         "every rank")
    dev = _comm_device()
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    for dtype in sorted(groups, key=str):
        members = groups[dtype]
        flat = torch.cat([t.detach().reshape(-1).to(dev) for t in members])
        dist.broadcast(flat, src=src)
        offset = 0
        with torch.no_grad():
            for t in members:
                t.copy_(flat[offset:offset + t.numel()].reshape(t.shape))
                offset += t.numel()


def check_same(value, what: str) -> None:
    """Raise on every rank when the ranks disagree on ``value`` (picklable), naming ``what``."""
    if not is_distributed():
        return
    values = [None] * world_size()
    dist.all_gather_object(values, pickle.dumps(value))
    if len(set(values)) > 1:
        raise ValueError(f"the ranks disagree on {what}: every rank must call with the same model, data and options "
                         "(build them from the same seed)")
