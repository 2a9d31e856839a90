"""Models, training, checkpoint cache, embeddings, Gradient×Input and target resolution."""
import pytest
import torch
from captum.attr import InputXGradient

import xai_robust
from xai_robust import attribution, data, models, train


@pytest.mark.parametrize("arch,channels,size", [("conv2net", 1, 28), ("small_resnet", 3, 32),
                                                ("resnet18", 3, 32)])
def test_build_shapes_and_normalize_first(arch, channels, size):
    model = models.build(arch, 5, in_channels=channels, seed=0).eval()
    assert next(iter(model.children())).__class__ is models.Normalize
    x = torch.rand(2, channels, size, size)
    out = model(x)
    assert out.shape == (2, 5)
    z = models.embed(model, x)
    assert z.shape == (2, models.last_linear(model).in_features)
    assert torch.allclose(models.last_linear(model)(z), out, atol=1e-5)


def test_embed_restores_mode_and_hooks():
    model = models.build("small_resnet", 2, seed=0).train()
    models.embed(model, torch.rand(3, 3, 32, 32))
    assert model.training and all(m.training for m in model.modules())
    assert not models.last_linear(model)._forward_pre_hooks


def test_fit_learns_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_ROBUST_CACHE", str(tmp_path))
    ds = data.load("colored_digits", "train", n=400, correlation=1.0)
    model = models.build("conv2net", 2, seed=1)
    train.fit(model, ds, epochs=3, lr=3e-3, batch_size=64, progress_bar=False)
    assert train.evaluate(model, ds)["accuracy"] > 0.9  # colour predicts the label perfectly here
    files = list((tmp_path / "checkpoints").glob("*.pt"))
    assert len(files) == 1
    again = models.build("conv2net", 2, seed=1)
    train.fit(again, ds, epochs=3, lr=3e-3, batch_size=64, progress_bar=False)  # loaded, not retrained
    assert train.state_digest(again) == train.state_digest(model)
    files[0].write_bytes(files[0].read_bytes()[:-10])  # a truncated checkpoint is not trusted
    third = models.build("conv2net", 2, seed=1)
    train.fit(third, ds, epochs=3, lr=3e-3, batch_size=64, progress_bar=False)
    assert train.state_digest(third) == train.state_digest(model)  # retrained deterministically


def test_fit_options_schedule_clipping_loss_fn_and_history(tmp_path, monkeypatch):
    """schedule, clip_norm, momentum and loss_fn's return forms; the history survives the checkpoint cache."""
    monkeypatch.setenv("XAI_ROBUST_CACHE", str(tmp_path))
    ds = data.load("colored_digits", "train", n=96, correlation=1.0)
    kw = dict(epochs=2, lr=1e-2, batch_size=32, progress_bar=False, optimizer="sgd")
    seen = []

    def loss_fn(model, batch):
        seen.append((batch["progress"], isinstance(batch["generator"], torch.Generator)))
        logits = model(batch["image"])
        return torch.nn.functional.cross_entropy(logits, batch["label"]), logits, {"extra": 1.0}

    model = train.fit(models.build("conv2net", 2, seed=0), ds, schedule="constant", clip_norm=0.5, loss_fn=loss_fn,
                      loss_config={"a": 1}, **kw)
    assert [p for p, _ in seen] == [i / 6 for i in range(6)] and all(g for _, g in seen)
    assert len(model.fit_history) == 2 and set(model.fit_history[0]) == {"loss", "acc", "extra"}
    assert model.fit_history[0]["extra"] == 1.0
    again = train.fit(models.build("conv2net", 2, seed=0), ds, schedule="constant", clip_norm=0.5, loss_fn=loss_fn,
                      loss_config={"a": 1}, **kw)
    assert len(seen) == 6 and again.fit_history == model.fit_history  # loaded with its history
    other = train.fit(models.build("conv2net", 2, seed=0), ds, schedule="constant", clip_norm=0.5, loss_fn=loss_fn,
                      loss_config={"a": 2}, **kw)
    assert len(seen) == 12  # another loss_config is another checkpoint
    assert train.state_digest(other) == train.state_digest(model)  # (the same loss: the same weights)
    # a constant schedule and clipping change the training; the cosine default is the plain recipe
    plain = train.fit(models.build("conv2net", 2, seed=0), ds, **kw)
    assert train.state_digest(plain) != train.state_digest(model)
    assert len(list((tmp_path / "checkpoints").glob("*.pt"))) == 3
    with pytest.raises(ValueError, match="schedule must be"):
        train.fit(models.build("conv2net", 2), ds, schedule="step", **kw)
    with pytest.raises(ValueError, match="clip_norm"):
        train.fit(models.build("conv2net", 2), ds, clip_norm=-1.0, **kw)
    with pytest.raises(TypeError, match="loss_config"):
        train.fit(models.build("conv2net", 2), ds, loss_fn=loss_fn, loss_config=[1], **kw)
    with pytest.raises(TypeError, match="loss_fn must return"):
        train.fit(models.build("conv2net", 2), ds, loss_fn=lambda m, b: 1.0, cache=False, **kw)
    with pytest.raises(FloatingPointError, match="loss became nan"):
        train.fit(models.build("conv2net", 2), ds, loss_fn=lambda m, b: m(b["image"]).sum() * float("nan"),
                  cache=False, **kw)


def test_evaluate_and_embed_on_dataset():
    ds = data.load("parity_digits", "val", n=64)
    model = models.build("conv2net", 2, in_channels=1, seed=0)
    ev = train.evaluate(model, ds)
    assert set(ev) >= {"accuracy", "group_accuracy", "worst_group_accuracy", "pred"}
    assert len(ev["group_accuracy"]) == 10 and ev["pred"].shape == (64,)
    assert train.embed(model, ds).shape == (64, 128)


def test_resolve_target():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, -1.0, 0.0]])
    assert attribution.resolve_target(logits).tolist() == [1, 0]
    assert attribution.resolve_target(logits, "lowest").tolist() == [0, 1]
    assert attribution.resolve_target(logits, 2).tolist() == [2, 2]
    assert attribution.resolve_target(logits, torch.tensor([0, 2])).tolist() == [0, 2]
    with pytest.raises(ValueError, match="outside"):
        attribution.resolve_target(logits, 3)
    with pytest.raises(ValueError, match="2 samples"):
        attribution.resolve_target(logits, [0, 1, 2])
    with pytest.raises(ValueError, match="not understood"):
        attribution.resolve_target(logits, "label")


def test_stochastic_target_follows_the_paper():
    """Max logit with probability 0.5, each other class (1 - 0.5)/(K - 1) (Faster ISNet Sec. II-H)."""
    k, n = 5, 40000
    logits = torch.zeros(n, k)
    logits[:, 2] = 1.0
    t = attribution.resolve_target(logits, "stochastic", torch.Generator().manual_seed(0))
    freq = torch.bincount(t, minlength=k).double() / n
    assert abs(freq[2] - 0.5) < 0.01
    for c in (0, 1, 3, 4):
        assert abs(freq[c] - 0.125) < 0.01


def test_gradient_x_input_matches_captum_and_restores_model():
    model = models.build("small_resnet", 3, seed=0).train()
    x = torch.rand(4, 3, 32, 32)
    ours = attribution.gradient_x_input(model, x, target=torch.tensor([0, 1, 2, 0]))
    assert model.training  # mode restored
    model.eval()
    ref = InputXGradient(model).attribute(x, target=torch.tensor([0, 1, 2, 0]))
    assert torch.allclose(ours, ref, atol=1e-6)
    with pytest.raises(ValueError, match="unsqueeze"):
        attribution.gradient_x_input(model, x[0])


def test_restore_model_after_exception():
    model = models.build("conv2net", 2, seed=0).eval()
    with pytest.raises(ValueError, match="channels"):
        attribution.gradient_x_input(model, torch.rand(1, 1, 28, 28))  # 1 channel into an RGB model
    assert not model.training
    assert all(p.requires_grad for p in model.parameters())


def test_save_results_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_ROBUST_RESULTS", str(tmp_path))
    xai_robust.save_results("00_demo", {"a": 1.5, "b": torch.tensor(2.0), "ok": True})
    assert xai_robust.load_results("00_demo") == {"a": 1.5, "b": 2.0, "ok": 1}
    with pytest.raises(TypeError, match="number"):
        xai_robust.save_results("00_demo", {"a": "high"})


def test_bad_input_at_the_training_and_data_boundary():
    import pytest
    import torch

    from xai_robust import data, lrp, models, train
    from xai_robust.data import SampleDataset

    with pytest.raises(TypeError, match="255"):
        SampleDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), [0, 1], [0, 1], class_names=["a", "b"],
                      group_names=["a", "b"])
    model = models.build("conv2net", 2, in_channels=1, seed=0)
    ds = data.load("colored_digits", "val", n=8)
    with pytest.raises(TypeError, match="255"):
        train.predict(model, (255 * torch.rand(2, 1, 28, 28)).to(torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        train.predict(model, torch.full((2, 1, 28, 28), float("nan")))
    with pytest.raises(ValueError, match="unsqueeze"):
        train.predict(model, torch.rand(1, 28, 28))
    for kw, match in ((dict(epochs=1.5), "epochs"), (dict(epochs=1, batch_size=0), "batch_size"),
                      (dict(epochs=1, sample_weights=torch.full((8,), float("nan"))), "sample_weights")):
        with pytest.raises(ValueError, match=match):
            train.fit(models.build("conv2net", 2, seed=0), ds, cache=False, progress_bar=False, **kw)
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match="epsilon"):
        lrp.lrp_flex(model, x, epsilon=float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        lrp.lrp_flex(model, x * float("inf"))
    for act in (torch.nn.Threshold(0.1, 0.0), torch.nn.Hardshrink(), torch.nn.Softmin(1)):
        with pytest.raises(ValueError, match="ReLU networks only"):
            lrp.lrp_flex(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3), act), x)
