"""xai_robust: the package behind the book *Explainability-driven robustness*.

One module per idea (see DESIGN.md): ``data`` → ``models``/``train`` → a method module
(``lrp``, ``isnet``, ``cluster``, ``dfr``, ``sca``, ``grouped``, ``nas``) → ``metrics``/``viz``.
Submodules are imported on first use: ``import xai_robust; xai_robust.lrp.lrp_flex(...)`` works.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import random
from pathlib import Path

import numpy as np
import torch

__version__ = "0.1.0"
__all__ = ["device", "seed_everything", "cache_dir", "results_dir", "save_results", "load_results"]

_SUBMODULES = {"attribution", "cluster", "data", "dfr", "grouped", "isnet", "losses", "lrp", "metrics",
               "models", "nas", "profiles", "sca", "superpixels", "train", "viz"}


def __getattr__(name):  # lazy submodule import (PEP 562)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def device() -> torch.device:
    """The default device: CUDA when available, else CPU. Nothing in the package assumes either."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) random number generators."""
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))


def cache_dir() -> Path:
    """Folder for cached datasets and checkpoints: ``$XAI_ROBUST_CACHE`` or ``~/.cache/xai_robust``."""
    path = Path(os.environ.get("XAI_ROBUST_CACHE", Path.home() / ".cache" / "xai_robust"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    """Folder for chapter results: ``$XAI_ROBUST_RESULTS``, else ``results/`` in the working directory."""
    path = Path(os.environ.get("XAI_ROBUST_RESULTS", "results"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_results(name: str, values: dict) -> Path:
    """Write a chapter's cited numbers to ``results/<name>.json`` (flat name → number).

    Parameters
    ----------
    name : str
        The notebook's name without extension, e.g. ``"01_shortcuts"``.
    values : dict
        Flat mapping from a result name to a number (int, float, bool or 0-d tensor/array).

    Returns
    -------
    Path
        The file written (atomically: temporary file, then rename).
    """
    clean = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise TypeError(f"result names must be strings, got {key!r}")
        if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
            size = value.numel() if isinstance(value, torch.Tensor) else np.size(value)
            if size != 1:
                raise ValueError(f"result {key!r} must be a single number, got shape {tuple(value.shape)}")
            value = value.item()
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float)):
            raise TypeError(f"result {key!r} must be a number, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # JSON has no NaN; claims tests treat None as "not measured"
        clean[key] = value
    path = results_dir() / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(clean, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def load_results(name: str) -> dict:
    """Read ``results/<name>.json`` written by :func:`save_results`."""
    path = results_dir() / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebooks/{name}.ipynb first (make test does)")
    return json.loads(path.read_text())
