"""VehicleID protocol: one random gallery image per identity, repeated (``evaluate_vehicleid``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esnet.metrics._inputs import _as_ids, _as_matrix, _check_int, _freeze
from esnet.metrics.rank import evaluate


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

