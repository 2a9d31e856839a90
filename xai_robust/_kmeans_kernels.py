"""Compiled CPU kernels (numba) of the batched pixel k-means (:mod:`xai_robust.kmeans`): k-means++ and Lloyd.

Both run over the implicit upsampled features ``x_p = concat_l s_{l,p} (U_l a_l)_p`` of
:class:`xai_robust.kmeans._LowRes` (NAS, Algorithm 1; chapter 07) in the exact low-resolution form (tested against
the direct computation and scikit-learn in ``tests/test_kmeans.py``), as does the kernel of the squared norms the
features' scales need. Every kernel loops over the images it is given and releases the GIL; :mod:`xai_robust.kmeans`
hands them one image at a time to a pool of ``torch.get_num_threads()`` Python threads. (numba's own parallel loops
start an OpenMP runtime next to PyTorch's; on a busy 2-core machine PyTorch's operations between the kernels then ran
up to 30× slower.) Per Lloyd iteration,
each output row's K scores ``‖μ_k‖² − 2 x_p·μ_k``, their argmin and the update of the per-row cluster sums of the
pixels that changed cluster happen in one pass that stays in cache. All loops are written out (no BLAS call, no
allocation per iteration): the products with the activations are dot products and AXPYs along the channels, the
upsampling along x is a dense product with a ``(w_l, W)`` matrix built once from the taps, the upsampling along y
(and its adjoint) reads the at most 4 taps of each output row.

Every kernel takes the same three **layout** arrays, built once per feature object
(:func:`xai_robust.kmeans._kernel_layout`), and two per-image arrays:

``off`` : (5, L + 1) int64
    Layer ``l`` spans ``[off[r, l], off[r, l + 1])`` of: ``r = D`` the feature channels ``c_l``, ``P`` the
    low-resolution pixels ``h_l w_l``, ``Y`` the rows ``h_l``, ``X`` the columns ``w_l`` and ``A`` the activation
    values ``h_l w_l c_l``.
``taps``, ``weights`` : (H + W, L, 4) int64 and float
    The (at most 4) interpolation taps of output row ``i`` (entry ``i``) and output column ``j`` (entry ``H + j``)
    for layer ``l``: local input row/column indices and their weights (unused taps: weight 0).
``acts`` : (N, A)
    Each layer's activations pixel-major (``h_l w_l × c_l``, channels contiguous) at ``off[A, l]``.
``pixel`` : (N, 1 + L, H, W)
    ``pixel[n, 0]`` the squared feature norms ``‖x_p‖²``, ``pixel[n, 1 + l]`` the per-pixel scales ``s_{l,p}``.

Scratch buffers are small and padded per layer to the largest ``c_l``, ``h_l``, ``w_l`` or ``h_l w_l`` (the padding
stays zero), so that every inner loop runs over the last axis of a C-contiguous array with loop-invariant leading
indices (LLVM vectorises those; a computed flat index ``base + j`` costs a wrap-around check per element):

* centroids ``mu`` (L, K, c_max): layer l's block of each centroid;
* ``proj`` (L, K, hw_max): ``−2 μ_l a_l``; ``q`` (L, K, h_max, W): its x-upsampling;
* ``sums`` (L, H, K · w_max): the per-row cluster sums ``Σ_j s_l[i, j] U_x[j, :]``;
* ``low`` (L, h_max, K · w_max): their y-adjoint, the low-resolution cluster masks.

The cluster sums (``sums``, ``low`` and the new centroids) accumulate in float64 whatever the input dtype: they add up
thousands of pixels, and float32 sums there moved a few labels of the float32 runs away from the float64 solution
(seen on chapter 07's model); every per-pixel quantity stays in the input dtype.
"""
from __future__ import annotations

import numba
import numpy as np

# fastmath: FMA contraction and re-associated sums (vectorised reductions); no assumptions about NaN or infinity.
# The results agree with the PyTorch path up to float rounding (identical labels in the float64 tests).
_JIT = dict(cache=True, fastmath={"contract", "reassoc"})

# the rows of ``off``
D, P, Y, X, A = 0, 1, 2, 3, 4
N_TAPS = 4



@numba.njit(**_JIT)
def _largest(off):
    """The largest ``c_l``, ``h_l w_l``, ``h_l`` and ``w_l`` over the layers (the padded buffer sizes)."""
    L = off.shape[1] - 1
    c_max = hw_max = h_max = w_max = 1
    for li in range(L):
        c_max = max(c_max, off[D, li + 1] - off[D, li])
        hw_max = max(hw_max, off[P, li + 1] - off[P, li])
        h_max = max(h_max, off[Y, li + 1] - off[Y, li])
        w_max = max(w_max, off[X, li + 1] - off[X, li])
    return c_max, hw_max, h_max, w_max


@numba.njit(**_JIT)
def _x_matrix(off, taps, weights, W, w_max):
    """The layers' x-upsampling matrices, transposed: (L, w_max, W) with ``U_x[j, x]`` at ``[l, x, j]``, rebuilt
    from the column taps."""
    L = off.shape[1] - 1
    H = taps.shape[0] - W
    ux = np.zeros((L, w_max, W), dtype=weights.dtype)
    for li in range(L):
        for j in range(W):
            for t in range(N_TAPS):
                ux[li, taps[H + j, li, t], j] += weights[H + j, li, t]
    return ux


@numba.njit(**_JIT)
def _layer_acts(acts_n, off, li):
    """Layer l's activations of one image as a (h_l w_l, c_l) view."""
    return acts_n[off[A, li]:off[A, li + 1]].reshape(off[P, li + 1] - off[P, li], off[D, li + 1] - off[D, li])


@numba.njit(**_JIT)
def _project(mu, acts_n, off, ux, mu_sq, proj, q):
    """Centroids ``mu`` (L, K, c_max) -> ``‖μ_k‖²`` (K,), ``proj_l = −2 μ_l a_l`` (L, K, hw_max) and its
    x-upsampling ``q_l = proj_l U_xᵀ`` (L, K, h_max, W)."""
    L, K = mu.shape[0], mu.shape[1]
    W = ux.shape[2]
    zero = proj[0, 0, 0] * 0
    for k in range(K):
        s = zero
        for li in range(L):
            for c in range(off[D, li + 1] - off[D, li]):
                s += mu[li, k, c] * mu[li, k, c]
        mu_sq[k] = s
    for li in range(L):
        al = _layer_acts(acts_n, off, li)
        nc = al.shape[1]
        h = off[Y, li + 1] - off[Y, li]
        w = off[X, li + 1] - off[X, li]
        for p in range(al.shape[0]):  # dot products along the (contiguous) channels
            for k in range(K):
                s = zero
                for c in range(nc):
                    s += mu[li, k, c] * al[p, c]
                proj[li, k, p] = -2 * s
        for k in range(K):
            for y in range(h):
                for j in range(W):
                    q[li, k, y, j] = zero
                for x in range(w):
                    m = proj[li, k, y * w + x]
                    for j in range(W):
                        q[li, k, y, j] += m * ux[li, x, j]


@numba.njit(**_JIT)
def _row_scores(i, q, mu_sq, off, taps, weights, pixel_n, score):
    """The scores ``‖μ_k‖² − 2 x_p·μ_k`` (K, W) of output row i: per layer, the 4 y-taps of the row and the
    per-pixel scale, in one pass over the row per cluster."""
    K, W = score.shape
    L = off.shape[1] - 1
    for k in range(K):
        m = mu_sq[k]
        for j in range(W):
            score[k, j] = m
    for li in range(L):
        t0, t1, t2, t3 = taps[i, li, 0], taps[i, li, 1], taps[i, li, 2], taps[i, li, 3]
        w0, w1, w2, w3 = weights[i, li, 0], weights[i, li, 1], weights[i, li, 2], weights[i, li, 3]
        for k in range(K):
            for j in range(W):
                score[k, j] += pixel_n[1 + li, i, j] * (w0 * q[li, k, t0, j] + w1 * q[li, k, t1, j]
                                                        + w2 * q[li, k, t2, j] + w3 * q[li, k, t3, j])


@numba.njit(**_JIT)
def _pixel_feature(pix, acts_n, off, taps, weights, pixel_n, out):
    """The feature ``x_p = concat_l s_{l,p} (U_l a_l)_p`` of output pixel ``pix`` (flat index), from its
    interpolation taps, into ``out`` (L, c_max)."""
    H, W = pixel_n.shape[1], pixel_n.shape[2]
    L = off.shape[1] - 1
    i = pix // W
    j = pix - i * W
    out[:, :] = 0
    for li in range(L):
        al = _layer_acts(acts_n, off, li)
        w = off[X, li + 1] - off[X, li]
        sl = pixel_n[1 + li, i, j]
        for ty in range(N_TAPS):
            for tx in range(N_TAPS):
                g = sl * weights[i, li, ty] * weights[H + j, li, tx]
                if g != 0:
                    p = taps[i, li, ty] * w + taps[H + j, li, tx]
                    for c in range(al.shape[1]):
                        out[li, c] += g * al[p, c]


@numba.njit(nogil=True, **_JIT)
def lloyd_images(off, taps, weights, acts, pixel, centers0, threshold, max_iter):  # pragma: no cover - compiled
    """Lloyd's k-means on the implicit features, each image until its own stop (:func:`xai_robust.kmeans._lloyd` in
    the exact low-resolution form).

    Per iteration:

    1. ``proj_l = −2 μ_l a_l`` and its x-upsampling ``q_l = proj_l U_xᵀ`` (:func:`_project`);
    2. for every output row i: the scores ``‖μ_k‖² + Σ_l s_l[i, :] ⊙ Σ_y U_y[i, y] q_l[k, y, :]``, their argmin
       (first index on ties) and, for the pixels that changed cluster, the per-row cluster sums
       ``Σ_j s_l[i, j] U_x[j, :]`` and the counts (updated, not recomputed);
    3. scikit-learn's stopping rule: no label changed, or the previous update moved the centroids by at most
       ``threshold``, or ``max_iter`` updates; the inertia is ``Σ_p max(0, ‖x_p‖² + best score_p)``;
    4. the adjoint of the y-upsampling turns the row sums into low-resolution cluster masks, AXPYs with the
       activations give the cluster sums, and the centroids become the means (empty clusters keep theirs).

    Parameters
    ----------
    off, taps, weights, acts, pixel
        The layout and per-image arrays (module docstring).
    centers0 : (N, K, D)
        Initial centroids.
    threshold : (N,)
        The stopping threshold on the squared centroid shift.
    max_iter : int
        Maximum number of centroid updates.

    Returns
    -------
    labels : (N, H, W) int64
    inertia : (N,)
    n_iter : (N,) int64
        The number of assignment passes.
    """
    N, K = centers0.shape[0], centers0.shape[1]
    H, W = pixel.shape[2], pixel.shape[3]
    L = off.shape[1] - 1
    dt = centers0.dtype
    c_max, hw_max, h_max, w_max = _largest(off)
    ux = _x_matrix(off, taps, weights, W, w_max)
    kw = K * w_max
    labels = np.empty((N, H, W), dtype=np.int64)
    inertia = np.empty(N, dtype=dt)
    n_iter = np.empty(N, dtype=np.int64)
    for n in range(N):
        zero = centers0[n, 0, 0] * 0
        mu = np.zeros((L, K, c_max), dtype=dt)
        for li in range(L):
            for k in range(K):
                for c in range(off[D, li + 1] - off[D, li]):
                    mu[li, k, c] = centers0[n, k, off[D, li] + c]
        new_mu = np.zeros((L, K, c_max), dtype=np.float64)
        mu_sq = np.empty(K, dtype=dt)
        proj = np.zeros((L, K, hw_max), dtype=dt)
        q = np.zeros((L, K, h_max, W), dtype=dt)
        sums = np.zeros((L, H, kw), dtype=np.float64)
        low = np.zeros((L, h_max, kw), dtype=np.float64)
        counts = np.zeros(K, dtype=dt)
        score = np.empty((K, W), dtype=dt)
        kbest = np.empty(W, dtype=np.int32)  # int32 selects vectorise with the float32 scores
        lab = np.full((H, W), -1, dtype=np.int32)
        best = np.empty((H, W), dtype=dt)
        acts_n = acts[n]
        pixel_n = pixel[n]
        finishing = False
        for it in range(max_iter + 1):
            # 1. the centroids projected on the activations, then upsampled along x
            _project(mu, acts_n, off, ux, mu_sq, proj, q)
            # 2. assignment, row by row
            n_changed = 0
            for i in range(H):
                _row_scores(i, q, mu_sq, off, taps, weights, pixel_n, score)
                for j in range(W):
                    best[i, j] = score[0, j]
                    kbest[j] = 0
                for k in range(1, K):  # branch-free (selects): the first index wins ties
                    for j in range(W):
                        s = score[k, j]
                        b = best[i, j]
                        better = s < b
                        best[i, j] = s if better else b
                        kbest[j] = k if better else kbest[j]
                row_changed = 0
                for j in range(W):
                    row_changed += kbest[j] != lab[i, j]
                if row_changed == 0:
                    continue
                n_changed += row_changed
                for j in range(W):
                    kb = kbest[j]
                    old = lab[i, j]
                    if kb != old:
                        lab[i, j] = kb
                        counts[kb] += 1
                        if old >= 0:
                            counts[old] -= 1
                        for li in range(L):
                            sl = pixel_n[1 + li, i, j]
                            for t in range(N_TAPS):
                                g = sl * weights[H + j, li, t]
                                if g != 0:
                                    c = taps[H + j, li, t]
                                    sums[li, i, kb * w_max + c] += g
                                    if old >= 0:
                                        sums[li, i, old * w_max + c] -= g
            # 3. stopping rule
            if (it > 0 and (finishing or n_changed == 0)) or it == max_iter:
                total = 0.0
                for i in range(H):
                    for j in range(W):
                        e = pixel_n[0, i, j] + best[i, j]
                        if e > 0:
                            total += e
                inertia[n] = total
                n_iter[n] = it + 1
                labels[n] = lab
                break
            # 4. centroid update: adjoint of the y-upsampling (low-resolution masks), then the cluster sums
            for li in range(L):
                al = _layer_acts(acts_n, off, li)
                nc = al.shape[1]
                w = off[X, li + 1] - off[X, li]
                for y in range(h_max):
                    for m in range(kw):
                        low[li, y, m] = zero
                for i in range(H):
                    for t in range(N_TAPS):
                        wt = weights[i, li, t]
                        if wt != 0:
                            y = taps[i, li, t]
                            for m in range(kw):
                                low[li, y, m] += wt * sums[li, i, m]
                for k in range(K):
                    for c in range(nc):
                        new_mu[li, k, c] = zero
                for p in range(al.shape[0]):
                    y = p // w
                    x = p - y * w
                    for k in range(K):
                        m = low[li, y, k * w_max + x]
                        if m != 0:
                            for c in range(nc):
                                new_mu[li, k, c] += m * al[p, c]
            shift = 0.0
            for li in range(L):
                for k in range(K):
                    for c in range(off[D, li + 1] - off[D, li]):
                        if counts[k] > 0:
                            new_mu[li, k, c] /= counts[k]
                        else:
                            new_mu[li, k, c] = mu[li, k, c]
                        shift += (new_mu[li, k, c] - mu[li, k, c]) ** 2
                        mu[li, k, c] = new_mu[li, k, c]
            finishing = shift <= threshold[n]
    return labels, inertia, n_iter


@numba.njit(nogil=True, **_JIT)
def kmeans_pp_images(off, taps, weights, acts, pixel, first, draws):  # pragma: no cover - compiled
    """Greedy k-means++ seeding (:func:`xai_robust.kmeans._kmeans_pp_init`) on the implicit features.

    Parameters
    ----------
    off, taps, weights, acts, pixel
        The layout and per-image arrays (module docstring).
    first : (N,) int64
        The first centre's pixel.
    draws : (N, K − 1, T) float64
        The uniform draws of each round's T candidates (inverse-CDF sampling ∝ the squared distance to the
        nearest chosen centre, uniform where all distances are 0). Each round keeps the candidate that lowers the
        potential ``Σ_p min(d²_p, ‖x_p − c‖²)`` most (the first on ties).

    Returns
    -------
    idx : (N, K) int64
        The chosen pixels (flat indices).
    centers : (N, K, D)
        Their features.
    """
    N = first.shape[0]
    K = draws.shape[1] + 1
    T = draws.shape[2]
    H, W = pixel.shape[2], pixel.shape[3]
    L = off.shape[1] - 1
    n_pix = H * W
    dt = pixel.dtype
    c_max, hw_max, h_max, w_max = _largest(off)
    ux = _x_matrix(off, taps, weights, W, w_max)
    out_idx = np.empty((N, K), dtype=np.int64)
    out_centers = np.empty((N, K, off[D, L]), dtype=dt)
    for n in range(N):
        cand = np.zeros((L, T, c_max), dtype=dt)  # the candidates' features, layer-major (as Lloyd's centroids)
        cand_idx = np.zeros(T, dtype=np.int64)
        mu_sq = np.empty(T, dtype=dt)
        proj = np.zeros((L, T, hw_max), dtype=dt)
        q = np.zeros((L, T, h_max, W), dtype=dt)
        feature = np.zeros((L, c_max), dtype=dt)
        score = np.empty((T, W), dtype=dt)
        dist = np.empty((T, n_pix), dtype=dt)
        d2 = np.empty(n_pix, dtype=dt)
        potential = np.empty(T, dtype=np.float64)
        acts_n = acts[n]
        pixel_n = pixel[n]
        zero = pixel_n[0, 0, 0] * 0
        for r in range(K):
            if r == 0:
                n_cand = 1
                cand_idx[0] = first[n]
            else:
                n_cand = T
                cdf = np.cumsum(d2.astype(np.float64))
                total = cdf[n_pix - 1]
                for t in range(T):
                    u = draws[n, r - 1, t]
                    if total > 0:
                        cand_idx[t] = min(np.searchsorted(cdf, u * total, side="right"), n_pix - 1)
                    else:
                        cand_idx[t] = min(int(u * n_pix), n_pix - 1)
            for t in range(n_cand):
                _pixel_feature(cand_idx[t], acts_n, off, taps, weights, pixel_n, feature)
                for li in range(L):
                    for c in range(c_max):
                        cand[li, t, c] = feature[li, c]
            _project(cand, acts_n, off, ux, mu_sq, proj, q)  # all T slots (in round 0 only the first is read)
            potential[:] = 0.0
            for i in range(H):
                _row_scores(i, q, mu_sq, off, taps, weights, pixel_n, score)
                for t in range(n_cand):
                    tot = 0.0
                    for j in range(W):
                        e = pixel_n[0, i, j] + score[t, j]
                        if e < 0:
                            e = zero
                        if r > 0 and d2[i * W + j] < e:
                            e = d2[i * W + j]
                        dist[t, i * W + j] = e
                        tot += e
                    potential[t] += tot
            best = 0
            for t in range(1, n_cand):
                if potential[t] < potential[best]:
                    best = t
            d2[:] = dist[best]
            out_idx[n, r] = cand_idx[best]
            for li in range(L):
                for c in range(off[D, li + 1] - off[D, li]):
                    out_centers[n, r, off[D, li] + c] = cand[li, best, c]
    return out_idx, out_centers


@numba.njit(**_JIT)
def _dense_taps(taps, weights, first, n_out, li, n_in):
    """Layer l's interpolation matrix ``U`` (n_out, n_in) from the taps of rows ``first .. first + n_out``, and its
    bandwidth (the largest distance between two input indices one output row mixes)."""
    u = np.zeros((n_out, n_in), dtype=weights.dtype)
    band = 0
    for o in range(n_out):
        lo, hi = n_in, -1
        for t in range(N_TAPS):
            wt = weights[first + o, li, t]
            if wt != 0:
                c = taps[first + o, li, t]
                u[o, c] += wt
                lo = min(lo, c)
                hi = max(hi, c)
        band = max(band, hi - lo)
    return u, band


@numba.njit(nogil=True, **_JIT)
def upsampled_sq_norms(off, taps, weights, acts, W):  # pragma: no cover - compiled
    """Exact ``‖(U_l a_l)_p‖²`` (N, L, H, W) for every layer and output pixel, without materialising ``U_l a_l``.

    As :func:`xai_robust.kmeans._upsampled_sq_norms`: ``Σ_{δy,δx} Σ_{y,x} A_δy[i,y] P_δ[y,x] B_δx[j,x]`` with the
    local Gram terms ``P_δ[y,x] = ⟨a[y,x], a[y+δy,x+δx]⟩`` (dot products along the contiguous channels; the terms
    of ``−δ`` mirrored from those of ``δ``), ``A_δy[i,y] = U_y[i,y] U_y[i,y+δy]`` and the same for x. Arguments as
    in the module docstring (``pixel`` is what this computes).
    """
    N = acts.shape[0]
    L = off.shape[1] - 1
    H = taps.shape[0] - W
    out = np.empty((N, L, H, W), dtype=acts.dtype)
    for li in range(L):
        h = off[Y, li + 1] - off[Y, li]
        w = off[X, li + 1] - off[X, li]
        uy, by = _dense_taps(taps, weights, 0, H, li, h)
        ux, bx = _dense_taps(taps, weights, H, W, li, w)
        nd, ne = 2 * by + 1, 2 * bx + 1
        a_t = np.zeros((nd, h, H), dtype=acts.dtype)  # A_δy transposed: [δy + by, y, i]
        for d in range(nd):
            for y in range(max(0, by - d), min(h, h + by - d)):
                for i in range(H):
                    a_t[d, y, i] = uy[i, y] * uy[i, y + d - by]
        b_t = np.zeros((ne, w, W), dtype=acts.dtype)  # B_δx transposed: [δx + bx, x, j]
        for e in range(ne):
            for x in range(max(0, bx - e), min(w, w + bx - e)):
                for j in range(W):
                    b_t[e, x, j] = ux[j, x] * ux[j, x + e - bx]
        for n in range(N):
            al = _layer_acts(acts[n], off, li)
            zero = al[0, 0] * 0
            gram = np.zeros((nd, ne, h, w), dtype=acts.dtype)
            for d in range(by, nd):  # δ ≥ (0, 0) in lexicographic order
                for e in range(bx if d == by else 0, ne):
                    for y in range(0, min(h, h + by - d)):
                        for x in range(max(0, bx - e), min(w, w + bx - e)):
                            p2 = (y + d - by) * w + x + e - bx
                            s = zero
                            for c in range(al.shape[1]):
                                s += al[y * w + x, c] * al[p2, c]
                            gram[d, e, y, x] = s
            for d in range(0, by + 1):  # P_{−δ}[y, x] = P_δ[y − δy, x − δx]
                for e in range(0, ne if d < by else bx):
                    for y in range(max(0, by - d), h):
                        for x in range(max(0, bx - e), min(w, w + bx - e)):
                            gram[d, e, y, x] = gram[nd - 1 - d, ne - 1 - e, y + d - by, x + e - bx]
            r = np.zeros((nd, h, W), dtype=acts.dtype)  # Σ_x P_δ[y, x] B_δx[j, x]
            for d in range(nd):
                for y in range(h):
                    for e in range(ne):
                        for x in range(w):
                            m = gram[d, e, y, x]
                            if m != 0:
                                for j in range(W):
                                    r[d, y, j] += m * b_t[e, x, j]
            o = out[n, li]
            for i in range(H):
                for j in range(W):
                    o[i, j] = zero
                for d in range(nd):
                    for y in range(h):
                        m = a_t[d, y, i]
                        if m != 0:
                            for j in range(W):
                                o[i, j] += m * r[d, y, j]
                for j in range(W):
                    if o[i, j] < 0:
                        o[i, j] = zero
    return out
