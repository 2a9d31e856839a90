"""Neuro-Activated Superpixels (NAS): a segmentation of the input read from the classifier's activations.

Chapter 07 ("Neuro-Activated Superpixels") explains the method; the paper is Boubekki, Fadel & Mair,
*Leveraging Activations for Superpixel Explanations* (NAS, Algorithm 1). For every chosen layer the
activations are upsampled (bicubic) to the output size, each pixel's feature vector is L2-normalised and
divided by ``1 + c`` (``c`` = the layer's channels), the layers are concatenated and the pixels are
clustered with k-means (or Ward's hierarchical clustering, the deterministic option of NAS appendix C).

The k-means engine is :mod:`xai_robust.kmeans`: by default it runs on the implicit features (the upsampled features
are never materialised; every step has an exact low-resolution form) and, on CPU, in compiled kernels. Ward needs
the features themselves and materialises them.

The forward pass (Algorithm 1, line 7) reads only the requested layers' outputs and stops after the deepest one. It
runs in eval mode without gradients, on CPU with channels-last input and, where the model's structure makes it safe,
on a cached copy with eval-mode BatchNorm folded into the convolution before it (:func:`layer_activations`); the
user's model is never modified. The activations equal those of the plain forward pass up to float rounding.

Every public function checks its input before the model is touched (:mod:`xai_robust.checks`): ``x`` is a
non-empty, finite float batch of the model's dtype, counts (``n_clusters``, ``n_init``, ``max_iter``,
``batch_size``, ...) are positive ints, float options finite, labels integer ids in range; activations that come
out NaN/inf are refused. The model is left exactly as found, per submodule, even when the forward pass raises.
"""
from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .attribution import restore_model
from .checks import check_count, check_finite, check_labels, check_model_input
from .kmeans import _UPSAMPLE, _Dense, _LowRes, kmeans_pixels
from .superpixels import _check_values

__all__ = ["neuro_activated_superpixels", "layer_activations", "nas_features", "ClassClustering", "class_clusters",
           "cluster_saliency", "cluster_overlap"]

_METHODS = ("kmeans", "ward")


class _StopForward(Exception):
    """Raised by the hook of the deepest requested layer: nothing after it is needed."""


# ----------------------------------------------------------------------------------------------------
# activations
# ----------------------------------------------------------------------------------------------------
def _check_layers(model: nn.Module, layers) -> list[str]:
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or len(layers) == 0:
        raise TypeError("layers must be a non-empty list of module names, e.g. ['layer2', 'layer3', 'layer4']")
    names = dict(model.named_modules())
    for name in layers:
        if not isinstance(name, str) or name not in names or name == "":
            top = [n for n, _ in model.named_children()]
            raise ValueError(f"layers: {name!r} is not a module of the model; choose among its named modules, "
                             f"e.g. the top-level ones {top}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must not repeat a name, got {list(layers)}")
    return list(layers)


def layer_activations(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
    """Outputs of the named modules for a batch, read with forward hooks (NAS, Algorithm 1, line 7).

    The model runs in eval mode without gradients and is left exactly as found (hooks removed, train/eval
    modes and ``requires_grad`` flags restored), even when the forward pass raises. The forward pass stops
    after the last requested layer has run. Two re-orderings make it faster, with the same activations up to float
    rounding: on CPU the input is passed channels-last (the convolutions' fast layout; the activations come back in
    the default layout), and where the data flow is known (torchvision's and this package's ResNets, consecutive
    ``Conv2d`` → ``BatchNorm2d`` in an ``nn.Sequential``) the pass runs on a copy of the model with each eval-mode
    BatchNorm folded into the convolution before it (cached per model until a parameter, buffer or attribute of it
    changes; it holds the folded weights, about the size of the convolutions' own).

    Parameters
    ----------
    model : nn.Module
        A convolutional classifier taking pixels in [0, 1].
    x : Tensor[N, C, H, W]
        Input batch.
    layers : sequence of str
        Module names (``dict(model.named_modules())`` keys), e.g. ``["layer2", "layer3", "layer4"]``.

    Returns
    -------
    list of Tensor[N, c_l, h_l, w_l]
        One activation tensor per layer, in the order of ``layers``.
    """
    check_model_input(model, x)
    return _activations(model, x, _check_layers(model, layers))


def _activations(model: nn.Module, x: torch.Tensor, layers: list[str], *, optimize: bool = True) -> list[torch.Tensor]:
    """:func:`layer_activations` without the checks.

    ``optimize`` (the default) runs the forward pass on the copy of :func:`_folded` where the model allows it
    (eval-mode BatchNorm folded into the convolution before it) and, on CPU, with channels-last input; ``False``
    runs the plain forward pass of the model itself, the reference of the optimised one in the tests (the same
    activations up to float rounding).
    """
    net = _folded(model, layers) if optimize else None
    if optimize and x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    modules = dict((model if net is None else net).named_modules())
    store: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise ValueError(f"layers: module {name!r} returns {type(output).__name__} of shape "
                                 f"{tuple(getattr(output, 'shape', ()))}; NAS needs a (N, c, h, w) feature map")
            # a copy (later in-place ops must not change it), in the default layout
            store[name] = output.detach().clone(memory_format=torch.contiguous_format)
            if len(store) == len(layers):
                raise _StopForward
        return hook

    with restore_model(model):
        try:
            for name in layers:
                handles.append(modules[name].register_forward_hook(make_hook(name)))
            if net is None:
                model.eval()
            with torch.no_grad():
                try:
                    (model if net is None else net)(x)
                except _StopForward:
                    pass
        finally:
            for h in handles:
                h.remove()
    missing = [n for n in layers if n not in store]
    if missing:
        raise ValueError(f"layers: modules {missing} never ran in the forward pass; choose modules the model uses")
    return [store[n] for n in layers]


# ----------------------------------------------------------------------------------------------------
# the forward pass with eval-mode BatchNorm folded into the convolutions (on a copy)
# ----------------------------------------------------------------------------------------------------
def _foldable_classes() -> dict:
    """Module classes whose ``forward`` feeds the output of convolution ``conv`` only to BatchNorm ``bn``, as
    ``{class: ((conv, bn), ...)}`` (attribute names). Exact classes only: a subclass may change ``forward``."""
    from . import models

    known = {models.BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")), models.SmallResNet: (("conv1", "bn1"),),
             models.NormalizedResNet: (("conv1", "bn1"),)}
    try:
        from torchvision.models import resnet
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return known
    known.update({resnet.BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
                  resnet.Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
                  resnet.ResNet: (("conv1", "bn1"),)})
    return known


def _fold_pairs(model: nn.Module, layers) -> list[tuple[str, str, str]]:
    """``(parent, conv, bn)`` module names of the convolution → BatchNorm pairs whose BatchNorm can be folded: the
    data flow is known (:func:`_foldable_classes`, or consecutive children of an ``nn.Sequential``), the BatchNorm
    has running statistics and the convolution's own output is not a requested layer."""
    known = _foldable_classes()
    pairs = []
    for name, m in model.named_modules():
        if type(m) is nn.Sequential:
            kids = list(m._modules)
            candidates = list(zip(kids, kids[1:], strict=False))
        else:
            candidates = known.get(type(m), ())
        for conv, bn in candidates:
            c, b = m._modules.get(conv), m._modules.get(bn)
            prefix = f"{name}." if name else ""
            if (type(c) is nn.Conv2d and type(b) is nn.BatchNorm2d and b.running_mean is not None
                    and b.running_var is not None and c.out_channels == b.num_features
                    and f"{prefix}{conv}" not in layers):
                pairs.append((name, conv, bn))
    return pairs


_MODULE_INTERNALS = frozenset(nn.Module().__dict__)  # hook and parameter dicts, the training flag
_SIMPLE = (bool, int, float, str, type(None), tuple, torch.dtype, torch.device, torch.Size)
_FOLDED_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _state_signature(model: nn.Module):
    """Everything the folded copy was built from: per module its identity, class and plain attributes (tensors by
    identity, version and storage), or None where a module holds other kinds of state (a copy could go stale)."""
    sig = []
    for m in model.modules():
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return None  # the user's hooks must see the model's own forward pass
        entry = [id(m), type(m)]
        for key, value in m.__dict__.items():
            if key in _MODULE_INTERNALS:
                continue
            if isinstance(value, torch.Tensor):
                entry.append((key, id(value), value._version, value.data_ptr()))
            elif isinstance(value, _SIMPLE):
                entry.append((key, value))
            else:
                return None
        for group in (m._parameters, m._buffers):
            for key, t in group.items():
                entry.append((key, None) if t is None else (key, id(t), t._version, t.data_ptr(), t.dtype, t.device))
        sig.append(tuple(entry))
    return tuple(sig)


def _folded(model: nn.Module, layers) -> nn.Module | None:
    """A copy of ``model`` in eval mode with every foldable BatchNorm (:func:`_fold_pairs`) folded into the
    convolution before it, or None where nothing folds or the model's state cannot be tracked.

    Folding: ``W' = W · γ/√(σ² + ε)`` per output channel and ``b' = (b − μ) · γ/√(σ² + ε) + β`` (computed in float64),
    the BatchNorm replaced by ``nn.Identity``; on CPU the folded weights are stored channels-last. The copy shares
    every other parameter and buffer with ``model`` (nothing of ``model`` changes), and is cached per model until
    any parameter, buffer or plain attribute of it changes.
    """
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return None
    sig = _state_signature(model)
    if sig is None:
        return None
    key = (tuple(layers), sig)
    cached = _FOLDED_CACHE.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    pairs = _fold_pairs(model, layers)
    if not pairs:
        return None
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    try:
        net = copy.deepcopy(model, memo=dict(tensors))  # new modules, the same tensors
    except Exception:  # noqa: BLE001 - a model that cannot be copied runs unfolded
        return None
    modules = dict(net.named_modules())
    with torch.no_grad():
        for parent, conv_name, bn_name in pairs:
            holder = modules[parent]
            conv, bn = holder._modules[conv_name], holder._modules[bn_name]
            scale = bn.running_var.double().add(bn.eps).rsqrt()
            if bn.weight is not None:
                scale = scale * bn.weight.double()
            shift = -bn.running_mean.double() if conv.bias is None else conv.bias.double() - bn.running_mean.double()
            shift = shift * scale + (0.0 if bn.bias is None else bn.bias.double())
            weight = (conv.weight.double() * scale.reshape(-1, 1, 1, 1)).to(conv.weight.dtype)
            if weight.device.type == "cpu":
                weight = weight.contiguous(memory_format=torch.channels_last)
            conv.weight = nn.Parameter(weight, requires_grad=False)  # the copy's own convolution
            conv.bias = nn.Parameter(shift.to(weight.dtype), requires_grad=False)
            holder._modules[bn_name] = nn.Identity()
    net.eval()
    _FOLDED_CACHE[model] = (key, net)
    return net


def _finite_activations(model, x, layers) -> list[torch.Tensor]:
    """:func:`layer_activations`, refusing NaN/inf activations (they would turn every NAS feature into NaN)."""
    acts = _activations(model, x, layers)
    for name, a in zip(layers, acts, strict=True):
        # a NaN or inf entry makes the sum non-finite; a finite sum settles it in one pass (else check each entry,
        # as the sum of finite values may overflow)
        if not bool(torch.isfinite(a.sum())) and not bool(torch.isfinite(a).all()):
            raise ValueError(f"layers: the output of module {name!r} holds NaN or inf for this (finite) x; the model "
                             f"overflows (e.g. in float16: run it in float32) and NAS cannot cluster it")
    return acts


# ----------------------------------------------------------------------------------------------------
# features, materialised (their implicit low-resolution form is xai_robust.kmeans._LowRes)
# ----------------------------------------------------------------------------------------------------
def _check_options(normalize, weight_by_channels, upsample):
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    if not isinstance(weight_by_channels, bool):
        raise TypeError(f"weight_by_channels must be True or False, got {weight_by_channels!r}")
    if upsample not in _UPSAMPLE:
        raise ValueError(f"upsample must be one of {_UPSAMPLE}, got {upsample!r}")


def _features_from_activations(acts, size, *, normalize=True, weight_by_channels=True, upsample="bicubic",
                               eps=1e-12) -> torch.Tensor:
    blocks = []
    for a in acts:
        kw = {} if upsample == "nearest" else {"align_corners": False}
        u = F.interpolate(a, size=size, mode=upsample, **kw)
        if normalize:
            u = u / u.norm(dim=1, keepdim=True).clamp_min(eps)
        if weight_by_channels:
            u = u / (1 + a.shape[1])
        blocks.append(u)
    return torch.cat(blocks, 1)


def nas_features(model: nn.Module, x: torch.Tensor, layers: Sequence[str], *, size=None, normalize: bool = True,
                 weight_by_channels: bool = True, upsample: str = "bicubic") -> torch.Tensor:
    """The concatenated per-pixel NAS features, materialised (NAS, Algorithm 1, lines 5–14).

    Parameters
    ----------
    model, x, layers
        As in :func:`layer_activations`.
    size : (int, int), optional
        Output resolution (H, W); default: that of ``x``.
    normalize : bool
        L2-normalise each pixel's feature vector per layer (Algorithm 1, line 10).
    weight_by_channels : bool
        Divide each layer's block by ``1 + c`` (Algorithm 1, line 11).
    upsample : {"bicubic", "bilinear", "nearest"}
        Interpolation of the activations to ``size`` (the paper: bicubic).

    Returns
    -------
    Tensor[N, D, H, W]
        ``D = Σ_l c_l``.
    """
    check_model_input(model, x)
    _check_options(normalize, weight_by_channels, upsample)
    size = _check_size(size, x)
    layers = _check_layers(model, layers)
    acts = _finite_activations(model, x, layers)
    return _features_from_activations(acts, size, normalize=normalize, weight_by_channels=weight_by_channels,
                                      upsample=upsample)


def _first_appearance_ids(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Renumber clusters by first appearance in raster order (a canonical labelling of a partition: k-means cluster
    ids carry no order). Segmentations of scikit-image keep their sorted ids (``superpixels._consecutive_ids``)."""
    n = labels.shape[0]
    flat = labels.reshape(n, -1)
    p = flat.shape[1]
    pos = torch.arange(p, device=flat.device).expand_as(flat)
    first = torch.full((n, k), p, dtype=torch.long, device=flat.device)
    first = first.scatter_reduce(1, flat, pos, reduce="amin")
    order = torch.argsort(first, dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(k, device=flat.device).expand_as(order))
    return torch.gather(rank, 1, flat).reshape(labels.shape)


def _check_size(size, x):
    if size is None:
        return tuple(x.shape[-2:])
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"size must be None, an int or a pair (H, W) of positive ints, got {size!r}")
    return tuple(int(s) for s in size)


def _ward(feats: torch.Tensor, k: int, connectivity) -> torch.Tensor:
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.feature_extraction.image import grid_to_graph

    n, d, h, w = feats.shape
    graph = grid_to_graph(h, w) if connectivity == "grid" else None
    out = []
    for i in range(n):
        data = feats[i].reshape(d, -1).T.double().cpu().numpy()
        labels = AgglomerativeClustering(n_clusters=k, linkage="ward", connectivity=graph).fit_predict(data)
        out.append(torch.from_numpy(labels).long().reshape(h, w))
    return torch.stack(out).to(feats.device)


# ----------------------------------------------------------------------------------------------------
# the public function
# ----------------------------------------------------------------------------------------------------
def neuro_activated_superpixels(model: nn.Module, x: torch.Tensor, layers: Sequence[str], n_clusters: int = 5, *,
                                size=None, seed: int = 0, method: str = "kmeans", normalize: bool = True,
                                weight_by_channels: bool = True, upsample: str = "bicubic", n_init: int = 1,
                                max_iter: int = 50, fast: bool = True, connectivity: str | None = "grid",
                                batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """Neuro-Activated Superpixels of a batch (NAS, Algorithm 1; chapter 07).

    Parameters
    ----------
    model : nn.Module
        The classifier to explain (left exactly as found).
    x : Tensor[N, C, H, W]
        Images, pixels in [0, 1].
    layers : sequence of str
        Module names whose outputs are clustered, e.g. ``["layer2", "layer3", "layer4"]`` for a ResNet-18
        (the paper's depths [2, 3, 4]); chapter 01's ``small_resnet`` has ``layer1..layer3``.
    n_clusters : int
        K, the number of clusters (the paper's default: 5). Clusters need not be connected.
    size : int or (int, int), optional
        Output resolution; default the input's. Smaller is faster (NAS §3).
    seed : int
        Seeds k-means++; the same seed and batch give the same segmentation.
    method : {"kmeans", "ward"}
        Batched k-means (default) or Ward's agglomerative clustering (deterministic, NAS appendix C; slow —
        use a small ``size``).
    normalize, weight_by_channels, upsample
        Algorithm 1, lines 8, 10 and 11 (switchable for the ablation of NAS appendix A).
    n_init, max_iter
        k-means restarts and iterations.
    fast : bool
        Run k-means on the low-resolution activations (exact; default) instead of materialising the
        upsampled features.
    connectivity : {"grid", None}
        Ward only: restrict merges to 4-neighbouring pixels (fast) or none (the plain Ward of the paper).
    batch_size : int
        Images clustered in parallel.
    progress : bool
        Show a progress bar over batches.

    Returns
    -------
    LongTensor[N, H, W]
        Cluster index per pixel in ``0..K-1``, numbered by first appearance in raster order.
    """
    check_model_input(model, x)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if connectivity not in ("grid", None):
        raise ValueError(f"connectivity must be 'grid' or None, got {connectivity!r}")
    _check_options(normalize, weight_by_channels, upsample)
    if not isinstance(fast, bool):
        raise TypeError(f"fast must be True or False, got {fast!r}")
    size = _check_size(size, x)
    layers = _check_layers(model, layers)
    check_count(n_clusters, "n_clusters")
    if n_clusters > size[0] * size[1]:
        raise ValueError(f"n_clusters={n_clusters} exceeds the {size[0] * size[1]} output pixels; lower "
                         "n_clusters or raise size")
    check_count(n_init, "n_init")
    check_count(max_iter, "max_iter")
    check_count(batch_size, "batch_size")
    generator = torch.Generator().manual_seed(check_count(seed, "seed", minimum=0))
    starts = range(0, x.shape[0], batch_size)
    if progress:
        from . import progress as progress_bar

        starts = progress_bar(starts, desc="NAS")
    out = []
    for start in starts:
        xb = x[start:start + batch_size]
        acts = _finite_activations(model, xb, layers)
        opts = dict(normalize=normalize, weight_by_channels=weight_by_channels, upsample=upsample)
        if method == "ward":
            labels = _ward(_features_from_activations(acts, size, **opts), n_clusters, connectivity)
        else:
            feats = _LowRes(acts, size, **opts) if fast else _Dense(_features_from_activations(acts, size, **opts))
            labels, _ = kmeans_pixels(feats, n_clusters, n_init=n_init, max_iter=max_iter, generator=generator)
        out.append(_first_appearance_ids(labels, n_clusters))
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------------
# class-wise clustering (NAS §4.2.3)
# ----------------------------------------------------------------------------------------------------
class ClassClustering:
    """Ward clustering of one class's pixel features, transferred to new images by k-nearest neighbours.

    NAS §4.2.3 (chapter 07): the activations of all training images of a class are clustered with Ward
    linkage; a kNN classifier learns that partition so that the pixels of new images get class-cluster labels,
    which allows a semi-supervised evaluation of saliency methods (NAS Table 1).

    Parameters
    ----------
    model, layers, size, normalize, weight_by_channels, upsample
        As in :func:`neuro_activated_superpixels`.
    n_clusters : int
        Number of class clusters (the paper: 10).
    n_pixels : int
        Pixels sampled (uniformly over all the images' pixels) for Ward, which is quadratic in memory.
    n_neighbors : int
        Neighbours of the kNN classifier.
    seed : int
        Seeds the pixel sample.
    """

    def __init__(self, model: nn.Module, layers, n_clusters: int = 10, *, size=None, n_pixels: int = 3000,
                 n_neighbors: int = 5, seed: int = 0, normalize: bool = True, weight_by_channels: bool = True,
                 upsample: str = "bicubic"):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        _check_options(normalize, weight_by_channels, upsample)
        self.model = model
        self.layers = _check_layers(model, layers)
        self.n_clusters = check_count(n_clusters, "n_clusters")
        if size is not None:
            _check_size(size, None)
        self.size = size
        self.n_pixels = check_count(n_pixels, "n_pixels")
        self.n_neighbors = check_count(n_neighbors, "n_neighbors")
        self.seed = check_count(seed, "seed", minimum=0)
        self.opts = dict(normalize=normalize, weight_by_channels=weight_by_channels, upsample=upsample)
        self.knn = None

    def _check_x(self, x):
        """The images' checks, and the number of pixels their features will have, before the model runs."""
        check_model_input(self.model, x)
        h, w = _check_size(self.size, x)
        return x.shape[0] * h * w

    def _pixels(self, x):
        f = nas_features(self.model, x, self.layers, size=self.size, **self.opts)
        n, d, h, w = f.shape
        return f.permute(0, 2, 3, 1).reshape(-1, d), (n, h, w)

    def fit(self, x: torch.Tensor) -> ClassClustering:
        """Cluster the pixels of ``x`` (images of one class) with Ward and fit the kNN labeller."""
        from sklearn.cluster import AgglomerativeClustering
        from sklearn.neighbors import KNeighborsClassifier

        sampled = min(self.n_pixels, self._check_x(x))
        if self.n_clusters > sampled:
            raise ValueError(f"n_clusters={self.n_clusters} exceeds the {sampled} sampled pixels; raise n_pixels "
                             "(or pass more images)")
        if self.n_neighbors > sampled:
            raise ValueError(f"n_neighbors={self.n_neighbors} exceeds the {sampled} sampled pixels; lower "
                             "n_neighbors or raise n_pixels")
        feats, _ = self._pixels(x)
        rng = np.random.default_rng(self.seed)
        take = rng.choice(feats.shape[0], size=min(self.n_pixels, feats.shape[0]), replace=False)
        sample = feats[torch.from_numpy(take)].double().cpu().numpy()
        self.sample_labels_ = AgglomerativeClustering(n_clusters=self.n_clusters, linkage="ward").fit_predict(sample)
        self.knn = KNeighborsClassifier(n_neighbors=self.n_neighbors).fit(sample, self.sample_labels_)
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class-cluster label of every pixel of ``x``: LongTensor[N, H, W]."""
        if self.knn is None:
            raise ValueError("call fit(images_of_one_class) before predict")
        self._check_x(x)
        feats, (n, h, w) = self._pixels(x)
        labels = self.knn.predict(feats.double().cpu().numpy())
        return torch.from_numpy(labels).long().reshape(n, h, w)


def class_clusters(model: nn.Module, x: torch.Tensor, layers, n_clusters: int = 10, **kwargs) -> ClassClustering:
    """Fit a :class:`ClassClustering` on the images ``x`` of one class (NAS §4.2.3; chapter 07)."""
    return ClassClustering(model, layers, n_clusters, **kwargs).fit(x)


def _check_cluster_labels(labels, shape=None) -> torch.Tensor:
    """Class-cluster labels: a non-empty integer tensor (N, H, W), of ``shape`` when given."""
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    elif isinstance(labels, (list, tuple)):
        labels = torch.as_tensor(labels)
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a LongTensor of shape (N, H, W), got {type(labels).__name__}")
    if labels.dim() != 3:
        hint = "; add a batch dimension with labels.unsqueeze(0) for one image" if labels.dim() == 2 else ""
        raise ValueError(f"labels must have shape (N, H, W), got {tuple(labels.shape)}{hint}")
    if labels.shape[0] == 0:
        raise ValueError(f"labels is an empty batch (shape {tuple(labels.shape)}): pass at least one image")
    check_labels(labels.reshape(-1), None, None, name="labels")  # integer dtype
    if shape is not None and tuple(labels.shape) != tuple(shape):
        raise ValueError(f"labels of shape {tuple(labels.shape)} must match the maps' shape {tuple(shape)} "
                         "(N, H, W); sum heatmaps over channels first")
    return labels


def _per_image_cluster_sums(values: torch.Tensor, labels: torch.Tensor, n_clusters: int):
    """Σ of ``values`` and pixel counts per (image, cluster): two (N, K) tensors."""
    if labels.shape != values.shape:
        raise ValueError(f"labels of shape {tuple(labels.shape)} must match the maps' shape {tuple(values.shape)} "
                         "(N, H, W); sum heatmaps over channels first")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_clusters):
        raise ValueError(f"labels must lie in 0..{n_clusters - 1} (n_clusters={n_clusters})")
    n = labels.shape[0]
    flat = labels.reshape(n, -1).long()
    sums = torch.zeros(n, n_clusters, dtype=values.dtype, device=values.device)
    sums.scatter_add_(1, flat, values.reshape(n, -1))
    counts = torch.zeros_like(sums).scatter_add_(1, flat, torch.ones_like(values).reshape(n, -1))
    return sums, counts


def cluster_saliency(saliency: torch.Tensor, labels: torch.Tensor, n_clusters: int, *, normalize: bool = True):
    """Average saliency of each class cluster (NAS §4.2.3, Table 1; chapter 07).

    Each map is min-max normalised to [0, 1] (``normalize``), averaged over each cluster's pixels in each
    image, and these per-image means are averaged over the images in which the cluster occurs.

    Parameters
    ----------
    saliency : Tensor[N, H, W] or Tensor[N, C, H, W]
        Saliency maps (channels are summed).
    labels : LongTensor[N, H, W]
        Class-cluster label per pixel (:meth:`ClassClustering.predict`), in ``0..n_clusters-1``.
    n_clusters : int
    normalize : bool
        Min-max normalise each map first (maps of different methods become comparable).

    Returns
    -------
    mean : Tensor[K]
        Average saliency per cluster (0 where the cluster never occurs).
    present : BoolTensor[K]
        Whether the cluster occurs in any image.
    """
    check_count(n_clusters, "n_clusters")
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    _check_values(saliency, "saliency", (3, 4), "(N, H, W) or (N, C, H, W)")
    s = saliency.detach().float()
    if s.dim() == 4:
        s = s.sum(1)
    labels = _check_cluster_labels(labels, tuple(s.shape)).to(s.device)
    if normalize:
        s = s - s.amin((-2, -1), keepdim=True)
        s = s / s.amax((-2, -1), keepdim=True).clamp_min(1e-12)
    sums, counts = _per_image_cluster_sums(s, labels, n_clusters)
    occurs = counts > 0
    per_image = sums / counts.clamp_min(1)
    n_images = occurs.sum(0)
    return per_image.sum(0) / n_images.clamp_min(1), n_images > 0


def cluster_overlap(labels: torch.Tensor, masks: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """Fraction of each cluster's pixels (over all images) that lie inside the masks: Tensor[K], 0 if absent.

    Names class clusters semi-supervisedly (chapter 07): the cluster with the largest overlap with object masks
    is the object cluster.
    """
    check_count(n_clusters, "n_clusters")
    labels = _check_cluster_labels(labels)
    if not isinstance(masks, (torch.Tensor, np.ndarray)):
        raise TypeError(f"masks must be a tensor of shape (N, H, W) or (N, 1, H, W), got {type(masks).__name__}")
    check_finite(masks, "masks")
    m = torch.as_tensor(masks, device=labels.device).float()
    if m.dim() == 4:
        if m.shape[1] != 1:
            raise ValueError(f"masks must have shape (N, H, W) or (N, 1, H, W), got {tuple(m.shape)}; one mask "
                             "per image, not per channel")
        m = m[:, 0]
    if tuple(m.shape) != tuple(labels.shape):
        raise ValueError(f"masks must have the labels' shape {tuple(labels.shape)} (N, H, W) (or (N, 1, H, W)), got "
                         f"{tuple(masks.shape)}; resize the masks to the labels' resolution")
    inside, counts = _per_image_cluster_sums(m, labels, n_clusters)
    return inside.sum(0) / counts.sum(0).clamp_min(1)
