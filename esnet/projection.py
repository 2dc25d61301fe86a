"""2-D projections of embeddings (UMAP, t-SNE, PCA) for the embeddings page.

All methods see L2-normalised rows (re-ID embeddings are compared by cosine), so
``metric="euclidean"`` and ``"cosine"`` rank neighbours identically; euclidean is the default.

* PCA first: when D > ``pca_dims`` and N >= ``PCA_FIRST_MIN_POINTS`` (500), UMAP and t-SNE
  run on the first ``pca_dims`` principal components; below that the full D is cheap enough
  and a PCA fitted on few points is a poor estimate.
* UMAP: the k-nearest-neighbour graph is computed exactly here (sklearn, brute force, chunked)
  and handed to umap-learn as ``precomputed_knn``. So every N takes the same code path
  (umap-learn would otherwise switch to NN-descent at N >= 4096, which costs its own minute of
  numba compilation), neighbours are exact, and ``warm_up`` on a tiny array compiles all that
  ``project`` needs. Exact kNN is O(N^2 d): seconds for N ~ 20k after PCA to 50 dims.
  ``random_state=seed`` makes umap-learn deterministic and single-threaded (``n_jobs=1``).
  umap-learn's own warnings (e.g. a failed spectral initialisation) are left visible.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.neighbors import NearestNeighbors

METHODS = ("umap", "tsne", "pca")
METRICS = ("euclidean", "cosine")
PCA_FIRST_MIN_POINTS = 500
UMAP_MIN_POINTS = 4
FRAME_COLUMNS = ("x", "y", "pid", "camid", "split", "path")
_NO_INDEX_WARNING = r"precomputed_knn\[2\] \(knn_search_index\) is not an NNDescent object"


def _check_features(features: np.ndarray) -> np.ndarray:
    """Validate (N, D) real floating features and return them L2-normalised, float32."""
    if not isinstance(features, np.ndarray):
        raise TypeError(f"features must be a numpy array, got {type(features).__name__}")
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    if not np.issubdtype(features.dtype, np.floating):
        raise ValueError(f"features must be a floating array, got dtype {features.dtype}")
    n, d = features.shape
    if n < 3:
        raise ValueError(f"need at least 3 points to project, got N={n}")
    if d < 2:
        raise ValueError(f"need at least 2 feature dimensions to project, got D={d}")
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"features must be finite: rows {bad[:8].tolist()} ({bad.size} in all) hold NaN/inf")
    x = features.astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    if (norms == 0).any():
        bad = np.flatnonzero(norms[:, 0] == 0)
        raise ValueError(f"cannot L2-normalise all-zero feature rows {bad[:8].tolist()} ({bad.size} in all)")
    return x / norms  # (N, D)


def _check_params(method: str, metric: str, seed: int, n_neighbors: int, min_dist: float,
                  perplexity: float, pca_dims: int) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if not isinstance(n_neighbors, (int, np.integer)) or isinstance(n_neighbors, bool) or n_neighbors < 2:
        raise ValueError(f"n_neighbors must be an integer >= 2, got {n_neighbors!r}")
    if not 0.0 <= min_dist <= 1.0:
        raise ValueError(f"min_dist must be in [0, 1] (UMAP's spread is 1), got {min_dist!r}")
    if not perplexity > 0.0:
        raise ValueError(f"perplexity must be > 0, got {perplexity!r}")
    if not isinstance(pca_dims, (int, np.integer)) or isinstance(pca_dims, bool) or pca_dims < 2:
        raise ValueError(f"pca_dims must be an integer >= 2, got {pca_dims!r}")


def _umap(x: np.ndarray, *, metric: str, seed: int, n_neighbors: int, min_dist: float) -> np.ndarray:
    """UMAP of (N, d) float32 rows on an exact kNN graph -> (N, 2)."""
    import umap  # imported here: ~4 s, and only UMAP needs it

    knn = NearestNeighbors(n_neighbors=n_neighbors, metric=metric, algorithm="brute").fit(x)
    dists, idx = knn.kneighbors(x)  # (N, k) each, self first (distance 0)
    reducer = umap.UMAP(
        n_neighbors=n_neighbors, n_components=2, metric=metric, min_dist=min_dist, random_state=seed,
        n_jobs=1, precomputed_knn=(idx.astype(np.int32), dists.astype(np.float32)),
    )
    with warnings.catch_warnings():
        # We pass no NNDescent index on purpose: only umap.transform (unused) would need it.
        warnings.filterwarnings("ignore", message=_NO_INDEX_WARNING, category=UserWarning)
        return reducer.fit_transform(x)


def project(
    features: np.ndarray,
    *,
    method: str = "umap",
    seed: int = 0,
    metric: str = "euclidean",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    perplexity: float = 30.0,
    pca_dims: int = 50,
) -> np.ndarray:
    """Project embeddings to 2-D.

    Rows are L2-normalised first. UMAP and t-SNE run on the first ``pca_dims`` principal
    components when D > pca_dims and N >= PCA_FIRST_MIN_POINTS (see the module docstring).

    Args:
        features: (N, D) floating, finite, no all-zero row; N >= 3 (>= 4 for UMAP), D >= 2.
        method: ``umap``, ``tsne`` or ``pca``.
        seed: seeds UMAP's and t-SNE's RandomState and randomized PCA; same seed, same output.
        metric: ``euclidean`` or ``cosine`` neighbour metric for UMAP and t-SNE.
        n_neighbors: UMAP neighbourhood size, self included; clamped to N - 1.
        min_dist: UMAP minimum distance in [0, 1].
        perplexity: t-SNE perplexity; clamped to (N - 1) / 3, since t-SNE looks at
            3 * perplexity neighbours.
        pca_dims: components kept before UMAP / t-SNE, >= 2.
    Returns:
        (N, 2) float32.
    Raises:
        ValueError: bad features (shape, dtype, N < 3 or N < 4 for UMAP, non-finite or zero
            rows) or parameters.
        TypeError: features is not a numpy array.
        FloatingPointError: the method produced non-finite coordinates.
    """
    _check_params(method, metric, seed, n_neighbors, min_dist, perplexity, pca_dims)
    x = _check_features(features)  # (N, D)
    n, d = x.shape
    seed = int(seed)
    if method == "pca":
        out = PCA(n_components=2, random_state=seed).fit_transform(x)
    else:
        if d > pca_dims and n >= PCA_FIRST_MIN_POINTS:
            x = PCA(n_components=pca_dims, random_state=seed).fit_transform(x).astype(np.float32)  # (N, pca_dims)
        if method == "umap":
            if n < UMAP_MIN_POINTS:
                raise ValueError(f"UMAP needs N >= {UMAP_MIN_POINTS} points (its spectral initialisation solves "
                                 f"for 3 eigenvectors), got N={n}; use method='pca' or 'tsne'")
            out = _umap(x, metric=metric, seed=seed, n_neighbors=min(int(n_neighbors), n - 1), min_dist=min_dist)
        else:
            tsne = TSNE(n_components=2, perplexity=min(float(perplexity), (n - 1) / 3.0), metric=metric,
                        init="pca", random_state=seed)
            out = tsne.fit_transform(x)
    out = np.asarray(out, dtype=np.float32)  # (N, 2)
    if out.shape != (n, 2) or not np.isfinite(out).all():
        raise FloatingPointError(f"{method} returned {out.shape} with non-finite values for {n} points")
    return out


def _column(name: str, values: Sequence, n: int) -> list:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a sequence of length N={n}, got {type(values).__name__}")
    if len(values) != n:
        raise ValueError(f"{name} must have length N={n} (one per feature row), got {len(values)}")
    return list(values)


def projection_frame(
    features: np.ndarray,
    *,
    pids: Sequence[int],
    camids: Sequence[int],
    splits: Sequence[str],
    paths: Sequence[str],
    method: str = "umap",
    seed: int = 0,
    metric: str = "euclidean",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    perplexity: float = 30.0,
    pca_dims: int = 50,
) -> pd.DataFrame:
    """``project`` plus the metadata of each row, ready to plot.

    Args:
        features: (N, D) floating; see ``project``.
        pids, camids: N integers each.
        splits: N strings (e.g. ``query`` / ``gallery``).
        paths: N image paths.
        method, seed, metric, n_neighbors, min_dist, perplexity, pca_dims: see ``project``.
    Returns:
        DataFrame of N rows with columns x, y (float32), pid, camid (int64), split, path
        (str); ``attrs`` holds ``method`` and ``seed``.
    Raises:
        ValueError / TypeError: as ``project``, or a metadata sequence of the wrong length.
    """
    if not isinstance(features, np.ndarray) or features.ndim != 2:
        raise ValueError(f"features must be an (N, D) numpy array, got {getattr(features, 'shape', type(features))}")
    n = features.shape[0]
    meta = {name: _column(name, vals, n) for name, vals in
            (("pids", pids), ("camids", camids), ("splits", splits), ("paths", paths))}
    xy = project(features, method=method, seed=seed, metric=metric, n_neighbors=n_neighbors,
                 min_dist=min_dist, perplexity=perplexity, pca_dims=pca_dims)  # (N, 2)
    frame = pd.DataFrame({
        "x": xy[:, 0],
        "y": xy[:, 1],
        "pid": np.asarray(meta["pids"], dtype=np.int64),
        "camid": np.asarray(meta["camids"], dtype=np.int64),
        "split": pd.Series([str(s) for s in meta["splits"]], dtype=object),
        "path": pd.Series([str(p) for p in meta["paths"]], dtype=object),
    })
    frame.attrs["method"] = method
    frame.attrs["seed"] = int(seed)
    return frame


def warm_up(seed: int = 0) -> float:
    """Run ``project(method="umap")`` once on 32 random points to pay numba's JIT compile.

    The first UMAP call of a process compiles umap-learn's numba kernels: ~15-30 s on an
    idle CPU, more under load (numba's on-disk cache makes later processes a little
    faster). Because ``project`` hands umap-learn a precomputed kNN graph, this tiny run
    compiles everything later calls of any size need. Idempotent: a second call takes
    milliseconds.

    Args:
        seed: seed of the random points and of UMAP.
    Returns:
        Seconds spent.
    """
    start = time.perf_counter()
    x = np.random.default_rng(seed).normal(size=(32, 8)).astype(np.float32)  # (32, 8)
    project(x, method="umap", seed=seed, n_neighbors=5)
    return time.perf_counter() - start
