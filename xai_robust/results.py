"""The chapters' results: every number a chapter cites, declared once with its unit, recorded in one call.

Each chapter's keys are declared here, in a :class:`Chapter` table: a key (the name in ``results/<chapter>.json``),
its unit and a one-line description. Keys that repeat over methods, splits or datasets are declared as a
:class:`Family`, a template such as ``"{model}_{split}_acc"`` whose axes list their stems explicitly, as a mapping
from the display label a chapter's tables use to the key stem (``{"Selective ISNet": "selective_isnet", ...}``):
renaming a table row changes the label, never the key. ``tests/test_claims.py`` and ``tools/reproduce.py`` read the
same keys.

A chapter records through a :class:`Recorder`::

    rec = Recorder("03_faster_isnet")
    K = rec.keys                                   # the chapter's table: K.acc(model="Dual ISNet", split="ood")
    rec(K.acc(model=name, split="iid"), 99.1, glue="std_iid")   # stored for the JSON and glued for the prose
    rec.save()                                     # results/03_faster_isnet.json, written atomically

An undeclared key, or a value outside its unit's range (a "%" outside [0, 100], a "fraction" outside [0, 1], a
negative count or time), raises at once, in the cell that computed it.

Units: ``%`` [0, 100]; ``fraction`` [0, 1]; ``points`` (a difference of percentages, any sign); ``×`` (a ratio,
≥ 0); ``s`` and ``ms`` (times, ≥ 0); ``count`` (≥ 0, a mean count may be fractional); ``index`` (an integer ≥ 0);
``flag`` (0 or 1); ``value`` (any other real: a correlation, an SSIM, a relevance total). NaN stands for "not
measured" in every unit (written as ``null``).
"""
from __future__ import annotations

import difflib
import itertools
import json
import math
import os
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["UNITS", "Key", "Family", "Chapter", "CHAPTERS", "Recorder", "Timings", "key_table", "save_results",
           "load_results", "seed_spread", "CH01", "CH02", "CH03", "CH04", "CH05", "CH06", "CH07"]

#: unit → (lowest, highest) allowed value (None: unbounded), and whether it must be an integer
UNITS = {
    "%": (0.0, 100.0, False),
    "fraction": (0.0, 1.0, False),
    "points": (None, None, False),
    "×": (0.0, None, False),
    "s": (0.0, None, False),
    "ms": (0.0, None, False),
    "count": (0.0, None, False),
    "index": (0.0, None, True),
    "flag": (0.0, 1.0, True),
    "value": (None, None, False),
}
_TOLERANCE = 1e-9  # relative slack at a bound (100 * a mean of ones may round a hair above 100)


@dataclass(frozen=True)
class Key:
    """One declared result: its JSON key, unit and a one-line description."""

    name: str
    unit: str
    description: str

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"result {self.name!r}: unknown unit {self.unit!r}; one of {list(UNITS)}")

    def check(self, value: float) -> None:
        """Raise ``ValueError`` when ``value`` is outside the unit's range (NaN, "not measured", passes)."""
        if isinstance(value, float) and math.isnan(value):
            return
        if isinstance(value, float) and math.isinf(value):
            raise ValueError(f"result {self.name!r} ({self.unit}) is {value}: not a measured number")
        low, high, integer = UNITS[self.unit]
        slack = _TOLERANCE * max(1.0, abs(low or 0.0), abs(high or 0.0))
        if (low is not None and value < low - slack) or (high is not None and value > high + slack):
            span = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            raise ValueError(f"result {self.name!r} = {value!r} is outside {span}, the range of its unit "
                             f"{self.unit!r} ({self.description}); record it in its declared unit (e.g. 100 × a "
                             "fraction for a '%') or fix its declaration in xai_robust/results.py")
        if integer and value != int(value):
            raise ValueError(f"result {self.name!r} = {value!r} must be an integer ({self.unit})")


def _axis(values) -> dict:
    """An axis as ``{accepted name: stem}``: a mapping label → stem also accepts the stems themselves."""
    if values is None:
        return {}
    if isinstance(values, dict):
        out = {str(k): str(v) for k, v in values.items()}
        out.update({v: v for v in out.values()})
        return out
    return {str(v): str(v) for v in values}


class Family:
    """Keys built from one template over declared axes: ``Family(...)(model="Dual ISNet", split="ood")``.

    Each axis is a mapping from display label to key stem (labels and stems are both accepted when building a
    key), a sequence of stems, or ``None`` for a free axis whose stems come from the data (a dataset's group
    names). The description may name the axes too (``"accuracy of {model} on {split}"``).
    """

    def __init__(self, template: str, unit: str, description: str, **axes):
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        if sorted(fields) != sorted(axes):
            raise ValueError(f"family {template!r}: axes {sorted(axes)} do not match the template's {sorted(fields)}")
        self.template, self.unit, self.description = template, unit, description
        self.axes = {name: _axis(v) for name, v in axes.items()}
        self.free = {name for name, v in axes.items() if v is None}
        Key(template, unit, description)  # validates the unit

    def stems(self, axis: str) -> list:
        """The declared stems of one axis, in declaration order."""
        return list(dict.fromkeys(self.axes[axis].values()))

    def __call__(self, **parts) -> str:
        if sorted(parts) != sorted(self.axes):
            raise TypeError(f"{self.template!r} needs {sorted(self.axes)}, got {sorted(parts)}")
        stems = {}
        for axis, part in parts.items():
            if axis in self.free:
                stems[axis] = str(part)
                continue
            part = str(part)
            if part not in self.axes[axis]:
                raise KeyError(f"{part!r} is not a declared {axis} of {self.template!r}: one of "
                               f"{sorted(set(self.axes[axis]))}")
            stems[axis] = self.axes[axis][part]
        return self.template.format(**stems)

    def key(self, name: str) -> Key | None:
        """The :class:`Key` of ``name`` when this family generates it, else None."""
        for combo in self._combos():
            if self.template.format(**combo) == name:
                return Key(name, self.unit, self.description.format(**combo))
        if self.free:
            fixed = [a for a in self.axes if a not in self.free]
            for combo in itertools.product(*(self.stems(a) for a in fixed)):
                pattern = dict(zip(fixed, combo, strict=True))
                if _matches(self.template, pattern, self.free, name):
                    return Key(name, self.unit, self.description.format_map(_Default(pattern)))
        return None

    def _combos(self):
        if self.free:
            return
        names = list(self.axes)
        for combo in itertools.product(*(self.stems(a) for a in names)):
            yield dict(zip(names, combo, strict=True))

    def names(self) -> list:
        """Every key of the family (a family with a free axis lists none: its stems come from the data)."""
        return [self.template.format(**c) for c in self._combos()]


class _Default(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def _matches(template: str, fixed: dict, free: set, name: str) -> bool:
    import re

    pattern = re.escape(template.format_map(_Default({**fixed, **{f: f"\0{f}\0" for f in free}})))
    for f in free:
        pattern = pattern.replace(re.escape(f"\0{f}\0"), r".+")
    return re.fullmatch(pattern, name) is not None


class Chapter:
    """A chapter's declared results: single keys and families; ``chapter.<key>`` and ``chapter.<family>(...)``.

    Attribute access returns the key string, so a misspelt key is an ``AttributeError`` where it is used.
    """

    def __init__(self, name: str):
        self.name = name
        self._keys: dict[str, Key] = {}
        self._families: dict[str, Family] = {}
        CHAPTERS[name] = self

    def key(self, name: str, unit: str, description: str) -> str:
        """Declare one key."""
        if name in self._keys:
            raise ValueError(f"{self.name}: {name!r} declared twice")
        self._keys[name] = Key(name, unit, description)
        return name

    def family(self, attr: str, template: str, unit: str, description: str, **axes) -> Family:
        """Declare a family of keys, reachable as ``chapter.<attr>(**parts)``."""
        if attr in self._families or attr in self.__dict__:
            raise ValueError(f"{self.name}: family {attr!r} declared twice")
        fam = self._families[attr] = Family(template, unit, description, **axes)
        return fam

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._families:
            return self._families[name]
        if name in self._keys:
            return name
        close = difflib.get_close_matches(name, list(self._keys) + list(self._families), n=3)
        raise AttributeError(f"{self.name} declares no result or family {name!r}"
                             + (f" (did you mean {close}?)" if close else ""))

    def __getitem__(self, name: str) -> Key:
        """The :class:`Key` declared for ``name`` (a single key or a member of a family)."""
        if name in self._keys:
            return self._keys[name]
        for fam in self._families.values():
            found = fam.key(name)
            if found is not None:
                return found
        close = difflib.get_close_matches(name, self.names(), n=3)
        raise KeyError(f"{name!r} is not a declared result of chapter {self.name}: declare it (unit and description) "
                       "in xai_robust/results.py" + (f"; did you mean {close}?" if close else ""))

    def __contains__(self, name: str) -> bool:
        try:
            self[name]
        except KeyError:
            return False
        return True

    def names(self) -> list:
        """Every declared key (families with a free axis contribute none)."""
        out = list(self._keys)
        for fam in self._families.values():
            out += fam.names()
        return out

    @property
    def families(self) -> dict:
        return dict(self._families)

    def __len__(self):
        return len(self.names())


#: chapter name → its :class:`Chapter` table
CHAPTERS: dict[str, Chapter] = {}

DATASETS = ("colored_digits", "spurious_scenes")
_SHORT = {"colored_digits": "colored digits", "spurious_scenes": "spurious scenes"}

# ------------------------------------------------------------------------------------------ 01 shortcuts
CH01 = Chapter("01_shortcuts")
CH01.family("erm_mean_acc", "{dataset}_erm_mean_acc", "%", "ERM on {dataset}: mean test accuracy (group-balanced)",
            dataset=DATASETS)
CH01.family("erm_weighted_mean_acc", "{dataset}_erm_weighted_mean_acc", "%",
            "ERM on {dataset}: test accuracy weighted by the training groups", dataset=DATASETS)
CH01.family("erm_worst_group_acc", "{dataset}_erm_worst_group_acc", "%", "ERM on {dataset}: worst test group",
            dataset=DATASETS)
CH01.family("erm_gap", "{dataset}_erm_gap", "points", "ERM on {dataset}: mean minus worst-group accuracy",
            dataset=DATASETS)
CH01.family("erm_train_acc", "{dataset}_erm_train_acc", "%", "ERM on {dataset}: training accuracy",
            dataset=DATASETS)
CH01.family("erm_group_acc", "{dataset}_erm_group_{group}", "%", "ERM on {dataset}: test accuracy of group {group}",
            dataset=DATASETS, group=None)
CH01.family("gxi_background_share", "{dataset}_gxi_background_share", "%",
            "{dataset}: share of |Grad×Input| on the background of minority-group failures", dataset=DATASETS)

# ------------------------------------------------------------------------------------------ 02 LRP-Flex
CH02 = Chapter("02_lrp_flex")
#: chapter 02's reference implementations: display label → key stem
LRP_REFERENCES = {"zennit, LRP-ε": "zennit_eps", "captum, LRP-ε": "captum_eps",
                  "zennit, LRP-ε with z^B (ZBox)": "zennit_zb"}
#: the ε grid of chapter 02 as key stems (``f"{ε:g}"``)
EPSILONS = ("0", "0.001", "0.01", "0.1", "1", "10")
CH02.family("acc", "acc_{split}", "fraction", "standard classifier: accuracy on the {split} split",
            split=("iid", "ood", "deceiving"))
CH02.key("follows_mark", "fraction", "deceiving digits predicted as the class of their mark")
CH02.family("max_abs_diff", "max_abs_diff_{ref}", "value", "LRP-Flex vs {ref} (float64): largest |difference|",
            ref=LRP_REFERENCES)
CH02.family("max_rel_diff", "max_rel_diff_{ref}", "value",
            "LRP-Flex vs {ref} (float64): largest |difference| / largest |relevance|", ref=LRP_REFERENCES)
#: chapter 02's timed methods: display label → key stem
TIMED_EXPLAINERS = {"LRP-Flex": "flex", "zennit": "zennit", "captum LRP": "captum"}
CH02.family("time_ratio_gxi", "time_ratio_{method}_gxi", "×", "time of {method} / time of Gradient×Input",
            method=TIMED_EXPLAINERS)
CH02.key("time_ratio_zennit_flex", "×", "time of zennit / time of LRP-Flex")
CH02.key("band_area", "fraction", "share of the image in the mark band (top 5 rows)")
CH02.family("band_share", "band_share_{split}", "fraction",
            "median share of positive relevance in the mark band, {split} images",
            split={"deceiving": "deceiving", "follow": "follow", "ood": "ood"})
CH02.family("conservation", "conservation_eps_{eps}", "value",
            "median Σ R / explained logit at ε = {eps}, i.i.d. images", eps=EPSILONS)
CH02.family("band_share_eps", "band_share_eps_{eps}", "fraction",
            "median share of positive relevance in the mark band at ε = {eps}, deceiving images", eps=EPSILONS)
CH02.key("zplus_min", "value", "smallest relevance of the joint LRP-z⁺ map (≥ 0 by Eq. 4)")

# ------------------------------------------------------------------------------------------ 03 Faster ISNet
CH03 = Chapter("03_faster_isnet")
#: chapter 03's models: display label (table rows) → key stem
ISNET_MODELS = {"Standard classifier": "standard_classifier", "Original ISNet": "original_isnet",
                "Selective ISNet": "selective_isnet", "Stochastic ISNet": "stochastic_isnet",
                "Dual ISNet": "dual_isnet", "Selective ISNet LDS": "selective_isnet_lds",
                "ISNet Softmax Grad*Input": "isnet_softmax_gradxinput", "RRR": "rrr",
                "Reference classifier": "reference_classifier"}
#: the ISNet variants among them (label → stem)
ISNETS = {k: ISNET_MODELS[k] for k in ("Original ISNet", "Selective ISNet", "Stochastic ISNet", "Dual ISNet",
                                      "Selective ISNet LDS")}
ISNET_SPLITS = ("iid", "ood", "deceiving")
CH03.family("acc", "{model}_{split}_acc", "%", "biased digits: accuracy of {model} on the {split} test split",
            model=ISNET_MODELS, split=ISNET_SPLITS)
CH03.family("max_gap", "{model}_max_gap", "points", "biased digits: {model}'s largest accuracy spread between "
            "iid, ood and deceiving", model=ISNET_MODELS)
CH03.family("background_share", "{model}_background_share", "%",
            "biased digits: share of |LRP relevance| of {model} on the background (200 iid images)",
            model=ISNET_MODELS)
CH03.key("isnet_worst_max_gap", "points", "the largest spread between the splits over the ISNet variants")
CH03.key("isnet_n_within_3_points", "count", "ISNet variants whose spread between the splits is ≤ 3 points")
SCENES_MODELS = {k: ISNET_MODELS[k] for k in ("Standard classifier", "Selective ISNet")}
CH03.family("scenes_mean_acc", "scenes_{model}_mean_acc", "%", "spurious scenes: {model}, mean test accuracy",
            model=SCENES_MODELS)
CH03.family("scenes_worst_group_acc", "scenes_{model}_worst_group_acc", "%",
            "spurious scenes: {model}, worst test group", model=SCENES_MODELS)
CH03.family("scenes_background_share", "scenes_{model}_background_share", "%",
            "spurious scenes: {model}, share of |LRP relevance| on the background", model=SCENES_MODELS)
CH03.family("scenes_train_acc", "scenes_{model}_train_acc", "%", "spurious scenes: {model}, training accuracy",
            model=SCENES_MODELS)
FASTER_VARIANTS = ("selective", "stochastic", "dual")
CH03.family("time_over_standard", "time_{variant}_over_standard", "×",
            "training step of the {variant} ISNet / a standard step (10 classes)", variant=FASTER_VARIANTS)
CH03.family("time_flat", "time_{variant}_{classes}_over_10", "×",
            "{variant} ISNet step at {classes} classes / at 10 classes", variant=FASTER_VARIANTS, classes=None)
CH03.key("time_original_growth", "×", "original ISNet step at its most classes / at 1 class")

# ------------------------------------------------------------------------------------------ 04 ExMap
CH04 = Chapter("04_exmap")
#: chapter 04's methods (rows of its results tables): display label → key stem
EXMAP_METHODS = {"ERM": "erm", "DFR (oracle groups)": "dfr_oracle_groups", "GEORGE(DFR)": "georgedfr",
                 "DFR+ExMap (spectral, global)": "dfr_exmap_spectral_global",
                 "DFR+ExMap (spectral, local)": "dfr_exmap_spectral_local",
                 "DFR+ExMap (k-means, global)": "dfr_exmap_k-means_global",
                 "DFR+ExMap (k-means, local)": "dfr_exmap_k-means_local", "JTT": "jtt", "JTT+ExMap": "jtt_exmap"}
#: the methods that cluster the validation set (pseudo groups)
EXMAP_CLUSTERINGS = {k: EXMAP_METHODS[k] for k in ("GEORGE(DFR)", "DFR+ExMap (spectral, global)",
                                                   "DFR+ExMap (spectral, local)", "DFR+ExMap (k-means, global)",
                                                   "DFR+ExMap (k-means, local)")}
#: the two-shortcut experiment's methods (ExMap Table 3 rows) and gaps
EXMAP_MULTI_METHODS = {"ERM": "erm", "DFR (Both)": "dfr_both", "DFR (BG)": "dfr_bg", "DFR (CoObj)": "dfr_coobj",
                       "GEORGE(DFR)": "georgedfr", "DFR+ExMap": "dfr_exmap"}
EXMAP_GAPS = {"BG gap": "bg", "CoObj gap": "coobj", "BG+CoObj gap": "both"}
#: the background-removal experiment's methods (ExMap Table 4 rows)
EXMAP_FG_METHODS = {k: EXMAP_METHODS[k] for k in ("ERM", "DFR (oracle groups)", "GEORGE(DFR)",
                                                  "DFR+ExMap (spectral, global)")}
CH04.family("wga", "{dataset}_{method}_wga", "%", "{dataset}, {method}: test worst-group accuracy, mean over seeds",
            dataset=DATASETS, method=EXMAP_METHODS)
CH04.family("wga_std", "{dataset}_{method}_wga_std", "points",
            "{dataset}, {method}: standard deviation of the worst-group accuracy over seeds",
            dataset=DATASETS, method=EXMAP_METHODS)
CH04.family("mean", "{dataset}_{method}_mean", "%",
            "{dataset}, {method}: train-weighted mean test accuracy, mean over seeds",
            dataset=DATASETS, method=EXMAP_METHODS)
CH04.family("ari", "{dataset}_{method}_ari", "value",
            "{dataset}, {method}: adjusted Rand index of the validation pseudo groups with the true groups",
            dataset=DATASETS, method=EXMAP_CLUSTERINGS)
CH04.family("eigengap_k", "{dataset}_eigengap_k", "count", "{dataset}: clusters per class the eigengap picks",
            dataset=DATASETS)
CH04.family("negative_logit_pct", "{dataset}_negative_logit_pct", "%",
            "{dataset}: validation images whose explained logit is negative", dataset=DATASETS)
CH04.family("seed_one_vs_logit_ari", "{dataset}_seed_one_vs_logit_ari", "value",
            "{dataset}: ARI between the pseudo groups of LRP seeded with 1 and with the logit", dataset=DATASETS)
CH04.family("multi_gap", "multi_{method}_{gap}_gap", "points",
            "two shortcuts, {method}: accuracy gap to in-distribution where {gap} disagrees (mean over seeds)",
            method=EXMAP_MULTI_METHODS, gap=EXMAP_GAPS)
CH04.key("multi_n_worse_than_erm", "count", "two shortcuts: DFR (BG/CoObj) gaps worse than ERM's (Whac-A-Mole)")
CH04.family("fg_only_drop", "fg_only_{method}_drop", "points",
            "spurious scenes, {method}: mean accuracy lost when the background is removed", method=EXMAP_FG_METHODS)
CH04.key("n_seeds", "count", "DFR / clustering seeds")
CH04.key("digits_val_k_exmap", "count", "colored digits: ExMap pseudo groups (spectral, global), mean over seeds")
CH04.key("scenes_val_k_exmap", "count", "spurious scenes: ExMap pseudo groups (spectral, global), mean over seeds")

# ------------------------------------------------------------------------------------------ 05 FCR
CH05 = Chapter("05_fictitious_class_unlearning")
WEIGHTS = {1: "1", 2: "2", 3: "3"}
CH05.key("removal_base_acc", "%", "ten-class model before any edit: mean class accuracy")
CH05.family("removal_removed_acc_max", "removal_removed_acc_max_{n}w", "%",
            "class removal with {n} weight(s): highest accuracy left on a removed class", n=WEIGHTS)
CH05.family("removal_removed_acc_mean", "removal_removed_acc_mean_{n}w", "%",
            "class removal with {n} weight(s): mean accuracy left on the removed class", n=WEIGHTS)
CH05.family("removal_others_max_drop", "removal_others_max_drop_{n}w", "points",
            "class removal with {n} weight(s): largest drop of another class (0 if none drops)", n=WEIGHTS)
CH05.family("removal_others_max_abs_change", "removal_others_max_abs_change_{n}w", "points",
            "class removal with {n} weight(s): largest change of another class, either direction", n=WEIGHTS)
CH05.key("removal_literal_removed_acc_mean", "%", "paper-literal removal (every non-zero weight): removed class")
CH05.key("removal_literal_others_worst_drop", "points", "paper-literal removal: largest drop of another class")
CH05.key("removal_literal_n_backfired", "count", "paper-literal removal: classes whose accuracy rose")
CH05.family("multi_removed_acc", "multi_removed_acc_m{m}", "%", "{m} classes removed at once: their mean accuracy",
            m=tuple(range(1, 9)))
CH05.family("multi_retained_change", "multi_retained_change_m{m}", "points",
            "{m} classes removed at once: mean accuracy change of the others", m=tuple(range(1, 9)))
FICT_SCORES = {"SCA score (Eq. 6)": "sca", "accumulative G·A only": "accumulative"}
CH05.family("fict", "fict_{score}_{what}", "%", "fictitious-class removal ({score}): {what}", score=FICT_SCORES,
            what=("removed_r1", "retained_r1", "removed_auc", "retained_auc", "siblings_r1", "other_class_r1"))
CH05.key("fict_base_acc", "%", "parity model before any edit: mean accuracy over the ten digits")
CH05.family("exmap_n_groups", "{dataset}_exmap_n_groups", "count", "{dataset}: ExMap pseudo groups", dataset=DATASETS)
CH05.family("fcr_r", "{dataset}_fcr_{variant}_r", "fraction", "{dataset}, FCR ({variant}): the fair r (validation)",
            dataset=DATASETS, variant=("oracle", "exmap"))
#: chapter 05's methods (rows of its neutralisation table): display label → key stem
FCR_METHODS = {"ERM": "erm", "DFR (oracle groups)": "dfr", "DFR + ExMap": "dfr_exmap",
               "FCR (oracle attribute)": "fcr", "FCR + ExMap (no labels)": "fcr_exmap"}
CH05.family("wga", "{dataset}_{method}_wga", "%", "{dataset}, {method}: test worst-group accuracy",
            dataset=DATASETS, method=FCR_METHODS)
CH05.family("mean", "{dataset}_{method}_mean", "%", "{dataset}, {method}: train-weighted mean test accuracy",
            dataset=DATASETS, method=FCR_METHODS)

# ------------------------------------------------------------------------------------------ 06 super-pixel gradients
CH06 = Chapter("06_superpixel_gradients")
SP_METHODS = ("SG", "SmoothGrad", "IG")
SP_PARTITIONS = ("pixel", "superpixel", "square", "random")
SP_ALGORITHMS = ("slic", "quickshift", "felzenszwalb", "watershed")
SP_SIZES = (10, 25, 50, 100, 200, 400)
CH06.family("acc", "acc_{model}", "fraction", "test accuracy of model {model}", model=("a", "b", "c"))
CH06.family("ssim_halves", "ssim_halves_{method}_{part}", "value",
            "{method}, {part} maps: mean SSIM between the models of the two halves (A vs B)",
            method=SP_METHODS, part=SP_PARTITIONS)
CH06.family("ssim_seeds", "ssim_seeds_{method}_{part}", "value",
            "{method}, {part} maps: mean SSIM between two seeds on the same half (A vs C)",
            method=SP_METHODS, part=SP_PARTITIONS)
CH06.family("ssim_gain", "ssim_halves_{method}_gain", "value",
            "{method}: super-pixel minus pixel SSIM between the halves (paired)", method=SP_METHODS)
CH06.family("mege", "mege_{method}_{part}", "value", "{method}, {part} maps: MeGe, Spearman distance",
            method=SP_METHODS, part=("pixel", "superpixel"))
CH06.family("mege_l2", "mege_l2_{method}_{part}", "value", "{method}, {part} maps: MeGe, L2 distance",
            method=SP_METHODS, part=("pixel", "superpixel"))
CH06.family("deletion", "deletion_{method}_{part}", "fraction", "{method}, {part} maps: deletion AUC (model A)",
            method=SP_METHODS, part=SP_PARTITIONS)
CH06.family("insertion", "insertion_{method}_{part}", "fraction", "{method}, {part} maps: insertion AUC (model A)",
            method=SP_METHODS, part=SP_PARTITIONS)
CH06.family("mufid", "mufid_{method}_{part}", "value", "{method}, {part} maps: μ-fidelity (model A)",
            method=SP_METHODS, part=SP_PARTITIONS)
CH06.family("algo_ssim", "algo_ssim_{algo}", "value", "Simple Gradient on {algo} super-pixels: SSIM A vs B",
            algo=SP_ALGORITHMS)
CH06.family("algo_mufid", "algo_mufid_{algo}", "value", "Simple Gradient on {algo} super-pixels: μ-fidelity",
            algo=SP_ALGORITHMS)
CH06.family("size_ssim", "size_{n}_ssim", "value", "Simple Gradient, SLIC with {n} segments: SSIM A vs B",
            n=SP_SIZES)
CH06.family("size_mufid", "size_{n}_mufid", "value", "Simple Gradient, SLIC with {n} segments: μ-fidelity",
            n=SP_SIZES)
CH06.family("road", "road_{method}_{part}", "fraction", "{method}, {part} maps: mean ROAD accuracy (model A)",
            method=SP_METHODS, part=("pixel", "superpixel"))
CH06.key("n_explain", "count", "test images explained")
CH06.key("mean_segments", "count", "SLIC segments per image, mean")
CH06.key("claim_ssim_superpixel_gt_pixel", "flag", "super-pixel SSIM above pixel SSIM for every method")

# ------------------------------------------------------------------------------------------ 07 NAS
CH07 = Chapter("07_neuro_activated_superpixels")
#: chapter 07's saliency methods: display label → key stem
NAS_METHODS = {"Grad×Input": "gxi", "LRP-Flex": "lrp", "IG": "ig", "Grad-CAM": "gradcam", "Occlusion": "occlusion"}
NAS_VARIANTS = {"pixel": "pixel", "SLIC": "slic", "NAS": "nas"}
#: the stage sets of the depth × K grid: display label → key stem
NAS_DEPTHS = {"[1]": "1", "[2]": "2", "[3]": "3", "[2,3]": "23", "[1,2,3]": "123"}
for _name, _unit, _desc in (
        ("n_eval", "count", "test images explained and localised"),
        ("n_auc", "count", "images of the LeRF curves and the greedy maximisation"),
        ("accuracy", "%", "the explained model's accuracy on the evaluated test images"),
        ("nas_pieces", "count", "connected pieces of the NAS cells per image, mean"),
        ("slic_segments", "count", "SLIC superpixels per image, mean"),
        ("felzenszwalb_segments", "count", "Felzenszwalb superpixels per image, mean"),
        ("fast_direct_same_pixels", "%", "pixels on which the exact low-resolution and materialised NAS agree"),
        ("kmeans_seed_ari", "value", "NAS k-means: ARI between seeds, mean over pairs and images"),
        ("ward_nested", "%", "NAS Ward: fine cells inside one coarse cell (worst of K 5→3, 8→5)"),
        ("ward_deterministic", "flag", "NAS Ward: the same cells with another seed"),
        ("stability_gradient", "value", "Spearman correlation of gradient maps under input noise"),
        ("n_iou70_improved", "count", "saliency methods whose IoU@70 NAS raises"),
        ("n_methods", "count", "saliency methods compared"),
        ("object_cluster", "index", "the class cluster that overlaps the object most"),
        ("object_cluster_share", "%", "share of the object cluster's pixels on the object")):
    CH07.key(_name, _unit, _desc)
# AUC-LeRF × 100 of a curve normalised to the unperturbed and the baseline output: negative when removing the
# least relevant cells first moves the output more than the baseline does (seen at seed 1)
CH07.family("auc_lerf_greedy", "auc_lerf_greedy_{variant}", "points",
            "greedy AUC-LeRF (× 100) over the {variant} cells", variant={"SLIC": "slic", "NAS": "nas"})
CH07.family("stability_gsg", "stability_gsg_{variant}", "value",
            "Spearman correlation of g-SG maps on {variant} cells under input noise", variant={"SLIC": "slic",
                                                                                             "NAS": "nas"})
CH07.family("grid_iou", "grid_iou_{depth}_k{k}", "fraction",
            "best single-cell IoU with the object mask, NAS on stages {depth} with K = {k}", depth=NAS_DEPTHS,
            k=(3, 5, 10))
CH07.family("auc_lerf", "auc_lerf_{method}_{variant}", "points", "AUC-LeRF (× 100) of {method}, {variant} map",
            method=NAS_METHODS, variant=NAS_VARIANTS)
#: the localisation metrics: the package's name (metrics.max_box_acc_v2) → key stem
WSOL_METRICS = {"maxboxacc_v2": "maxboxacc", "iou@30": "iou30", "iou@50": "iou50", "iou@70": "iou70"}
CH07.family("wsol", "{metric}_{method}_{variant}", "%", "{metric} of {method}, {variant} map",
            metric=WSOL_METRICS, method=NAS_METHODS, variant=NAS_VARIANTS)
CH07.family("class_cluster_most", "class_cluster_{method}_{split}_most", "index",
            "class clusters, {method}, {split}ly classified images: the most salient cluster",
            method=NAS_METHODS, split=("correct", "wrong"))
CH07.family("class_cluster_saliency", "class_cluster_{method}_{split}_{which}", "value",
            "class clusters, {method}, {split}ly classified images: mean min-max saliency of {which}",
            method=NAS_METHODS, split=("correct", "wrong"), which={"obj": "obj", "others": "others"})
NAS_TIMINGS = {"erm_s": "s", "class_clusters_s": "s", "nas_ms": "ms", "nas_forward_ms": "ms", "nas_direct_ms": "ms",
               "ward_ms": "ms", "slic_ms": "ms", "felzenszwalb_ms": "ms", "gxi_ms": "ms", "lrp_ms": "ms",
               "ig_ms": "ms", "gradcam_ms": "ms", "occlusion_ms": "ms"}
for _name, _unit in NAS_TIMINGS.items():
    CH07.key(f"time_{_name}", _unit, f"time: {_name.rsplit('_', 1)[0]} ({'per image' if _unit == 'ms' else 'total'})")


def key_table(chapter: str):
    """A chapter's declared keys as a DataFrame (key → unit, description); free families as their template."""
    import pandas as pd

    table = CHAPTERS[chapter]
    rows = [(n, table[n].unit, table[n].description) for n in table.names()]
    rows += [(f.template, f.unit, f.description) for f in table.families.values() if f.free]
    return pd.DataFrame(rows, columns=["key", "unit", "description"]).set_index("key")


# ------------------------------------------------------------------------------------------ the recorder
def _number(key: str, value):
    """A result as a plain Python number (0-d tensors and arrays unwrapped, bools as ints)."""
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        size = value.numel() if isinstance(value, torch.Tensor) else np.size(value)
        if size != 1:
            raise ValueError(f"result {key!r} must be a single number, got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, (int, float)):
        raise TypeError(f"result {key!r} must be a number, got {type(value).__name__}")
    return value


class Recorder:
    """Records a chapter's results: one call stores a number for the JSON and glues it for the prose.

    Parameters
    ----------
    chapter : str
        The notebook's name, e.g. ``"03_faster_isnet"``; its keys are declared in this module.

    ``rec(key, value)`` checks that ``key`` is declared and ``value`` in its unit's range, stores it and glues it
    under ``key`` (``glue="name"`` glues it under the name the prose uses, ``glue=False`` not at all;
    ``glue_scale=100`` glues 100 × a fraction the prose shows in percent); it returns the stored number.
    ``rec.glue(name, value)`` glues a prose-only number that is not a result (a parameter, a sum of two results),
    ``rec.spread(key, glue=name)`` glues the key's spread over seeds (:func:`seed_spread`), ``rec.save()`` writes
    ``results/<chapter>.json``.
    """

    def __init__(self, chapter: str):
        if chapter not in CHAPTERS:
            raise KeyError(f"no results declared for chapter {chapter!r}: one of {sorted(CHAPTERS)}")
        self.chapter = chapter
        self.keys = CHAPTERS[chapter]
        self.values: dict = {}

    def __call__(self, key: str, value, *, glue=True, glue_scale=None):
        spec = self.keys[key]
        number = _number(key, value)
        spec.check(number)
        self.values[key] = number
        if glue:
            self.glue(key if glue is True else glue, number if glue_scale is None else glue_scale * number)
        return number

    def __getitem__(self, key: str):
        return self.values[key]

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def glue(self, name: str, value) -> None:
        """Glue a value for the prose only (``display=False``); it is not written to the JSON."""
        from .viz import glue

        glue(name, value, display=False)

    def spread(self, key: str, *, glue: str, fmt: str = ".1f") -> str:
        """Glue under ``glue`` the spread over seeds of a declared key (from ``book/reproduction.json``)."""
        self.keys[key]
        text = seed_spread(self.chapter, key, fmt=fmt)
        self.glue(glue, text)
        return text

    def save(self) -> Path:
        """Write the recorded results to ``results/<chapter>.json`` (atomically); returns the path."""
        return save_results(self.chapter, self.values)


# ------------------------------------------------------------------------------------------ JSON files
class Timings(dict):
    """A chapter's wall-clock timings, ``{name: time}``, each measured by one ``with`` block.

    ``with timings("nas_ms", per=len(x)):`` times the block and stores the time per item in milliseconds (a name
    ending in ``_ms``) or seconds (``_s``); the chapters record them as ``time_<name>`` (Faster ISNet Sec. 4 and
    NAS Table 5 report times per image). Times are the one thing a re-run does not repeat exactly.
    """

    def __call__(self, name: str, *, per: int = 1):
        import contextlib
        import time

        if name.endswith("_ms"):
            scale = 1e3
        elif name.endswith("_s"):
            scale = 1.0
        else:
            raise ValueError(f"timing {name!r} must end in _ms or _s (its unit)")
        if not isinstance(per, int) or isinstance(per, bool) or per < 1:
            raise ValueError(f"per must be a positive int (the items timed), got {per!r}")

        @contextlib.contextmanager
        def measure():
            start = time.perf_counter()
            yield self
            self[name] = scale * (time.perf_counter() - start) / per

        return measure()


def save_results(name: str, values: dict) -> Path:
    """Write a chapter's cited numbers to ``results/<name>.json`` (flat name → number).

    Parameters
    ----------
    name : str
        The notebook's name without extension, e.g. ``"01_shortcuts"``.
    values : dict
        Flat mapping from a result name to a number (int, float, bool or 0-d tensor/array).

    Returns
    -------
    Path
        The file written (atomically: temporary file, then rename).
    """
    from . import results_dir
    from .cache import atomic_write

    clean = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise TypeError(f"result names must be strings, got {key!r}")
        value = _number(key, value)
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # JSON has no NaN; claims tests treat None as "not measured"
        clean[key] = value
    path = results_dir() / f"{name}.json"
    atomic_write(path, json.dumps(clean, indent=1, sort_keys=True).encode())
    return path


def load_results(name: str) -> dict:
    """Read ``results/<name>.json`` written by :func:`save_results`."""
    from . import results_dir

    path = results_dir() / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebooks/{name}.ipynb first (make test does)")
    return json.loads(path.read_text())


def _reproduction_table(path=None):
    if path is not None:
        candidates = [Path(path)]
    elif "XAI_ROBUST_REPRODUCTION" in os.environ:
        candidates = [Path(os.environ["XAI_ROBUST_REPRODUCTION"])]
    else:
        candidates = [Path("../book/reproduction.json"), Path("book/reproduction.json")]
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def seed_spread(chapter: str, key: str, *, fmt: str = ".1f", path=None) -> str:
    """The spread of a chapter's figure over seeds, from the recorded reproduction (``make reproduce``).

    ``tools/reproduce.py`` executes every chapter at seeds 0, 1, 2 and records each figure's mean and standard
    deviation in ``book/reproduction.json``; chapters show the spread beside the figure it qualifies.

    Parameters
    ----------
    chapter : str
        Notebook name, e.g. ``"04_exmap"``.
    key : str
        A key of that chapter's results JSON.
    fmt : str
        Number format of the mean and the standard deviation.
    path : str or Path, optional
        The table; default ``$XAI_ROBUST_REPRODUCTION``, else ``book/reproduction.json`` seen from the
        repository root or from ``notebooks/``.

    Returns
    -------
    str
        e.g. ``"(seeds 0–2: 72.1 ± 4.3)"``, or ``"(spread over seeds not recorded)"`` when the table or the
        figure is missing (a notebook opened outside the repository, or a new figure).
    """
    table = _reproduction_table(path)
    entry = (table or {}).get("chapters", {}).get(chapter, {}).get(key)
    if not entry or "mean" not in entry:
        return "(spread over seeds not recorded)"
    seeds = table.get("seeds", [])
    label = f"seeds {seeds[0]}–{seeds[-1]}" if len(seeds) > 1 else "seeds"
    return f"({label}: {entry['mean']:{fmt}} ± {entry['sd']:{fmt}})"
