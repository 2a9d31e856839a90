"""Execute the chapter notebooks with papermill and build the book from their executed copies.

``python tools/book.py execute``  runs every notebook in notebooks/ (profile ``ci``) into _build/executed/,
                                  printing each chapter's wall time; fails if any chapter fails.
``python tools/book.py build [-W]`` stages _config.yml, _toc.yml, book/ and the executed notebooks in
                                  _build/site/ (same relative paths as the repository, so Colab links point at
                                  the committed notebooks) and runs jupyter-book into _build/html.
                                  MathJax is served by the book itself (no CDN): the local copy in
                                  _build/mathjax/es5 (`make mathjax`, or $XAI_ROBUST_MATHJAX) is copied to
                                  _build/html/_static/mathjax/, where _config.yml's mathjax_path points.
``python tools/book.py repository`` writes _config.yml's ``repository.url`` into every chapter's Colab install
                                  cell (the ``REPOSITORY = "..."`` line): a fork changes that one line of
                                  _config.yml and runs this; ``execute`` and ``build`` refuse notebooks whose
                                  install URL disagrees with _config.yml (the launch buttons read it directly).
Apart from ``repository``, committed notebooks are never written to, so `git status` stays clean.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
EXECUTED = BUILD / "executed" / "notebooks"
SITE = BUILD / "site"
MATHJAX = BUILD / "mathjax" / "es5"  # MathJax 3's es5/ folder, unpacked by `make mathjax`
# what tex-mml-chtml.js loads at run time: TeX extensions, CHTML fonts, the menu, accessibility and speech
MATHJAX_PARTS = ("tex-mml-chtml.js", "input", "output/chtml.js", "output/chtml", "ui", "a11y", "sre", "adaptors")


REPOSITORY_LINE = re.compile(r'^REPOSITORY = "([^"]*)"(.*)$')


def repository_url() -> str:
    """_config.yml's ``repository.url``: the one place the repository's address lives."""
    import yaml

    url = (yaml.safe_load((ROOT / "_config.yml").read_text()).get("repository") or {}).get("url")
    if not url:
        sys.exit("[book] _config.yml has no repository.url")
    return url


def install_urls() -> dict:
    """``{notebook name: the URL of its Colab install cell}`` (None where the cell has no REPOSITORY line)."""
    import json

    found = {}
    for nb in notebooks():
        cells = json.loads(nb.read_text())["cells"]
        urls = [m.group(1) for c in cells if c["cell_type"] == "code"
                for line in "".join(c["source"]).splitlines() if (m := REPOSITORY_LINE.match(line))]
        found[nb.name] = urls[0] if len(urls) == 1 else None
    return found


def check_repository():
    url = repository_url()
    wrong = {name: got for name, got in install_urls().items() if got != url}
    if wrong:
        sys.exit(f"[book] the Colab install cell of {sorted(wrong)} does not install {url} (_config.yml's "
                 "repository.url): run `python tools/book.py repository`")


def write_repository():
    """Write _config.yml's repository.url into every chapter's ``REPOSITORY = "..."`` line."""
    import json

    url = repository_url()
    for nb in notebooks():
        text = nb.read_text()
        notebook = json.loads(text)
        changed = 0
        for cell in notebook["cells"]:
            if cell["cell_type"] != "code":
                continue
            lines = "".join(cell["source"]).split("\n")
            for i, line in enumerate(lines):
                m = REPOSITORY_LINE.match(line)
                if m and m.group(1) != url:
                    lines[i] = f'REPOSITORY = "{url}"{m.group(2)}'
                    changed += 1
            cell["source"] = [line + "\n" for line in lines[:-1]] + [lines[-1]]
        if changed:
            nb.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
        print(f"[book] {nb.name}: {'installs ' + url if changed else 'already installs ' + url}")
    check_repository()


def notebooks(selected=None):
    found = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if selected:
        found = [p for p in found if any(s in p.stem for s in selected)]
    return found


def _figures(path: Path) -> int:
    """Number of image outputs in an executed notebook."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return sum("image/png" in out.get("data", {}) or "image/svg+xml" in out.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []))


def execute(selected=None, budget=300.0, kernel="python3"):
    import os

    import papermill

    # a non-interactive MPLBACKEND (e.g. Agg) would stop the kernel's inline backend: no figures in the book
    os.environ.pop("MPLBACKEND", None)
    # progress bars print one final line instead of widget state the rendered book cannot show
    os.environ.setdefault("XAI_ROBUST_PROGRESS", "static")
    check_repository()
    EXECUTED.mkdir(parents=True, exist_ok=True)
    times, failed = {}, []
    for nb in notebooks(selected):
        start = time.time()
        print(f"[book] executing {nb.name} ...", flush=True)
        try:
            papermill.execute_notebook(str(nb), str(EXECUTED / nb.name), kernel_name=kernel,
                                       parameters={"profile": "ci"}, cwd=str(nb.parent), progress_bar=False,
                                       language="python", log_output=False)
        except Exception as exc:  # report every failing chapter, then fail
            failed.append(nb.name)
            print(f"[book] FAILED {nb.name}: {type(exc).__name__}: {str(exc)[-3000:]}", flush=True)
        times[nb.name] = time.time() - start
        if nb.name not in failed and _figures(EXECUTED / nb.name) == 0:
            failed.append(nb.name)
            print(f"[book] FAILED {nb.name}: the executed chapter shows no figure", flush=True)
        print(f"[book] {nb.name}: {times[nb.name]:.0f} s", flush=True)
    print("[book] chapter wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    slow = [k for k, v in times.items() if v > budget]
    if slow:
        print(f"[book] WARNING: over the {budget:.0f} s budget: {slow}")
    if failed:
        sys.exit(f"[book] {len(failed)} chapter(s) failed: {failed}")


def stage():
    check_repository()
    if SITE.exists():
        shutil.rmtree(SITE)
    SITE.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, SITE / name)
    shutil.copytree(ROOT / "book", SITE / "book")
    shutil.copytree(ROOT / "docs", SITE / "docs")
    (SITE / "notebooks").mkdir()
    for nb in notebooks():
        executed = EXECUTED / nb.name
        if not executed.exists():
            sys.exit(f"[book] {executed} is missing: run `python tools/book.py execute` first")
        shutil.copy2(executed, SITE / "notebooks" / nb.name)


def copy_mathjax(html: Path):
    """Copy the local MathJax into the built book's _static/mathjax/.

    After the build, not through html_static_path: jupyter-book adds a <script> for every .js file under a
    source _static/ folder, and MathJax loads its components itself."""
    import os

    source = Path(os.environ.get("XAI_ROBUST_MATHJAX", MATHJAX))
    if not (source / "tex-mml-chtml.js").is_file():
        print(f"[book] WARNING: no MathJax in {source}: the equations will not render "
              "(`make mathjax` fetches it)", flush=True)
        return
    target = html / "_static" / "mathjax"
    if target.exists():
        shutil.rmtree(target)
    for part in MATHJAX_PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part)
        elif (source / part).is_file():
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / part, target / part)


def build(strict=False):
    stage()
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(SITE), "--path-output", str(ROOT)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    print("[book]", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    index = BUILD / "html" / "index.html"
    if not index.exists():
        sys.exit(f"[book] {index} was not produced")
    copy_mathjax(BUILD / "html")
    print(f"[book] built {index}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute")
    ex.add_argument("only", nargs="*", help="substrings of notebook names to run (default: all)")
    ex.add_argument("--budget", type=float, default=300.0)
    bd = sub.add_parser("build")
    bd.add_argument("-W", dest="strict", action="store_true", help="warnings are errors")
    sub.add_parser("repository", help="write _config.yml's repository.url into the notebooks' Colab install cells")
    args = parser.parse_args()
    if args.command == "execute":
        execute(args.only, args.budget)
    elif args.command == "repository":
        write_repository()
    else:
        build(args.strict)
