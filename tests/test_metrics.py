"""esnet.metrics: hand-computed cases, a per-query loop reference, bad inputs."""
from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import sklearn.metrics  # noqa: F401  (verification_roc imports it; ~2 s paid at collection, not in a test)
import torch

from esnet import metrics
from esnet.metrics import (
    evaluate,
    evaluate_vehicleid,
    pairwise_distance,
    re_ranking,
    verification_roc,
)

# torchreid's own re-ranking file, the independent reference (benchmarks/peers.py loads it).
_peers_spec = importlib.util.spec_from_file_location(
    "esnet_bench_peers", Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py")
_peers = importlib.util.module_from_spec(_peers_spec)
_peers_spec.loader.exec_module(_peers)

# The one reference loop lives in the benchmark; load it from its file.
_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_speed.py"
_spec = importlib.util.spec_from_file_location("esnet_bench_eval_speed", _BENCH)
_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench)
reference_evaluate = _bench.reference_evaluate


@pytest.fixture(params=["auto", "sparse", "dense"])
def path(request, monkeypatch):
    """Run a test under the automatic choice and with each ranking path forced."""
    ratio = {"auto": metrics.rank._SPARSE_WORK_RATIO, "sparse": float("inf"), "dense": 0.0}[request.param]
    monkeypatch.setattr(metrics.rank, "_SPARSE_WORK_RATIO", ratio)
    return request.param


# --------------------------------------------------------------------------- hand-made cases

# 3 queries x 6 gallery. Gallery: index, pid, camera.
#   g0 pid 1 cam 1 | g1 pid 1 cam 0 | g2 pid 2 cam 1 | g3 pid -1 (junk) cam 1 | g4 pid 1 cam 2 | g5 pid 2 cam 0
HAND_DIST = np.array([
    [0.3, 0.1, 0.2, 0.05, 0.6, 0.4],   # q0: pid 1, cam 0
    [0.5, 0.4, 0.1, 0.2, 0.3, 0.05],   # q1: pid 2, cam 0
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],    # q2: pid 3, cam 0 -> no gallery item of pid 3: skipped
], dtype=np.float32)
HAND_Q_PIDS = np.array([1, 2, 3])
HAND_Q_CAMS = np.array([0, 0, 0])
HAND_G_PIDS = np.array([1, 1, 2, -1, 1, 2])
HAND_G_CAMS = np.array([1, 0, 1, 1, 2, 0])


def test_hand_case_standard_protocol(path):
    # q0 by distance: g3 (junk, ignored), g1 (pid 1 cam 0 = same id same cam, ignored),
    #   g2 wrong (rank 0), g0 correct (rank 1), g5 wrong (rank 2), g4 correct (rank 3).
    #   AP = (1/2 + 2/4) / 2 = 0.5 ; INP = 2 correct / 4 = 0.5 ; first hit 1, hardest 3.
    # q1 by distance: g5 (pid 2 cam 0 = same id same cam, ignored), g2 correct (rank 0),
    #   g3 junk, g4 / g1 / g0 wrong. AP = 1/1 = 1 ; INP = 1/1 = 1 ; first 0, hardest 0.
    # q2: skipped. mAP = (0.5 + 1) / 2 = 0.75 ; mINP = (0.5 + 1) / 2 = 0.75.
    # CMC over first hits {1, 0}: rank<=0: 1/2 ; rank<=1: 2/2 ; then 1.
    r = evaluate(HAND_DIST, HAND_Q_PIDS, HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS, max_rank=3)
    np.testing.assert_allclose(r.cmc, [0.5, 1.0, 1.0], rtol=0, atol=1e-12)
    assert r.mAP == pytest.approx(0.75, abs=1e-12)
    assert r.mINP == pytest.approx(0.75, abs=1e-12)
    assert r.num_valid_queries == 2
    np.testing.assert_allclose(r.ap, [0.5, 1.0, np.nan], rtol=0, atol=1e-12)
    assert r.first_hit.tolist() == [1, 0, -1]
    assert r.hardest_positive.tolist() == [3, 0, -1]
    assert r.num_positives.tolist() == [2, 1, 0]
    assert r.valid.tolist() == [True, True, False]
    assert r.summary() == pytest.approx({"R1": 0.5, "R5": 1.0, "R10": 1.0, "mAP": 0.75, "mINP": 0.75})


def test_hand_case_same_camera_counts_everything_but_junk(path):
    # q0 valid order: g1 correct (0), g2 wrong (1), g0 correct (2), g5 wrong (3), g4 correct (4).
    #   AP = (1/1 + 2/3 + 3/5) / 3 = 34/45 ; INP = 3/5.
    # q1 valid order: g5 correct (0), g2 correct (1) (junk g3 dropped). AP = 1 ; INP = 2/2 = 1.
    # mAP = (34/45 + 1) / 2 = 79/90 ; mINP = (3/5 + 1) / 2 = 0.8 ; CMC = [1, 1].
    r = evaluate(HAND_DIST, HAND_Q_PIDS, HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS, max_rank=2, same_camera=True)
    np.testing.assert_allclose(r.cmc, [1.0, 1.0], rtol=0, atol=1e-12)
    assert r.mAP == pytest.approx(79 / 90, abs=1e-12)
    assert r.mINP == pytest.approx(0.8, abs=1e-12)
    assert r.hardest_positive.tolist() == [4, 1, -1]


@pytest.mark.parametrize(
    "g_pids, ap, inp",
    [
        # all three tied at 0.5, order = gallery index: correct, wrong, correct.
        # AP = (1/1 + 2/3) / 2 = 5/6 ; INP = 2/3.
        ([1, 2, 1], 5 / 6, 2 / 3),
        # wrong, correct, correct: AP = (1/2 + 2/3) / 2 = 7/12 ; INP = 2/3.
        ([2, 1, 1], 7 / 12, 2 / 3),
    ],
)
def test_ties_are_broken_by_gallery_index(path, g_pids, ap, inp):
    dist = np.full((1, 3), 0.5)
    r = evaluate(dist, np.array([1]), np.array(g_pids), np.array([0]), np.array([1, 1, 1]))
    assert r.mAP == pytest.approx(ap, abs=1e-12)
    assert r.mINP == pytest.approx(inp, abs=1e-12)


def test_max_rank_beyond_gallery_pads_with_last_value():
    r = evaluate(HAND_DIST, HAND_Q_PIDS, HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS, max_rank=10)
    assert r.cmc.shape == (10,)
    np.testing.assert_allclose(r.cmc, [0.5] + [1.0] * 9, rtol=0, atol=1e-12)


def test_result_is_frozen_and_read_only():
    r = evaluate(HAND_DIST, HAND_Q_PIDS, HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.mAP = 1.0
    with pytest.raises(ValueError):
        r.ap[0] = 1.0


def test_accepts_torch_and_integer_inputs():
    r = evaluate(torch.from_numpy(HAND_DIST), torch.tensor(HAND_Q_PIDS), HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS)
    assert r.mAP == pytest.approx(0.75, abs=1e-12)
    ints = evaluate((HAND_DIST * 100).round().astype(np.int32), HAND_Q_PIDS, HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS)
    assert ints.mAP == pytest.approx(0.75, abs=1e-12)


# --------------------------------------------------------------------------- against the reference loop


def _random_problem(rng, num_q, num_g, ids, cams, *, levels=None):
    dist = rng.random((num_q, num_g))
    if levels is not None:  # quantise: many exact ties
        dist = np.floor(dist * levels) / levels
    q_pids = rng.integers(0, ids, num_q)
    g_pids = rng.integers(-1, ids, num_g)
    return dist, q_pids, g_pids, rng.integers(0, cams, num_q), rng.integers(0, cams, num_g)


def _assert_same(result, ref):
    assert result.num_valid_queries == ref["num_valid_queries"]
    assert abs(result.mAP - ref["mAP"]) < 1e-9
    assert abs(result.mINP - ref["mINP"]) < 1e-9
    np.testing.assert_allclose(result.cmc, ref["cmc"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.ap, ref["ap"], rtol=0, atol=1e-9)
    assert np.array_equal(result.first_hit, ref["first_hit"])
    assert np.array_equal(result.hardest_positive, ref["hardest_positive"])
    assert np.array_equal(result.num_positives, ref["num_positives"])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [None, 7])
@pytest.mark.parametrize("same_camera", [False, True])
def test_matches_reference_loop(path, seed, levels, same_camera):
    rng = np.random.default_rng(seed)
    dist, qp, gp, qc, gc = _random_problem(rng, 23, 61, ids=6, cams=3, levels=levels)
    dist = dist.astype(np.float32 if seed % 2 else np.float64)
    ref = reference_evaluate(dist, qp, gp, qc, gc, max_rank=20, same_camera=same_camera)
    _assert_same(evaluate(dist, qp, gp, qc, gc, max_rank=20, same_camera=same_camera), ref)


def test_matches_reference_with_infinities(path):
    rng = np.random.default_rng(7)
    dist, qp, gp, qc, gc = _random_problem(rng, 17, 40, ids=4, cams=2, levels=5)
    dist[rng.random(dist.shape) < 0.15] = np.inf
    dist[rng.random(dist.shape) < 0.05] = -np.inf
    _assert_same(evaluate(dist, qp, gp, qc, gc, max_rank=8), reference_evaluate(dist, qp, gp, qc, gc, max_rank=8))


def test_clustered_features_match_reference(path):
    # Realistic structure (few wrong matches ahead of the correct ones) exercises the sparse path.
    qf, gf, qp, gp, qc, gc = _bench.make_problem(60, 400, 25, 4, seed=3, dim=16, noise=0.8)
    dist = pairwise_distance(qf, gf)
    _assert_same(evaluate(dist, qp, gp, qc, gc), reference_evaluate(dist, qp, gp, qc, gc))


def test_chunk_size_does_not_change_results():
    rng = np.random.default_rng(11)
    dist, qp, gp, qc, gc = _random_problem(rng, 37, 50, ids=5, cams=3, levels=9)
    results = [evaluate(dist, qp, gp, qc, gc, max_rank=12, chunk_size=cs) for cs in (1, 4, 37, 1000, None)]
    for r in results[1:]:
        assert np.array_equal(r.cmc, results[0].cmc)
        assert r.mAP == results[0].mAP and r.mINP == results[0].mINP
        assert np.array_equal(r.ap, results[0].ap, equal_nan=True)
        assert np.array_equal(r.first_hit, results[0].first_hit)
        assert np.array_equal(r.hardest_positive, results[0].hardest_positive)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(distmat=np.zeros(6)), "distmat must be a 2-D matrix"),
        (dict(q_pids=np.array([1, 2])), "q_pids must have one entry per distmat row"),
        (dict(g_pids=np.array([1, 1, 2])), "g_pids must have one entry per distmat column"),
        (dict(q_camids=np.array([0, 0])), "q_camids must have one entry per distmat row"),
        (dict(g_camids=np.zeros((6, 1), dtype=int)), "g_camids must be 1-D"),
        (dict(q_pids=np.array([1.0, 2.0, 3.0])), "q_pids must hold integers"),
        (dict(distmat=HAND_DIST.astype(complex)), "distmat must hold float16/32/64 or integer"),
        (dict(max_rank=0), "max_rank must be an integer >= 1"),
        (dict(chunk_size=0), "chunk_size must be an integer >= 1"),
        (dict(distmat=np.zeros((3, 0))), "at least one query and one gallery item"),
    ],
)
def test_bad_inputs_name_the_rule(change, message):
    args = dict(distmat=HAND_DIST, q_pids=HAND_Q_PIDS, g_pids=HAND_G_PIDS, q_camids=HAND_Q_CAMS,
                g_camids=HAND_G_CAMS)
    args.update(change)
    max_rank = args.pop("max_rank", 50)
    chunk_size = args.pop("chunk_size", None)
    with pytest.raises(ValueError, match=message):
        evaluate(*args.values(), max_rank=max_rank, chunk_size=chunk_size)


def test_nan_is_rejected_with_its_row():
    dist = HAND_DIST.copy()
    dist[2, 4] = np.nan
    with pytest.raises(ValueError, match=r"distmat must not contain NaN \(row 2"):
        evaluate(dist, HAND_Q_PIDS, HAND_G_PIDS, HAND_Q_CAMS, HAND_G_CAMS, chunk_size=2)


def test_no_valid_query_is_an_error():
    with pytest.raises(ValueError, match="no query has a valid correct match"):
        evaluate(HAND_DIST[2:], HAND_Q_PIDS[2:], HAND_G_PIDS, HAND_Q_CAMS[2:], HAND_G_CAMS)


# --------------------------------------------------------------------------- VehicleID


def _vehicle_problem(seed, *, perfect):
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(12), rng.integers(2, 6, 12))
    if perfect:
        dist = np.where(pids[:, None] == pids[None, :], 0.0, 1.0)
    else:
        dist = rng.random((pids.size, pids.size))
    return dist, pids


def test_vehicleid_perfect_features():
    dist, pids = _vehicle_problem(0, perfect=True)
    r = evaluate_vehicleid(dist, pids, repeats=5, seed=3, max_rank=5)
    assert (r.r1_mean, r.r1_std, r.r5_mean, r.mAP_mean, r.mAP_std) == (1.0, 0.0, 1.0, 1.0, 0.0)
    assert np.array_equal(r.cmc_mean, np.ones(5)) and np.array_equal(r.cmc_std, np.zeros(5))
    assert r.repeats == 5


def test_vehicleid_is_seeded():
    dist, pids = _vehicle_problem(1, perfect=False)
    a = evaluate_vehicleid(dist, pids, repeats=4, seed=7)
    b = evaluate_vehicleid(dist, pids, repeats=4, seed=7)
    c = evaluate_vehicleid(dist, pids, repeats=4, seed=8)
    assert np.array_equal(a.cmc_mean, b.cmc_mean) and a.mAP_mean == b.mAP_mean and a.mAP_std == b.mAP_std
    assert a.mAP_mean != c.mAP_mean
    assert a.mAP_std > 0  # random features: the draws differ


def test_vehicleid_two_identities_by_hand():
    # ids A = {0, 1}, B = {2, 3}. Gallery draw = one image per id, the other is the query.
    # Distances: A images are far from each other (0.9) but 0.5 from everything in B,
    # B images are close to each other (0.1). Whatever the draw: the A query sees
    # B's gallery image (0.5) before A's (0.9) -> first hit rank 1, AP 1/2;
    # the B query sees B first (0.1) -> AP 1. mAP = 0.75, R1 = 0.5, R5 = 1; std 0.
    dist = np.array([[0, .9, .5, .5], [.9, 0, .5, .5], [.5, .5, 0, .1], [.5, .5, .1, 0]])
    r = evaluate_vehicleid(dist, np.array([0, 0, 1, 1]), repeats=3, max_rank=2)
    assert (r.mAP_mean, r.r1_mean, r.r5_mean, r.mAP_std) == (0.75, 0.5, 1.0, 0.0)
    np.testing.assert_allclose(r.cmc_mean, [0.5, 1.0])


@pytest.mark.parametrize(
    "dist, pids, kwargs, message",
    [
        (np.zeros((3, 4)), np.array([0, 0, 1]), {}, "square"),
        (np.zeros((3, 3)), np.array([0, -1, -1]), {}, "must not contain -1"),
        (np.zeros((3, 3)), np.array([0, 1, 2]), {}, "single image"),
        (np.zeros((3, 3)), np.array([0, 0, 1]), {"repeats": 0}, "repeats must be an integer >= 1"),
    ],
)
def test_vehicleid_bad_inputs(dist, pids, kwargs, message):
    with pytest.raises(ValueError, match=message):
        evaluate_vehicleid(dist, pids, **kwargs)


# --------------------------------------------------------------------------- ROC


def test_roc_perfect_separation():
    q_pids, g_pids = np.array([0, 1, 2]), np.array([0, 0, 1, 2, 2, -1])
    dist = np.where(q_pids[:, None] == g_pids[None, :], 0.1, 0.9)
    r = verification_roc(dist, q_pids, g_pids)
    assert r.auc == 1.0
    assert r.best_tpr == 1.0 and r.best_fpr == 0.0
    assert 0.1 <= r.best_threshold < 0.9
    # 5 positive pairs; 3 x 5 non-junk pairs - 5 = 10 negatives (junk column dropped).
    assert (r.num_positive_pairs, r.num_negative_pairs, r.subsampled) == (5, 10, False)


def test_roc_random_scores_give_auc_one_half_and_monotone_operating_points():
    rng = np.random.default_rng(0)
    q_pids, g_pids = rng.integers(0, 10, 200), rng.integers(0, 10, 300)
    r = verification_roc(rng.random((200, 300)), q_pids, g_pids, fpr_targets=(0.01, 0.1, 0.3, 0.6))
    assert abs(r.auc - 0.5) < 0.02
    tprs = [r.tpr_at_fpr[t] for t in (0.01, 0.1, 0.3, 0.6)]
    thrs = [r.threshold_at_fpr[t] for t in (0.01, 0.1, 0.3, 0.6)]
    assert tprs == sorted(tprs) and thrs == sorted(thrs)
    assert np.all(np.diff(r.fpr) >= 0) and np.all(np.diff(r.thresholds) >= 0)
    assert r.thresholds[0] == -np.inf


def test_roc_threshold_means_accept_when_distance_at_most_it():
    rng = np.random.default_rng(1)
    q_pids, g_pids = rng.integers(0, 5, 40), rng.integers(0, 5, 50)
    dist = rng.random((40, 50)) + 0.3 * (q_pids[:, None] != g_pids[None, :])
    r = verification_roc(dist, q_pids, g_pids, fpr_targets=(0.05,))
    same = q_pids[:, None] == g_pids[None, :]
    accepted = dist <= r.threshold_at_fpr[0.05]
    assert accepted[~same].mean() <= 0.05
    assert accepted[same].mean() == pytest.approx(r.tpr_at_fpr[0.05])


def test_roc_drops_same_id_same_camera_pairs_with_cameras():
    q_pids, g_pids = np.array([0, 1]), np.array([0, 0, 1])
    dist = np.array([[0.1, 0.2, 0.9], [0.9, 0.8, 0.3]])
    r = verification_roc(dist, q_pids, g_pids, np.array([0, 0]), np.array([0, 1, 1]))
    # dropped: (q0, g0) same id cam 0. positives (q0,g1), (q1,g2); negatives (q0,g2), (q1,g0), (q1,g1).
    assert (r.num_positive_pairs, r.num_negative_pairs) == (2, 3)


def test_roc_subsamples_deterministically():
    rng = np.random.default_rng(2)
    q_pids, g_pids = rng.integers(0, 10, 100), rng.integers(0, 10, 200)
    dist = rng.random((100, 200))
    a = verification_roc(dist, q_pids, g_pids, max_pairs=4000, seed=5)
    b = verification_roc(dist, q_pids, g_pids, max_pairs=4000, seed=5)
    assert a.subsampled and np.array_equal(a.fpr, b.fpr) and a.auc == b.auc
    assert abs(a.num_positive_pairs + a.num_negative_pairs - 4000) < 300  # Bernoulli: about the budget


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"q_camids": np.array([0, 0, 0])}, "given together"),
        ({"fpr_targets": (0.0,)}, r"fpr_targets must lie in \(0, 1\]"),
        ({"max_pairs": 1}, "max_pairs must be an integer >= 2"),
    ],
)
def test_roc_bad_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        verification_roc(HAND_DIST, HAND_Q_PIDS, HAND_G_PIDS, **kwargs)


def test_roc_needs_both_classes():
    with pytest.raises(ValueError, match="positive and negative pairs"):
        verification_roc(np.zeros((1, 2)), np.array([0]), np.array([0, 0]))


# --------------------------------------------------------------------------- pairwise distance


def test_pairwise_distance_matches_numpy():
    rng = np.random.default_rng(0)
    qf, gf = rng.standard_normal((7, 5)) * 3, rng.standard_normal((9, 5))
    cos = pairwise_distance(qf, gf, "cosine", chunk_size=3)
    qn, gn = qf / np.linalg.norm(qf, axis=1, keepdims=True), gf / np.linalg.norm(gf, axis=1, keepdims=True)
    assert cos.dtype == np.float32 and cos.shape == (7, 9)
    np.testing.assert_allclose(cos, 1 - qn @ gn.T, atol=1e-5)
    euc = pairwise_distance(torch.from_numpy(qf), torch.from_numpy(gf), "euclidean", chunk_size=2)
    np.testing.assert_allclose(euc, np.linalg.norm(qf[:, None] - gf[None], axis=2), atol=1e-4)


@pytest.mark.parametrize(
    "qf, gf, metric, message",
    [
        (np.ones((2, 3)), np.ones((2, 4)), "cosine", "same feature size"),
        (np.ones((2, 3)), np.ones((2, 3)), "manhattan", r"metric must be one of \['cosine', 'euclidean'\]"),
        (np.zeros((2, 3)), np.ones((2, 3)), "cosine", "qf row 0 has zero norm"),
        (np.full((2, 3), np.nan), np.ones((2, 3)), "euclidean", "qf must be finite"),
        (np.ones(3), np.ones((2, 3)), "cosine", r"qf must be \(N, D\)"),
    ],
)
def test_pairwise_distance_bad_inputs(qf, gf, metric, message):
    with pytest.raises(ValueError, match=message):
        pairwise_distance(qf, gf, metric)


# --------------------------------------------------------------------------- re-ranking


def _features_dists(seed, num_q, num_g, dim=4):
    rng = np.random.default_rng(seed)
    qf, gf = rng.standard_normal((num_q, dim)), rng.standard_normal((num_g, dim))
    d = lambda a, b: np.linalg.norm(a[:, None] - b[None], axis=2)  # noqa: E731
    return d(qf, gf), d(qf, qf), d(gf, gf)


@pytest.mark.parametrize("k1, k2, lam, num_q, num_g", [(4, 3, 0.3, 4, 12), (5, 1, 0.0, 4, 12), (3, 2, 0.7, 4, 12),
                                                      (20, 6, 0.3, 30, 120)])
def test_re_ranking_equals_torchreid(k1, k2, lam, num_q, num_g):
    """The independent reference: torchreid's own re_ranking file (Zhong et al.'s code)."""
    peer = _peers.torchreid_module("rerank")
    if peer is None:
        pytest.skip(_peers.TORCHREID_ABSENT)
    qg, qq, gg = _features_dists(k1 + k2, num_q, num_g)
    out = re_ranking(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    assert out.shape == (num_q, num_g) and out.dtype == np.float32
    np.testing.assert_allclose(out, peer.re_ranking(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam), atol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_re_ranking_features_equals_torchreid_on_the_distance_matrices(metric):
    peer = _peers.torchreid_module("rerank")
    if peer is None:
        pytest.skip(_peers.TORCHREID_ABSENT)
    rng = np.random.default_rng(3)
    qf, gf = rng.standard_normal((25, 8)).astype(np.float32), rng.standard_normal((90, 8)).astype(np.float32)
    ref = peer.re_ranking(pairwise_distance(qf, gf, metric), pairwise_distance(qf, qf, metric),
                          pairwise_distance(gf, gf, metric))
    out = metrics.re_ranking_features(qf, gf, metric)
    assert out.shape == (25, 90) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_re_ranking_features_is_chunked_without_changing_the_result(monkeypatch):
    rng = np.random.default_rng(4)
    qf, gf = rng.standard_normal((12, 5)), rng.standard_normal((40, 5))
    whole = metrics.re_ranking_features(qf, gf, k1=6, k2=3)
    monkeypatch.setattr(metrics.rerank, "CHUNK_BYTES", 1)  # one row (one pair) per chunk everywhere
    # Equal up to float32 rounding (a matmul's last bit depends on the block shape).
    np.testing.assert_allclose(metrics.re_ranking_features(qf, gf, k1=6, k2=3), whole, atol=1e-6)


def test_re_ranking_keeps_a_clear_nearest_neighbour_first():
    # 1-D points: query 0 at 0.0 next to gallery 0 (0.02) in a tight cluster {g0, g1, g2};
    # query 1 at 10.0 next to gallery 3 (10.01) in the cluster {g3, g4, g5}.
    q = np.array([0.0, 10.0])
    g = np.array([0.02, 0.3, 0.4, 10.01, 10.3, 10.4])
    d = lambda a, b: np.abs(a[:, None] - b[None, :])  # noqa: E731
    out = re_ranking(d(q, g), d(q, q), d(g, g), k1=2, k2=2, lambda_value=0.3)
    assert out.shape == (2, 6) and np.isfinite(out).all()
    assert out.argmin(axis=1).tolist() == [0, 3]
    assert (out[0, :3] < out[0, 3:].min()).all()  # own cluster before the other one


def test_re_ranking_lambda_one_is_the_squared_distance_over_its_row_maximum():
    # 1 query at 0, gallery at 1, 2, 4 on a line: the query's row of squared distances is
    # (0 | 1, 4, 16), so its scale is 16 (the gallery-gallery 9 does not enter it).
    q, g = np.array([0.0]), np.array([1.0, 2.0, 4.0])
    d = lambda a, b: np.abs(a[:, None] - b[None, :])  # noqa: E731
    out = re_ranking(d(q, g), d(q, q), d(g, g), k1=1, k2=1, lambda_value=1.0)
    np.testing.assert_allclose(out, [[1 / 16, 4 / 16, 16 / 16]], rtol=1e-6)


def test_re_ranking_refuses_too_many_items(monkeypatch):
    monkeypatch.setattr(metrics.rerank, "MAX_RERANK_ITEMS", 10)
    qg, qq, gg = _features_dists(0, 3, 8)
    with pytest.raises(ValueError, match=r"Q \+ G = 11 exceeds MAX_RERANK_ITEMS = 10"):
        re_ranking(qg, qq, gg, k1=2, k2=1)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"q_q_dist": np.zeros((2, 2))}, r"q_q_dist must be \(Q, Q\)"),
        ({"g_g_dist": np.zeros((8, 7))}, r"g_g_dist must be \(G, G\)"),
        ({"k1": 11}, "k1 must be < Q"),
        ({"k2": 0}, "k2 must be an integer >= 1"),
        ({"lambda_value": 1.5}, r"lambda_value must be in \[0, 1\]"),
        ({"q_g_dist": np.full((3, 8), np.nan)}, "q_g_dist must be finite"),
        ({"q_g_dist": np.zeros((3, 8)), "q_q_dist": np.zeros((3, 3))}, "query 0 is at distance 0 from every item"),
    ],
)
def test_re_ranking_bad_inputs(change, message):
    qg, qq, gg = _features_dists(0, 3, 8)
    args = dict(q_g_dist=qg, q_q_dist=qq, g_g_dist=gg, k1=3, k2=2, lambda_value=0.3)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        re_ranking(**args)


# --------------------------------------------------------------------------- benchmark script


def test_benchmark_script_runs_and_agrees(capsys):
    threads = torch.get_num_threads()
    try:
        assert _bench.main(["--queries", "30", "--gallery", "200", "--ids", "10", "--repeats", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "faster" in out
    assert "mAP 0.00e+00  CMC 0.00e+00  mINP 0.00e+00" in out  # against the stable-sort reference


def _bench_module(name):
    spec = importlib.util.spec_from_file_location(f"esnet_bench_{name}", _BENCH.with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peer_benchmark_agrees_with_torchreid(capsys):
    if _peers.torchreid_module("rank") is None:
        pytest.skip(_peers.TORCHREID_ABSENT)
    threads = torch.get_num_threads()
    try:
        assert _bench_module("peer_eval").main(["--queries", "40", "--gallery", "260", "--ids", "12", "--threads", "1",
                                                "--rerank-queries", "20", "--rerank-gallery", "80"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "max |mAP diff| 0.00e+00" in out
    diffs = [float(x) for x in re.findall(r"max \|dist - torchreid\| ([\d.e+-]+)", out)]
    assert len(diffs) == 2 and max(diffs) < 1e-6  # dense and feature re-ranking vs torchreid's


def test_rerank_memory_benchmark_runs(capsys):
    threads = torch.get_num_threads()
    try:
        assert _bench_module("rerank_memory").main(["--sizes", "120,240", "--dim", "16", "--threads", "1",
                                                    "--check-dense", "240"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    diffs = [float(x) for x in re.findall(r"max \|features - dense matrices\| = ([\d.e+-]+)", out)]
    assert len(diffs) == 2 and max(diffs) < 1e-6
    assert "MSMT17 (11659 x 82161), extrapolated" in out
