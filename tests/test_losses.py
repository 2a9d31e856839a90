"""ISNet heatmap-loss pieces against values computed by hand from Faster ISNet §II-C…E (chapter 03)."""
import math

import numpy as np
import pytest
import torch

from xai_robust import losses


# --------------------------------------------------------------------------- GWRP
def test_gwrp_hand_values():
    x = torch.tensor([1.0, 3.0, 2.0])
    # sorted (3, 2, 1), weights (1, .5, .25): (3 + 1 + .25) / 1.75
    assert losses.gwrp(x, 0.5).item() == pytest.approx(4.25 / 1.75)
    assert losses.gwrp(x, 0.0).item() == pytest.approx(3.0)  # d = 0 is max pooling
    assert losses.gwrp(x, 1.0).item() == pytest.approx(2.0)  # d = 1 is average pooling


def test_gwrp_last_dimension_and_gradient():
    x = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]], requires_grad=True)
    out = losses.gwrp(x, 0.5)
    assert out.shape == (2,)
    assert out[1].item() == pytest.approx((5 + 0 * 0.5 - 1 * 0.25) / 1.75)
    out.sum().backward()
    # each element's gradient is its rank weight / sum of weights
    assert torch.allclose(x.grad[0], torch.tensor([0.25, 1.0, 0.5]) / 1.75)


def test_gwrp_rejects_bad_d():
    with pytest.raises(ValueError, match="d"):
        losses.gwrp(torch.ones(3), 1.5)
    with pytest.raises(TypeError, match="x"):
        losses.gwrp([1.0, 2.0], 0.5)


# --------------------------------------------------------------------------- masks
def test_resize_masks_any_foreground_counts():
    m = torch.zeros(1, 1, 4, 4)
    m[0, 0, 0, 0] = 1  # one foreground pixel in the top-left 2x2 cell
    r = losses.resize_masks(m, (2, 2))
    assert r.tolist() == [[[[1.0, 0.0], [0.0, 0.0]]]]
    up = losses.resize_masks(r, (4, 4))  # nearest up-sampling for larger heatmaps
    assert up[0, 0, :2, :2].eq(1).all() and up.sum() == 4


# --------------------------------------------------------------------------- background loss
def _hand_background(d, E):
    # heatmap [[2, -1], [0.5, -4]], foreground = top row
    # |heatmap| = [2, 1, 0.5, 4]
    fg_mean = (2.0 + 1.0) / 2                         # step 2
    bg = sorted([0.5 / fg_mean, 4.0 / fg_mean], reverse=True) + [0.0, 0.0]  # step 3 (fg zeroed)
    w = [d ** i for i in range(4)]
    score = sum(v * wi for v, wi in zip(bg, w, strict=True)) / sum(w)  # step 4
    f = score / (score + E)                              # step 5
    return -math.log(1 - f)                              # step 6


def test_background_loss_seven_steps_by_hand():
    h = torch.tensor([[[[2.0, -1.0], [0.5, -4.0]]]])
    m = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    for d, E in [(0.5, 1.0), (0.9, 2.0), (0.0, 1.0)]:
        got = losses.background_loss(h, m, d=d, E=E).item()
        assert got == pytest.approx(_hand_background(d, E), rel=1e-6)


def test_background_loss_means_over_channels_heatmaps_batch():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 2, 2, 5, 5, generator=g)  # N=3 images, K=2 heatmaps, C=2 channels
    m = (torch.rand(3, 1, 5, 5, generator=g) > 0.5).float()
    m[:, :, 0, 0] = 1
    full = losses.background_loss(h, m, d=0.9)
    # the normalisation (step 2) uses all channels of a heatmap, so the pieces are whole heatmaps
    per_heatmap = [losses.background_loss(h[i:i + 1, k], m[i:i + 1], d=0.9) for i in range(3) for k in range(2)]
    assert full.item() == pytest.approx(torch.stack(per_heatmap).mean().item(), rel=1e-6)
    per_image = losses.background_loss(h, m, d=0.9, reduction="none")
    assert per_image.shape == (3,) and per_image.mean().item() == pytest.approx(full.item(), rel=1e-6)


def test_background_loss_mask_resized_to_heatmap():
    h = torch.tensor([[[[2.0, -1.0], [0.5, -4.0]]]])
    m_big = torch.zeros(1, 1, 4, 4)
    m_big[0, 0, 0, 1] = 1
    m_big[0, 0, 1, 3] = 1  # makes the whole top row of the 2x2 grid foreground
    assert losses.background_loss(h, m_big, d=0.5).item() == pytest.approx(_hand_background(0.5, 1.0), rel=1e-6)


def test_background_loss_edge_cases_are_finite():
    h = torch.randn(2, 1, 4, 4, requires_grad=True)
    full = torch.ones(2, 1, 4, 4)
    assert losses.background_loss(h, full).item() == 0.0  # no background, no loss
    zero = torch.zeros(2, 1, 4, 4, requires_grad=True)
    half = torch.zeros(2, 1, 4, 4)
    half[..., :2, :] = 1
    loss = losses.background_loss(zero, half)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(zero.grad).all()
    huge = torch.zeros(1, 1, 4, 4)
    huge[..., 3, 3] = 1e30  # background only: clamp keeps the loss finite
    huge[..., 0, 0] = 1e-30
    one = torch.zeros(1, 1, 4, 4)
    one[..., 0, 0] = 1
    assert math.isfinite(losses.background_loss(huge, one, d=0.0).item())


def test_background_loss_empty_mask():
    h = torch.randn(2, 1, 4, 4)
    m = torch.ones(2, 1, 4, 4)
    m[1] = 0
    with pytest.raises(ValueError, match="no foreground"):
        losses.background_loss(h, m)
    kept = losses.background_loss(h, m, empty="ignore")
    assert kept.item() == pytest.approx(losses.background_loss(h[:1], m[:1]).item())


def test_background_loss_bad_shapes():
    with pytest.raises(ValueError, match="masks"):
        losses.background_loss(torch.randn(2, 1, 4, 4), torch.ones(3, 1, 4, 4))
    with pytest.raises(ValueError, match="heatmaps"):
        losses.background_loss(torch.randn(2, 16), torch.ones(2, 1, 4, 4))
    with pytest.raises(ValueError, match="E"):
        losses.background_loss(torch.randn(2, 1, 4, 4), torch.ones(2, 1, 4, 4), E=0)


# --------------------------------------------------------------------------- foreground loss (Eq. 8)
@pytest.mark.parametrize("s, hybrid, quadratic", [
    (0.5, 0.25, 0.25),        # (C1 - s)^2 / C1^2
    (1.0, 0.0, 0.0),
    (2.0, 0.0, 0.0),          # inside [C1, C2]
    (3.5, 0.25, 0.25),        # (C2 - s)^2 / C1^2
    (4.0, 1.0, 1.0),          # s = C2 + C1: both branches give 1
    (6.0, 3.0, 9.0),          # linear: 1 + s - (C2 + C1)
])
def test_foreground_loss_eq8(s, hybrid, quadratic):
    t = torch.tensor([s])
    assert losses.foreground_loss(t, 1.0, 3.0).item() == pytest.approx(hybrid)
    assert losses.foreground_loss(t, 1.0, 3.0, kind="quadratic").item() == pytest.approx(quadratic)


def test_foreground_loss_scaled_c1_and_mean():
    s = torch.tensor([1.0, 5.0, 30.0])
    # C1 = 2, C2 = 10: (2-1)^2/4 = .25, 0, 1 + 30 - 12 = 19
    assert losses.foreground_loss(s, 2.0, 10.0).item() == pytest.approx((0.25 + 0 + 19) / 3)


def test_foreground_relevance_and_zero_heatmap():
    h = torch.tensor([[[[2.0, -1.0], [0.5, -4.0]]]])
    m = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert losses.foreground_relevance(h, m).tolist() == [[6.0]]
    zero = torch.zeros(1, 1, 2, 2)
    assert losses.foreground_loss(losses.foreground_relevance(zero, m), 1.0, 2.0).item() == 1.0


def test_foreground_loss_bad_range():
    with pytest.raises(ValueError, match="c1"):
        losses.foreground_loss(torch.ones(2), 0.0, 1.0)
    with pytest.raises(ValueError, match="c2"):
        losses.foreground_loss(torch.ones(2), 2.0, 1.0)
    with pytest.raises(ValueError, match="kind"):
        losses.foreground_loss(torch.ones(2), 1.0, 2.0, kind="l1")


# --------------------------------------------------------------------------- L_LRP, L_IS, LDS
def test_lrp_loss_is_weighted_sum():
    h = torch.tensor([[[[2.0, -1.0], [0.5, -4.0]]]])
    m = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    l1 = _hand_background(0.9, 1.0)
    s = 3.0  # |2| + |-1|
    l2 = (2.0 - s) ** 2 / 2.0 ** 2 if s < 2.0 else ((s - 2.5) ** 2 / 4 if s > 2.5 else 0.0)
    got = losses.lrp_loss(h, m, c1=2.0, c2=2.5, d=0.9, w1=1.0, w2=3.0).item()
    assert got == pytest.approx(l1 + 3.0 * l2, rel=1e-6)
    with pytest.raises(ValueError, match="w1"):
        losses.lrp_loss(h, m, c1=1.0, c2=2.0, w1=0.0)


def test_is_loss_eq6():
    assert losses.is_loss(torch.tensor(2.0), torch.tensor(1.0), 0.7).item() == pytest.approx(0.3 * 2 + 0.7 * 1)
    with pytest.raises(ValueError, match="P"):
        losses.is_loss(torch.tensor(2.0), torch.tensor(1.0), 1.2)


def test_deep_supervision_gwrp_over_layers():
    layer = [torch.tensor(0.2), torch.tensor(0.8), torch.tensor(0.5)]
    # sorted (.8, .5, .2), weights (1, .5, .25)
    assert losses.deep_supervision(layer, d=0.5).item() == pytest.approx((0.8 + 0.25 + 0.05) / 1.75)
    with pytest.raises(ValueError, match="layer_losses"):
        losses.deep_supervision([])


# --------------------------------------------------------------------------- relevance range (Eq. 9-10)
def test_relevance_range_hand_values():
    # M = 3, S = sqrt(2.5): C1 = max(0.6, 3 - 3S) = 0.6; C2 = min(15, 3 + 3S)
    c1, c2 = losses.relevance_range(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert c1 == pytest.approx(0.6) and c2 == pytest.approx(3 + 3 * math.sqrt(2.5))
    # M = 10, S = 0.1: C1 = 9.7, C2 = 10.3
    c1, c2 = losses.relevance_range([9.9, 10.0, 10.1])
    assert c1 == pytest.approx(9.7) and c2 == pytest.approx(10.3)
    # M = 10, S = 1000: C1 = max(2, 10 - 3000) = 2; C2 = min(25 * 2, 3010) = 50 (the cap)
    c1, c2 = losses.relevance_range([10.0 - 1000, 10.0 + 1000, 10.0])
    assert c1 == pytest.approx(2.0) and c2 == pytest.approx(50.0)


def test_welford_matches_numpy_in_chunks():
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 3.0, size=1001)
    w = losses.Welford()
    for chunk in np.array_split(values, 17):
        w.update(torch.from_numpy(chunk))
    assert w.count == 1001
    assert w.mean == pytest.approx(values.mean(), rel=1e-12)
    assert w.std == pytest.approx(values.std(ddof=1), rel=1e-10)
    # one-by-one (the textbook recurrence) gives the same
    w1 = losses.Welford()
    for v in values[:50]:
        w1.update(float(v))
    assert w1.std == pytest.approx(values[:50].std(ddof=1), rel=1e-10)
    assert losses.relevance_range(w) == losses.relevance_range(torch.from_numpy(values))


def test_relevance_range_errors():
    with pytest.raises(ValueError, match="at least 2"):
        losses.relevance_range([1.0])
    with pytest.raises(ValueError, match="all zero"):
        losses.relevance_range([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        losses.Welford().update(torch.tensor([1.0, float("nan")]))
