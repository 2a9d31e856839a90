"""Datasets: offline synthetic ones for the ``ci`` profile, loaders for the real ones (docs/design.md "Samples").

Use :func:`load`; every dataset is a :class:`SampleDataset` yielding
``{"image", "label", "group", "mask"?, "spurious"?, "index"}`` with ``dataset.group_names``.
:func:`download` fetches a real dataset (checksum-verified, extracted atomically) into the folder :func:`load`
reads by default, :func:`default_root` (``$XAI_ROBUST_MIRRORS`` can point it at a local mirror).
:mod:`xai_robust.data.fixtures` writes tiny datasets in the real formats and serves them on 127.0.0.1 (for tests,
``make colab-smoke``, and trying the colab code paths offline).
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


_SIZED = ("waterbirds", "celeba")  # the real loaders of photos (size=, default 224 px)


def _ensure(profile: str, name: str) -> Path:
    """``default_root(name)``; outside ci, downloaded there first when the dataset is missing (``download``)."""
    from .download import DATASETS

    root = default_root(name)
    if profile == "ci" or DATASETS[name].present(root):
        return root
    try:
        return download(name, root)
    except ValueError as err:  # no checksum known (Waterbirds), or a root holding other files
        raise DatasetNotFoundError(
            f"{name} is not in {root} and could not be downloaded there automatically: {err} Download it once with "
            f"xai_robust.data.download({name!r}, ...) (or set $XAI_ROBUST_MIRRORS to a mirror table), or pass "
            "root= to data.load.") from err


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
        the synthetic training sets grow to 20,000 samples outside 'ci'. Outside 'ci', a real dataset (MNIST
        for the digit datasets) missing from its default root is downloaded there first (:func:`download`,
        which reads ``$XAI_ROBUST_MIRRORS``); with ``root=`` given, nothing is downloaded. Under the smoke
        setting (``$XAI_ROBUST_SMOKE``, :func:`xai_robust.profiles.smoke`), outside 'ci', the default training
        set holds ``profiles.SMOKE["n_train"]`` samples and a real image dataset's default side is
        ``profiles.SMOKE["size"]``.
    seed : int
        Dataset seed (synthetic data, and the subset and colours / marks of the MNIST-built digit datasets).
    **overrides
        Passed to the dataset function (e.g. ``correlation=0.9``, ``second_shortcut=True``, ``n=500``).
    """
    from ..profiles import PROFILES, REAL_DATASET, SMOKE, smoke

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    small = profile != "ci" and smoke()
    if profile != "ci" and name in REAL_DATASET:
        name = REAL_DATASET[name]  # outside ci, a synthetic stand-in is replaced by its real dataset
    if name in SYNTHETIC:
        if profile != "ci" and name in DIGITS:
            overrides.setdefault("source", "mnist")
        mnist_source = overrides.get("source") == "mnist"
        if mnist_source and "root" not in overrides:
            overrides["root"] = _ensure(profile, "mnist")
        if profile != "ci" and "n" not in overrides and split == "train":
            if small:
                overrides["n"] = SMOKE["n_train"]
            elif not (mnist_source and profile == "paper"):
                overrides["n"] = 20000
        return SYNTHETIC[name](split, seed=seed, **overrides)
    if name in REAL:
        if "root" not in overrides:
            overrides["root"] = _ensure(profile, name)
        if small and name in _SIZED:
            overrides.setdefault("size", SMOKE["size"])
        return REAL[name](split, **overrides)
    raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(SYNTHETIC) + sorted(REAL)}")
