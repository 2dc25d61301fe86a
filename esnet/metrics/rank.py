"""Ranking metrics: CMC, mAP and mINP of a query x gallery distance matrix (``evaluate``).

Exact (a stable ordering of the gallery by distance, ties broken by gallery index),
vectorised over chunks of queries, with bounded memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esnet.metrics._inputs import CHUNK_BYTES, _as_float_rows, _as_ids, _as_matrix, _check_int, _freeze

_BYTES_PER_ELEMENT = 64
"""Upper estimate of ``evaluate``'s working bytes per query x gallery element of a chunk."""

_SPARSE_WORK_RATIO = 0.5
"""``evaluate`` takes the sparse path for a chunk when (candidates x ceil(log2(K+1))) is
at most this fraction of its elements, else the dense path; tests set 0 or inf to force one."""


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
