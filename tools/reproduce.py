"""Reproduction at several seeds: execute every chapter (profile ``ci``) at seeds 0, 1, 2 and tabulate the claims.

``python tools/reproduce.py [--seeds 0 1 2] [--only 01 04]``

- executes each chapter with papermill and ``seed = s`` into ``_build/reproduce/seed<s>/``, its results JSON into
  ``results/reproduce/seed<s>/`` (nothing under ``notebooks/`` is written);
- writes ``results/reproduction.json``: for every chapter and every number it saved, the value per seed, the mean,
  the standard deviation over seeds (ddof = 1) and the range;
- writes ``book/reproduction.md`` (the book's reproduction page: every claim's figure per seed, mean ± sd, the
  paper's number and the claim tested) and ``book/reproduction.json`` (the same statistics, which chapters read to
  show a figure's spread beside it), unless ``--no-record``.

A full run costs about three times ``make chapters``. ``make reproduce`` calls this script.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from book import notebooks  # noqa: E402

# (chapter, result key or (key_a, key_b) for the per-seed difference a - b, what it is, the paper's number or None,
#  the claim tested on it)
CLAIMS = [
    ("01_shortcuts", "spurious_scenes_erm_weighted_mean_acc", "scenes ERM: mean (train-weighted)", 98.1,
     "≥ 95 %"),
    ("01_shortcuts", "spurious_scenes_erm_worst_group_acc", "scenes ERM: worst group", 76.8, "25–92 %"),
    ("01_shortcuts", "colored_digits_erm_weighted_mean_acc", "colored digits ERM: mean (train-weighted)", 99.3,
     "≥ 95 %"),
    ("01_shortcuts", "colored_digits_erm_worst_group_acc", "colored digits ERM: worst group", 39.6, "reported"),
    ("01_shortcuts", ("spurious_scenes_erm_weighted_mean_acc", "spurious_scenes_erm_worst_group_acc"),
     "scenes ERM: mean − worst group", 21.3, "≥ 10 points"),
    ("01_shortcuts", ("colored_digits_erm_weighted_mean_acc", "colored_digits_erm_worst_group_acc"),
     "colored digits ERM: mean − worst group", 59.7, "≥ 10 points"),
    ("04_exmap", "spurious_scenes_dfr_oracle_groups_wga", "scenes oracle DFR: worst group", 92.1,
     "≥ 85 % and ≥ ERM + 8"),
    ("04_exmap", "spurious_scenes_dfr_exmap_spectral_global_wga", "scenes DFR+ExMap (spectral, global): worst group",
     92.5, "within 10 of oracle DFR, ≥ ERM + 5"),
    ("04_exmap", ("spurious_scenes_dfr_oracle_groups_wga", "spurious_scenes_erm_wga"),
     "scenes oracle DFR − ERM (worst group)", 15.3, "≥ 8 points"),
    ("04_exmap", ("spurious_scenes_dfr_exmap_spectral_global_wga", "spurious_scenes_erm_wga"),
     "scenes DFR+ExMap − ERM (worst group)", 15.7, "≥ 5 points"),
    ("04_exmap", ("spurious_scenes_dfr_oracle_groups_wga", "spurious_scenes_dfr_exmap_spectral_global_wga"),
     "scenes oracle DFR − DFR+ExMap (worst group)", -0.4, "≤ 10 points"),
    ("04_exmap", "spurious_scenes_georgedfr_wga", "scenes GEORGE(DFR): worst group", 91.7, "reported"),
    ("04_exmap", "colored_digits_dfr_oracle_groups_wga", "colored digits oracle DFR: worst group", 74.2,
     "≥ 65 % and ≥ ERM + 15"),
    ("04_exmap", ("colored_digits_dfr_oracle_groups_wga", "colored_digits_erm_wga"),
     "colored digits oracle DFR − ERM (worst group)", 34.6, "≥ 15 points"),
    ("04_exmap", "colored_digits_dfr_exmap_spectral_global_wga", "colored digits DFR+ExMap: worst group", 72.5,
     "≥ ERM + 5, within 10 of oracle DFR"),
    ("04_exmap", "colored_digits_jtt_wga", "colored digits JTT: worst group", None, "reported"),
    ("05_fictitious_class_unlearning", "spurious_scenes_fcr_wga", "scenes FCR at the fair r: worst group", None,
     "≥ ERM + 10"),
    ("05_fictitious_class_unlearning", ("spurious_scenes_fcr_wga", "spurious_scenes_erm_wga"),
     "scenes FCR − ERM (worst group)", 17.9, "≥ 10 points"),
    ("05_fictitious_class_unlearning", ("spurious_scenes_erm_mean", "spurious_scenes_fcr_mean"),
     "scenes ERM − FCR (train-weighted mean)", None, "≤ 10 points"),
    ("05_fictitious_class_unlearning", "colored_digits_fcr_wga", "colored digits FCR at the fair r: worst group",
     None, "reported"),
    ("05_fictitious_class_unlearning", "removal_removed_acc_max_1w", "one-weight class removal: removed class (max)",
     None, "≤ 10 %"),
    ("05_fictitious_class_unlearning", "removal_others_max_drop_1w", "one-weight class removal: others' largest drop",
     None, "≤ 2 points"),
    ("03_faster_isnet", "reference_classifier_ood_acc", "biased digits: reference classifier (ood)", 98.5, "≥ 95 %"),
    ("03_faster_isnet", "standard_classifier_iid_acc", "biased digits: standard classifier (iid)", 100.0,
     "iid − deceiving ≥ 20"),
    ("03_faster_isnet", "standard_classifier_deceiving_acc", "biased digits: standard classifier (deceiving)", 12.4,
     "iid − deceiving ≥ 20"),
    ("03_faster_isnet", ("standard_classifier_iid_acc", "standard_classifier_deceiving_acc"),
     "biased digits: standard classifier iid − deceiving", 87.6, "≥ 20 points"),
    ("03_faster_isnet", "selective_isnet_ood_acc", "Selective ISNet (ood)", 96.7, "within 10 of the reference"),
    ("03_faster_isnet", "selective_isnet_max_gap", "Selective ISNet: iid/ood/deceiving spread", 0.0, "≤ 3 points"),
    ("03_faster_isnet", "stochastic_isnet_ood_acc", "Stochastic ISNet (ood)", 98.3, "within 10 of the reference"),
    ("03_faster_isnet", "stochastic_isnet_max_gap", "Stochastic ISNet: spread", 0.0, "≤ 3 points"),
    ("03_faster_isnet", "dual_isnet_ood_acc", "Dual ISNet (ood)", 97.9, "within 10 of the reference"),
    ("03_faster_isnet", "dual_isnet_max_gap", "Dual ISNet: spread", 0.0, "≤ 3 points"),
    ("03_faster_isnet", "original_isnet_ood_acc", "original ISNet (ood)", 98.5, "within 10 of the reference"),
    ("03_faster_isnet", "original_isnet_max_gap", "original ISNet: spread", 0.0, "≤ 3 points"),
    ("03_faster_isnet", "selective_isnet_lds_max_gap", "Selective ISNet LDS: spread", None, "≤ 3 points"),
    ("02_lrp_flex", "max_rel_diff_zennit_eps", "LRP-Flex vs zennit LRP-ε (max rel. difference)", None, "≤ 1e-5"),
    ("02_lrp_flex", "band_share_deceiving", "relevance share of the mark band (deceiving)", None, "≥ 2 × its area"),
    ("06_superpixel_gradients", "ssim_halves_SG_pixel", "SSIM across halves: gradient, pixel", None, "< super-pixel"),
    ("06_superpixel_gradients", "ssim_halves_SG_superpixel", "SSIM across halves: gradient, super-pixel", None,
     "> pixel"),
    ("06_superpixel_gradients", "ssim_halves_SmoothGrad_pixel", "SSIM across halves: SmoothGrad, pixel", None,
     "< super-pixel"),
    ("06_superpixel_gradients", "ssim_halves_SmoothGrad_superpixel", "SSIM across halves: SmoothGrad, super-pixel",
     None, "> pixel"),
    ("06_superpixel_gradients", "ssim_halves_IG_pixel", "SSIM across halves: IG, pixel", None, "< super-pixel"),
    ("06_superpixel_gradients", "ssim_halves_IG_superpixel", "SSIM across halves: IG, super-pixel", None, "> pixel"),
    ("06_superpixel_gradients", "ssim_halves_SG_gain", "SSIM gain of super-pixels: gradient", None, "> 0"),
    ("06_superpixel_gradients", "ssim_halves_SmoothGrad_gain", "SSIM gain of super-pixels: SmoothGrad", None,
     "> 0"),
    ("06_superpixel_gradients", "ssim_halves_IG_gain", "SSIM gain of super-pixels: IG", None, "> 0"),
    ("07_neuro_activated_superpixels", "accuracy", "NAS: accuracy of the explained model (balanced test)", None,
     "≥ 90 %"),
    ("07_neuro_activated_superpixels", "n_iou70_improved", "NAS: methods whose IoU@70 improves with NAS (of 5)",
     None, "> 2.5"),
    ("07_neuro_activated_superpixels", "auc_lerf_greedy_nas", "NAS: greedy AUC-LeRF over NAS cells", None,
     "> every +NAS map"),
]


def run(seeds, only=None):
    import papermill

    os.environ.pop("MPLBACKEND", None)
    # execute a snapshot of the chapters, so that editing a notebook during the (long) run cannot mix versions
    src = ROOT / "_build" / "reproduce" / "src"
    src.mkdir(parents=True, exist_ok=True)
    chapters = []
    for nb in notebooks(only):
        (src / nb.name).write_bytes(nb.read_bytes())
        chapters.append(src / nb.name)
    times = {}
    for s in seeds:
        out = ROOT / "_build" / "reproduce" / f"seed{s}"
        out.mkdir(parents=True, exist_ok=True)
        os.environ["XAI_ROBUST_RESULTS"] = str(ROOT / "results" / "reproduce" / f"seed{s}")
        os.environ.setdefault("XAI_ROBUST_PROGRESS", "static")  # one line per loop, no widget state
        for nb in chapters:
            start = time.time()
            print(f"[reproduce] seed {s}: {nb.name} ...", flush=True)
            papermill.execute_notebook(str(nb), str(out / nb.name), kernel_name="python3",
                                       parameters={"profile": "ci", "seed": s}, cwd=str(ROOT / "notebooks"),
                                       progress_bar=False, language="python", log_output=False)
            times[(s, nb.stem)] = time.time() - start
            print(f"[reproduce] seed {s}: {nb.name} {times[(s, nb.stem)]:.0f} s", flush=True)
    return times


def aggregate(seeds):
    """Statistics over seeds of every number each chapter saved: {chapter: {key: {...}}}."""
    table = {}
    for nb in notebooks():
        per_seed = {}
        for s in seeds:
            path = ROOT / "results" / "reproduce" / f"seed{s}" / f"{nb.stem}.json"
            if path.exists():
                per_seed[s] = json.loads(path.read_text())
        if not per_seed:
            continue
        keys = sorted(set().union(*per_seed.values()))
        chapter = {}
        for key in keys:
            values = {s: r.get(key) for s, r in per_seed.items()}
            finite = [v for v in values.values() if isinstance(v, (int, float))]
            entry = {"seeds": {str(s): v for s, v in values.items()}}
            if finite:
                entry.update(mean=statistics.fmean(finite), min=min(finite), max=max(finite),
                             sd=statistics.stdev(finite) if len(finite) > 1 else 0.0, n=len(finite))
            chapter[key] = entry
        table[nb.stem] = chapter
    return table


def _per_seed(chapter_table, key, seeds):
    """{seed: value} of a figure, or of the difference of two figures when ``key`` is a pair; None if unmeasured."""
    keys = key if isinstance(key, tuple) else (key,)
    if any(k not in chapter_table for k in keys):
        return None
    out = {}
    for s in seeds:
        parts = [chapter_table[k]["seeds"].get(str(s)) for k in keys]
        if all(isinstance(p, (int, float)) for p in parts):
            out[s] = parts[0] - parts[1] if len(parts) == 2 else parts[0]
    return out


def _fmt(v):
    if v is None:
        return "–"
    if isinstance(v, float) and abs(v) < 1e-3 and v != 0:
        return f"{v:.1e}"
    return f"{v:.1f}" if abs(v) >= 1 or v == 0 else f"{v:.3f}"


def markdown(table, seeds, times):
    lines = ["# Reproduction at several seeds", "",
             f"Every chapter executed in the `ci` profile at seeds {', '.join(map(str, seeds))} by `make reproduce` "
             f"(`tools/reproduce.py`) on {date.today().isoformat()}, {platform.machine()}, "
             f"{os.cpu_count()} CPU cores. The seed sets each chapter's data, initialisations and batch orders; the "
             "pretrained backbones are one fixed artifact (like ImageNet weights). A claim is tested only where its "
             "effect exceeds the spread below; the claims tests are in `tests/test_claims.py`.", "",
             "| chapter | figure | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd | paper | claim |",
             "| --- | --- | " + " | ".join("---" for _ in seeds) + " | --- | --- | --- |"]
    for chapter, key, what, paper, claim in CLAIMS:
        values = _per_seed(table.get(chapter, {}), key, seeds)
        if values is None:
            continue
        cells = [_fmt(values.get(s)) for s in seeds]
        finite = [v for v in values.values() if isinstance(v, (int, float))]
        spread = "–" if not finite else \
            f"{_fmt(statistics.fmean(finite))} ± {_fmt(statistics.stdev(finite) if len(finite) > 1 else 0.0)}"
        lines.append(f"| {chapter[:2]} | {what} | " + " | ".join(cells) + f" | {spread} | {_fmt(paper)} | {claim} |")
    if times:
        lines += ["", "Chapter wall times (s): " + "; ".join(
            f"{c} seed {s}: {t:.0f}" for (s, c), t in sorted(times.items(), key=lambda kv: (kv[0][1], kv[0][0])))]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", help="substrings of notebook names to run (default: all)")
    parser.add_argument("--aggregate-only", action="store_true", help="tabulate existing results, run nothing")
    parser.add_argument("--no-record", action="store_true", help="do not write book/reproduction.{md,json}")
    args = parser.parse_args()
    times = {} if args.aggregate_only else run(args.seeds, args.only)
    times_file = ROOT / "results" / "reproduce" / "times.json"  # merged over runs (e.g. one chapter re-run)
    recorded = json.loads(times_file.read_text()) if times_file.exists() else {}
    recorded.update({f"{s}|{c}": t for (s, c), t in times.items()})
    times_file.parent.mkdir(parents=True, exist_ok=True)
    times_file.write_text(json.dumps(recorded, indent=1, sort_keys=True))
    times = {(int(k.split("|")[0]), k.split("|")[1]): t for k, t in recorded.items() if int(k.split("|")[0]) in
             args.seeds}
    table = aggregate(args.seeds)
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "reproduction.json").write_text(json.dumps(table, indent=1, sort_keys=True))
    page = markdown(table, args.seeds, times)
    print(page)
    if not args.no_record:
        (ROOT / "book" / "reproduction.md").write_text(page)
        slim = {c: {k: {f: e[f] for f in ("mean", "sd", "min", "max", "n") if f in e} for k, e in t.items()}
                for c, t in table.items()}
        (ROOT / "book" / "reproduction.json").write_text(json.dumps(
            {"seeds": args.seeds, "date": date.today().isoformat(), "chapters": slim}, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
