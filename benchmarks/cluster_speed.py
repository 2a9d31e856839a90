"""Time ExMap's pseudo-group clustering (xai_robust.cluster, chapter 04) at ExMap's heatmap sizes.

Target (docs/design.md, issue #18): pseudo groups for 20,000 heatmaps at ExMap's Waterbirds size (3 × 112 × 112 =
37,632 values each) in at most 30 s wall on 2 CPU cores.

The heatmaps are synthetic but heatmap-shaped (signed, normalised like ExMap's, ``cluster.normalize_heatmaps``): each
(class, attribute) group has its own relevance pattern -- a "digit" blob whose sign and place depend on the class,
plus a colour channel lit by the attribute -- with pixel noise, and the minority groups are small as in a
spurious-correlation validation set. They are generated in chunks (20,000 × 37,632 float32 values are 3 GB).

The default global spectral ExMap (eigengap over k = 2..10, k-NN graph on the raw heatmaps with
``n_neighbors = int(log N)``, cluster-QR) is timed on ``--measure-n`` heatmaps. When that is less than ``--n`` (the
default at 112 px: the graph's exact brute-force neighbours cost N² · D multiply-adds, ~1.5 · 10¹³ at the target and
the full run takes minutes and 6 GB here), the time at ``--n`` is **extrapolated**, not measured: the k-NN graph
(timed on its own) as N², the rest (eigensolver, cluster-QR; a sparse graph of N · int(log N) edges) as N log N.
The script also times, at ``--measure-n``: the same with ``pca=50`` (the option that projects the heatmaps on 50
principal components first; it changes the partitions, see ``xai_robust.cluster``), local spectral ExMap, k-means
ExMap (``--kmeans``), and scikit-learn's ``SpectralClustering(affinity="nearest_neighbors",
assign_labels="cluster_qr")`` on the raw heatmaps at ``--peer-n``; the adjusted Rand index against the planted groups
for each.

``--json PATH`` writes ``{"benchmark", "device", "settings", "ratios", "times_s"}``. The clustering runs on the CPU
(scipy/scikit-learn); ``--device`` is accepted for uniformity and only recorded.

Usage::

    python benchmarks/cluster_speed.py                          # 112 px, measured on 4,000, extrapolated to 20,000
    python benchmarks/cluster_speed.py --measure-n 20000        # the full run (minutes, ~6 GB)
    python benchmarks/cluster_speed.py --size 28 --measure-n 20000   # the former 3 × 28 × 28 setting, measured
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

TARGET_S = 30.0


def synthetic_heatmaps(n: int, seed: int = 0, size: int = 112, minority: float = 0.1, chunk: int = 1000):
    """Signed (N, 3 · size²) float32 heatmap representations with planted class × attribute groups, the labels y
    and the planted group ids."""
    from xai_robust.cluster import normalize_heatmaps

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    a = torch.where(torch.rand(n, generator=g) < 1 - minority, y, 1 - y)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    blob = [torch.exp(-((xx + 0.3) ** 2 + yy ** 2) / 0.1), torch.exp(-((xx - 0.3) ** 2 + yy ** 2) / 0.1)]
    out = torch.empty(n, 3 * size * size)
    for start in range(0, n, chunk):
        yc, ac = y[start:start + chunk], a[start:start + chunk]
        h = 0.35 * torch.randn(len(yc), 3, size, size, generator=g)
        for c in (0, 1):
            h[yc == c] += (1.0 if c else -1.0) * blob[c]
        for s in (0, 1):  # the attribute lights up one colour channel across the digit
            sel = ac == s
            h[sel, s] += (0.8 * blob[0] * (yc[sel] == 0).float()[:, None, None]
                          + 0.8 * blob[1] * (yc[sel] == 1).float()[:, None, None])
        out[start:start + chunk] = normalize_heatmaps(h)
    return out, y, 2 * y + a


def timed(fn, *args, **kwargs):
    """(result, wall seconds, process CPU seconds)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="the target number of heatmaps")
    parser.add_argument("--size", type=int, default=112, help="heatmap side (3 channels); ExMap's Waterbirds: 112")
    parser.add_argument("--measure-n", type=int, default=None,
                        help="heatmaps actually clustered (default: all at <= 28 px, else 4000; the time at --n is "
                             "then extrapolated)")
    parser.add_argument("--peer-n", type=int, default=4000, help="heatmaps for the scikit-learn comparison")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kmeans", action="store_true",
                        help="also time k-means ExMap (scikit-learn, 10 restarts: slow on 37,632-value heatmaps)")
    parser.add_argument("--device", default="cpu", help="recorded only: the clustering runs on the CPU")
    parser.add_argument("--json", default=None, help="write the ratios and times to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from sklearn.cluster import SpectralClustering
    from sklearn.metrics import adjusted_rand_score

    from xai_robust.cluster import knn_affinity, pseudo_groups

    n = args.n
    m = min(n, args.measure_n if args.measure_n is not None else (n if args.size <= 28 else 4000))
    r, y, truth = synthetic_heatmaps(max(m, min(args.peer_n, n)), size=args.size)
    d = r.shape[1]
    print(f"{m} of {n} synthetic heatmaps of {d} values (3 x {args.size} x {args.size}), {args.threads} threads")
    rm, ym, tm = r[:m], y[:m], truth[:m]
    times, cpu, ari = {}, {}, {}

    def run(name, fn, *a, truth_=tm, **kw):
        out, times[name], cpu[name] = timed(fn, *a, **kw)
        labels = out[0] if isinstance(out, tuple) else out
        if labels is not None:
            ari[name] = float(adjusted_rand_score(truth_, labels))
        print(f"  {name:>26}: {times[name]:7.1f} s wall, {cpu[name]:7.1f} s CPU"
              + (f"   ARI vs planted groups {ari[name]:.3f}" if name in ari else ""))
        return out

    _, k = run("spectral_global", pseudo_groups, rm, ym, method="spectral", scope="global", return_k=True)
    _, times["knn_graph"], cpu["knn_graph"] = timed(knn_affinity, rm)
    print(f"  {'knn_graph (part of it)':>26}: {times['knn_graph']:7.1f} s wall, {cpu['knn_graph']:7.1f} s CPU")
    run("spectral_global_pca50", pseudo_groups, rm, ym, method="spectral", scope="global", pca=50)
    run("spectral_local", pseudo_groups, rm, ym, method="spectral", scope="local")
    if args.kmeans:
        run("kmeans_global_k4", pseudo_groups, rm, ym, method="kmeans", scope="global", k=4)

    p = min(args.peer_n, n)
    rs, ys, ts = r[:p], y[:p], truth[:p]
    run("ours_at_peer_n", pseudo_groups, rs, ys, method="spectral", k=4, truth_=ts)
    peer = SpectralClustering(4, affinity="nearest_neighbors", n_neighbors=int(np.log(p)), assign_labels="cluster_qr",
                              random_state=0)
    a_peer, times["sklearn_at_peer_n"], cpu["sklearn_at_peer_n"] = timed(peer.fit_predict, rs.numpy())
    g_peer = np.unique(np.stack([ys.numpy(), a_peer]), axis=1, return_inverse=True)[1].ravel()
    ari["sklearn_at_peer_n"] = float(adjusted_rand_score(ts, g_peer))
    print(f"  {'sklearn_at_peer_n':>26}: {times['sklearn_at_peer_n']:7.1f} s wall   ARI {ari['sklearn_at_peer_n']:.3f}")

    # the time at n: measured when m == n, else extrapolated from the parts' scaling
    if m == n:
        at_n, how = times["spectral_global"], "measured"
    else:
        rest = max(times["spectral_global"] - times["knn_graph"], 0.0)
        at_n = times["knn_graph"] * (n / m) ** 2 + rest * (n / m) * math.log(n) / math.log(m)
        how = "extrapolated"
    times["spectral_global_at_n"] = at_n
    ratios = {"spectral_global_at_n_over_target": at_n / TARGET_S,
              "knn_share_of_spectral_global": times["knn_graph"] / times["spectral_global"],
              "sklearn_over_ours_at_peer_n": times["sklearn_at_peer_n"] / times["ours_at_peer_n"],
              "pca50_over_raw_spectral_global": times["spectral_global_pca50"] / times["spectral_global"]}
    verdict = "PASS" if at_n <= TARGET_S else "FAIL"
    print(f"spectral global ExMap on {n} heatmaps of {d} values: {at_n:.1f} s wall ({how}; eigengap k={k} at {m}); "
          f"target <= {TARGET_S:.0f} s: {verdict}")
    for key, val in ratios.items():
        print(f"  {key:>34}: {val:.2f}")
    out = {"benchmark": "cluster_speed", "device": "cpu",
           "settings": {"n": n, "size": args.size, "values": d, "measure_n": m, "peer_n": p, "threads": args.threads,
                        "at_n": how, "eigengap_k": int(k), "requested_device": args.device},
           "ratios": ratios, "times_s": times, "cpu_s": cpu, "ari": ari}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
