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
