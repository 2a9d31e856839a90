"""profiles: the ERM recipes per profile, the smoke setting ($XAI_ROBUST_SMOKE) and chapter_settings."""
from __future__ import annotations

import copy

import pytest

from xai_robust import data, profiles
from xai_robust.data import fixtures


@pytest.fixture()
def smoke_on(monkeypatch):
    monkeypatch.setenv(profiles.SMOKE_ENV, "1")


@pytest.mark.parametrize(("value", "on"), [("", False), ("0", False), ("off", False), ("False", False),
                                           ("1", True), ("yes", True), (" TRUE ", True), ("on", True)])
def test_smoke_reads_the_environment(monkeypatch, value, on):
    monkeypatch.setenv(profiles.SMOKE_ENV, value)
    assert profiles.smoke() is on


def test_smoke_refuses_a_typo(monkeypatch):
    monkeypatch.delenv(profiles.SMOKE_ENV, raising=False)
    assert profiles.smoke() is False
    monkeypatch.setenv(profiles.SMOKE_ENV, "2")
    with pytest.raises(ValueError, match="XAI_ROBUST_SMOKE must be 1"):
        profiles.smoke()


def test_ci_never_changes(smoke_on):
    before = copy.deepcopy(profiles.ERM_RECIPES)
    assert profiles.profile_settings("ci") == profiles.ERM_RECIPES["ci"]
    table = {"ci": dict(n=5), "colab": dict(n=500), "smoke": dict(n=2)}
    assert profiles.chapter_settings(table, "ci") == {"n": 5}
    assert profiles.ERM_RECIPES == before


def test_smoke_shrinks_the_colab_and_paper_recipes(smoke_on, monkeypatch):
    before = copy.deepcopy(profiles.ERM_RECIPES)
    for profile in ("colab", "paper"):
        small, full = profiles.profile_settings(profile), profiles.ERM_RECIPES[profile]
        assert set(small) == set(full)
        for name, recipe in small.items():
            assert recipe["epochs"] == 1
            for key in ("arch", "pretrained", "model", "lr", "batch_size", "weight_decay"):
                assert recipe.get(key) == full[name].get(key), (profile, name, key)
            if name == "waterbirds":  # a real dataset: its folder's images, at most SMOKE["size"] pixels
                assert recipe["data"] == {"size": profiles.SMOKE["size"]}
            else:
                assert recipe["data"]["n"] == profiles.SMOKE["n_train"] < full[name]["data"]["n"]
    assert profiles.ERM_RECIPES == before
    monkeypatch.setenv(profiles.SMOKE_ENV, "0")
    assert profiles.profile_settings("colab") == profiles.ERM_RECIPES["colab"]


def test_chapter_settings(smoke_on, monkeypatch):
    table = {"ci": dict(n=5, epochs=2), "colab": dict(n=500, epochs=10, sizes=[1, 2]), "smoke": dict(n=8)}
    colab = profiles.chapter_settings(table, "colab")
    assert colab == {"n": 8, "epochs": 10, "sizes": [1, 2]}
    colab["sizes"].append(3)
    assert table["colab"]["sizes"] == [1, 2]  # a copy
    monkeypatch.setenv(profiles.SMOKE_ENV, "0")
    assert profiles.chapter_settings(table, "colab") == table["colab"]
    monkeypatch.setenv(profiles.SMOKE_ENV, "1")
    assert profiles.chapter_settings({"ci": {}, "colab": {"n": 1}}, "colab") == {"n": 1}  # no smoke entry
    assert profiles.chapter_settings({"colab": {"n": 1}, "smoke": {"n_eval": 2}}, "colab") == {"n": 1, "n_eval": 2}
    with pytest.raises(ValueError, match="no settings for profile 'paper'"):
        profiles.chapter_settings(table, "paper")
    with pytest.raises(ValueError, match="profile must be one of"):
        profiles.chapter_settings(table, "smoke")


def test_load_defaults_under_smoke(smoke_on, tmp_path):
    mnist = fixtures.write_mnist(tmp_path / "mnist", n_train=360, n_test=30)
    train = data.load("parity_digits", "train", profile="colab", root=mnist)
    assert len(train) == profiles.SMOKE["n_train"]
    assert len(data.load("biased_digits", "train", profile="paper", root=mnist, n=12)) == 12
    assert len(data.load("parity_digits", "test", profile="colab", root=mnist)) == 30  # every image of the split
    assert len(data.load("parity_digits", "train", seed=0)) == 3000  # ci: unchanged
    wb = fixtures.write_waterbirds(tmp_path / "wb", counts=(4, 4, 4), size=(80, 80))
    side = profiles.SMOKE["size"]
    assert data.load("waterbirds", "test", profile="colab", root=wb).images[0].shape == (3, side, side)
    assert data.load("waterbirds", "test", profile="colab", root=wb, size=32).images[0].shape == (3, 32, 32)


def test_smoke_pretrains_a_toy_backbone(smoke_on, monkeypatch):
    from xai_robust import pretrain

    seen = {}

    def fake(arch, domain, in_channels, seed, model_kwargs, recipe, progress_bar, device):
        seen.update(recipe)
        return pretrain._build_for(arch, domain, in_channels, model_kwargs, seed=seed).state_dict()

    monkeypatch.setattr(pretrain, "_pretrain", fake)
    pretrain.pretrained_backbone("conv2net", "glyphs", in_channels=1)
    assert seen["n"] == profiles.SMOKE["n_train"] and seen["epochs"] == profiles.SMOKE["epochs"]
    assert seen["size"] == pretrain.PRETRAIN_RECIPES["glyphs"]["size"]
