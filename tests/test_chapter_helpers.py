"""Helpers the chapters call instead of writing bookkeeping in their cells (issue 16): partitions, NAS summaries,
localisation scores, figures and timings."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from xai_robust import metrics, nas_eval, superpixels, viz  # noqa: E402
from xai_robust.results import Timings  # noqa: E402


def test_connected_pieces_counts_a_split_cell_twice():
    seg = torch.zeros(2, 4, 4, dtype=torch.long)
    seg[0, :, 1] = 1  # cell 0 split into two pieces by cell 1
    assert superpixels.connected_pieces(seg).tolist() == [3, 1]


def test_matched_parameter_picks_the_value_nearest_the_target():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    grid = [2, 16, 64]
    counts = [superpixels.count_segments(superpixels.segment(x, "slic", n_segments=v, compactness=10.0))
              .float().mean().item() for v in grid]
    for target in (0.0, max(counts) + 100.0, counts[1]):
        want = grid[int(np.argmin([abs(c - target) for c in counts]))]  # the first of equal distances
        assert superpixels.matched_parameter(x, "slic", "n_segments", grid, target, compactness=10.0) == want
    assert superpixels.matched_parameter(x, "slic", "n_segments", grid, max(counts) + 100.0,
                                         compactness=10.0) == grid[int(np.argmax(counts))]
    with pytest.raises(ValueError):
        superpixels.matched_parameter(x, "slic", "n_segments", [], 4)


def test_refinement_is_one_for_nested_cuts_and_less_otherwise():
    coarse = torch.tensor([[0, 0, 1, 1]] * 4)
    fine = torch.tensor([[0, 1, 2, 3]] * 4)
    assert superpixels.refinement(fine, coarse) == 1.0
    shifted = torch.tensor([[0, 1, 1, 2]] * 4)
    assert superpixels.refinement(shifted, coarse) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        superpixels.refinement(fine[None], coarse[None])


def test_best_cell_iou_is_one_when_a_cell_is_the_object():
    seg = torch.zeros(1, 4, 4, dtype=torch.long)
    seg[0, :2, :2] = 1
    mask = seg.bool()
    assert metrics.best_cell_iou(seg, mask) == 1.0
    half = torch.zeros(1, 4, 4, dtype=torch.bool)
    half[0, :2, :1] = True
    assert metrics.best_cell_iou(seg, half) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        metrics.best_cell_iou(seg, mask[:, :2])


def test_mean_lerf_auc_is_the_nanmean_of_the_curve_areas():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    x = torch.rand(3, 3, 8, 8)
    sal = torch.rand(3, 8, 8)
    f, curve = metrics.lerf_curve(model, x, sal, torch.tensor([0, 1, 0]), steps=4)
    want = float(torch.nanmean(metrics.curve_auc(f, curve)))
    assert metrics.mean_lerf_auc(model, x, sal, torch.tensor([0, 1, 0]), steps=4) == want


def test_mean_pairwise_ari_is_one_for_relabelled_copies():
    a = torch.tensor([[[0, 0, 1, 1]] * 4])
    assert nas_eval.mean_pairwise_ari([a, 1 - a, a]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        nas_eval.mean_pairwise_ari([a])


def test_object_cluster_saliency_names_the_most_salient_cluster():
    clusters = torch.tensor([[[0, 0, 1, 2]] * 4])
    sal = torch.tensor([[[0.0, 0.0, 1.0, 0.5]] * 4])
    out = nas_eval.object_cluster_saliency(sal, clusters, 3, object_cluster=1)
    assert out == {"most": 1, "obj": pytest.approx(1.0), "others": pytest.approx(0.25)}
    with pytest.raises(ValueError):
        nas_eval.object_cluster_saliency(sal, clusters, 3, object_cluster=3)


def test_panels_saliency_rows_and_overlays_stay_legible():
    img, seg = torch.rand(3, 8, 8), torch.tensor([[0] * 4 + [1] * 4] * 8)
    over = viz.overlay_segments(img, seg)
    assert over.shape == (8, 8, 3)
    freq = viz.boundary_frequency([seg, seg])
    assert freq.shape == (8, 8) and set(np.unique(freq)) <= {0.0, 1.0}
    fig = viz.panels([over, freq] * 6, [f"p{i}" for i in range(12)], ncols=12, row_labels=["a", "b"],
                     cmap="magma", vmin=0, vmax=1)
    assert fig.get_size_inches()[0] <= viz.MAX_WIDTH + 1e-9
    assert len([ax for ax in fig.axes if ax.images]) == 12
    plt.close(fig)
    maps = torch.randn(2, 8, 8)
    scaled = viz.minmax(maps)
    assert torch.allclose(scaled.amin((-2, -1)), torch.zeros(2)) and torch.allclose(scaled.amax((-2, -1)),
                                                                                  torch.ones(2))
    fig = viz.saliency_rows([over, over], [[maps[0], maps[1]]] * 2, first_titles=["i", "j"],
                            titles=[["a", "b"], ["c", "d"]])
    assert any("min-max" in ax.get_ylabel() for ax in fig.axes)
    plt.close(fig)
    fig = viz.saliency_rows([over], [[maps[0].abs()]], first_titles=["i"], titles=[["a"]], scale="max")
    assert any("maximum" in ax.get_ylabel() for ax in fig.axes)
    assert max(ax.images[0].get_array().max() for ax in fig.axes if ax.images and ax.images[0].get_array().ndim == 2) \
        == pytest.approx(1.0)
    plt.close(fig)
    with pytest.raises(ValueError):
        viz.saliency_rows([over], [[maps[0]]], first_titles=["i"], titles=[["a"]], scale="log")
    with pytest.raises(ValueError):
        viz.panels([over], ["a", "b"])


def test_timings_store_the_time_per_item_in_the_names_unit():
    t = Timings()
    with t("step_ms", per=4):
        pass
    with t("fit_s"):
        pass
    assert set(t) == {"step_ms", "fit_s"} and t["step_ms"] >= 0 and t["fit_s"] >= 0
    with pytest.raises(ValueError):
        t("no_unit")
    with pytest.raises(ValueError):
        t("x_ms", per=0)


def test_image_rows_label_each_row_and_outline_the_masks():
    images, masks = torch.rand(4, 1, 8, 8), (torch.rand(4, 1, 8, 8) > 0.5).float()
    fig = viz.image_rows({"iid": images, "ood": images[:2]}, titles={"iid": list("abcd"), "ood": ["e", "f"]},
                         masks={"iid": masks}, title="what to see")
    assert fig.get_size_inches()[0] <= viz.MAX_WIDTH + 1e-9
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["iid", "ood"]
    assert len([ax for ax in fig.axes if ax.images]) == 6
    plt.close(fig)
    with pytest.raises(ValueError):
        viz.image_rows({"too many": torch.rand(9, 1, 8, 8)})


def test_worst_and_mean_and_shortcut_gaps():
    y = torch.tensor([0, 0, 1, 1])
    groups = torch.tensor([0, 1, 2, 3])
    pred = torch.tensor([0, 1, 1, 1])
    assert metrics.worst_and_mean(pred, y, groups, groups) == (0.0, 0.75)
    # first shortcut disagrees on sample 1 only, second on sample 3 only; both agree on samples 0 and 2
    first, second = torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 0])
    bg, co, both = metrics.shortcut_gaps(pred, y, first, second)
    assert np.isnan(bg) and np.isnan(co) and np.isnan(both)  # no sample where both disagree: no in-distribution mean
    with pytest.raises(ValueError):
        metrics.shortcut_gaps(pred, y, first[:3], second)


def test_shortcut_gaps_on_every_cell():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    first = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])  # agrees, disagrees, agrees, disagrees, ...
    second = torch.tensor([0, 0, 1, 1, 1, 1, 0, 0])
    pred = y.clone()
    pred[1] = 1  # wrong where only the first shortcut disagrees (one of two such samples)
    bg, co, both = metrics.shortcut_gaps(pred, y, first, second)
    in_dist = 0.9025 * 1.0 + 0.0475 * 0.5 + 0.0475 * 1.0 + 0.0025 * 1.0
    assert bg == pytest.approx(100 * (0.5 - in_dist))
    assert co == pytest.approx(100 * (1.0 - in_dist)) and both == pytest.approx(100 * (1.0 - in_dist))


def test_erm_recipe_splits_the_profile_recipe():
    from xai_robust import train
    from xai_robust.profiles import profile_settings

    model_options, fit_options = train.erm_recipe("spurious_scenes", profile="ci")
    recipe = profile_settings("ci")["spurious_scenes"]
    assert model_options["arch"] == recipe["arch"] and model_options["pretrained"] == recipe.get("pretrained")
    assert all(model_options[k] == v for k, v in recipe.get("model", {}).items())
    assert "arch" not in fit_options and "data" not in fit_options and fit_options["epochs"] == recipe["epochs"]
    with pytest.raises(ValueError):
        train.erm_recipe("no such dataset")


def _linear_task(seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(120, 6, generator=g)
    labels = torch.arange(120) % 3
    feats[torch.arange(120), labels] += 4.0  # class c lives on feature c
    lin = nn.Linear(6, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(3, 6) * 2 + 0.01)
        lin.bias.zero_()
    return lin, feats, labels


def test_class_accuracies_removal_matrix_and_effects():
    from xai_robust import sca

    lin, feats, labels = _linear_task()
    before = sca.class_accuracies(lin, feats, labels, 3)
    assert before.dtype == torch.float64 and torch.all(before > 0.9)
    w = lin.weight.detach().clone()
    acc = sca.accumulate(feats, labels, lin)
    mat = sca.removal_matrix(lin, feats, labels, 3, accumulations=acc)
    assert torch.equal(lin.weight, w)  # every edit undone
    for c in range(3):
        with sca.remove_class(lin, target=c, accumulations=acc):
            assert torch.equal(mat[c], sca.class_accuracies(lin, feats, labels, 3))
    removed, others = sca.removal_effects(mat, before)
    assert torch.equal(removed, mat.diagonal()) and others.shape == (3, 2)
    assert torch.equal(others[0], mat[0, 1:] - before[1:])
    with pytest.raises(ValueError):
        sca.removal_effects(mat[:2], before)


def test_most_confident_subclass_and_neutralise():
    from xai_robust import sca

    lin, feats, labels = _linear_task()
    fict = labels * 2 + (torch.arange(120) // 3) % 2  # two sub-classes per class
    feats[fict % 2 == 1, :3] *= 0.5  # the odd sub-classes are less confident
    pick = sca.most_confident_subclass(lin, feats, fict, labels)
    assert pick == {0: 0, 1: 2, 2: 4}
    head = sca.fit_fictitious_head(feats, fict)
    acc = sca.accumulate(feats, fict, head)
    w = lin.weight.detach().clone()
    records = sca.neutralise(lin, feats, fict, 1.0, pick, head=head, accumulations=acc)
    assert [r.rows for r in records] == [[0], [1], [2]] and not torch.equal(lin.weight, w)
    for r in reversed(records):
        r.undo()
    assert torch.equal(lin.weight, w)


def test_fictitious_removal_curves_remove_each_sub_class_and_restore_the_layer():
    from xai_robust import sca

    lin, feats, labels = _linear_task()
    fict = labels * 2 + (torch.arange(120) // 3) % 2  # two sub-classes per class
    real_of = sca.fictitious_to_real(fict, labels)
    head = sca.fit_fictitious_head(feats, fict)
    acc = sca.accumulate(feats, fict, head)
    w = lin.weight.detach().clone()
    out = sca.fictitious_removal_curves(lin, feats, fict, real_of, [0.0, 1.0], head=head, accumulations=acc,
                                        eval_features=feats, eval_labels=labels, eval_fictitious=fict)
    assert torch.equal(lin.weight, w)
    assert out["removed"].shape == (6, 2) and out["retained"].shape == (6, 2) and out["siblings"].shape == (6,)
    before = out["before"]
    assert np.allclose(out["removed"][:, 0], before.numpy())  # r = 0 edits nothing
    with sca.remove_fictitious_class(lin, feats, fict, 3, real_of[3], rate=1.0, head=head, accumulations=acc):
        with torch.no_grad():
            correct = (lin(feats).argmax(1) == labels).double()
        a = torch.stack([correct[fict == d].mean() for d in range(6)])
    assert out["removed"][3, 1] == float(a[3]) and out["siblings"][3] == float(a[2])


def test_signed_row_scales_each_map_to_its_largest_absolute_value():
    maps = [torch.randn(3, 8, 8), 5 * torch.randn(8, 8)]
    fig = viz.signed_row(maps, ["a", "b"])
    shown = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(shown) == 2 and all(im.get_clim() == (-1, 1) for im in shown)
    assert all(np.abs(im.get_array()).max() == pytest.approx(1.0) for im in shown)
    assert any("max |R|" in ax.get_ylabel() for ax in fig.axes)
    plt.close(fig)
    with pytest.raises(ValueError):
        viz.signed_row(maps, ["a"])
