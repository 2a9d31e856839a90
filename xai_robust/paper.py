"""The papers' reported numbers that the chapters set beside their own, in one place, each cited by table.

Chapters import these instead of typing the papers' numbers into their cells; :func:`compare` sets our numbers next
to the paper's and :func:`captioned` shows a table with its caption (one table per cell, chapter 04's two tables no
longer share captions); :func:`mean_sd` writes a number over seeds as "mean ± sd".
"""
from __future__ import annotations

__all__ = ["ERM_WORST_AND_MEAN", "FASTER_ISNET_TABLE1", "EXMAP_WGA_MEAN", "EXMAP_TABLE3", "EXMAP_TABLE4",
           "FCR_WATERBIRDS", "GONG_TABLE1", "captioned", "mean_sd", "compare"]

#: ERM on the papers' datasets, (dataset, worst-group accuracy %, mean accuracy %): ExMap Table 2 (C-MNIST) and
#: Table 1 (Waterbirds). Chapter 01.
ERM_WORST_AND_MEAN = {"colored_digits": ("C-MNIST", 39.6, 99.3), "spurious_scenes": ("Waterbirds", 76.8, 98.1)}

#: Faster ISNet Table 1 (ResNet18 on biased MNIST): accuracy (fraction) on the iid, ood and deceiving test sets;
#: None where the paper reports nothing. Chapter 03.
FASTER_ISNET_TABLE1 = {
    "Standard classifier": (1.0, 0.654, 0.124), "Dual ISNet": (0.979, 0.979, 0.979),
    "Selective ISNet": (0.967, 0.967, 0.967), "Stochastic ISNet": (0.983, 0.983, 0.983),
    "Selective ISNet LDS": (None, None, None), "ISNet Softmax Grad*Input": (0.949, 0.949, 0.949),
    "Original ISNet": (0.985, 0.985, 0.985), "RRR": (0.97, 0.967, 0.967), "Reference classifier": (None, 0.985, None),
}

#: ExMap Tables 1, 2, 5 and 6: (worst-group accuracy %, mean accuracy %) per method, on C-MNIST (our colored digits)
#: and Waterbirds (our spurious scenes). Chapter 04.
EXMAP_WGA_MEAN = {
    "colored_digits": {"ERM": (39.6, 99.3), "DFR (oracle groups)": (74.2, 93.7), "GEORGE(DFR)": (71.7, 95.2),
                       "DFR+ExMap (spectral, global)": (72.5, 94.9)},
    "spurious_scenes": {"ERM": (76.8, 98.1), "DFR (oracle groups)": (92.1, 96.7), "GEORGE(DFR)": (91.7, 96.5),
                        "DFR+ExMap (spectral, global)": (92.5, 96.0), "DFR+ExMap (k-means, global)": (92.5, 95.9),
                        "JTT": (86.7, 93.3), "JTT+ExMap": (86.9, 90.0)},
}

#: ExMap Table 3 (UrbanCars): BG gap, CoObj gap and BG+CoObj gap in points. Chapter 04.
EXMAP_TABLE3 = {"ERM": (-8.2, -14.2, -69.0), "DFR (Both)": (-4.6, -5.4, -14.2), "DFR (BG)": (-0.3, -29.2, -33.2),
                "DFR (CoObj)": (-16.3, -0.5, -19.1), "GEORGE(DFR)": (-7.0, -15.4, -63.4),
                "DFR+ExMap": (-5.9, -9.9, -30.7)}

#: ExMap Table 4 (Waterbirds without background): (mean accuracy % on foreground-only images, mean accuracy %).
#: Chapter 04.
EXMAP_TABLE4 = {"ERM": (44.2, 98.1), "DFR (oracle groups)": (64.7, 94.6), "GEORGE(DFR)": (73.2, 96.5),
                "DFR+ExMap (spectral, global)": (78.5, 96.0)}

#: FCR (Hakemi et al.) on Waterbirds: (worst-group accuracy %, mean − worst gap in points); None = not reported.
#: Chapter 05.
FCR_WATERBIRDS = {"ERM": (75.3, 24.4), "DFR (oracle groups)": (92.9, 1.3), "DFR + ExMap": (92.5, 3.5),
                  "FCR (oracle attribute)": (93.2, 1.9), "FCR + ExMap (no labels)": None}

#: Gong et al. (BMVC 2024) Table 1 (ImageNet, %): deletion, insertion and μ-fidelity per (method, partition).
#: Chapter 06.
GONG_TABLE1 = {
    ("SG", "pixel"): (14.0, 54.2, 27.9), ("SG", "superpixel"): (13.8, 62.9, 27.2),
    ("SG", "square"): (21.4, 58.0, 26.8), ("SG", "random"): (23.0, 42.9, 24.1),
    ("IG", "pixel"): (11.3, 60.5, 30.8), ("IG", "superpixel"): (3.4, 64.4, 31.7),
    ("IG", "square"): (18.5, 61.8, 30.4), ("IG", "random"): (21.2, 49.3, 4.6),
    ("SmoothGrad", "pixel"): (11.1, 60.3, 32.8), ("SmoothGrad", "superpixel"): (11.1, 63.7, 32.2),
    ("SmoothGrad", "square"): (20.9, 60.9, 29.0), ("SmoothGrad", "random"): (20.4, 44.8, 28.6),
}


def captioned(frame, caption: str, *, precision: int = 1):
    """A pandas ``Styler`` of ``frame`` with ``caption`` above it, NaN shown as "–" and numbers at ``precision``.

    Chapters display one such table per cell, so each caption belongs to exactly one table.
    """
    if not isinstance(caption, str) or not caption:
        raise ValueError("caption must be a non-empty string saying what the table shows")
    return frame.style.set_caption(caption).format(precision=precision, na_rep="–")


def mean_sd(values, precision: int = 1) -> str:
    """``"mean ± sd"`` of ``values`` (numbers over seeds) at ``precision`` decimals, the population sd (ddof 0).

    Parameters
    ----------
    values : array_like of float
        One number per seed (one value gives an sd of 0).
    precision : int
        Decimals of both the mean and the sd.

    Returns
    -------
    str
        For example ``"72.5 ± 1.3"``; the chapters' tables report worst-group accuracies over seeds this way
        (ExMap Sec. 5, "mean and standard deviation over three seeds").
    """
    import numpy as np

    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("mean_sd needs at least one value")
    if not isinstance(precision, int) or precision < 0:
        raise ValueError(f"precision must be an integer >= 0, got {precision!r}")
    return f"{arr.mean():.{precision}f} ± {arr.std():.{precision}f}"


def compare(ours, table, caption: str, *, columns, precision: int = 1, rows=None, scale: float = 1.0):
    """Our numbers with the paper's beside them, as a captioned table (a pandas ``Styler``).

    How the chapters set their results against Faster ISNet Table 1 (chapter 03), ExMap Tables 1-3 (04), FCR's
    Waterbirds table (05) and Gong et al. Table 1 (06): our columns first, the paper's after them, one row per method.

    Parameters
    ----------
    ours : pandas.DataFrame or dict of row label → dict of column → value
        Our results, one row per method (the rows' order is kept).
    table : dict of row label → tuple or None
        The paper's numbers for those rows, e.g. :data:`EXMAP_WGA_MEAN` ``["colored_digits"]``; a row missing from
        ``table``, or mapped to None (or a tuple entry None), is shown as "–" (the paper reports nothing).
    caption : str
        What the table shows, and which table of the paper it is set against.
    columns : sequence of str or of (str, ...) tuples
        The names of the paper's columns, one per entry of the tuples in ``table`` (tuples make a two-level header).
    precision : int
        Decimals of the numbers shown.
    rows : dict of row label → key of ``table``, optional
        Where our row labels differ from the paper's (default: the same label).
    scale : float
        Multiplies the paper's numbers (not its text entries, such as a dataset's name), e.g. 100 for
        :data:`FASTER_ISNET_TABLE1`'s fractions shown in %.

    Returns
    -------
    pandas.io.formats.style.Styler
        ``ours`` with the paper's columns appended, captioned by :func:`captioned`; ``.data`` is the DataFrame.
    """
    import numpy as np
    import pandas as pd

    frame = ours.copy() if isinstance(ours, pd.DataFrame) else pd.DataFrame(ours).T
    columns = list(columns)
    if not columns:
        raise ValueError("columns must name the paper's columns, one per entry of its rows")
    rows = dict(rows or {})
    paper = {}
    for label in frame.index:
        reported = table.get(rows.get(label, label))
        if reported is None:
            reported = (None,) * len(columns)
        if len(reported) != len(columns):
            raise ValueError(f"the paper's row {label!r} has {len(reported)} numbers, but {len(columns)} columns "
                             f"were named: {columns}")
        paper[label] = [np.nan if v is None else v * scale if isinstance(v, (int, float)) else v for v in reported]
    for i, name in enumerate(columns):
        frame[name] = [paper[label][i] for label in frame.index]
    return captioned(frame, caption, precision=precision)
