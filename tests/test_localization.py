"""Tests of the localisation / perturbation metrics (xai_robust.metrics.localization; chapter 07)."""
import numpy as np
import pytest
import torch
from torch import nn

from xai_robust.metrics import localization as loc

torch.set_num_threads(1)


class PixelLinear(nn.Module):
    """f_0(x) = Σ_p w_p x_p on a 1-channel image, f_1 = −f_0: every pixel's contribution is w_p x_p."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float32).flatten())

    def forward(self, x):
        s = (x.flatten(1) * self.w).sum(1)
        return torch.stack([s, -s], 1)


# --------------------------------------------------------------------------------------------- boxes / IoU
def test_box_iou_hand_values():
    assert loc.box_iou([0, 0, 9, 9], [0, 0, 9, 9])[0, 0] == 1.0
    assert loc.box_iou([0, 0, 1, 1], [5, 5, 6, 6])[0, 0] == 0.0
    # +1 convention: 2×2 boxes overlapping in one pixel → 1 / (4 + 4 − 1)
    assert loc.box_iou([0, 0, 1, 1], [1, 1, 2, 2])[0, 0] == pytest.approx(1 / 7)


def test_map_boxes_all_contours_wsol_convention():
    m = np.zeros((20, 30))
    m[2:5, 3:8] = 1.0  # rows 2..4, cols 3..7
    m[10:19, 20:30] = 0.6  # touches the right border
    boxes = loc.map_boxes(m, 0.5)
    got = sorted(map(tuple, boxes.tolist()))
    # x1 = x + w (exclusive end), clipped to W − 1, as cv2.boundingRect in wsolevaluation
    assert got == [(3, 2, 8, 5), (20, 10, 29, 19)]
    assert sorted(map(tuple, loc.map_boxes(m, 0.7).tolist())) == [(3, 2, 8, 5)]
    assert loc.map_boxes(np.zeros((5, 5)), 0.5).tolist() == [[0, 0, 0, 0]]


def test_max_box_acc_v2_hand_cases():
    mask = torch.zeros(3, 1, 40, 40)
    mask[:, :, 10:30, 10:30] = 1
    maps = torch.zeros(3, 40, 40)
    maps[0, 10:30, 10:30] = 1.0  # perfect: IoU 1
    maps[1, 10:30, 10:20] = 1.0  # left half: IoU = 11·21 / 21·21 = 0.524
    maps[2, 0:5, 0:5] = 1.0  # wrong place: IoU 0
    res = loc.max_box_acc_v2(maps, mask)
    assert res["iou@30"] == pytest.approx(2 / 3)
    assert res["iou@50"] == pytest.approx(2 / 3)
    assert res["iou@70"] == pytest.approx(1 / 3)
    assert res["maxboxacc_v2"] == pytest.approx(5 / 9)
    # the same result from explicit boxes
    gt = [np.array([[10, 10, 30, 30]])] * 3
    assert loc.max_box_acc_v2(maps, gt_boxes=gt) == res


def test_max_box_acc_v2_uses_one_threshold_for_the_dataset():
    # image 0 is localised only at high thresholds, image 1 only at low ones: no single τ serves both
    mask = torch.zeros(2, 40, 40)
    mask[:, 10:30, 10:30] = 1
    maps = torch.zeros(2, 40, 40)
    maps[0] = 0.5  # background at half height ...
    maps[0, 0, 0] = 0.0  # (one pixel at 0 so that min-max normalisation keeps the background at 0.5)
    maps[0, 10:30, 10:30] = 1.0  # ... object on top: needs τ ≥ 0.5
    maps[1, 10:30, 10:30] = 0.2  # object weak ...
    maps[1, 0:3, 0:3] = 1.0  # ... and a small hot spot elsewhere: needs τ < 0.2
    res = loc.max_box_acc_v2(maps, mask)
    assert res["iou@70"] == pytest.approx(0.5)
    per_image = [loc.max_box_acc_v2(maps[i:i + 1], mask[i:i + 1])["iou@70"] for i in range(2)]
    assert per_image == [1.0, 1.0]


def test_max_box_acc_v2_errors():
    with pytest.raises(ValueError, match="exactly one"):
        loc.max_box_acc_v2(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="empty foreground"):
        loc.max_box_acc_v2(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))


# --------------------------------------------------------------------------------------------- LeRF / MoRF
def test_lerf_morf_hand_computed():
    # contributions 1, 2, 3, 4 (pixels in scrambled order) → f = 10
    w = torch.tensor([[3.0, 1.0], [4.0, 2.0]])
    model = PixelLinear(w)
    x = torch.ones(1, 1, 2, 2)
    sal = (w * x[0, 0])[None]
    f, lerf = loc.lerf_curve(model, x, sal, 0, steps=4)
    torch.testing.assert_close(f, torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    torch.testing.assert_close(lerf[0], torch.tensor([1.0, 0.9, 0.7, 0.4, 0.0], dtype=torch.float64))
    assert loc.curve_auc(f, lerf)[0].item() == pytest.approx(0.625)
    f, morf = loc.morf_curve(model, x, sal, 0, steps=4)
    torch.testing.assert_close(morf[0], torch.tensor([1.0, 0.6, 0.3, 0.1, 0.0], dtype=torch.float64))
    assert loc.curve_auc(f, morf)[0].item() == pytest.approx(0.375)
    # unscaled curve is the raw logit
    _, raw = loc.lerf_curve(model, x, sal, 0, steps=4, scale=False)
    torch.testing.assert_close(raw[0], torch.tensor([10.0, 9, 7, 4, 0], dtype=torch.float64))


def test_greedy_lerf_on_additive_model_is_optimal():
    torch.manual_seed(0)
    w = torch.randn(6, 6) + 0.5
    model = PixelLinear(w)
    x = torch.rand(1, 1, 6, 6)
    assert (w * x).sum() > 0  # the scaled curve assumes the score drops from the image to the baseline
    segments = torch.div(torch.arange(36), 9, rounding_mode="floor").reshape(1, 6, 6)
    res = loc.greedy_lerf(model, x, segments, 0)
    contrib = torch.stack([(w * x[0, 0])[segments[0] == s].sum() for s in range(4)])
    # for an additive score the greedy choice removes the smallest contribution first
    expected_order = torch.argsort(contrib)
    removal_step = torch.stack([res["order_map"][0][segments[0] == s][0] for s in range(4)])
    assert torch.equal(torch.argsort(removal_step), expected_order)
    # and equals the LeRF AUC of the exact segment contributions, which no other ordering beats
    sal = contrib[segments[0]][None]
    f, c = loc.lerf_curve(model, x, sal, 0, steps=4)
    assert res["auc"][0].item() == pytest.approx(loc.curve_auc(f, c)[0].item())
    f2, c2 = loc.lerf_curve(model, x, -sal, 0, steps=4)  # worst ordering
    assert res["auc"][0] > loc.curve_auc(f2, c2)[0]
    assert res["curves"][0][0] == 1.0 and res["curves"][0][-1] == 0.0


def test_curves_leave_model_untouched():
    model = PixelLinear(torch.ones(3, 3)).train()
    x = torch.rand(2, 1, 3, 3)
    before = [p.clone() for p in model.parameters()]
    loc.lerf_curve(model, x, torch.rand(2, 3, 3))
    loc.greedy_lerf(model, x, torch.zeros(2, 3, 3, dtype=torch.long) + torch.arange(3)[None, :, None])
    assert model.training and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(ValueError, match="saliency"):
        loc.lerf_curve(model, x, torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="order"):
        loc.relevance_curve(model, x, torch.rand(2, 3, 3), order="random")


def test_relevance_share_hand_computed():
    # one image, two channels: |h| totals 1+2+3+4 (ch 0) + 2 (ch 1) = 12; the region holds the right column
    h = torch.tensor([[[[1.0, -2.0], [3.0, -4.0]], [[0.0, 2.0], [0.0, 0.0]]]])
    region = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    assert loc.relevance_share(h, region).item() == pytest.approx((2 + 4 + 2) / 12)
    # positive relevance only: 1 + 3 + 2 = 6, inside: 2
    assert loc.relevance_share(h, region, part="positive").item() == pytest.approx(2 / 6)
    # channel-summed maps (N, H, W) with (N, 1, H, W) masks, and an all-zero map
    maps = torch.stack([h.sum(1)[0], torch.zeros(2, 2)])
    masks = region.expand(2, 1, 2, 2)
    got = loc.relevance_share(maps, masks)
    assert got[0].item() == pytest.approx((0 + 4) / (1 + 0 + 3 + 4)) and got[1].item() == 0.0
    with pytest.raises(ValueError, match="part"):
        loc.relevance_share(h, region, part="negative")
    with pytest.raises(ValueError, match="broadcast"):
        loc.relevance_share(h, torch.ones(1, 1, 3, 3))
