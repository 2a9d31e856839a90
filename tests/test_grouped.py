"""Grouped (super-pixel) gradients against captum and hand-made partitions (chapter 06)."""
import pytest
import torch
from torch import nn

from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

from xai_robust import grouped, superpixels

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
    got = grouped.grouped_gradient(model, x, seg, target)
    torch.testing.assert_close(got, per_segment_mean_loop(ref, seg))
    # predicted class by default
    pred = model(x).argmax(1)
    torch.testing.assert_close(grouped.grouped_gradient(model, x, seg),
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
    torch.testing.assert_close(grouped.grouped_gradient(model, x[n:n + 1], seg[n:n + 1], 2)[0], expected)


def test_single_segment_and_pixel_segments(batch):
    x, _ = batch
    model = tiny_model()
    plain = Saliency(model).attribute(x, target=1, abs=False)
    one = torch.zeros(4, 12, 12, dtype=torch.long)
    got = grouped.grouped_gradient(model, x, one, 1)
    torch.testing.assert_close(got, plain.mean((2, 3), keepdim=True).expand_as(plain))
    pixels = torch.arange(144).view(1, 12, 12).expand(4, -1, -1)
    torch.testing.assert_close(grouped.grouped_gradient(model, x, pixels, 1), plain)


def test_grouped_smoothgrad_zero_noise_equals_gsg(batch):
    x, seg = batch
    model = tiny_model()
    gsg = grouped.grouped_gradient(model, x, seg)
    torch.testing.assert_close(grouped.grouped_smoothgrad(model, x, seg, n_samples=3, noise_level=0.0), gsg)
    noisy = grouped.grouped_smoothgrad(model, x, seg, n_samples=3, noise_level=0.3)
    assert not torch.allclose(noisy, gsg)
    # the noise really is seeded
    torch.testing.assert_close(noisy, grouped.grouped_smoothgrad(model, x, seg, n_samples=3, noise_level=0.3))


def test_smoothgrad_matches_captum_noise_tunnel_on_same_noise(batch):
    """Our SmoothGrad is the mean of captum Saliency over the same noisy inputs."""
    x, _ = batch
    model = tiny_model()
    t = model(x).argmax(1)
    ours = grouped.smoothgrad(model, x, n_samples=4, noise_level=0.2, seed=3, batch_size=5)
    noisy = grouped._noisy_inputs(x, 4, 0.2, 3).view(4, *x.shape)
    ref = torch.stack([Saliency(model).attribute(noisy[i], target=t, abs=False) for i in range(4)]).mean(0)
    torch.testing.assert_close(ours, ref)
    nt = NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=2, stdevs=0.0, target=t,
                                                abs=False)
    torch.testing.assert_close(grouped.smoothgrad(model, x, n_samples=2, noise_level=0.0), nt)


def test_grouped_ig_matches_captum(batch):
    x, seg = batch
    model = tiny_model()
    t = torch.tensor([2, 0, 1, 1])
    ref = IntegratedGradients(model).attribute(x, target=t, n_steps=8, method="riemann_middle")
    ig = grouped.integrated_gradients(model, x, t, n_steps=8, batch_size=7)
    torch.testing.assert_close(ig, ref)
    gig = grouped.grouped_integrated_gradients(model, x, seg, t, n_steps=8)
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
    torch.testing.assert_close(grouped.grouped_gradient(model, x, seg, 0, output="probability"), ref)


def test_model_left_untouched_even_on_error(batch):
    x, seg = batch
    model = tiny_model().train()
    model[0].weight.requires_grad_(False)
    before = state(model)
    grouped.grouped_gradient(model, x, seg)
    grouped.grouped_smoothgrad(model, x, seg, n_samples=2)
    grouped.grouped_integrated_gradients(model, x, seg, n_steps=2)
    assert_untouched(model, before)
    with pytest.raises(ValueError, match="target"):
        grouped.grouped_gradient(model, x, seg, target=7)
    assert_untouched(model, before)
    # eval-mode explanation: train mode would use batch statistics
    eval_ref = grouped.grouped_gradient(tiny_model().eval(), x, seg)
    torch.testing.assert_close(grouped.grouped_gradient(model, x, seg), eval_ref)


def test_bad_inputs(batch):
    x, seg = batch
    model = tiny_model()
    with pytest.raises(ValueError, match="segments"):
        grouped.grouped_gradient(model, x, seg[:2])
    with pytest.raises(TypeError, match="segments"):
        grouped.grouped_gradient(model, x, seg.float())
    with pytest.raises(ValueError, match="x must have shape"):
        grouped.grouped_gradient(model, x[0], seg[0])
    with pytest.raises(ValueError, match="output"):
        grouped.grouped_gradient(model, x, seg, output="softmax")
    with pytest.raises(ValueError, match="reduction"):
        grouped.saliency_map(x, "mean")
    with pytest.raises(ValueError, match="n_steps"):
        grouped.integrated_gradients(model, x, n_steps=0)
