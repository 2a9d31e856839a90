"""Training-step time of the ISNet variants vs the number of classes (Faster ISNet Fig. 5; chapter 03).

Times one full training step (forward, loss, backward, clipped optimizer step) of a standard classifier
and of the original, Selective, Stochastic and Dual ISNets for 1…1000 output classes, on random images
with a centred foreground mask, and prints the ratios the performance targets are stated in:

* Selective and Stochastic steps ≤ 4× a standard step (at 10 classes);
* 1000-class Selective/Stochastic step within 15% of the 10-class step;
* the original ISNet's step grows with the number of classes.

Usage (CPU here, a GPU where one is available)::

    python benchmarks/isnet_classes.py                      # small_resnet, 32 px, batch 32
    python benchmarks/isnet_classes.py --arch resnet18 --size 64 --batch 32 --device cuda --original-max 100
    python benchmarks/isnet_classes.py --classes 1 10 100 --original-max 100 --json out.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from xai_robust import isnet, models  # noqa: E402

VARIANTS = ("standard", "original", "selective", "stochastic", "dual")


def run(arch="small_resnet", size=32, batch=32, classes=(1, 2, 5, 10, 100, 1000), original_max=10,
        repeats=3, device=None, threads=None, seed=0, verbose=True):
    """Median step time (s) for every variant and number of classes; returns {variant: {classes: seconds}}."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    masks = torch.zeros(batch, 1, size, size)
    masks[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    masks = masks.to(device)
    table = {v: {} for v in VARIANTS}
    for k in classes:
        y = torch.randint(0, k, (batch,), generator=g).to(device)
        for variant in VARIANTS:
            if variant == "original" and k > original_max:
                continue
            model = models.build(arch, k, in_channels=3, seed=seed).to(device)
            table[variant][k] = isnet.step_time(model, x, y, masks, variant=variant, repeats=repeats, seed=seed)
            if verbose:
                print(f"{variant:>10}  classes={k:<5d} step={1000 * table[variant][k]:9.1f} ms", flush=True)
    return table


def ratios(table):
    """The performance-target ratios from one run's table."""
    out = {}
    std = table["standard"]
    ref = 10 if 10 in std else max(std)
    for v in ("selective", "stochastic", "dual", "original"):
        if ref in table[v]:
            out[f"{v}_over_standard_at_{ref}"] = table[v][ref] / std[ref]
    big = max(std)
    for v in ("standard", "selective", "stochastic", "dual"):
        if big in table[v] and ref in table[v]:
            out[f"{v}_{big}_over_{ref}_classes"] = table[v][big] / table[v][ref]
    orig = table["original"]
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
    p.add_argument("--original-max", type=int, default=10,
                   help="largest class count for the original ISNet (its step grows with the classes; 100 on a GPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="write the table and ratios here")
    a = p.parse_args(argv)
    table = run(a.arch, a.size, a.batch, tuple(a.classes), a.original_max, a.repeats, a.device, a.threads)
    r = ratios(table)
    print("\nratios (targets: selective/stochastic over standard ≤ 4; 1000 over 10 classes ≤ 1.15; "
          "original grows)")
    for k, v in r.items():
        print(f"  {k:<40s} {v:6.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "table": {v: {str(k): t for k, t in d.items()} for v, d in table.items()},
                       "ratios": r}, f, indent=1)


if __name__ == "__main__":
    main()
