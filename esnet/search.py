"""Gallery search: the top-k gallery items of each query, optionally k-reciprocal re-ranked.

``build_index`` wraps L2-normalised gallery features (N, D) and their metadata in a
``GalleryIndex``; ``search`` returns a ``SearchResult`` of (Q, k) arrays: data, never
figures (app/ draws them). Distance is cosine: 1 - q.g on unit rows. Backends:

* ``exact``: torch matmul over chunks of queries, then an exact selection: distances
  ascending, ties by gallery index (the order of ``esnet.metrics.evaluate``).
* ``faiss-flat``: ``faiss.IndexFlatIP``, also a full scan, exact up to float rounding.
* ``faiss-ivf``: ``faiss.IndexIVFFlat`` (inner product, spherical k-means trained on the
  gallery with ``seed``); approximate: it scans ``nprobe`` of its ``nlist`` lists.

For faiss backends the returned hits are ordered by (distance, gallery index) too; which
of several items tied at the k-th distance is returned is faiss's choice.

``auto`` = ``exact`` up to AUTO_EXACT_MAX rows, ``faiss-ivf`` beyond. A brute-force scan
reads all N x D floats per query batch: at 50,000 x 2560 (512 MB) that is tens of ms per
query on two CPU cores, fine for interactive use and exact; beyond it the cost keeps
growing linearly, while IVF reads only ~nprobe/nlist of the gallery. Every standard
re-ID test gallery but MSMT17's (82,161) stays exact; pass ``backend="exact"`` to force it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from esnet.metrics import re_ranking_features

if TYPE_CHECKING:
    import pandas as pd

BACKENDS = ("auto", "exact", "faiss-flat", "faiss-ivf")
AUTO_EXACT_MAX = 50_000
"""Largest gallery that ``backend="auto"`` searches exactly; larger ones get faiss-ivf."""

IVF_RERANK_CANDIDATES = 200
"""Candidates per query that faiss-ivf re-ranking fetches (at least topk + exclusions)."""

IVF_MIN_POINTS_PER_LIST = 39
"""Gallery rows per IVF list that k-means needs (faiss's own minimum, below which it warns)."""

NORM_TOL = 1e-3
"""Allowed |row norm - 1| of features and queries (float16 storage rounds to ~5e-4)."""

_CHUNK_BYTES = 64 * 2**20


def _as_rows(name: str, x: object) -> np.ndarray:
    """(N, D) finite unit rows -> a private, writable float32 C-contiguous copy."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) matrix, got shape {a.shape}")
    if a.dtype.kind != "f":
        raise ValueError(f"{name} must hold floats (float16/32/64), got dtype {a.dtype}")
    a = np.array(a, dtype=np.float32, order="C", copy=True)  # also detaches a memmap
    bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
    if bad.size:
        raise ValueError(f"{name} must be finite; row {int(bad[0])} holds NaN or inf")
    norms = np.sqrt(np.einsum("ij,ij->i", a, a))  # (N,)
    off = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOL)
    if off.size:
        r = int(off[0])
        raise ValueError(f"{name} rows must be L2-normalised (|norm - 1| <= {NORM_TOL}), row {r} has norm {norms[r]:.6g}")
    return a


def _as_ids(name: str, x: object, n: int, what: str) -> np.ndarray:
    """A 1-D integer array of length ``n`` -> read-only int64 copy."""
    a = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a 1-D integer array, got shape {a.shape} dtype {a.dtype}")
    if a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} entries, expected one per {what} ({n})")
    out = a.astype(np.int64)
    out.setflags(write=False)
    return out


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True, eq=False)
class GalleryIndex:
    """Searchable gallery; build with ``build_index``. Read-only, so shareable.

    Attributes:
        features: (N, D) float32 read-only unit rows, the index's own copy.
        paths: N image paths, or None.
        pids, camids: (N,) int64 read-only, or None.
        cameras: (N,) int64 read-only camera numbers as people read them (``Sample.camera``), or None.
        backend: the resolved backend: ``exact``, ``faiss-flat`` or ``faiss-ivf``.
        nlist, nprobe: IVF lists and lists scanned per query; None for other backends.
    """

    features: np.ndarray
    paths: tuple[str, ...] | None
    pids: np.ndarray | None
    camids: np.ndarray | None
    backend: str
    nlist: int | None = None
    nprobe: int | None = None
    cameras: np.ndarray | None = None
    _tensor: torch.Tensor | None = field(default=None, repr=False)  # (N, D), shares features' memory
    _faiss: object | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        return self.features.shape[1]


def _ivf_params(n: int, nlist: int | None, nprobe: int | None) -> tuple[int, int]:
    """nlist defaults to 4 sqrt(N) clamped to [1, N // 39]; an explicit nlist above N // 39
    is an error (never silently lowered). nprobe defaults to max(8, nlist // 8), <= nlist."""
    max_nlist = n // IVF_MIN_POINTS_PER_LIST
    if max_nlist < 1:
        raise ValueError(f"faiss-ivf needs >= {IVF_MIN_POINTS_PER_LIST} gallery rows to train, got N={n}; use backend='exact'")
    if nlist is None:
        nlist = min(max(1, round(4 * math.sqrt(n))), max_nlist)
    elif _check_int("nlist", nlist, 1) > max_nlist:
        raise ValueError(
            f"nlist={nlist} needs N >= {IVF_MIN_POINTS_PER_LIST * nlist} gallery rows "
            f"({IVF_MIN_POINTS_PER_LIST} per list for k-means), got N={n}; use nlist <= {max_nlist}"
        )
    if nprobe is None:
        nprobe = min(nlist, max(8, nlist // 8))
    elif _check_int("nprobe", nprobe, 1) > nlist:
        raise ValueError(f"nprobe must be <= nlist={nlist}, got {nprobe}")
    return int(nlist), int(nprobe)


def build_index(
    features: np.ndarray | torch.Tensor,
    *,
    paths: list[str] | None = None,
    pids: np.ndarray | None = None,
    camids: np.ndarray | None = None,
    cameras: np.ndarray | None = None,
    backend: str = "auto",
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
) -> GalleryIndex:
    """Index gallery features for ``search``.

    Args:
        features: (N, D) float16/32/64 L2-normalised rows (numpy, a read-only memmap, or
            a CPU tensor); copied to float32, so later changes to it do not matter.
        paths: N image paths (str or os.PathLike), or None.
        pids: (N,) int identities (-1 = junk/unknown), or None.
        camids: (N,) int cameras, or None.
        cameras: (N,) int camera numbers for display (``Sample.camera``, -1 = unknown), or None.
        backend: one of BACKENDS (see the module docstring).
        nlist: faiss-ivf lists; default 4 sqrt(N) clamped to [1, N // 39]. An explicit
            value above N // 39 raises (k-means needs 39 rows per list).
        nprobe: faiss-ivf lists scanned per query, in [1, nlist]; default max(8, nlist // 8).
        seed: k-means seed of faiss-ivf training (same seed, same index).
    Returns:
        GalleryIndex. Memory: N x D x 4 bytes, plus faiss's own copy for faiss backends.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    x = _as_rows("features", features)
    n, d = x.shape
    path_t = None if paths is None else tuple(os.fspath(p) for p in paths)
    if path_t is not None and len(path_t) != n:
        raise ValueError(f"paths has {len(path_t)} entries, expected one per gallery row ({n})")
    pid_a = None if pids is None else _as_ids("pids", pids, n, "gallery row")
    cam_a = None if camids is None else _as_ids("camids", camids, n, "gallery row")
    shown_a = None if cameras is None else _as_ids("cameras", cameras, n, "gallery row")
    seed = _check_int("seed", seed, 0)
    resolved = backend if backend != "auto" else ("exact" if n <= AUTO_EXACT_MAX else "faiss-ivf")
    if resolved != "faiss-ivf" and (nlist is not None or nprobe is not None):
        raise ValueError(f"nlist/nprobe apply to faiss-ivf only, got nlist={nlist!r} nprobe={nprobe!r} for backend {resolved!r}")
    index = None
    if resolved == "faiss-flat":
        import faiss

        index = faiss.IndexFlatIP(d)
        index.add(x)
    elif resolved == "faiss-ivf":
        import faiss

        nlist, nprobe = _ivf_params(n, nlist, nprobe)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)  # keeps a ref
        index.cp.seed = seed
        index.cp.spherical = True  # unit centroids: inner product = cosine
        index.train(x)
        index.add(x)
        index.nprobe = nprobe
    tensor = torch.from_numpy(x)
    view = tensor.numpy()
    view.setflags(write=False)
    return GalleryIndex(view, path_t, pid_a, cam_a, resolved, nlist, nprobe, shown_a, tensor, index)


@dataclass(frozen=True, eq=False)
class SearchResult:
    """Top-k hits of Q queries. Read-only arrays; ``eq=False`` (compare fields).

    Attributes:
        indices: (Q, k) int64 gallery rows, nearest first.
        distances: (Q, k) float32 ascending per row (cosine, or re-ranked when
            ``reranked``), ties by gallery index.
        pids, camids: (Q, k) int64 of the hits; -1 where the gallery has none.
        cameras: (Q, k) int64 camera numbers of the hits as people read them; -1 where unknown.
        paths: Q tuples of k paths, or None when the gallery has no paths.
        correct: (Q, k) bool, hit pid == query pid >= 0; None without query pids.
        backend: the index's backend.
        reranked: whether k-reciprocal re-ranking ordered the hits.
    """

    indices: np.ndarray
    distances: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    paths: tuple[tuple[str, ...], ...] | None
    correct: np.ndarray | None
    backend: str
    reranked: bool
    cameras: np.ndarray | None = None

    def to_frame(self, query_index: int = 0) -> pd.DataFrame:
        """One query's hits: columns rank (1-based, 1 = nearest), index, path, pid,
        camid (0-based), camera (as in the file name, -1 = unknown), distance, correct (None
        where unknown); k rows."""
        import pandas as pd

        nq, k = self.indices.shape
        if isinstance(query_index, bool) or not isinstance(query_index, (int, np.integer)) or not 0 <= query_index < nq:
            raise ValueError(f"query_index must be an integer in [0, {nq}), got {query_index!r}")
        i = int(query_index)
        return pd.DataFrame({
            "rank": np.arange(1, k + 1),
            "index": self.indices[i],
            "path": pd.Series(self.paths[i] if self.paths is not None else [None] * k, dtype=object),
            "pid": self.pids[i],
            "camid": self.camids[i],
            "camera": self.cameras[i] if self.cameras is not None else np.full(k, -1, np.int64),
            "distance": self.distances[i],
            "correct": list(self.correct[i]) if self.correct is not None else [None] * k,
        })


def _smallest_k(d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(R, C) distances -> (R, k) int64 columns and float32 values, ascending, ties by column.

    argpartition, then a stable sort of the k picked; rows where ties straddle the k-th
    place (argpartition picks among them arbitrarily) get a full stable argsort.
    """
    if k >= d.shape[1]:
        idx = np.argsort(d, axis=1, kind="stable")[:, :k]
        return idx.astype(np.int64), np.take_along_axis(d, idx, axis=1)
    idx = np.sort(np.argpartition(d, k - 1, axis=1)[:, :k], axis=1)  # (R, k) by column
    val = np.take_along_axis(d, idx, axis=1)
    order = np.argsort(val, axis=1, kind="stable")
    idx, val = np.take_along_axis(idx, order, axis=1), np.take_along_axis(val, order, axis=1)
    for r in np.flatnonzero((d <= val[:, -1:]).sum(axis=1) > k):
        idx[r] = np.argsort(d[r], kind="stable")[:k]
        val[r] = d[r, idx[r]]
    return idx.astype(np.int64), val


def search(
    index: GalleryIndex,
    queries: np.ndarray | torch.Tensor,
    *,
    topk: int = 10,
    rerank: bool = False,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    query_pids: np.ndarray | None = None,
    query_camids: np.ndarray | None = None,
    exclude_same_camera: bool = False,
) -> SearchResult:
    """The ``topk`` nearest gallery items of each query.

    ``k = min(topk, N - E)``, E the most gallery items excluded for any query (0 without
    ``exclude_same_camera``): topk beyond the gallery is clamped, so every row is full.

    Re-ranking (``esnet.metrics.re_ranking_features`` on cosine distances, parameters k1,
    k2, lambda_value) runs over the queries plus, for exact/flat, the whole gallery; for
    faiss-ivf, the union of each query's IVF_RERANK_CANDIDATES nearest items (an
    approximation: neighbourhoods are computed inside that union). Q + G must stay within
    the one re-ranking limit, ``metrics.MAX_RERANK_ITEMS``. Cost: O((Q+G)^2 D) time,
    memory linear in Q + G plus the (Q, G) result.

    Args:
        index: from ``build_index``.
        queries: (Q, D) float L2-normalised rows, D = index.dim.
        topk: hits per query, >= 1.
        rerank: order by k-reciprocal re-ranked distances instead of cosine.
        k1, k2, lambda_value: re-ranking parameters (see ``re_ranking``).
        query_pids: (Q,) int identities (-1 = unknown): fills ``correct``; needs gallery pids.
        query_camids: (Q,) int cameras, for ``exclude_same_camera``.
        exclude_same_camera: drop gallery items with the query's pid (>= 0) AND camera
            (the standard re-ID protocol; junk items stay). Needs query and gallery pids
            and camids.
    Returns:
        SearchResult with (Q, k) arrays.
    """
    if not isinstance(index, GalleryIndex):
        raise ValueError(f"index must be a GalleryIndex from build_index, got {type(index).__name__}")
    q = _as_rows("queries", queries)
    nq, n = q.shape[0], len(index)
    if q.shape[1] != index.dim:
        raise ValueError(f"queries have D={q.shape[1]} but the index holds D={index.dim}")
    topk = _check_int("topk", topk, 1)
    qp = None if query_pids is None else _as_ids("query_pids", query_pids, nq, "query")
    qc = None if query_camids is None else _as_ids("query_camids", query_camids, nq, "query")
    if qp is not None and index.pids is None:
        raise ValueError("query_pids given but the index has no gallery pids to compare with")
    excl_max = 0
    if exclude_same_camera:
        if qp is None or qc is None or index.pids is None or index.camids is None:
            raise ValueError("exclude_same_camera needs query_pids, query_camids and gallery pids and camids")
        pairs, counts = np.unique(np.stack([index.pids, index.camids], 1), axis=0, return_counts=True)
        lookup = {(int(p), int(c)): int(m) for (p, c), m in zip(pairs, counts)}
        excl_max = max(lookup.get((int(p), int(c)), 0) if p >= 0 else 0 for p, c in zip(qp, qc))
    k = min(topk, n - excl_max)
    if k < 1:
        raise ValueError(f"exclude_same_camera removes the whole gallery ({n} items) for some query")

    def masked(d: np.ndarray, rows: slice, cols: np.ndarray) -> np.ndarray:
        """Set excluded (query, gallery col) pairs of d (rows of queries, cols of gallery) to inf."""
        if exclude_same_camera:
            p, c = qp[rows, None], qc[rows, None]
            d[(index.pids[cols] == p) & (index.camids[cols] == c) & (p >= 0)] = np.inf
        return d

    if rerank:
        if index.backend == "faiss-ivf":
            _, cand = index._faiss.search(q, min(n, max(IVF_RERANK_CANDIDATES, k + excl_max)))
            cols = np.unique(cand[cand >= 0])  # ascending: local order = gallery order
        else:
            cols = np.arange(n)
        g = index._tensor[torch.from_numpy(cols)] if index.backend == "faiss-ivf" else index._tensor
        dist = re_ranking_features(torch.from_numpy(q), g, "cosine", k1=k1, k2=k2, lambda_value=lambda_value)
        local, vals = _smallest_k(masked(dist, slice(None), cols), k)
        idx = cols[local]
    elif index.backend == "exact":
        idx, vals = np.empty((nq, k), np.int64), np.empty((nq, k), np.float32)
        step = max(1, _CHUNK_BYTES // (8 * n))
        for s in range(0, nq, step):
            d = (1.0 - torch.from_numpy(q[s:s + step]) @ index._tensor.T).numpy()  # (c, N)
            idx[s:s + step], vals[s:s + step] = _smallest_k(masked(d, slice(s, s + step), np.arange(n)), k)
    else:
        sims, ids = index._faiss.search(q, min(n, k + excl_max))  # (Q, k + E), -1 = not found
        d = np.where(ids >= 0, 1.0 - sims, np.inf).astype(np.float32)
        d = masked(d, slice(None), np.maximum(ids, 0))
        order = np.lexsort((ids, d), axis=1)[:, :k]  # by distance, then gallery index
        idx, vals = np.take_along_axis(ids, order, axis=1).astype(np.int64), np.take_along_axis(d, order, axis=1)
    if not np.isfinite(vals).all():
        raise ValueError(
            f"faiss-ivf found fewer than k={k} eligible hits for query {int(np.flatnonzero(~np.isfinite(vals).all(1))[0])} "
            f"(nprobe={index.nprobe} of nlist={index.nlist}); raise nprobe, lower topk or use backend 'exact'"
        )
    pids = index.pids[idx] if index.pids is not None else np.full((nq, k), -1, np.int64)
    camids = index.camids[idx] if index.camids is not None else np.full((nq, k), -1, np.int64)
    cameras = index.cameras[idx] if index.cameras is not None else np.full((nq, k), -1, np.int64)
    paths = None if index.paths is None else tuple(tuple(index.paths[j] for j in row) for row in idx)
    correct = None if qp is None else (pids == qp[:, None]) & (qp[:, None] >= 0)
    vals = vals.astype(np.float32, copy=False)
    for a in (idx, vals, pids, camids, cameras) + (() if correct is None else (correct,)):
        a.setflags(write=False)
    return SearchResult(idx, vals, pids, camids, paths, correct, index.backend, bool(rerank), cameras)
