"""ISNet objectives: original, Selective, Stochastic and Dual ISNet, LRP Deep Supervision (chapter 03).

Faster ISNet (Bassi, Decherchi & Cavalli, 2024; :cite:`bassi2024faster`) trains a classifier whose LRP
heatmaps put no relevance on the image background, with the loss of Eq. 6
:math:`L_{IS} = (1-P) L_C + P L_{LRP}` (:mod:`xai_robust.losses`). The variants differ only in which
heatmaps are made for each training image (§II-B, §II-F):

``"original"``
    one LRP-ε heatmap per class (cost grows with the number of classes);
``"selective"``
    one heatmap explaining :math:`\\tilde\\eta_c = \\ln(P_c+\\mu) - \\ln(1-P_c+\\mu)` of the class with the
    LOWEST logit (§II-F.2, §II-G);
``"stochastic"``
    one LRP-ε heatmap of the highest logit with probability 1/2, otherwise of another class drawn
    uniformly (§II-F.3; the paper's rule, not the official code's 5/11);
``"dual"``
    the joint LRP-ε map (every logit seeded with its value) and the joint LRP-z⁺ map (§II-F.1), both from one
    forward pass (:func:`xai_robust.lrp.lrp_flex_maps`);
``"gradxinput"``
    the *ISNet Softmax Grad*Input* ablation: Gradient×Input of every softmax output (one per class).

:func:`rrr_loss` is the *Right for the Right Reasons* baseline (input-gradient penalty; Ross et al., 2017).
LRP Deep Supervision (Algorithm 1) penalises the relevance at the inputs of chosen layers too and
aggregates the layer losses with GWRP (``layers=[...]``).

Heatmaps come from :func:`xai_robust.lrp.lrp_flex`. As in the paper, one forward pass per step serves both
terms: LRP-Flex modifies only the backward pass that makes the heatmap, and its modified rules are switched
off for every other backward (§II-G, step 1), so the cross-entropy on the same logits gets its ordinary
gradient. A training-mode BatchNorm normalises with batch statistics; by default (``batchnorm="frozen"``) the
explanation holds them constant, so no image's relevance flows through another image, while the gradient of
the heatmap loss stays exact (``tests/test_lrp.py``). ``batchnorm="eval"`` makes heatmaps fully independent
of the batch with a second forward pass. The *gradxinput* ablation and RRR use ordinary gradients, which in
train mode do pass through batch statistics (as in the original implementations).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .attribution import resolve_target, restore_model
from .checks import (
    check_count,
    check_finite,
    check_labels,
    check_model_input,
    check_number,
    check_training_data,
    known_outputs,
)

__all__ = ["VARIANTS", "isnet_heatmaps", "isnet_loss", "rrr_loss", "estimate_ranges", "fit", "warmup",
           "stochastic_targets", "step_time", "step_function"]

VARIANTS = ("original", "selective", "stochastic", "dual", "gradxinput")
ZPLUS = "zplus:"  # key prefix of the Dual ISNet's LRP-z+ maps


def stochastic_targets(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic ISNet's class choice (Faster ISNet §II-F.3): the highest logit with probability 1/2,
    otherwise one of the other C-1 classes uniformly (probability 1/(2(C-1)) each). Chapter 03.

    Parameters
    ----------
    logits : Tensor[N, C]
    generator : torch.Generator, optional
        Seeded source of randomness.

    Returns
    -------
    LongTensor[N]
    """
    return resolve_target(logits.detach(), "stochastic", generator)


def _lrp(model, x, target, *, layers, **options):
    """LRP-Flex heatmap, inner relevances and the logits of its forward pass."""
    from .lrp import lrp_flex_result

    heatmap, inner, logits = lrp_flex_result(model, x, target, layers=layers or None, **options)
    return heatmap, dict(inner), logits


def _softmax_gradxinput(model, x):
    """Gradient×Input of every softmax output, one heatmap per class, differentiable (ablation)."""
    xg = x.detach().clone().requires_grad_(True)
    logits = model(xg)
    probs = logits.softmax(1)
    maps = []
    for c in range(logits.shape[1]):  # one backward per class: the ablation shares the original ISNet's O(C) cost
        (g,) = torch.autograd.grad(probs[:, c].sum(), xg, create_graph=True, retain_graph=True)
        maps.append(g * xg)
    return logits, torch.stack(maps, 1)


def _batchnorm_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def isnet_heatmaps(model: nn.Module, x: torch.Tensor, target=None, *, variant: str, logits: torch.Tensor | None = None,
                   epsilon: float = 0.01, mu: float = 0.01, first_layer: str | None = None,
                   layers: list[str] | None = None, generator: torch.Generator | None = None,
                   create_graph: bool = False, bounds=(0.0, 1.0), batchnorm: str = "eval") -> dict:
    """The heatmaps an ISNet variant penalises for a batch (Faster ISNet §II-B, §II-F). Chapter 03.

    Parameters
    ----------
    model : nn.Module
        A ReLU classifier taking pixels in [0, 1].
    x : Tensor[N, C, H, W]
    target : None, int or LongTensor[N], optional
        The explained class for the one-map variants: None = the variant's own choice (the lowest logit for
        selective, the stochastic draw for stochastic); "original" explains every class and "dual" every logit
        jointly, so they take no target.
    variant : {"original", "selective", "stochastic", "dual", "gradxinput"}
    logits : Tensor[N, K], optional
        Logits that choose the explained classes; by default the explanation's own forward pass chooses them
        (one forward pass serves both).
    epsilon, mu, first_layer, bounds
        LRP-Flex options (ε of LRP-ε; μ of η̃; ``"zb"`` for the z^B first-layer rule and its bounds).
    layers : list of str, optional
        Module names whose *output* relevance is returned too — the relevance at the input of the layer
        that follows (LRP Deep Supervision, Algorithm 1; name bottlenecks, e.g. ``"pool1"`` or ``"layer2"``).
    generator : torch.Generator, optional
        Randomness of the Stochastic ISNet's class choice.
    create_graph : bool
        Differentiable heatmaps (training).
    batchnorm : {"eval", "batch", "frozen"}
        BatchNorm during the explanation (:func:`xai_robust.lrp.lrp_flex`); :func:`isnet_loss` uses "frozen".

    Returns
    -------
    dict
        ``{"input": Tensor[N, K, C, H, W], <layer>: Tensor[N, K, ...]}`` where K is the number of heatmaps
        per image (classes for "original", 1 for selective/stochastic, 1 per map for dual). The Dual
        ISNet's z⁺ maps are under ``"zplus:input"`` and ``"zplus:<layer>"``.
    """
    if target is not None and variant in ("original", "dual", "gradxinput"):
        raise ValueError(f"variant={variant!r} explains every class (or every logit jointly): leave target=None")
    return _heatmaps(model, x, target, variant=variant, logits=logits, epsilon=epsilon, mu=mu,
                     first_layer=first_layer, layers=layers, generator=generator, create_graph=create_graph,
                     bounds=bounds, batchnorm=batchnorm)[0]


def _heatmaps(model, x, target=None, *, variant, logits=None, epsilon=0.01, mu=0.01, first_layer=None, layers=None,
              generator=None, create_graph=False, bounds=(0.0, 1.0), batchnorm="eval"):
    """:func:`isnet_heatmaps` and the logits of the (first) explanation forward pass, one row per image."""
    check_model_input(model, x)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    layers = list(layers or [])
    if variant == "gradxinput":
        if layers:
            raise ValueError("layers (LRP Deep Supervision) needs LRP heatmaps; variant 'gradxinput' has none")
        with restore_model(model):
            _batchnorm_eval(model)  # no running-statistics update, no coupling across the batch
            with torch.enable_grad():
                logits_g, maps = _softmax_gradxinput(model, x)
        maps = {"input": maps if create_graph else maps.detach()}
        return maps, (logits_g if create_graph else logits_g.detach())
    n = x.shape[0]
    opts = dict(epsilon=epsilon, create_graph=create_graph, first_layer=first_layer, bounds=bounds,
                batchnorm=batchnorm)
    out: dict[str, torch.Tensor] = {}

    def put(prefix, heatmap, inner, fwd_logits, per_image):
        out[prefix + "input"] = heatmap.reshape(n, per_image, *heatmap.shape[1:])
        for name, rel in inner.items():
            out[prefix + name] = rel.reshape(n, per_image, *rel.shape[1:])
        return fwd_logits

    if variant == "original":
        if logits is None:
            with restore_model(model), torch.no_grad():
                _batchnorm_eval(model)  # only the number of classes is needed; leave the running statistics alone
                logits = model(x)
        k = logits.shape[1]
        xr = x.repeat_interleave(k, 0)                                # image i, class c at row i*k + c
        target = torch.arange(k, device=x.device).repeat(n)
        # each image repeated k times: a training-mode BatchNorm sees the same batch mean and variance
        fwd = put("", *_lrp(model, xr, target, layers=layers, quantity="logit", **opts), k)[::k]
    elif variant == "selective":
        if target is None:  # the LOWEST logit (§II-F.2)
            target = "lowest" if logits is None else logits.detach().argmin(1)
        fwd = put("", *_lrp(model, x, target, layers=layers, quantity="eta", mu=mu, **opts), 1)
    elif variant == "stochastic":
        if target is None:
            target = stochastic_targets(logits, generator) if logits is not None else "stochastic"
        fwd = put("", *_lrp(model, x, target, layers=layers, quantity="logit", generator=generator, **opts), 1)
    else:  # dual: both joint maps from one forward pass (lrp.lrp_flex_maps), its backward shared too
        from .lrp import lrp_flex_maps

        eps_map, zplus_map = lrp_flex_maps(model, x, None, rules=("epsilon", "zplus"), layers=layers or None,
                                           quantity="joint", **opts)
        fwd = put("", eps_map.heatmap, dict(eps_map.relevances), eps_map.logits, 1)
        put(ZPLUS, zplus_map.heatmap, dict(zplus_map.relevances), zplus_map.logits, 1)
    return out, fwd


def _check_masks(masks, x) -> None:
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a torch.Tensor of shape (N, 1, H, W), got {type(masks).__name__}")
    if masks.dim() not in (3, 4) or masks.shape[0] != x.shape[0]:
        raise ValueError(f"masks must have shape ({x.shape[0]}, 1, H, W), one per image of x, got {tuple(masks.shape)}")
    check_finite(masks, "masks")


def _check_ranges(ranges) -> None:
    """Every (C1, C2) pair finite with 0 < C1 <= C2, before any forward pass."""
    pairs = ranges.items() if isinstance(ranges, Mapping) else [("ranges", ranges)]
    for key, pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"ranges must be a (c1, c2) pair or a dict {{heatmap key: (c1, c2)}} from "
                            f"estimate_ranges, got {pair!r} for {key!r}")
        c1 = check_number(pair[0], f"ranges[{key!r}] c1", low=0.0, low_open=True)
        c2 = check_number(pair[1], f"ranges[{key!r}] c2")
        if c2 < c1:
            raise ValueError(f"ranges[{key!r}] must be (c1, c2) with c1 <= c2, got {pair!r}")


def _range_for(ranges, key: str) -> tuple[float, float]:
    if isinstance(ranges, Mapping):
        if key in ranges:
            return tuple(ranges[key])
        base = key[len(ZPLUS):] if key.startswith(ZPLUS) else None
        if base is not None and base in ranges and ZPLUS + "input" not in ranges:
            return tuple(ranges[base])
        raise ValueError(f"ranges has no (C1, C2) for heatmap {key!r}; keys given: {sorted(ranges)} — "
                         "estimate them with isnet.estimate_ranges(..., same variant and layers)")
    if isinstance(ranges, (tuple, list)) and len(ranges) == 2:
        return float(ranges[0]), float(ranges[1])
    raise TypeError("ranges must be a (c1, c2) pair or a dict {heatmap key: (c1, c2)} from estimate_ranges")


def isnet_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, *, variant: str,
               P: float, ranges, d: float = 0.9, E: float = 1.0, w1: float = 1.0, w2: float = 1.0,
               foreground: str = "hybrid", epsilon: float = 0.01, mu: float = 0.01,
               first_layer: str | None = None, layers: list[str] | None = None, d_layers: float = 0.9,
               generator: torch.Generator | None = None, empty: str = "raise", bounds=(0.0, 1.0),
               batchnorm: str = "frozen", return_parts: bool = False):
    """ISNet loss :math:`L_{IS} = (1-P) L_C + P L_{LRP}` for one batch (Faster ISNet Eq. 6-8, Alg. 1). Chapter 03.

    One forward pass serves the classification loss and the heatmaps (the paper's LRP-Flex: the heatmap is a
    modified backward pass of the training forward), unless ``batchnorm="eval"`` must run BatchNorm layers that
    are in training mode with running statistics: then the heatmaps take a second forward pass.

    Parameters
    ----------
    model : nn.Module
        ReLU classifier (pixels in [0, 1]); use it in train mode for training.
    x : Tensor[N, C, H, W]
    y : LongTensor[N]
        Labels.
    masks : Tensor[N, 1, H, W]
        Foreground masks (1 = foreground).
    variant : {"original", "selective", "stochastic", "dual", "gradxinput"}
    P : float
        Weight of the heatmap loss in [0, 1] (official default 0.7). ``P=0`` skips the heatmaps.
    ranges : (c1, c2) or dict
        Foreground ranges (Eq. 9-10): one pair for every heatmap, or ``{key: (c1, c2)}`` with the keys of
        :func:`isnet_heatmaps` (one per supervised layer and, for dual, per map) — see :func:`estimate_ranges`.
    d, E, w1, w2, foreground, empty
        Heatmap-loss settings (:func:`xai_robust.losses.lrp_loss`).
    epsilon, mu, first_layer, bounds
        LRP settings (:func:`isnet_heatmaps`).
    layers : list of str, optional
        LRP Deep Supervision: also penalise the relevance at these modules' inputs; the per-heatmap
        losses are aggregated with GWRP of decay ``d_layers`` (Algorithm 1).
    generator : torch.Generator, optional
        Stochastic ISNet's class draws.
    batchnorm : {"frozen", "eval", "batch"}
        BatchNorm in the heatmaps of a model in training mode. ``"frozen"`` (default): the training forward
        pass (batch statistics) is shared with the classification loss, and the explanation treats each
        BatchNorm as the affine map with the batch mean and variance held constant, so no image's relevance flows
        through another image (its heatmap is that of the eval-mode network whose running statistics are the
        batch's); like the logits themselves, the heatmaps still depend on the batch through those two numbers
        per channel. ``"eval"``: a second forward pass with running statistics — heatmaps fully independent of
        the batch, at the cost of that pass (and early in training the running statistics lag behind the
        weights). ``"batch"``: the official code — relevance flows through the batch statistics, across images.
    return_parts : bool
        Also return ``{"ce", "lrp", <key>: loss}`` (detached floats) for logging.

    Returns
    -------
    (Tensor, Tensor)
        The scalar loss and the logits of the ordinary forward pass (for accuracy bookkeeping);
        plus the parts dict when ``return_parts``.
    """
    check_model_input(model, x)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    P = check_number(P, "P", low=0.0, high=1.0)
    if masks is None:
        raise ValueError("masks is None: the ISNet loss needs foreground masks (1 = foreground) for every image")
    # everything checked before the forward pass, which updates BatchNorm statistics in training mode
    y = check_labels(y, x.shape[0], known_outputs(model), "y")
    _check_masks(masks, x)
    if P > 0:
        _check_ranges(ranges)
    for name, value, low, high in (("d", d, 0.0, 1.0), ("d_layers", d_layers, 0.0, 1.0)):
        check_number(value, name, low=low, high=high)
    for name, value in (("E", E), ("w1", w1), ("w2", w2)):
        check_number(value, name, low=0.0, low_open=True)
    if variant == "gradxinput":
        if layers:
            raise ValueError("layers (LRP Deep Supervision) needs LRP heatmaps; variant 'gradxinput' has none")
        logits, maps = _softmax_gradxinput(model, x)  # one forward serves the CE and the heatmaps
        maps = {"input": maps}
    elif P == 0.0:
        logits, maps = model(x), None
    else:
        has_train_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())
        shared = batchnorm != "eval" or not has_train_bn  # without training-mode BatchNorm "eval" changes nothing
        maps, fwd = _heatmaps(model, x, variant=variant, epsilon=epsilon, mu=mu, first_layer=first_layer,
                              layers=layers, generator=generator, create_graph=True, bounds=bounds,
                              batchnorm=batchnorm)
        logits = fwd if shared else model(x)
    check_labels(y, None, logits.shape[1], "y")
    ce = F.cross_entropy(logits, y)
    parts = {"ce": float(ce.detach())}
    if P == 0.0:
        loss = ce
        parts["lrp"] = float("nan")
    else:
        terms = {}
        for key, h in maps.items():
            c1, c2 = _range_for(ranges, key)
            terms[key] = losses.lrp_loss(h, masks, c1=c1, c2=c2, d=d, E=E, w1=w1, w2=w2,
                                         foreground=foreground, empty=empty)
        if layers:
            lrp_term = losses.deep_supervision(list(terms.values()), d=d_layers)
        else:
            lrp_term = torch.stack(list(terms.values())).mean()  # dual: both joint maps, equally
        loss = losses.is_loss(ce, lrp_term, P)
        parts["lrp"] = float(lrp_term.detach())
        parts.update({k: float(v.detach()) for k, v in terms.items()})
    if return_parts:
        return loss, logits, parts
    return loss, logits


def rrr_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, *, lam: float = 10.0,
             return_parts: bool = False):
    """Right for the Right Reasons (Ross et al., 2017): cross-entropy + input-gradient penalty on the background.

    .. math:: L = L_C + \\lambda \\frac{1}{N} \\sum_n \\sum_d \\Big( A_{nd}\\,
        \\frac{\\partial}{\\partial x_{nd}} \\sum_k \\log \\hat y_{nk} \\Big)^2

    with :math:`A` = 1 on the background (masks resized to the input). The benchmark of Faster ISNet
    Table 1; chapter 03.

    Returns
    -------
    (Tensor, Tensor)
        Loss and logits (plus parts when ``return_parts``).
    """
    check_model_input(model, x)
    lam = check_number(lam, "lam", low=0.0)
    if masks is None:
        raise ValueError("masks is None: RRR needs foreground masks to know the background")
    y = check_labels(y, x.shape[0], known_outputs(model), "y")
    _check_masks(masks, x)
    xg = x.detach().requires_grad_(True)
    logits = model(xg)
    check_labels(y, None, logits.shape[1], "y")
    ce = F.cross_entropy(logits, y)
    (g,) = torch.autograd.grad(logits.log_softmax(1).sum(), xg, create_graph=True)
    background = 1 - losses.resize_masks(masks, x.shape[-2:]).to(x.dtype)
    penalty = ((background * g) ** 2).flatten(1).sum(1).mean()
    loss = ce + lam * penalty
    if return_parts:
        return loss, logits, {"ce": float(ce.detach()), "rrr": float(penalty.detach())}
    return loss, logits


def estimate_ranges(model: nn.Module, data, *, variant: str, layers: list[str] | None = None,
                    batch_size: int = 128, epsilon: float = 0.01, mu: float = 0.01, first_layer=None,
                    seed: int = 0, progress: bool = True, return_stats: bool = False):
    """The C1/C2 heuristic (Faster ISNet §II-E, Eq. 9-10): natural relevance ranges of a standard classifier.

    Makes the heatmaps the ISNet variant will penalise for every training sample, with the (trained,
    non-ISNet) ``model``, and streams each heatmap's total absolute relevance :math:`\\sum_j |H_j|` into a
    :class:`xai_robust.losses.Welford` accumulator — one per supervised layer (and per map for dual).
    The paper collects them during one extra training epoch; here the model is frozen (eval mode) while
    collecting, which is the same once training has settled. Chapter 03.

    Parameters
    ----------
    model : nn.Module
    data : SampleDataset or (images, labels, masks)
    variant, layers, epsilon, mu, first_layer
        As in :func:`isnet_loss`.
    return_stats : bool
        Also return the Welford accumulators.

    Returns
    -------
    dict
        ``{key: (c1, c2)}`` for :func:`isnet_loss`'s ``ranges``.
    """
    from . import progress as progress_bar
    from .data.base import batch_indices

    check_count(batch_size, "batch_size")
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    stats: dict[str, losses.Welford] = {}
    images = data[0] if isinstance(data, (tuple, list)) else data.images
    n = len(images)
    with restore_model(model):
        model.eval()
        for idx in progress_bar(batch_indices(n, batch_size), desc="relevance range",
                                disable=None if progress else True):
            x = images[idx].to(dev)
            maps = isnet_heatmaps(model, x, variant=variant, epsilon=epsilon, mu=mu, first_layer=first_layer,
                                  layers=layers, generator=gen, create_graph=False)
            for key, h in maps.items():
                totals = h.detach().abs().flatten(2).sum(-1)  # (N, K): one total per heatmap
                stats.setdefault(key, losses.Welford()).update(totals)
    ranges = {key: w.range() for key, w in stats.items()}
    return (ranges, stats) if return_stats else ranges


def warmup(P: float, fraction: float = 0.1) -> Callable[[float], float]:
    """A P schedule: 0 → ``P`` linearly over the first ``fraction`` of training, then ``P``. Chapter 03.

    The heatmap loss is large and noisy while the classifier is random; a short ramp lets the
    classification loss shape the features first (a choice of this book; the paper uses a fixed P).
    """
    P = float(P)
    if not 0 <= P <= 1:
        raise ValueError(f"P must be in [0, 1], got {P}")
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")

    def schedule(progress: float) -> float:
        return P if fraction == 0 or progress >= fraction else P * progress / fraction
    return schedule


def fit(model: nn.Module, dataset, *, variant: str, epochs: int, lr: float, P=0.7, ranges=None,
        batch_size: int = 64, optimizer: str = "adam", momentum: float = 0.9, weight_decay: float = 0.0,
        clip_norm: float = 1.0, seed: int = 0, progress: bool = True, cache: bool = True, lam: float = 10.0,
        **loss_options) -> nn.Module:
    """Train an ISNet (or the RRR baseline) in place and return it (Faster ISNet §II-B…H, App. E). Chapter 03.

    This is :func:`xai_robust.train.fit` with the heatmap loss (:func:`isnet_loss`, or :func:`rrr_loss`) as
    ``loss_fn``, a constant learning rate and gradient clipping, as in the official code.

    Parameters
    ----------
    model : nn.Module
        The backbone (trained from its current weights).
    dataset : SampleDataset or (images, labels, masks)
        Training data with foreground masks.
    variant : {"original", "selective", "stochastic", "dual", "gradxinput", "rrr"}
    epochs : int
    lr : float
    P : float or callable
        Heatmap-loss weight, or a schedule ``P(progress in [0, 1))`` such as :func:`warmup`.
    ranges : (c1, c2) or dict
        Foreground ranges (required except for "rrr"); see :func:`estimate_ranges`.
    optimizer : {"adam", "sgd"}
        SGD uses ``momentum`` (official code: 0.9-0.99).
    clip_norm : float
        Gradient clipping at this norm (official code: 1); 0 disables.
    cache : bool
        Reuse a checkpoint of the same configuration from ``xai_robust.cache_dir()/checkpoints``.
    lam : float
        RRR's penalty weight.
    **loss_options
        Passed to :func:`isnet_loss` (d, E, w1, w2, epsilon, mu, first_layer, layers, d_layers, ...).

    Returns
    -------
    nn.Module
        The trained model (in eval mode). ``model.isnet_history`` (= ``model.fit_history``) holds per-epoch mean
        losses.
    """
    from .data.base import SampleDataset
    from .train import fit as train_fit

    if variant not in VARIANTS + ("rrr",):
        raise ValueError(f"variant must be one of {VARIANTS + ('rrr',)}, got {variant!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if variant != "rrr" and ranges is None:
        raise ValueError("ranges is required: estimate (C1, C2) with isnet.estimate_ranges(standard_model, ...)")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    check_count(batch_size, "batch_size")
    check_count(seed, "seed", minimum=0)
    check_number(lr, "lr", low=0.0, low_open=True)
    check_number(weight_decay, "weight_decay", low=0.0)
    check_number(momentum, "momentum", low=0.0, high=1.0)
    check_number(clip_norm, "clip_norm", low=0.0)
    check_number(lam, "lam", low=0.0)
    if not callable(P):
        check_number(P, "P", low=0.0, high=1.0)
    if variant != "rrr":
        _check_ranges(ranges)
    if isinstance(dataset, (tuple, list)):
        x_all, y_all, masks_all = dataset
    else:
        x_all, y_all, masks_all = dataset.images, dataset.labels, getattr(dataset, "masks", None)
    if masks_all is None:
        raise ValueError("the dataset has no masks: the ISNet needs foreground masks (dataset.masks)")
    dev = next(model.parameters()).device
    check_training_data(model, x_all, y_all, dev)
    if isinstance(dataset, (tuple, list)):  # train.fit reads a SampleDataset
        dataset = SampleDataset(x_all, y_all, torch.zeros(len(y_all), dtype=torch.long), masks=masks_all,
                                class_names=[str(c) for c in range(int(y_all.max()) + 1)], group_names=["all"],
                                name="isnet training data")
    schedule = P if callable(P) else (lambda progress, _p=float(P): _p)

    def loss_fn(net, batch):
        if variant == "rrr":
            return rrr_loss(net, batch["image"], batch["label"], batch["mask"], lam=lam, return_parts=True)
        return isnet_loss(net, batch["image"], batch["label"], batch["mask"], variant=variant,
                          P=schedule(batch["progress"]), ranges=ranges, generator=batch["generator"],
                          return_parts=True, **loss_options)

    loss_fn.__name__ = f"isnet_{variant}"
    # a schedule is keyed by its name and its values (repr would hold a memory address: never the same key twice)
    config = dict(variant=variant, P=getattr(P, "__qualname__", type(P).__name__) if callable(P) else float(P),
                  ranges=ranges, lam=lam,
                  options=loss_options, arch=type(model).__name__)
    if callable(P):
        config["P_values"] = [round(P(i / 20), 6) for i in range(20)]
    torch.manual_seed(seed)
    train_fit(model, dataset, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
              optimizer=optimizer, momentum=momentum, schedule="constant", clip_norm=clip_norm, seed=seed,
              loss_fn=loss_fn, loss_config=config, device=dev, cache=cache, progress_bar=progress,
              desc=f"{variant} ISNet" if variant != "rrr" else "RRR")
    model.isnet_history = model.fit_history
    return model


def step_function(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, *, variant: str,
                  seed: int = 0, **loss_options) -> Callable[[], None]:
    """One training step (forward, loss, backward, clipped SGD step) of ``model`` on a fixed batch, as a callable.

    ``variant="standard"`` is a plain cross-entropy step (``loss_options`` ignored); ``"rrr"`` the RRR baseline; the
    ISNet variants use :func:`isnet_loss` (``P=0.7`` and a fixed range (1, 25) unless given; its ``batchnorm``
    default is ``"frozen"``). The model is put in training mode and trained in place (a timing model). What
    :func:`step_time` and ``benchmarks/isnet_classes.py`` (interleaving the variants) time. Faster ISNet Fig. 5;
    chapter 03.

    Parameters
    ----------
    model : nn.Module
        The model to train (in place).
    x, y, masks : Tensor
        The batch: images, labels and foreground masks.
    variant : {"standard", "rrr", "original", "selective", "stochastic", "dual", "gradxinput"}
    seed : int
        Seed of the generator of the Stochastic ISNet's class draws.
    **loss_options
        Passed to :func:`isnet_loss` (``P``, ``ranges``, ``batchnorm``, ...).

    Returns
    -------
    callable
        ``step()``: one SGD step (lr 1e-4, momentum 0.9, gradients clipped at norm 1); it returns None.
    """
    if variant not in VARIANTS + ("standard", "rrr"):
        raise ValueError(f"variant must be 'standard', 'rrr' or one of {VARIANTS}, got {variant!r}")
    loss_options.setdefault("ranges", (1.0, 25.0))
    P = loss_options.pop("P", 0.7)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    model.train()

    def one():
        if variant == "standard":
            loss = F.cross_entropy(model(x), y)
        elif variant == "rrr":
            loss, _ = rrr_loss(model, x, y, masks)
        else:
            loss, _ = isnet_loss(model, x, y, masks, variant=variant, P=P, generator=gen, **loss_options)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return one


def step_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, *, variant: str,
              repeats: int = 3, warmup_steps: int = 1, seed: int = 0, **loss_options) -> float:
    """Median wall-clock seconds of one training step (forward, loss, backward, clipped SGD step).

    ``variant="standard"`` is a plain cross-entropy step; the ISNet variants use :func:`isnet_loss` with a
    fixed range (1, 25) unless ``ranges`` is given. The model is trained in place (it is a timing
    model); the step is :func:`step_function`'s. Faster ISNet Fig. 5; chapter 03 and ``benchmarks/isnet_classes.py``.

    Parameters
    ----------
    model, x, y, masks, variant, seed, **loss_options
        As in :func:`step_function`.
    repeats : int
        Timed steps (the median is returned).
    warmup_steps : int
        Untimed steps first.

    Returns
    -------
    float
        Median seconds per step.
    """
    import statistics
    import time

    one = step_function(model, x, y, masks, variant=variant, seed=seed, **loss_options)

    def sync():
        if x.is_cuda:
            torch.cuda.synchronize()
    for _ in range(warmup_steps):
        one()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        one()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
