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


@numba.njit(parallel=True, cache=True, fastmath={"contract"})
def lloyd_images(acts, acts_t, a_off, d_off, p_off, widths, centers0, sq_norm, threshold, max_iter, uy, y_lo, y_hi,
                 y_off, scale, ux, ux_t, x_off, j_lo, j_hi, labels, inertia, n_iter):  # pragma: no cover - compiled
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
    acts, acts_t : (N, A)
        Each layer's activations, c_l × h_l w_l (``acts``) and h_l w_l × c_l (``acts_t``), at ``a_off[l]``.
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
        non-zero column range (the taps) of row i for layer l.
    scale : (N, L, H, W)
        The per-pixel scale ``s_{l,p}`` of each layer (L2 normalisation and 1/(1 + c)).
    ux, ux_t : (W, C), (C, W)
        The layers' x-upsampling matrices side by side (layer l at ``x_off[l]``) and transposed; ``j_lo, j_hi``
        (C,): the non-zero row range of each column of ``ux``.
    labels, inertia, n_iter : (N, H, W) int64, (N,), (N,) int64
        Written: the final labels, inertia and number of assignment passes.
    """
    N, K, D = centers0.shape
    H, W = labels.shape[1], labels.shape[2]
    L = x_off.shape[0] - 1
    C = x_off[L]
    Y = y_off[L]
    P = p_off[L]
    for n in numba.prange(N):
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
        v = np.empty(W, dtype=dt)
        kbest = np.empty(W, dtype=np.int64)
        best = np.empty((H, W), dtype=dt)
        lab = labels[n]
        lab[:, :] = -1
        minus_two = np.full(1, -2.0, dtype=dt)[0]  # in the features' dtype: float32 arithmetic stays float32
        finishing = False
        for it in range(max_iter + 1):
            # 1. the centroids projected on the activations (proj), then upsampled along x (q)
            proj[:, :] = 0.0
            for k in range(K):
                mu_sq[k] = np.sum(mu[k] * mu[k])
            for l in range(L):
                hw = p_off[l + 1] - p_off[l]
                for k in range(K):
                    pr = proj[k, p_off[l]:p_off[l + 1]]
                    for c in range(d_off[l + 1] - d_off[l]):
                        m = minus_two * mu[k, d_off[l] + c]
                        ar = acts[n, a_off[l] + c * hw:a_off[l] + (c + 1) * hw]
                        for p in range(hw):
                            pr[p] += m * ar[p]
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
            # 2. assignment, row by row
            n_changed = 0
            for i in range(H):
                for k in range(K):
                    sr = score[k]
                    sr[:] = mu_sq[k]
                    for l in range(L):
                        v[:] = 0.0
                        for y in range(y_lo[i, l], y_hi[i, l]):
                            u = uy[i, y]
                            qr = q[k, y]
                            for j in range(W):
                                v[j] += u * qr[j]
                        sc = scale[n, l, i]
                        for j in range(W):
                            sr[j] += sc[j] * v[j]
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
                            for c in range(x_off[l], x_off[l + 1]):
                                add[c] += sl * ux[j, c]
                        if old >= 0:
                            sub = row_sums[i, old]
                            sub[C] -= 1.0
                            for l in range(L):
                                sl = scale[n, l, i, j]
                                for c in range(x_off[l], x_off[l + 1]):
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
            for l in range(L):
                nc = d_off[l + 1] - d_off[l]
                for k in range(K):
                    nr = new_mu[k, d_off[l]:d_off[l + 1]]
                    for p in range(p_off[l + 1] - p_off[l]):
                        m = low[k, p_off[l] + p]
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
