"""paper.compare and paper.mean_sd: our numbers next to the paper's, in one captioned table."""
import math

import numpy as np
import pandas as pd
import pytest

from xai_robust import paper


def test_compare_appends_the_papers_columns_in_our_row_order_with_dashes_where_it_reports_nothing():
    ours = {"JTT": {"WGA": 80.0}, "ERM": {"WGA": 40.0}, "new method": {"WGA": 55.5}}
    styler = paper.compare(ours, {"ERM": (39.6, 99.3), "JTT": (86.7, 93.3), "x": (1.0, 2.0)}, "WGA (%)",
                           columns=["paper WGA", "paper mean"])
    frame = styler.data
    assert list(frame.index) == ["JTT", "ERM", "new method"]
    assert list(frame.columns) == ["WGA", "paper WGA", "paper mean"]
    assert frame.loc["ERM", "paper WGA"] == 39.6 and frame.loc["JTT", "paper mean"] == 93.3
    assert math.isnan(frame.loc["new method", "paper WGA"])
    html = styler.to_html()
    assert "<caption>WGA (%)</caption>" in html and "–" in html


def test_compare_takes_a_frame_renamed_rows_none_rows_and_two_level_columns():
    ours = pd.DataFrame({("scenes", "WGA"): [70.0, 90.0]}, index=["ERM", "FCR (ours)"])
    table = {"ERM": (75.3, 24.4), "FCR": None}
    frame = paper.compare(ours, table, "t", columns=[("paper", "WGA"), ("paper", "gap")],
                          rows={"FCR (ours)": "FCR"}).data
    assert frame.loc["ERM", ("paper", "gap")] == 24.4
    assert np.isnan(frame.loc["FCR (ours)", ("paper", "WGA")])
    assert ours.shape == (2, 1)  # the input is not modified


def test_compare_rejects_a_wrong_number_of_paper_columns_and_an_empty_caption():
    with pytest.raises(ValueError, match="columns"):
        paper.compare({"ERM": {"a": 1.0}}, {"ERM": (1.0, 2.0)}, "t", columns=["only one"])
    with pytest.raises(ValueError, match="columns"):
        paper.compare({"ERM": {"a": 1.0}}, {"ERM": (1.0,)}, "t", columns=[])
    with pytest.raises(ValueError, match="caption"):
        paper.compare({"ERM": {"a": 1.0}}, {}, "", columns=["p"])


def test_mean_sd_uses_the_population_sd_at_the_precision():
    assert paper.mean_sd([1.0, 3.0]) == "2.0 ± 1.0"
    assert paper.mean_sd(np.array([72.25]), precision=1) == f"{72.25:.1f} ± 0.0"
    assert paper.mean_sd([0.1, 0.2, 0.3], precision=3) == f"{0.2:.3f} ± {np.std([0.1, 0.2, 0.3]):.3f}"
    with pytest.raises(ValueError):
        paper.mean_sd([])
    with pytest.raises(ValueError):
        paper.mean_sd([1.0], precision=-1)


def test_compare_scales_the_papers_fractions():
    frame = paper.compare({"Dual ISNet": {"ours iid": 97.0}}, paper.FASTER_ISNET_TABLE1, "acc (%)",
                          columns=["paper iid", "paper ood", "paper deceiving"], scale=100).data
    assert frame.loc["Dual ISNet", "paper ood"] == pytest.approx(97.9)


def test_compare_keeps_the_papers_text_entries():
    frame = paper.compare({"colored_digits": {"worst group (ours)": 1.0}}, paper.ERM_WORST_AND_MEAN, "ERM (%)",
                          columns=["paper's dataset", "worst group (paper)", "mean (paper)"]).data
    assert frame.loc["colored_digits", "paper's dataset"] == "C-MNIST"
    assert frame.loc["colored_digits", "worst group (paper)"] == 39.6
