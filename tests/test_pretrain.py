"""Pretrained backbones: the synthetic corpora, the cached backbone, and loading weights into a model."""
import urllib.error

import pytest
import torch

from xai_robust import models, pretrain, train


def test_shapes_corpus_backgrounds_independent_of_the_class():
    ds = pretrain.shapes_corpus(2000, size=32, seed=3)
    assert ds.images.shape == (2000, 3, 32, 32) and ds.num_classes == 8
    assert set(ds.class_names).isdisjoint({"triangle", "ellipse"})  # never a downstream class
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    # P(water | class) is about 1/2 for every class: no class-background correlation to learn
    for c in range(8):
        share = ds.spurious[ds.labels == c].float().mean().item()
        assert 0.35 < share < 0.65, (c, share)
    # every class is present, and its masks are non-empty objects of a sensible size
    area = ds.masks.flatten(1).mean(1)
    assert torch.bincount(ds.labels, minlength=8).min() > 150
    assert float(area.min()) > 0.02 and float(area.max()) < 0.5


def test_shapes_corpus_differs_by_seed_and_is_cached_identically():
    a, b = pretrain.shapes_corpus(64, size=32, seed=0), pretrain.shapes_corpus(64, size=32, seed=0)
    c = pretrain.shapes_corpus(64, size=32, seed=1)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


def test_glyphs_corpus_colour_independent_of_the_glyph():
    ds = pretrain.glyphs_corpus(3000, size=28, seed=0)
    assert ds.num_classes == 10 and ds.images.shape[1] == 3
    # mean colour of the strokes per glyph: red and green shares do not depend on the class
    fg = ds.images.sum(1, keepdim=True) > 0.3
    for c in range(10):
        imgs, m = ds.images[ds.labels == c], fg[ds.labels == c]
        rgb = torch.stack([(imgs[:, k:k + 1] * m).sum() / m.sum() for k in range(3)])
        assert float(rgb.max() - rgb.min()) < 0.1, (c, rgb)
    gray = pretrain.glyphs_corpus(50, size=28, seed=0, in_channels=1)
    assert gray.images.shape == (50, 1, 28, 28)
    with pytest.raises(ValueError, match="in_channels"):
        pretrain.glyphs_corpus(10, in_channels=2)


def test_pretrained_backbone_cached_and_keyed_by_its_configuration(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_ROBUST_CACHE", str(tmp_path))
    kw = dict(in_channels=3, n=64, epochs=1, progress_bar=False)
    state = pretrain.pretrained_backbone("conv2net", "glyphs", **kw)
    assert "fc.weight" not in state and "conv1.weight" in state
    files = list((tmp_path / "pretrained").glob("*.pt"))
    assert len(files) == 1
    again = pretrain.pretrained_backbone("conv2net", "glyphs", **kw)  # loaded, not retrained
    assert all(torch.equal(state[k], again[k]) for k in state)
    other = pretrain.pretrained_backbone("conv2net", "glyphs", **{**kw, "epochs": 2})
    assert len(list((tmp_path / "pretrained").glob("*.pt"))) == 2
    assert not torch.equal(state["conv1.weight"], other["conv1.weight"])
    # a corrupted file is rebuilt, not returned
    files[0].write_bytes(files[0].read_bytes()[:-10] + b"0123456789")
    rebuilt = pretrain.pretrained_backbone("conv2net", "glyphs", **kw)
    assert torch.equal(rebuilt["conv1.weight"], state["conv1.weight"])
    # the caller's random stream does not depend on whether the backbone was cached
    torch.manual_seed(5)
    pretrain.pretrained_backbone("conv2net", "glyphs", **kw)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))
    head = pretrain.pretrained_backbone("conv2net", "glyphs", with_head=True, **kw)
    assert head["fc.weight"].shape == (10, 128)
    with pytest.raises(TypeError, match="unknown pretraining options"):
        pretrain.pretrained_backbone("conv2net", "glyphs", n_images=5)
    with pytest.raises(ValueError, match="unknown pretraining domain"):
        pretrain.pretrained_backbone("conv2net", "imagenet-21k")


def test_build_pretrained_copies_everything_but_the_head(tmp_path):
    donor = models.build("small_resnet", 8, seed=1, stem_stride=2)
    path = tmp_path / "backbone.pt"
    torch.save(donor.state_dict(), path)
    for pretrained in (path, str(path), donor.state_dict()):
        model = models.build("small_resnet", 2, seed=0, stem_stride=2, pretrained=pretrained)
        own, ref = model.state_dict(), donor.state_dict()
        for k in own:
            if k.startswith("fc."):
                assert own[k].shape != ref[k].shape  # the head keeps its own, fresh initialisation
            else:
                assert torch.equal(own[k], ref[k]), k
    fresh = models.build("small_resnet", 2, seed=0, stem_stride=2)
    loaded = models.build("small_resnet", 2, seed=0, stem_stride=2, pretrained=path)
    assert torch.equal(fresh.fc.weight, loaded.fc.weight)  # same seed, same head


def test_build_pretrained_torchvision_names_and_small_input_stem(tmp_path):
    import torchvision

    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    big = models.build("resnet18", 2, small_input=False, pretrained=path)
    assert torch.equal(big.conv1.weight, tv.conv1.weight) and torch.equal(big.layer4[1].conv2.weight,
                                                                         tv.layer4[1].conv2.weight)
    assert big.fc.weight.shape == (2, 512)
    small = models.build("resnet18", 2, pretrained=path)  # the 3×3 stem does not match ImageNet's 7×7: skipped
    assert small.conv1.weight.shape == (64, 3, 3, 3)
    assert torch.equal(small.layer1[0].conv1.weight, tv.layer1[0].conv1.weight)


def test_build_pretrained_bad_input():
    with pytest.raises(FileNotFoundError, match="neither 'imagenet'"):
        models.build("conv2net", 2, pretrained="/no/such/file.pt")
    with pytest.raises(TypeError, match="pretrained must be"):
        models.build("conv2net", 2, pretrained=3.5)
    with pytest.raises(ValueError, match="no tensor of"):
        models.build("conv2net", 2, pretrained=models.build("small_resnet", 2).state_dict())
    with pytest.raises(ValueError, match="ImageNet weights exist"):
        models.build("conv2net", 2, pretrained="imagenet")


def test_imagenet_weights_offline_error_names_the_file(monkeypatch, tmp_path):
    import torchvision

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(RuntimeError, match=r"resnet50-0676ba61\.pth.*pretrained=<path"):
        models.build("resnet50", 2, small_input=False, pretrained="imagenet")


def test_erm_recipe_pretrained_is_honoured(monkeypatch, tmp_path):
    """train.erm passes the recipe's `pretrained` to models.build instead of dropping it."""
    from xai_robust import profiles

    seen = {}
    real_build = models.build

    def spy(arch, num_classes, **kwargs):
        seen.update(kwargs)
        kwargs.pop("pretrained")
        return real_build(arch, num_classes, **kwargs)

    monkeypatch.setenv("XAI_ROBUST_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "build", spy)
    recipe = dict(arch="conv2net", epochs=0, lr=1e-3, batch_size=64, weight_decay=0.0, pretrained="glyphs",
                  data=dict(n=40))
    monkeypatch.setitem(profiles.ERM_RECIPES["ci"], "colored_digits", recipe)
    train.erm("colored_digits", progress_bar=False)
    assert seen["pretrained"] == "glyphs"
    assert profiles.ERM_RECIPES["colab"]["waterbirds"]["pretrained"] == "imagenet"

