"""Cost of grouped (super-pixel) gradients relative to a plain input gradient (chapter 06).

Target (docs/design.md): ``grouped_gradient`` <= 1.05x ``input_gradient`` once the segments exist.
Also times captum's ``Saliency`` (a peer for the plain gradient), the segment averaging alone and
the super-pixel algorithms (paid once per image, before any explanation).

Usage::

    .venv/bin/python benchmarks/grouped_speed.py [--arch resnet18] [--batch 32] [--size 64] [--repeats 11]
    .venv/bin/python benchmarks/grouped_speed.py --json grouped.json [--device cuda]

``--json PATH`` writes the settings, the ratios and the median times (seconds; absolute times mean something on a
GPU). The plain and the grouped gradient are interleaved (load on a shared machine hits both alike).
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

from xai_robust import models
from xai_robust.attribution import input_gradient
from xai_robust.grouped import grouped_gradient, segment_average
from xai_robust.superpixels import segment

# On a CPU the process clock (CPU seconds of all threads) is used: on a shared, loaded machine it
# measures the work done rather than the time spent waiting for a core. On a GPU, wall-clock time.
CLOCK = time.perf_counter


def timeit(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", default=None, help="write settings, ratios and median times here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    global CLOCK
    CLOCK = time.perf_counter if device.type == "cuda" else time.process_time
    model = models.build(args.arch, 10, seed=0).to(device).eval()
    x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)

    seg_times = {}
    for method, kw in [("slic", {"n_segments": 100}), ("quickshift", {"max_dist": 3.0}),
                       ("felzenszwalb", {}), ("watershed", {"n_segments": 100})]:
        t0 = CLOCK()
        segment(x, method, cache=False, **kw)
        seg_times[method] = CLOCK() - t0
    segments = segment(x, "slic", n_segments=100, cache=False)

    def plain():
        input_gradient(model, x)
        sync()

    def grouped():
        grouped_gradient(model, x, segments)
        sync()

    g = input_gradient(model, x)

    def averaging():
        segment_average(g, segments)
        sync()

    from captum.attr import Saliency

    with torch.no_grad():
        predicted = model(x).argmax(1)

    def captum_saliency():  # given the target; ours also finds the predicted class in the same forward pass
        Saliency(model).attribute(x.clone().requires_grad_(True), target=predicted, abs=False)
        sync()

    # interleave the two main measurements so that machine load affects both alike
    t_plain, t_grouped = [], []
    for _ in range(args.repeats):
        t_plain.append(timeit(plain, 1))
        t_grouped.append(timeit(grouped, 1))
    tp, tg = statistics.median(t_plain), statistics.median(t_grouped)
    ta = timeit(averaging, args.repeats)
    tc = timeit(captum_saliency, args.repeats)

    print(f"{args.arch}, batch {args.batch}, {args.size}x{args.size}, device {device}, "
          f"threads {torch.get_num_threads()}, median of {args.repeats}, "
          f"clock {'wall' if device.type == 'cuda' else 'process CPU time'}")
    print(f"  plain input gradient        {tp * 1e3:8.1f} ms")
    print(f"  captum Saliency             {tc * 1e3:8.1f} ms   ({tc / tp:.2f}x plain)")
    print(f"  segment averaging alone     {ta * 1e3:8.1f} ms   ({ta / tp:.3f}x plain)")
    print(f"  grouped gradient (g-SG)     {tg * 1e3:8.1f} ms")
    for method, t in seg_times.items():
        print(f"  segmentation {method:<13} {t * 1e3:8.1f} ms for the batch (once per image, CPU)")
    ratio = tg / tp
    print(f"cost ratio grouped / plain gradient: {ratio:.3f}  (target <= 1.05: {'met' if ratio <= 1.05 else 'MISSED'})")
    if args.json:
        settings = {"arch": args.arch, "batch": args.batch, "size": args.size, "repeats": args.repeats,
                    "threads": torch.get_num_threads(),
                    "clock": "wall clock" if device.type == "cuda" else "process CPU time"}
        ratios = {"grouped_over_plain_gradient": ratio, "captum_saliency_over_plain_gradient": tc / tp,
                  "segment_averaging_over_plain_gradient": ta / tp}
        times = {"plain_gradient": tp, "grouped_gradient": tg, "captum_saliency": tc, "segment_averaging": ta,
                 **{f"segmentation_{m}_batch": t for m, t in seg_times.items()}}
        with open(args.json, "w") as f:
            json.dump({"benchmark": "grouped_speed", "device": str(device), "settings": settings, "ratios": ratios,
                       "times_s": times}, f, indent=1)
    return ratio


if __name__ == "__main__":
    main()
