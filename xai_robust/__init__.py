"""xai_robust: the package behind the book *Explainability-driven robustness*.

One module per idea (see docs/design.md): ``data`` → ``models``/``train`` → a method module
(``lrp``, ``isnet``, ``cluster``, ``dfr``, ``sca``, ``grouped``, ``nas``) → ``metrics``/``viz``.
Submodules are imported on first use: ``import xai_robust; xai_robust.lrp.lrp_flex(...)`` works.
"""
from __future__ import annotations

import importlib
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

__version__ = "0.1.0"
__all__ = ["device", "seed_everything", "cache_dir", "results_dir", "save_results", "load_results", "seed_spread",
           "progress"]

_SUBMODULES = {"attribution", "checks", "cluster", "data", "dfr", "distributed", "grouped", "isnet", "kmeans",
               "losses", "lrp", "metrics", "models", "nas", "nas_eval", "paper", "pretrain", "profiles", "references",
               "results", "sca", "superpixels", "train", "viz"}


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


class _StaticProgress:
    """A progress bar that prints one line when it finishes (for executed notebooks: no widget state)."""

    def __init__(self, iterable=None, *, desc=None, total=None, **_):
        self.iterable, self.desc, self.n, self.postfix = iterable, desc or "progress", 0, ""
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.start, self.closed = time.perf_counter(), False

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.n += 1
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n=1):
        self.n += n

    def set_postfix(self, values=None, refresh=True, **kwargs):
        values = {**(values or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc):
        self.desc = desc

    def close(self):
        if self.closed:
            return
        self.closed = True
        total = f"/{self.total}" if self.total is not None else ""
        postfix = f" ({self.postfix})" if self.postfix else ""
        print(f"{self.desc}: {self.n}{total} in {time.perf_counter() - self.start:.1f} s{postfix}", flush=True)


def progress(iterable=None, *, desc=None, total=None, leave=False, disable=None, **kwargs):
    """The package's progress bar: tqdm (a widget in notebooks, text in a terminal), off or static.

    ``$XAI_ROBUST_PROGRESS`` chooses: ``"1"`` (default) tqdm, ``"0"`` none, ``"static"`` one printed line per
    finished loop — what ``tools/book.py`` sets when it executes the chapters, so the rendered book shows a final
    text line instead of widget state. ``disable=True`` turns a bar off whatever the setting.
    """
    mode = os.environ.get("XAI_ROBUST_PROGRESS", "1")
    if disable is None:
        disable = mode == "0"
    if disable:
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, disable=True, **kwargs)
    if mode == "static":
        return _StaticProgress(iterable, desc=desc, total=total)
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=leave, **kwargs)


# the results JSON and the seeds' spread live in xai_robust.results (re-exported here)
from .results import _reproduction_table, load_results, save_results, seed_spread  # noqa: E402,F401
