"""Time ExMap's pseudo-group clustering (xai_robust.cluster, chapter 04) against scikit-learn.

Target (docs/design.md): pseudo groups for 20,000 heatmaps in under 30 s on 2 CPU cores.

The heatmaps are synthetic but heatmap-shaped (3 x 28 x 28, signed, normalised like ExMap's): each
(class, attribute) group has its own relevance pattern -- a "digit" blob whose sign and place
depend on the class, plus a colour/background stripe for the attribute -- with pixel noise, and
the minority groups are small as in a spurious-correlation validation set. The script reports

* our global spectral ExMap (eigengap over k = 2..10, k-NN graph with n_neighbors = int(log N),
  cluster-QR) and k-means ExMap on N = 20,000, with the adjusted Rand index against the planted groups;
* a ratio against scikit-learn's ``SpectralClustering(affinity="nearest_neighbors",
  assign_labels="cluster_qr")`` on the raw heatmaps at a smaller N (the peer at 20,000 takes minutes).

Usage::

    python benchmarks/cluster_speed.py [--n 20000] [--peer-n 4000] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402


def synthetic_heatmaps(n: int, seed: int = 0, size: int = 28, minority: float = 0.1):
    """Signed (N, 3*size*size) heatmap representations with planted class x attribute groups."""
    from xai_robust.cluster import normalize_heatmaps

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    a = torch.where(torch.rand(n, generator=g) < 1 - minority, y, 1 - y)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    blob = [torch.exp(-((xx + 0.3) ** 2 + yy ** 2) / 0.1), torch.exp(-((xx - 0.3) ** 2 + yy ** 2) / 0.1)]
    h = torch.zeros(n, 3, size, size)
    for c in (0, 1):
        h[y == c] += (1.0 if c else -1.0) * blob[c]
    for s in (0, 1):  # the attribute lights up one colour channel across the digit
        sel = a == s
        h[sel, s] += (0.8 * blob[0] * (y[sel] == 0).float()[:, None, None]
                      + 0.8 * blob[1] * (y[sel] == 1).float()[:, None, None])
    h += 0.35 * torch.randn(n, 3, size, size, generator=g)
    return normalize_heatmaps(h), y, 2 * y + a


CPU = {}


def timed(fn, *args, **kwargs):
    """Run fn; return (result, wall seconds) and record its process CPU seconds in CPU[fn name]."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    CPU["last"] = time.process_time() - c0
    return out, time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--peer-n", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sklearn.cluster import SpectralClustering
    from sklearn.metrics import adjusted_rand_score

    from xai_robust.cluster import pseudo_groups

    r, y, truth = synthetic_heatmaps(args.n)
    print(f"{args.n} synthetic heatmaps of {r.shape[1]} values, {args.threads} threads")
    (g, k), t_spec = timed(pseudo_groups, r, y, method="spectral", scope="global", return_k=True)
    print(f"ours  spectral global (eigengap k={k}): {t_spec:6.1f} s wall, {CPU['last']:5.1f} s CPU   "
          f"ARI vs planted groups {adjusted_rand_score(truth, g):.3f}   target <= 30 s wall: "
          f"{'PASS' if t_spec <= 30 else 'FAIL (check the machine load: CPU seconds / cores is the idle estimate)'}")
    (g, k), t_loc = timed(pseudo_groups, r, y, method="spectral", scope="local", return_k=True)
    print(f"ours  spectral local  (eigengap k={k}): {t_loc:6.1f} s wall, {CPU['last']:5.1f} s CPU   "
          f"ARI {adjusted_rand_score(truth, g):.3f}")
    g, t_km = timed(pseudo_groups, r, y, method="kmeans", scope="global", k=4)
    print(f"ours  k-means global  (k=4):            {t_km:6.1f} s wall, {CPU['last']:5.1f} s CPU   "
          f"ARI {adjusted_rand_score(truth, g):.3f}")

    m = args.peer_n
    rs, ys, ts = r[:m], y[:m], truth[:m]
    (g_ours, k_ours), t_ours = timed(pseudo_groups, rs, ys, method="spectral", k=4, return_k=True)
    c_ours = CPU["last"]
    peer = SpectralClustering(4, affinity="nearest_neighbors", n_neighbors=int(np.log(m)), assign_labels="cluster_qr",
                              random_state=0)
    a_peer, t_peer = timed(peer.fit_predict, rs.numpy())
    g_peer = torch.as_tensor(np.unique(np.stack([ys.numpy(), a_peer]), axis=1, return_inverse=True)[1].ravel())
    c_peer = CPU["last"]
    print(f"N={m}, k=4: ours {t_ours:.1f} s wall / {c_ours:.1f} s CPU (ARI {adjusted_rand_score(ts, g_ours):.3f}), "
          f"sklearn SpectralClustering on raw heatmaps {t_peer:.1f} s wall / {c_peer:.1f} s CPU "
          f"(ARI {adjusted_rand_score(ts, g_peer):.3f}); "
          f"speed-up {t_peer / t_ours:.1f}x wall, {c_peer / c_ours:.1f}x CPU")


if __name__ == "__main__":
    main()
