"""Summaries of Neuro-Activated Superpixels that chapter 07 reports: seed agreement and class-cluster saliency.

Kept apart from :mod:`xai_robust.nas` (the method itself): these read its outputs the way the NAS paper's
evaluation does (Sec. 3.2 on k-means' dependence on its start; Sec. 4.2.3, Table 1, class clusters).
"""
from __future__ import annotations

import numpy as np
import torch

from .checks import check_count
from .nas import cluster_saliency

__all__ = ["mean_pairwise_ari", "object_cluster_saliency"]


def mean_pairwise_ari(runs) -> float:
    """Mean adjusted Rand index between every pair of runs, image by image.

    How much a clustering depends on its seed (NAS Sec. 3.2: k-means starts at random; 1 = the same cells in every
    run, 0 = chance agreement).

    Parameters
    ----------
    runs : sequence of LongTensor[N, H, W]
        The partitions of the same N images from each run (at least two runs).

    Returns
    -------
    float
        The mean over the pairs (a, b), a < b, and the images.
    """
    from sklearn.metrics import adjusted_rand_score

    runs = [torch.as_tensor(r).cpu() for r in runs]
    if len(runs) < 2 or any(r.dim() != 3 or r.shape != runs[0].shape for r in runs):
        raise ValueError("runs must hold at least two partitions (N, H, W) of the same images")
    aris = [adjusted_rand_score(runs[a][i].flatten(), runs[b][i].flatten())
            for a in range(len(runs)) for b in range(a + 1, len(runs)) for i in range(len(runs[0]))]
    return float(np.mean(aris))


def object_cluster_saliency(saliency: torch.Tensor, clusters: torch.Tensor, n_clusters: int,
                            object_cluster: int) -> dict:
    """Which class cluster a method's maps favour, and how the object cluster compares (NAS Table 1).

    Parameters
    ----------
    saliency : Tensor[N, H, W]
        One method's maps of the images.
    clusters : LongTensor[N, H, W]
        Their class-cluster labels (:meth:`xai_robust.nas.ClassClustering.predict`).
    n_clusters : int
    object_cluster : int
        The cluster that lies most on the object (:func:`xai_robust.nas.cluster_overlap`).

    Returns
    -------
    dict
        ``most``: the cluster with the highest mean min-max saliency (among those present); ``obj``: the object
        cluster's saliency; ``others``: the mean saliency of the other present clusters
        (:func:`xai_robust.nas.cluster_saliency`).
    """
    check_count(n_clusters, "n_clusters")
    if not 0 <= int(object_cluster) < n_clusters:
        raise ValueError(f"object_cluster must be in 0..{n_clusters - 1}, got {object_cluster}")
    sal, present = cluster_saliency(saliency, clusters, n_clusters)
    sal, present = sal.cpu(), present.cpu()
    others = [c for c in range(n_clusters) if c != object_cluster and present[c]]
    return dict(most=int(torch.where(present, sal, torch.tensor(-1.0)).argmax()),
                obj=float(sal[object_cluster]), others=float(sal[others].mean()))
