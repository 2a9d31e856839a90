"""Measure what two ExMap options do to the chapters' partitions (issue #14's reference divergences).

For the ``ci`` ERM models of chapters 04/05 at seeds 0, 1, 2 (colored digits and spurious scenes, the
validation heatmaps at the chapters' sizes and unresized), compare the spectral/global pseudo groups

- with and without ``pca=50`` before the k-NN graph (ExMap's code has none), and
- with the explained class's relevance seeded with 1 (ExMap's code) or with the logit (LRP-Flex),

by the adjusted Rand index between the partitions and with the true groups. Writes
``results/exmap_options.json`` and prints one line per case::

    python tools/exmap_options.py
"""
from __future__ import annotations

import json

import torch
from sklearn.metrics import adjusted_rand_score as ari

import xai_robust
from xai_robust import cluster, data, lrp, train


def main() -> None:
    torch.set_num_threads(2)
    out = {}
    for s in (0, 1, 2):
        for name, size in (("colored_digits", 14), ("spurious_scenes", 32)):
            model, _ = train.erm(name, profile="ci", seed=s, progress_bar=False)
            val = data.load(name, "val", profile="ci", seed=s)
            z = train.predict(model, val).max(1).values
            for sz in (size, None):
                parts, res = {}, {"negative_logit_fraction": float((z < 0).float().mean())}
                for seed_kind in ("one", "logit"):
                    h = cluster.heatmap_representations(model, val, attribution=lrp.lrp_flex, size=sz,
                                                        relevance=seed_kind, progress=False)
                    for pca in (None, 50):
                        g = cluster.pseudo_groups(h, val.labels, seed=s, pca=pca).numpy()
                        parts[seed_kind, pca] = g
                        res[f"ari_true_{seed_kind}_pca{pca}"] = ari(val.groups.numpy(), g)
                        res[f"k_{seed_kind}_pca{pca}"] = int(g.max()) + 1
                for seed_kind in ("one", "logit"):
                    res[f"ari_pca50_vs_none_{seed_kind}"] = ari(parts[seed_kind, 50], parts[seed_kind, None])
                res["ari_one_vs_logit"] = ari(parts["one", None], parts["logit", None])
                key = f"{name}_seed{s}_size{sz}"
                out[key] = res
                print(key, {k: round(v, 3) for k, v in res.items()}, flush=True)
    path = xai_robust.results_dir() / "exmap_options.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
