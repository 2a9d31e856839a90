"""Grouped (super-pixel) gradients against captum and hand-made partitions (chapter 06)."""
import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from xai_robust import attribution, grouped, superpixels

torch.set_num_threads(1)


def tiny_model(seed=0, bn=True):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
               nn.Linear(16, 3)]
    model = nn.Sequential(*layers).double()
    if bn:  # non-trivial running statistics, so eval and train mode differ
        model.train()
        with torch.no_grad():
            model(torch.rand(8, 3, 12, 12, dtype=torch.float64))
    return model.eval()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 12, 12, generator=g, dtype=torch.float64)
    seg = superpixels.segment(x.float(), "felzenszwalb", scale=5.0, min_size=3, cache=False)
    return x, seg


def state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules()])


def assert_untouched(model, before):
    after = state(model)
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k]), k
    assert before[1:] == after[1:]


def per_segment_mean_loop(attr, seg):
    """Reference: the mean over each segment, one segment at a time."""
    out = torch.empty_like(attr)
    for n in range(attr.shape[0]):
        for s in seg[n].unique():
            m = seg[n] == s
            for c in range(attr.shape[1]):
                out[n, c][m] = attr[n, c][m].mean()
    return out


def test_grouped_gradient_equals_segment_mean_of_captum_saliency(batch):
    x, seg = batch
    model = tiny_model()
    target = torch.tensor([0, 1, 2, 1])
    ref = Saliency(model).attribute(x, target=target, abs=False)
    got = grouped.grouped_gradient(model, x, target, segments=seg)
    torch.testing.assert_close(got, per_segment_mean_loop(ref, seg))
    # predicted class by default
    pred = model(x).argmax(1)
    torch.testing.assert_close(grouped.grouped_gradient(model, x, segments=seg),
                               per_segment_mean_loop(Saliency(model).attribute(x, target=pred, abs=False), seg))


def test_indicator_gradient_definition(batch):
    """Eq. 3 as written: A^T grad_g f(x + A W g) at g = 0 equals the grouped gradient."""
    x, seg = batch
    model = tiny_model()
    n = 1
    k = int(seg[n].max()) + 1
    onehot = torch.nn.functional.one_hot(seg[n].reshape(-1), k).double()  # A: [HW, p]
    weights = 1.0 / onehot.sum(0)  # W
    g = torch.zeros(3, k, dtype=torch.float64, requires_grad=True)  # one indicator per channel and group
    shift = (g * weights) @ onehot.T  # [C, HW]
    out = model(x[n:n + 1] + shift.view(1, 3, 12, 12))[0, 2]
    (dg,) = torch.autograd.grad(out, g)
    expected = (dg @ onehot.T).view(3, 12, 12)
    torch.testing.assert_close(grouped.grouped_gradient(model, x[n:n + 1], 2, segments=seg[n:n + 1])[0], expected)


def test_single_segment_and_pixel_segments(batch):
    x, _ = batch
    model = tiny_model()
    plain = Saliency(model).attribute(x, target=1, abs=False)
    one = torch.zeros(4, 12, 12, dtype=torch.long)
    got = grouped.grouped_gradient(model, x, 1, segments=one)
    torch.testing.assert_close(got, plain.mean((2, 3), keepdim=True).expand_as(plain))
    pixels = torch.arange(144).view(1, 12, 12).expand(4, -1, -1)
    torch.testing.assert_close(grouped.grouped_gradient(model, x, 1, segments=pixels), plain)


def test_grouped_smoothgrad_zero_noise_equals_gsg(batch):
    x, seg = batch
    model = tiny_model()
    gsg = grouped.grouped_gradient(model, x, segments=seg)
    torch.testing.assert_close(grouped.grouped_smoothgrad(model, x, segments=seg, n_samples=3, noise_level=0.0), gsg)
    noisy = grouped.grouped_smoothgrad(model, x, segments=seg, n_samples=3, noise_level=0.3)
    assert not torch.allclose(noisy, gsg)
    # the noise really is seeded
    torch.testing.assert_close(noisy, grouped.grouped_smoothgrad(model, x, segments=seg, n_samples=3, noise_level=0.3))


def test_smoothgrad_matches_captum_noise_tunnel_on_same_noise(batch):
    """Our SmoothGrad is the mean of captum Saliency over the same noisy inputs."""
    x, _ = batch
    model = tiny_model()
    t = model(x).argmax(1)
    ours = attribution.smoothgrad(model, x, n_samples=4, noise_level=0.2, seed=3, batch_size=5)
    noisy = attribution._noisy_inputs(x, 4, 0.2, 3).view(4, *x.shape)
    ref = torch.stack([Saliency(model).attribute(noisy[i], target=t, abs=False) for i in range(4)]).mean(0)
    torch.testing.assert_close(ours, ref)
    nt = NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=2, stdevs=0.0, target=t,
                                                abs=False)
    torch.testing.assert_close(attribution.smoothgrad(model, x, n_samples=2, noise_level=0.0), nt)


def test_grouped_ig_matches_captum(batch):
    x, seg = batch
    model = tiny_model()
    t = torch.tensor([2, 0, 1, 1])
    ref = IntegratedGradients(model).attribute(x, target=t, n_steps=8, method="riemann_middle")
    ig = attribution.integrated_gradients(model, x, t, n_steps=8, batch_size=7)
    torch.testing.assert_close(ig, ref)
    gig = grouped.grouped_integrated_gradients(model, x, t, segments=seg, n_steps=8)
    torch.testing.assert_close(gig, per_segment_mean_loop(ref, seg))
    # grouping preserves the sum over each segment (so IG's completeness survives)
    torch.testing.assert_close(gig.sum((1, 2, 3)), ref.sum((1, 2, 3)))


def test_segment_average_of_any_captum_attribution(batch):
    x, seg = batch
    model = tiny_model()
    attribute = IntegratedGradients(model).attribute
    got = grouped.grouped_attribution(attribute, x, seg, target=1, n_steps=4)
    torch.testing.assert_close(got, per_segment_mean_loop(attribute(x, target=1, n_steps=4), seg))
    maps = grouped.saliency_map(got)
    assert maps.shape == (4, 12, 12)
    torch.testing.assert_close(superpixels.superpixelify(maps, seg), maps)  # already constant per segment


def test_probability_output():
    model = tiny_model()
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    seg = superpixels.segment(x.float(), "squares", patch_size=4)
    prob_model = nn.Sequential(model, nn.Softmax(1))
    ref = per_segment_mean_loop(Saliency(prob_model).attribute(x, target=0, abs=False), seg)
    torch.testing.assert_close(grouped.grouped_gradient(model, x, 0, segments=seg, output="probability"), ref)


def test_model_left_untouched_even_on_error(batch):
    x, seg = batch
    model = tiny_model().train()
    model[0].weight.requires_grad_(False)
    before = state(model)
    grouped.grouped_gradient(model, x, segments=seg)
    grouped.grouped_smoothgrad(model, x, segments=seg, n_samples=2)
    grouped.grouped_integrated_gradients(model, x, segments=seg, n_steps=2)
    assert_untouched(model, before)
    with pytest.raises(ValueError, match="target"):
        grouped.grouped_gradient(model, x, segments=seg, target=7)
    assert_untouched(model, before)
    # eval-mode explanation: train mode would use batch statistics
    eval_ref = grouped.grouped_gradient(tiny_model().eval(), x, seg)
    torch.testing.assert_close(grouped.grouped_gradient(model, x, segments=seg), eval_ref)


def test_bad_inputs(batch):
    x, seg = batch
    model = tiny_model()
    with pytest.raises(ValueError, match="segments"):
        grouped.grouped_gradient(model, x, segments=seg[:2])
    with pytest.raises(TypeError, match="segments"):
        grouped.grouped_gradient(model, x, segments=seg.float())
    with pytest.raises(ValueError, match="x must have shape"):
        grouped.grouped_gradient(model, x[0], segments=seg[0])
    with pytest.raises(ValueError, match="output"):
        grouped.grouped_gradient(model, x, segments=seg, output="softmax")
    with pytest.raises(ValueError, match="reduction"):
        grouped.saliency_map(x, "mean")
    with pytest.raises(ValueError, match="n_steps"):
        attribution.integrated_gradients(model, x, n_steps=0)


# --------------------------------------------------------------------------------------------- the API boundary
class Trip(nn.Module):
    """Identity, or a RuntimeError in the middle of the forward pass once armed."""

    def __init__(self):
        super().__init__()
        self.armed = False

    def forward(self, x):
        if self.armed:
            raise RuntimeError("tripped mid-forward")
        return x


class Probe(nn.Module):
    """``tiny_model`` (float64) with a trip wire after its BatchNorm, counting forward passes and mode switches:
    a bad call must raise before either."""

    def __init__(self):
        super().__init__()
        inner = tiny_model()
        self.net = nn.Sequential(inner[0], inner[1], Trip(), *inner[2:])
        self.forwards = 0
        self.mode_calls = 0

    def forward(self, x):
        self.forwards += 1
        return self.net(x)

    def train(self, mode=True):
        self.mode_calls += 1
        return super().train(mode)


def mixed_mode_probe():
    """BatchNorm in eval, every other submodule in train, one parameter frozen."""
    model = Probe()
    model.train()
    model.net[1].eval()
    model.net[0].weight.requires_grad_(False)
    model.forwards = model.mode_calls = 0
    return model


EXPLANATIONS = {
    "grouped_gradient": lambda m, x, seg, t=None: grouped.grouped_gradient(m, x, t, segments=seg),
    "grouped_gradient_probability": lambda m, x, seg, t=None: grouped.grouped_gradient(m, x, t, segments=seg,
                                                                                       output="probability"),
    "grouped_smoothgrad": lambda m, x, seg, t=None: grouped.grouped_smoothgrad(m, x, t, segments=seg, n_samples=2),
    "grouped_integrated_gradients": lambda m, x, seg, t=None: grouped.grouped_integrated_gradients(m, x, t,
                                                                                                   segments=seg,
                                                                                                   n_steps=2),
    "smoothgrad": lambda m, x, seg, t=None: attribution.smoothgrad(m, x, t, n_samples=2, batch_size=3),
    "integrated_gradients": lambda m, x, seg, t=None: attribution.integrated_gradients(m, x, t, n_steps=3,
                                                                                       batch_size=5),
    "grouped_attribution": lambda m, x, seg, t=None: grouped.grouped_attribution(
        lambda xx, **kw: attribution.integrated_gradients(m, xx, **kw), x, seg, target=t, n_steps=2),
}


@pytest.mark.parametrize("name", list(EXPLANATIONS))
def test_mixed_mode_model_restored_per_submodule_even_when_raising_mid_forward(batch, name):
    x, seg = batch
    model = mixed_mode_probe()
    before = state(model)
    explain = EXPLANATIONS[name]
    explain(model, x, seg)
    assert_untouched(model, before)
    assert model.net[1].training is False and model.net[2].training is True
    model.net[2].armed = True  # raises after the BatchNorm ran, with every submodule switched to eval
    with pytest.raises(RuntimeError, match="tripped"):
        explain(model, x, seg)
    assert_untouched(model, before)
    model.net[2].armed = False
    with pytest.raises(ValueError, match="target"):  # beyond the 3 outputs: known only once the logits exist
        explain(model, x, seg, 5)
    assert_untouched(model, before)
    calls = model.forwards, model.mode_calls
    with pytest.raises(ValueError, match="target"):  # negative: refused before the model runs
        explain(model, x, seg, -1)
    with pytest.raises(TypeError, match="x has dtype torch.float32"):
        explain(model, x.float(), seg)
    assert (model.forwards, model.mode_calls) == calls
    assert_untouched(model, before)


def _bad(t, at, value):
    """A copy of ``t`` with a NaN or inf planted at ``at``."""
    t = t.clone()
    t[at] = value
    return t


G = torch.Generator().manual_seed(5)
X = torch.rand(2, 3, 12, 12, generator=G, dtype=torch.float64)
SEG = superpixels.square_partition(2, 12, 12, patch_size=4)
ATTR = torch.randn(2, 3, 12, 12, generator=G, dtype=torch.float64)

# (category, call(model), error type, pattern naming the argument)
BAD_CALLS = [
    ("non-finite input", lambda m: grouped.grouped_gradient(m, _bad(X, at=(0, 1, 2, 3), value=float("nan")), SEG),
     ValueError, r"x holds NaN or inf"),
    ("non-finite input", lambda m: attribution.smoothgrad(m, _bad(X, at=(1, 0, 0, 0), value=float("inf"))),
     ValueError, r"x holds NaN or inf"),
    ("non-finite input", lambda m: attribution.integrated_gradients(m, _bad(X, at=(1, 2, 5, 5), value=-float("inf"))),
     ValueError, r"x holds NaN or inf"),
    ("non-finite input", lambda m: grouped.segment_average(_bad(ATTR, at=(0, 0, 0, 0), value=float("nan")), SEG),
     ValueError, r"saliency holds NaN or inf"),
    ("non-finite input", lambda m: grouped.saliency_map(_bad(ATTR, at=(0, 0, 0, 0), value=float("inf"))),
     ValueError, r"attribution holds NaN or inf"),
    ("non-finite option", lambda m: attribution.smoothgrad(m, X, noise_level=float("nan")),
     ValueError, r"noise_level must be finite"),
    ("non-finite option", lambda m: grouped.grouped_smoothgrad(m, X, segments=SEG, noise_level=float("inf")),
     ValueError, r"noise_level must be finite"),
    ("non-finite option", lambda m: attribution.integrated_gradients(m, X, baseline=float("nan")),
     ValueError, r"baseline must be finite"),
    ("non-finite option", lambda m: grouped.grouped_integrated_gradients(
        m, X, segments=SEG, baseline=torch.full((1, 3, 12, 12), float("inf"), dtype=torch.float64)),
     ValueError, r"baseline holds NaN or inf"),
    ("bad option", lambda m: attribution.smoothgrad(m, X, noise_level=-0.1), ValueError, r"noise_level must be >= 0"),
    ("bad option", lambda m: attribution.integrated_gradients(m, X, baseline=torch.zeros(3, 5, dtype=torch.float64)),
     ValueError, r"baseline of shape \(3, 5\) does not broadcast"),
    ("bad option", lambda m: grouped.grouped_gradient(m, X, segments=SEG, output="softmax"), ValueError,
     r"output must be"),
    ("bad option", lambda m: grouped.saliency_map(ATTR, "mean"), ValueError, r"reduction must be"),
    ("bad option", lambda m: grouped.saliency_map(ATTR.sum(1), "mean"), ValueError, r"reduction must be"),
    ("uint8", lambda m: grouped.grouped_gradient(m, (X * 255).byte(), SEG), TypeError, r"x\.float\(\) / 255"),
    ("uint8", lambda m: attribution.smoothgrad(m, (X * 255).byte()), TypeError, r"x\.float\(\) / 255"),
    ("uint8", lambda m: grouped.grouped_attribution(lambda x: x, (X * 255).byte(), SEG), TypeError,
     r"x\.float\(\) / 255"),
    ("dtype mismatch", lambda m: grouped.grouped_gradient(m, X.float(), segments=SEG), TypeError,
     r"x has dtype torch\.float32 but the model's parameters are torch\.float64"),
    ("dtype mismatch", lambda m: attribution.integrated_gradients(m, X.float()), TypeError,
     r"x has dtype torch\.float32 but the model's parameters are torch\.float64"),
    ("dtype mismatch", lambda m: grouped.grouped_smoothgrad(m, X.float(), segments=SEG), TypeError,
     r"x has dtype torch\.float32 but the model's parameters are torch\.float64"),
    ("dtype mismatch", lambda m: grouped.grouped_gradient(m, X, segments=SEG.float()), TypeError,
     r"segments must hold integer"),
    ("dtype mismatch", lambda m: grouped.segment_average(ATTR.long(), SEG), TypeError,
     r"saliency must be a floating tensor"),
    ("missing batch dim", lambda m: grouped.grouped_gradient(m, X[0], segments=SEG[0]), ValueError,
     r"x\.unsqueeze\(0\)"),
    ("missing batch dim", lambda m: attribution.integrated_gradients(m, X[0]), ValueError, r"x\.unsqueeze\(0\)"),
    ("missing batch dim", lambda m: grouped.saliency_map(ATTR[0, 0]), ValueError, r"attribution\.unsqueeze\(0\)"),
    ("empty batch", lambda m: grouped.grouped_gradient(m, X[:0], segments=SEG[:0]), ValueError, r"x is an empty batch"),
    ("empty batch", lambda m: attribution.smoothgrad(m, X[:0]), ValueError, r"x is an empty batch"),
    ("empty batch", lambda m: grouped.segment_average(ATTR[:0], SEG[:0]), ValueError, r"saliency is an empty"),
    ("bad count", lambda m: attribution.smoothgrad(m, X, n_samples=0), ValueError, r"n_samples must be an int >= 1"),
    ("bad count", lambda m: attribution.smoothgrad(m, X, n_samples=1.5), TypeError, r"n_samples must be an int"),
    ("bad count", lambda m: grouped.grouped_smoothgrad(m, X, segments=SEG, n_samples=True), TypeError, r"n_samples"),
    ("bad count", lambda m: attribution.smoothgrad(m, X, batch_size=0), ValueError, r"batch_size"),
    ("bad count", lambda m: attribution.smoothgrad(m, X, seed=0.5), TypeError, r"seed"),
    ("bad count", lambda m: attribution.integrated_gradients(m, X, n_steps=0), ValueError, r"n_steps"),
    ("bad count", lambda m: attribution.integrated_gradients(m, X, n_steps=2.0), TypeError, r"n_steps"),
    ("bad count", lambda m: grouped.grouped_integrated_gradients(m, X, segments=SEG, batch_size=1.5), TypeError,
     r"batch_size"),
    ("bad target", lambda m: grouped.grouped_gradient(m, X, -1, segments=SEG), ValueError, r"target holds negative"),
    ("bad target", lambda m: grouped.grouped_gradient(m, X, torch.tensor([0, 1, 2]), segments=SEG), ValueError,
     r"target must have shape \(2,\)"),
    ("bad target", lambda m: attribution.smoothgrad(m, X, torch.tensor([0.0, 1.0])), TypeError,
     r"target must hold integer"),
    ("bad target", lambda m: attribution.integrated_gradients(m, X, True), TypeError, r"target must be .* not a bool"),
    ("bad target", lambda m: grouped.grouped_smoothgrad(m, X, "highest", segments=SEG), ValueError,
     r"target='highest'"),
    ("bad segments", lambda m: grouped.grouped_gradient(m, X, segments=SEG[:1]), ValueError, r"segments has shape"),
    ("bad segments", lambda m: grouped.segment_average(ATTR, -SEG), ValueError, r"segments must hold non-negative"),
    ("not callable", lambda m: grouped.grouped_attribution("ig", X, SEG), TypeError, r"attribute must be a callable"),
    ("not a model", lambda m: grouped.grouped_gradient(lambda x: x, X, segments=SEG), TypeError, r"model must be"),
]


@pytest.mark.parametrize("category, call, error, pattern", BAD_CALLS,
                         ids=[f"{c}-{i}" for i, (c, *_rest) in enumerate(BAD_CALLS)])
def test_bad_input_raises_before_the_model_runs(category, call, error, pattern):
    """Every public function of grouped: a clear error naming the argument, before any forward pass or mode
    switch (so the model is untouched)."""
    model = mixed_mode_probe()
    before = state(model)
    with pytest.raises(error, match=pattern):
        call(model)
    assert (model.forwards, model.mode_calls) == (0, 0), "the check ran after the model was touched"
    assert_untouched(model, before)


def test_target_beyond_the_outputs_names_the_target_and_restores(batch):
    x, seg = batch
    model = mixed_mode_probe()
    before = state(model)
    for call in (lambda: attribution.smoothgrad(model, x, torch.tensor([0, 1, 3, 1]), n_samples=2),
                 lambda: attribution.integrated_gradients(model, x, 3, n_steps=2)):
        with pytest.raises(ValueError, match=r"target holds class indices outside \[0, 2\]"):
            call()
        assert_untouched(model, before)


def test_valid_variants_still_accepted(batch):
    """Targets as a one-element tensor or numpy int, baselines as a list or an image, sparse segment ids."""
    import numpy as np

    x, seg = batch
    model = tiny_model()
    ref = grouped.grouped_gradient(model, x, 1, segments=seg)
    torch.testing.assert_close(grouped.grouped_gradient(model, x, torch.tensor([1]), segments=seg), ref)
    torch.testing.assert_close(grouped.grouped_gradient(model, x, np.int64(1), segments=seg), ref)
    ig = attribution.integrated_gradients(model, x, 1, baseline=0.5, n_steps=3)
    torch.testing.assert_close(attribution.integrated_gradients(model, x, 1, baseline=[0.5], n_steps=3), ig)
    torch.testing.assert_close(
        attribution.integrated_gradients(model, x, 1, baseline=torch.full((1, 3, 1, 1), 0.5), n_steps=3), ig)
    sparse = seg * 10 ** 12  # ids far beyond H*W: compacted, same means, no huge allocation
    torch.testing.assert_close(grouped.segment_average(ATTR[:1].expand(4, -1, -1, -1), sparse),
                               grouped.segment_average(ATTR[:1].expand(4, -1, -1, -1), seg))


def test_older_argument_order_with_segments_third_is_still_accepted(batch):
    x, seg = batch
    model = tiny_model()
    new = grouped.grouped_gradient(model, x, 1, segments=seg)
    torch.testing.assert_close(grouped.grouped_gradient(model, x, seg, 1), new)
    torch.testing.assert_close(grouped.grouped_gradient(model, x, seg),
                               grouped.grouped_gradient(model, x, segments=seg))
    with pytest.raises(TypeError, match="segments="):
        grouped.grouped_gradient(model, x, 1)
    with pytest.raises(TypeError, match="positional"):
        grouped.grouped_gradient(model, x, 1, 2)
