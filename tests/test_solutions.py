"""Every worked solution in book/solutions/ runs, and its numerical claims hold (the `assert` lines in its code).

Each ```python block of a solution file is executed in order, in one namespace per file, with the repository root as
working directory, two threads and no progress bars, the way a reader pastes them into a fresh session. Blocks that
are not meant to run use another fence (```text or ```{code-block} python) and say why.

The solutions reuse the chapters' cached models (`train.erm(...)`, checkpoints under the chapters' cache), so this
test runs after the chapters, and only when ``XAI_ROBUST_SOLUTIONS=1``; otherwise it is skipped and the unit-test
stage stays fast. Run it with::

    XAI_ROBUST_SOLUTIONS=1 .venv/bin/python -m pytest tests/test_solutions.py -q --durations=0

The cheap structural check (every solution has a block and every block compiles) always runs.
"""
from __future__ import annotations

import os
import re
import textwrap
import time
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "book" / "solutions").glob("[0-9]*.md"))
RUN = os.environ.get("XAI_ROBUST_SOLUTIONS") == "1"
OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*python\s*$")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a MyST file as (line number of the opening fence, code), in order.

    A block closes at a line of the same fence character, at least as long as the opening fence (CommonMark).
    """
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = OPEN.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, start, body = match["fence"], i + 1, []
        i += 1
        while i < len(lines) and not re.fullmatch(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*", lines[i]):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"the python block opened on line {start} is never closed")
        blocks.append((start, textwrap.dedent("\n".join(body)) + "\n"))
        i += 1
    return blocks


def _chapter_cache() -> str:
    """The chapters' cache: tests/conftest.py points XAI_ROBUST_CACHE at a fresh temporary folder unless it was set."""
    current = os.environ.get("XAI_ROBUST_CACHE")
    if current and not Path(current).name.startswith("xai_robust_test_cache_"):
        return current
    return str(Path.home() / ".cache" / "xai_robust")


def test_parser_finds_blocks_in_order():
    text = ("x\n```python\na = 1\n```\n\n```text\nnot run\n```\n````python\nb = a + 1\n```\nc = b\n````\n"
            "```{code-block} python\nnot run either\n```\n")
    assert python_blocks(text) == [(2, "a = 1\n"), (9, "b = a + 1\n```\nc = b\n")]
    with pytest.raises(ValueError, match="never closed"):
        python_blocks("```python\na = 1\n")


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_blocks_compile(path):
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    assert blocks, f"{path.name} has no ```python block"
    for number, (line, code) in enumerate(blocks, 1):
        compile(code, f"{path.name}, block {number} (line {line})", "exec")


@pytest.mark.skipif(not RUN, reason="set XAI_ROBUST_SOLUTIONS=1 (after the chapters ran) to execute the solutions")
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_runs(path, monkeypatch):
    import matplotlib
    import torch

    matplotlib.use("Agg")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("XAI_ROBUST_PROGRESS", "0")
    monkeypatch.setenv("XAI_ROBUST_CACHE", _chapter_cache())
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    namespace = {"__name__": f"solution_{path.stem}"}
    start = time.perf_counter()
    try:
        for number, (line, code) in enumerate(python_blocks(path.read_text(encoding="utf-8")), 1):
            try:
                exec(compile(code, f"{path.name}, block {number} (line {line})", "exec"), namespace)
            except Exception as exc:  # report every failure with its block and the end of its traceback
                pytest.fail(f"{path.name}, block {number} (line {line}) raised {type(exc).__name__}: {exc}\n"
                            + "".join(traceback.format_exception(exc)[-6:]), pytrace=False)
    finally:
        torch.set_num_threads(threads)
        import matplotlib.pyplot as plt

        plt.close("all")
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")
