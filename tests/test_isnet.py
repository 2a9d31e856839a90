"""ISNet variants explain what Faster ISNet says they explain; the loss and training loop (chapter 03).

References: captum's InputXGradient (LRP-ε with ε → 0 through a ReLU network is Gradient×Input of the
explained quantity, Faster ISNet App. A), hand-computed losses from :mod:`xai_robust.losses`.
"""
import math

import pytest
import torch
from torch import nn

from xai_robust import isnet, losses

torch.set_num_threads(1)


def tiny_cnn(k=3, bn=False, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, k)]
    return nn.Sequential(*layers)


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    masks = torch.zeros(n, 1, 8, 8)
    masks[:, :, 2:7, 2:7] = 1
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y, masks


def lrp_module():
    return pytest.importorskip("xai_robust.lrp", reason="xai_robust.lrp (LRP-Flex) is not available yet")


def input_x_gradient(forward, x):
    captum = pytest.importorskip("captum.attr")
    return captum.InputXGradient(forward).attribute(x.clone().requires_grad_(True), target=0)


# --------------------------------------------------------------------------- Stochastic ISNet's draw
def test_stochastic_targets_follow_the_papers_rule():
    g = torch.Generator().manual_seed(0)
    n, k = 20000, 5
    logits = torch.randn(n, k, generator=torch.Generator().manual_seed(1))
    t = isnet.stochastic_targets(logits, torch.Generator().manual_seed(2))
    top = logits.argmax(1)
    frac_top = (t == top).float().mean().item()
    sigma = math.sqrt(0.25 / n)
    assert abs(frac_top - 0.5) < 5 * sigma, frac_top  # max logit with probability 1/2 (not 5/11)
    # the other half is uniform over the K-1 non-top classes: rank of the chosen class among the others
    others = t[t != top]
    rank = (logits[t != top] > logits[t != top].gather(1, others[:, None])).sum(1)  # 1..K-1
    counts = torch.bincount(rank, minlength=k)[1:].float() / (t != top).sum()
    assert torch.allclose(counts, torch.full((k - 1,), 1 / (k - 1)), atol=0.02), counts
    assert t.min() >= 0 and t.max() < k
    assert torch.equal(isnet.stochastic_targets(logits[:, :1], g), torch.zeros(n, dtype=torch.long))


# --------------------------------------------------------------------------- each variant's heatmaps
def test_selective_explains_eta_of_lowest_logit():
    lrp = lrp_module()
    model = tiny_cnn().double().eval()
    x, _, _ = batch()
    x = x.double()
    maps = isnet.isnet_heatmaps(model, x, variant="selective", mu=0.01)
    assert maps["input"].shape == (6, 1, 1, 8, 8)
    lowest = model(x).argmin(1)
    direct = lrp.lrp_flex(model, x, lowest, quantity="eta", mu=0.01)
    assert torch.allclose(maps["input"][:, 0], direct, atol=1e-10)
    direct_word = lrp.lrp_flex(model, x, "lowest", quantity="eta", mu=0.01)
    assert torch.allclose(maps["input"][:, 0], direct_word, atol=1e-10)
    # with ε → 0 LRP-ε is Gradient×Input of η̃_c (Faster ISNet §II-G, App. A): check with captum
    tiny = isnet.isnet_heatmaps(model, x, variant="selective", epsilon=1e-9, mu=0.01)["input"][:, 0]

    def eta_lowest(inp):
        p = model(inp).softmax(1).gather(1, lowest[:, None])
        return torch.log(p + 0.01) - torch.log(1 - p + 0.01)
    ref = input_x_gradient(eta_lowest, x)
    assert torch.allclose(tiny, ref, atol=1e-6 * ref.abs().max().item())


def test_original_explains_every_logit():
    lrp_module()
    model = tiny_cnn().double().eval()
    x, _, _ = batch(4)
    x = x.double()
    maps = isnet.isnet_heatmaps(model, x, variant="original", epsilon=1e-9)["input"]
    assert maps.shape == (4, 3, 1, 8, 8)
    for c in range(3):
        ref = input_x_gradient(lambda inp, c=c: model(inp)[:, c:c + 1], x)
        assert torch.allclose(maps[:, c], ref, atol=1e-6 * ref.abs().max().item()), c


def test_stochastic_map_matches_its_draw():
    lrp = lrp_module()
    model = tiny_cnn().double().eval()
    x, _, _ = batch(8)
    x = x.double()
    maps = isnet.isnet_heatmaps(model, x, variant="stochastic", generator=torch.Generator().manual_seed(5))
    t = isnet.stochastic_targets(model(x), torch.Generator().manual_seed(5))
    assert torch.allclose(maps["input"][:, 0], lrp.lrp_flex(model, x, t), atol=1e-10)


def test_dual_makes_joint_epsilon_and_zplus_maps():
    lrp_module()
    model = tiny_cnn().double().eval()
    x, _, _ = batch(4)
    x = x.double()
    maps = isnet.isnet_heatmaps(model, x, variant="dual", epsilon=1e-9)
    assert set(maps) == {"input", "zplus:input"}
    # joint LRP-ε with R_k = z_k for every logit: with ε → 0, Gradient×Input of the sum of the logits
    ref = input_x_gradient(lambda inp: model(inp).sum(1, keepdim=True), x)
    assert torch.allclose(maps["input"][:, 0], ref, atol=1e-6 * ref.abs().max().item())
    # LRP-z+ propagates only positive contributions: non-negative relevance for inputs in [0, 1]
    assert (maps["zplus:input"] >= -1e-12).all() and maps["zplus:input"].abs().sum() > 0


def test_gradxinput_ablation_matches_captum():
    model = tiny_cnn().double().eval()
    x, _, _ = batch(4)
    x = x.double()
    maps = isnet.isnet_heatmaps(model, x, variant="gradxinput")["input"]
    assert maps.shape == (4, 3, 1, 8, 8)
    for c in range(3):
        ref = input_x_gradient(lambda inp, c=c: model(inp).softmax(1)[:, c:c + 1], x)
        assert torch.allclose(maps[:, c], ref, atol=1e-12)


def test_deep_supervision_layers():
    lrp_module()
    model = tiny_cnn().double().eval()
    x, y, m = batch(4)
    x = x.double()
    maps = isnet.isnet_heatmaps(model, x, variant="selective", layers=["2"])
    assert set(maps) == {"input", "2"} and maps["2"].shape == (4, 1, 4, 8, 8)
    ranges = {"input": (1.0, 5.0), "2": (2.0, 8.0)}
    loss, _ = isnet.isnet_loss(model, x, y, m.double(), variant="selective", P=1.0, ranges=ranges,
                               layers=["2"], d_layers=0.5)
    terms = [losses.lrp_loss(maps[k], m.double(), c1=c1, c2=c2) for k, (c1, c2) in ranges.items()]
    assert loss.item() == pytest.approx(losses.gwrp(torch.stack(terms), 0.5).item(), rel=1e-6)


# --------------------------------------------------------------------------- the loss (Eq. 6)
@pytest.mark.parametrize("variant", ["selective", "gradxinput"])
def test_isnet_loss_is_eq6(variant):
    if variant != "gradxinput":
        lrp_module()
    model = tiny_cnn().double().eval()
    x, y, m = batch()
    x, m = x.double(), m.double()
    loss, logits = isnet.isnet_loss(model, x, y, m, variant=variant, P=0.7, ranges=(1.0, 4.0), d=0.9)
    ce = nn.functional.cross_entropy(model(x), y)
    h = isnet.isnet_heatmaps(model, x, variant=variant)["input"]
    l_lrp = losses.lrp_loss(h, m, c1=1.0, c2=4.0, d=0.9)
    assert loss.item() == pytest.approx((0.3 * ce + 0.7 * l_lrp).item(), rel=1e-6)
    assert torch.allclose(logits, model(x))
    p0, _ = isnet.isnet_loss(model, x, y, m, variant=variant, P=0.0, ranges=(1.0, 4.0))
    assert p0.item() == pytest.approx(ce.item())


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("variant", ["original", "selective", "stochastic", "dual"])
def test_isnet_loss_shares_the_training_forward_pass(bn, variant):
    # LRP-Flex explains the training forward pass itself (Faster ISNet §II-G): one forward per step by default,
    # a second one only for batchnorm="eval" with training-mode BatchNorm
    lrp_module()
    x, y, m = batch()
    expected = {"frozen": 1, "batch": 1, "eval": 2 if bn else 1}
    if variant == "original":  # plus the no-grad pass that reads the number of classes
        expected = {k: v + 1 for k, v in expected.items()}
    # the Dual ISNet's two maps (joint LRP-ε and LRP-z⁺) share that forward pass too (lrp.lrp_flex_maps)
    for mode, n_expected in expected.items():
        model = tiny_cnn(bn=bn).double().train()
        if variant == "dual" and bn and mode == "batch":  # z⁺ folds BatchNorm: it needs constant statistics
            with pytest.raises(ValueError, match="frozen"):
                isnet.isnet_loss(model, x.double(), y, m.double(), variant=variant, P=0.5, ranges=(1.0, 4.0),
                                 batchnorm=mode)
            continue
        calls = []
        model.register_forward_pre_hook(lambda mod, args, calls=calls: calls.append(1))
        loss, logits = isnet.isnet_loss(model, x.double(), y, m.double(), variant=variant, P=0.5,
                                        ranges=(1.0, 4.0), batchnorm=mode, generator=torch.Generator().manual_seed(0))
        assert len(calls) == n_expected, (mode, len(calls))
        with torch.no_grad():
            reference = tiny_cnn(bn=bn).double().train()(x.double())  # fresh copy: the same training forward
        assert torch.allclose(logits, reference, rtol=1e-10)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_isnet_loss_frozen_updates_running_statistics_once():
    lrp_module()
    x, y, m = batch()
    model, plain = tiny_cnn(bn=True).train(), tiny_cnn(bn=True).train()
    isnet.isnet_loss(model, x, y, m, variant="selective", P=0.5, ranges=(1.0, 4.0))
    with torch.no_grad():
        plain(x)  # one ordinary training forward
    assert torch.allclose(model[1].running_mean, plain[1].running_mean)
    assert torch.allclose(model[1].running_var, plain[1].running_var)


def test_isnet_loss_gradients_finite_with_full_and_zero_cases():
    lrp_module()
    model = tiny_cnn()
    x, y, _ = batch()
    full = torch.ones(6, 1, 8, 8)
    loss, _ = isnet.isnet_loss(model, x, y, full, variant="stochastic", P=0.7, ranges=(1.0, 4.0),
                               generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    empty = full.clone()
    empty[0] = 0
    with pytest.raises(ValueError, match="no foreground"):
        isnet.isnet_loss(model, x, y, empty, variant="selective", P=0.7, ranges=(1.0, 4.0))
    loss, _ = isnet.isnet_loss(model, x, y, empty, variant="selective", P=0.7, ranges=(1.0, 4.0), empty="ignore")
    assert torch.isfinite(loss)


def test_isnet_loss_leaves_model_as_found():
    lrp_module()
    model = tiny_cnn(bn=True)
    model.train()
    model[0].weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y, m = batch()
    for variant in ["original", "selective", "dual"]:
        with pytest.raises(ValueError, match="ranges"):
            isnet.isnet_loss(model, x, y, m, variant=variant, P=0.5, ranges={"nope": (1.0, 2.0)})
        isnet.isnet_loss(model, x, y, m, variant=variant, P=0.5, ranges=(1.0, 2.0))
    assert model.training and all(mod.training for mod in model.modules())
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad
    for mod in model.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks and not mod._backward_hooks
    for k, v in model.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, state[k]), k


def test_bad_arguments():
    model = tiny_cnn()
    x, y, m = batch()
    with pytest.raises(ValueError, match="variant"):
        isnet.isnet_loss(model, x, y, m, variant="fast", P=0.5, ranges=(1.0, 2.0))
    with pytest.raises(ValueError, match="masks"):
        isnet.isnet_loss(model, x, y, None, variant="selective", P=0.5, ranges=(1.0, 2.0))
    with pytest.raises(ValueError, match="P"):
        isnet.isnet_loss(model, x, y, m, variant="selective", P=1.5, ranges=(1.0, 2.0))
    with pytest.raises(ValueError, match="layers"):
        isnet.isnet_loss(model, x, y, m, variant="gradxinput", P=0.5, ranges=(1.0, 2.0), layers=["2"])
    with pytest.raises(ValueError, match="ranges"):
        isnet.fit(model, (x, y, m), variant="selective", epochs=1, lr=1e-3, cache=False, progress=False)
    with pytest.raises(ValueError, match="fraction"):
        isnet.warmup(0.7, 1.5)


def test_warmup_schedule():
    s = isnet.warmup(0.8, 0.25)
    assert s(0.0) == 0.0 and s(0.125) == pytest.approx(0.4) and s(0.5) == 0.8


def test_rrr_penalty_matches_captum():
    captum = pytest.importorskip("captum.attr")
    model = tiny_cnn().double()
    x, y, m = batch()
    x, m = x.double(), m.double()
    loss, _, parts = isnet.rrr_loss(model, x, y, m, lam=2.0, return_parts=True)
    grad = captum.Saliency(lambda inp: model(inp).log_softmax(1).sum(1, keepdim=True)).attribute(
        x.clone().requires_grad_(True), target=0, abs=False)
    ref = (((1 - m) * grad) ** 2).flatten(1).sum(1).mean()
    assert parts["rrr"] == pytest.approx(ref.item(), rel=1e-8)
    ce = nn.functional.cross_entropy(model(x), y)
    assert loss.item() == pytest.approx((ce + 2.0 * ref).item(), rel=1e-8)


# --------------------------------------------------------------------------- ranges and training
def test_estimate_ranges_uses_welford_of_totals():
    lrp = lrp_module()
    model = tiny_cnn().eval()
    x, y, m = batch(10)
    ranges, stats = isnet.estimate_ranges(model, (x, y, m), variant="selective", batch_size=4, progress=False,
                                          return_stats=True)
    totals = lrp.lrp_flex(model, x, "lowest", quantity="eta").abs().flatten(1).sum(1)
    assert ranges["input"] == pytest.approx(losses.relevance_range(totals), rel=1e-4)
    assert stats["input"].count == 10


def toy_problem(n=96, seed=0):
    """Two classes told apart by a bar's orientation in the centre; a corner pixel gives the class away."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.1 * torch.rand(n, 1, 8, 8, generator=g)
    for i in range(n):
        off = int(torch.randint(3, 5, (1,), generator=g))
        if y[i] == 0:
            x[i, 0, 2:6, off] = 1.0
        else:
            x[i, 0, off, 2:6] = 1.0
        x[i, 0, 0, 0 if y[i] == 0 else 7] = 1.0  # the shortcut, in the background
    masks = torch.zeros(n, 1, 8, 8)
    masks[:, :, 2:6, 2:6] = 1
    return x, y, masks


def test_training_reduces_background_relevance():
    lrp = lrp_module()
    x, y, m = toy_problem()
    model = tiny_cnn(k=2, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):  # a standard classifier first: it finds the shortcut
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def shares(mdl):
        h = lrp.lrp_flex(mdl.eval(), x, "lowest", quantity="eta").abs()
        return float((h * (1 - m)).sum() / h.sum()), float(h[:, 0, 0, [0, 7]].sum() / h.sum())
    background, shortcut = shares(model)
    ranges = isnet.estimate_ranges(model, (x, y, m), variant="selective", progress=False)
    isnet.fit(model, (x, y, m), variant="selective", epochs=12, lr=3e-3, P=0.9, ranges=ranges, batch_size=32,
              d=0.9, cache=False, progress=False)
    background_after, shortcut_after = shares(model)
    assert background_after < 0.5 * background, (background, background_after)
    assert shortcut_after < 0.3 * shortcut, (shortcut, shortcut_after)  # the corner pixels lose most
    history = model.isnet_history
    assert len(history) == 12 and history[-1]["input"] < 0.5 * history[0]["input"]
    assert history[-1]["acc"] == 1.0


def test_fit_checkpoint_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_ROBUST_CACHE", str(tmp_path))
    x, y, m = toy_problem(32)
    first = isnet.fit(tiny_cnn(k=2), (x, y, m), variant="rrr", epochs=1, lr=1e-2, progress=False)
    files = list((tmp_path / "checkpoints").glob("*.pt"))
    assert len(files) == 1
    again = isnet.fit(tiny_cnn(k=2), (x, y, m), variant="rrr", epochs=1, lr=1e-2, progress=False)
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    files[0].write_bytes(b"corrupt\n" + b"x" * 10)  # a corrupt checkpoint is retrained, not loaded
    third = isnet.fit(tiny_cnn(k=2), (x, y, m), variant="rrr", epochs=1, lr=1e-2, progress=False)
    assert torch.equal(third.state_dict()["0.weight"], first.state_dict()["0.weight"])


def test_step_time_runs_every_variant():
    lrp_module()
    x, y, m = batch(4)
    for variant in ["standard", "selective", "rrr"]:
        t = isnet.step_time(tiny_cnn(), x, y, m, variant=variant, repeats=1)
        assert t > 0
    with pytest.raises(ValueError, match="variant"):
        isnet.step_time(tiny_cnn(), x, y, m, variant="slow")


def test_isnet_heatmaps_leave_batchnorm_statistics_alone():
    lrp_module()
    model = tiny_cnn(bn=True).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, _, _ = batch()
    for variant in ["original", "selective", "stochastic", "dual", "gradxinput"]:
        isnet.isnet_heatmaps(model, x, variant=variant)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_isnet_heatmaps_calling_shape_target_third():
    lrp = lrp_module()
    model = tiny_cnn().double().eval()
    x, _, _ = batch()
    x = x.double()
    lowest = model(x).argmin(1)
    default = isnet.isnet_heatmaps(model, x, variant="selective")["input"]
    torch.testing.assert_close(isnet.isnet_heatmaps(model, x, lowest, variant="selective")["input"], default)
    other = torch.zeros_like(lowest)
    torch.testing.assert_close(isnet.isnet_heatmaps(model, x, other, variant="selective")["input"][:, 0],
                               lrp.lrp_flex(model, x, other, quantity="eta"))
    for variant in ("original", "dual"):
        with pytest.raises(ValueError, match="target=None"):
            isnet.isnet_heatmaps(model, x, other, variant=variant)


def _reference_isnet_loop(model, x, y, m, *, variant, epochs, lr, P, ranges, batch_size, seed, clip_norm=1.0):
    """The ISNet training loop written out (the official code's recipe): constant-lr Adam, clipping at 1, one
    seeded generator for the batch order and the stochastic ISNet's class draws."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=0.0)
    n = len(x)
    total = epochs * ((n + batch_size - 1) // batch_size)
    step = 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            loss, _ = isnet.isnet_loss(model, x[idx], y[idx], m[idx], variant=variant, P=P(step / total),
                                       ranges=ranges, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
            opt.step()
            step += 1
    return model.eval()


@pytest.mark.parametrize("variant", ["selective", "stochastic"])
def test_fit_is_train_fit_with_the_heatmap_loss(variant):
    """isnet.fit runs through train.fit: the weights equal the written-out ISNet loop's, step for step."""
    x, y, m = toy_problem(40)
    P = isnet.warmup(0.7, 0.3)
    kw = dict(variant=variant, epochs=2, lr=3e-3, P=P, ranges=(0.5, 20.0), batch_size=16, seed=3)
    ours = isnet.fit(tiny_cnn(k=2), (x, y, m), cache=False, progress=False, **kw)
    reference = _reference_isnet_loop(tiny_cnn(k=2), x, y, m, **kw)
    for a, b in zip(ours.state_dict().values(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(ours.isnet_history) == 2 and {"loss", "acc", "ce", "lrp"} <= set(ours.isnet_history[0])


def test_fit_with_a_schedule_reuses_its_checkpoint(tmp_path, monkeypatch):
    """A P schedule is keyed by its name and values, not its address: a second, equal schedule hits the cache."""
    monkeypatch.setenv("XAI_ROBUST_CACHE", str(tmp_path))
    x, y, m = toy_problem(32)
    kw = dict(variant="selective", epochs=1, lr=1e-3, ranges=(0.5, 20.0), batch_size=16, progress=False)
    first = isnet.fit(tiny_cnn(k=2), (x, y, m), P=isnet.warmup(0.7, 0.3), **kw)
    again = isnet.fit(tiny_cnn(k=2), (x, y, m), P=isnet.warmup(0.7, 0.3), **kw)
    assert len(list((tmp_path / "checkpoints").glob("*.pt"))) == 1
    assert torch.equal(first.state_dict()["0.weight"], again.state_dict()["0.weight"])
    isnet.fit(tiny_cnn(k=2), (x, y, m), P=isnet.warmup(0.7, 0.5), **kw)  # other values: another checkpoint
    assert len(list((tmp_path / "checkpoints").glob("*.pt"))) == 2
