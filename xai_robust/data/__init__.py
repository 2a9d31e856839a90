"""Datasets: offline synthetic ones for the ``ci`` profile, loaders for the real ones (docs/design.md "Samples").

Use :func:`load`; every dataset is a :class:`SampleDataset` yielding
``{"image", "label", "group", "mask"?, "spurious"?, "index"}`` with ``dataset.group_names``.
:func:`download` fetches a real dataset (checksum-verified, extracted atomically) into the folder :func:`load`
reads by default, :func:`default_root`.
"""
from __future__ import annotations

import os
from pathlib import Path

from .. import cache_dir
from .base import LazyImages, SampleDataset, cached, config_hash
from .digits import biased_digits, colored_digits, parity_digits
from .download import DownloadError, download
from .real import DatasetNotFoundError, celeba, cifar10, mnist, stl10, waterbirds
from .scenes import spurious_scenes

__all__ = ["load", "download", "default_root", "SYNTHETIC", "REAL", "DIGITS", "SampleDataset", "LazyImages",
           "DatasetNotFoundError", "DownloadError", "colored_digits", "biased_digits", "parity_digits",
           "spurious_scenes", "waterbirds", "celeba", "mnist", "cifar10", "stl10", "cached", "config_hash"]

SYNTHETIC = {"colored_digits": colored_digits, "biased_digits": biased_digits, "parity_digits": parity_digits,
             "spurious_scenes": spurious_scenes}
REAL = {"waterbirds": waterbirds, "celeba": celeba, "mnist": mnist, "cifar10": cifar10, "stl10": stl10}
DIGITS = ("colored_digits", "biased_digits", "parity_digits")  # built from real MNIST outside ci (source="mnist")


def default_root(name: str) -> Path:
    """Where a real dataset is looked for: ``$XAI_ROBUST_DATA/<name>`` or ``cache_dir()/data/<name>``."""
    base = os.environ.get("XAI_ROBUST_DATA")
    return Path(base) / name if base else cache_dir() / "data" / name


def load(name: str, split: str, *, profile: str = "ci", seed: int = 0, **overrides) -> SampleDataset:
    """Load a dataset split by name.

    Parameters
    ----------
    name : str
        Synthetic: 'colored_digits', 'biased_digits', 'parity_digits', 'spurious_scenes'.
        Real: 'waterbirds', 'celeba', 'mnist', 'cifar10', 'stl10' (pass ``root=``).
    split : str
        See each dataset's function for its splits.
    profile : {'ci', 'colab', 'paper'}
        Outside 'ci', a synthetic stand-in is replaced by the real dataset it imitates
        (``profiles.REAL_DATASET``: spurious_scenes → waterbirds), and the digit datasets are built from real
        MNIST as their papers build them (``source="mnist"``, ``root=default_root("mnist")``; pass
        ``source="sklearn"`` for the offline digits, ``root=`` for another folder). Their training sets hold
        20,000 samples under 'colab' (a seeded subset of MNIST's 50,000) and every training image under 'paper'
        (unless ``n`` is given); val and test splits hold every image of the split. With ``source="sklearn"``
        the synthetic training sets grow to 20,000 samples outside 'ci'.
    seed : int
        Dataset seed (synthetic data, and the subset and colours / marks of the MNIST-built digit datasets).
    **overrides
        Passed to the dataset function (e.g. ``correlation=0.9``, ``second_shortcut=True``, ``n=500``).
    """
    from ..profiles import PROFILES, REAL_DATASET

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if profile != "ci" and name in REAL_DATASET:
        name = REAL_DATASET[name]  # outside ci, a synthetic stand-in is replaced by its real dataset
    if name in SYNTHETIC:
        if profile != "ci" and name in DIGITS:
            overrides.setdefault("source", "mnist")
        mnist_source = overrides.get("source") == "mnist"
        if mnist_source:
            overrides.setdefault("root", default_root("mnist"))
        if profile != "ci" and "n" not in overrides and split == "train" and not (mnist_source and profile == "paper"):
            overrides["n"] = 20000
        return SYNTHETIC[name](split, seed=seed, **overrides)
    if name in REAL:
        overrides.setdefault("root", default_root(name))
        return REAL[name](split, **overrides)
    raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(SYNTHETIC) + sorted(REAL)}")
