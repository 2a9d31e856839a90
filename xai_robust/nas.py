"""Neuro-Activated Superpixels (NAS): a segmentation of the input read from the classifier's activations.

Chapter 07 ("Neuro-Activated Superpixels") explains the method; the paper is Boubekki, Fadel & Mair,
*Leveraging Activations for Superpixel Explanations* (NAS, Algorithm 1). For every chosen layer the
activations are upsampled (bicubic) to the output size, each pixel's feature vector is L2-normalised and
divided by ``1 + c`` (``c`` = the layer's channels), the layers are concatenated and the pixels are
clustered with k-means (or Ward's hierarchical clustering, the deterministic option of NAS appendix C).

The fast path never materialises the upsampled features. Write the feature of output pixel ``p`` for
layer ``l`` as ``x_p = s_p (U a)_p`` with ``U`` the (linear, separable) upsampling operator, ``a`` the
low-resolution activations and ``s_p`` the per-pixel scale (``1/((1+c)‖(U a)_p‖)``). Then

* the distance term ``x_p·μ = s_p (U (a μ))_p``: project the *low-resolution* activations on the centroid
  and upsample the K projection maps (K channels instead of c);
* the centroid ``μ_k = Σ_{p∈k} x_p / n_k = aᵀ Uᵀ (s ⊙ 1_k) / n_k``: apply the adjoint of the upsampling to the
  K weighted cluster masks, then one (hw × c) product;
* the norms ``‖(U a)_p‖²`` (needed for ``s_p``) come from the local Gram terms
  ``⟨a_q, a_{q+δ}⟩`` for the few offsets δ inside the interpolation kernel's support (|δ| ≤ 3 for bicubic).

All three are exact re-orderings of the direct computation (tested in ``tests/test_nas.py``), so k-means
from the same initial pixels returns the same labels. Ward needs the features themselves and materialises them.

On CPU the seeding and the Lloyd iterations run in compiled kernels (:mod:`xai_robust._nas_kernels`, numba),
one image per task: the low-resolution products are BLAS calls, and per output row the K scores (4 y-taps and
the per-pixel scale per layer), their argmin and the cluster sums of the pixels that changed cluster are one
pass that stays in cache. The batched PyTorch path (GPU, materialised features, or no numba) makes the same
picks and labels (tested).

Every public function checks its input before the model is touched (:mod:`xai_robust.checks`): ``x`` is a
non-empty, finite float batch of the model's dtype, counts (``n_clusters``, ``n_init``, ``max_iter``,
``batch_size``, ...) are positive ints, float options finite, labels integer ids in range; activations that come
out NaN/inf are refused. The model is left exactly as found, per submodule, even when the forward pass raises.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .attribution import restore_model
from .checks import check_count, check_finite, check_labels, check_model_input, check_number
from .superpixels import _check_values

__all__ = ["neuro_activated_superpixels", "layer_activations", "nas_features", "upsample_matrix",
           "kmeans_pixels", "ClassClustering", "class_clusters", "cluster_saliency", "cluster_overlap"]

_UPSAMPLE = ("bicubic", "bilinear", "nearest")
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
    after the last requested layer has run.

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
    layers = _check_layers(model, layers)
    modules = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise ValueError(f"layers: module {name!r} returns {type(output).__name__} of shape "
                                 f"{tuple(getattr(output, 'shape', ()))}; NAS needs a (N, c, h, w) feature map")
            store[name] = output.detach().clone()  # clone: later in-place ops must not change it
            if len(store) == len(layers):
                raise _StopForward
        return hook

    with restore_model(model):
        try:
            for name in layers:
                handles.append(modules[name].register_forward_hook(make_hook(name)))
            model.eval()
            with torch.no_grad():
                try:
                    model(x)
                except _StopForward:
                    pass
        finally:
            for h in handles:
                h.remove()
    missing = [n for n in layers if n not in store]
    if missing:
        raise ValueError(f"layers: modules {missing} never ran in the forward pass; choose modules the model uses")
    return [store[n] for n in layers]


def _finite_activations(model, x, layers) -> list[torch.Tensor]:
    """:func:`layer_activations`, refusing NaN/inf activations (they would turn every NAS feature into NaN)."""
    acts = layer_activations(model, x, layers)
    for name, a in zip(layers, acts, strict=True):
        if not bool(torch.isfinite(a).all()):
            raise ValueError(f"layers: the output of module {name!r} holds NaN or inf for this (finite) x; the model "
                             f"overflows (e.g. in float16: run it in float32) and NAS cannot cluster it")
    return acts


# ----------------------------------------------------------------------------------------------------
# upsampling as matrices
# ----------------------------------------------------------------------------------------------------
def upsample_matrix(n_in: int, n_out: int, mode: str = "bicubic", *, dtype=torch.float32,
                    device=None) -> torch.Tensor:
    """The 1-D interpolation matrix ``U`` (n_out × n_in) of ``F.interpolate(..., mode, align_corners=False)``.

    PyTorch's bicubic/bilinear/nearest 2-D interpolation is separable, so the upsampling of a map ``a``
    is ``U_y a U_xᵀ`` (used by the exact low-resolution k-means of NAS, chapter 07).
    """
    check_count(n_in, "n_in")
    check_count(n_out, "n_out")
    if mode not in _UPSAMPLE:
        raise ValueError(f"upsample must be one of {_UPSAMPLE}, got {mode!r}")
    eye = torch.eye(n_in, dtype=dtype, device=device).reshape(1, n_in, n_in, 1)
    kw = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(eye, size=(n_out, 1), mode=mode, **kw)
    return out[0, :, :, 0].T.contiguous()


def _taps(u: torch.Tensor, n_taps: int | None = None):
    """Column indices and weights of the non-zero entries of each row of an interpolation matrix, (n_out, T) each
    (rows with fewer than T non-zeros are padded with weight 0). T is the largest number of non-zeros in a row,
    or ``n_taps`` if given (then None where a row has more)."""
    nz = (u != 0).to(torch.int8)
    t = max(int(nz.sum(1).max()), 1)
    if n_taps is not None and t > n_taps:
        return None
    cols = torch.sort(nz, dim=1, descending=True, stable=True).indices[:, :t]
    weights = u.gather(1, cols)
    if n_taps is not None and n_taps > t:  # pad with the first tap at weight 0
        cols = torch.cat([cols, cols[:, :1].expand(-1, n_taps - t)], 1)
        weights = torch.cat([weights, weights.new_zeros(weights.shape[0], n_taps - t)], 1)
    return cols, weights


def _bandwidth(u: torch.Tensor) -> int:
    """Largest distance between two non-zero columns in one row of an interpolation matrix."""
    nz = u != 0
    idx = torch.arange(u.shape[1], device=u.device).expand_as(u)
    big = u.shape[1]
    first = torch.where(nz, idx, torch.full_like(idx, big)).min(1).values
    last = torch.where(nz, idx, torch.full_like(idx, -1)).max(1).values
    return int((last - first).clamp_min(0).max())


def _upsampled_sq_norms(a: torch.Tensor, uy: torch.Tensor, ux: torch.Tensor) -> torch.Tensor:
    """Exact ``‖(U a)_p‖²`` for every output pixel without materialising ``U a``.

    ``‖Σ_{y,x} U_y[i,y] U_x[j,x] a[:,y,x]‖² = Σ_{δy,δx} Σ_{y,x} A_δy[i,y] P_{δy,δx}[y,x] B_δx[j,x]`` with the local
    Gram terms ``P_δ[y,x] = ⟨a[:,y,x], a[:,y+δy,x+δx]⟩``, ``A_δy[i,y] = U_y[i,y] U_y[i,y+δy]`` and the same for x.
    """
    n, c, h, w = a.shape
    by, bx = _bandwidth(uy), _bandwidth(ux)
    dys, dxs = range(-by, by + 1), range(-bx, bx + 1)
    ap = F.pad(a, (bx, bx, by, by)).permute(0, 2, 3, 1).contiguous()  # channels last: contiguous dot products
    centre = ap[:, by:by + h, bx:bx + w]
    gram = a.new_empty(n, len(dys), len(dxs), h, w)  # (N, Dy, Dx, h, w)
    for iy, dy in enumerate(dys):
        for ix, dx in enumerate(dxs):
            if (dy, dx) >= (0, 0):
                gram[:, iy, ix] = (centre * ap[:, by + dy:by + dy + h, bx + dx:bx + dx + w]).sum(-1)
    for iy, dy in enumerate(dys):  # symmetry: P_{-δ}[y, x] = P_δ[y - δy, x - δx] (zero outside the map)
        for ix, dx in enumerate(dxs):
            if (dy, dx) < (0, 0):
                mirror = F.pad(gram[:, 2 * by - iy, 2 * bx - ix], (bx, bx, by, by))
                gram[:, iy, ix] = mirror[:, by + dy:by + dy + h, bx + dx:bx + dx + w]
    uyp = F.pad(uy, (by, by))  # (H, h + 2by)
    uxp = F.pad(ux, (bx, bx))
    A = torch.stack([uy * uyp[:, by + dy:by + dy + h] for dy in dys])  # (Dy, H, h)
    B = torch.stack([ux * uxp[:, bx + dx:bx + dx + w] for dx in dxs])  # (Dx, W, w)
    nd, ne = len(dys), len(dxs)
    q = gram.permute(0, 1, 3, 2, 4).reshape(n, nd * h, ne * w) @ B.permute(0, 2, 1).reshape(ne * w, -1)
    return A.permute(1, 0, 2).reshape(-1, nd * h) @ q  # (N, H, W)


# ----------------------------------------------------------------------------------------------------
# features: direct (materialised) and implicit (low resolution, exact)
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


class _Dense:
    """Materialised features X (N, P, D): the direct computation."""

    def __init__(self, feats: torch.Tensor | None = None):
        if feats is None:  # used by subset()
            return
        n, d, h, w = feats.shape
        self.shape = (h, w)
        self.x = feats.reshape(n, d, h * w).transpose(1, 2)
        self.sq_norm = (self.x ** 2).sum(-1)

    def subset(self, keep):  # the images ``keep`` (LongTensor) only
        out = _Dense()
        out.shape, out.x, out.sq_norm = self.shape, self.x[keep], self.sq_norm[keep]
        return out

    def dots(self, centers, scale=1.0, add=None):  # (N, K, D) -> scale · (N, K, P) [+ add (N, K)]
        out = (centers * scale) @ self.x.transpose(1, 2)
        return out if add is None else out + add[:, :, None]

    def cluster_sums(self, labels, k):  # labels (N, P) -> Σ_{p∈k} x_p (N, K, D)
        onehot = torch.zeros(labels.shape[0], k, labels.shape[1], dtype=self.x.dtype, device=self.x.device)
        return onehot.scatter_(1, labels[:, None], 1.0) @ self.x

    def cluster_sums_delta(self, img, pix, old, new, k):  # change of the sums when pixels move old -> new
        delta = torch.zeros(self.x.shape[0], k, self.x.shape[2], dtype=self.x.dtype, device=self.x.device)
        moved = self.x[img, pix]
        delta.index_put_((img, new), moved, accumulate=True)
        return delta.index_put_((img, old), -moved, accumulate=True)

    def gather(self, idx):  # (N, K) -> (N, K, D)
        return torch.gather(self.x, 1, idx[:, :, None].expand(-1, -1, self.x.shape[2]))


class _LowRes:
    """Implicit features ``x_p = concat_l s_{l,p} (U_l a_l)_p``, every operation exact at low resolution."""

    def __init__(self, acts, size, *, normalize=True, weight_by_channels=True, upsample="bicubic", eps=1e-12):
        self.shape = tuple(size)
        H, W = self.shape
        self.blocks = []
        sq = 0
        for a in acts:
            n, c, h, w = a.shape
            uy = upsample_matrix(h, H, upsample, dtype=a.dtype, device=a.device)
            ux = upsample_matrix(w, W, upsample, dtype=a.dtype, device=a.device)
            wc = 1.0 / (1 + c) if weight_by_channels else 1.0
            if h == H and w == W and torch.equal(uy, torch.eye(H, dtype=a.dtype, device=a.device)) \
                    and torch.equal(ux, torch.eye(W, dtype=a.dtype, device=a.device)):
                uy = ux = None  # same resolution: the upsampling is the identity
                n2 = (a ** 2).sum(1)
            else:
                n2 = _upsampled_sq_norms(a, uy, ux).clamp_min(0)
            if normalize:
                s = wc / n2.sqrt().clamp_min(eps)
            else:
                s = torch.full_like(n2, wc)
            sq = sq + s ** 2 * n2
            self.blocks.append((a, uy, ux, s))
        self.sq_norm = sq.reshape(sq.shape[0], -1)
        self.taps = [(None, None) if ux is None else _taps(ux) for _, _, ux, _ in self.blocks]
        self.splits = [blk[0].shape[1] for blk in self.blocks]

    def subset(self, keep):  # the images ``keep`` (LongTensor) only
        out = object.__new__(_LowRes)
        out.shape, out.splits, out.taps = self.shape, self.splits, self.taps
        out.blocks = [(a[keep], uy, ux, s[keep]) for a, uy, ux, s in self.blocks]
        out.sq_norm = self.sq_norm[keep]
        return out

    def dots(self, centers, scale=1.0, add=None):
        """``scale · x_p·μ_k`` (N, K, P), plus ``add`` (N, K) if given: project the low-resolution maps on μ and
        upsample the K projections."""
        out = None
        for (a, uy, ux, s), mu in zip(self.blocks, centers.split(self.splits, dim=2), strict=True):
            n, c, h, w = a.shape
            proj = ((mu * scale) @ a.reshape(n, c, h * w)).reshape(n, -1, h, w)  # fresh tensor
            up = proj if uy is None else uy @ proj @ ux.T
            if out is None:
                out = up.mul_(s[:, None]) if add is None else torch.addcmul(add[:, :, None, None], up, s[:, None])
            else:
                out.addcmul_(up, s[:, None])
        return out.flatten(2)

    def cluster_sums(self, labels, k):
        """``Σ_{p∈k} x_p`` (N, K, D) through the adjoint of the upsampling applied to the weighted cluster masks."""
        H, W = self.shape
        n = labels.shape[0]
        a0 = self.blocks[0][0]
        onehot = torch.zeros(n, k, H * W, dtype=a0.dtype, device=a0.device).scatter_(1, labels[:, None], 1.0)
        sums = []
        for a, uy, ux, s in self.blocks:
            _, c, h, w = a.shape
            m = (onehot * s.reshape(n, 1, H * W)).reshape(n, k, H, W)
            low = m if uy is None else uy.T @ m @ ux  # (N, K, h, w)
            sums.append(low.reshape(n, k, h * w) @ a.reshape(n, c, h * w).transpose(1, 2))
        return torch.cat(sums, 2)

    def cluster_sums_delta(self, img, pix, old, new, k):
        """Change of :meth:`cluster_sums` when the pixels ``(img, pix)`` move from cluster ``old`` to ``new``.

        The first adjoint stage (along x) touches only the moved pixels' few interpolation taps (an index-add);
        the rest is small: cost ∝ moved pixels, not all pixels.
        """
        H, W = self.shape
        n = self.sq_norm.shape[0]
        i, j = pix // W, pix % W
        flat = img * (H * W) + pix
        rows = torch.cat([img * k + new, img * k + old])  # (2M,) index of (image, cluster)
        ii, jj, pp = torch.cat([i, i]), torch.cat([j, j]), torch.cat([pix, pix])
        sums = []
        for (a, uy, _ux, s), (cols, weights) in zip(self.blocks, self.taps, strict=True):
            _, c, h, w = a.shape
            sv = s.reshape(-1).index_select(0, flat)
            sv = torch.cat([sv, -sv])
            if uy is None:
                low = torch.zeros(n * k * h * w, dtype=a.dtype, device=a.device)
                low.index_add_(0, rows * (h * w) + pp, sv)
            else:
                part = torch.zeros(n * k * H * w, dtype=a.dtype, device=a.device)
                part.index_add_(0, ((rows * H + ii) * w)[:, None].add(cols.index_select(0, jj)).flatten(),
                                (weights.index_select(0, jj) * sv[:, None]).flatten())
                low = uy.T @ part.reshape(n, k, H, w)  # (N, K, h, w)
            sums.append(low.reshape(n, k, h * w) @ a.reshape(n, c, h * w).transpose(1, 2))
        return torch.cat(sums, 2)

    def gather(self, idx):
        W = self.shape[1]
        i, j = idx // W, idx % W
        out = []
        for a, uy, ux, s in self.blocks:
            if uy is None:
                v = torch.gather(a.flatten(2), 2, idx[:, None, :].expand(-1, a.shape[1], -1)).transpose(1, 2)
            else:
                v = torch.einsum("nky,nkx,ncyx->nkc", uy[i], ux[j], a)
            scale = torch.gather(s.flatten(1), 1, idx)
            out.append(v * scale[:, :, None])
        return torch.cat(out, 2)


# ----------------------------------------------------------------------------------------------------
# batched k-means
# ----------------------------------------------------------------------------------------------------
def _sample_rows(weights, n_draws, generator):
    """``n_draws`` indices per row of ``weights`` (N, P), each drawn with probability ∝ weight (uniform where a row
    sums to 0). Inverse-CDF sampling as in scikit-learn's k-means++, much cheaper than ``torch.multinomial``."""
    n, p = weights.shape
    u = torch.rand(n, n_draws, generator=generator, dtype=torch.float64).to(weights.device)
    cdf = weights.double().cumsum(1)
    total = cdf[:, -1:]
    idx = torch.searchsorted(cdf, u * total, right=True).clamp_max(p - 1)
    uniform = (u * p).long().clamp_max(p - 1)
    return torch.where(total > 0, idx, uniform)


def _kmeans_pp_init(feats, k, generator):
    """Greedy k-means++ seeding for every image of the batch at once (Arthur & Vassilvitskii, 2007).

    As scikit-learn's ``KMeans`` default: each new centre is the best of ``2 + ⌊ln k⌋`` candidates drawn with
    probability ∝ the squared distance to the nearest chosen centre (the one that lowers the potential most).
    """
    if _use_kernels(feats):
        return _kmeans_pp_images(feats, k, generator)
    n, p = feats.sq_norm.shape
    dev = feats.sq_norm.device
    trials = 2 + int(np.log(k))
    idx = torch.randint(p, (n, 1), generator=generator).to(dev)
    chosen = [idx]
    c = feats.gather(idx)
    d2 = (feats.sq_norm + feats.dots(c, -2.0)[:, 0] + (c ** 2).sum(-1)).clamp_min(0)
    for _ in range(1, k):
        cand = _sample_rows(d2, trials, generator)  # (N, T)
        c = feats.gather(cand)
        dist = (feats.sq_norm[:, None] + feats.dots(c, -2.0) + (c ** 2).sum(-1)[:, :, None]).clamp_min(0)
        dist = torch.minimum(dist, d2[:, None])  # (N, T, P): the new nearest-centre distances per candidate
        best = dist.sum(2).argmin(1)  # the candidate with the lowest potential
        d2 = dist[torch.arange(n, device=dev), best]
        chosen.append(cand.gather(1, best[:, None]))
    return torch.cat(chosen, 1)


def _lloyd(feats, init_idx, max_iter, tol=1e-4, incremental=0.1):
    """Lloyd iterations for every image of the batch, each image stopping on its own (as if run alone).

    An image stops when its labels no longer change, or (scikit-learn's rule) once its centroids moved by less
    than ``tol`` × its mean per-feature variance — then its labels are re-assigned to the final centroids.
    Stopped images leave the batch, so the remaining iterations only cost what the slow images need. Once fewer
    than a fraction ``incremental`` of the pixels change cluster, the cluster sums are updated with the moved
    pixels only instead of being recomputed (the same sums up to float rounding).

    On CPU the implicit features go to :func:`_lloyd_images` (numba kernel, same iterations and labels).

    (Hamerly's distance bounds were tried and dropped: on NAS features 10–30 % of the pixels stay near a
    cluster boundary, and scoring pixels one by one costs ~100× more per pixel than the separable full pass.)
    """
    n, k = init_idx.shape
    p = feats.sq_norm.shape[1]
    dev = feats.sq_norm.device
    if _use_kernels(feats):
        return _lloyd_images(feats, init_idx, max_iter, tol)
    centers = feats.gather(init_idx)
    threshold = _tol_threshold(feats, tol)
    labels_out = torch.empty(n, p, dtype=torch.long, device=dev)
    inertia_out = torch.empty(n, dtype=centers.dtype, device=dev)
    active = torch.arange(n, device=dev)
    f, prev, sums, counts, changed = feats, None, None, None, None
    finishing = torch.zeros(n, dtype=torch.bool, device=dev)
    for it in range(max_iter + 1):
        # ‖x_p‖² is the same for every cluster, so the assignment needs only −2 x·μ + ‖μ‖²
        score = f.dots(centers, -2.0, add=(centers ** 2).sum(-1))
        labels, best = _argmin_k(score)
        if prev is None:
            stop = finishing.clone()
        else:
            changed = labels != prev
            n_changed = changed.sum(1)
            stop = finishing | (n_changed == 0)
        if it == max_iter:
            stop[:] = True
        if bool(stop.any()):
            labels_out[active[stop]] = labels[stop]
            inertia_out[active[stop]] = (f.sq_norm[stop] + best[stop]).clamp_min(0).sum(1)
            if bool(stop.all()):
                break
            keep = (~stop).nonzero()[:, 0]
            active, f, labels, centers, threshold = active[keep], f.subset(keep), labels[keep], centers[keep], \
                threshold[keep]
            if prev is not None:
                prev, sums, counts, changed = prev[keep], sums[keep], counts[keep], changed[keep]
                n_changed = n_changed[keep]
        if prev is None or int(n_changed.sum()) > incremental * changed.numel():
            counts = torch.zeros(labels.shape[0], k, dtype=centers.dtype, device=dev)
            counts.scatter_add_(1, labels, torch.ones_like(labels, dtype=centers.dtype))
            sums = f.cluster_sums(labels, k)
        else:
            flat = changed.reshape(-1).nonzero()[:, 0]
            img, pix = flat // p, flat % p
            old, new = prev.reshape(-1).index_select(0, flat), labels.reshape(-1).index_select(0, flat)
            sums = sums + f.cluster_sums_delta(img, pix, old, new, k)
            one = torch.ones_like(img, dtype=centers.dtype)
            counts.view(-1).index_add_(0, img * k + new, one).index_add_(0, img * k + old, -one)
        new_centers = torch.where(counts[:, :, None] > 0, sums / counts.clamp_min(1)[:, :, None], centers)
        finishing = ((new_centers - centers) ** 2).sum((1, 2)) <= threshold
        centers, prev = new_centers, labels
    return labels_out, inertia_out


def _kernels():
    """The compiled CPU kernels (:mod:`xai_robust._nas_kernels`), or None where numba is missing."""
    try:
        from . import _nas_kernels
    except ImportError:  # numba is a dependency; without it the PyTorch path runs (slower, same result)
        return None
    import numba
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    return _nas_kernels


def _use_kernels(feats) -> bool:
    """Whether the CPU kernels run: implicit NAS features on CPU, numba importable, a supported upsampling."""
    return (isinstance(feats, _LowRes) and feats.sq_norm.device.type == "cpu" and _kernels() is not None
            and _kernel_layout(feats) is not None)


def _kernel_layout(feats) -> dict | None:
    """The arrays the CPU kernels of :mod:`xai_robust._nas_kernels` read, built once per feature object; None
    where an upsampling has more than the 4 taps per output row or column that the kernels handle (PyTorch's
    interpolation modes never do; the PyTorch path then runs)."""
    if hasattr(feats, "_layout"):
        return feats._layout
    H, W = feats.shape
    dtype = feats.sq_norm.dtype
    acts = [a for a, _, _, _ in feats.blocks]
    uys = [torch.eye(H, dtype=dtype) if uy is None else uy for _, uy, _, _ in feats.blocks]
    uxs = [torch.eye(W, dtype=dtype) if ux is None else ux for _, _, ux, _ in feats.blocks]

    def offsets(sizes):
        return np.cumsum([0] + list(sizes)).astype(np.int64)

    taps_y = [_taps(u, 4) for u in uys]  # the (at most 4) taps of each output row / column, per layer
    taps_x = [_taps(u, 4) for u in uxs]
    if any(t is None for t in taps_y + taps_x):
        feats._layout = None
        return None

    def stack(taps, part):  # (H or W, L, 4)
        return np.ascontiguousarray(torch.stack([t[part] for t in taps], 1).numpy())

    uy_all = torch.cat(uys, 1)  # (H, Y)
    feats._layout = dict(
        acts_c=torch.cat([a.flatten(1) for a in acts], 1).contiguous().numpy(),
        acts_t=torch.cat([a.flatten(2).transpose(1, 2).flatten(1) for a in acts], 1).contiguous().numpy(),
        a_off=offsets(a[0].numel() for a in acts), d_off=offsets(a.shape[1] for a in acts),
        p_off=offsets(a.shape[2] * a.shape[3] for a in acts),
        sq_norm=feats.sq_norm.contiguous().numpy(),
        uy_t=uy_all.T.contiguous().numpy(), y_off=offsets(u.shape[1] for u in uys),
        y_tap=stack(taps_y, 0), y_w=stack(taps_y, 1),
        scale=torch.stack([s for _, _, _, s in feats.blocks], 1).contiguous().numpy(),  # (N, L, H, W)
        ux_t=torch.cat(uxs, 1).T.contiguous().numpy(), x_off=offsets(u.shape[1] for u in uxs),
        x_tap=stack(taps_x, 0), x_w=stack(taps_x, 1),
        ident=np.array([uy is None for _, uy, _, _ in feats.blocks], dtype=np.int64),
    )
    return feats._layout


def _kmeans_pp_images(feats, k, generator):
    """:func:`_kmeans_pp_init` for the implicit features on CPU (:func:`xai_robust._nas_kernels.kmeans_pp_images`),
    with the same random draws in the same order."""
    n, p = feats.sq_norm.shape
    trials = 2 + int(np.log(k))
    first = torch.randint(p, (n, 1), generator=generator)[:, 0].contiguous()
    draws = torch.stack([torch.rand(n, trials, generator=generator, dtype=torch.float64) for _ in range(k - 1)], 1) \
        if k > 1 else torch.zeros(n, 0, trials, dtype=torch.float64)
    lay = _kernel_layout(feats)
    idx = torch.empty(n, k, dtype=torch.long)
    centers = torch.empty(n, k, int(lay["d_off"][-1]), dtype=feats.sq_norm.dtype)
    with _numba_chunks(1):
        _kernels().kmeans_pp_images(
            lay["acts_c"], lay["acts_t"], lay["a_off"], lay["d_off"], lay["p_off"], lay["sq_norm"],
            lay["y_off"], lay["y_tap"], lay["y_w"], lay["scale"], lay["ux_t"], lay["x_off"], lay["x_tap"],
            lay["x_w"], lay["ident"], first.numpy(), draws.contiguous().numpy(), idx.numpy(), centers.numpy())
    return idx


def _lloyd_images(feats, init_idx, max_iter, tol=1e-4):
    """:func:`_lloyd` for the implicit features on CPU: :func:`xai_robust._nas_kernels.lloyd_images`, one image
    per task (same iterations, stopping rule and exact low-resolution arithmetic, no per-iteration overhead)."""
    n, k = init_idx.shape
    H, W = feats.shape
    dtype = feats.sq_norm.dtype
    lay = _kernel_layout(feats)
    labels = torch.empty(n, H, W, dtype=torch.long)
    inertia = torch.empty(n, dtype=dtype)
    n_iter = torch.empty(n, dtype=torch.long)
    with _numba_chunks(1):  # images differ in their number of iterations: hand them out one by one
        _kernels().lloyd_images(
            lay["acts_c"], lay["acts_t"], lay["a_off"], lay["d_off"], lay["p_off"],
            feats.gather(init_idx).contiguous().numpy(), lay["sq_norm"],
            _tol_threshold(feats, tol).contiguous().numpy(), int(max_iter),
            lay["uy_t"], lay["y_off"], lay["y_tap"], lay["y_w"], lay["scale"], lay["ux_t"], lay["x_off"],
            lay["x_tap"], lay["x_w"], lay["ident"], labels.numpy(), inertia.numpy(), n_iter.numpy())
    return labels.reshape(n, H * W), inertia


def _numba_chunks(size):
    """Dynamic scheduling of the kernels' image loop in chunks of ``size``, with BLAS single-threaded inside it
    (the kernels' small products run on the kernels' own threads; no oversubscription on many-core machines)."""
    from contextlib import ExitStack

    import numba
    from threadpoolctl import threadpool_limits

    stack = ExitStack()
    stack.enter_context(numba.parallel_chunksize(size))
    stack.enter_context(threadpool_limits(1, user_api="blas"))
    return stack


def _tol_threshold(feats, tol):
    """scikit-learn's stopping threshold: ``tol`` × the mean per-feature variance of each image's pixels."""
    n, p = feats.sq_norm.shape
    mean = feats.cluster_sums(torch.zeros(n, p, dtype=torch.long, device=feats.sq_norm.device), 1) / p
    d = mean.shape[2]
    return tol * ((feats.sq_norm.mean(1) - (mean[:, 0] ** 2).sum(-1)).clamp_min(0) / d)


def _argmin_k(score: torch.Tensor):
    """(argmin, min) over the cluster axis 1 of (N, K, P); the first index on ties."""
    best, labels = score.min(1)
    return labels, best


def _check_features(features: torch.Tensor) -> None:
    """Per-pixel features for :func:`kmeans_pixels`: a non-empty, finite floating (N, D, H, W) tensor."""
    if features.dim() != 4:
        hint = "; add a batch dimension with features.unsqueeze(0) for one image" if features.dim() == 3 else ""
        raise ValueError(f"features must have shape (N, D, H, W), got {tuple(features.shape)}{hint}")
    if not features.is_floating_point():
        raise TypeError(f"features must be a floating tensor, got dtype {features.dtype}; use features.float()")
    if 0 in features.shape:
        raise ValueError(f"features is empty (shape {tuple(features.shape)}): pass at least one image, one "
                         "feature and one pixel")
    check_finite(features, "features")


def _check_init_pixels(init_pixels, n: int, k: int, p: int, device) -> torch.Tensor:
    """Flat pixel indices (N, K) in [0, P): the compiled kernels do not check bounds."""
    if isinstance(init_pixels, np.ndarray):
        init_pixels = torch.from_numpy(init_pixels)
    if not isinstance(init_pixels, torch.Tensor):
        init_pixels = torch.as_tensor(init_pixels)
    if init_pixels.is_floating_point() or init_pixels.dtype == torch.bool or init_pixels.is_complex():
        raise TypeError(f"init_pixels must hold integer pixel indices, got dtype {init_pixels.dtype}; "
                        "use init_pixels.long()")
    if tuple(init_pixels.shape) != (n, k):
        raise ValueError(f"init_pixels must have shape (N, K) = {(n, k)}, got {tuple(init_pixels.shape)}")
    lo, hi = int(init_pixels.min()), int(init_pixels.max())
    if lo < 0 or hi >= p:
        raise ValueError(f"init_pixels must be flat pixel indices in [0, {p}) (H * W), got values in [{lo}, {hi}]")
    return init_pixels.to(device).long()


def kmeans_pixels(features, n_clusters: int, *, seed: int = 0, n_init: int = 1, max_iter: int = 50, tol: float = 1e-4,
                  init_pixels: torch.Tensor | None = None, generator: torch.Generator | None = None):
    """Batched Lloyd k-means with k-means++ seeding, clustering the pixels of every image in parallel.

    Parameters
    ----------
    features : Tensor[N, D, H, W] or the implicit low-resolution features used by NAS
        Per-pixel features.
    n_clusters : int
        K.
    seed : int
        Seeds the k-means++ draws (ignored when ``generator`` is given).
    n_init : int
        Restarts; the one with the lowest inertia is kept per image.
    max_iter : int
        Maximum Lloyd iterations. Each image stops on its own, as if clustered alone: once its labels no longer
        change or, as in scikit-learn, once its centroids move by less than ``tol`` times its mean per-feature
        variance.
    tol : float
        Tolerance of that stopping rule (0: stop only when the labels are stable).
    init_pixels : LongTensor[N, K], optional
        Flat pixel indices of the initial centroids (skips k-means++; used to compare fast and direct paths).

    Returns
    -------
    labels : LongTensor[N, H, W]
    inertia : Tensor[N]
        Sum of squared distances to the assigned centroid.

    Notes
    -----
    The implicit NAS features on CPU run in compiled numba kernels (:mod:`xai_robust._nas_kernels`; the first
    call in a fresh environment compiles them, ~15–20 s per dtype on 2 cores, then they are cached on disk);
    materialised features and GPU tensors run the batched PyTorch path. Both give the same picks and labels.
    """
    if isinstance(features, torch.Tensor):
        _check_features(features)
        feats = _Dense(features)
    elif isinstance(features, (_Dense, _LowRes)):
        feats = features
    else:
        raise TypeError(f"features must be a float tensor of shape (N, D, H, W), got {type(features).__name__}")
    H, W = feats.shape
    p = H * W
    check_count(n_clusters, "n_clusters")
    if n_clusters > p:
        raise ValueError(f"n_clusters={n_clusters} is larger than the number of pixels {p}; lower n_clusters "
                         "or raise size")
    check_count(n_init, "n_init")
    check_count(max_iter, "max_iter")
    check_number(tol, "tol", low=0.0)
    if generator is None:
        generator = torch.Generator().manual_seed(check_count(seed, "seed", minimum=0))
    elif not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    n = feats.sq_norm.shape[0]
    if init_pixels is not None:
        init_pixels = _check_init_pixels(init_pixels, n, n_clusters, p, feats.sq_norm.device)
        labels, inertia = _lloyd(feats, init_pixels, max_iter, tol)
        return labels.reshape(n, H, W), inertia
    best_labels, best_inertia = None, None
    for _ in range(n_init):
        idx = _kmeans_pp_init(feats, n_clusters, generator)
        labels, inertia = _lloyd(feats, idx, max_iter, tol)
        if best_labels is None:
            best_labels, best_inertia = labels, inertia
        else:
            better = inertia < best_inertia
            best_labels = torch.where(better[:, None], labels, best_labels)
            best_inertia = torch.where(better, inertia, best_inertia)
    return best_labels.reshape(n, H, W), best_inertia


def _relabel(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Renumber clusters by first appearance in raster order (a canonical labelling of a partition)."""
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
        out.append(_relabel(labels, n_clusters))
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
