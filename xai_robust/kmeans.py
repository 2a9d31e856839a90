"""Batched k-means over the pixels of images: the clustering engine of Neuro-Activated Superpixels (NAS).

NAS (Boubekki, Fadel & Mair, *Leveraging Activations for Superpixel Explanations*, Algorithm 1, line 15; chapter 07)
clusters every image's pixels with k-means. :func:`kmeans_pixels` runs k-means++ seeding (Arthur & Vassilvitskii,
2007, greedy as scikit-learn's default) and Lloyd's iterations for a whole batch at once, each image stopping on its
own as if clustered alone (scikit-learn's rule), over one of two feature representations:

* :class:`_Dense`: materialised per-pixel features ``X`` (N, P, D), the direct computation;
* :class:`_LowRes`: the implicit features ``x_p = concat_l s_{l,p} (U_l a_l)_p`` of NAS, with ``U_l`` the (linear,
  separable) upsampling of the low-resolution maps ``a_l`` to the output size and ``s_{l,p}`` a per-pixel scale
  (``1/((1+c)‖(U a)_p‖)`` for NAS's L2 normalisation and channel weight). They are never materialised:

  - the distance term ``x_p·μ = s_p (U (a μ))_p``: project the *low-resolution* activations on the centroid and
    upsample the K projection maps (K channels instead of c);
  - the centroid ``μ_k = Σ_{p∈k} x_p / n_k = aᵀ Uᵀ (s ⊙ 1_k) / n_k``: apply the adjoint of the upsampling to the K
    weighted cluster masks, then one (hw × c) product;
  - the norms ``‖(U a)_p‖²`` (needed for ``s_p``) come from the local Gram terms ``⟨a_q, a_{q+δ}⟩`` for the few
    offsets δ inside the interpolation kernel's support (|δ| ≤ 3 for bicubic).

  All three are exact re-orderings of the direct computation (tested in ``tests/test_kmeans.py``), so k-means from
  the same initial pixels returns the same labels.

On CPU the norms, the seeding and the Lloyd iterations over the implicit features run in compiled kernels
(:mod:`xai_robust._kmeans_kernels`, numba), one image at a time on a pool of ``torch.get_num_threads()`` threads
(:func:`_per_image`): per output row the K scores (4 y-taps and the per-pixel scale per layer), their argmin and the
cluster sums of the pixels that changed cluster are one pass that stays in cache. The kernels read three layout
arrays and two per-image arrays, built once per feature object (:func:`_kernel_layout`). The batched PyTorch path
(GPU, materialised features, or no numba) makes the same picks and labels (tested).

(ExMap's clustering of one vector per sample is :func:`xai_robust.cluster.kmeans`, scikit-learn's k-means.)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_count, check_finite, check_number

__all__ = ["kmeans_pixels", "upsample_matrix"]

_UPSAMPLE = ("bicubic", "bilinear", "nearest")


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
# feature representations: direct (materialised) and implicit (low resolution, exact)
# ----------------------------------------------------------------------------------------------------
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
        mats = []
        for a in acts:
            _, _, h, w = a.shape
            uy = upsample_matrix(h, H, upsample, dtype=a.dtype, device=a.device)
            ux = upsample_matrix(w, W, upsample, dtype=a.dtype, device=a.device)
            if h == H and w == W and torch.equal(uy, torch.eye(H, dtype=a.dtype, device=a.device)) \
                    and torch.equal(ux, torch.eye(W, dtype=a.dtype, device=a.device)):
                uy = ux = None  # same resolution: the upsampling is the identity
            mats.append((uy, ux))
        # on CPU the compiled kernels compute the norms and later run k-means: their layout is built once, here
        geometry = _kernel_geometry(acts, mats, self.shape) if acts[0].device.type == "cpu" else None
        norms = None if geometry is None else torch.from_numpy(_upsampled_sq_norms_kernel(geometry, W))
        self.blocks = []
        sq = 0
        for li, (a, (uy, ux)) in enumerate(zip(acts, mats, strict=True)):
            wc = 1.0 / (1 + a.shape[1]) if weight_by_channels else 1.0
            if norms is not None:
                n2 = norms[:, li]
            elif uy is None:
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
        if geometry is not None:
            self._layout = geometry + (_pixel_array(self),)

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
    """The compiled CPU kernels (:mod:`xai_robust._kmeans_kernels`), or None where numba is missing."""
    try:
        from . import _kmeans_kernels
    except ImportError:  # numba is a dependency; without it the PyTorch path runs (slower, same result)
        return None
    return _kmeans_kernels


def _use_kernels(feats) -> bool:
    """Whether the CPU kernels run: implicit features on CPU, numba importable, a supported upsampling."""
    return (isinstance(feats, _LowRes) and feats.sq_norm.device.type == "cpu" and _kernels() is not None
            and _kernel_layout(feats) is not None)


def _kernel_geometry(acts, mats, size) -> tuple | None:
    """The image-independent layout arrays of :mod:`xai_robust._kmeans_kernels` and the activations pixel-major:
    ``(off, taps, weights, acts)``; None where numba is missing or an upsampling has more than the 4 taps per output
    row or column that the kernels handle (PyTorch's interpolation modes never do; the PyTorch path then runs).

    ``mats`` holds each layer's ``(U_y, U_x)``, None for the identity.
    """
    dtype = acts[0].dtype
    kernels = _kernels() if dtype in (torch.float32, torch.float64) else None  # numba has no half precision
    if kernels is None:
        return None
    H, W = size
    uys = [torch.eye(H, dtype=dtype) if uy is None else uy for uy, _ in mats]
    uxs = [torch.eye(W, dtype=dtype) if ux is None else ux for _, ux in mats]
    taps = [_taps(u, kernels.N_TAPS) for u in uys + uxs]  # the (at most 4) taps of each output row / column, per layer
    if any(t is None for t in taps):
        return None
    n_layers = len(acts)

    def stacked(part):  # (H + W, L, 4): the rows' taps, then the columns'
        return torch.cat([torch.stack([t[part] for t in taps[:n_layers]], 1),
                          torch.stack([t[part] for t in taps[n_layers:]], 1)]).contiguous().numpy()

    off = np.zeros((5, n_layers + 1), dtype=np.int64)  # rows D, P, Y, X, A of the kernels
    for li, a in enumerate(acts):
        c, h, w = a.shape[1:]
        off[:, li + 1] = off[:, li] + (c, h * w, h, w, c * h * w)
    pixel_major = torch.cat([a.flatten(2).transpose(1, 2).flatten(1) for a in acts], 1).contiguous().numpy()
    return off, stacked(0), stacked(1), pixel_major


def _upsampled_sq_norms_kernel(geometry, W) -> np.ndarray:
    """:func:`xai_robust._kmeans_kernels.upsampled_sq_norms` (N, L, H, W), image by image on the thread pool."""
    off, taps, weights, acts = geometry
    kernel = _kernels().upsampled_sq_norms
    return _per_image(acts.shape[0], lambda i: (kernel(off, taps, weights, acts[i:i + 1], W),))[0]


def _pixel_array(feats) -> np.ndarray:
    """The kernels' per-pixel array (N, 1 + L, H, W): ``‖x_p‖²``, then each layer's scale ``s_{l,p}``."""
    H, W = feats.shape
    return torch.cat([feats.sq_norm.reshape(-1, 1, H, W), torch.stack([s for _, _, _, s in feats.blocks], 1)],
                     1).contiguous().numpy()


def _kernel_layout(feats) -> tuple | None:
    """The arrays the CPU kernels of :mod:`xai_robust._kmeans_kernels` read, ``(off, taps, weights, acts, pixel)``
    (that module's docstring), built once per feature object; None where the kernels cannot run it
    (:func:`_kernel_geometry`)."""
    if not hasattr(feats, "_layout"):
        geometry = _kernel_geometry([a for a, _, _, _ in feats.blocks], [(uy, ux) for _, uy, ux, _ in feats.blocks],
                                    feats.shape)
        feats._layout = None if geometry is None else geometry + (_pixel_array(feats),)
    return feats._layout


def _kmeans_pp_images(feats, k, generator):
    """:func:`_kmeans_pp_init` for the implicit features on CPU (:func:`xai_robust._kmeans_kernels.kmeans_pp_images`),
    with the same random draws in the same order."""
    n, p = feats.sq_norm.shape
    trials = 2 + int(np.log(k))
    first = torch.randint(p, (n, 1), generator=generator)[:, 0].contiguous()
    draws = torch.stack([torch.rand(n, trials, generator=generator, dtype=torch.float64) for _ in range(k - 1)], 1) \
        if k > 1 else torch.zeros(n, 0, trials, dtype=torch.float64)
    off, taps, weights, acts, pixel = _kernel_layout(feats)
    first, draws = first.numpy(), draws.contiguous().numpy()
    kernel = _kernels().kmeans_pp_images
    idx, _ = _per_image(n, lambda i: kernel(off, taps, weights, acts[i:i + 1], pixel[i:i + 1], first[i:i + 1],
                                            draws[i:i + 1]))
    return torch.from_numpy(idx)


def _lloyd_images(feats, init_idx, max_iter, tol=1e-4):
    """:func:`_lloyd` for the implicit features on CPU: :func:`xai_robust._kmeans_kernels.lloyd_images`, one image
    per task (same iterations, stopping rule and exact low-resolution arithmetic, no per-iteration overhead)."""
    n = init_idx.shape[0]
    H, W = feats.shape
    off, taps, weights, acts, pixel = _kernel_layout(feats)
    centers = feats.gather(init_idx).contiguous().numpy()
    threshold = _tol_threshold(feats, tol).contiguous().numpy()
    kernel = _kernels().lloyd_images
    labels, inertia, _ = _per_image(n, lambda i: kernel(off, taps, weights, acts[i:i + 1], pixel[i:i + 1],
                                                        centers[i:i + 1], threshold[i:i + 1], int(max_iter)))
    return torch.from_numpy(labels).reshape(n, H * W), torch.from_numpy(inertia)


_POOL: list = []  # [ThreadPoolExecutor] once started


def _per_image(n: int, task):
    """``task(i)`` for every image ``i < n`` -- a compiled kernel on image i, returning arrays with a leading axis of
    1 -- run on ``torch.get_num_threads()`` Python threads (the kernels release the GIL), one image at a time (images
    differ in their number of iterations); the outputs concatenated along that axis."""
    workers = max(1, min(torch.get_num_threads(), n))
    if workers == 1:
        outs = [task(i) for i in range(n)]
    else:
        from concurrent.futures import ThreadPoolExecutor

        if not _POOL or _POOL[0]._max_workers != workers:
            if _POOL:
                _POOL.pop().shutdown(wait=False)
            _POOL.append(ThreadPoolExecutor(workers, thread_name_prefix="xai_robust-kmeans"))
        outs = list(_POOL[0].map(task, range(n)))
    return tuple(np.concatenate(parts) for parts in zip(*outs, strict=True))


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


def _check_pixel_features(features: torch.Tensor) -> None:
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
    The implicit NAS features on CPU run in compiled numba kernels (:mod:`xai_robust._kmeans_kernels`; the first
    call in a fresh environment compiles them, ~30 s per dtype on 2 cores, then they are cached on disk);
    materialised features and GPU tensors run the batched PyTorch path. Both give the same picks and labels.
    """
    if isinstance(features, torch.Tensor):
        _check_pixel_features(features)
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

