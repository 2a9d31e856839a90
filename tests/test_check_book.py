"""tools/check_book.py on hand-written pages: a good page passes, each defect is reported.

The HTML-level checks (links, image files, raw {glue, PosixPath(, text tables, a CDN MathJax) and the reading
of the browser's measurements run everywhere; the pages are also rendered in headless Chromium where it is
installed (broken images that exist but do not decode, figures too wide, untypeset math, screenshots).
"""
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_book as cb  # noqa: E402

MATHJAX = ROOT / "_build" / "mathjax" / "es5"  # `make mathjax`
CHROMIUM = cb.find_chromium()

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<style>body {{ margin: 0; font: 16px sans-serif }} article {{ max-width: 700px; margin: 0 auto; padding: 0 10px }}
img {{ max-width: 100% }}</style>
{head}</head>
<body><article class="bd-article"><section id="top"><h1>A chapter</h1>
{body}
</section></article></body></html>
"""

GOOD = """
<p>See <a href="other.html#results">the results</a>, <a href="#top">the top</a> and
<a href="https://example.org/paper">the paper</a>; the accuracy is 91.2 % (seed 0).</p>
<img src="fig.png" alt="a figure">
<div class="cell_input"><div class="highlight-ipython3"><pre>profile = "ci"   # the profile
seed = 0         # the seed
epochs = 3       # epochs of training
</pre></div></div>
<div class="cell_output"><div class="output stream highlight-myst-ansi"><pre>{'iid': 99.9, 'ood': 44.9}
trained 3 epochs in 2.1 s
results saved
</pre></div></div>
<table><tr><th>method</th><th>WGA</th></tr><tr><td>ERM</td><td>65.0</td></tr></table>
"""


def _output(text):
    return f'<div class="cell_output"><div class="output stream highlight-myst-ansi"><pre>{text}</pre></div></div>'


PIPE_TABLE = _output("""method               |  WGA / gap |  paper
---------------------------------------------
ERM                  | 65.0 / 33.6 |  75.3 / 24.4
DFR (oracle groups)  | 90.6 /  5.1 |  92.9 / 1.3
""")
ALIGNED_TABLE = _output("""method     partition    SSIM halves  SSIM seeds
SG         pixel              0.387       0.270
SG         superpixel         0.403       0.295
IG         pixel              0.717       0.640
""")
SERIES = _output("""colored_digits_erm_mean_acc            51.20
colored_digits_erm_worst_group_acc      0.00
spurious_scenes_erm_mean_acc           85.00
dtype: float64
""")

# one defect each: (file name, head, body, checks the HTML alone reports, checks the browser adds)
BAD = {
    "missing_img": ("", '<img src="missing.png" alt="gone">', {"broken-image"}, {"broken-image"}),
    "corrupt_img": ("", '<img src="corrupt.png" alt="not a png">', set(), {"broken-image"}),
    "broken_links": ("", '<p><a href="nowhere.html">a</a> <a href="other.html#nope">b</a> <a href="#gone">c</a></p>',
                     {"broken-link"}, set()),
    "raw_glue": ("", "<p>The worst group reaches {glue}`wga` %.</p>", {"raw-glue"}, set()),
    "posixpath": ("", _output("PosixPath('/work/main/results/02_lrp_flex.json')"), {"posixpath"}, set()),
    "pipe_table": ("", PIPE_TABLE, {"text-table"}, set()),
    "aligned_table": ("", ALIGNED_TABLE, {"text-table"}, set()),
    "series": ("", SERIES, {"text-table"}, set()),
    "overflowing_figure": ("", '<img src="wide.png" style="max-width: none" alt="wide">', set(), {"wide-figure"}),
    "shrunk_figure": ("", '<img src="wide.png" alt="wide">', set(), {"wide-figure"}),
    "heavy_img": ("", '<img src="heavy.png" alt="noise" width="300">', {"heavy-image"}, set()),
    "untypeset_math": ("", '<p>A formula: <span class="math notranslate nohighlight">\\(x^2 + y_i\\)</span>.</p>',
                       set(), {"math"}),
    "cdn_mathjax": ('<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>',
                    '<p><span class="math notranslate nohighlight">\\(x\\)</span></p>', {"math"}, {"math"}),
}


@pytest.fixture
def site(tmp_path):
    """good.html, other.html and one page per defect, with their images."""
    from PIL import Image

    Image.new("RGB", (300, 200), "steelblue").save(tmp_path / "fig.png")
    Image.new("RGB", (1000, 150), "darkred").save(tmp_path / "wide.png")
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "heavy.png")  # about 480 kB: over the 300 kB limit
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (tmp_path / "other.html").write_text(PAGE.format(head="", body='<section id="results"><p>ok</p></section>'))
    (tmp_path / "good.html").write_text(PAGE.format(head="", body=GOOD))
    (tmp_path / "index.html").write_text(PAGE.format(head="", body='<p><a href="good.html">good</a></p>'))
    for name, (head, body, _, _) in BAD.items():
        (tmp_path / f"{name}.html").write_text(PAGE.format(head=head, body=GOOD + body))
    return tmp_path


def _checks(findings):
    return {f.check for f in findings}


def test_good_page_passes_the_html_checks(site):
    for page in ("good.html", "other.html", "index.html"):
        assert cb.static_findings((site / page).read_text(), page, site) == []


@pytest.mark.parametrize("name", BAD)
def test_each_defect_is_reported_from_the_html(site, name):
    findings = cb.static_findings((site / f"{name}.html").read_text(), f"{name}.html", site)
    assert _checks(findings) == BAD[name][2]
    assert all(f.page == f"{name}.html" and f.viewports == [] for f in findings)


def test_broken_links_name_each_target(site):
    messages = [f.message for f in cb.static_findings((site / "broken_links.html").read_text(), "broken_links.html",
                                                   site)]
    assert len(messages) == 3
    assert any("nowhere.html" in m and "no such file" in m for m in messages)
    assert any("'nope'" in m and "other.html" in m for m in messages)
    assert any("'gone'" in m for m in messages)


def test_text_table_reasons():
    assert "'|'" in cb.text_table_reason(PIPE_TABLE)
    assert "aligned" in cb.text_table_reason(ALIGNED_TABLE)
    assert cb.text_table_reason("zennit_eps   max |difference| 2.07e-12\ncaptum_eps   max |difference| 2.71e-11\n"
                                "zennit_zb    max |difference| 8.26e-13\n")
    assert cb.text_table_reason("   NAS k-means:       2.4 ms / image\n          SLIC:       1.6 ms / image\n"
                                "  Felzenszwalb:       2.1 ms / image\n")
    for text in ("{'iid': 99.9, 'ood': 44.9, 'deceiving': 15.1}",
                 "SampleDataset('digits (train)', n=3000, groups={a: 1, b: 2})\nSampleDataset('digits (test)', n=1)",
                 "band area 0.179; positive relevance in the band: deceiving 0.695\n67 results saved",
                 "loop: 4/4 in 1.2 s\nloop: 4/4 in 1.3 s\nloop: 4/4 in 1.1 s",
                 "one.  Two sentences.\nthree.  Four here, longer.\nfive.  And six"):
        assert cb.text_table_reason(text) is None, text


def test_code_that_names_glue_is_not_a_raw_role():
    html = PAGE.format(head="", body='<pre>rec(K.acc, v, glue=f"{glued}_acc")</pre><p>{glue:text}`x` left raw</p>')
    findings = cb.static_findings(html, "code.html")
    assert [f.check for f in findings] == ["raw-glue"] and "left raw" in findings[0].message


def test_code_cells_are_not_text_tables(site):
    html = PAGE.format(head="", body='<div class="cell_input"><div class="highlight-ipython3"><pre>'
                                     'a = 1      # one\nbb = 22    # two\nccc = 333  # three\n</pre></div></div>')
    assert cb.static_findings(html, "code.html") == []


SNAP_OK = {"mathjax": "ok", "math_elements": 3, "column_width": 680, "errors": [], "leftovers": [], "tables": [],
           "imgs": [{"src": "fig.png", "complete": True, "natural": 300, "width": 300, "visible": True,
                     "container": 680, "container_name": "section#top", "column": 680, "section": "#top"}]}


def _snap(**changes):
    snap = {**SNAP_OK, "imgs": [dict(SNAP_OK["imgs"][0])]}
    for key, value in changes.items():
        if key.startswith("img_"):
            snap["imgs"][0][key[4:]] = value
        else:
            snap[key] = value
    return snap


def test_snapshot_of_a_good_page_has_no_finding():
    assert cb.snapshot_findings("p.html", 1280, SNAP_OK) == []
    assert cb.snapshot_findings("p.html", 400, _snap(mathjax="absent", math_elements=0)) == []
    # a small figure the author sized down on purpose is not "too wide"
    assert cb.snapshot_findings("p.html", 400, _snap(img_width=100)) == []


@pytest.mark.parametrize("changes, check, words", [
    ({"img_natural": 0}, "broken-image", "did not load"),
    ({"img_width": 900, "img_natural": 900, "img_container": 1000}, "wide-figure", "content column"),
    ({"img_width": 700, "img_natural": 700, "img_container": 500}, "wide-figure", "its container"),
    ({"img_natural": 1400, "img_width": 680}, "wide-figure", "shrunk to 49%"),
    ({"mathjax": "not-loaded", "leftovers": [{"text": "\\(x\\)", "section": ""}]}, "math", "did not typeset"),
    ({"mathjax": "timeout"}, "math", "timeout"),
    ({"errors": [{"message": "Missing close brace", "section": "#top"}]}, "math", "Missing close brace"),
    ({"leftovers": [{"text": "$$x$$", "section": "#top"}]}, "math", "TeX left as text"),
])
def test_snapshot_defects_are_reported(changes, check, words):
    findings = cb.snapshot_findings("p.html", 400, _snap(**changes))
    assert [f.check for f in findings] == [check]
    assert words in findings[0].message and findings[0].viewports == [400]


def test_wide_display_equations():
    """A display equation wider than the column fails on a desktop; on a phone only when it is cut off."""
    wide = [{"width": 900, "section": "#eq", "scrolls": True, "tex": "x = y"}]
    findings = cb.snapshot_findings("p.html", 1280, _snap(equations=wide))
    assert [f.check for f in findings] == ["wide-equation"] and "scrolls sideways" in findings[0].message
    assert cb.snapshot_findings("p.html", 400, _snap(equations=wide)) == []  # scrolls on a phone: a note
    cut = [{**wide[0], "scrolls": False}]
    findings = cb.snapshot_findings("p.html", 400, _snap(equations=cut))
    assert [f.check for f in findings] == ["wide-equation"] and "cut off" in findings[0].message


def test_merge_and_report():
    a = cb.Finding("p.html", "wide-figure", "x  is wide", [1280])
    b = cb.Finding("p.html", "wide-figure", "x is wide", [400])
    c = cb.Finding("p.html", "raw-glue", "glue")
    merged = cb.merge([a, b, c])
    assert [(f.check, f.viewports) for f in merged] == [("wide-figure", [1280, 400]), ("raw-glue", [])]
    text = cb.report(merged, ["ok.html", "p.html"], ["a note"])
    assert "FAIL p.html (raw-glue 1, wide-figure 1)" in text and "ok   ok.html" in text
    assert "wide-figure [1280 px, 400 px]: x is wide" in text and "a note" in text
    assert text.endswith("1 of 2 pages fail, 2 finding(s)")


def test_missing_html_is_an_error(tmp_path):
    assert cb.main(["--html", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium)")
def test_pages_in_chromium(site):
    shots = site / "shots"
    pages = ["good.html", *(f"{name}.html" for name in BAD)]
    findings, notes = cb.render_pages(site, pages, CHROMIUM, shots, log=lambda *a: None)
    findings = cb.merge(findings)
    assert [f for f in findings if f.page == "good.html"] == []
    for name, (_, _, _, expected) in BAD.items():
        got = _checks(f for f in findings if f.page == f"{name}.html")
        assert got == expected, (name, [f.line() for f in findings if f.page == f"{name}.html"])
    def seen_at(page):
        return {v for f in findings if f.page == page for v in f.viewports}

    assert seen_at("overflowing_figure.html") == {1280, 400}
    assert seen_at("shrunk_figure.html") == {400}  # at 1280 px, 1000 px in the 680 px column is 68%: fine
    assert any("cdn_mathjax.html" in n and "cdn.jsdelivr.net" in n for n in notes)
    for page in pages:
        for width in cb.VIEWPORTS:
            assert (shots / f"{page[:-5]}-{width}.png").stat().st_size > 1000


@pytest.mark.skipif(CHROMIUM is None or not (MATHJAX / "tex-mml-chtml.js").is_file(),
                    reason="needs Chromium and the local MathJax (make mathjax)")
def test_local_mathjax_typesets_and_reports_errors(site):
    shutil.copytree(MATHJAX / "input", site / "mathjax" / "input")
    shutil.copytree(MATHJAX / "output" / "chtml", site / "mathjax" / "output" / "chtml")
    shutil.copy2(MATHJAX / "tex-mml-chtml.js", site / "mathjax")
    head = '<script defer src="mathjax/tex-mml-chtml.js"></script>'
    inline = '<span class="math notranslate nohighlight">%s</span>'
    display = '<div class="math notranslate nohighlight">%s</div>'
    ok = ("<p>Inline " + inline % r"\(x^2 + \sum_i y_i\)" + " and displayed</p>"
          + display % r"\[\begin{aligned} a &= b \\ c &= d \end{aligned}\]")
    (site / "math_ok.html").write_text(PAGE.format(head=head, body=ok))
    # a TeX error (MathJax shows it in red) and an unbalanced brace (MathJax finds no closing delimiter)
    bad = "<p>" + inline % r"\(\frac{1}\)" + " and " + inline % r"\(\frac{1}{\)" + "</p>"
    (site / "math_error.html").write_text(PAGE.format(head=head, body=bad))
    findings, _ = cb.render_pages(site, ["math_ok.html", "math_error.html"], CHROMIUM, viewports=(1280,),
                                  log=lambda *a: None)
    assert [f for f in findings if f.page == "math_ok.html"] == []
    errors = [f.message for f in findings if f.page == "math_error.html" and f.check == "math"]
    assert len(errors) == 2, findings
    assert any("MathJax error" in m and "frac" in m for m in errors)
    assert any("TeX left as text" in m and r"\frac{1}{" in m for m in errors)
