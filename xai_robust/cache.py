"""Verified, atomic on-disk caching shared by datasets, training and ISNet checkpoints (DESIGN.md "Caching").

Files live under :func:`xai_robust.cache_dir`, are keyed by a hash of their configuration, written
atomically (temporary file, then rename) and verified with a SHA-256 digest on load; a corrupt file is
treated as missing, so the caller rebuilds it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["config_hash", "state_digest", "save_verified", "load_verified"]


def config_hash(config: dict) -> str:
    """Stable short hash of a JSON-serialisable configuration."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def state_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (parameters and buffers)."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_verified(obj, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically, preceded by a line holding its SHA-256 digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
    os.replace(tmp, path)


def load_verified(path: Path, map_location="cpu"):
    """The object saved by :func:`save_verified`, or ``None`` if the file is missing, truncated or corrupt."""
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
