"""Repository hygiene: dependencies agree, the toc lists what exists, notebooks are committed clean."""
import json
import re
import shutil
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ours = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        ours |= {r for r in extra if not r.startswith("xai-robust")}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = {r for r in pip if not r.startswith("-e")}
    assert {r.replace(" ", "") for r in ours} == {r.replace(" ", "") for r in conda}


def test_constraints_pin_known_good_torch_pair_and_jupyter_book():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().split()
                if "==" in line and not line.startswith("#"))
    pins = {k.lower(): v for k, v in pins.items()}
    assert pins["torch"].startswith("2.14.0") and pins["torchvision"].startswith("0.29.2")
    assert pins["jupyter-book"].startswith("1.")


def _toc_files(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root"):
                yield value
            else:
                yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def test_toc_lists_existing_files_and_every_chapter():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = list(_toc_files(toc))
    for f in files:
        assert list(ROOT.glob(f + ".*")), f"_toc.yml lists {f}, which does not exist"
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.stem}" in files, f"{nb.name} is not in _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_clean_with_parameters_cell(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", f"{path.name} needs the python3 kernelspec"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{path.name} is committed with outputs"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{path.name} needs exactly one code cell tagged 'parameters'"
    assert params[0] is code[1], "the parameters cell must follow the Colab cell"
    assert 'profile = "ci"' in "".join(params[0]["source"])
    assert "google.colab" in "".join(code[0]["source"])
    last = "".join(code[-1]["source"])
    assert "rec.save()" in last or "save_results" in last, "the last cell must write the results JSON (rec.save())"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
    bib = (ROOT / "book" / "references.bib").read_text()
    for key in ("bassi2024faster", "chakraborty2024exmap", "hakemi2025fictitious", "gong2024superpixel",
                "boubekki2024nas", "kirichenko2023dfr", "sohoni2020george", "liu2021jtt", "bach2015lrp",
                "anders2021zennit", "kokhlikyan2020captum"):
        assert "{" + key + "," in bib


def test_seed_spread_reads_the_recorded_reproduction(tmp_path):
    import json

    import xai_robust

    table = tmp_path / "reproduction.json"
    table.write_text(json.dumps({"seeds": [0, 1, 2], "chapters": {"04_exmap": {
        "wga": {"mean": 72.125, "sd": 4.25, "min": 68.0, "max": 77.0, "n": 3}}}}))
    assert xai_robust.seed_spread("04_exmap", "wga", path=table) == "(seeds 0–2: 72.1 ± 4.2)"
    assert xai_robust.seed_spread("04_exmap", "wga", fmt=".2f", path=table) == "(seeds 0–2: 72.12 ± 4.25)"
    assert xai_robust.seed_spread("04_exmap", "other", path=table) == "(spread over seeds not recorded)"
    assert xai_robust.seed_spread("04_exmap", "wga", path=tmp_path / "missing.json") == \
        "(spread over seeds not recorded)"


def test_recorded_reproduction_covers_every_chapter_claim_figure():
    """book/reproduction.json (written by `make reproduce`) holds every figure tools/reproduce.py tabulates."""
    import json
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    from reproduce import CLAIMS

    table = json.loads((ROOT / "book" / "reproduction.json").read_text())
    assert table["seeds"] == [0, 1, 2]
    for chapter, key, *_ in CLAIMS:
        for k in (key if isinstance(key, tuple) else (key,)):
            entry = table["chapters"][chapter][k]
            assert entry["n"] == 3 and entry["min"] <= entry["mean"] <= entry["max"], (chapter, k)


def test_progress_static_mode_prints_one_line_per_loop(monkeypatch, capsys):
    import xai_robust

    monkeypatch.setenv("XAI_ROBUST_PROGRESS", "static")
    assert list(xai_robust.progress(range(4), desc="loop")) == [0, 1, 2, 3]
    bar = xai_robust.progress(total=3, desc="manual")
    bar.update(3)
    bar.set_postfix(loss="0.5", refresh=False)
    bar.close()
    bar.close()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("loop: 4/4 in ") and lines[1].endswith("(loss=0.5)")
    monkeypatch.setenv("XAI_ROBUST_PROGRESS", "0")
    assert list(xai_robust.progress(range(2), desc="quiet")) == [0, 1]
    assert capsys.readouterr().out == ""


def _book_tool(root):
    import importlib.util

    spec = importlib.util.spec_from_file_location("book_tool", ROOT / "tools" / "book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ROOT = root
    return module


def test_the_repository_url_lives_in_config_yml_and_a_fork_changes_one_line(tmp_path):
    """Every chapter's Colab cell installs _config.yml's repository.url; `tools/book.py repository` propagates a
    changed URL into every notebook, and `execute`/`build` refuse notebooks that disagree."""
    tool = _book_tool(ROOT)
    url = tool.repository_url()
    assert set(tool.install_urls().values()) == {url}
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    config = (ROOT / "_config.yml").read_text()
    (tmp_path / "_config.yml").write_text(config.replace(url, "https://github.com/a-fork/xai-robust"))
    fork = _book_tool(tmp_path)
    with pytest.raises(SystemExit, match="tools/book.py repository"):
        fork.check_repository()
    fork.write_repository()
    assert set(fork.install_urls().values()) == {"https://github.com/a-fork/xai-robust"}
    fork.check_repository()
    for nb in (tmp_path / "notebooks").glob("*.ipynb"):  # only the one line changed
        before = (ROOT / "notebooks" / nb.name).read_text().splitlines()
        after = nb.read_text().splitlines()
        assert len(before) == len(after) and sum(a != b for a, b in zip(before, after, strict=True)) == 1
