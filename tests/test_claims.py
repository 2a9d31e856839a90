"""The papers' qualitative claims, checked on the numbers each chapter wrote to results/<chapter>.json.

`make test` executes every chapter (profile ci) before running this file. A claim that does not hold at
our scale fails here and is reported in the chapter's text, never hidden.
"""
import itertools
import json
import os
from pathlib import Path

import pytest

from xai_robust.results import (
    CH01,
    CH02,
    CH03,
    CH04,
    CH05,
    CH06,
    CH07,
    DATASETS,
    EPSILONS,
    ISNET_SPLITS,
    ISNETS,
    LRP_REFERENCES,
    NAS_METHODS,
    SP_METHODS,
)

RESULTS = Path(os.environ.get("XAI_ROBUST_RESULTS", Path(__file__).resolve().parents[1] / "results"))


def load_results(chapter) -> dict:
    """The results JSON of a chapter (its key table from xai_robust.results); skips the test when the chapter has not
    been executed. Every key below is built from that table, so a renamed or undeclared key fails by name."""
    name = chapter.name
    path = RESULTS / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path} missing: execute notebooks/{name}.ipynb first (make test does)")
    return json.loads(path.read_text())


# ---------------------------------------------------------------- chapter 01: shortcuts
# Thresholds sit outside the seed-to-seed spread measured by `make reproduce` (book/reproduction.md, seeds 0-2).
@pytest.mark.parametrize("dataset", DATASETS)
def test_01_erm_learns_the_task(dataset):
    """ERM fine-tuned from the pretrained backbone learns the task: train-weighted mean accuracy >= 95 % (ExMap
    Tables 1-2: 98.1 % Waterbirds, 99.3 % C-MNIST)."""
    r = load_results(CH01)
    mean = r[CH01.erm_weighted_mean_acc(dataset=dataset)]
    assert mean >= 95.0, mean


@pytest.mark.parametrize("dataset", DATASETS)
def test_01_erm_worst_group_far_below_mean(dataset):
    """ERM's worst-group accuracy is at least 10 points below its train-weighted mean (ExMap Tables 1-2: 21 points on
    Waterbirds, 60 on C-MNIST)."""
    r = load_results(CH01)
    mean, worst = r[CH01.erm_weighted_mean_acc(dataset=dataset)], r[CH01.erm_worst_group_acc(dataset=dataset)]
    assert mean - worst >= 10.0, f"{dataset}: mean {mean:.1f}% vs worst group {worst:.1f}%"


def test_01_scenes_erm_in_the_papers_regime():
    """The scenes ERM model is neither a pure shortcut detector nor robust: worst group between 25 and 92 % (the
    papers' pretrained ERM on Waterbirds: 60-77 %)."""
    worst = load_results(CH01)[CH01.erm_worst_group_acc(dataset="spurious_scenes")]
    assert 25.0 <= worst <= 92.0, worst


# ---------------------------------------------------------------- chapter 03: Faster ISNet
def test_03_standard_classifier_reads_the_mark():
    """The standard classifier loses at least 20 points from iid to deceiving biased digits (Faster ISNet Table 1)."""
    r = load_results(CH03)
    iid, dec = (r[CH03.acc(model="Standard classifier", split=s)] for s in ("iid", "deceiving"))
    assert iid - dec >= 20.0, f"standard classifier: iid {iid:.1f}% vs deceiving {dec:.1f}%"


def test_03_reference_classifier_learns_the_digits():
    """The bias-free reference classifier reaches >= 95 % on o.o.d. digits (Faster ISNet Table 1: 98.5 %)."""
    r = load_results(CH03)
    ref = r[CH03.acc(model="Reference classifier", split="ood")]
    assert ref >= 95.0, ref


_FAR_FROM_REFERENCE = pytest.mark.xfail(
    strict=False, reason="does not reproduce at every seed at ci scale (8 epochs on 2,000 digits; the original ISNet 3 "
    "epochs on 800): o.o.d. accuracy more than 10 points below the reference at some of seeds 0-2 "
    "(book/reproduction.md); reported in chapter 03")


@pytest.mark.parametrize("variant", [pytest.param(ISNETS[v], marks=_FAR_FROM_REFERENCE)
                                     for v in ("Original ISNet", "Selective ISNet", "Stochastic ISNet")]
                         + [ISNETS["Dual ISNet"]])
def test_03_isnet_close_to_reference(variant):
    """An ISNet's o.o.d. accuracy is within 10 points of the bias-free reference classifier (Faster ISNet Table 1:
    96.7-98.5 % against 98.5 %). Holds for the Dual ISNet at every seed of the reproduction."""
    r = load_results(CH03)
    ours, ref = r[CH03.acc(model=variant, split="ood")], r[CH03.acc(model="Reference classifier", split="ood")]
    assert ours >= ref - 10.0, (ours, ref)


_NOT_AT_CI_SCALE = pytest.mark.xfail(
    strict=False, reason="does not reproduce at every seed at ci scale (2,000 training images, 8 epochs, 1,000 test "
    "images per split): spreads of 1-5 points across seeds 0-2, like the bias-free reference classifier's own "
    "1-2 points, and 12 points for the Stochastic ISNet at seed 1; reported in chapter 03 and "
    "book/reproduction.md. The test below checks the robustness that does hold.")
_ISNETS = list(ISNETS.values())  # key stems: original, selective, stochastic, dual, selective LDS


def _spread(r, variant):
    accs = [r[CH03.acc(model=variant, split=s)] for s in ISNET_SPLITS]
    return max(accs) - min(accs)


@pytest.mark.parametrize("variant", [pytest.param(v, marks=_NOT_AT_CI_SCALE) for v in _ISNETS])
def test_03_isnet_robust_to_background_bias(variant):
    """Every ISNet variant stays within 3 points across iid / ood / deceiving (Faster ISNet Table 1)."""
    r = load_results(CH03)
    assert _spread(r, variant) <= 3.0, f"{variant}: spread {_spread(r, variant):.1f} points"


@pytest.mark.parametrize("variant", [pytest.param(v, marks=pytest.mark.xfail(
    strict=False, reason="at seed 1 of the reproduction the Stochastic ISNet reads the mark: iid 12 points above "
    "o.o.d. (book/reproduction.md); reported in chapter 03")) if v == ISNETS["Stochastic ISNet"] else v
    for v in _ISNETS])
def test_03_isnet_far_less_bias_sensitive_than_standard(variant):
    """The weaker form that holds at ci scale: each ISNet's iid/ood/deceiving spread is at most a tenth of the
    standard classifier's (Faster ISNet Table 1: 100 → 12.4 % for ResNet-18, no drop for the ISNets)."""
    r = load_results(CH03)
    assert _spread(r, variant) <= 0.1 * _spread(r, "Standard classifier"), \
        f"{variant}: {_spread(r, variant):.1f} vs standard {_spread(r, 'Standard classifier'):.1f} points"


def test_03_faster_isnets_cost_flat_in_the_number_of_classes():
    """Faster ISNet Fig. 5, as timed in the chapter (ci scale, a shared CPU, so with margins: the benchmark
    ``benchmarks/isnet_classes.py`` checks the tighter targets): a Selective or Stochastic step costs a few
    standard steps (at most 5× here; the target is 4×), going from 10 to 1000 classes changes it by less than
    50 %, and the original ISNet's step grows at least 3-fold from 1 to 10 classes."""
    r = load_results(CH03)
    for v in ("selective", "stochastic"):
        over, flat = r[CH03.time_over_standard(variant=v)], r[CH03.time_flat(variant=v, classes=1000)]
        assert over <= 5.0, f"{v}: {over:.2f}× a standard step"
        assert 1 / 1.5 <= flat <= 1.5, f"{v}: 1000/10 classes {flat:.2f}"
    growth = r[CH03.time_original_growth]
    assert growth >= 3.0, f"original ISNet grows only {growth:.2f}×"


# ---------------------------------------------------------------- chapter 06: super-pixel gradients
@pytest.mark.parametrize("method", [m if m != "IG" else pytest.param(m, marks=pytest.mark.xfail(
    strict=False, reason="does not reproduce at ci scale: integrated-gradient maps of the two halves' models are "
    "already smooth and similar (SSIM ~0.7-0.8) and super-pixel averaging lowers their SSIM at seeds 0-2 "
    "(book/reproduction.md); reported in chapter 06")) for m in SP_METHODS])
def test_06_superpixel_maps_more_stable_across_models(method):
    """Super-pixel maps have a higher SSIM between models trained on disjoint halves of the training data than
    pixel maps (Gong et al., Fig. 2 left). Checked on the paired gain (same models, same images): the SSIM itself
    moves by ~0.2 between seeds, the gain by a few hundredths."""
    r = load_results(CH06)
    gain = r.get(CH06.ssim_gain(method=method))
    assert gain is not None, f"{method}: SSIM not measured"
    assert gain > 0, f"{method}: super-pixel SSIM minus pixel SSIM = {gain:+.3f}"


# ---------------------------------------------------------------- chapter 02: LRP and LRP-Flex
def test_02_lrp_flex_equals_zennit_and_captum():
    """LRP-Flex's modified ReLU gradient is LRP-ε (Faster ISNet, Sec. II-G, Appendix A): in float64 it matches
    zennit's LRP-ε, captum's LRP-ε and zennit with ZBox on the first layer to a relative 1e-5."""
    r = load_results(CH02)
    for ref in LRP_REFERENCES:
        key = CH02.max_rel_diff(ref=ref)
        assert r[key] <= 1e-5, f"{key} = {r[key]:.2e}"


def test_02_lrp_flex_costs_about_a_gradient():
    """LRP-Flex takes about the time of a gradient backward pass (Sec. II-G: 'fast, taking advantage of
    highly optimized backpropagation engines'): at most 1.5× Gradient×Input, and faster than zennit."""
    r = load_results(CH02)
    flex, zennit = r[CH02.time_ratio_gxi(method="LRP-Flex")], r[CH02.time_ratio_zennit_flex]
    assert flex <= 1.5, f"LRP-Flex / Gradient×Input = {flex:.2f}"
    assert zennit > 1.0, f"zennit / LRP-Flex = {zennit:.2f}"


def test_02_standard_classifier_heatmaps_show_the_mark():
    """LRP heatmaps of the standard classifier put its positive relevance on the bias mark (Faster ISNet,
    Fig. 2): on deceiving images the mark band holds at least twice its share of the pixels, and more than on
    o.o.d. images without a mark."""
    r = load_results(CH02)
    dec, ood, area = (r[CH02.band_share(split="deceiving")], r[CH02.band_share(split="ood")], r[CH02.band_area])
    assert dec >= 2 * area, (dec, area)
    assert dec > ood, (dec, ood)


def test_02_epsilon_absorbs_relevance_and_zplus_is_positive():
    """ε absorbs relevance (Sec. II-A): the heatmap's total shrinks as ε grows; LRP-z⁺ maps are non-negative
    (Eq. 4)."""
    r = load_results(CH02)
    totals = [r[CH02.conservation(eps=e)] for e in EPSILONS]
    # between two small ε the change is below float32 noise (1e-5 relative; it went either way over seeds 0-2):
    # each step may not grow the total by more than 0.1 %, and ε = 10 must absorb at least half of it
    tol = 1e-3 * abs(totals[0])
    assert all(b <= a + tol for a, b in itertools.pairwise(totals)), totals
    assert totals[-1] <= 0.5 * totals[0], totals
    assert r[CH02.zplus_min] >= 0.0, r[CH02.zplus_min]


# ---------------------------------------------------------------- chapter 05: fictitious class unlearning
def test_05_one_weight_removes_each_class():
    """Editing a single weight drops every removed class's test accuracy to at most 10% (FCR Fig. 6)."""
    r = load_results(CH05)
    assert r[CH05.removal_removed_acc_max(n=1)] <= 10.0, r[CH05.removal_removed_acc_max(n=1)]


def test_05_one_weight_removal_spares_the_other_classes():
    """...while no other class loses more than 2 points (FCR Fig. 6, "without negatively impacting the others").
    Gains are allowed: the removed class's samples move to their second-best class (the chapter reports the
    largest change in either direction, `removal_others_max_abs_change_1w`)."""
    r = load_results(CH05)
    assert r[CH05.removal_others_max_drop(n=1)] <= 2.0, r[CH05.removal_others_max_drop(n=1)]


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.xfail(strict=False, reason="does not reproduce at ci scale: one weight per class moves the worst group by "
                   "a few points only while the mean falls by more than 10 (the shortcut is spread over many "
                   "penultimate features); reported with the numbers in chapter 05 and book/reproduction.md")
def test_05_neutralisation_at_fair_r_raises_worst_group(dataset):
    """Single-weight neutralisation at the fair r (chosen on validation) raises test worst-group accuracy at least
    10 points over ERM for at most 10 points of train-weighted mean (FCR Table 1: 75.3 -> 93.2 % on Waterbirds)."""
    r = load_results(CH05)
    fcr, erm = (r[CH05.wga(dataset=dataset, method=m)] for m in ("FCR (oracle attribute)", "ERM"))
    drop = r[CH05.mean(dataset=dataset, method="ERM")] - r[CH05.mean(dataset=dataset, method="FCR (oracle attribute)")]
    assert fcr >= erm + 10.0 and drop <= 10.0, (
        f"{dataset}: FCR {fcr:.1f}% vs ERM {erm:.1f}%, mean drop {drop:.1f} "
        f"(fair r = {r[CH05.fcr_r(dataset=dataset, variant='oracle')]:.3g})")


# ---------------------------------------------------------------- chapter 07: Neuro-Activated Superpixels
_NAS_METHODS = list(NAS_METHODS)  # display labels: Grad×Input, LRP-Flex, IG, Grad-CAM, Occlusion


def test_07_explained_model_learned_the_task():
    """Chapter 07 explains a classifier that learned its task, as the paper explains torchvision's ImageNet models:
    >= 90 % on the balanced test images it explains."""
    assert load_results(CH07)[CH07.accuracy] >= 90.0


def test_07_nas_improves_iou70_for_most_methods():
    """NAS superpixelification raises IoU@70 over the pixel map for most saliency methods (NAS Table 3, §4.3.3:
    "the consistent improvement in the IoU@70% scores brought by NAS for all saliency methods")."""
    r = load_results(CH07)
    gains = {m: r[CH07.wsol(metric="iou@70", method=m, variant="NAS")]
             - r[CH07.wsol(metric="iou@70", method=m, variant="pixel")] for m in _NAS_METHODS}
    improved = sum(g > 0 for g in gains.values())
    assert improved > len(_NAS_METHODS) / 2, f"IoU@70 gain of +NAS per method (points): {gains}"


@pytest.mark.xfail(strict=False, reason="does not reproduce at ci scale (64 px scenes, a shortcut ERM model): the "
                   "greedy maximum over NAS cells ties with the best superpixelified map; reported in chapter 07")
def test_07_greedy_lerf_beats_superpixelified_maps():
    """The greedy maximisation of AUC-LeRF over NAS cells scores above every NAS-superpixelified saliency map
    (NAS Table 2: "these scores remain at least 10 points smaller than those obtained by maximizing")."""
    r = load_results(CH07)
    best = max(r[CH07.auc_lerf(method=m, variant="NAS")] for m in _NAS_METHODS)
    greedy = r[CH07.auc_lerf_greedy(variant="NAS")]
    assert greedy > best, f"greedy {greedy:.1f} vs best +NAS map {best:.1f}"


# ---------------------------------------------------------------- chapter 04: ExMap
_DFR_PREMISE = {"spurious_scenes": (85.0, 8.0), "colored_digits": (65.0, 15.0)}


@pytest.mark.parametrize("dataset", DATASETS)
def test_04_oracle_dfr_recovers_the_worst_group(dataset):
    """DFR's premise: ERM's embedding holds the core feature, so a last layer retrained on group-balanced validation
    data lifts the worst group (DFR; ExMap Tables 1-2: 92.1 % Waterbirds, 74.2 % C-MNIST): scenes >= 85 % and
    >= ERM + 8, colored digits >= 65 % and >= ERM + 15."""
    r = load_results(CH04)
    oracle, erm = (r[CH04.wga(dataset=dataset, method=m)] for m in ("DFR (oracle groups)", "ERM"))
    floor, gain = _DFR_PREMISE[dataset]
    assert oracle >= floor and oracle >= erm + gain, f"{dataset}: oracle DFR {oracle:.1f}% vs ERM {erm:.1f}%"


@pytest.mark.parametrize("dataset", DATASETS)
def test_04_exmap_improves_on_erm(dataset):
    """DFR with ExMap pseudo groups (spectral, global; no group labels) raises ERM's worst-group accuracy by at
    least 5 points (ExMap Tables 1-2: 'ExMap based DFR improves significantly upon ERM': +15.7 on Waterbirds)."""
    r = load_results(CH04)
    exmap, erm = (r[CH04.wga(dataset=dataset, method=m)] for m in ("DFR+ExMap (spectral, global)", "ERM"))
    assert exmap >= erm + 5.0, f"{dataset}: DFR+ExMap WGA {exmap:.1f}% vs ERM {erm:.1f}%"


@pytest.mark.parametrize("dataset", DATASETS)
def test_04_exmap_close_to_oracle_dfr(dataset):
    """DFR+ExMap's worst-group accuracy is within 10 points of DFR with the true validation groups (ExMap Sec. 5.1:
    'within 3% 2% 8% and 6% of the DFR results')."""
    r = load_results(CH04)
    exmap, oracle = (r[CH04.wga(dataset=dataset, method=m)] for m in ("DFR+ExMap (spectral, global)",
                                                                       "DFR (oracle groups)"))
    assert exmap >= oracle - 10.0, f"{dataset}: DFR+ExMap WGA {exmap:.1f}% vs oracle DFR {oracle:.1f}%"


@pytest.mark.parametrize("dataset", DATASETS)
def test_04_exmap_vs_george_reported(dataset):
    """DFR+ExMap vs GEORGE(DFR) (ExMap: heatmap clusters beat feature clusters) is reported either way: both
    worst-group accuracies and the ARI of both partitions were measured; the comparison is in the chapter."""
    r = load_results(CH04)
    for family in (CH04.wga, CH04.ari):
        for method in ("DFR+ExMap (spectral, global)", "GEORGE(DFR)"):
            key = family(dataset=dataset, method=method)
            assert r.get(key) is not None, f"{key} not measured"
