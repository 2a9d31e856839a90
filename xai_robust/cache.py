"""Verified, atomic on-disk caching shared by datasets, training and ISNet checkpoints (docs/design.md "Caching").

Files live under :func:`xai_robust.cache_dir`, are keyed by a hash of their configuration, written
atomically (temporary file, then rename) and verified with a SHA-256 digest on load; a corrupt file is
treated as missing, so the caller rebuilds it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["config_hash", "state_digest", "content_digest", "save_verified", "load_verified", "atomic_write"]


def config_hash(config: dict) -> str:
    """Stable short hash of a JSON-serialisable configuration."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def content_digest(*values) -> str:
    """A digest of the *full* content of tensors, arrays, numbers, strings and nested lists/dicts of them.

    Every byte counts (no sampling): two datasets that differ in one pixel, label or mask get different digests.
    Tensors are hashed with their dtype and shape, so a reshaped or recast tensor differs too. BLAKE2b over the
    raw bytes hashes about a gigabyte per second.
    """
    h = hashlib.blake2b(digest_size=16)

    def feed(v):
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().contiguous()
            h.update(f"T{v.dtype}{tuple(v.shape)}".encode())
            h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
        elif isinstance(v, np.ndarray):
            v = np.ascontiguousarray(v)
            h.update(f"A{v.dtype}{v.shape}".encode())
            h.update(v.tobytes())
        elif isinstance(v, dict):
            h.update(b"D")
            for k in sorted(v, key=str):
                h.update(str(k).encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            h.update(f"L{len(v)}".encode())
            for item in v:
                feed(item)
        else:
            h.update(f"V{type(v).__name__}:{v!r}".encode())

    for value in values:
        feed(value)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file unique to this process *and* thread, then rename."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}; encode text first (text.encode())")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def state_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (parameters and buffers); any dtype, bfloat16 included (raw bytes)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        value = value.detach().cpu().contiguous()
        try:
            raw = value.numpy().tobytes()
        except TypeError:  # dtypes NumPy lacks (bfloat16, float8): the same raw bytes through a uint8 view
            raw = value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b""
        h.update(raw)
    return h.hexdigest()


def save_verified(obj, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically, preceded by a line holding its SHA-256 digest."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    atomic_write(path, hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


def load_verified(path: Path, map_location="cpu"):
    """The object saved by :func:`save_verified`, or ``None`` if the file is missing, truncated or corrupt.

    ``map_location`` is checked first (a bad device string raises instead of reading as a corrupt file).
    """
    if isinstance(map_location, str):
        try:
            torch.device(map_location)
        except RuntimeError as err:
            raise ValueError(f"map_location must be a device such as 'cpu' or 'cuda:0', got {map_location!r}") from err
    path = Path(path)
    if not path.exists():
        return None
    try:
        digest, data = path.read_bytes().split(b"\n", 1)
        if hashlib.sha256(data).hexdigest().encode() != digest:
            return None
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
    except Exception:
        return None
