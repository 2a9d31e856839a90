"""Compiled CPU kernel of the NAS k-means assignment step (numba), used by :mod:`xai_robust.nas`.

Lloyd's k-means over the implicit low-resolution features of NAS (chapter 07), one image per task. Per
iteration, each output row's K scores ``‖μ_k‖² − 2 x_p·μ_k``, their argmin and the update of the per-row
cluster sums for the pixels that changed cluster happen in one pass that stays in cache; in PyTorch the
same step takes a dozen full-resolution passes and ~30 small operations per iteration. The arithmetic is
the exact low-resolution form of :class:`xai_robust.nas._LowRes` (tested against the direct computation in
``tests/test_nas.py``). Inner loops run over 1-D slices, which LLVM vectorises.
"""
from __future__ import annotations

import numba
import numpy as np


# fastmath: FMA contraction and re-associated sums (vectorised reductions); no assumptions about NaN or infinity.
# The results agree with the PyTorch path up to float rounding (identical labels in the float64 tests).
_JIT = dict(cache=True, fastmath={"contract", "reassoc"})


@numba.njit(**_JIT)
def _project(mu, acts_c, acts_n, a_off, d_off, p_off, widths, y_off, x_off, ux_t, j_lo, j_hi, mu_sq, proj, q):
    """Centroids (K, D) -> ``‖μ_k‖²`` (K,), ``proj_l = −2 μ_l a_l`` (K, P) and ``q_l = proj_l U_xᵀ`` (K, Y, W).

    ``acts_c`` and ``acts_n`` hold each layer's activations channel-major (c_l × h_l w_l) and pixel-major
    (h_l w_l × c_l); each layer uses the loop order whose inner loop is the longer one."""
    K = mu.shape[0]
    L = x_off.shape[0] - 1
    minus_two = np.full(1, -2.0, dtype=mu.dtype)[0]  # in the features' dtype: float32 arithmetic stays float32
    for k in range(K):
        s = mu[k, 0] * 0
        for d in range(mu.shape[1]):
            s += mu[k, d] * mu[k, d]
        mu_sq[k] = s
    for l in range(L):
        nc = d_off[l + 1] - d_off[l]
        hw = p_off[l + 1] - p_off[l]
        if hw >= nc:  # many pixels, few channels: axpy over the pixels (channel-major activations)
            for k in range(K):
                pr = proj[k, p_off[l]:p_off[l + 1]]
                pr[:] = 0.0
                for c in range(nc):
                    m = minus_two * mu[k, d_off[l] + c]
                    ar = acts_c[a_off[l] + c * hw:a_off[l] + (c + 1) * hw]
                    for p in range(hw):
                        pr[p] += m * ar[p]
        else:  # few pixels, many channels: one dot product over the channels per pixel (pixel-major)
            for p in range(hw):
                ar = acts_n[a_off[l] + p * nc:a_off[l] + (p + 1) * nc]
                for k in range(K):
                    mr = mu[k, d_off[l]:d_off[l + 1]]
                    s = mr[0] * 0
                    for c in range(nc):
                        s += mr[c] * ar[c]
                    proj[k, p_off[l] + p] = minus_two * s
    q[:, :, :] = 0.0
    for l in range(L):
        w = widths[l]
        for k in range(K):
            for y in range(y_off[l + 1] - y_off[l]):
                qr = q[k, y_off[l] + y]
                for x in range(w):
                    t = proj[k, p_off[l] + y * w + x]
                    cx = x_off[l] + x
                    ur = ux_t[cx]
                    for j in range(j_lo[cx], j_hi[cx]):
                        qr[j] += t * ur[j]


@numba.njit(**_JIT)
def _row_scores(i, q, mu_sq, y_tap, y_w, scale_n, score):
    """The scores ``‖μ_k‖² − 2 x_p·μ_k`` (K, W) of output row i: per layer, the 4 y-upsampling taps of the row
    (``y_tap``, ``y_w`` (H, L, 4); unused taps have weight 0) and the per-pixel scale, in one pass over the row."""
    K = q.shape[0]
    L = y_tap.shape[1]
    W = q.shape[2]
    for k in range(K):
        sr = score[k]
        sr[:] = mu_sq[k]
        for l in range(L):
            q0, q1, q2, q3 = q[k, y_tap[i, l, 0]], q[k, y_tap[i, l, 1]], q[k, y_tap[i, l, 2]], q[k, y_tap[i, l, 3]]
            w0, w1, w2, w3 = y_w[i, l, 0], y_w[i, l, 1], y_w[i, l, 2], y_w[i, l, 3]
            sc = scale_n[l, i]
            for j in range(W):
                sr[j] += sc[j] * (w0 * q0[j] + w1 * q1[j] + w2 * q2[j] + w3 * q3[j])


@numba.njit(**_JIT)
def _pixel_feature(pix, acts_n, a_off, d_off, p_off, widths, uy, y_lo, y_hi, y_off, ux, x_off, x_lo, x_hi, scale_n,
                   out):
    """The feature ``x_p = concat_l s_{l,p} (U_l a_l)_p`` (D,) of output pixel ``pix`` (flat index), from its taps."""
    W = ux.shape[0]
    L = x_off.shape[0] - 1
    i = pix // W
    j = pix - i * W
    out[:] = 0.0
    for l in range(L):
        w = widths[l]
        sl = scale_n[l, i, j]
        for y in range(y_lo[i, l], y_hi[i, l]):
            for x in range(x_lo[j, l] - x_off[l], x_hi[j, l] - x_off[l]):
                g = sl * uy[i, y] * ux[j, x_off[l] + x]
                if g != 0.0:
                    p = (y - y_off[l]) * w + x
                    nc = d_off[l + 1] - d_off[l]
                    ar = acts_n[a_off[l] + p * nc:a_off[l] + (p + 1) * nc]
                    orow = out[d_off[l]:d_off[l + 1]]
                    for c in range(nc):
                        orow[c] += g * ar[c]


@numba.njit(parallel=True, **_JIT)
def lloyd_images(acts_c, acts_t, a_off, d_off, p_off, widths, centers0, sq_norm, threshold, max_iter, uy, y_lo, y_hi,
                 y_off, y_tap, y_w, scale, ux, ux_t, x_off, x_lo, x_hi, j_lo, j_hi, labels, inertia, n_iter):  # pragma: no cover - compiled
    """Lloyd's k-means on the implicit NAS features, one image per task, each until its own stop.

    The whole of :func:`xai_robust.nas._lloyd` for one image, in the exact low-resolution form. Per iteration:

    1. ``proj_l = −2 μ_l a_l`` (K × h_l w_l) and its x-upsampling ``q_l = proj_l U_xᵀ`` (K × h_l × W);
    2. for every output row i: the scores ``‖μ_k‖² + Σ_l s_l[i, :] ⊙ Σ_y U_y[i, y] q_l[k, y, :]``, their argmin
       (first index on ties) and, for the pixels that changed cluster, the per-row cluster sums
       ``Σ_j s_l[i, j] U_x[j, :]`` and counts (updated, not recomputed);
    3. scikit-learn's stopping rule: no label changed, or the previous update moved the centroids by at most
       ``threshold``, or ``max_iter`` updates; the inertia is ``Σ_p max(0, ‖x_p‖² + best score_p)``;
    4. the adjoint of the y-upsampling turns the row sums into low-resolution cluster masks, one product with
       the activations gives the cluster sums, and the centroids become the means (empty clusters keep theirs).

    Parameters (A = Σ_l c_l h_l w_l, D = Σ_l c_l, P = Σ_l h_l w_l, Y = Σ_l h_l, C = Σ_l w_l; output H × W)
    ----------
    acts_c, acts_t : (N, A)
        Each layer's activations, channel-major (c_l × h_l w_l) and pixel-major (h_l w_l × c_l), at ``a_off[l]``.
    a_off, d_off, p_off : (L + 1,) int64
        Each layer's range in ``acts``, among the D feature channels and among the P low-resolution pixels.
    widths : (L,) int64
        w_l.
    centers0 : (N, K, D)
        Initial centroids.
    sq_norm : (N, H·W)
        ``‖x_p‖²``.
    threshold : (N,)
        The stopping threshold on the squared centroid shift.
    max_iter : int
        Maximum number of centroid updates.
    uy : (H, Y)
        The layers' y-upsampling matrices side by side (layer l at ``y_off[l]``); ``y_lo, y_hi`` (H, L): the
        non-zero column range (the taps) of row i for layer l; ``y_tap, y_w`` (H, L, 4): the same taps as
        column indices and weights, padded with weight 0.
    scale : (N, L, H, W)
        The per-pixel scale ``s_{l,p}`` of each layer (L2 normalisation and 1/(1 + c)).
    ux, ux_t : (W, C), (C, W)
        The layers' x-upsampling matrices side by side (layer l at ``x_off[l]``) and transposed; ``x_lo, x_hi``
        (W, L): the non-zero column range (the taps) of row j for layer l; ``j_lo, j_hi`` (C,): the non-zero row
        range of each column of ``ux``.
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
        proj = np.empty((K, P), dtype=dt)
        q = np.empty((K, Y, W), dtype=dt)
        row_sums = np.zeros((H, K, C + 1), dtype=dt)
        low = np.empty((K, P), dtype=dt)
        counts = np.empty(K, dtype=dt)
        score = np.empty((K, W), dtype=dt)
        kbest = np.empty(W, dtype=np.int64)
        best = np.empty((H, W), dtype=dt)
        lab = labels[n]
        lab[:, :] = -1
        finishing = False
        for it in range(max_iter + 1):
            # 1. the centroids projected on the activations (proj), then upsampled along x (q)
            _project(mu, acts_c[n], acts_t[n], a_off, d_off, p_off, widths, y_off, x_off, ux_t, j_lo, j_hi, mu_sq, proj, q)
            # 2. assignment, row by row
            n_changed = 0
            for i in range(H):
                _row_scores(i, q, mu_sq, y_tap, y_w, scale[n], score)
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
                        add = row_sums[i, kb]
                        add[C] += 1.0
                        for l in range(L):
                            sl = scale[n, l, i, j]
                            for c in range(x_lo[j, l], x_hi[j, l]):
                                add[c] += sl * ux[j, c]
                        if old >= 0:
                            sub = row_sums[i, old]
                            sub[C] -= 1.0
                            for l in range(L):
                                sl = scale[n, l, i, j]
                                for c in range(x_lo[j, l], x_hi[j, l]):
                                    sub[c] -= sl * ux[j, c]
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
            # 4. centroid update: adjoint of the y-upsampling, then one product with the activations
            low[:, :] = 0.0
            counts[:] = 0.0
            for i in range(H):
                for k in range(K):
                    rs = row_sums[i, k]
                    counts[k] += rs[C]
                    for l in range(L):
                        w = widths[l]
                        for y in range(y_lo[i, l], y_hi[i, l]):
                            u = uy[i, y]
                            base = p_off[l] + (y - y_off[l]) * w
                            lr = low[k, base:base + w]
                            rr = rs[x_off[l]:x_off[l + 1]]
                            for x in range(w):
                                lr[x] += u * rr[x]
            new_mu[:, :] = 0.0
            for l in range(L):  # cluster sums: the low-resolution masks times the activations
                nc = d_off[l + 1] - d_off[l]
                hw = p_off[l + 1] - p_off[l]
                for k in range(K):
                    lr = low[k, p_off[l]:p_off[l + 1]]
                    nr = new_mu[k, d_off[l]:d_off[l + 1]]
                    if hw >= nc:  # dot products over the pixels
                        for c in range(nc):
                            ar = acts_c[n, a_off[l] + c * hw:a_off[l] + (c + 1) * hw]
                            s = lr[0] * 0
                            for p in range(hw):
                                s += lr[p] * ar[p]
                            nr[c] = s
                    else:  # axpy over the channels
                        for p in range(hw):
                            m = lr[p]
                            if m != 0.0:
                                ar = acts_t[n, a_off[l] + p * nc:a_off[l] + (p + 1) * nc]
                                for c in range(nc):
                                    nr[c] += m * ar[c]
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
def kmeans_pp_images(acts_c, acts_t, a_off, d_off, p_off, widths, sq_norm, uy, y_lo, y_hi, y_off, y_tap, y_w, scale, ux, ux_t,
                     x_off, x_lo, x_hi, j_lo, j_hi, first, draws, out_idx, out_centers):  # pragma: no cover - compiled
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
        proj = np.empty((T, P), dtype=dt)
        q = np.empty((T, Y, W), dtype=dt)
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
                _pixel_feature(cand_idx[t], acts_t[n], a_off, d_off, p_off, widths, uy, y_lo, y_hi, y_off, ux, x_off,
                               x_lo, x_hi, scale[n], cand[t])
            _project(cand[:n_cand], acts_c[n], acts_t[n], a_off, d_off, p_off, widths, y_off, x_off, ux_t, j_lo, j_hi,
                     mu_sq[:n_cand], proj[:n_cand], q[:n_cand])
            potential[:] = 0.0
            for i in range(H):
                _row_scores(i, q[:n_cand], mu_sq[:n_cand], y_tap, y_w, scale[n], score[:n_cand])
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
