"""The results recorder: declared keys with units, one call for the JSON and the prose's glue."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

import xai_robust
from xai_robust import results
from xai_robust.results import CH03, CH05, CHAPTERS, Recorder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def glued(monkeypatch):
    """Capture myst_nb.glue calls: a list of (name, value, display)."""
    import myst_nb

    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: calls.append((name, value, display)))
    return calls


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_ROBUST_RESULTS", str(tmp_path))
    return tmp_path


def test_undeclared_key_raises_naming_the_chapter(glued):
    rec = Recorder("03_faster_isnet")
    with pytest.raises(KeyError, match="not a declared result of chapter 03_faster_isnet"):
        rec("standard_classifier_iid_accuracy", 99.0)
    with pytest.raises(KeyError, match="did you mean"):
        rec("standard_clasifier_iid_acc", 99.0)
    with pytest.raises(KeyError, match="no results declared"):
        Recorder("99_nothing")
    assert rec.values == {} and glued == []


@pytest.mark.parametrize("key,value", [
    ("standard_classifier_iid_acc", 101.0),          # % above 100
    ("standard_classifier_iid_acc", -0.5),           # % below 0
    ("isnet_n_within_3_points", -1),                 # negative count
    ("time_original_growth", -2.0),                  # negative ratio
    ("standard_classifier_iid_acc", float("inf")),   # not a measured number
])
def test_unit_violation_raises(key, value, glued):
    rec = Recorder("03_faster_isnet")
    with pytest.raises(ValueError, match="outside|not a measured"):
        rec(key, value)
    assert key not in rec and glued == []


def test_fraction_and_flag_ranges():
    with pytest.raises(ValueError, match="'fraction'"):
        Recorder("02_lrp_flex")("acc_iid", 99.9)  # a percentage where a fraction is declared
    with pytest.raises(ValueError, match="integer"):
        Recorder("06_superpixel_gradients")("claim_ssim_superpixel_gt_pixel", 0.5)
    with pytest.raises(ValueError, match="outside"):
        Recorder("07_neuro_activated_superpixels")("ward_deterministic", 2)


def test_points_any_sign_and_nan_means_not_measured(glued):
    rec = Recorder("04_exmap")
    assert rec("multi_erm_bg_gap", -81.6, glue=False) == -81.6
    assert math.isnan(rec("colored_digits_erm_wga", float("nan"), glue=False))
    assert rec("colored_digits_erm_wga", 100.0 * (1 + 1e-12), glue=False) > 100  # rounding at the bound is tolerated


def test_glue_name_default_explicit_scaled_and_off(glued):
    rec = Recorder("02_lrp_flex")
    assert rec("zplus_min", torch.tensor(0.0)) == 0.0                 # glued under its key
    rec("time_ratio_flex_gxi", 1.1, glue="ratio_flex")                # under the prose's short name
    rec("acc_iid", 0.999, glue_scale=100)                             # a fraction shown in percent
    rec("band_area", 0.18, glue=False)                                # stored, not glued
    rec.glue("bench_batch", 64)                                       # prose only, not a result
    assert [(n, pytest.approx(v), d) for n, v, d in glued] == [
        ("zplus_min", 0.0, False), ("ratio_flex", 1.1, False), ("acc_iid", 99.9, False), ("bench_batch", 64, False)]
    assert set(rec.values) == {"zplus_min", "time_ratio_flex_gxi", "acc_iid", "band_area"}
    assert type(rec["zplus_min"]) is float  # tensors are unwrapped


def test_save_writes_the_json_atomically(results_dir, glued):
    rec = Recorder("05_fictitious_class_unlearning")
    rec(CH05.removal_base_acc, 88.5)
    rec(CH05.removal_literal_n_backfired, torch.tensor(2))
    rec(CH05.fict(score="sca", what="siblings_r1"), float("nan"))
    path = rec.save()
    assert path == results_dir / "05_fictitious_class_unlearning.json"
    assert json.loads(path.read_text()) == {"removal_base_acc": 88.5, "removal_literal_n_backfired": 2,
                                            "fict_sca_siblings_r1": None}
    assert not list(results_dir.glob("*.tmp"))
    assert xai_robust.load_results("05_fictitious_class_unlearning")["removal_base_acc"] == 88.5


def test_families_take_labels_or_stems_and_refuse_others():
    assert CH03.acc(model="Selective ISNet LDS", split="ood") == "selective_isnet_lds_ood_acc"
    assert CH03.acc(model="selective_isnet_lds", split="ood") == "selective_isnet_lds_ood_acc"
    assert CH03.acc(model="ISNet Softmax Grad*Input", split="iid") == "isnet_softmax_gradxinput_iid_acc"
    assert results.CH04.wga(dataset="spurious_scenes", method="DFR+ExMap (k-means, global)") == \
        "spurious_scenes_dfr_exmap_k-means_global_wga"
    assert results.CH07.wsol(metric="iou@70", method="Grad-CAM", variant="NAS") == "iou70_gradcam_nas"
    with pytest.raises(KeyError, match="not a declared model"):
        CH03.acc(model="Fast ISNet", split="iid")
    with pytest.raises(TypeError, match="needs"):
        CH03.acc(model="RRR")
    with pytest.raises(AttributeError, match="declares no result"):
        CH03.time_original_grow  # noqa: B018
    assert CH03.time_original_growth == "time_original_growth"
    # a free axis (group names come from the dataset) still checks the rest of the key
    assert results.CH01["colored_digits_erm_group_digit<5 (red)"].unit == "%"
    assert "colored_digits_erm_group_x" in results.CH01 and "mnist_erm_group_x" not in results.CH01


def test_every_key_declared_once_with_a_unit_and_description():
    for name, chapter in CHAPTERS.items():
        names = chapter.names()
        assert len(names) == len(set(names)), name
        for key in names:
            spec = chapter[key]
            assert spec.unit in results.UNITS and spec.description and "{" not in spec.description, (name, key)
    assert results.key_table("03_faster_isnet").loc["time_original_growth", "unit"] == "×"


def test_recorded_reproduction_and_claims_read_declared_keys():
    """book/reproduction.json (every figure of every chapter at seeds 0-2) and tools/reproduce.py's claims use
    declared keys only."""
    table = json.loads((ROOT / "book" / "reproduction.json").read_text())
    for chapter, figures in table["chapters"].items():
        undeclared = [k for k in figures if k not in CHAPTERS[chapter]]
        assert not undeclared, (chapter, undeclared)
    sys.path.insert(0, str(ROOT / "tools"))
    from reproduce import CLAIMS

    for chapter, key, *_ in CLAIMS:
        for k in (key if isinstance(key, tuple) else (key,)):
            assert k in CHAPTERS[chapter], (chapter, k)


def test_package_reexports_the_json_helpers():
    for name in ("save_results", "load_results", "seed_spread", "_reproduction_table"):
        assert getattr(xai_robust, name) is getattr(results, name)
