"""`make colab-smoke`: execute every chapter in the ``colab`` profile on this CPU, at toy scale, fully offline.

``python tools/colab_smoke.py [NAME ...] [--notebooks DIR] [--out DIR] [--budget S] [--keep]``

What a reader's Colab run does, every ``colab`` branch included, with nothing fetched from the internet:

1. the fixture datasets in the real formats (``xai_robust.data.fixtures``: MNIST IDX files, the Waterbirds
   archive, CIFAR-10, STL-10, CelebA) are written into a temporary mirror folder, served by a loopback HTTP
   server (127.0.0.1 only), and a mirror table pointing at it is written (``$XAI_ROBUST_MIRRORS``);
2. ``$XAI_ROBUST_DATA`` is an empty temporary folder, so every chapter downloads its datasets from that server
   through ``xai_robust.data.download`` (checksums verified, atomic extraction);
3. ``$TORCH_HOME`` holds randomly initialised state dicts under torchvision's ImageNet weight file names
   (``hub/checkpoints/resnet50-0676ba61.pth``, ...) for every architecture the ``colab``/``paper`` recipes start
   from ImageNet, so ``pretrained="imagenet"`` runs its loading code without a download;
4. ``$XAI_ROBUST_SMOKE=1`` shrinks the recipes and the chapters' settings (``xai_robust.profiles.smoke``), and
   ``$XAI_ROBUST_CACHE`` and ``$XAI_ROBUST_RESULTS`` are temporary folders (``results/`` never moves);
5. each chapter runs with papermill, ``profile="colab"``, into ``_build/colab-smoke/``; its wall time and its
   kernel's CPU time are printed (and written to ``times.json`` there, with the URLs downloaded).

Any failing chapter is reported with its name and error, and the command fails. ``NAME``: substrings of
notebook names to run (as ``tools/book.py execute``), e.g. ``python tools/colab_smoke.py 02 05``. The numbers
such a run prints mean nothing; it checks that the colab code runs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "colab-smoke"
# the fixture datasets' sizes: MNIST 200 train / 40 val / 30 test digits; Waterbirds 96 / 48 / 48 images; CIFAR-10
# 200 / 50 / 50 images
FIXTURE_SIZES = dict(mnist=dict(n_train=240, n_test=30), waterbirds=dict(counts=(96, 48, 48), size=(64, 64)),
                     cifar10=dict(n_per_batch=50))


def notebooks(folder: Path, selected=None) -> list[Path]:
    """The chapters in ``folder`` (``NN_*.ipynb``), restricted to names containing one of ``selected``."""
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if selected:
        found = [p for p in found if any(s in p.stem for s in selected)]
    return found


def imagenet_archs() -> list[str]:
    """The architectures the ``colab`` and ``paper`` ERM recipes start from torchvision's ImageNet weights, and
    every other architecture torchvision has ImageNet weights for here (a chapter may build one itself)."""
    from xai_robust import pretrain
    from xai_robust.profiles import ERM_RECIPES

    used = {r["arch"] for p in ("colab", "paper") for r in ERM_RECIPES[p].values() if r.get("pretrained") == "imagenet"}
    return sorted(used | set(pretrain._IMAGENET_WEIGHTS))


def write_fake_imagenet_weights(torch_home: Path) -> list[Path]:
    """Randomly initialised torchvision state dicts under the ImageNet weights' file names in
    ``torch_home/hub/checkpoints`` (torch hub loads a file found there without downloading or checking it)."""
    import torch
    import torchvision

    from xai_robust import pretrain

    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for arch in imagenet_archs():
        weights = getattr(torchvision.models, pretrain._IMAGENET_WEIGHTS[arch]).IMAGENET1K_V1
        torch.manual_seed(0)
        net = getattr(torchvision.models, arch)(weights=None)
        path = folder / weights.url.rsplit("/", 1)[-1]
        torch.save(net.state_dict(), path)
        written.append(path)
    return written


def _figures(path: Path) -> int:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return sum("image/png" in out.get("data", {}) or "image/svg+xml" in out.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []))


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes: each chapter's kernel, once it has exited (a
    measure that does not grow with the load other processes put on the machine, unlike the wall time)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _error(exc: Exception) -> str:
    """The exception a chapter raised, from papermill's PapermillExecutionError when it is one."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        return f"cell {getattr(exc, 'exec_count', '?')}: {ename}: {evalue}"
    return f"{type(exc).__name__}: {str(exc)[-3000:]}"


def run(selected=None, *, folder: Path = ROOT / "notebooks", out: Path = OUT, budget: float = 60.0,
        keep: bool = False, kernel: str = "python3") -> dict:
    """Execute the chapters as the module docstring describes; returns ``{notebook name: wall seconds}``."""
    import papermill

    from xai_robust.data import fixtures

    chapters = notebooks(folder, selected)
    if not chapters:
        sys.exit(f"[colab-smoke] no chapter in {folder} matches {selected}")
    work = Path(tempfile.mkdtemp(prefix="xai-robust-colab-smoke-"))
    out.mkdir(parents=True, exist_ok=True)
    times, cpu, failed = {}, {}, {}
    saved = dict(os.environ)
    try:
        with fixtures.serve(work / "mirror") as server:
            start = time.time()
            table = fixtures.write_mirror(work / "mirror", base_url=server.url, table=work / "mirrors.json",
                                          **FIXTURE_SIZES)
            fakes = write_fake_imagenet_weights(work / "torch")
            print(f"[colab-smoke] fixtures {sorted(table)} served at {server.url}; fake ImageNet weights "
                  f"{[p.name for p in fakes]} ({time.time() - start:.0f} s)", flush=True)
            (work / "data").mkdir()
            no_proxy = ",".join(v for v in (os.environ.get("NO_PROXY", ""), "127.0.0.1,localhost") if v)
            os.environ.update({
                "XAI_ROBUST_MIRRORS": str(work / "mirrors.json"), "XAI_ROBUST_DATA": str(work / "data"),
                "XAI_ROBUST_SMOKE": "1", "XAI_ROBUST_CACHE": str(work / "cache"), "TORCH_HOME": str(work / "torch"),
                "XAI_ROBUST_RESULTS": str(work / "results"), "XAI_ROBUST_PROGRESS": "static",
                "NO_PROXY": no_proxy, "no_proxy": no_proxy, "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
            os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures
            for nb in chapters:
                start, cpu0 = time.time(), _children_cpu()
                print(f"[colab-smoke] executing {nb.name} (profile='colab', smoke) ...", flush=True)
                target = out / nb.name
                try:
                    papermill.execute_notebook(str(nb), str(target), kernel_name=kernel,
                                               parameters={"profile": "colab"}, cwd=str(nb.parent),
                                               progress_bar=False, language="python", log_output=False)
                    if _figures(target) == 0:
                        failed[nb.name] = "the executed chapter shows no figure"
                except Exception as exc:  # report every failing chapter, then fail
                    failed[nb.name] = _error(exc)
                times[nb.name], cpu[nb.name] = time.time() - start, _children_cpu() - cpu0
                status = f"FAILED: {failed[nb.name]}" if nb.name in failed else "ok"
                print(f"[colab-smoke] {nb.name}: {times[nb.name]:.0f} s ({cpu[nb.name]:.0f} CPU s), {status}",
                      flush=True)
            requests = list(server.requests)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if keep:
            print(f"[colab-smoke] kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    (out / "times.json").write_text(json.dumps({"times_s": {k: round(v, 1) for k, v in times.items()},
                                                "kernel_cpu_s": {k: round(v, 1) for k, v in cpu.items()},
                                                "failed": failed, "downloads": requests}, indent=1) + "\n")
    print("[colab-smoke] chapter wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    print(f"[colab-smoke] {len(requests)} downloads from the loopback server")
    slow = [k for k, v in times.items() if v > budget]
    if slow:
        print(f"[colab-smoke] WARNING: over the {budget:.0f} s budget: {slow}")
    if failed:
        for name, message in failed.items():
            print(f"[colab-smoke] FAILED {name}: {message}")
        sys.exit(f"[colab-smoke] {len(failed)} chapter(s) failed: {sorted(failed)} (executed copies in {out})")
    return times


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", help="substrings of notebook names to run (default: all)")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks",
                        help="the folder of the chapters (default notebooks/; e.g. edited copies)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"executed copies (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per chapter before a warning")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data, cache and mirror folders")
    args = parser.parse_args()
    run(args.only, folder=args.notebooks, out=args.out, budget=args.budget, keep=args.keep)
