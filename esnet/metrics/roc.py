"""Pair verification ROC over query x gallery pairs (``verification_roc``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esnet.metrics._inputs import CHUNK_BYTES, _as_ids, _as_matrix, _check_int, _freeze

MAX_ROC_PAIRS = 5_000_000
"""Default bound on the number of pairs ``verification_roc`` scores."""


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
        fpr_at_fpr: target FPR -> the FPR that point actually reaches (<= the target).
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
    fpr_at_fpr: dict[float, float]
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
    tpr_at, thr_at, fpr_at = {}, {}, {}
    for t in targets:
        i = int(np.searchsorted(fpr, t, side="right")) - 1  # last point with fpr <= t
        tpr_at[t] = float(tpr[i])
        thr_at[t] = float(thresholds[i])
        fpr_at[t] = float(fpr[i])
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
        fpr_at_fpr=fpr_at,
        best_threshold=float(thresholds[best]),
        best_tpr=float(tpr[best]),
        best_fpr=float(fpr[best]),
        num_positive_pairs=int(y.sum()),
        num_negative_pairs=int(y.size - y.sum()),
        subsampled=subsampled,
    )

