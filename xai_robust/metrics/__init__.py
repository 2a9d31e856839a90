"""Metrics: group robustness (``groups``), saliency quality (``saliency``), localisation (``localization``).

Everything is re-exported here, so ``xai_robust.metrics.worst_group_accuracy`` works.
"""
from . import groups, localization, saliency
from .groups import (  # noqa: F401
    group_accuracies,
    group_counts,
    mean_accuracy,
    shortcut_gaps,
    weighted_mean_accuracy,
    worst_and_mean,
    worst_group_accuracy,
)
from .localization import (  # noqa: F401
    best_cell_iou,
    box_iou,
    curve_auc,
    greedy_lerf,
    lerf_curve,
    map_boxes,
    mask_boxes,
    max_box_acc_v2,
    mean_lerf_auc,
    morf_curve,
    relevance_curve,
    relevance_share,
)
from .saliency import (  # noqa: F401
    deletion_auc,
    insertion_auc,
    mege,
    mu_fidelity,
    noisy_linear_imputation,
    perturbation_curve,
    road,
    spearman,
    ssim,
)

__all__ = [*groups.__all__, *saliency.__all__, *localization.__all__]
