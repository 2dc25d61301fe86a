"""Evaluate a checkpoint on a dataset's query/gallery split and keep what the rank browser needs.

``evaluate_inference`` embeds both splits (disk-cached through ``esnet.embedding``),
computes the cosine distance matrix, optionally k-reciprocal re-ranks it, and runs the
standard protocol (``esnet.metrics.evaluate``) plus the verification ROC. The report keeps
the features, not the (Q, G) matrix (266 MB for Market-1501), so one query's ranking is
recomputed on demand from its row; a re-ranked matrix cannot be recomputed per row and is
kept.

Datasets evaluated by the VehicleID protocol (one random gallery image per id, repeated)
go through ``evaluate_vehicleid_inference`` / ``evaluate_vehicleid_dataset`` instead
(``esnet.metrics.evaluate_vehicleid``, mean and std over the draws).
"""
from __future__ import annotations

from collections.abc import Callable
import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from esnet.data.datasets import load_dataset
from esnet.data.types import ReidData
from esnet.embedding import Embeddings, Inference, embed_split, is_test_selected
from esnet import metrics
from esnet.metrics import (
    RankResult,
    VehicleIDResult,
    VerificationResult,
    evaluate,
    evaluate_vehicleid,
    pairwise_distance,
    re_ranking_features,
    verification_roc,
)

MAX_RANK = 50
"""Length of the CMC curve kept in a report."""

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stage is ``query``, ``gallery`` (images), ``re-ranking`` or ``scoring``."""

PER_QUERY_COLUMNS = ("query", "path", "pid", "camid", "camera", "ap", "first_hit", "hardest_positive", "num_positives",
                     "valid")


@dataclass(frozen=True, eq=False)
class EvalReport:
    """One checkpoint evaluated on one dataset.

    Attributes:
        dataset, root: what was evaluated.
        checkpoint, checkpoint_sha: the model.
        rerank, flip: the options used.
        test_feature: the embedding evaluated (``model.test_feature`` of the loaded model).
        summary: R1, R5, R10, mAP, mINP as fractions in [0, 1].
        cmc: (MAX_RANK,) float64.
        result: the full ``RankResult`` (per-query arrays, length Q).
        per_query: DataFrame, one row per query: ``PER_QUERY_COLUMNS``; ``camid`` is 0-based,
            ``camera`` the number of the file name (as shown; ``Sample.camera``); ``first_hit``
            and ``hardest_positive`` are 1-based ranks among valid gallery items, as people
            count (1 = the top match; -1 = the query has no valid match and is not scored).
            ``result`` keeps the metrics' 0-based arrays.
        query, gallery: the embeddings (features (N, D) float32 unit rows, paths, pids, camids).
        verification: ROC of "same identity?" over query x gallery pairs, with the
            operating threshold (Youden's J) as ``best_threshold``.
        reranked_distmat: (Q, G) float32 when ``rerank``, else None.
    """

    dataset: str
    root: str
    checkpoint: str
    checkpoint_sha: str
    rerank: bool
    flip: bool
    test_feature: str
    summary: dict[str, float]
    cmc: np.ndarray
    result: RankResult
    per_query: pd.DataFrame
    query: Embeddings
    gallery: Embeddings
    verification: VerificationResult
    reranked_distmat: np.ndarray | None

    @property
    def num_query(self) -> int:
        return len(self.query.paths)

    @property
    def num_gallery(self) -> int:
        return len(self.gallery.paths)

    @property
    def skipped(self) -> tuple[tuple[str, str], ...]:
        """(path, reason) of every query or gallery image that could not be read."""
        return self.query.skipped + self.gallery.skipped

    def to_json(self) -> dict:
        """A JSON-ready summary (no per-query rows): metrics, CMC top 20, counts, options."""
        return {
            "dataset": self.dataset, "root": self.root, "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha, "checkpoint_test_selected": is_test_selected(self.checkpoint),
            "rerank": self.rerank, "flip": self.flip,
            "test_feature": self.test_feature,
            **{k: round(v, 6) for k, v in self.summary.items()},
            "cmc": [round(float(v), 6) for v in self.cmc[:20]],
            "num_query": self.num_query, "num_gallery": self.num_gallery,
            "num_valid_queries": self.result.num_valid_queries,
            "verification": {"auc": round(self.verification.auc, 6),
                             "best_threshold": round(self.verification.best_threshold, 6),
                             "tpr_at_fpr": {str(k): round(v, 6) for k, v in self.verification.tpr_at_fpr.items()}},
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def _per_query(result: RankResult, query: Embeddings) -> pd.DataFrame:
    return pd.DataFrame({
        "query": np.arange(len(query.paths)),
        "path": pd.Series(query.paths, dtype=object),  # object: a non-UTF-8 name is not a valid arrow string
        "pid": query.pids,
        "camid": query.camids,
        "camera": query.cameras,
        "ap": result.ap,
        "first_hit": np.where(result.valid, result.first_hit + 1, -1),  # 1-based rank, -1 = not scored
        "hardest_positive": np.where(result.valid, result.hardest_positive + 1, -1),
        "num_positives": result.num_positives,
        "valid": result.valid,
    })


def evaluate_inference(inf: Inference, data: ReidData, *, rerank: bool = False, flip: bool = False,
                       cache_dir: str | None = None, batch_size: int = 64,
                       progress: Progress | None = None) -> EvalReport:
    """Embed ``data``'s query and gallery with ``inf`` and score them by the standard protocol.

    Args:
        inf: from ``esnet.embedding.load_inference``.
        data: a loaded dataset with ``protocol == "standard"``.
        rerank: k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3, the reference numbers:
            ``metrics.re_ranking_features`` on the cosine distances) before scoring; refused
            above ``metrics.MAX_RERANK_ITEMS`` query + gallery images.
        flip: average each feature with its mirror's.
        cache_dir: embedding cache (see ``esnet.embedding``); None = no cache.
        batch_size: images per forward pass.
        progress: called per batch with the stage and counts.
    Raises:
        ValueError: a VehicleID-protocol dataset, an empty split, every image of a split
            unreadable, too many images to re-rank, or no query with a valid match.
    """
    if data.protocol != "standard":
        raise ValueError(f"dataset {data.name!r} uses the {data.protocol!r} protocol; evaluate it with "
                         "evaluate_vehicleid_inference (this evaluates the standard query/gallery protocol)")
    n_items = len(data.query) + len(data.gallery)
    if rerank and n_items > metrics.MAX_RERANK_ITEMS:  # checked before embedding, not after
        raise ValueError(f"re-ranking is limited to MAX_RERANK_ITEMS = {metrics.MAX_RERANK_ITEMS} query + gallery "
                         f"images; {data.name!r} has {n_items}")
    embs = {}
    for split in ("query", "gallery"):
        report = None if progress is None else (lambda done, total, s=split: progress(s, done, total))
        embs[split] = embed_split(inf, data, split, batch_size=batch_size, flip=flip, cache_dir=cache_dir,
                                  progress=report)
    return _scored(data.name, data.root, inf.checkpoint, inf.checkpoint_sha, inf.config.model.test_feature,
                   embs["query"], embs["gallery"], rerank=rerank, flip=flip, progress=progress)


def _scored(dataset: str, root: str, checkpoint: str, checkpoint_sha: str, test_feature: str, q: Embeddings,
            g: Embeddings, *, rerank: bool, flip: bool, progress: Progress | None = None) -> EvalReport:
    """Rank, score and package embedded query ``q`` and gallery ``g`` (no model involved).

    ``progress`` stages: ``re-ranking`` (0/1, 1/1) when ``rerank``, then ``scoring`` (0/Q, Q/Q).
    """
    report = progress or (lambda stage, done, total: None)
    num_q = len(q.paths)
    dist = pairwise_distance(np.asarray(q.features), np.asarray(g.features))  # (Q, G)
    reranked = None
    if rerank:
        report("re-ranking", 0, 1)
        reranked = re_ranking_features(np.asarray(q.features), np.asarray(g.features), "cosine")  # (Q, G)
        report("re-ranking", 1, 1)
    scored = dist if reranked is None else reranked
    report("scoring", 0, num_q)
    result = evaluate(scored, q.pids, g.pids, q.camids, g.camids, max_rank=MAX_RANK)
    roc = verification_roc(dist, q.pids, g.pids, q.camids, g.camids)
    report("scoring", num_q, num_q)
    return EvalReport(dataset=dataset, root=root, checkpoint=checkpoint, checkpoint_sha=checkpoint_sha,
                      rerank=rerank, flip=flip, test_feature=test_feature,
                      summary=result.summary(), cmc=result.cmc, result=result,
                      per_query=_per_query(result, q), query=q, gallery=g, verification=roc,
                      reranked_distmat=reranked)


BRANCH_HALVES = {"global": 0, "erase": 1}
"""Which half of a ``concat`` feature each branch is: ``concat = [global BNNeck, erase BNNeck]``."""


def branch_features(emb: Embeddings, feature: str) -> Embeddings:
    """One branch's features cut out of ``concat`` embeddings, re-normalised to unit rows.

    ``concat`` is the two BNNeck outputs side by side, normalised together; a half scaled back
    to unit length is exactly that branch's own test feature (with ``flip`` too: the mirror
    average is taken before normalising, half by half).

    Args:
        emb: ``concat`` embeddings, features (N, 2C).
        feature: ``global`` (first half) or ``erase`` (second half).
    Returns:
        Embeddings with features (N, C) float32 unit rows; everything else unchanged.
    """
    if feature not in BRANCH_HALVES:
        raise ValueError(f"feature must be one of {sorted(BRANCH_HALVES)}, got {feature!r}")
    feats = np.asarray(emb.features, dtype=np.float32)  # (N, 2C)
    if feats.ndim != 2 or feats.shape[1] % 2:
        raise ValueError(f"concat features must be (N, 2C), got {feats.shape}")
    c = feats.shape[1] // 2
    half = feats[:, BRANCH_HALVES[feature] * c:(BRANCH_HALVES[feature] + 1) * c]  # (N, C)
    norm = np.linalg.norm(half, axis=1, keepdims=True)  # (N, 1)
    return dataclasses.replace(emb, features=(half / np.maximum(norm, 1e-12)).astype(np.float32))


def feature_view(report: EvalReport, feature: str) -> EvalReport:
    """``report`` (evaluated with the ``concat`` feature) scored again with one branch, without embedding.

    Raises:
        ValueError: ``report`` is not a ``concat`` report, or ``feature`` is not ``global`` / ``erase``.
    """
    if feature == report.test_feature:
        return report
    if report.test_feature != "concat":
        raise ValueError(f"a {feature!r} view needs a 'concat' report (both branches), got {report.test_feature!r}")
    return _scored(report.dataset, report.root, report.checkpoint, report.checkpoint_sha, feature,
                   branch_features(report.query, feature), branch_features(report.gallery, feature),
                   rerank=report.rerank, flip=report.flip)


def evaluate_dataset(inf: Inference, dataset: str, root: str, *, camera_regex: str | None = None,
                     **kwargs) -> EvalReport:
    """``load_dataset(dataset, root)`` then :func:`evaluate_inference` with the same keyword arguments.

    ``camera_regex`` (``folder`` layout) None: the default ``c(\\d+)``.
    """
    extra = {} if camera_regex is None else {"camera_regex": camera_regex}
    return evaluate_inference(inf, load_dataset(dataset, str(root), **extra), **kwargs)


def _cosine_row(q: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(G,) float32 cosine distances of one (D,) query to (G, D) gallery rows, read in place.

    ``pairwise_distance`` copies a read-only (memory-mapped, cached) gallery and checks it for
    NaN on every call: 0.7 s per query for Market's 15,913 x 2,560 gallery, against ~40 ms here.
    Same values up to float32 rounding.
    """
    g = np.asarray(gallery)
    norms = np.sqrt(np.einsum("ij,ij->i", g, g, dtype=np.float64)).astype(np.float32)  # (G,)
    qn = float(np.linalg.norm(q))
    if qn == 0 or not np.isfinite(qn) or (norms == 0).any() or not np.isfinite(norms).all():
        raise ValueError("query and gallery features must be finite with non-zero norm for cosine distance")
    return (1.0 - (g @ q) / (norms * qn)).astype(np.float32)


def query_ranking(report: EvalReport, query_row: int, topk: int = 10) -> pd.DataFrame:
    """One query's ranked gallery, as scored (re-ranked distances when the report is).

    Gallery items of the query's identity and camera, and junk (pid -1), are listed with
    ``ignored=True`` (the standard protocol does not score them) and do not count in ``rank``.

    Args:
        report: from :func:`evaluate_inference`.
        query_row: row of ``report.per_query`` (0-based).
        topk: scored items to return (ignored ones in between are returned too).
    Returns:
        DataFrame with columns rank (1-based among scored items; 0 for ignored), index
        (gallery row), path, pid, camid (0-based), camera (as in the file name), distance,
        correct, ignored.
    """
    nq = report.num_query
    if isinstance(query_row, bool) or not isinstance(query_row, (int, np.integer)) or not 0 <= query_row < nq:
        raise ValueError(f"query_row must be an integer in [0, {nq}), got {query_row!r}")
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
        raise ValueError(f"topk must be an integer >= 1, got {topk!r}")
    g = report.gallery
    if report.reranked_distmat is not None:
        d = np.asarray(report.reranked_distmat[query_row], dtype=np.float32)  # (G,)
    else:
        d = _cosine_row(np.asarray(report.query.features[query_row], dtype=np.float32), g.features)  # (G,)
    order = np.argsort(d, kind="stable")
    qpid, qcam = int(report.query.pids[query_row]), int(report.query.camids[query_row])
    ignored = (g.pids == -1) | ((g.pids == qpid) & (g.camids == qcam))  # (G,)
    rows, scored = [], 0
    for j in order:
        if scored >= topk:
            break
        ign = bool(ignored[j])
        scored += 0 if ign else 1
        rows.append({"rank": 0 if ign else scored, "index": int(j), "path": g.paths[j], "pid": int(g.pids[j]),
                     "camid": int(g.camids[j]), "camera": int(g.cameras[j]), "distance": float(d[j]),
                     "correct": bool(g.pids[j] == qpid and qpid >= 0), "ignored": ign})
    frame = pd.DataFrame(rows, columns=["rank", "index", "path", "pid", "camid", "camera", "distance", "correct",
                                        "ignored"])
    return frame.astype({"path": object})


# --------------------------------------------------------------------------- VehicleID protocol

VEHICLEID_REPEATS = 10
"""Random gallery draws of the VehicleID protocol (Liu et al., CVPR 2016)."""


@dataclass(frozen=True, eq=False)
class VehicleIDReport:
    """One checkpoint evaluated on one VehicleID test list by the VehicleID protocol.

    Each repeat draws one random image per vehicle as the gallery and queries with the rest
    (``esnet.metrics.evaluate_vehicleid``); the numbers are mean and std over the repeats.

    Attributes:
        dataset, root, test_size: what was evaluated (``small`` / ``medium`` / ``large``).
        checkpoint, checkpoint_sha, flip, test_feature: the model and options.
        result: ``VehicleIDResult`` (CMC mean / std (MAX_RANK,), mAP, R1, R5 mean / std).
        embeddings: the test list's embeddings (features (N, D) float32 unit rows).
        num_ids: vehicles in the test list. repeats, seed: the draws.
    """

    dataset: str
    root: str
    test_size: str
    checkpoint: str
    checkpoint_sha: str
    flip: bool
    test_feature: str
    result: VehicleIDResult
    embeddings: Embeddings
    num_ids: int
    repeats: int
    seed: int

    @property
    def num_images(self) -> int:
        return len(self.embeddings.paths)

    @property
    def skipped(self) -> tuple[tuple[str, str], ...]:
        return self.embeddings.skipped

    @property
    def summary(self) -> dict[str, tuple[float, float]]:
        """R1, R5, R10, mAP -> (mean, std) as fractions in [0, 1]."""
        r = self.result
        return {"R1": (r.r1_mean, r.r1_std), "R5": (r.r5_mean, r.r5_std),
                "R10": (float(r.cmc_mean[9]), float(r.cmc_std[9])), "mAP": (r.mAP_mean, r.mAP_std)}

    def to_json(self) -> dict:
        """A JSON-ready summary: each metric as ``{"mean", "std"}``, CMC top 20, counts, options."""
        return {
            "dataset": self.dataset, "root": self.root, "test_size": self.test_size,
            "protocol": "vehicleid", "repeats": self.repeats, "seed": self.seed,
            "checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha,
            "checkpoint_test_selected": is_test_selected(self.checkpoint),
            "flip": self.flip, "test_feature": self.test_feature,
            **{k: {"mean": round(m, 6), "std": round(s, 6)} for k, (m, s) in self.summary.items()},
            "cmc_mean": [round(float(v), 6) for v in self.result.cmc_mean[:20]],
            "cmc_std": [round(float(v), 6) for v in self.result.cmc_std[:20]],
            "num_images": self.num_images, "num_ids": self.num_ids,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def evaluate_vehicleid_inference(inf: Inference, data: ReidData, test_size: str, *, flip: bool = False,
                                 cache_dir: str | None = None, batch_size: int = 64,
                                 repeats: int = VEHICLEID_REPEATS, seed: int = 0,
                                 progress: Progress | None = None) -> VehicleIDReport:
    """Embed a VehicleID test list with ``inf`` and score it by the VehicleID protocol.

    The (N, N) cosine distances of the test list are held at once (1.6 GB for the large
    list's ~20,000 images).

    Args:
        data: ``load_dataset("vehicleid", root, vehicleid_test_size=test_size)`` (query =
            gallery = the test list).
        test_size: the list ``data`` was loaded with, recorded in the report.
        repeats, seed: random gallery draws (``esnet.metrics.evaluate_vehicleid``).
        progress: called per batch with stage ``test``.
    Raises:
        ValueError: ``data`` is not a VehicleID-protocol dataset, an empty or unreadable
            test list, or a list where every vehicle has a single image.
    """
    if data.protocol != "vehicleid":
        raise ValueError(f"dataset {data.name!r} uses the {data.protocol!r} protocol, not 'vehicleid': "
                         "evaluate it with evaluate_inference")
    report = None if progress is None else (lambda done, total: progress("test", done, total))
    emb = embed_split(inf, data, "query", batch_size=batch_size, flip=flip, cache_dir=cache_dir, progress=report)
    feats = np.asarray(emb.features)  # (N, D)
    result = evaluate_vehicleid(pairwise_distance(feats, feats), emb.pids, repeats=repeats, seed=seed,
                                max_rank=MAX_RANK)
    return VehicleIDReport(dataset=data.name, root=data.root, test_size=test_size, checkpoint=inf.checkpoint,
                           checkpoint_sha=inf.checkpoint_sha, flip=flip, test_feature=inf.config.model.test_feature,
                           result=result, embeddings=emb, num_ids=int(np.unique(emb.pids).size), repeats=repeats,
                           seed=seed)


def evaluate_vehicleid_dataset(inf: Inference, root: str, test_size: str = "small", **kwargs) -> VehicleIDReport:
    """``load_dataset("vehicleid", root, vehicleid_test_size=test_size)`` then :func:`evaluate_vehicleid_inference`."""
    data = load_dataset("vehicleid", str(root), vehicleid_test_size=test_size)
    return evaluate_vehicleid_inference(inf, data, test_size, **kwargs)
