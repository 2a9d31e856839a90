"""xai_robust.paper: the papers' numbers in one place, and the captioned tables the chapters display."""
import math

import pandas as pd
import pytest

from xai_robust import paper


def test_captioned_table_has_its_caption_dashes_for_missing_values_and_the_precision():
    frame = pd.DataFrame({"ours": [72.345, float("nan")], "paper": [74.2, 93.7]}, index=["DFR", "JTT"])
    html = paper.captioned(frame, "Worst-group accuracy (%)", precision=1).to_html()
    assert "<caption>Worst-group accuracy (%)</caption>" in html
    assert "72.3" in html and "72.345" not in html  # one decimal
    assert "–" in html and "nan" not in html.lower()  # NaN shown as a dash
    assert "74.2" in html and "DFR" in html and "JTT" in html
    with pytest.raises(ValueError, match="caption"):
        paper.captioned(frame, "")
    with pytest.raises(ValueError, match="caption"):
        paper.captioned(frame, None)


def test_the_papers_numbers_are_well_formed():
    """Every number is a percentage (or a fraction for Faster ISNet's Table 1, or a gap in points), as documented."""
    for _, worst, mean in paper.ERM_WORST_AND_MEAN.values():
        assert 0 <= worst <= mean <= 100
    for row in paper.FASTER_ISNET_TABLE1.values():
        assert len(row) == 3 and all(v is None or 0 <= v <= 1 for v in row)
    for table in paper.EXMAP_WGA_MEAN.values():
        for worst, mean in table.values():
            assert 0 <= worst <= mean <= 100
    for gaps in paper.EXMAP_TABLE3.values():
        assert len(gaps) == 3 and all(-100 <= g <= 0 for g in gaps)
    for fg_only, mean in paper.EXMAP_TABLE4.values():
        assert 0 <= fg_only <= mean <= 100
    for row in paper.FCR_WATERBIRDS.values():
        assert row is None or (0 <= row[0] <= 100 and 0 <= row[1] <= 100 and math.isclose(row[0] + row[1],
                                                                                           row[0] + row[1]))
    for (method, partition), values in paper.GONG_TABLE1.items():
        assert method in ("SG", "IG", "SmoothGrad") and partition in ("pixel", "superpixel", "square", "random")
        assert len(values) == 3 and all(0 <= v <= 100 for v in values)
    assert set(paper.__all__) <= set(dir(paper))
