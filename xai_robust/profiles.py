"""Run profiles: ``ci`` (offline synthetic data, 2 CPU cores, minutes), ``colab`` (a T4-class GPU, the real
datasets, under 30 minutes), ``paper`` (the papers' settings). Chapters read their defaults from here.
"""
from __future__ import annotations

__all__ = ["PROFILES", "profile_settings", "REAL_DATASET", "ERM_RECIPES"]

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


def profile_settings(profile: str) -> dict:
    """The ERM recipes of a profile (raises a clear error for an unknown profile).

    Returns a copy: changing a recipe in a chapter does not change ``ERM_RECIPES`` for the rest of the session.
    """
    import copy

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return copy.deepcopy(ERM_RECIPES[profile])
