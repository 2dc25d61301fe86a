"""Re-identification evaluation: CMC, mAP, mINP, VehicleID protocol, re-ranking, ROC.

One implementation of the ranking metrics, ``evaluate``: exact (a stable ordering of
the gallery by distance, ties broken by gallery index), vectorised over chunks of
queries, with bounded memory. The other functions build on it or sit beside it:

* ``evaluate_vehicleid``: one random gallery image per identity, repeated.
* ``re_ranking`` / ``re_ranking_features``: k-reciprocal re-ranking (Zhong et al., CVPR
  2017) with the numbers of torchreid's reference code, from distance matrices or, in memory
  linear in Q + G, from features.
* ``verification_roc``: pair verification ROC over query x gallery pairs.
* ``pairwise_distance``: cosine or Euclidean distance matrix with torch matmul.

Only numpy and torch (scikit-learn for the ROC, imported when called).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CHUNK_BYTES = 256 * 2**20
"""Working memory bound of one chunk of ``evaluate``, beyond its inputs (bytes)."""

_BYTES_PER_ELEMENT = 64
"""Upper estimate of ``evaluate``'s working bytes per query x gallery element of a chunk."""

_SPARSE_WORK_RATIO = 0.5
"""``evaluate`` takes the sparse path for a chunk when (candidates x ceil(log2(K+1))) is
at most this fraction of its elements, else the dense path; tests set 0 or inf to force one."""

MAX_RERANK_ITEMS = 150_000
"""The one size limit of re-ranking (``re_ranking``, ``re_ranking_features`` and every caller):
largest Q + G accepted. The work beyond the inputs and the (Q, G) output is ~0.5 GiB of chunk
buffers plus ~7 KiB per image with the default k1, k2 (about 1.2 GiB at 100,000 images);
MSMT17's 93,820 test images fit."""

MAX_ROC_PAIRS = 5_000_000
"""Default bound on the number of pairs ``verification_roc`` scores."""

METRICS = ("cosine", "euclidean")


# --------------------------------------------------------------------------- inputs


def _as_matrix(name: str, x: object, *, convert: bool = True) -> np.ndarray:
    """A 2-D real array as float32/float64, C-contiguous (copies only when needed).

    With ``convert=False`` the array is only checked (float16, integer or non-contiguous
    arrays come back as they are) so the caller can convert it a block of rows at a time
    with :func:`_as_float_rows` instead of copying a whole Market-size matrix.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {a.shape}")
    if a.dtype != np.float16 and a.dtype.kind not in "iu" and a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must hold float16/32/64 or integer values, got dtype {a.dtype}")
    return _as_float_rows(a) if convert else a


def _as_float_rows(a: np.ndarray) -> np.ndarray:
    """float16 -> float32, integers -> float64, C-contiguous (copies only when needed)."""
    if a.dtype == np.float16:
        a = a.astype(np.float32)
    elif a.dtype.kind in "iu":
        a = a.astype(np.float64)
    return np.ascontiguousarray(a)


def _as_ids(name: str, x: object, n: int, what: str) -> np.ndarray:
    """A 1-D integer id array of length ``n`` as int64."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    if a.shape[0] != n:
        raise ValueError(f"{name} must have one entry per {what} ({n}), got {a.shape[0]}")
    return a.astype(np.int64, copy=False)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _freeze(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.setflags(write=False)


# --------------------------------------------------------------------------- ranking


@dataclass(frozen=True, eq=False)
class RankResult:
    """Ranking metrics of one query set against one gallery.

    Ranks are 0-based positions among the *valid* gallery items of a query (junk and,
    under the standard protocol, same-id-same-camera items removed), ordered by
    distance with ties broken by gallery index. Frozen, with read-only arrays;
    ``eq=False`` (instances compare by identity: arrays have no single-bool ``==``).

    Attributes:
        cmc: (max_rank,) float64; cmc[k] = fraction of valid queries whose first correct
            match is at rank <= k.
        mAP: mean average precision over valid queries, in [0, 1].
        mINP: mean inverse negative penalty (Ye et al., TPAMI 2021) over valid queries.
        num_valid_queries: queries with at least one valid correct match.
        ap: (Q,) float64 average precision per query; NaN for skipped queries.
        first_hit: (Q,) int64 rank of the first correct match; -1 for skipped queries.
        hardest_positive: (Q,) int64 rank of the last correct match; -1 if skipped.
        num_positives: (Q,) int64 valid correct matches per query (0 = skipped).
        valid: (Q,) bool, False for skipped queries.
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    ap: np.ndarray
    first_hit: np.ndarray
    hardest_positive: np.ndarray
    num_positives: np.ndarray
    valid: np.ndarray

    def summary(self) -> dict[str, float]:
        """R1, R5, R10, mAP, mINP as fractions in [0, 1].

        Rank-k accuracies come from ``first_hit``, so they exist whatever ``max_rank`` was.
        """
        hits = self.first_hit[self.valid]
        out = {f"R{k}": float(np.mean(hits < k)) for k in (1, 5, 10)}
        out["mAP"] = self.mAP
        out["mINP"] = self.mINP
        return out


def evaluate(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    *,
    same_camera: bool = False,
    chunk_size: int | None = None,
) -> RankResult:
    """CMC, mAP and mINP under the standard Market-1501 / DukeMTMC / MSMT17 protocol.

    For each query, gallery items with pid -1 (junk) are ignored, and so are items with
    the query's pid AND camera (unless ``same_camera``, which ignores only junk). Queries
    left without a correct match are skipped (a query with pid -1 always is).
    AP = mean over the correct matches of the precision at their rank; INP = (number
    of correct matches) / (1-based rank of the last one). The ordering is exact and
    deterministic: by distance, ties by gallery index (what a stable sort gives).

    ``cmc`` always has ``max_rank`` entries, also when ``max_rank`` exceeds the gallery:
    cmc[k] is the fraction of valid queries with first hit at rank <= k, which reaches
    1.0 once k passes the last possible first hit (the same as padding with the last
    value; torchreid instead warns and truncates).

    How: queries are processed in chunks, with no Python loop over queries and no
    argsort of gallery rows. The correct matches of each query (a few, found through a
    pid index) are sorted by (distance, gallery index). Only wrong matches with
    distance <= the farthest correct match can precede one. When they are few (usual
    for trained features) they are gathered and placed among the correct matches by a
    batched binary search, then counted per gap with a histogram + cumsum; when they
    are many (e.g. random features) the chunk's rows are value-sorted instead and each
    correct match is binary-searched in its row. Distance ties are resolved by gallery
    index exactly in both cases. Memory: about 64 bytes per query x gallery element
    of a chunk at most (usually far less); the default ``chunk_size`` =
    CHUNK_BYTES // (64 * G) rows (212 for a 19,732-image gallery) keeps the working
    set under ~256 MiB beyond the inputs. A float16, integer or non-C-contiguous
    ``distmat`` is converted one chunk at a time, never copied whole.

    Args:
        distmat: (Q, G) float16/32/64 or integer distances, smaller = more similar. NaN
            is rejected; +-inf is allowed.
        q_pids: (Q,) int query identities.
        g_pids: (G,) int gallery identities, -1 = junk.
        q_camids: (Q,) int query cameras.
        g_camids: (G,) int gallery cameras.
        max_rank: length of the returned CMC curve, >= 1.
        same_camera: if True, same-id-same-camera gallery items count as matches.
        chunk_size: queries per chunk; None = sized from CHUNK_BYTES.
    Returns:
        RankResult with per-query arrays of length Q.
    Raises:
        ValueError: bad shapes/dtypes, NaN in distmat, or no query with a valid match.
    """
    dist = _as_matrix("distmat", distmat, convert=False)  # converted per chunk: no whole-matrix copy
    num_q, num_g = dist.shape
    if num_q == 0 or num_g == 0:
        raise ValueError(f"distmat must have at least one query and one gallery item, got shape {dist.shape}")
    qp = _as_ids("q_pids", q_pids, num_q, "distmat row")
    gp = _as_ids("g_pids", g_pids, num_g, "distmat column")
    qc = _as_ids("q_camids", q_camids, num_q, "distmat row")
    gc = _as_ids("g_camids", g_camids, num_g, "distmat column")
    max_rank = _check_int("max_rank", max_rank, 1)
    if chunk_size is None:
        chunk_size = max(1, CHUNK_BYTES // (_BYTES_PER_ELEMENT * num_g))
    chunk_size = _check_int("chunk_size", chunk_size, 1)

    gallery = _GalleryIndex(gp, gc)
    ap = np.full(num_q, np.nan)
    first_hit = np.full(num_q, -1, dtype=np.int64)
    hardest = np.full(num_q, -1, dtype=np.int64)
    num_pos = np.zeros(num_q, dtype=np.int64)
    for start in range(0, num_q, chunk_size):
        stop = min(start + chunk_size, num_q)
        rows = _as_float_rows(dist[start:stop])  # (c, G) float32/float64, C-contiguous
        ranks, npos = _positive_ranks(
            rows, qp[start:stop], qc[start:stop], gallery, same_camera=same_camera, row_offset=start
        )  # (c, K), (c,)
        del rows
        num_pos[start:stop] = npos
        if ranks.shape[1] == 0:
            continue
        has = npos > 0
        row, slot = np.nonzero(np.arange(ranks.shape[1])[None, :] < npos[:, None])  # every correct match
        precision = (slot + 1) / (ranks[row, slot] + 1)
        # bincount adds each row's terms in order: the sum does not depend on the chunking.
        ap[start:stop][has] = np.bincount(row, weights=precision, minlength=npos.size)[has] / npos[has]
        first_hit[start:stop][has] = ranks[has, 0]
        hardest[start:stop][has] = ranks[has, npos[has] - 1]

    valid = num_pos > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            "no query has a valid correct match in the gallery (after ignoring junk pid -1"
            + ("" if same_camera else " and same-id-same-camera items") + ")"
        )
    counts = np.bincount(np.minimum(first_hit[valid], max_rank), minlength=max_rank + 1)[:max_rank]
    cmc = np.cumsum(counts) / num_valid
    inp = num_pos[valid] / (hardest[valid] + 1)
    _freeze(cmc, ap, first_hit, hardest, num_pos, valid)
    return RankResult(
        cmc=cmc,
        mAP=float(np.mean(ap[valid])),
        mINP=float(np.mean(inp)),
        num_valid_queries=num_valid,
        ap=ap,
        first_hit=first_hit,
        hardest_positive=hardest,
        num_positives=num_pos,
        valid=valid,
    )


class _GalleryIndex:
    """Gallery items grouped by pid: the items of pid p are ``by_pid[lo(p):hi(p)]``, ascending."""

    def __init__(self, g_pids: np.ndarray, g_camids: np.ndarray) -> None:
        self.pids, self.camids = g_pids, g_camids
        self.junk = g_pids == -1  # (G,)
        self.by_pid = np.argsort(g_pids, kind="stable")  # (G,) ascending index within a pid
        self.sorted_pids = g_pids[self.by_pid]

    def same_pid(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of all gallery items sharing a query's pid, junk excluded, row-major."""
        lo = np.searchsorted(self.sorted_pids, q_pids, side="left")
        hi = np.searchsorted(self.sorted_pids, q_pids, side="right")
        lens = np.where(q_pids == -1, 0, hi - lo)  # (c,)
        rows = np.repeat(np.arange(q_pids.size), lens)
        offs = np.arange(rows.size) - np.repeat(np.cumsum(lens) - lens, lens)
        cols = self.by_pid[np.repeat(lo, lens) + offs]
        return rows, cols


def _positive_ranks(
    dist: np.ndarray,
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    gallery: _GalleryIndex,
    *,
    same_camera: bool,
    row_offset: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of every correct match of a chunk of queries among their valid gallery items.

    Args:
        dist: (c, G) float32/float64 distances of c queries.
        q_pids, q_camids: (c,) int64.
        gallery: the gallery's pid index.
        row_offset: index of the chunk's first query (for error messages).
    Returns:
        ranks: (c, K) int64, K = most correct matches of any query in the chunk;
            ranks[r, k] = 0-based rank of the (k+1)-th nearest correct match of query r
            among its valid gallery items; 0 for k >= npos[r].
        npos: (c,) int64 valid correct matches per query.
    """
    c, num_g = dist.shape
    nan_rows = np.isnan(dist).any(axis=1)
    if nan_rows.any():
        raise ValueError(f"distmat must not contain NaN (row {row_offset + int(np.argmax(nan_rows))} has one)")

    # Correct matches, sorted per row by (distance, gallery index).
    srow, scol = gallery.same_pid(q_pids)  # (S,) every non-junk item of the query's pid
    keep = np.ones(srow.size, dtype=bool) if same_camera else gallery.camids[scol] != q_camids[srow]
    prow, pcol = srow[keep], scol[keep]
    pdist = dist[prow, pcol]
    order = np.lexsort((pcol, pdist, prow))
    prow, pcol, pdist = prow[order], pcol[order], pdist[order]  # (P,)
    npos = np.bincount(prow, minlength=c)  # (c,)
    K = int(npos.max(initial=0))
    if K == 0:
        return np.zeros((c, 0), dtype=np.int64), npos
    pstart = np.cumsum(npos) - npos  # (c,) first correct match of each row in pdist
    slot = np.arange(prow.size) - pstart[prow]  # (P,) 0-based order of each correct match

    # Only wrong matches with distance <= the farthest correct match can precede one.
    farthest = np.full(c, -np.inf, dtype=dist.dtype)
    has = npos > 0
    farthest[has] = pdist[pstart[has] + npos[has] - 1]
    candidates = dist <= farthest[:, None]  # (c, G), still with junk and same-pid items
    num_cand = np.count_nonzero(candidates)
    if num_cand * K.bit_length() <= _SPARSE_WORK_RATIO * dist.size:
        wrong = _wrong_ahead_sparse(dist, candidates, q_pids, gallery, prow, pcol, pdist, pstart, npos)
    else:
        del candidates
        wrong = _wrong_ahead_dense(dist, q_pids, gallery, srow, scol, prow, pcol, pdist)
    ranks = np.zeros((c, K), dtype=np.int64)
    ranks[prow, slot] = slot + wrong
    return ranks, npos


def _segment_count(
    sorted_vals: np.ndarray, base: np.ndarray, length: np.ndarray, keys: np.ndarray, side: str
) -> np.ndarray:
    """Batched binary search: for each i, how many of the ascending segment
    ``sorted_vals[base[i] : base[i] + length[i]]`` are < keys[i] (side "left") or
    <= keys[i] (side "right"). All (n,) int64 / dtype arrays; returns (n,) int64."""
    lo = np.zeros(keys.size, dtype=np.int64)
    hi = length.astype(np.int64, copy=True)
    for _ in range(int(length.max(initial=0)).bit_length()):  # ceil(log2(max length + 1))
        mid = (lo + hi) >> 1
        v = np.take(sorted_vals, base + mid, mode="clip")  # clipped reads only where lo == hi
        go = v < keys if side == "left" else v <= keys
        active = lo < hi
        lo = np.where(active & go, mid + 1, lo)
        hi = np.where(active & ~go, mid, hi)
    return lo


def _wrong_ahead_sparse(
    dist: np.ndarray,
    candidates: np.ndarray,
    q_pids: np.ndarray,
    gallery: _GalleryIndex,
    prow: np.ndarray,
    pcol: np.ndarray,
    pdist: np.ndarray,
    pstart: np.ndarray,
    npos: np.ndarray,
) -> np.ndarray:
    """Wrong matches ahead of each correct match, from the few candidate wrong matches.

    Each candidate is placed among its row's sorted correct matches by a batched binary
    search on (distance, gallery index); a per-row histogram + cumsum gives the counts.
    Returns (P,) int64, aligned with prow.
    """
    c, num_g = dist.shape
    K = int(npos.max())
    flat = np.flatnonzero(candidates)  # (M,)
    crow, ccol = np.divmod(flat, num_g)
    keep = ~gallery.junk[ccol] & (gallery.pids[ccol] != q_pids[crow])
    crow, ccol, cdist = crow[keep], ccol[keep], dist.ravel()[flat[keep]]
    del flat, keep
    base, length = pstart[crow], npos[crow]
    ahead = _segment_count(pdist, base, length, cdist, "left")  # correct matches strictly nearer
    at = base + ahead
    tied = (ahead < length) & (np.take(pdist, at, mode="clip") == cdist)
    if tied.any():  # equal distances: the correct matches of lower gallery index go first
        t = np.flatnonzero(tied)
        group = _segment_count(pdist, base[t], length[t], cdist[t], "right") - ahead[t]
        ahead[t] += _segment_count(pcol, at[t], group, ccol[t], "left")
    counts = np.bincount(crow * (K + 1) + ahead, minlength=c * (K + 1)).reshape(c, K + 1)
    wrong = np.cumsum(counts[:, :K], axis=1)  # (c, K): wrong matches before correct match k
    return wrong[prow, np.arange(prow.size) - pstart[prow]]


def _wrong_ahead_dense(
    dist: np.ndarray,
    q_pids: np.ndarray,
    gallery: _GalleryIndex,
    srow: np.ndarray,
    scol: np.ndarray,
    prow: np.ndarray,
    pcol: np.ndarray,
    pdist: np.ndarray,
) -> np.ndarray:
    """Wrong matches ahead of each correct match, by sorting the chunk's rows.

    Used when most wrong matches precede some correct match (e.g. random features):
    the rows, with ignored and same-pid items set to +inf, are value-sorted (numpy's
    vectorised quicksort) and each correct match is binary-searched in its row; ties
    with a correct match's distance are recounted exactly on the unsorted row.
    Returns (P,) int64, aligned with prow.
    """
    c, num_g = dist.shape
    vals = dist.copy()  # (c, G)
    vals[:, gallery.junk] = np.inf
    vals[srow, scol] = np.inf
    vals.sort(axis=1)
    flat = vals.ravel()
    base = prow * num_g
    wrong = _segment_count(flat, base, np.full(prow.size, num_g), pdist, "left")  # strictly nearer
    tied = (wrong < num_g) & (np.take(flat, base + wrong, mode="clip") == pdist)
    del vals, flat
    tied_idx = np.flatnonzero(tied)
    # (T, G) temporaries per block: dist[r] (itemsize bytes per element) with a bool mask
    # beside it, later three bool masks: at most itemsize + 1 bytes per element at once.
    # Sized for itemsize + 4, so the block and the chunk's own rows stay within CHUNK_BYTES.
    step = max(1, CHUNK_BYTES // ((dist.itemsize + 4) * num_g))
    cols = np.arange(num_g)
    for s in range(0, tied_idx.size, step):  # blocks of tied correct matches, not of queries
        t = tied_idx[s:s + step]
        r = prow[t]
        same = (dist[r] == pdist[t, None]) & (cols[None, :] < pcol[t, None])  # (T, G)
        same &= ~gallery.junk[None, :] & (gallery.pids[None, :] != q_pids[r][:, None])
        wrong[t] += np.count_nonzero(same, axis=1)
        del same  # before the next block allocates its own
    return wrong


# --------------------------------------------------------------------------- VehicleID


@dataclass(frozen=True, eq=False)
class VehicleIDResult:
    """Mean and population standard deviation (ddof=0) over the random gallery draws.

    Attributes:
        cmc_mean, cmc_std: (max_rank,) float64.
        mAP_mean, mAP_std, r1_mean, r1_std, r5_mean, r5_std: fractions in [0, 1].
        repeats: number of draws.
    """

    cmc_mean: np.ndarray
    cmc_std: np.ndarray
    mAP_mean: float
    mAP_std: float
    r1_mean: float
    r1_std: float
    r5_mean: float
    r5_std: float
    repeats: int


def evaluate_vehicleid(
    distmat_test: np.ndarray,
    pids: np.ndarray,
    *,
    repeats: int = 10,
    seed: int = 0,
    max_rank: int = 50,
) -> VehicleIDResult:
    """VehicleID protocol: one random image per identity is the gallery, the rest query.

    Each repeat draws the gallery with ``np.random.default_rng(seed)`` (one generator for
    all repeats, so the whole result is fixed by ``seed``); cameras play no part. An
    identity with a single image contributes a gallery image and no query.

    Args:
        distmat_test: (N, N) distances among all test images.
        pids: (N,) int identities, no -1.
        repeats: number of random gallery draws, >= 1.
        seed: seed of the draws.
        max_rank: CMC length.
    Returns:
        VehicleIDResult.
    """
    dist = _as_matrix("distmat_test", distmat_test)
    n = dist.shape[0]
    if dist.shape != (n, n) or n == 0:
        raise ValueError(f"distmat_test must be a non-empty square (N, N) matrix, got shape {dist.shape}")
    ids = _as_ids("pids", pids, n, "distmat_test row")
    if bool((ids == -1).any()):
        raise ValueError("pids must not contain -1 (junk) under the VehicleID protocol")
    repeats = _check_int("repeats", repeats, 1)
    max_rank = _check_int("max_rank", max_rank, 1)
    if np.unique(ids).size == n:
        raise ValueError("every identity has a single image: the VehicleID protocol leaves no query")

    rng = np.random.default_rng(seed)
    cmcs, maps, r1s, r5s = [], [], [], []
    for _ in range(repeats):
        perm = rng.permutation(n)
        _, first = np.unique(ids[perm], return_index=True)
        g_idx = np.sort(perm[first])
        is_query = np.ones(n, dtype=bool)
        is_query[g_idx] = False
        q_idx = np.flatnonzero(is_query)
        res = evaluate(
            dist[np.ix_(q_idx, g_idx)], ids[q_idx], ids[g_idx],
            np.zeros(q_idx.size, dtype=np.int64), np.ones(g_idx.size, dtype=np.int64),
            max_rank=max_rank,
        )
        summ = res.summary()
        cmcs.append(res.cmc)
        maps.append(res.mAP)
        r1s.append(summ["R1"])
        r5s.append(summ["R5"])
    cmc = np.stack(cmcs)  # (repeats, max_rank)
    cmc_mean, cmc_std = cmc.mean(axis=0), cmc.std(axis=0)
    _freeze(cmc_mean, cmc_std)
    return VehicleIDResult(
        cmc_mean=cmc_mean,
        cmc_std=cmc_std,
        mAP_mean=float(np.mean(maps)),
        mAP_std=float(np.std(maps)),
        r1_mean=float(np.mean(r1s)),
        r1_std=float(np.std(r1s)),
        r5_mean=float(np.mean(r5s)),
        r5_std=float(np.std(r5s)),
        repeats=repeats,
    )


# --------------------------------------------------------------------------- re-ranking
# k-reciprocal re-ranking, computed as torchreid's ``re_ranking`` (deep-person-reid,
# torchreid/utils/rerank.py, from Zhong et al.'s code) computes it, in bounded memory.
# Self-contained: it uses only _as_matrix, _check_int, _as_features, _unit_rows, CHUNK_BYTES
# and MAX_RERANK_ITEMS from the rest of this module.


def re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with
    k-reciprocal Encoding", CVPR 2017) of precomputed distance matrices.

    The numbers of the reference code (torchreid's and fast-reid's ``re_ranking``, same
    signature), which published ``+re-ranking`` results use. All N = Q + G images form one
    set; with d the input distances (q_q and g_g symmetric, as distance matrices are):

    0. D(i, j) = d(i, j)^2 / s(i), s(i) = max_k d(i, k)^2: squared, each row divided by
       its own maximum (the reference's per-column normalisation of the symmetric matrix).
    1. N(i, k): the k nearest items of i (itself included) by D, ties by index.
    2. R(i, k) = {j in N(i, k+1) : i in N(j, k+1)} (k-reciprocal neighbours).
    3. R*(i) = R(i, k1) plus every R(j, round(k1/2)), j in R(i, k1), that shares more
       than 2/3 of its members with R(i, k1).
    4. V[i, j] = exp(-D(i, j)) on R*(i), rows normalised to sum 1.
    5. Local query expansion: V[i] <- mean of V[j] over the k2 nearest items j of i.
    6. Jaccard distance d_J(i, j) = 1 - sum min(V_i, V_j) / sum max(V_i, V_j).
    7. Result = (1 - lambda_value) * d_J + lambda_value * D, for query x gallery.

    So ``lambda_value=1`` returns ``q_g_dist**2 / s(query)``. The only departure from the
    reference is its unstable sort: exact ties are broken by index here. Note that torchreid
    feeds it squared Euclidean distances (squared once more inside); esnet feeds cosine
    distances (``re_ranking_features``).

    The (N, N) matrix is never assembled: beyond the inputs (O(N^2) themselves) the work is
    chunked (~256 MiB buffers) plus O(N * k1^2 * k2) sparse encodings and the (Q, G)
    output. For sets too large to hold q_q and g_g use :func:`re_ranking_features`.

    Args:
        q_g_dist: (Q, G) query-gallery distances, finite.
        q_q_dist: (Q, Q) query-query distances.
        g_g_dist: (G, G) gallery-gallery distances.
        k1: neighbourhood size of the k-reciprocal sets, 1 <= k1 < Q + G.
        k2: neighbours averaged by local query expansion (1 = none), 1 <= k2 <= Q + G.
        lambda_value: weight of the original distance, in [0, 1].
    Returns:
        (Q, G) float32 re-ranked distances.
    Raises:
        ValueError: bad shapes or parameters, non-finite distances, Q + G above
            MAX_RERANK_ITEMS, or an item at distance 0 from every item.
    """
    qg = _as_matrix("q_g_dist", q_g_dist)
    qq = _as_matrix("q_q_dist", q_q_dist)
    gg = _as_matrix("g_g_dist", g_g_dist)
    num_q, num_g = qg.shape
    if qq.shape != (num_q, num_q):
        raise ValueError(f"q_q_dist must be (Q, Q) = {(num_q, num_q)} to match q_g_dist {qg.shape}, got {qq.shape}")
    if gg.shape != (num_g, num_g):
        raise ValueError(f"g_g_dist must be (G, G) = {(num_g, num_g)} to match q_g_dist {qg.shape}, got {gg.shape}")
    k1, k2 = _check_rerank_args(num_q, num_g, k1, k2, lambda_value)
    for name, a in (("q_g_dist", qg), ("q_q_dist", qq), ("g_g_dist", gg)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} must be finite (no NaN or inf)")
    return _re_rank(_DistTable(qq, qg, gg), k1, k2, float(lambda_value))


def re_ranking_features(
    qf: np.ndarray | torch.Tensor,
    gf: np.ndarray | torch.Tensor,
    metric: str = "cosine",
    *,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranking from features, in memory linear in Q + G (plus the output).

    Equal to ``re_ranking(pairwise_distance(qf, gf, metric), pairwise_distance(qf, qf,
    metric), pairwise_distance(gf, gf, metric), k1, k2, lambda_value)`` (to float32
    rounding) without ever holding a (Q+G, Q+G) or (G, G) matrix: the nearest neighbours
    and row maxima come from one chunked torch-matmul pass over the rows of the (N, N)
    distances (exact k-NN, O(N^2 D) time), the distances on R*(i) from the features.

    Memory beyond the inputs and the (Q, G) float32 output: chunks of ~256 MiB plus
    O(N * k1^2 * k2) for the sparse encodings (~7 KiB per image with the defaults).
    ``benchmarks/rerank_memory.py`` measured on 2 CPU cores, D = 256: 3,977 x 28,023 in
    140 s with a peak of 807 MiB including the 425 MiB output (the dense path's g_g alone
    would be 3 GiB). Time grows as N^2 (MSMT17, 11,659 x 82,161: ~20 min on 2 cores).
    Q + G up to MAX_RERANK_ITEMS, which MSMT17 (93,820 test images) fits.

    Args:
        qf: (Q, D) query features, any norm (cosine: no zero rows).
        gf: (G, D) gallery features.
        metric: ``cosine`` or ``euclidean`` as in :func:`pairwise_distance`.
        k1, k2, lambda_value: as in :func:`re_ranking`.
    Returns:
        (Q, G) float32 re-ranked distances.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    q, g = _as_features("qf", qf), _as_features("gf", gf)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"qf and gf must have the same feature size, got {q.shape[1]} and {g.shape[1]}")
    if q.device != g.device:
        raise ValueError(f"qf and gf must be on the same device, got {q.device} and {g.device}")
    k1, k2 = _check_rerank_args(q.shape[0], g.shape[0], k1, k2, lambda_value)
    if metric == "cosine":
        q, g = _unit_rows("qf", q), _unit_rows("gf", g)
    return _re_rank(_FeatureTable(q, g, metric), k1, k2, float(lambda_value))


def _check_rerank_args(num_q: int, num_g: int, k1: object, k2: object, lambda_value: object) -> tuple[int, int]:
    """Validated (k1, k2); raises ValueError naming the bad value and the rule."""
    n = num_q + num_g
    if num_q == 0 or num_g == 0:
        raise ValueError(f"re-ranking needs at least one query and one gallery item, got Q={num_q}, G={num_g}")
    if n > MAX_RERANK_ITEMS:
        raise ValueError(f"re-ranking {num_q} queries + {num_g} gallery items: Q + G = {n} exceeds "
                         f"MAX_RERANK_ITEMS = {MAX_RERANK_ITEMS}")
    k1 = _check_int("k1", k1, 1)
    k2 = _check_int("k2", k2, 1)
    if k1 >= n:
        raise ValueError(f"k1 must be < Q + G = {n}, got {k1}")
    if k2 > n:
        raise ValueError(f"k2 must be <= Q + G = {n}, got {k2}")
    if isinstance(lambda_value, bool) or not (isinstance(lambda_value, (int, float)) and 0.0 <= lambda_value <= 1.0):
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value!r}")
    return k1, k2


def _re_rank(table: _DistTable | _FeatureTable, k1: int, k2: int, lambda_value: float) -> np.ndarray:
    """Steps 0-7 of :func:`re_ranking` over a distance source; (Q, G) float32."""
    n, num_q = table.n, table.num_q
    num_g = n - num_q
    nn, scale = _nearest(table, max(k1 + 1, k2))  # (N, max(k1+1, k2)) sorted; (N,) row max of d^2
    flat = np.flatnonzero(~(scale > 0))
    if flat.size:
        i = int(flat[0])
        which = f"query {i}" if i < num_q else f"gallery item {i - num_q}"
        raise ValueError(f"{which} is at distance 0 from every item: re-ranking divides each row by its "
                         "largest squared distance, which must be > 0")
    rstar_idx, rstar_ok = _expanded_reciprocal(nn, k1)  # (N, W)
    v_val = _weights(table, rstar_idx, rstar_ok, scale)  # (N, W) step 4
    v_idx = np.where(rstar_ok, rstar_idx, n)  # index N = empty slot
    del rstar_idx, rstar_ok
    e_row, e_col, e_val = _query_expansion(v_idx, v_val, nn[:, :k2], n)  # step 5, COO row-major
    del v_idx, v_val
    jaccard_min = _min_sums(e_row, e_col, e_val, num_q, num_g)  # step 6, chunked (Q, G) writer
    out = np.empty((num_q, num_g), dtype=np.float32)
    step = max(1, CHUNK_BYTES // (8 * 4 * num_g))
    for s in range(0, num_q, step):
        e = min(s + step, num_q)
        m = jaccard_min(s, e)
        jac = 1.0 - m / (2.0 - m)
        d = table.qg_rows(s, e).astype(np.float64)  # (c, G)
        out[s:e] = (1.0 - lambda_value) * jac + lambda_value * (d * d / scale[s:e, None])
    return out


class _DistTable:
    """The (N, N) matrix [[q_q, q_g], [q_g^T, g_g]] without building it."""

    def __init__(self, qq: np.ndarray, qg: np.ndarray, gg: np.ndarray) -> None:
        self.qq, self.qg, self.gg = qq, qg, gg
        self.num_q = qq.shape[0]
        self.n = qq.shape[0] + gg.shape[0]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, N) rows, dtype of the inputs (float64 if they differ)."""
        nq = self.num_q
        dtype = np.result_type(self.qq, self.qg, self.gg)
        out = np.empty((stop - start, self.n), dtype=dtype)
        a, b = start, min(stop, nq)
        if a < b:
            out[: b - a, :nq] = self.qq[a:b]
            out[: b - a, nq:] = self.qg[a:b]
        a, b = max(start, nq), stop
        if a < b:
            out[a - start:, :nq] = self.qg[:, a - nq:b - nq].T
            out[a - start:, nq:] = self.gg[a - nq:b - nq]
        return out

    def qg_rows(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, G) query-gallery rows."""
        return self.qg[start:stop]

    def pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Entries (i, j) of the full matrix, float64, same shape as i and j."""
        nq = self.num_q
        out = np.empty(i.shape, dtype=np.float64)
        iq, jq = i < nq, j < nq
        s = iq & jq
        out[s] = self.qq[i[s], j[s]]
        s = iq & ~jq
        out[s] = self.qg[i[s], j[s] - nq]
        s = ~iq & jq
        out[s] = self.qg[j[s], i[s] - nq]
        s = ~iq & ~jq
        out[s] = self.gg[i[s] - nq, j[s] - nq]
        return out


class _FeatureTable:
    """The (N, N) distances of [q; g] computed on demand from the features (float32 torch)."""

    def __init__(self, q: torch.Tensor, g: torch.Tensor, metric: str) -> None:
        self.f = torch.cat([q, g])  # (N, D)
        self.sq = (self.f * self.f).sum(dim=1)  # (N,)
        self.metric = metric
        self.num_q = q.shape[0]
        self.n = self.f.shape[0]

    def _dist(self, prod: torch.Tensor, sq_a: torch.Tensor, sq_b: torch.Tensor) -> torch.Tensor:
        # The same expressions as pairwise_distance, so both give the same float32 numbers.
        if self.metric == "cosine":
            return 1.0 - prod
        return (sq_a + sq_b - 2.0 * prod).clamp_(min=0.0).sqrt_()

    def rows(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, N) float32 rows."""
        prod = self.f[start:stop] @ self.f.T  # (c, N)
        return self._dist(prod, self.sq[start:stop, None], self.sq[None, :]).cpu().numpy()

    def qg_rows(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, G) float32 query-gallery rows."""
        g = self.f[self.num_q:]
        prod = self.f[start:stop] @ g.T  # (c, G)
        return self._dist(prod, self.sq[start:stop, None], self.sq[None, self.num_q:]).cpu().numpy()

    def pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Distances of the pairs (i, j), float64, same shape as i and j ((c, W) index arrays)."""
        out = np.empty(i.shape, dtype=np.float64)
        flat_i, flat_j, flat_o = i.reshape(-1), j.reshape(-1), out.reshape(-1)
        step = max(1, CHUNK_BYTES // (8 * self.f.shape[1]))  # two gathered (step, D) float32 blocks
        for s in range(0, flat_i.size, step):
            a = torch.from_numpy(np.array(flat_i[s:s + step])).to(self.f.device)  # copies: i may be a broadcast view
            b = torch.from_numpy(np.array(flat_j[s:s + step])).to(self.f.device)
            prod = (self.f[a] * self.f[b]).sum(dim=1)  # (c,)
            flat_o[s:s + step] = self._dist(prod, self.sq[a], self.sq[b]).cpu().numpy()
        return out


def _nearest(table: _DistTable | _FeatureTable, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest items and row scales in one chunked pass over the rows.

    Returns:
        (N, k) int64 indices of the k nearest items of every item, ordered by (squared
        distance, index); (N,) float64 max over each row of the squared distances.
    """
    n = table.n
    out = np.empty((n, k), dtype=np.int64)
    scale = np.empty(n, dtype=np.float64)
    step = max(1, CHUNK_BYTES // (48 * n))
    for s in range(0, n, step):
        block = table.rows(s, min(s + step, n))  # (c, N)
        block *= block  # squared, in the inputs' precision like the reference
        c = block.shape[0]
        scale[s:s + c] = block.max(axis=1)
        kth = np.partition(block, k - 1, axis=1)[:, k - 1:k]  # (c, 1) k-th smallest value
        less = block < kth
        equal = block == kth
        need = k - less.sum(axis=1, keepdims=True)  # (c, 1) >= 1
        chosen = less | (equal & (np.cumsum(equal, axis=1) <= need))  # exactly k per row
        idx = np.nonzero(chosen)[1].reshape(c, k)  # ascending index per row
        order = np.argsort(np.take_along_axis(block, idx, axis=1), axis=1, kind="stable")
        out[s:s + c] = np.take_along_axis(idx, order, axis=1)
    return out, scale


def _weights(table: _DistTable | _FeatureTable, idx: np.ndarray, ok: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Step 4: (N, W) float64 V values exp(-d(i, j)^2 / s(i)) on R*(i), rows summing to 1."""
    n, width = idx.shape
    v_val = np.empty((n, width), dtype=np.float64)
    step = max(1, CHUNK_BYTES // (40 * width))
    for s in range(0, n, step):
        e = min(s + step, n)
        rows = np.broadcast_to(np.arange(s, e)[:, None], (e - s, width))
        d = table.pairs(rows, np.where(ok[s:e], idx[s:e], 0))  # (c, W)
        w = np.where(ok[s:e], np.exp(-(d * d) / scale[s:e, None]), 0.0)
        v_val[s:e] = w / w.sum(axis=1, keepdims=True)
    return v_val


def _reciprocal(nn: np.ndarray) -> np.ndarray:
    """(N, k) bool: nn[i, a] has i among its own first k neighbours."""
    n, k = nn.shape
    out = np.empty(nn.shape, dtype=bool)
    step = max(1, CHUNK_BYTES // (9 * k * k))
    for s in range(0, n, step):
        e = min(s + step, n)
        out[s:e] = (nn[nn[s:e]] == np.arange(s, e)[:, None, None]).any(axis=2)
    return out


def _expanded_reciprocal(nn: np.ndarray, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """R*(i) of step 3 as padded rows: (N, W) int64 sorted indices and (N, W) bool mask."""
    n = nn.shape[0]
    kh = int(np.around(k1 / 2.0))
    nn1, nnh = nn[:, : k1 + 1], nn[:, : kh + 1]
    r1, rh = _reciprocal(nn1), _reciprocal(nnh)  # (N, k1+1), (N, kh+1)
    a, b = k1 + 1, kh + 1
    width = a + a * b
    idx = np.empty((n, width), dtype=np.int64)
    ok = np.empty((n, width), dtype=bool)
    step = max(1, CHUNK_BYTES // (2 * a * b * a))
    for s in range(0, n, step):
        e = min(s + step, n)
        cand, cand_ok = nn1[s:e], r1[s:e]  # (c, a)
        members, members_ok = nnh[cand], rh[cand]  # (c, a, b)
        in_r = ((members[..., None] == cand[:, None, None, :]) & cand_ok[:, None, None, :]).any(axis=3)
        shared = (in_r & members_ok).sum(axis=2)  # (c, a)
        take = cand_ok & (3 * shared > 2 * members_ok.sum(axis=2))  # shared > 2/3 |R(j, k1/2)|
        ent = np.concatenate([cand, members.reshape(e - s, -1)], axis=1)  # (c, W)
        ent_ok = np.concatenate([cand_ok, (members_ok & take[:, :, None]).reshape(e - s, -1)], axis=1)
        ent = np.sort(np.where(ent_ok, ent, n), axis=1)
        first = np.ones_like(ent_ok)
        first[:, 1:] = ent[:, 1:] != ent[:, :-1]
        idx[s:e] = ent
        ok[s:e] = first & (ent < n)
    return idx, ok


def _query_expansion(
    v_idx: np.ndarray, v_val: np.ndarray, nbrs: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 5: mean of the V rows of each item's k2 nearest items, merged per column.

    Args:
        v_idx, v_val: (N, W) padded sparse rows of V (index n = empty, value 0).
        nbrs: (N, k2) nearest items.
    Returns:
        COO arrays (row, col, val), sorted by row then col, empty slots dropped.
    """
    k2 = nbrs.shape[1]
    width = v_idx.shape[1] * k2
    rows_out, cols_out, vals_out = [], [], []
    step = max(1, CHUNK_BYTES // (40 * width))
    for s in range(0, n, step):
        e = min(s + step, n)
        idx = v_idx[nbrs[s:e]].reshape(e - s, width)
        val = v_val[nbrs[s:e]].reshape(e - s, width) / k2
        order = np.argsort(idx, axis=1, kind="stable")
        idx = np.take_along_axis(idx, order, axis=1).ravel()
        val = np.take_along_axis(val, order, axis=1).ravel()
        start = np.ones(idx.size, dtype=bool)
        start[1:] = idx[1:] != idx[:-1]
        start[::width] = True  # a new row always starts a new run
        starts = np.flatnonzero(start)
        sums = np.add.reduceat(val, starts)
        col = idx[starts]
        keep = col < n
        rows_out.append(s + starts[keep] // width)
        cols_out.append(col[keep])
        vals_out.append(sums[keep])
    return np.concatenate(rows_out), np.concatenate(cols_out), np.concatenate(vals_out)


def _min_sums(e_row: np.ndarray, e_col: np.ndarray, e_val: np.ndarray, num_q: int, num_g: int):
    """Step 6 kernel: returns f(start, stop) -> (stop-start, G) float64 of sum_k min(V_q, V_g).

    Gallery rows go into an inverted index (column -> gallery entries); each query
    entry meets the gallery entries of its column, and the mins are summed per
    (query, gallery) pair with one bincount.
    """
    n = num_q + num_g
    is_g = e_row >= num_q
    order = np.argsort(e_col[is_g], kind="stable")
    g_col = e_col[is_g][order]
    g_row = e_row[is_g][order] - num_q
    g_val = e_val[is_g][order]
    indptr = np.searchsorted(g_col, np.arange(n + 1))
    q_ptr = np.searchsorted(e_row, np.arange(num_q + 1))  # e_row sorted: query entries first

    def block(start: int, stop: int) -> np.ndarray:
        acc = np.zeros((stop - start) * num_g, dtype=np.float64)
        lo, hi = q_ptr[start], q_ptr[stop]
        col, val, row = e_col[lo:hi], e_val[lo:hi], e_row[lo:hi] - start
        cnt = indptr[col + 1] - indptr[col]  # gallery entries sharing each query entry's column
        cum = np.concatenate([[0], np.cumsum(cnt)])
        limit = max(1, CHUNK_BYTES // 40)  # expanded (query entry, gallery entry) pairs per pass
        a = 0
        while a < cnt.size:
            b = max(a + 1, int(np.searchsorted(cum, cum[a] + limit, side="right")) - 1)
            c = cnt[a:b]
            rep = np.repeat(np.arange(a, b), c)  # query entry of each pair
            offs = np.arange(rep.size) - np.repeat(cum[a:b] - cum[a], c)
            gpos = indptr[col[rep]] + offs  # gallery entry of each pair
            mins = np.minimum(val[rep], g_val[gpos])
            acc += np.bincount(row[rep] * num_g + g_row[gpos], weights=mins, minlength=acc.size)
            a = b
        return acc.reshape(stop - start, num_g)

    return block


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True, eq=False)
class VerificationResult:
    """Pair verification ROC ("same identity?" from the distance).

    Attributes:
        fpr, tpr: (T,) float64 ROC points, fpr ascending.
        thresholds: (T,) float64 distance thresholds, ascending; a pair is accepted when
            its distance <= threshold (the first is -inf: nothing accepted).
        auc: area under the ROC curve.
        tpr_at_fpr: target FPR -> the highest TPR among ROC points with fpr <= target.
        threshold_at_fpr: target FPR -> the distance threshold of that point.
        best_threshold, best_tpr, best_fpr: the point maximising Youden's J = tpr - fpr.
        num_positive_pairs, num_negative_pairs: pairs scored (after subsampling).
        subsampled: whether pairs were subsampled to the bound.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float
    tpr_at_fpr: dict[float, float]
    threshold_at_fpr: dict[float, float]
    best_threshold: float
    best_tpr: float
    best_fpr: float
    num_positive_pairs: int
    num_negative_pairs: int
    subsampled: bool


def verification_roc(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray | None = None,
    g_camids: np.ndarray | None = None,
    *,
    fpr_targets: tuple[float, ...] = (1e-3, 1e-2, 1e-1),
    max_pairs: int = MAX_ROC_PAIRS,
    seed: int = 0,
) -> VerificationResult:
    """ROC of same-identity verification over query x gallery pairs (score = -distance).

    Pairs with a junk gallery item (pid -1) are dropped, and with cameras given, so are
    same-id-same-camera pairs (as in ``evaluate``). If more than ``max_pairs`` pairs
    remain they are subsampled: positives are kept up to max(max_pairs - negatives,
    max_pairs // 2), negatives fill the rest, each pair kept independently with its
    class's probability from ``np.random.default_rng(seed)``, so the counts are about,
    not exactly, the budget and the result is fixed by ``seed``. Per-class subsampling
    leaves TPR and FPR unbiased.

    Args:
        distmat: (Q, G) finite distances.
        q_pids: (Q,) int. g_pids: (G,) int, -1 = junk.
        q_camids, g_camids: (Q,), (G,) int cameras, both or neither.
        fpr_targets: FPR values in (0, 1] at which to read TPR and threshold.
        max_pairs: pair budget, >= 2.
        seed: subsampling seed.
    Returns:
        VerificationResult.
    """
    from sklearn.metrics import auc as area_under, roc_curve  # heavy import, only when used

    dist = _as_matrix("distmat", distmat)
    num_q, num_g = dist.shape
    qp = _as_ids("q_pids", q_pids, num_q, "distmat row")
    gp = _as_ids("g_pids", g_pids, num_g, "distmat column")
    if (q_camids is None) != (g_camids is None):
        raise ValueError("q_camids and g_camids must be given together or both be None")
    use_cams = q_camids is not None
    qc = _as_ids("q_camids", q_camids, num_q, "distmat row") if use_cams else None
    gc = _as_ids("g_camids", g_camids, num_g, "distmat column") if use_cams else None
    max_pairs = _check_int("max_pairs", max_pairs, 2)
    targets = tuple(float(t) for t in fpr_targets)
    for t in targets:
        if not 0.0 < t <= 1.0:
            raise ValueError(f"fpr_targets must lie in (0, 1], got {t!r}")
    if not np.isfinite(dist).all():
        raise ValueError("distmat must be finite (no NaN or inf) for verification_roc")

    step = max(1, CHUNK_BYTES // (24 * max(num_g, 1)))

    def masks(s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
        same = qp[s:e, None] == gp[None, :]  # (c, G)
        keep = np.broadcast_to(gp[None, :] != -1, same.shape)
        if use_cams:
            keep = keep & ~(same & (qc[s:e, None] == gc[None, :]))
        return same, keep

    n_pos = n_all = 0
    for s in range(0, num_q, step):
        same, keep = masks(s, s + step)
        n_pos += int((same & keep).sum())
        n_all += int(keep.sum())
    n_neg = n_all - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"verification needs positive and negative pairs, got {n_pos} and {n_neg}")
    subsampled = n_all > max_pairs
    if subsampled:
        pos_budget = min(n_pos, max(max_pairs - n_neg, max_pairs // 2))
        p_pos, p_neg = pos_budget / n_pos, (max_pairs - pos_budget) / n_neg
        rng = np.random.default_rng(seed)
    labels, scores = [], []
    for s in range(0, num_q, step):
        same, keep = masks(s, s + step)
        if subsampled:
            u = rng.random(same.shape)
            keep = keep & (u < np.where(same, p_pos, p_neg))
        labels.append(same[keep])
        scores.append(-dist[s:s + step][keep])
    y = np.concatenate(labels)
    score = np.concatenate(scores)
    if y.all() or not y.any():
        raise ValueError("subsampling left a single class; raise max_pairs")
    fpr, tpr, thr = roc_curve(y, score)
    thresholds = -thr.astype(np.float64)
    tpr_at, thr_at = {}, {}
    for t in targets:
        i = int(np.searchsorted(fpr, t, side="right")) - 1  # last point with fpr <= t
        tpr_at[t] = float(tpr[i])
        thr_at[t] = float(thresholds[i])
    best = int(np.argmax(tpr - fpr))
    fpr, tpr = fpr.astype(np.float64), tpr.astype(np.float64)
    _freeze(fpr, tpr, thresholds)
    return VerificationResult(
        fpr=fpr,
        tpr=tpr,
        thresholds=thresholds,
        auc=float(area_under(fpr, tpr)),
        tpr_at_fpr=tpr_at,
        threshold_at_fpr=thr_at,
        best_threshold=float(thresholds[best]),
        best_tpr=float(tpr[best]),
        best_fpr=float(fpr[best]),
        num_positive_pairs=int(y.sum()),
        num_negative_pairs=int(y.size - y.sum()),
        subsampled=subsampled,
    )


# --------------------------------------------------------------------------- distances


def _as_features(name: str, x: object) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        a = np.asarray(x)
        # Read-only inputs (a cached memmap) are copied: torch refuses to wrap non-writable memory.
        t = torch.from_numpy(a if a.flags.writeable else np.array(a))
    if t.ndim != 2:
        raise ValueError(f"{name} must be (N, D) features, got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")
    t = t.detach().to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return t


def _unit_rows(name: str, t: torch.Tensor) -> torch.Tensor:
    """(N, D) rows divided by their L2 norm; a zero row is refused (cosine distance is undefined)."""
    norms = t.norm(dim=1)  # (N,)
    zero = (norms == 0).nonzero()
    if zero.numel():
        raise ValueError(f"{name} row {int(zero[0, 0])} has zero norm: cosine distance is undefined")
    return t / norms[:, None]


def pairwise_distance(
    qf: np.ndarray | torch.Tensor,
    gf: np.ndarray | torch.Tensor,
    metric: str = "cosine",
    *,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Query x gallery distance matrix with torch matmul, in chunks of query rows.

    Computed on the device of the inputs (numpy -> CPU), in float32.

    Args:
        qf: (Q, D) query features, any norm.
        gf: (G, D) gallery features, any norm.
        metric: ``cosine`` (1 - cosine similarity, in [0, 2]; zero-norm rows are
            rejected) or ``euclidean`` (via |q|^2 + |g|^2 - 2 q.g, clamped at 0).
        chunk_size: query rows per matmul.
    Returns:
        (Q, G) float32 numpy array.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    q, g = _as_features("qf", qf), _as_features("gf", gf)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"qf and gf must have the same feature size, got {q.shape[1]} and {g.shape[1]}")
    if q.device != g.device:
        raise ValueError(f"qf and gf must be on the same device, got {q.device} and {g.device}")
    if metric == "cosine":
        q, g = _unit_rows("qf", q), _unit_rows("gf", g)
    else:
        q2, g2 = (q * q).sum(dim=1), (g * g).sum(dim=1)  # (Q,), (G,)
    out = np.empty((q.shape[0], g.shape[0]), dtype=np.float32)
    out_t = torch.from_numpy(out)
    for s in range(0, q.shape[0], chunk_size):
        prod = q[s:s + chunk_size] @ g.T  # (c, G)
        if metric == "cosine":
            d = 1.0 - prod
        else:
            d = (q2[s:s + chunk_size, None] + g2[None, :] - 2.0 * prod).clamp_(min=0.0).sqrt_()
        out_t[s:s + chunk_size] = d.cpu()
    return out
