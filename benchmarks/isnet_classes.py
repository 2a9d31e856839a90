"""Training-step time of the ISNet variants vs the number of classes (Faster ISNet Fig. 5; chapter 03).

Times one full training step (forward, loss, backward, clipped optimizer step; ``isnet.step_function``) of a standard
classifier and of the original, Selective, Stochastic and Dual ISNets for 1…1000 output classes, on random images
with a centred foreground mask, and prints the ratios the performance targets are stated in (issue #18):

* Selective and Stochastic steps ≤ 3× a standard step (at 10 classes; a Selective step is a forward pass, the
  heatmap's backward with ``create_graph`` and the backward of both);
* Dual step ≤ 7× a standard step (two maps of one forward pass);
* 1000-class Selective/Stochastic step within 15% of the 10-class step;
* the original ISNet's step grows with the number of classes.

Every model is in training mode: the ISNet losses explain the training forward pass, BatchNorm as set by
``--batchnorm`` (``frozen``, the default of ``isnet.isnet_loss``: batch statistics held constant in the heatmaps).
All steps (every variant at every class count) are interleaved: every repeat runs each once, in a rotated order,
so machine load hits all alike; each time is the median over the repeats. On a CPU the clock is the process's CPU
time by default (robust on a shared machine; ``--clock wall`` for the wall clock), on CUDA the wall clock after
synchronising. With several threads on a machine that other jobs keep busy, OpenMP's spin-waiting is counted as CPU
time and swamps the steps (seen here: 40 ms steps read as seconds); measure there with ``--threads 1``.

Usage (CPU here, a GPU where one is available)::

    python benchmarks/isnet_classes.py                      # small_resnet, 32 px, batch 32
    python benchmarks/isnet_classes.py --arch resnet18 --size 32 --batch 8 --classes 10 --json r18.json
    python benchmarks/isnet_classes.py --arch resnet50 --size 64 --batch 32 --device cuda --original-max 100
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from xai_robust import isnet, models  # noqa: E402

VARIANTS = ("standard", "original", "selective", "stochastic", "dual")


def _interleaved(steps, repeats, clock, sync):
    """Median time of each step callable, every repeat running all of them once in a rotated order."""
    names = list(steps)
    for name in names:  # warm-up (allocations, lazy initialisation)
        steps[name]()
    sync()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sync()
            t0 = clock()
            steps[name]()
            sync()
            times[name].append(clock() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def run(arch="small_resnet", size=32, batch=32, classes=(1, 2, 5, 10, 100, 1000), original_max=10,
        repeats=3, device=None, threads=None, seed=0, batchnorm="frozen", clock="cpu", variants=VARIANTS,
        verbose=True):
    """Median step time (s) for every variant and number of classes; returns {variant: {classes: seconds}}."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    timer = time.process_time if (clock == "cpu" and device.type == "cpu") else time.perf_counter
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    masks = torch.zeros(batch, 1, size, size)
    masks[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    masks = masks.to(device)
    steps = {}
    for k in classes:
        y = torch.randint(0, k, (batch,), generator=g).to(device)
        for variant in variants:
            if variant == "original" and k > original_max:
                continue
            model = models.build(arch, k, in_channels=3, seed=seed).to(device)
            options = {} if variant == "standard" else {"batchnorm": batchnorm}
            steps[variant, k] = isnet.step_function(model, x, y, masks, variant=variant, seed=seed, **options)
    table = {v: {} for v in variants}
    for (variant, k), t in _interleaved(steps, repeats, timer, sync).items():  # every step in every round
        table[variant][k] = t
    if verbose:
        for variant, row in table.items():
            for k, t in row.items():
                print(f"{variant:>10}  classes={k:<5d} step={1000 * t:9.1f} ms", flush=True)
    return table


def ratios(table):
    """The performance-target ratios from one run's table."""
    out = {}
    std = table["standard"]
    ref = 10 if 10 in std else max(std)
    for v in ("selective", "stochastic", "dual", "original"):
        if ref in table.get(v, {}):
            out[f"{v}_over_standard_at_{ref}"] = table[v][ref] / std[ref]
    big = max(std)
    if big != ref:
        for v in ("standard", "selective", "stochastic", "dual"):
            if big in table.get(v, {}) and ref in table[v]:
                out[f"{v}_{big}_over_{ref}_classes"] = table[v][big] / table[v][ref]
    orig = table.get("original", {})
    if len(orig) >= 2:
        lo, hi = min(orig), max(orig)
        out[f"original_{hi}_over_{lo}_classes"] = orig[hi] / orig[lo]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="small_resnet", choices=models.ARCHS)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--classes", type=int, nargs="+", default=[1, 2, 5, 10, 100, 1000])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                   help="variants to time ('standard' is always timed: the ratios' reference)")
    p.add_argument("--original-max", type=int, default=10,
                   help="largest class count for the original ISNet (its step grows with the classes; 100 on a GPU)")
    p.add_argument("--batchnorm", default="frozen", choices=("frozen", "eval", "batch"),
                   help="BatchNorm in the heatmaps of the training-mode models (isnet.isnet_loss's batchnorm)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="on a CPU device: process CPU time (default; robust on a shared machine) or wall clock")
    p.add_argument("--json", default=None, help="write settings, ratios and times here")
    a = p.parse_args(argv)
    variants = ("standard",) + tuple(v for v in VARIANTS if v in a.variants and v != "standard")
    table = run(a.arch, a.size, a.batch, tuple(a.classes), a.original_max, a.repeats, a.device, a.threads,
                batchnorm=a.batchnorm, clock=a.clock, variants=variants)
    r = ratios(table)
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    clock = "process CPU time" if (a.clock == "cpu" and torch.device(device).type == "cpu") else "wall clock"
    print(f"\n{a.arch}, batch {a.batch}, {a.size}×{a.size}, training mode, batchnorm={a.batchnorm!r}, {device}, "
          f"{a.repeats} interleaved repeats, median {clock} (threads: {torch.get_num_threads()})")
    print("ratios (targets: selective/stochastic over standard ≤ 3; dual over standard ≤ 7; 1000 over 10 classes "
          "≤ 1.15; original grows)")
    for k, v in r.items():
        print(f"  {k:<40s} {v:6.2f}")
    if a.json:
        settings = {"arch": a.arch, "size": a.size, "batch": a.batch, "classes": a.classes, "variants": list(variants),
                    "original_max": a.original_max, "batchnorm": a.batchnorm, "mode": "train",
                    "repeats": a.repeats, "threads": torch.get_num_threads(), "clock": clock}
        times = {f"{v}_{k}_classes": t for v, d in table.items() for k, t in d.items()}
        with open(a.json, "w") as f:
            json.dump({"benchmark": "isnet_classes", "device": device, "settings": settings, "ratios": r,
                       "times_s": times}, f, indent=1)
    return r


if __name__ == "__main__":
    main()
