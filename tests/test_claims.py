"""The papers' qualitative claims, checked on the numbers each chapter wrote to results/<chapter>.json.

`make test` executes every chapter (profile ci) before running this file. A claim that does not hold at
our scale fails here and is reported in the chapter's text, never hidden.
"""
import json
import os
from pathlib import Path

import pytest

RESULTS = Path(os.environ.get("XAI_ROBUST_RESULTS", Path(__file__).resolve().parents[1] / "results"))


def load_results(name: str) -> dict:
    """The results JSON of chapter `name`; skips the test when the chapter has not been executed."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path} missing: execute notebooks/{name}.ipynb first (make test does)")
    return json.loads(path.read_text())


# ---------------------------------------------------------------- chapter 01: shortcuts
@pytest.mark.parametrize("dataset", ["colored_digits", "spurious_scenes"])
def test_01_erm_worst_group_far_below_mean(dataset):
    """ERM's worst-group accuracy is at least 20 points below its mean accuracy (ExMap Table 1, DFR)."""
    r = load_results("01_shortcuts")
    mean, worst = r[f"{dataset}_erm_mean_acc"], r[f"{dataset}_erm_worst_group_acc"]
    assert mean - worst >= 20.0, f"{dataset}: mean {mean:.1f}% vs worst group {worst:.1f}%"


# ---------------------------------------------------------------- chapter 03: Faster ISNet
def test_03_standard_classifier_reads_the_mark():
    """The standard classifier loses at least 20 points from iid to deceiving biased digits (Faster ISNet Table 1)."""
    r = load_results("03_faster_isnet")
    iid, dec = r["standard_classifier_iid_acc"], r["standard_classifier_deceiving_acc"]
    assert iid - dec >= 20.0, f"standard classifier: iid {iid:.1f}% vs deceiving {dec:.1f}%"


@pytest.mark.parametrize("variant", ["original_isnet", "selective_isnet", "stochastic_isnet", "dual_isnet",
                                     "selective_isnet_lds"])
def test_03_isnet_robust_to_background_bias(variant):
    """Every ISNet variant stays within 3 points across iid / ood / deceiving (Faster ISNet Table 1)."""
    r = load_results("03_faster_isnet")
    accs = {s: r[f"{variant}_{s}_acc"] for s in ("iid", "ood", "deceiving")}
    assert max(accs.values()) - min(accs.values()) <= 3.0, f"{variant}: {accs}"


# ---------------------------------------------------------------- chapter 06: super-pixel gradients
@pytest.mark.parametrize("method", ["SG", "SmoothGrad", "IG"])
def test_06_superpixel_maps_more_stable_across_models(method):
    """Super-pixel maps have a higher SSIM between models trained on disjoint halves of the training data
    than pixel maps, for Simple Gradient, SmoothGrad and Integrated Gradients (Gong et al., Fig. 2 left)."""
    r = load_results("06_superpixel_gradients")
    pixel, sup = r[f"ssim_halves_{method}_pixel"], r[f"ssim_halves_{method}_superpixel"]
    assert pixel is not None and sup is not None, f"{method}: SSIM not measured"
    assert sup > pixel, f"{method}: super-pixel SSIM {sup:.3f} <= pixel SSIM {pixel:.3f}"
