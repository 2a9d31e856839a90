"""Compiled CPU kernels (numba) of the NAS k-means: k-means++ seeding and Lloyd's iterations (:mod:`xai_robust.nas`).

Both run over the implicit low-resolution features of NAS (chapter 07), one image per task. Per Lloyd
iteration, each output row's K scores ``‖μ_k‖² − 2 x_p·μ_k``, their argmin and the update of the per-row
cluster sums for the pixels that changed cluster happen in one pass that stays in cache; in PyTorch the
same step takes a dozen full-resolution passes and ~30 small operations per iteration. The arithmetic is
the exact low-resolution form of :class:`xai_robust.nas._LowRes` (tested against the direct computation in
``tests/test_nas.py``). The products with the activations and the upsampling matrices are BLAS calls on
contiguous layer-major blocks; the per-pixel loops run over 1-D rows, which LLVM vectorises.
"""
from __future__ import annotations

import numba
import numpy as np

# fastmath: FMA contraction and re-associated sums (vectorised reductions); no assumptions about NaN or infinity.
# The results agree with the PyTorch path up to float rounding (identical labels in the float64 tests).
_JIT = dict(cache=True, fastmath={"contract", "reassoc"})

# Buffers are flat and layer-major, so that each layer's block is one contiguous matrix:
#   proj, low  (K · P):      layer l's (K, h_l w_l) block at K · p_off[l]
#   q          (K · Y · W):  layer l's (K · h_l, W) block at K · y_off[l] · W (row k · h_l + y: q_l[k, y, :])
#   row_sums   (K · H · C):  layer l's (K, H, w_l) block at K · H · x_off[l]


@numba.njit(**_JIT)
def _project(mu, acts_c, a_off, d_off, p_off, y_off, x_off, ident, ux_t, mu_sq, proj, q):
    """Centroids (K, D) -> ``‖μ_k‖²`` (K,), ``proj_l = −2 μ_l a_l`` and its x-upsampling ``q_l = proj_l U_xᵀ``.

    ``acts_c`` holds each layer's activations channel-major (c_l × h_l w_l) at ``a_off[li]``; a layer with
    ``ident[li]`` is at the output resolution (no upsampling)."""
    K = mu.shape[0]
    L = x_off.shape[0] - 1
    W = ux_t.shape[1]
    for k in range(K):
        s = mu[k, 0] * 0
        for d in range(mu.shape[1]):
            s += mu[k, d] * mu[k, d]
        mu_sq[k] = s
    for li in range(L):
        nc = d_off[li + 1] - d_off[li]
        hw = p_off[li + 1] - p_off[li]
        h = y_off[li + 1] - y_off[li]
        w = x_off[li + 1] - x_off[li]
        pl = proj[K * p_off[li]:K * p_off[li + 1]].reshape(K, hw)
        m = np.ascontiguousarray(mu[:, d_off[li]:d_off[li + 1]]) * -2
        np.dot(m, acts_c[a_off[li]:a_off[li] + nc * hw].reshape(nc, hw), pl)
        ql = q[K * y_off[li] * W:K * y_off[li + 1] * W].reshape(K * h, W)
        if ident[li]:
            ql[:, :] = pl.reshape(K * h, W)
        else:
            np.dot(pl.reshape(K * h, w), ux_t[x_off[li]:x_off[li + 1]], ql)


@numba.njit(**_JIT)
def _row_scores(i, q, mu_sq, y_tap, y_w, y_off, scale_n, score):
    """The scores ``‖μ_k‖² − 2 x_p·μ_k`` (K, W) of output row i: per layer, the 4 y-upsampling taps of the row
    (``y_tap`` local row indices and ``y_w`` weights (H, L, 4); unused taps have weight 0) and the per-pixel
    scale, in one pass over the row."""
    K = score.shape[0]
    W = score.shape[1]
    L = y_tap.shape[1]
    for k in range(K):
        sr = score[k]
        sr[:] = mu_sq[k]
        for li in range(L):
            h = y_off[li + 1] - y_off[li]
            base = K * y_off[li] * W + k * h * W
            t0, t1, t2, t3 = y_tap[i, li, 0], y_tap[i, li, 1], y_tap[i, li, 2], y_tap[i, li, 3]
            q0 = q[base + t0 * W:base + t0 * W + W]
            q1 = q[base + t1 * W:base + t1 * W + W]
            q2 = q[base + t2 * W:base + t2 * W + W]
            q3 = q[base + t3 * W:base + t3 * W + W]
            w0, w1, w2, w3 = y_w[i, li, 0], y_w[i, li, 1], y_w[i, li, 2], y_w[i, li, 3]
            sc = scale_n[li, i]
            for j in range(W):
                sr[j] += sc[j] * (w0 * q0[j] + w1 * q1[j] + w2 * q2[j] + w3 * q3[j])


@numba.njit(**_JIT)
def _pixel_feature(pix, acts_n, a_off, d_off, y_tap, y_w, x_off, x_tap, x_w, scale_n, out):
    """The feature ``x_p = concat_l s_{l,p} (U_l a_l)_p`` (D,) of output pixel ``pix`` (flat index), from its
    interpolation taps. ``acts_n`` holds each layer's activations pixel-major (h_l w_l × c_l) at ``a_off[li]``."""
    W = x_tap.shape[0]
    L = x_off.shape[0] - 1
    i = pix // W
    j = pix - i * W
    out[:] = 0.0
    for li in range(L):
        w = x_off[li + 1] - x_off[li]
        nc = d_off[li + 1] - d_off[li]
        sl = scale_n[li, i, j]
        orow = out[d_off[li]:d_off[li + 1]]
        for ty in range(y_tap.shape[2]):
            for tx in range(x_tap.shape[2]):
                g = sl * y_w[i, li, ty] * x_w[j, li, tx]
                if g != 0.0:
                    p = y_tap[i, li, ty] * w + x_tap[j, li, tx]
                    ar = acts_n[a_off[li] + p * nc:a_off[li] + (p + 1) * nc]
                    for ch in range(nc):
                        orow[ch] += g * ar[ch]


@numba.njit(parallel=True, **_JIT)
def lloyd_images(acts_c, acts_t, a_off, d_off, p_off, centers0, sq_norm, threshold, max_iter, uy_t, y_off, y_tap,
                 y_w, scale, ux_t, x_off, x_tap, x_w, ident, labels, inertia, n_iter):  # pragma: no cover - compiled
    """Lloyd's k-means on the implicit NAS features, one image per task, each until its own stop.

    The whole of :func:`xai_robust.nas._lloyd` for one image, in the exact low-resolution form. Per iteration:

    1. ``proj_l = −2 μ_l a_l`` (K × h_l w_l) and its x-upsampling ``q_l = proj_l U_xᵀ`` (K × h_l × W), two BLAS
       products per layer;
    2. for every output row i: the scores ``‖μ_k‖² + Σ_l s_l[i, :] ⊙ Σ_y U_y[i, y] q_l[k, y, :]``, their argmin
       (first index on ties) and, for the pixels that changed cluster, the per-row cluster sums
       ``Σ_j s_l[i, j] U_x[j, :]`` and the counts (updated, not recomputed);
    3. scikit-learn's stopping rule: no label changed, or the previous update moved the centroids by at most
       ``threshold``, or ``max_iter`` updates; the inertia is ``Σ_p max(0, ‖x_p‖² + best score_p)``;
    4. the adjoint of the y-upsampling turns the row sums into low-resolution cluster masks, one product with
       the activations gives the cluster sums (BLAS), and the centroids become the means (empty clusters keep
       theirs).

    Parameters (A = Σ_l c_l h_l w_l, D = Σ_l c_l, P = Σ_l h_l w_l, Y = Σ_l h_l, C = Σ_l w_l; output H × W)
    ----------
    acts_c, acts_t : (N, A)
        Each layer's activations, channel-major (c_l × h_l w_l) and pixel-major (h_l w_l × c_l), at ``a_off[li]``.
    a_off, d_off, p_off : (L + 1,) int64
        Each layer's range in ``acts_c``, among the D feature channels and among the P low-resolution pixels.
    centers0 : (N, K, D)
        Initial centroids.
    sq_norm : (N, H·W)
        ``‖x_p‖²``.
    threshold : (N,)
        The stopping threshold on the squared centroid shift.
    max_iter : int
        Maximum number of centroid updates.
    uy_t : (Y, H)
        The layers' y-upsampling matrices, transposed and stacked (layer l's rows at ``y_off[l]``); ``y_tap, y_w``
        (H, L, 4): the (at most 4) taps of output row i for layer l, as local row indices and weights (padded
        with weight 0).
    scale : (N, L, H, W)
        The per-pixel scale ``s_{l,p}`` of each layer (L2 normalisation and 1/(1 + c)).
    ux_t : (C, W)
        The layers' x-upsampling matrices, transposed and stacked (layer l's rows at ``x_off[l]``); ``x_tap, x_w``
        (W, L, 4): the taps of output column j, as ``y_tap, y_w``.
    ident : (L,) int64
        1 for a layer at the output resolution (no upsampling).
    labels, inertia, n_iter : (N, H, W) int64, (N,), (N,) int64
        Written: the final labels, inertia and number of assignment passes.
    """
    N, K, D = centers0.shape
    H, W = labels.shape[1], labels.shape[2]
    L = x_off.shape[0] - 1
    C = x_off[L]
    Y = y_off[L]
    P = p_off[L]
    for n in numba.prange(N):  # one image per task
        dt = centers0.dtype
        mu = centers0[n].copy()
        new_mu = np.empty((K, D), dtype=dt)
        mu_sq = np.empty(K, dtype=dt)
        proj = np.empty(K * P, dtype=dt)
        q = np.empty(K * Y * W, dtype=dt)
        row_sums = np.zeros(K * H * C, dtype=dt)
        low = np.empty(K * P, dtype=dt)
        counts = np.zeros(K, dtype=dt)
        score = np.empty((K, W), dtype=dt)
        kbest = np.empty(W, dtype=np.int64)
        best = np.empty((H, W), dtype=dt)
        lab = labels[n]
        lab[:, :] = -1
        finishing = False
        for it in range(max_iter + 1):
            # 1. the centroids projected on the activations (proj), then upsampled along x (q)
            _project(mu, acts_c[n], a_off, d_off, p_off, y_off, x_off, ident, ux_t, mu_sq, proj, q)
            # 2. assignment, row by row
            n_changed = 0
            for i in range(H):
                _row_scores(i, q, mu_sq, y_tap, y_w, y_off, scale[n], score)
                labr = lab[i]
                bestr = best[i]
                bestr[:] = score[0]
                kbest[:] = 0
                for k in range(1, K):  # branch-free (selects): the first index wins ties
                    sr = score[k]
                    for j in range(W):
                        s = sr[j]
                        b = bestr[j]
                        better = s < b
                        bestr[j] = s if better else b
                        kbest[j] = k if better else kbest[j]
                for j in range(W):
                    kb = kbest[j]
                    old = labr[j]
                    if kb != old:
                        n_changed += 1
                        labr[j] = kb
                        counts[kb] += 1.0
                        if old >= 0:
                            counts[old] -= 1.0
                        for li in range(L):
                            sl = scale[n, li, i, j]
                            w = x_off[li + 1] - x_off[li]
                            blk = K * H * x_off[li]
                            for t in range(x_tap.shape[2]):
                                g = sl * x_w[j, li, t]
                                if g != 0.0:
                                    c = x_tap[j, li, t]
                                    row_sums[blk + (kb * H + i) * w + c] += g
                                    if old >= 0:
                                        row_sums[blk + (old * H + i) * w + c] -= g
            # 3. stopping rule
            if (it > 0 and (finishing or n_changed == 0)) or it == max_iter:
                total = 0.0
                sq = sq_norm[n]
                for i in range(H):
                    for j in range(W):
                        e = sq[i * W + j] + best[i, j]
                        if e > 0.0:
                            total += e
                inertia[n] = total
                n_iter[n] = it + 1
                break
            # 4. centroid update: adjoint of the y-upsampling (low-resolution masks), then the cluster sums
            for li in range(L):
                h = y_off[li + 1] - y_off[li]
                w = x_off[li + 1] - x_off[li]
                nc = d_off[li + 1] - d_off[li]
                hw = p_off[li + 1] - p_off[li]
                rs = row_sums[K * H * x_off[li]:K * H * x_off[li + 1]]
                lw = low[K * p_off[li]:K * p_off[li + 1]]
                for k in range(K):
                    if ident[li]:
                        lw[k * hw:(k + 1) * hw] = rs[k * H * w:(k + 1) * H * w]
                    else:
                        np.dot(uy_t[y_off[li]:y_off[li + 1]], rs[k * H * w:(k + 1) * H * w].reshape(H, w),
                               lw[k * hw:(k + 1) * hw].reshape(h, w))
                new_mu[:, d_off[li]:d_off[li + 1]] = np.dot(lw.reshape(K, hw),
                                                          acts_t[n, a_off[li]:a_off[li] + nc * hw].reshape(hw, nc))
            shift = 0.0
            for k in range(K):
                for d in range(D):
                    if counts[k] > 0:
                        new_mu[k, d] /= counts[k]
                    else:
                        new_mu[k, d] = mu[k, d]
                    shift += (new_mu[k, d] - mu[k, d]) ** 2
                    mu[k, d] = new_mu[k, d]
            finishing = shift <= threshold[n]


@numba.njit(parallel=True, **_JIT)
def kmeans_pp_images(acts_c, acts_t, a_off, d_off, p_off, sq_norm, y_off, y_tap, y_w, scale, ux_t, x_off, x_tap, x_w,
                     ident, first, draws, out_idx, out_centers):  # pragma: no cover - compiled
    """Greedy k-means++ seeding (:func:`xai_robust.nas._kmeans_pp_init`) on the implicit features, one image per task.

    ``first`` (N,): the first centre's pixel; ``draws`` (N, K − 1, T) float64: the uniform draws of each round's T
    candidates (inverse-CDF sampling ∝ the squared distance to the nearest chosen centre, uniform where all
    distances are 0). Each round keeps the candidate that lowers the potential ``Σ_p min(d²_p, ‖x_p − c‖²)`` most
    (the first on ties). Writes the chosen pixels ``out_idx`` (N, K) and their features ``out_centers`` (N, K, D).
    Other arguments as in :func:`lloyd_images`.
    """
    N, K, D = out_centers.shape
    T = draws.shape[2]
    H, W = scale.shape[2], scale.shape[3]
    P = p_off[p_off.shape[0] - 1]
    Y = y_off[y_off.shape[0] - 1]
    n_pix = H * W
    for n in numba.prange(N):
        dt = out_centers.dtype
        cand = np.empty((T, D), dtype=dt)
        cand_idx = np.empty(T, dtype=np.int64)
        mu_sq = np.empty(T, dtype=dt)
        proj = np.empty(T * P, dtype=dt)
        q = np.empty(T * Y * W, dtype=dt)
        score = np.empty((T, W), dtype=dt)
        dist = np.empty((T, n_pix), dtype=dt)
        d2 = np.empty(n_pix, dtype=dt)
        potential = np.empty(T, dtype=np.float64)
        sq = sq_norm[n]
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
                _pixel_feature(cand_idx[t], acts_t[n], a_off, d_off, y_tap, y_w, x_off, x_tap, x_w, scale[n], cand[t])
            _project(cand[:n_cand], acts_c[n], a_off, d_off, p_off, y_off, x_off, ident, ux_t, mu_sq[:n_cand],
                     proj, q)
            potential[:] = 0.0
            for i in range(H):
                _row_scores(i, q, mu_sq[:n_cand], y_tap, y_w, y_off, scale[n], score[:n_cand])
                sqr = sq[i * W:(i + 1) * W]
                d2r = d2[i * W:(i + 1) * W]
                for t in range(n_cand):
                    dr = dist[t, i * W:(i + 1) * W]
                    sr = score[t]
                    for j in range(W):
                        e = max(sqr[j] + sr[j], 0.0)
                        dr[j] = min(e, d2r[j]) if r > 0 else e
                    potential[t] += dr.sum()
            best = 0
            for t in range(1, n_cand):
                if potential[t] < potential[best]:
                    best = t
            d2[:] = dist[best]
            out_idx[n, r] = cand_idx[best]
            out_centers[n, r] = cand[best]
