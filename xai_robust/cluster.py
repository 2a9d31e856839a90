"""Pseudo-groups from clustered explanations: ExMap and a GEORGE-style baseline.

ExMap (Chakraborty, Sletten & Kampffmeyer, CVPR 2024; chapter 04 "ExMap") infers group labels
without any group annotation in two stages:

1. **Heatmaps** (ExMap, Sec. 4.1, Eq. 3, Alg. 1): explain the *predicted* class of a frozen
   ERM model on every validation image; keep the heatmap signed, optionally resize it
   bilinearly, divide it by its largest absolute value and flatten it
   (:func:`heatmap_representations`).
2. **Clustering** (ExMap, Sec. 4.2): cluster the heatmaps -- spectral clustering on a
   nearest-neighbour graph with ``n_neighbors = int(log N)``, the number of clusters from the
   eigengap of the normalized Laplacian (:func:`eigengap`) and cluster-QR assignment
   (:func:`spectral_clustering`), or k-means (:func:`kmeans`). The pseudo-group set is the
   product of the class labels with the clusters, :math:`\\hat G = L \\times \\hat A`
   (:func:`pseudo_groups`); "global" ExMap clusters all heatmaps at once and splits by class,
   "local" ExMap clusters each class on its own.

The GEORGE-style baseline of ExMap's experiments (GEORGE(DFR)) is the same clustering applied to
penultimate-layer features instead of heatmaps: call :func:`pseudo_groups` on embeddings.

Implementation notes (see the chapter for the reasoning):

* The spectral step is written out here rather than calling
  :class:`sklearn.cluster.SpectralClustering`, so one eigendecomposition serves both the eigengap
  and the embedding. It follows scikit-learn: the affinity is the symmetrised k-NN connectivity
  ``(A + A^T) / 2``, the embedding is the leading eigenvectors of ``D^{-1/2} W D^{-1/2}`` divided
  by ``sqrt(deg)``, and the labels come from cluster-QR. Eigenvectors of ``I - D^{-1/2} W D^{-1/2}``
  with the smallest eigenvalues are computed as the *largest* eigenvectors of the normalized
  adjacency, per connected component, with ARPACK (no shift-invert factorisation needed; dense
  ``eigh`` for small components).
* The k-NN graph is built on the full heatmaps, as in ExMap's code (``pca=None``, the default).
  ``pca=50`` first projects representations with more than 50 columns on their leading principal
  components (randomized SVD), for speed on many large heatmaps. It is off by default because it
  changes the partitions: on chapter 04's scenes heatmaps at seeds 0-2 the ARI between the
  partitions with and without it was 0.26-0.61 (tools/exmap_options.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
import torch
import torch.nn.functional as F

from .checks import check_count, check_features, check_finite, check_model_input

__all__ = [
    "normalize_heatmaps",
    "heatmap_representations",
    "knn_affinity",
    "laplacian_eigenvalues",
    "eigengap",
    "cluster_qr",
    "spectral_clustering",
    "kmeans",
    "pseudo_groups",
]

Attribution = Callable[..., torch.Tensor]
ArrayLike = torch.Tensor | np.ndarray


# ---------------------------------------------------------------------------------------------
# stage 1: heatmap representations
# ---------------------------------------------------------------------------------------------
def normalize_heatmaps(heatmaps: torch.Tensor, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Turn heatmaps into ExMap's clustering representation.

    Signed heatmaps (channels kept) are optionally resized bilinearly to ``size``, flattened,
    and each one is divided by its own maximum absolute value (ExMap, Sec. 4.1; the official
    code's preprocessing, see docs/design.md). Chapter 04.

    Parameters
    ----------
    heatmaps : Tensor (N, C, H, W)
        Relevance maps, e.g. LRP-Flex (:func:`xai_robust.lrp.lrp_flex`).
    size : int or (int, int), optional
        Bilinear resize target (ExMap: Waterbirds 112, CelebA 20, UrbanCars 56, C-MNIST none).

    Returns
    -------
    Tensor (N, C*h*w), float32
        Rows in [-1, 1]. A heatmap that is zero everywhere stays zero (it carries no strategy);
        :func:`pseudo_groups` refuses inputs where every row is the same.
    """
    if not isinstance(heatmaps, torch.Tensor):
        raise TypeError(f"heatmaps must be a torch.Tensor of shape (N, C, H, W), got {type(heatmaps).__name__}")
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must have shape (N, C, H, W), got shape {tuple(heatmaps.shape)}")
    if heatmaps.shape[0] == 0:
        raise ValueError(f"heatmaps is an empty batch (shape {tuple(heatmaps.shape)}): pass at least one heatmap")
    h = heatmaps.detach().float()
    size = _check_size(size)
    if size is not None:
        if tuple(h.shape[-2:]) != tuple(size):
            h = F.interpolate(h, size=tuple(size), mode="bilinear", align_corners=False)
    h = h.flatten(1)
    if not torch.isfinite(h).all():
        raise ValueError("heatmaps contain NaN or inf values; check the attribution method (e.g. epsilon > 0)")
    scale = h.abs().amax(dim=1, keepdim=True)
    return torch.where(scale > 0, h / scale.clamp_min(torch.finfo(h.dtype).tiny), torch.zeros_like(h))


def _check_size(size):
    """None, or the resize target as a pair of positive ints (an int is a square)."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, (bool, np.bool_)):
        size = (size, size)
    if isinstance(size, (str, bytes)) or not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise ValueError(f"size must be a positive int or a pair of positive ints, got {size!r}")
    for s in size:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ValueError(f"size must be a positive int or a pair of positive ints, got {size!r}")
    return (int(size[0]), int(size[1]))


def _default_attribution() -> Attribution:
    from xai_robust.lrp import lrp_flex  # ExMap uses LRP (Sec. 4.1); LRP-Flex is chapter 02's

    return lrp_flex


def heatmap_representations(
    model: torch.nn.Module,
    x,
    *,
    attribution: Attribution | None = None,
    target=None,
    size=None,
    batch_size: int = 128,
    progress: bool = True,
    relevance: str = "one",
) -> torch.Tensor:
    """Explain every image and return ExMap's flattened, normalised heatmaps (ExMap, Alg. 1).

    The model is put in eval mode while explaining (heatmaps must not leak across the batch
    through BatchNorm statistics) and every submodule's mode is restored afterwards, even on error.
    Chapter 04.

    The relevance of the explained class starts at 1 (``relevance="one"``), as in ExMap's code
    (zennit with a one-hot output relevance); LRP-Flex and :func:`xai_robust.references.zennit_heatmap` start
    it at the logit's value (Faster ISNet Eq. 3). LRP is linear in that seed, so the two maps differ by
    the factor :math:`1/z_t` per image, and after the division by the largest absolute value only its
    sign is left: with ``"one"`` the heatmap of an image whose explained logit is negative is negated.
    ``relevance="logit"`` keeps the attribution's own seed.

    Parameters
    ----------
    model : nn.Module
        The frozen base (ERM) classifier.
    x : Tensor (N, C, H, W) or dataset with an ``images`` tensor
        Images in [0, 1] (the validation split in ExMap).
    attribution : callable ``(model, x, target) -> Tensor``, optional
        Any attribution with the library's calling shape: LRP-Flex (default), Gradient x Input,
        a zennit composite wrapped in that shape, grouped gradients...
    target : None, int or LongTensor (N,)
        Explained class; None = the predicted class (as ExMap does).
    size : int or (int, int), optional
        Bilinear resize of each heatmap before flattening (see :func:`normalize_heatmaps`).
    batch_size : int
        Images explained per call.
    progress : bool
        Show a progress bar (:func:`xai_robust.progress`).
    relevance : {"one", "logit"}
        Seed of the explained class's relevance: 1 (ExMap's code, default) or the logit's value (the
        attribution's own; LRP-Flex's Eq. 3). See above.

    Returns
    -------
    Tensor (N, D) float32 on the CPU.
        Under torchrun (:func:`xai_robust.distributed.is_distributed`) each rank explains its contiguous slice of
        the images (:func:`xai_robust.distributed.shard_bounds`) and every rank returns the full result, in the
        original order (an all-gather); every rank must call it with the same model, images and options. The
        progress bar shows on rank 0.
    """
    from . import distributed
    from . import progress as progress_bar

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from .data.base import LazyImages

    images = getattr(x, "images", x)
    lazy = isinstance(images, LazyImages)  # a real dataset's image files (read batch by batch, as floats)
    if not lazy and (not isinstance(images, torch.Tensor) or images.dim() != 4):
        shape = f", got shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else ""
        raise ValueError(f"x must be an image tensor (N, C, H, W) or a dataset with an `images` tensor{shape}; "
                         "add a batch dimension with x.unsqueeze(0) for a single image")
    if len(images) == 0:
        raise ValueError("x is empty: pass at least one image")
    if not lazy and not images.is_floating_point():
        raise TypeError(f"x must hold float images in [0, 1], got dtype {images.dtype}; convert with x.float() / 255")
    check_count(batch_size, "batch_size")
    _check_size(size)
    if relevance not in ("one", "logit"):
        raise ValueError(f"relevance must be 'one' (ExMap's code) or 'logit' (LRP-Flex's seed), got {relevance!r}")
    if attribution is None:
        attribution = _default_attribution()
    if not callable(attribution):
        raise TypeError("attribution must be a callable (model, x, target) -> Tensor")
    n = len(images)
    if isinstance(target, torch.Tensor) and target.dim() > 0 and len(target) != n:
        raise ValueError(f"target has {len(target)} entries but x has {n} images")
    try:
        dev = next(model.parameters()).device
    except StopIteration:
        dev = torch.device("cpu") if lazy else images.device
    from .attribution import resolve_target, restore_model

    check_model_input(model, images[:1].to(dev))
    from .models import check_input_channels

    check_input_channels(model, images[:1])
    out = []
    parallel = distributed.is_distributed()
    first, stop = distributed.shard_bounds(n) if parallel else (0, n)  # this rank's slice (all of it in one process)
    show = progress and distributed.is_main()
    with restore_model(model):  # every submodule's own mode and flags come back, also when this raises
        model.eval()
        for start in progress_bar(range(first, stop, batch_size), desc="heatmaps", disable=None if show else True):
            end = min(start + batch_size, stop)
            xb = images[start:end].to(dev)
            check_finite(xb, "x")
            tb = target
            if isinstance(target, torch.Tensor) and target.dim() > 0:
                tb = target[start:end].to(dev)
            if relevance == "one":  # resolve the targets here, so the sign below belongs to the explained class
                with torch.no_grad():
                    logits = model(xb)
                tb = resolve_target(logits, tb)
            h = attribution(model, xb, tb)
            if tuple(h.shape) != tuple(xb.shape):
                raise ValueError(f"attribution returned shape {tuple(h.shape)}, expected the input's {tuple(xb.shape)}")
            h = h.detach()
            if relevance == "one":  # seed 1 instead of z_t: the factor 1/z_t, of which normalisation keeps the sign
                z = logits.gather(1, tb[:, None]).to(h.dtype)
                h = h * torch.where(z < 0, -1.0, 1.0).reshape((-1,) + (1,) * (h.dim() - 1))
            out.append(normalize_heatmaps(h.cpu(), size))
    if parallel:
        return distributed.gather(torch.cat(out) if out else torch.empty(0))
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# stage 2: clustering
# ---------------------------------------------------------------------------------------------
def _as_numpy(a: ArrayLike, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(a).__name__}")
    return a


def _check_features(features: ArrayLike, name: str = "representations") -> np.ndarray:
    f = _as_numpy(features, name)
    if f.dtype.kind in "iub":  # integer or boolean features cluster as floats
        f = f.astype(np.float32)
    check_features(f, name, min_rows=2, hint="flatten heatmaps first (normalize_heatmaps); at least 2 rows cluster")
    f = f.astype(np.float32, copy=False)
    if np.ptp(f, axis=0).max() == 0:
        raise ValueError(
            f"{name} are constant (every row identical, e.g. all-zero heatmaps): there is nothing to cluster; "
            "check the attribution method and the model"
        )
    return f


def _reduce(features: np.ndarray, pca: int | None, seed: int) -> np.ndarray:
    """Project on the leading ``pca`` principal components (fitted on at most 5,000 rows) when D > pca."""
    if pca is not None and (isinstance(pca, (bool, np.bool_)) or not isinstance(pca, (int, np.integer)) or pca < 1):
        raise ValueError(f"pca must be None or a positive int, got {pca!r}")
    if pca is None or features.shape[1] <= pca:
        return features
    n, d = features.shape
    n_comp = min(int(pca), n - 1)
    if n_comp < 1:
        return features
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    g = torch.Generator().manual_seed(int(seed))
    rows = torch.randperm(n, generator=g)[:5000]
    sub = x[rows].double()
    mean = sub.mean(0)
    sub = sub - mean
    if min(sub.shape) <= 1024:  # exact SVD is cheap
        v = torch.linalg.svd(sub, full_matrices=False).Vh[:n_comp].T
    else:  # randomized SVD (Halko et al.), seeded
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            v = torch.svd_lowrank(sub, q=min(n_comp + 10, min(sub.shape)), niter=3)[2][:, :n_comp]
    return ((x.double() - mean) @ v).float().numpy()


def knn_affinity(features: ArrayLike, n_neighbors: int | None = None) -> scipy.sparse.csr_matrix:
    """Symmetrised k-nearest-neighbour connectivity graph ``(A + A^T) / 2`` (ExMap, Sec. 4.2).

    Same graph as ``sklearn.cluster.SpectralClustering(affinity="nearest_neighbors")``;
    ``n_neighbors`` defaults to ``int(log N)`` as in ExMap's code (at least 2). Chapter 04.

    Parameters
    ----------
    features : (N, D) array or tensor
    n_neighbors : int, optional

    Returns
    -------
    scipy.sparse.csr_matrix (N, N)
    """
    f = _check_features(features, "features")
    n = f.shape[0]
    if n_neighbors is None:
        n_neighbors = max(2, int(math.log(n)))
    if isinstance(n_neighbors, (bool, np.bool_)):
        raise TypeError(f"n_neighbors must be an int in [1, N-1] = [1, {n - 1}], got {n_neighbors!r}")
    if not isinstance(n_neighbors, (int, np.integer)) or not 1 <= n_neighbors < n:
        raise ValueError(f"n_neighbors must be an int in [1, N-1] = [1, {n - 1}], got {n_neighbors!r}")
    # exact brute-force neighbours in row blocks (as sklearn's kneighbors_graph(include_self=True):
    # each point counts as its own first neighbour)
    t = torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32))
    sq = (t * t).sum(1)
    cols = []
    for start in range(0, n, 2048):
        block = t[start:start + 2048]
        d = sq[start:start + 2048, None] - 2.0 * block @ t.T + sq[None, :]
        d[torch.arange(len(block)), torch.arange(start, start + len(block))] = -float("inf")  # self first
        cols.append(d.topk(int(n_neighbors), dim=1, largest=False).indices)
    cols = torch.cat(cols).numpy().ravel()
    rows = np.repeat(np.arange(n), int(n_neighbors))
    a = scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return (0.5 * (a + a.T)).tocsr()


def _spectrum(affinity: scipy.sparse.spmatrix, n_eig: int, seed: int):
    """Smallest eigenpairs of the normalized Laplacian ``I - D^-1/2 W D^-1/2`` and sqrt(degrees)."""
    w = scipy.sparse.csr_matrix(affinity, dtype=np.float64)
    n = w.shape[0]
    if w.shape != (n, n):
        raise ValueError(f"affinity must be square, got shape {w.shape}")
    check_finite(w.data, "affinity")
    if (w.data < 0).any():
        raise ValueError("affinity must hold non-negative edge weights (a similarity graph such as knn_affinity's), "
                         f"got a minimum of {float(w.data.min()):.4g}")
    w = w - scipy.sparse.diags(w.diagonal())  # the Laplacian ignores self-loops (scipy's csgraph.laplacian)
    deg = np.asarray(w.sum(axis=1)).ravel()
    if (deg <= 0).any():
        raise ValueError("affinity has isolated nodes (zero degree); use more neighbours")
    dd = np.sqrt(deg)
    inv = scipy.sparse.diags(1.0 / dd)
    m = (inv @ w @ inv).tocsr()
    n_eig = min(n_eig, n)
    # The normalized adjacency is block-diagonal over the graph's connected components and its spectrum
    # is the union of theirs. Solving per component keeps every eigenvalue simple at the top (one
    # eigenvalue 1 per component), which Lanczos (ARPACK) would otherwise miss when repeated.
    n_comp, comp = scipy.sparse.csgraph.connected_components(m, directed=False)
    mus, vecs = [], []
    rng = np.random.default_rng(seed)
    for c in range(n_comp):
        idx = np.flatnonzero(comp == c)
        sub = m[idx][:, idx]
        kc = min(n_eig, len(idx))
        if len(idx) <= 500 or 5 * kc >= len(idx):
            mu_c, v_c = np.linalg.eigh(sub.toarray())
            top = np.argsort(mu_c)[::-1][:kc]
            mu_c, v_c = mu_c[top], v_c[:, top]
        else:
            mu_c, v_c = scipy.sparse.linalg.eigsh(sub, k=kc, which="LA", v0=rng.uniform(-1, 1, len(idx)), tol=1e-8,
                                                  ncv=min(len(idx), max(4 * kc + 1, 40)))
        mus.append(mu_c)
        vecs += [(idx, v_c[:, j]) for j in range(kc)]
    mu = np.concatenate(mus)
    order = np.argsort(-mu, kind="stable")[:n_eig]
    vec = np.zeros((n, len(order)))
    for col, j in enumerate(order):
        idx, v = vecs[j]
        vec[idx, col] = v
    lam = np.clip(1.0 - mu[order], 0.0, 2.0)
    return lam, vec, dd


def laplacian_eigenvalues(affinity: scipy.sparse.spmatrix, n_eig: int = 13, seed: int = 0) -> np.ndarray:
    """The ``n_eig`` smallest eigenvalues of the normalized Laplacian of ``affinity`` (ascending).

    ExMap's code takes 13 of them for the eigengap heuristic. Chapter 04.
    """
    check_count(n_eig, "n_eig")
    check_count(seed, "seed", minimum=0)
    return _spectrum(affinity, n_eig, seed)[0]


def _gap_k(lam: np.ndarray, max_k: int) -> int:
    # ExMap's code: k = argmax(diff(eig)[1:max_k]) + 2, i.e. the largest gap lambda_{k} - lambda_{k-1}, k in 2..max_k
    return int(np.argmax(np.diff(lam)[1:max_k]) + 2)


def _check_max_k(max_k, n):
    if isinstance(max_k, (bool, np.bool_)) or not isinstance(max_k, (int, np.integer)) or max_k < 2:
        raise ValueError(f"max_k must be an int >= 2, got {max_k!r}")
    if n < max_k + 2:
        raise ValueError(
            f"the eigengap heuristic with max_k={max_k} needs at least {max_k + 2} samples, got {n}; "
            "lower max_k or pass k explicitly"
        )


def eigengap(affinity_or_features, max_k: int = 10, *, n_neighbors: int | None = None, pca: int | None = None,
             seed: int = 0) -> int:
    """Number of clusters from the eigengap of the normalized Laplacian (ExMap, Sec. 5 "Setup").

    With eigenvalues :math:`\\lambda_0 \\le \\lambda_1 \\le \\dots` of
    :math:`L = I - D^{-1/2} W D^{-1/2}`, returns the :math:`k \\in \\{2, \\dots, \\text{max\\_k}\\}`
    with the largest gap :math:`\\lambda_k - \\lambda_{k-1}` (ExMap's code: ``argmax(diff(eig)[1:10]) + 2``).
    Chapter 04.

    Parameters
    ----------
    affinity_or_features : scipy.sparse matrix (N, N) or (N, D) array / tensor
        A sparse matrix is used as the affinity ``W``; a dense array is treated as features and
        turned into the k-NN graph of :func:`knn_affinity`.
    max_k : int
        Largest number of clusters considered (ExMap: 10).
    n_neighbors, pca, seed
        Graph options for feature input (see :func:`spectral_clustering`).

    Returns
    -------
    int
    """
    check_count(seed, "seed", minimum=0)
    if scipy.sparse.issparse(affinity_or_features):
        w = affinity_or_features
    else:
        f = _reduce(_check_features(affinity_or_features, "affinity_or_features"), pca, seed)
        w = knn_affinity(f, n_neighbors)
    _check_max_k(max_k, w.shape[0])
    lam = laplacian_eigenvalues(w, n_eig=max_k + 3, seed=seed)
    return _gap_k(lam, max_k)


def cluster_qr(vectors: np.ndarray) -> np.ndarray:
    """Cluster-QR assignment of a spectral embedding (Damle, Minden & Ying 2019; used by ExMap).

    Column-pivoted QR of the embedding's transpose picks ``k`` representative rows; the labels
    are the argmax of ``|V (U W^T)|`` with ``U S W^T`` the SVD of those rows. Same algorithm as
    scikit-learn's ``assign_labels="cluster_qr"``. Chapter 04.
    """
    k = vectors.shape[1]
    _, _, piv = scipy.linalg.qr(vectors.T, pivoting=True)
    ut, _, v = scipy.linalg.svd(vectors[piv[:k], :].T)
    return np.abs(vectors @ (ut @ v.conj())).argmax(axis=1)


def spectral_clustering(features: ArrayLike, k: int | None = None, *, max_k: int = 10,
                        n_neighbors: int | None = None, pca: int | None = None,
                        seed: int = 0) -> tuple[np.ndarray, int]:
    """Spectral clustering with a k-NN affinity, eigengap choice of k and cluster-QR (ExMap, Sec. 4.2).

    Parameters
    ----------
    features : (N, D) array or tensor
        Heatmap representations (ExMap) or penultimate features (GEORGE-style baseline).
    k : int, optional
        Number of clusters; None = the eigengap heuristic over 2..``max_k``.
    max_k : int
        Largest k the eigengap considers.
    n_neighbors : int, optional
        Graph degree; default ``int(log N)``.
    pca : int or None
        Project on this many principal components before building the graph when D is larger
        (for speed); None (default) = the raw representation, as ExMap's code does.
    seed : int
        Seeds the PCA and the eigensolver's start vector.

    Returns
    -------
    labels : ndarray (N,) of ints in [0, k)
    k : int
    """
    check_count(seed, "seed", minimum=0)
    f = _reduce(_check_features(features, "features"), pca, seed)
    n = f.shape[0]
    if k is None:
        _check_max_k(max_k, n)
        n_eig = max_k + 3
    else:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int or None, got {k!r}")
        if k > n:
            raise ValueError(f"k={k} clusters requested but only {n} samples; lower k")
        n_eig = k
    if k == 1:
        return np.zeros(n, dtype=np.int64), 1
    w = knn_affinity(f, n_neighbors)
    lam, vec, dd = _spectrum(w, min(n_eig, n), seed)
    if k is None:
        k = _gap_k(lam, max_k)
    emb = vec[:, :k] / dd[:, None]
    return cluster_qr(emb).astype(np.int64), int(k)


def kmeans(features: ArrayLike, k: int | None = None, *, max_k: int = 10, n_neighbors: int | None = None,
           pca: int | None = None, seed: int = 0) -> tuple[np.ndarray, int]:
    """k-means with 10 restarts (ExMap, Sec. 6.3 / Table 5). Chapter 04.

    ``k=None`` chooses k with the same eigengap heuristic as :func:`spectral_clustering`
    (on the k-NN graph of the features). Like the graph, k-means runs on the leading ``pca``
    principal components when the features have more columns (``pca=None``: raw features).

    Returns
    -------
    labels : ndarray (N,)
    k : int
    """
    from sklearn.cluster import KMeans

    check_count(seed, "seed", minimum=0)
    if k is not None and (isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1):
        raise ValueError(f"k must be a positive int or None, got {k!r}")
    f = _reduce(_check_features(features, "features"), pca, seed)
    n = f.shape[0]
    if k is None:
        k = eigengap(f, max_k, n_neighbors=n_neighbors, pca=None, seed=seed)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int or None, got {k!r}")
    if k > n:
        raise ValueError(f"k={k} clusters requested but only {n} samples; lower k")
    labels = KMeans(n_clusters=int(k), n_init=10, random_state=seed).fit_predict(f)
    return labels.astype(np.int64), int(k)


def pseudo_groups(representations: ArrayLike, y: ArrayLike, *, method: str = "spectral", scope: str = "global",
                  k: int | None = None, seed: int = 0, max_k: int = 10, n_neighbors: int | None = None,
                  pca: int | None = None, return_k: bool = False):
    """Pseudo group labels :math:`\\hat G = L \\times \\hat A` from clustered representations (ExMap, Alg. 1, Sec. 4.2).

    Global ExMap (G-ExMap, the paper's default) clusters all representations at once and splits
    the clusters by class; local ExMap (L-ExMap) clusters each class separately. Group ids are
    consecutive integers, disjoint across classes (a group never mixes two classes), and empty
    (class, cluster) combinations get no id. Passing penultimate features instead of heatmaps
    gives the GEORGE-style baseline of ExMap's experiments. Chapter 04.

    Parameters
    ----------
    representations : (N, D) tensor or array
        :func:`heatmap_representations` (ExMap) or embeddings (GEORGE(DFR)).
    y : (N,) integer labels
        Class labels (ExMap combines them with the clusters).
    method : {"spectral", "kmeans"}
    scope : {"global", "local"}
    k : int, optional
        Clusters (per class for "local"); None = eigengap heuristic, k in 2..``max_k``.
    seed : int
    max_k, n_neighbors, pca
        See :func:`spectral_clustering`.
    return_k : bool
        Also return the number of clusters used (an int for "global", a list per class for "local").

    Returns
    -------
    LongTensor (N,) of group ids (and k if ``return_k``).
    """
    if method not in ("spectral", "kmeans"):
        raise ValueError(f'method must be "spectral" or "kmeans", got {method!r}')
    if scope not in ("global", "local"):
        raise ValueError(f'scope must be "global" or "local", got {scope!r}')
    f = _check_features(representations, "representations")
    yy = _as_numpy(y, "y")
    if yy.ndim != 1 or len(yy) != len(f):
        raise ValueError(f"y must have shape (N,) = ({len(f)},), got {yy.shape}")
    if not np.issubdtype(yy.dtype, np.integer):
        raise TypeError(f"y must hold integer class labels, got dtype {yy.dtype}")
    classes = np.unique(yy)
    if len(classes) < 2:
        raise ValueError(f"y contains a single class ({classes.tolist()}); pseudo groups combine at least two classes")
    run = spectral_clustering if method == "spectral" else kmeans
    opts = dict(max_k=max_k, n_neighbors=n_neighbors, pca=pca, seed=seed)

    if scope == "global":
        clusters, k_used = run(f, k, **opts)
    else:
        clusters = np.zeros(len(f), dtype=np.int64)
        k_used = []
        for c in classes:
            idx = np.flatnonzero(yy == c)
            if k is not None and len(idx) < k:
                raise ValueError(f"class {c} has {len(idx)} samples, fewer than k={k} clusters; lower k or use "
                                 "scope='global'")
            lab, kc = run(f[idx], k, **opts)
            clusters[idx] = lab
            k_used.append(kc)
    # L x A: consecutive ids over the (class, cluster) pairs that occur
    _, groups = np.unique(np.stack([yy.astype(np.int64), clusters]), axis=1, return_inverse=True)
    groups = torch.as_tensor(groups.ravel(), dtype=torch.long)
    return (groups, k_used) if return_k else groups
