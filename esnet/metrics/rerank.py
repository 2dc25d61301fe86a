"""k-reciprocal re-ranking (Zhong et al., CVPR 2017): ``re_ranking`` from distance matrices,
``re_ranking_features`` from features in memory linear in Q + G.

Computed as torchreid's ``re_ranking`` (deep-person-reid, torchreid/utils/rerank.py, from
Zhong et al.'s code) computes it, in bounded memory.
"""
from __future__ import annotations

import numpy as np
import torch

from esnet.metrics._inputs import CHUNK_BYTES, _as_matrix, _check_int
from esnet.metrics.distance import METRICS, _as_features, _unit_rows

MAX_RERANK_ITEMS = 150_000
"""The one size limit of re-ranking (``re_ranking``, ``re_ranking_features`` and every caller):
largest Q + G accepted. The work beyond the inputs and the (Q, G) output is ~0.5 GiB of chunk
buffers plus ~7 KiB per image with the default k1, k2 (about 1.2 GiB at 100,000 images);
MSMT17's 93,820 test images fit."""


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

