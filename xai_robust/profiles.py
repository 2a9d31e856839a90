"""Run profiles: ``ci`` (offline synthetic data, 2 CPU cores, minutes), ``colab`` (a T4-class GPU, the real
datasets, under 30 minutes), ``paper`` (the papers' settings). Chapters read their defaults from here.

The smoke setting (``XAI_ROBUST_SMOKE=1``, :func:`smoke`) runs the ``colab`` and ``paper`` code paths at toy
scale — what ``make colab-smoke`` does on a CPU against fixture datasets (:mod:`xai_robust.data.fixtures`):
every ERM recipe trains for one epoch on at most ``SMOKE["n_train"]`` images of at most ``SMOKE["size"]``
pixels (same architecture, same ``pretrained`` weights), :func:`xai_robust.data.load` defaults to those sizes,
and a chapter's own settings table may carry a ``"smoke"`` entry that :func:`chapter_settings` applies on top
of the profile's. It never changes the ``ci`` profile. Its numbers mean nothing: it checks that the code runs.
"""
from __future__ import annotations

import os

__all__ = ["PROFILES", "profile_settings", "chapter_settings", "smoke", "SMOKE", "SMOKE_ENV", "REAL_DATASET",
           "ERM_RECIPES"]

PROFILES = ("ci", "colab", "paper")

# the real dataset each synthetic one stands in for under the colab / paper profiles
REAL_DATASET = {"colored_digits": "colored_digits", "biased_digits": "biased_digits",
                "parity_digits": "parity_digits", "spurious_scenes": "waterbirds"}

# the standard ERM recipe per dataset and profile (chapter 01 trains these; later chapters reuse them).
# ``pretrained`` names the backbone ERM fine-tunes (models.build / pretrain.initialize): a synthetic corpus under
# ci ('shapes', 'glyphs'), torchvision's ImageNet weights ('imagenet'), or None (from scratch, as the papers train
# their digit models: Faster ISNet's biased MNIST, FCR's ParityMNIST)
ERM_RECIPES = {
    "ci": {
        "colored_digits": dict(arch="conv2net", epochs=8, lr=2e-3, batch_size=64, weight_decay=1e-4,
                               pretrained="glyphs"),
        "biased_digits": dict(arch="conv2net", epochs=4, lr=2e-3, batch_size=64, weight_decay=1e-4),
        "parity_digits": dict(arch="conv2net", epochs=6, lr=2e-3, batch_size=64, weight_decay=1e-4),
        "spurious_scenes": dict(arch="small_resnet", epochs=8, lr=2e-3, batch_size=64, weight_decay=1e-4,
                                model=dict(stem_stride=2), pretrained="shapes"),
    },
    "colab": {
        "colored_digits": dict(arch="small_resnet", epochs=10, lr=1e-3, batch_size=128, weight_decay=1e-4,
                               data=dict(n=20000), pretrained="glyphs"),
        "biased_digits": dict(arch="resnet18", epochs=10, lr=1e-3, batch_size=128, weight_decay=1e-4,
                              data=dict(n=20000)),
        "parity_digits": dict(arch="conv2net", epochs=10, lr=1e-3, batch_size=128, weight_decay=1e-4,
                              data=dict(n=20000)),
        "waterbirds": dict(arch="resnet50", epochs=10, lr=1e-3, batch_size=64, weight_decay=1e-4,
                           data=dict(size=224), model=dict(small_input=False), pretrained="imagenet"),
    },
}
ERM_RECIPES["paper"] = {**ERM_RECIPES["colab"],
                        "waterbirds": dict(arch="resnet50", epochs=100, lr=1e-3, batch_size=32, weight_decay=1e-4,
                                           data=dict(size=224), model=dict(small_input=False),
                                           pretrained="imagenet")}


SMOKE_ENV = "XAI_ROBUST_SMOKE"
#: the smoke setting's scale: ERM epochs, the most training images of a dataset (digits drawn from MNIST, and
#: :func:`xai_robust.data.load`'s default ``n``), and the largest image side of the real image datasets
SMOKE = dict(epochs=1, n_train=64, size=48)


def smoke() -> bool:
    """Is the smoke setting on? ``$XAI_ROBUST_SMOKE`` set to ``1``/``true``/``yes``/``on`` (any case); unset,
    empty, ``0``/``false``/``no``/``off``: off. Any other value raises (a typo must not run the full scale)."""
    value = os.environ.get(SMOKE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"${SMOKE_ENV} must be 1 (on) or 0 (off), got {os.environ[SMOKE_ENV]!r}")


_SUBSETTABLE = ("colored_digits", "biased_digits", "parity_digits", "spurious_scenes")  # datasets taking ``n=``


def _smoke_recipe(name: str, recipe: dict) -> dict:
    """One ERM recipe at smoke scale: 1 epoch, at most ``n_train`` images (the datasets that take ``n=``; a real
    dataset has the images its folder holds), images of at most ``size`` pixels."""
    recipe = dict(recipe, epochs=SMOKE["epochs"])
    data = dict(recipe.get("data", {}))
    if name in _SUBSETTABLE:
        data["n"] = min(data.get("n", SMOKE["n_train"]), SMOKE["n_train"])
    if "size" in data:
        data["size"] = min(data["size"], SMOKE["size"])
    recipe["data"] = data
    return recipe


def profile_settings(profile: str) -> dict:
    """The ERM recipes of a profile (raises a clear error for an unknown profile).

    Under the smoke setting (:func:`smoke`) the ``colab`` and ``paper`` recipes are shrunk: one epoch, at most
    ``SMOKE["n_train"]`` training images (``data["n"]``, for the datasets that take it), a real dataset's image
    side at most ``SMOKE["size"]``; the architecture, ``pretrained`` and the optimiser settings stay. The ``ci``
    recipes never change.

    Returns a copy: changing a recipe in a chapter does not change ``ERM_RECIPES`` for the rest of the session.
    """
    import copy

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    recipes = copy.deepcopy(ERM_RECIPES[profile])
    if profile != "ci" and smoke():
        recipes = {name: _smoke_recipe(name, recipe) for name, recipe in recipes.items()}
    return recipes


def chapter_settings(table: dict, profile: str) -> dict:
    """A chapter's settings for ``profile`` from its table ``{"ci": {...}, "colab": {...}, "paper": {...},
    "smoke": {...}}``: a copy of ``table[profile]``, with ``table["smoke"]`` applied on top (key by key) when the
    smoke setting is on (:func:`smoke`) and the profile is not ``ci``.

    The ``"smoke"`` entry is optional and names only what the chapter must shrink for a smoke run (numbers of
    images, epochs, sizes — settings of the profile, or parameters of the chapter that its settings replace);
    everything else keeps the profile's value, so the smoke run takes the profile's code paths.

    Raises
    ------
    ValueError
        ``profile`` is not one of ``PROFILES`` (``"smoke"`` is not a profile) or not in ``table``.
    """
    import copy

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if profile not in table:
        raise ValueError(f"this chapter has no settings for profile {profile!r}; it has "
                         f"{sorted(set(table) - {'smoke'})}")
    settings = copy.deepcopy(dict(table[profile]))
    if profile != "ci" and smoke():
        settings.update(copy.deepcopy(dict(table.get("smoke") or {})))
    return settings
