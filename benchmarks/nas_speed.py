"""Time Neuro-Activated Superpixels against scikit-image SLIC and Felzenszwalb (chapter 07, NAS Table 5).

Setting of the target (issues #8, #18): the paper's ResNet-18 — torchvision's ImageNet stem (7×7 stride-2 convolution
and max-pool, ``models.build("resnet18", 10, small_input=False)``) — layers layer2–layer4, K = 5, batch 32, 96×96
images, CPU. ``--small-input`` times the CIFAR-style stem instead (no downsampling before layer1: its forward pass
alone costs ~12× more at this size). The methods are timed in interleaved rounds (each round runs every method once,
after one warm-up) and each keeps its best round, so that a load change on a shared machine hits all of them. Prints
per-image milliseconds and the ratios

* NAS (forward + exact low-resolution k-means) / SLIC — target ≤ 1.2 on CPU (docs/design.md);
* NAS clustering only / SLIC, forward pass only / SLIC and the forward pass's share of NAS;
* the plain forward pass (default memory layout) / NAS's forward pass (channels-last; same activations up to
  float rounding, tested);
* exact low-resolution k-means / k-means on materialised upsampled features (same result, tested);
* the batched PyTorch k-means (the GPU path) / the numba CPU kernels (same picks and labels, tested).

``--json PATH`` writes ``{"benchmark", "device", "settings", "ratios", "times_s"}`` (``times_s``: seconds per image,
absolute; on a GPU they are the figures to report, on a shared CPU the ratios are).

Usage::

    python benchmarks/nas_speed.py                 # CPU, the docs/design.md setting
    python benchmarks/nas_speed.py --device cuda   # GPU, where one exists
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402
from skimage import data as skdata  # noqa: E402
from skimage.segmentation import felzenszwalb, slic  # noqa: E402
from skimage.transform import resize  # noqa: E402

from xai_robust import kmeans, models, nas  # noqa: E402


def photo_batch(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Random crops of scikit-image's bundled photos, resized to size×size (offline)."""
    photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket(), skdata.cat()]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        c = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        out.append(resize(img[y:y + c, x:x + c], (size, size), anti_aliasing=True))
    return torch.tensor(np.stack(out), dtype=torch.float32).permute(0, 3, 1, 2).contiguous()


def interleaved_best(fns: dict, rounds: int, sync) -> dict:
    """Best wall time of each function over ``rounds`` rounds that run every function once (after a warm-up)."""
    best = {}
    for fn in fns.values():  # warm-up (compiles or loads the kernels, allocates)
        fn()
        sync()
    for r in range(rounds):
        names = list(fns)
        names = names[r % len(names):] + names[:r % len(names)]  # rotate the order between rounds
        for name in names:
            t0 = time.perf_counter()
            fns[name]()
            sync()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    return best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--layers", default="layer2,layer3,layer4")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (best round per method)")
    parser.add_argument("--direct-repeats", type=int, default=1,
                        help="rounds for the (slow) k-means on materialised features")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slic-segments", type=int, default=10,
                        help="SLIC n_segments (NAS compares at a similar number of superpixels)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave the default)")
    parser.add_argument("--small-input", action="store_true",
                        help="ResNet-18 with the small-input stem instead of the paper's ImageNet stem")
    parser.add_argument("--json", default=None, help="write the ratios and times to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    layers = args.layers.split(",")

    x = photo_batch(args.batch, args.size)
    arr = x.permute(0, 2, 3, 1).double().numpy()
    model = models.build("resnet18", 10, seed=0, small_input=args.small_input).eval().to(dev)
    xd = x.to(dev)
    acts = nas.layer_activations(model, xd, layers)
    size = (args.size, args.size)
    kernels = kmeans._kernels
    engine = "numba CPU kernels" if dev.type == "cpu" and kernels() is not None else "PyTorch"

    def pytorch_path():  # the batched PyTorch k-means (what runs on a GPU), for comparison
        kmeans._kernels = lambda: None
        try:
            kmeans.kmeans_pixels(kmeans._LowRes(acts, size), args.k, seed=0)
        finally:
            kmeans._kernels = kernels

    fns = {
        "slic": lambda: [slic(a, n_segments=args.slic_segments, compactness=10, start_label=0) for a in arr],
        "felzenszwalb": lambda: [felzenszwalb(a, scale=100, sigma=0.5, min_size=50) for a in arr],
        "forward": lambda: nas.layer_activations(model, xd, layers),
        "forward_plain": lambda: nas._activations(model, xd, layers, optimize=False),
        "kmeans_fast": lambda: kmeans.kmeans_pixels(kmeans._LowRes(acts, size), args.k, seed=0),
        "kmeans_torch": pytorch_path,
        "nas_total": lambda: nas.neuro_activated_superpixels(model, xd, layers, args.k, seed=0, batch_size=args.batch),
    }
    best = interleaved_best(fns, args.repeats, sync)
    best.update(interleaved_best(
        {"kmeans_direct": lambda: kmeans.kmeans_pixels(nas._features_from_activations(acts, size), args.k, seed=0)},
        args.direct_repeats, sync))
    n = args.batch
    per_image = {name: t / n for name, t in best.items()}
    ratios = {
        "nas_over_slic": best["nas_total"] / best["slic"],
        "clustering_over_slic": best["kmeans_fast"] / best["slic"],
        "forward_over_slic": best["forward"] / best["slic"],
        "forward_share_of_nas": best["forward"] / best["nas_total"],
        "plain_forward_over_forward": best["forward_plain"] / best["forward"],
        "direct_over_fast_kmeans": best["kmeans_direct"] / best["kmeans_fast"],
        "pytorch_over_kernels_kmeans": best["kmeans_torch"] / best["kmeans_fast"],
    }
    stem = "small-input" if args.small_input else "ImageNet (paper)"
    settings = {"batch": n, "size": args.size, "k": args.k, "layers": layers, "stem": stem, "repeats": args.repeats,
                "threads": torch.get_num_threads(), "slic_segments": args.slic_segments, "kmeans_engine": engine}
    print(f"device={dev} " + " ".join(f"{k}={v}" for k, v in settings.items()))
    for key, val in per_image.items():
        print(f"  {key:>14}: {1e3 * val:8.2f} ms / image")
    for key, val in ratios.items():
        target = "  (target <= 1.2 on CPU)" if key == "nas_over_slic" else ""
        print(f"  {key:>28}: {val:.2f}{target}")
    out = {"benchmark": "nas_speed", "device": str(dev), "settings": settings, "ratios": ratios,
           "times_s": per_image}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
