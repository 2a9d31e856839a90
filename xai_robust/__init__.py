"""xai_robust: the package behind the book *Explainability-driven robustness*.

One module per idea (see docs/design.md): ``data`` → ``models``/``train`` → a method module
(``lrp``, ``isnet``, ``cluster``, ``dfr``, ``sca``, ``grouped``, ``nas``) → ``metrics``/``viz``.
Submodules are imported on first use: ``import xai_robust; xai_robust.lrp.lrp_flex(...)`` works.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

__version__ = "0.1.0"
__all__ = ["device", "seed_everything", "cache_dir", "results_dir", "save_results", "load_results", "seed_spread",
           "progress"]

_SUBMODULES = {"attribution", "checks", "cluster", "data", "dfr", "distributed", "grouped", "isnet", "losses", "lrp",
               "metrics", "models", "nas", "paper", "pretrain", "profiles", "references", "sca", "superpixels", "train",
               "viz"}


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
    from .cache import atomic_write

    path = results_dir() / f"{name}.json"
    atomic_write(path, json.dumps(clean, indent=1, sort_keys=True).encode())
    return path


def load_results(name: str) -> dict:
    """Read ``results/<name>.json`` written by :func:`save_results`."""
    path = results_dir() / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebooks/{name}.ipynb first (make test does)")
    return json.loads(path.read_text())


def _reproduction_table(path=None):
    if path is not None:
        candidates = [Path(path)]
    elif "XAI_ROBUST_REPRODUCTION" in os.environ:
        candidates = [Path(os.environ["XAI_ROBUST_REPRODUCTION"])]
    else:
        candidates = [Path("../book/reproduction.json"), Path("book/reproduction.json")]
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def seed_spread(chapter: str, key: str, *, fmt: str = ".1f", path=None) -> str:
    """The spread of a chapter's figure over seeds, from the recorded reproduction (``make reproduce``).

    ``tools/reproduce.py`` executes every chapter at seeds 0, 1, 2 and records each figure's mean and standard
    deviation in ``book/reproduction.json``; chapters show the spread beside the figure it qualifies.

    Parameters
    ----------
    chapter : str
        Notebook name, e.g. ``"04_exmap"``.
    key : str
        A key of that chapter's results JSON.
    fmt : str
        Number format of the mean and the standard deviation.
    path : str or Path, optional
        The table; default ``$XAI_ROBUST_REPRODUCTION``, else ``book/reproduction.json`` seen from the
        repository root or from ``notebooks/``.

    Returns
    -------
    str
        e.g. ``"(seeds 0–2: 72.1 ± 4.3)"``, or ``"(spread over seeds not recorded)"`` when the table or the
        figure is missing (a notebook opened outside the repository, or a new figure).
    """
    table = _reproduction_table(path)
    entry = (table or {}).get("chapters", {}).get(chapter, {}).get(key)
    if not entry or "mean" not in entry:
        return "(spread over seeds not recorded)"
    seeds = table.get("seeds", [])
    label = f"seeds {seeds[0]}–{seeds[-1]}" if len(seeds) > 1 else "seeds"
    return f"({label}: {entry['mean']:{fmt}} ± {entry['sd']:{fmt}})"
