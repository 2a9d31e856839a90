"""Time Neuro-Activated Superpixels against scikit-image SLIC and Felzenszwalb (chapter 07, NAS Table 5).

Setting of the target (issue #8): the paper's ResNet-18 — torchvision's ImageNet stem (7×7 stride-2 convolution and
max-pool, ``models.build("resnet18", 10, small_input=False)``) — layers layer2–layer4, K = 5, batch 32, 96×96
images, CPU. ``--small-input`` times the CIFAR-style stem instead (no downsampling before layer1: its forward pass
alone costs ~12× more at this size). Prints per-image milliseconds (best of
``--repeats`` after one warm-up) and the ratios

* NAS (forward + exact low-resolution k-means) / SLIC   — target ≤ 2 on CPU;
* NAS clustering only / SLIC;
* exact low-resolution k-means / k-means on materialised upsampled features (same result, tested);
* the batched PyTorch k-means (the GPU path) / the numba CPU kernels (same picks and labels, tested).

Usage::

    python benchmarks/nas_speed.py                 # CPU, the docs/design.md setting
    python benchmarks/nas_speed.py --device cuda   # GPU, where one exists
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from skimage import data as skdata
from skimage.segmentation import felzenszwalb, slic
from skimage.transform import resize

from xai_robust import models, nas


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


def best_time(fn, repeats: int, sync) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--layers", default="layer2,layer3,layer4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slic-segments", type=int, default=10,
                        help="SLIC n_segments (NAS compares at a similar number of superpixels)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave the default)")
    parser.add_argument("--small-input", action="store_true",
                        help="ResNet-18 with the small-input stem instead of the paper's ImageNet stem")
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

    t_slic = best_time(lambda: [slic(a, n_segments=args.slic_segments, compactness=10, start_label=0) for a in arr],
                       args.repeats, lambda: None)
    t_fz = best_time(lambda: [felzenszwalb(a, scale=100, sigma=0.5, min_size=50) for a in arr],
                     args.repeats, lambda: None)
    acts = nas.layer_activations(model, xd, layers)
    size = (args.size, args.size)
    t_forward = best_time(lambda: nas.layer_activations(model, xd, layers), args.repeats, sync)

    def cluster_fast():
        nas.kmeans_pixels(nas._LowRes(acts, size), args.k, seed=0)

    def cluster_direct():
        nas.kmeans_pixels(nas._features_from_activations(acts, size), args.k, seed=0)

    t_fast = best_time(cluster_fast, args.repeats, sync)
    t_direct = best_time(cluster_direct, args.repeats, sync)
    kernels = nas._kernels
    nas._kernels = lambda: None  # the batched PyTorch path (what runs on a GPU), for comparison
    try:
        t_torch = best_time(cluster_fast, args.repeats, sync)
    finally:
        nas._kernels = kernels
    engine = "numba CPU kernels" if dev.type == "cpu" and kernels() is not None else "PyTorch"
    t_total = best_time(lambda: nas.neuro_activated_superpixels(model, xd, layers, args.k, seed=0,
                                                                batch_size=args.batch), args.repeats, sync)
    n = args.batch
    res = {"slic_ms": 1e3 * t_slic / n, "felzenszwalb_ms": 1e3 * t_fz / n, "forward_ms": 1e3 * t_forward / n,
           "kmeans_fast_ms": 1e3 * t_fast / n, "kmeans_torch_ms": 1e3 * t_torch / n,
           "kmeans_direct_ms": 1e3 * t_direct / n,
           "nas_total_ms": 1e3 * t_total / n}
    stem = "small-input" if args.small_input else "ImageNet (paper)"
    print(f"device={dev} threads={torch.get_num_threads()} batch={n} size={args.size} K={args.k} layers={layers} "
          f"stem={stem} k-means engine={engine}")
    for key, val in res.items():
        print(f"  {key:>18}: {val:8.2f} ms / image")
    print(f"  NAS total / SLIC          : {res['nas_total_ms'] / res['slic_ms']:.2f}x  (target <= 2 on CPU)")
    print(f"  NAS clustering / SLIC     : {res['kmeans_fast_ms'] / res['slic_ms']:.2f}x")
    print(f"  forward / SLIC            : {res['forward_ms'] / res['slic_ms']:.2f}x")
    print(f"  forward share of NAS      : {res['forward_ms'] / res['nas_total_ms']:.0%}")
    print(f"  direct / fast k-means     : {res['kmeans_direct_ms'] / res['kmeans_fast_ms']:.2f}x")
    print(f"  PyTorch path / fast k-means: {res['kmeans_torch_ms'] / res['kmeans_fast_ms']:.2f}x")
    return res


if __name__ == "__main__":
    main()
