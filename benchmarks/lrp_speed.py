"""Time LRP-Flex against Gradient×Input, zennit and captum on torchvision ResNets (chapter 02).

One run, interleaved repeats (every repeat times every method once, in turn and in a rotated order, so load
on a shared machine and the after-effects of the previous method hit all methods alike); prints median seconds
per heatmap batch and ratios to Gradient×Input. On a CPU the default clock is the process's CPU time
(``--clock wall`` for the wall clock); on CUDA the wall clock after synchronising.

    .venv/bin/python benchmarks/lrp_speed.py            # ResNet-18 and ResNet-50, batch 32, 64×64, CPU
    .venv/bin/python benchmarks/lrp_speed.py --quick    # small sizes, ResNet-18 only
    .venv/bin/python benchmarks/lrp_speed.py --mode train --json train.json   # training mode, frozen BatchNorm
    .venv/bin/python benchmarks/lrp_speed.py --device cuda

``--mode train`` times the models in training mode, as an ISNet step explains them: LRP-Flex with
``batchnorm="frozen"`` (the training forward pass, batch statistics held constant in the heatmap) against a
Gradient×Input of the same training-mode forward pass (the package's ``gradient_x_input`` runs BatchNorm in eval
mode); zennit and captum keep their own (eval-mode, merged-BatchNorm) behaviour. ``--json PATH`` writes the settings,
ratios and median times (seconds; absolute times mean something on a GPU).

Targets (docs/design.md): LRP-Flex ≤ 1.1× Gradient×Input and ≥ 2.5× faster than zennit's equivalent composite
(``xai_robust.references.epsilon_composite``: the same LRP-ε heatmap). captum's LRP runs on these ResNets but has
no rule for their residual sums, so its map is not the same LRP-ε there (timed anyway); a method that fails
on a model is reported, not hidden.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
import torchvision  # noqa: E402

from xai_robust.attribution import gradient_x_input  # noqa: E402
from xai_robust.lrp import lrp_flex  # noqa: E402
from xai_robust.references import captum_lrp, epsilon_composite, zennit_heatmap  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _train_gradient_x_input(model, x, target):
    """Gradient×Input of the training-mode forward pass (BatchNorm with batch statistics)."""
    xg = x.detach().requires_grad_(True)
    logits = model(xg)
    (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), xg)
    return g * x


def bench(arch, batch, size, repeats, device, epsilon=0.01, clock_name="cpu", mode="eval"):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=10).to(device).eval()
    x = torch.rand(batch, 3, size, size, device=device)
    target = torch.randint(0, 10, (batch,), device=device)
    composite = epsilon_composite(model, x[:2], epsilon)
    if mode == "train":
        model.train()
        grad_x_input = lambda: _train_gradient_x_input(model, x, target)  # noqa: E731
        flex = lambda: lrp_flex(model, x, target, epsilon=epsilon, batchnorm="frozen")  # noqa: E731
    else:
        grad_x_input = lambda: gradient_x_input(model, x, target)  # noqa: E731
        flex = lambda: lrp_flex(model, x, target, epsilon=epsilon)  # noqa: E731
    methods = {
        "gradient_x_input": grad_x_input,
        "lrp_flex": flex,
        "zennit": lambda: zennit_heatmap(model, x, target, composite),
        "captum_lrp": lambda: captum_lrp(model, x, target, epsilon=epsilon),
    }
    times = {k: [] for k in methods}
    failed = {}
    for name, fn in list(methods.items()):  # warm-up, and find the methods that cannot run this model
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - reported, not hidden
            failed[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:90]}"
            del methods[name]
    clock = time.process_time if (clock_name == "cpu" and device.type == "cpu") else time.perf_counter
    names = list(methods)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate: no method always runs first
            fn = methods[name]
            _sync(device)
            t0 = clock()
            fn()
            _sync(device)
            times[name].append(clock() - t0)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    clock_used = "process CPU time" if clock is time.process_time else "wall clock"
    print(f"\n{arch}, batch {batch}, {size}×{size}, {mode} mode, {device}, {repeats} interleaved repeats, median "
          f"{clock_used} (threads: {torch.get_num_threads()})")
    for name in times:
        if name in med:
            print(f"  {name:18s} {med[name]:8.3f} s   {med[name] / med['gradient_x_input']:5.2f}× Grad×Input")
        else:
            print(f"  {name:18s}   failed: {failed[name]}")
    flex = med["lrp_flex"]
    print(f"  LRP-Flex / Grad×Input = {flex / med['gradient_x_input']:.2f} (target ≤ 1.1); "
          f"zennit / LRP-Flex = {med['zennit'] / flex:.2f} (target ≥ 2.5)")
    return med, failed, clock_used


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="batch 8, 32×32, ResNet-18 only, 3 repeats")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="on a CPU device: process CPU time (default; robust on a shared machine) or wall clock")
    parser.add_argument("--mode", choices=["eval", "train"], default="eval",
                        help="models in eval mode, or in training mode with LRP-Flex's batchnorm='frozen'")
    parser.add_argument("--json", default=None, help="write settings, ratios and median times here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.batch, args.size, args.repeats, args.archs = 8, 32, 3, ["resnet18"]
    device = torch.device(args.device)
    ratios, times, failures, clock_used = {}, {}, {}, None
    for arch in args.archs:
        med, failed, clock_used = bench(arch, args.batch, args.size, args.repeats, device, clock_name=args.clock,
                                        mode=args.mode)
        ratios[f"{arch}_lrp_flex_over_gradient_x_input"] = med["lrp_flex"] / med["gradient_x_input"]
        if "zennit" in med:
            ratios[f"{arch}_zennit_over_lrp_flex"] = med["zennit"] / med["lrp_flex"]
        times.update({f"{arch}_{name}": t for name, t in med.items()})
        failures.update({f"{arch}_{name}": why for name, why in failed.items()})
    if args.json:
        settings = {"archs": args.archs, "batch": args.batch, "size": args.size, "repeats": args.repeats,
                    "mode": args.mode, "batchnorm": "frozen" if args.mode == "train" else "eval",
                    "threads": torch.get_num_threads(), "clock": clock_used}
        with open(args.json, "w") as f:
            json.dump({"benchmark": "lrp_speed", "device": str(device), "settings": settings, "ratios": ratios,
                       "times_s": times, "failed": failures}, f, indent=1)
    return ratios


if __name__ == "__main__":
    main()
