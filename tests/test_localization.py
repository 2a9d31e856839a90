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


# --------------------------------------------------------------------------------------------- contours with holes
def _boxes(binary):
    return sorted(map(tuple, loc._contour_boxes(np.asarray(binary, dtype=bool)).tolist()))


def _ring(side=40, outer=(5, 35), inner=(10, 30)):
    """A square annulus of ones: rows/cols outer[0]..outer[1]-1 minus inner[0]..inner[1]-1."""
    b = np.zeros((side, side), dtype=bool)
    b[outer[0]:outer[1], outer[0]:outer[1]] = True
    b[inner[0]:inner[1], inner[0]:inner[1]] = False
    return b


def _hand_contour_cases():
    corner = np.ones((10, 10), dtype=bool)
    corner[8, 8] = False  # a one-pixel hole next to the bottom-right edge
    diagonal = np.ones((6, 6), dtype=bool)
    diagonal[2, 2] = diagonal[3, 3] = False  # background is 4-connected: two holes
    to_edge = np.ones((5, 5), dtype=bool)
    to_edge[0, 0] = to_edge[1, 1] = False  # (1, 1) meets the outside only diagonally: still a hole
    ring_dot = _ring()
    ring_dot[18:22, 18:22] = True  # a component inside the hole: its own outer contour
    two = np.zeros((12, 12), dtype=bool)
    two[2:10, 2:10] = True
    two[4:8, 4:8] = False
    two[4:8, 5] = True  # a bar splits the hole in two
    # expected boxes: those of cv2.findContours(RETR_TREE) + boundingRect in wsolevaluation's convention
    # (x1 = x + w clipped to W - 1); each hole's box is the hole grown by one pixel
    return [
        ("ring", _ring(), [(5, 5, 35, 35), (9, 9, 31, 31)]),
        ("one-pixel hole at the edge", corner, [(0, 0, 9, 9), (7, 7, 9, 9)]),
        ("diagonal holes", diagonal, [(0, 0, 5, 5), (1, 1, 4, 4), (2, 2, 5, 5)]),
        ("diagonal to the outside", to_edge, [(0, 0, 3, 3), (0, 0, 4, 4)]),
        ("component in a hole", ring_dot, [(5, 5, 35, 35), (9, 9, 31, 31), (18, 18, 22, 22)]),
        ("split hole", two, [(2, 2, 10, 10), (3, 3, 6, 9), (5, 3, 9, 9)]),
        ("empty", np.zeros((5, 5), dtype=bool), [(0, 0, 0, 0)]),
    ]


@pytest.mark.parametrize("name,binary,expected", _hand_contour_cases(), ids=[c[0] for c in _hand_contour_cases()])
def test_contour_boxes_include_hole_contours(name, binary, expected):
    assert _boxes(binary) == sorted(expected)


def test_map_boxes_boxes_the_hole_of_a_ring():
    m = _ring().astype(float)
    assert sorted(map(tuple, loc.map_boxes(m, 0.5).tolist())) == [(5, 5, 35, 35), (9, 9, 31, 31)]
    # ground-truth boxes from masks stay outer boxes: a hole in an object is not an object
    assert loc.mask_boxes(torch.from_numpy(_ring())[None]).__getitem__(0).tolist() == [[5, 5, 35, 35]]


def test_max_box_acc_v2_ring_map_known_answer():
    # the map lights the context around the object (a square ring), the object is the ring's hole.
    # object mask rows/cols 10..29 → box (10, 10, 30, 30), 21 × 21 = 441 pixels in the +1 convention
    # ring outer box (5, 5, 35, 35): IoU 441 / 961 = 0.459 → localised at δ = 0.3 only
    # hole contour box (9, 9, 31, 31): IoU 441 / 529 = 0.834 → localised at every δ
    assert loc.box_iou([9, 9, 31, 31], [10, 10, 30, 30])[0, 0] == pytest.approx(441 / 529)
    assert loc.box_iou([5, 5, 35, 35], [10, 10, 30, 30])[0, 0] == pytest.approx(441 / 961)
    maps = torch.from_numpy(_ring()).double()[None]
    mask = torch.zeros(1, 1, 40, 40)
    mask[..., 10:30, 10:30] = 1
    res = loc.max_box_acc_v2(maps, mask)
    assert (res["iou@30"], res["iou@50"], res["iou@70"], res["maxboxacc_v2"]) == (1.0, 1.0, 1.0, 1.0)
    # outer boxes only (the previous behaviour) would give 1/3
    outer = _outer_only(loc.max_box_acc_v2, maps, mask)
    assert outer["maxboxacc_v2"] == pytest.approx(1 / 3)


def _outer_only(fn, *args, **kwargs):
    """Run ``fn`` with hole contours switched off (the behaviour before hole contours were boxed)."""
    original = loc._contour_boxes
    loc._contour_boxes = lambda binary, holes=True: original(binary, holes=False)
    try:
        return fn(*args, **kwargs)
    finally:
        loc._contour_boxes = original


def _noise_case(seed=0, n=24, side=32):
    """Pure-noise maps (a poor explainer) and objects of random size: holes of the noise get boxed too."""
    rng = np.random.default_rng(seed)
    maps, gts = [], []
    for _ in range(n):
        maps.append(rng.random((side, side)))
        h, w = rng.integers(4, 16, 2)
        y0, x0 = rng.integers(0, side - h), rng.integers(0, side - w)
        gts.append(np.array([[x0, y0, x0 + w, y0 + h]]))
    return torch.from_numpy(np.stack(maps)), gts


def _annulus_case(seed=0, n=12, side=48):
    """Smooth rings around round objects (context saliency), with mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    maps, gts = [], []
    for _ in range(n):
        cy, cx = rng.integers(16, side - 16, 2)
        r = rng.integers(5, 9)
        d = np.hypot(yy - cy, xx - cx)
        maps.append(np.exp(-((d - (r + 4)) ** 2) / 8.0) + 0.1 * rng.random((side, side)))
        gts.append(np.array([[cx - r, cy - r, cx + r, cy + r]]))
    return torch.from_numpy(np.stack(maps)), gts


def _blob_case(seed=0, n=12, side=48):
    """Smooth Gaussian blobs: no holes at any threshold."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    maps, gts = [], []
    for _ in range(n):
        cy, cx = rng.integers(12, side - 12, 2)
        r = rng.integers(5, 10)
        maps.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r ** 2)))
        gts.append(np.array([[cx - r, cy - r + 2, cx + r + 3, cy + r]]))
    return torch.from_numpy(np.stack(maps)), gts


def test_max_box_acc_v2_noisy_maps():
    maps, gt = _noise_case()
    res = loc.max_box_acc_v2(maps, gt_boxes=gt)
    # values of wsolevaluation's procedure (cv2 4.14 and 5.0) on these maps, 24 images: 20, 9 and 2 localised
    assert (res["iou@30"], res["iou@50"], res["iou@70"]) == pytest.approx((20 / 24, 9 / 24, 2 / 24))
    assert res["maxboxacc_v2"] == pytest.approx(31 / 72)  # 0.431; outer boxes only gave 0.250
    outer = _outer_only(loc.max_box_acc_v2, maps, gt_boxes=gt)
    assert outer["maxboxacc_v2"] == pytest.approx(18 / 72)
    # more boxes can only raise the best IoU of an image: never lower at any δ
    for key in ("iou@30", "iou@50", "iou@70"):
        assert res[key] >= outer[key]


def test_max_box_acc_v2_smooth_blobs_unchanged():
    maps, gt = _blob_case()
    for step in (0.01, 0.001):
        res = loc.max_box_acc_v2(maps, gt_boxes=gt, threshold_step=step)
        assert res == _outer_only(loc.max_box_acc_v2, maps, gt_boxes=gt, threshold_step=step)
    q = (loc._normalize_maps(maps) * 255).astype(np.uint8)
    for qi in q:  # no threshold of a smooth blob leaves a hole
        for cut in range(0, 255, 5):
            assert len(loc._contour_boxes(qi > cut)) == len(loc._contour_boxes(qi > cut, holes=False))


def test_max_box_acc_v2_threshold_step():
    maps, gt = _noise_case(seed=1, n=8)
    default = loc.max_box_acc_v2(maps, gt_boxes=gt)
    assert loc.DEFAULT_THRESHOLD_STEP == 0.01
    assert default == loc.max_box_acc_v2(maps, gt_boxes=gt, threshold_step=0.01)
    assert default == loc.max_box_acc_v2(maps, gt_boxes=gt, thresholds=np.arange(0, 1, 0.01))
    fine = loc.max_box_acc_v2(maps, gt_boxes=gt, threshold_step=0.001)  # wsolevaluation's evaluate_wsol
    for key in ("iou@30", "iou@50", "iou@70", "maxboxacc_v2"):
        assert fine[key] >= default[key]  # 0.001 tries every one of the 255 cuts, a superset of 0.01's
    # 0.001 already reaches every uint8 cut: a finer grid changes nothing
    finer = loc.max_box_acc_v2(maps, gt_boxes=gt, threshold_step=0.0002)
    assert {k: v for k, v in finer.items() if k.startswith("iou")} == \
        {k: v for k, v in fine.items() if k.startswith("iou")}
    with pytest.raises(ValueError, match="not both"):
        loc.max_box_acc_v2(maps, gt_boxes=gt, thresholds=[0.5], threshold_step=0.01)


# --------------------------------------------------------------------------------------------- cross-check with cv2
def _wsol_boxes_cv2(cv2, binary_uint8):
    """Boxes as wsolevaluation's compute_bboxes_from_scoremaps finds them (multi_contour_eval=True)."""
    h, w = binary_uint8.shape[:2]
    contours = cv2.findContours(binary_uint8, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    contours = contours[1] if cv2.__version__.split(".")[0] == "3" else contours[0]
    boxes = []
    for c in contours:
        x, y, bw, bh = cv2.boundingRect(c)
        boxes.append((x, y, min(x + bw, w - 1), min(y + bh, h - 1)))
    return sorted(boxes) if boxes else [(0, 0, 0, 0)]


def _wsol_maxboxacc_v2_cv2(cv2, maps, gts, step):
    """wsolevaluation's BoxEvaluator with multi_contour_eval and multi_iou_eval, restated with cv2."""
    thresholds = np.arange(0, 1, step)
    correct = {d: np.zeros(len(thresholds)) for d in (30, 50, 70)}
    for m, gt in zip(maps, gts, strict=True):
        m = (m - m.min()) / (m.max() - m.min())
        image = np.expand_dims((m * 255).astype(np.uint8), 2)
        best, seen = [], {}
        for tau in thresholds:
            cut = int(tau * np.max(image))
            if cut not in seen:  # the same cut gives the same binary map
                _, binary = cv2.threshold(image, cut, 255, cv2.THRESH_BINARY)
                seen[cut] = loc.box_iou(np.array(_wsol_boxes_cv2(cv2, binary)), gt).max()
            best.append(seen[cut])
        for d in correct:
            correct[d] += np.asarray(best) >= d / 100
    accs = [correct[d].max() / len(maps) for d in (30, 50, 70)]
    return accs + [float(np.mean(accs))]


def test_contour_boxes_match_cv2_find_contours():
    cv2 = pytest.importorskip("cv2")
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for t in range(3000):
        h, w = rng.integers(1, 25, 2)
        if t % 3:
            b = rng.random((h, w)) < rng.uniform(0.2, 0.9)
        else:
            b = ndimage.gaussian_filter(rng.random((h, w)), 1.5) > rng.uniform(0.4, 0.6)
        assert _boxes(b) == _wsol_boxes_cv2(cv2, b.astype(np.uint8) * 255), b.astype(int)


@pytest.mark.parametrize("case", ["ring", "annulus", "noise", "blobs"])
@pytest.mark.parametrize("step", [0.01, 0.001])
def test_max_box_acc_v2_matches_wsolevaluation_cv2(case, step):
    cv2 = pytest.importorskip("cv2")
    if case == "ring":
        mask = np.zeros((40, 40))
        mask[10:30, 10:30] = 1
        maps, gt = torch.from_numpy(_ring()).double()[None], loc.mask_boxes(torch.from_numpy(mask)[None])
    else:
        maps, gt = {"annulus": _annulus_case, "noise": _noise_case, "blobs": _blob_case}[case]()
    res = loc.max_box_acc_v2(maps, gt_boxes=gt, threshold_step=step)
    ours = [res["iou@30"], res["iou@50"], res["iou@70"], res["maxboxacc_v2"]]
    assert ours == pytest.approx(_wsol_maxboxacc_v2_cv2(cv2, maps.numpy(), gt, step), abs=1e-12)


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
    assert model.training and all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
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


# --------------------------------------------------------------------------------------------- bad input
NAN, INF = float("nan"), float("inf")


def _with(t, value, index=(0,)):
    t = t.clone()
    t[index] = value
    return t


def _bad_localization_calls():
    model = PixelLinear(torch.ones(4, 4))
    x = torch.rand(2, 1, 4, 4)
    sal = torch.rand(2, 4, 4)
    seg = torch.arange(16).reshape(1, 4, 4).expand(2, 4, 4).clone()
    region = torch.ones(2, 1, 4, 4)
    masks = torch.zeros(2, 1, 4, 4)
    masks[..., 1:3, 1:3] = 1
    gt = [np.array([[1, 1, 3, 3]])] * 2
    f = torch.linspace(0, 1, 5)
    return [
        # relevance_share
        ("share-nan-saliency", lambda: loc.relevance_share(_with(sal, NAN), region), ValueError, "saliency"),
        ("share-inf-saliency", lambda: loc.relevance_share(_with(sal, INF), region), ValueError, "saliency"),
        ("share-empty", lambda: loc.relevance_share(sal[:0], region[:0]), ValueError, "saliency"),
        ("share-2d", lambda: loc.relevance_share(sal[0], region), ValueError, "saliency"),
        ("share-nan-region", lambda: loc.relevance_share(sal, _with(region, NAN)), ValueError, "region"),
        ("share-region-batch", lambda: loc.relevance_share(sal[:1], region), ValueError, "region"),
        # relevance_curve / lerf_curve / morf_curve
        ("curve-nan-x", lambda: loc.lerf_curve(model, _with(x, NAN), sal), ValueError, "x"),
        ("curve-empty-x", lambda: loc.lerf_curve(model, x[:0], sal[:0]), ValueError, "x"),
        ("curve-x-dtype", lambda: loc.lerf_curve(model, x.double(), sal), TypeError, "x"),
        ("curve-nan-saliency", lambda: loc.morf_curve(model, x, _with(sal, NAN)), ValueError, "saliency"),
        ("curve-inf-saliency", lambda: loc.relevance_curve(model, x, _with(sal, -INF)), ValueError, "saliency"),
        ("curve-saliency-shape", lambda: loc.lerf_curve(model, x, sal[:1]), ValueError, "saliency"),
        ("curve-steps-0", lambda: loc.lerf_curve(model, x, sal, steps=0), ValueError, "steps"),
        ("curve-steps-float", lambda: loc.lerf_curve(model, x, sal, steps=2.5), TypeError, "steps"),
        ("curve-batch-0", lambda: loc.lerf_curve(model, x, sal, batch_size=0), ValueError, "batch_size"),
        ("curve-nan-baseline", lambda: loc.lerf_curve(model, x, sal, baseline=NAN), ValueError, "baseline"),
        ("curve-inf-baseline-tensor", lambda: loc.lerf_curve(model, x, sal, baseline=torch.tensor([INF])),
         ValueError, "baseline"),
        ("curve-baseline-shape", lambda: loc.lerf_curve(model, x, sal, baseline=torch.zeros(3, 1, 1)),
         ValueError, "baseline"),
        # curve_auc
        ("auc-nan-fractions", lambda: loc.curve_auc(_with(f, NAN), torch.rand(2, 5)), ValueError, "fractions"),
        ("auc-fractions-2d", lambda: loc.curve_auc(f[None], torch.rand(2, 5)), ValueError, "fractions"),
        ("auc-inf-curve", lambda: loc.curve_auc(f, _with(torch.rand(2, 5), INF)), ValueError, "curve"),
        ("auc-empty-curve", lambda: loc.curve_auc(f, torch.rand(0, 5)), ValueError, "curve"),
        ("auc-length", lambda: loc.curve_auc(f, torch.rand(2, 4)), ValueError, "fractions"),
        # greedy_lerf
        ("greedy-nan-x", lambda: loc.greedy_lerf(model, _with(x, NAN), seg), ValueError, "x"),
        ("greedy-nan-segments", lambda: loc.greedy_lerf(model, x, _with(seg.double(), NAN)), ValueError,
         "segments"),
        ("greedy-fractional-segments", lambda: loc.greedy_lerf(model, x, seg.double() + 0.5), ValueError,
         "segments"),
        ("greedy-segments-shape", lambda: loc.greedy_lerf(model, x, seg[:1]), ValueError, "segments"),
        ("greedy-segments-type", lambda: loc.greedy_lerf(model, x, seg.numpy()), TypeError, "segments"),
        ("greedy-batch-0", lambda: loc.greedy_lerf(model, x, seg, batch_size=0), ValueError, "batch_size"),
        ("greedy-nan-baseline", lambda: loc.greedy_lerf(model, x, seg, baseline=NAN), ValueError, "baseline"),
        # mask_boxes
        ("masks-nan", lambda: loc.mask_boxes(_with(masks, NAN)), ValueError, "masks"),
        ("masks-empty", lambda: loc.mask_boxes(masks[:0]), ValueError, "masks"),
        ("masks-shape", lambda: loc.mask_boxes(masks[0, 0]), ValueError, "masks"),
        ("masks-channels", lambda: loc.mask_boxes(masks.expand(2, 3, 4, 4)), ValueError, "masks"),
        # map_boxes
        ("map-nan", lambda: loc.map_boxes(_with(sal[0], NAN).numpy(), 0.5), ValueError, "saliency_map"),
        ("map-range", lambda: loc.map_boxes(3 * sal[0].numpy(), 0.5), ValueError, "saliency_map"),
        ("map-shape", lambda: loc.map_boxes(sal.numpy(), 0.5), ValueError, "saliency_map"),
        ("map-nan-threshold", lambda: loc.map_boxes(sal[0].numpy(), NAN), ValueError, "threshold"),
        ("map-threshold-range", lambda: loc.map_boxes(sal[0].numpy(), 1.5), ValueError, "threshold"),
        # box_iou
        ("iou-nan", lambda: loc.box_iou([0, 0, NAN, 1], [0, 0, 1, 1]), ValueError, "a"),
        ("iou-inf", lambda: loc.box_iou([0, 0, 1, 1], [[0, 0, INF, 1]]), ValueError, "b"),
        ("iou-shape", lambda: loc.box_iou([0, 0, 1], [0, 0, 1, 1]), ValueError, "a"),
        ("iou-inverted", lambda: loc.box_iou([0, 0, 1, 1], [3, 0, 1, 1]), ValueError, "b"),
        # max_box_acc_v2
        ("mba-nan-saliency", lambda: loc.max_box_acc_v2(_with(sal, NAN), masks), ValueError, "saliency"),
        ("mba-inf-saliency", lambda: loc.max_box_acc_v2(_with(sal, INF), masks), ValueError, "saliency"),
        ("mba-empty", lambda: loc.max_box_acc_v2(sal[:0], gt_boxes=[]), ValueError, "saliency"),
        ("mba-saliency-shape", lambda: loc.max_box_acc_v2(sal[0], masks), ValueError, "saliency"),
        ("mba-nan-masks", lambda: loc.max_box_acc_v2(sal, _with(masks, NAN)), ValueError, "masks"),
        ("mba-masks-size", lambda: loc.max_box_acc_v2(sal, torch.ones(2, 1, 8, 8)), ValueError, "masks"),
        ("mba-masks-count", lambda: loc.max_box_acc_v2(sal, masks[:1]), ValueError, "masks"),
        ("mba-gt-count", lambda: loc.max_box_acc_v2(sal, gt_boxes=gt[:1]), ValueError, "gt_boxes"),
        ("mba-nan-gt", lambda: loc.max_box_acc_v2(sal, gt_boxes=[gt[0], np.array([[0, 0, NAN, 1]])]),
         ValueError, "gt_boxes[1]"),
        ("mba-no-gt-box", lambda: loc.max_box_acc_v2(sal, gt_boxes=[gt[0], np.zeros((0, 4))]), ValueError,
         "gt_boxes[1]"),
        ("mba-gt-one-array", lambda: loc.max_box_acc_v2(sal, gt_boxes=np.array([[1, 1, 3, 3]] * 2)), TypeError,
         "gt_boxes"),
        ("mba-nan-thresholds", lambda: loc.max_box_acc_v2(sal, masks, thresholds=[0.1, NAN]), ValueError,
         "thresholds"),
        ("mba-thresholds-range", lambda: loc.max_box_acc_v2(sal, masks, thresholds=[0.1, 2.0]), ValueError,
         "thresholds"),
        ("mba-thresholds-empty", lambda: loc.max_box_acc_v2(sal, masks, thresholds=[]), ValueError, "thresholds"),
        ("mba-step-0", lambda: loc.max_box_acc_v2(sal, masks, threshold_step=0), ValueError, "threshold_step"),
        ("mba-step-nan", lambda: loc.max_box_acc_v2(sal, masks, threshold_step=NAN), ValueError,
         "threshold_step"),
        ("mba-step-type", lambda: loc.max_box_acc_v2(sal, masks, threshold_step="0.01"), TypeError,
         "threshold_step"),
        ("mba-iou-nan", lambda: loc.max_box_acc_v2(sal, masks, iou_thresholds=(0.5, NAN)), ValueError,
         "iou_thresholds"),
        ("mba-iou-0", lambda: loc.max_box_acc_v2(sal, masks, iou_thresholds=(0.0,)), ValueError,
         "iou_thresholds"),
        ("mba-iou-empty", lambda: loc.max_box_acc_v2(sal, masks, iou_thresholds=()), ValueError,
         "iou_thresholds"),
    ]


@pytest.mark.parametrize("call,error,name", [c[1:] for c in _bad_localization_calls()],
                         ids=[c[0] for c in _bad_localization_calls()])
def test_bad_input_raises_naming_the_argument(call, error, name):
    with pytest.raises(error) as info:
        call()
    assert name in str(info.value)


def test_nan_curves_still_give_nan_auc():
    # a NaN in a scaled curve marks a degenerate image (equal end scores): its AUC is NaN, the others are not
    curve = torch.tensor([[1.0, 0.5, 0.0], [NAN, NAN, NAN]])
    auc = loc.curve_auc(torch.tensor([0.0, 0.5, 1.0]), curve)
    assert auc[0].item() == pytest.approx(0.5) and torch.isnan(auc[1])
