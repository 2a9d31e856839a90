"""Saliency metrics on hand-made cases and against scikit-image / scipy (chapter 06)."""
import numpy as np
import pytest
import torch
from torch import nn

from xai_robust.metrics import saliency as sm

torch.set_num_threads(1)


class Linear2(nn.Module):
    """logits = [sum(w * x), 0]: the exact attribution of class 0 (baseline 0) is w * x."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.bn = nn.BatchNorm1d(1)  # has train/eval behaviour, so mode restoration is observable

    def forward(self, x):
        z = (x * self.w).flatten(1).sum(1, keepdim=True)
        return torch.cat([z, torch.zeros_like(z)], 1)


def linear_case(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(1, 3, 8, 8, generator=g)
    x = torch.rand(n, 3, 8, 8, generator=g)
    return Linear2(w), x, (w * x).sum(1)  # model, images, exact maps [N, H, W]


# ---------------------------------------------------------------- SSIM
def test_ssim_self_is_one_and_matches_skimage():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 16, 16, generator=g), torch.rand(3, 16, 16, generator=g)
    torch.testing.assert_close(sm.ssim(a, a), torch.ones(3, dtype=torch.float64))
    got = sm.ssim(a, b)
    for i in range(3):
        u, v = a[i].double(), b[i].double()
        u, v = (u - u.min()) / (u.max() - u.min()), (v - v.min()) / (v.max() - v.min())
        ref = structural_similarity(u.double().numpy(), v.double().numpy(), data_range=1.0)
        assert got[i].item() == pytest.approx(ref, abs=1e-9)
    assert (got < 0.5).all()
    # minmax normalisation makes SSIM invariant to affine rescaling; a smoothed copy is closer than noise
    torch.testing.assert_close(sm.ssim(a, 3 * a + 1), torch.ones(3, dtype=torch.float64))
    smooth = torch.nn.functional.avg_pool2d(a[:, None], 3, 1, 1)[:, 0]
    assert (sm.ssim(a, smooth) > got).all()
    assert sm.ssim(a, a, normalize="none")[0].item() == pytest.approx(1.0)
    assert sm.ssim(torch.rand(2, 5, 5), torch.rand(2, 5, 5)).shape == (2,)  # small maps: window shrinks


# ---------------------------------------------------------------- Spearman and MeGe
def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (3, 5, 5), generator=g).float()  # many ties, like super-pixel maps
    b = a + torch.rand(3, 5, 5, generator=g)
    got = sm.spearman(a, b)
    for i in range(3):
        assert got[i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten())[0], abs=1e-12)
    assert sm.spearman(torch.ones(1, 4), torch.arange(4.0).view(1, 4)).item() == 0.0


def test_mege_hand_computed():
    # k = 3 models, 3 samples, one per fold. Model m did not see sample m.
    e = torch.tensor([
        [[1., 2., 3., 4.], [1., 2., 3., 4.], [4., 3., 2., 1.]],
        [[1., 2., 4., 3.], [1., 2., 3., 4.], [1., 2., 3., 4.]],
        [[1., 2., 3., 4.], [2., 1., 3., 4.], [1., 2., 3., 4.]],
    ])
    folds = torch.tensor([0, 1, 2])
    # sample 0: unseen = model 0 [1,2,3,4]; seen: model1 [1,2,4,3] rho=0.8, model2 rho=1
    # sample 1: unseen = model 1 [1,2,3,4]; model0 rho=1, model2 [2,1,3,4] rho=0.8
    # sample 2: unseen = model 2 [1,2,3,4]; model0 [4,3,2,1] rho=-1 -> |rho|=1, model1 rho=1
    d = [np.sqrt(0.2), 0, 0, np.sqrt(0.2), 0, 0]
    assert sm.mege(e, folds) == pytest.approx(1 / (1 + np.mean(d)))
    l2 = [np.sqrt(2), 0, 0, np.sqrt(2), np.sqrt(20), 0]
    assert sm.mege(e, folds, distance="l2") == pytest.approx(1 / (1 + np.mean(l2)))
    assert sm.mege(e[:, :, None].expand(3, 3, 2, 4), folds) == pytest.approx(1 / (1 + np.mean(d)))
    correct = torch.ones(3, 3, dtype=torch.bool)
    correct[1, 0] = False  # model 1 misclassifies sample 0: only the (model 1, sample 0) pair goes
    d2 = [0, 0, np.sqrt(0.2), 0, 0]
    assert sm.mege(e, folds, correct=correct) == pytest.approx(1 / (1 + np.mean(d2)))
    assert sm.mege(e[:, :, :].clone().fill_(1.0) + torch.arange(4.), folds) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="folds"):
        sm.mege(e, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="distance"):
        sm.mege(e, folds, distance="cosine")


# ---------------------------------------------------------------- deletion / insertion
def test_deletion_curve_hand_computed():
    # 1 channel, 2x2 image of ones, logit = sum(w*x) with w = [4,3,2,1]; exact map = w.
    w = torch.tensor([4., 3., 2., 1.]).view(1, 1, 2, 2)
    model = Linear2(w)
    x = torch.ones(1, 1, 2, 2)
    fr, s = sm.perturbation_curve(model, x, w[:, 0], 0, mode="deletion", n_steps=4, output="logit")
    torch.testing.assert_close(fr, torch.tensor([0, .25, .5, .75, 1.], dtype=torch.float64))
    torch.testing.assert_close(s, torch.tensor([[10., 6., 3., 1., 0.]]))
    auc = sm.deletion_auc(model, x, w[:, 0], 0, n_steps=4, output="logit")
    assert auc.item() == pytest.approx(0.25 * (10 / 2 + 6 + 3 + 1 + 0 / 2))
    _, s = sm.perturbation_curve(model, x, w[:, 0], 0, mode="insertion", n_steps=4, output="logit")
    torch.testing.assert_close(s, torch.tensor([[0., 4., 7., 9., 10.]]))
    _, s = sm.perturbation_curve(model, x, w[:, 0], 0, mode="deletion", n_steps=4, order="lerf", output="logit")
    torch.testing.assert_close(s, torch.tensor([[10., 9., 7., 4., 0.]]))


def test_perfect_explanation_beats_random():
    model, x, exact = linear_case()
    rand = torch.rand(exact.shape, generator=torch.Generator().manual_seed(5))
    kw = dict(n_steps=16)
    assert (sm.deletion_auc(model, x, exact, 0, **kw) < sm.deletion_auc(model, x, rand, 0, **kw)).all()
    assert (sm.insertion_auc(model, x, exact, 0, **kw) > sm.insertion_auc(model, x, rand, 0, **kw)).all()
    assert (sm.deletion_auc(model, x, exact, 0, **kw) < sm.deletion_auc(model, x, -exact, 0, **kw)).all()
    # chunking over images (small batch_size) changes nothing
    torch.testing.assert_close(sm.insertion_auc(model, x, rand, 0, batch_size=5, **kw),
                               sm.insertion_auc(model, x, rand, 0, **kw))
    torch.testing.assert_close(sm.mu_fidelity(model, x, rand, 0, n_subsets=8, batch_size=9),
                               sm.mu_fidelity(model, x, rand, 0, n_subsets=8))


def test_ties_are_broken_at_random_not_by_position():
    model, x, _ = linear_case(n=1)
    flat = torch.zeros(1, 8, 8)
    _, s0 = sm.perturbation_curve(model, x, flat, 0, n_steps=8, output="logit", seed=0)
    _, s1 = sm.perturbation_curve(model, x, flat, 0, n_steps=8, output="logit", seed=1)
    assert not torch.allclose(s0, s1)
    assert s0[0, 0] == s1[0, 0] and s0[0, -1] == s1[0, -1]


def test_raster_ties_and_the_nas_curve_are_the_same_curve():
    """ties="raster" removes equal pixels in raster order; relevance_curve (NAS) is this curve, scaled."""
    from xai_robust.metrics import localization

    w = torch.tensor([1., 2., 3., 4.]).view(1, 1, 2, 2)
    model, x = Linear2(w), torch.ones(1, 1, 2, 2)
    flat = torch.zeros(1, 2, 2)
    _, s = sm.perturbation_curve(model, x, flat, 0, n_steps=4, output="logit", ties="raster")
    torch.testing.assert_close(s, torch.tensor([[10., 9., 7., 4., 0.]]))  # pixels 0, 1, 2, 3 in turn
    model, x, exact = linear_case()
    fr, raw = sm.perturbation_curve(model, x, exact.double(), 0, n_steps=10, order="lerf", output="logit",
                                    ties="raster")
    fr2, scaled = localization.relevance_curve(model, x, exact, 0, steps=10)
    torch.testing.assert_close(fr2, fr)
    torch.testing.assert_close(scaled, (raw.double() - raw[:, -1:]) / (raw[:, :1] - raw[:, -1:]))
    torch.testing.assert_close(localization.curve_auc(fr2, scaled), sm.curve_auc(fr2, scaled))
    with pytest.raises(ValueError, match="ties must be"):
        sm.perturbation_curve(model, x, exact, 0, ties="first")


# ---------------------------------------------------------------- mu-fidelity
def test_mu_fidelity_exact_attribution_is_one():
    model, x, exact = linear_case()
    mf = sm.mu_fidelity(model, x, exact, 0, n_subsets=32, subset_size=0.2, output="logit")
    torch.testing.assert_close(mf, torch.ones(6, dtype=torch.float64))
    rand = torch.rand(exact.shape, generator=torch.Generator().manual_seed(5))
    mr = sm.mu_fidelity(model, x, rand, 0, n_subsets=32, subset_size=0.2, output="logit")
    assert mr.abs().mean() < 0.5
    neg = sm.mu_fidelity(model, x, -exact, 0, n_subsets=32, subset_size=13, output="logit")
    torch.testing.assert_close(neg, -torch.ones(6, dtype=torch.float64))
    assert sm.mu_fidelity(model, x, torch.zeros_like(exact), 0).abs().max() == 0  # constant map: 0


# ---------------------------------------------------------------- ROAD
def test_linear_imputation_reproduces_a_linear_image():
    i, j = torch.meshgrid(torch.arange(10.), torch.arange(10.), indexing="ij")
    x = torch.stack([0.1 * i + 0.05 * j, 0.5 - 0.03 * i]).unsqueeze(0).double()  # [1, 2, 10, 10]
    removed = torch.zeros(1, 10, 10, dtype=torch.bool)
    removed[0, 2:6, 3:8] = True
    removed[0, 7, 7] = True
    out = sm.noisy_linear_imputation(x, removed, noise=0.0)
    torch.testing.assert_close(out, x)
    noisy = sm.noisy_linear_imputation(x, removed, noise=0.01)
    assert torch.equal(noisy[:, :, ~removed[0]], x[:, :, ~removed[0]])  # known pixels untouched
    diff = (noisy - x)[:, :, removed[0]]
    assert 0.003 < diff.std() < 0.03
    # hand case: one removed pixel in a 3x3 image = weighted neighbour mean
    y = torch.arange(9.).view(1, 1, 3, 3) ** 2
    r = torch.zeros(1, 3, 3, dtype=torch.bool)
    r[0, 1, 1] = True
    expected = (1 + 9 + 25 + 49) / 6 + (0 + 4 + 36 + 64) / 12
    assert sm.noisy_linear_imputation(y, r, noise=0.0)[0, 0, 1, 1].item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="whole image"):
        sm.noisy_linear_imputation(y, torch.ones(1, 3, 3, dtype=torch.bool))


def test_road_morf_drops_faster_for_the_exact_map():
    model, x, exact = linear_case(n=12, seed=2)
    rand = torch.rand(exact.shape, generator=torch.Generator().manual_seed(5))
    acc_exact = sm.road(model, x, exact, fractions=(0.0, 0.3, 0.6), noise=0.0)
    acc_rand = sm.road(model, x, rand, fractions=(0.0, 0.3, 0.6), noise=0.0)
    assert acc_exact[0] == 1 and acc_rand[0] == 1
    assert acc_exact[1:].sum() < acc_rand[1:].sum()


# ---------------------------------------------------------------- model and inputs
def test_model_untouched_and_bad_inputs():
    model, x, exact = linear_case()
    model.train()
    model.w.requires_grad_(False)
    w0 = model.w.clone()
    sm.deletion_auc(model, x, exact, n_steps=2)
    sm.mu_fidelity(model, x, exact, n_subsets=4)
    sm.road(model, x, exact, fractions=(0.5,))
    assert model.training and model.bn.training and not model.w.requires_grad
    assert torch.equal(model.w, w0)
    with pytest.raises(ValueError, match="reduce channels"):
        sm.deletion_auc(model, x, exact[:, None])
    with pytest.raises(ValueError, match="there are 6 images"):
        sm.insertion_auc(model, x, exact[:2])
    with pytest.raises(ValueError, match="output"):
        sm.deletion_auc(model, x, exact, output="softmax")
    with pytest.raises(ValueError, match="order"):
        sm.deletion_auc(model, x, exact, order="random")
    with pytest.raises(ValueError, match="subset_size"):
        sm.mu_fidelity(model, x, exact, subset_size=0)
    with pytest.raises(ValueError, match="fractions"):
        sm.road(model, x, exact, fractions=(1.0,))
    with pytest.raises(ValueError, match="target"):
        sm.deletion_auc(model, x, exact, target=5)


# ---------------------------------------------------------------- bad input at the boundary
NAN, INF = float("nan"), float("inf")


def _with(t, value, index=(0,)):
    t = t.clone()
    t[index] = value
    return t


def _bad_saliency_calls():
    model, x, exact = linear_case(n=3)
    e = torch.rand(3, 3, 4, 4)
    folds = torch.tensor([0, 1, 2])
    removed = torch.zeros(3, 8, 8, dtype=torch.bool)
    removed[:, 2:4, 2:4] = True
    return [
        # ssim
        ("ssim-nan-a", lambda: sm.ssim(_with(exact, NAN), exact), ValueError, "maps_a"),
        ("ssim-inf-b", lambda: sm.ssim(exact, _with(exact, INF)), ValueError, "maps_b"),
        ("ssim-empty", lambda: sm.ssim(exact[:0], exact[:0]), ValueError, "maps_a"),
        ("ssim-shape", lambda: sm.ssim(exact, exact[:2]), ValueError, "maps_b"),
        ("ssim-float32-overflow", lambda: sm.ssim(_with(exact.double(), 1e300), exact), ValueError, "maps_a"),
        ("ssim-win-even", lambda: sm.ssim(exact, exact, win_size=4), ValueError, "win_size"),
        ("ssim-win-small", lambda: sm.ssim(exact, exact, win_size=1), ValueError, "win_size"),
        ("ssim-tiny-maps", lambda: sm.ssim(exact[:, :2, :2], exact[:, :2, :2]), ValueError, "maps_a"),
        ("ssim-win-float", lambda: sm.ssim(exact, exact, win_size=5.0), TypeError, "win_size"),
        # spearman
        ("spearman-nan-a", lambda: sm.spearman(_with(exact, NAN), exact), ValueError, "a"),
        ("spearman-inf-b", lambda: sm.spearman(exact, _with(exact, INF)), ValueError, "b"),
        ("spearman-empty", lambda: sm.spearman(exact[:0], exact[:0]), ValueError, "a"),
        ("spearman-1d", lambda: sm.spearman(exact[0, 0], exact[0, 0]), ValueError, "a"),
        ("spearman-type", lambda: sm.spearman(exact.numpy(), exact), TypeError, "a"),
        # mege
        ("mege-nan", lambda: sm.mege(_with(e, NAN), folds), ValueError, "explanations"),
        ("mege-inf", lambda: sm.mege(_with(e, INF), folds), ValueError, "explanations"),
        ("mege-empty", lambda: sm.mege(e[:, :0], folds[:0]), ValueError, "explanations"),
        ("mege-folds-float", lambda: sm.mege(e, folds.float()), TypeError, "folds"),
        ("mege-folds-length", lambda: sm.mege(e, folds[:2]), ValueError, "folds"),
        ("mege-folds-range", lambda: sm.mege(e, torch.tensor([0, 1, -1])), ValueError, "folds"),
        ("mege-correct-nan", lambda: sm.mege(e, folds, correct=_with(torch.ones(3, 3), NAN)), ValueError,
         "correct"),
        ("mege-correct-shape", lambda: sm.mege(e, folds, correct=torch.ones(3, 2, dtype=torch.bool)),
         ValueError, "correct"),
        # perturbation_curve / deletion_auc / insertion_auc
        ("curve-nan-x", lambda: sm.perturbation_curve(model, _with(x, NAN), exact), ValueError, "x"),
        ("curve-empty-x", lambda: sm.perturbation_curve(model, x[:0], exact[:0]), ValueError, "x"),
        ("curve-x-dtype", lambda: sm.perturbation_curve(model, x.double(), exact), TypeError, "x"),
        ("curve-model", lambda: sm.perturbation_curve(lambda t: t, x, exact), TypeError, "model"),
        ("curve-nan-saliency", lambda: sm.perturbation_curve(model, x, _with(exact, NAN)), ValueError,
         "saliency"),
        ("deletion-inf-saliency", lambda: sm.deletion_auc(model, x, _with(exact, INF)), ValueError, "saliency"),
        ("insertion-nan-saliency", lambda: sm.insertion_auc(model, x, _with(exact, NAN)), ValueError,
         "saliency"),
        ("curve-steps-0", lambda: sm.perturbation_curve(model, x, exact, n_steps=0), ValueError, "n_steps"),
        ("curve-steps-float", lambda: sm.deletion_auc(model, x, exact, n_steps=4.0), TypeError, "n_steps"),
        ("curve-batch-0", lambda: sm.insertion_auc(model, x, exact, batch_size=0), ValueError, "batch_size"),
        ("curve-batch-float", lambda: sm.deletion_auc(model, x, exact, batch_size=1.5), TypeError, "batch_size"),
        ("curve-nan-baseline", lambda: sm.deletion_auc(model, x, exact, baseline=NAN), ValueError, "baseline"),
        ("curve-inf-baseline-tensor", lambda: sm.deletion_auc(model, x, exact, baseline=torch.full((1, 3, 1, 1),
                                                                                                   INF)),
         ValueError, "baseline"),
        ("curve-baseline-shape", lambda: sm.deletion_auc(model, x, exact, baseline=torch.zeros(2, 1, 1)),
         ValueError, "baseline"),
        ("curve-seed-negative", lambda: sm.deletion_auc(model, x, exact, seed=-1), ValueError, "seed"),
        # mu_fidelity
        ("mu-nan-x", lambda: sm.mu_fidelity(model, _with(x, NAN), exact), ValueError, "x"),
        ("mu-nan-saliency", lambda: sm.mu_fidelity(model, x, _with(exact, NAN)), ValueError, "saliency"),
        ("mu-subsets-1", lambda: sm.mu_fidelity(model, x, exact, n_subsets=1), ValueError, "n_subsets"),
        ("mu-subset-nan", lambda: sm.mu_fidelity(model, x, exact, subset_size=NAN), ValueError, "subset_size"),
        ("mu-subset-fraction", lambda: sm.mu_fidelity(model, x, exact, subset_size=1.5), ValueError,
         "subset_size"),
        ("mu-subset-count", lambda: sm.mu_fidelity(model, x, exact, subset_size=65), ValueError, "subset_size"),
        ("mu-batch-0", lambda: sm.mu_fidelity(model, x, exact, batch_size=0), ValueError, "batch_size"),
        ("mu-nan-baseline", lambda: sm.mu_fidelity(model, x, exact, baseline=NAN), ValueError, "baseline"),
        # noisy_linear_imputation
        ("impute-nan-x", lambda: sm.noisy_linear_imputation(_with(x, NAN), removed), ValueError, "x"),
        ("impute-empty-x", lambda: sm.noisy_linear_imputation(x[:0], removed[:0]), ValueError, "x"),
        ("impute-removed-nan", lambda: sm.noisy_linear_imputation(x, _with(removed.float(), NAN)), ValueError,
         "removed"),
        ("impute-removed-shape", lambda: sm.noisy_linear_imputation(x, removed[:1]), ValueError, "removed"),
        ("impute-noise-nan", lambda: sm.noisy_linear_imputation(x, removed, noise=NAN), ValueError, "noise"),
        ("impute-noise-negative", lambda: sm.noisy_linear_imputation(x, removed, noise=-0.1), ValueError,
         "noise"),
        # road
        ("road-nan-x", lambda: sm.road(model, _with(x, NAN), exact), ValueError, "x"),
        ("road-nan-saliency", lambda: sm.road(model, x, _with(exact, NAN)), ValueError, "saliency"),
        ("road-fractions-nan", lambda: sm.road(model, x, exact, fractions=(0.1, NAN)), ValueError, "fractions"),
        ("road-fractions-empty", lambda: sm.road(model, x, exact, fractions=()), ValueError, "fractions"),
        ("road-noise-inf", lambda: sm.road(model, x, exact, noise=INF), ValueError, "noise"),
        ("road-batch-0", lambda: sm.road(model, x, exact, batch_size=0), ValueError, "batch_size"),
    ]


@pytest.mark.parametrize("call,error,name", [c[1:] for c in _bad_saliency_calls()],
                         ids=[c[0] for c in _bad_saliency_calls()])
def test_bad_input_raises_naming_the_argument(call, error, name):
    with pytest.raises(error) as info:
        call()
    assert name in str(info.value)
