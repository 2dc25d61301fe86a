"""esnet.search: brute-force references, backend agreement, IVF recall, re-ranking, bad inputs."""
from __future__ import annotations

import warnings

import numpy as np
import pandas  # noqa: F401  (to_frame imports it; ~1 s paid at collection, not in a test)
import pytest
import torch

from esnet import metrics
from esnet import search as search_mod
from esnet.metrics import pairwise_distance, re_ranking
from esnet.search import SearchResult, _smallest_k, build_index, search


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_unit(seed: int, n: int, d: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, d)))


def clustered(seed: int, n: int, d: int, clusters: int, spread: float = 0.6) -> np.ndarray:
    """n unit rows around `clusters` random unit centres (noise norm ~ spread)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters, d)))
    labels = rng.integers(0, clusters, n)
    return unit(centres[labels] + spread * rng.standard_normal((n, d)) / np.sqrt(d))


def brute_force(q: np.ndarray, g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = 1.0 - q.astype(np.float64) @ g.astype(np.float64).T
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, axis=1)


# --------------------------------------------------------------------------- exact


def test_exact_equals_numpy_brute_force() -> None:
    g, q = random_unit(0, 300, 16), random_unit(1, 7, 16)
    res = search(build_index(g, backend="exact"), q, topk=10)
    ref_idx, ref_d = brute_force(q, g, 10)
    np.testing.assert_array_equal(res.indices, ref_idx)
    np.testing.assert_allclose(res.distances, ref_d, atol=1e-6)
    assert res.indices.dtype == np.int64 and res.distances.dtype == np.float32
    assert res.indices.shape == (7, 10) and (np.diff(res.distances, axis=1) >= 0).all()
    assert res.backend == "exact" and res.reranked is False and res.correct is None and res.paths is None
    np.testing.assert_array_equal(res.pids, -np.ones((7, 10)))
    assert not res.indices.flags.writeable


def test_exact_ties_broken_by_gallery_index() -> None:
    e = np.eye(4, dtype=np.float32)
    g = e[[1, 0, 2, 0, 1, 0]]  # rows 1, 3, 5 equal the query (distance exactly 0); rows 0, 4 tie at 1
    res = search(build_index(g), e[[0]], topk=4)
    np.testing.assert_array_equal(res.indices[0], [1, 3, 5, 0])
    np.testing.assert_array_equal(res.distances[0], [0, 0, 0, 1])
    np.testing.assert_array_equal(search(build_index(g), e[[0]], topk=2).indices[0], [1, 3])


def test_smallest_k_matches_stable_argsort_with_many_ties() -> None:
    d = np.random.default_rng(0).integers(0, 5, (50, 40)).astype(np.float32)
    for k in (1, 7, 39, 40):
        idx, val = _smallest_k(d, k)
        ref = np.argsort(d, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(idx, ref)
        np.testing.assert_array_equal(val, np.take_along_axis(d, ref, axis=1))


def test_topk_clamped_to_gallery_size() -> None:
    g, q = random_unit(2, 5, 8), random_unit(3, 2, 8)
    res = search(build_index(g), q, topk=10)
    assert res.indices.shape == (2, 5)
    np.testing.assert_array_equal(np.sort(res.indices, axis=1), [[0, 1, 2, 3, 4]] * 2)
    np.testing.assert_array_equal(res.indices, brute_force(q, g, 5)[0])


def test_readonly_memmap_and_float64_inputs(tmp_path) -> None:
    g = random_unit(4, 50, 8)
    mm = np.memmap(tmp_path / "g.f32", dtype=np.float32, mode="w+", shape=g.shape)
    mm[:] = g
    mm.flush()
    ro = np.memmap(tmp_path / "g.f32", dtype=np.float32, mode="r", shape=g.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "non-writable array" warning
        res = search(build_index(ro), g[:3].astype(np.float64), topk=3)
    np.testing.assert_array_equal(res.indices[:, 0], [0, 1, 2])
    np.testing.assert_allclose(res.distances[:, 0], 0.0, atol=1e-6)


# --------------------------------------------------------------------------- faiss


def test_faiss_flat_agrees_with_exact() -> None:
    g, q = random_unit(5, 500, 32), random_unit(6, 20, 32)
    exact = search(build_index(g, backend="exact"), q, topk=10)
    flat = search(build_index(g, backend="faiss-flat"), q, topk=10)
    assert flat.backend == "faiss-flat"
    np.testing.assert_array_equal(flat.indices, exact.indices)
    np.testing.assert_allclose(flat.distances, exact.distances, atol=1e-5)
    assert (np.diff(flat.distances, axis=1) >= 0).all()


def test_faiss_ivf_recall_on_clustered_data() -> None:
    data = clustered(7, 5040, 64, clusters=50, spread=1.0)
    g, q = data[:5000], data[5000:]  # queries: fresh samples of the gallery's clusters
    index = build_index(g, backend="faiss-ivf", seed=0)
    assert (index.backend, index.nlist, index.nprobe) == ("faiss-ivf", 5000 // 39, 16)
    ivf = search(index, q, topk=10)
    exact = search(build_index(g, backend="exact"), q, topk=10)

    def recall(res: SearchResult) -> float:
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res.indices, exact.indices)]))

    assert recall(ivf) >= 0.95, recall(ivf)
    one_list = search(build_index(g, backend="faiss-ivf", nprobe=1), q, topk=10)
    assert recall(one_list) < 0.9, recall(one_list)  # the check can fail: one list misses hits
    assert (np.diff(ivf.distances, axis=1) >= 0).all()
    found = ivf.indices == exact.indices  # where IVF found the exact hit, the distance agrees
    np.testing.assert_allclose(ivf.distances[found], exact.distances[found], atol=1e-5)


def test_ivf_parameters_and_errors() -> None:
    g = random_unit(10, 400, 8)
    index = build_index(g, backend="faiss-ivf", nlist=10, nprobe=1, seed=3)
    assert (index.nlist, index.nprobe) == (10, 1)
    with pytest.raises(ValueError, match=r"nprobe=1 of nlist=10"):  # one list cannot hold 400 hits
        search(index, g[:1], topk=400)
    with pytest.raises(ValueError, match=r"nlist=11 needs N >= 429.*N=400.*nlist <= 10"):
        build_index(g, backend="faiss-ivf", nlist=11)
    with pytest.raises(ValueError, match=r"nprobe must be <= nlist=10, got 11"):
        build_index(g, backend="faiss-ivf", nlist=10, nprobe=11)
    with pytest.raises(ValueError, match=r"N=38"):
        build_index(g[:38], backend="faiss-ivf")
    with pytest.raises(ValueError, match=r"nlist=4 nprobe=None for backend 'exact'"):
        build_index(g, backend="auto", nlist=4)  # auto resolves to exact at this size
    same = build_index(g, backend="faiss-ivf", nlist=10, nprobe=1, seed=3)
    np.testing.assert_array_equal(search(same, g[:5]).indices, search(index, g[:5]).indices)


# --------------------------------------------------------------------------- metadata


def test_correct_flags_paths_and_pids() -> None:
    g = random_unit(11, 12, 8)
    pids = np.arange(12) % 3
    paths = [f"img_{i}.jpg" for i in range(12)]
    index = build_index(g, paths=paths, pids=pids, camids=np.arange(12) % 2)
    res = search(index, g[[0, 1, 2]], topk=4, query_pids=[0, -1, 2])
    np.testing.assert_array_equal(res.pids, pids[res.indices])
    np.testing.assert_array_equal(res.camids, (np.arange(12) % 2)[res.indices])
    np.testing.assert_array_equal(res.correct[0], pids[res.indices[0]] == 0)
    assert res.correct[0, 0] and not res.correct[1].any()  # unknown query pid: never correct
    np.testing.assert_array_equal(res.correct[2], pids[res.indices[2]] == 2)
    assert res.paths[2] == tuple(f"img_{i}.jpg" for i in res.indices[2])


def test_exclude_same_camera_matches_protocol_filter() -> None:
    g = clustered(12, 60, 8, clusters=4)
    pids, cams = np.arange(60) % 4, (np.arange(60) // 4) % 3
    q = g[[0, 5, 10]]
    qp, qc = np.array([0, 1, -1]), np.array([0, 1, 2])
    for backend in ("exact", "faiss-flat"):
        res = search(build_index(g, pids=pids, camids=cams, backend=backend), q, topk=60,
                     query_pids=qp, query_camids=qc, exclude_same_camera=True)
        d = 1.0 - q.astype(np.float64) @ g.T.astype(np.float64)
        d[(pids == qp[:, None]) & (cams == qc[:, None]) & (qp[:, None] >= 0)] = np.inf
        assert res.indices.shape == (3, 55)  # 60 - 5 items of pid 0 (or 1) with camera 0 (or 1)
        np.testing.assert_array_equal(res.indices, np.argsort(d, axis=1, kind="stable")[:, :55])
        assert not ((res.pids == qp[:, None]) & (res.camids == qc[:, None]))[:2].any()
    with pytest.raises(ValueError, match="exclude_same_camera needs"):
        search(build_index(g, pids=pids), q, query_pids=qp, query_camids=qc, exclude_same_camera=True)
    with pytest.raises(ValueError, match="no gallery pids"):
        search(build_index(g), q, query_pids=qp)


def test_to_frame_columns_and_values() -> None:
    g = random_unit(13, 6, 4)
    res = search(build_index(g, paths=[f"p{i}" for i in range(6)], pids=np.arange(6)), g[[3]], topk=3, query_pids=[3])
    df = res.to_frame(0)
    assert list(df.columns) == ["rank", "index", "path", "pid", "camid", "camera", "distance", "correct"]
    assert df["rank"].tolist() == [1, 2, 3] and df["index"].iloc[0] == 3 and df["path"].iloc[0] == "p3"
    assert df["correct"].tolist() == [True, False, False] and df["camid"].tolist() == [-1, -1, -1]
    assert df["camera"].tolist() == [-1, -1, -1]
    shown = search(build_index(g, camids=np.arange(6) % 3, cameras=np.arange(6) % 3 + 4), g[[3]], topk=2).to_frame()
    assert shown["index"].iloc[0] == 3 and (shown["camera"] == shown["index"] % 3 + 4).all()  # carried per row
    assert df["distance"].iloc[0] == pytest.approx(0.0, abs=1e-6)
    bare = search(build_index(g), g[[3]], topk=2).to_frame()
    assert bare["path"].tolist() == [None, None] and bare["correct"].tolist() == [None, None]
    with pytest.raises(ValueError, match=r"query_index must be an integer in \[0, 1\), got 1"):
        res.to_frame(1)


# --------------------------------------------------------------------------- re-ranking


def _hub_case() -> tuple[np.ndarray, np.ndarray]:
    """Item 0 is the query's cosine-nearest, but its own 5 near-copies (1-5) crowd the query
    out of its neighbourhood; items 6, 7 are reciprocal neighbours of the query."""
    e = np.eye(6)
    hub = e[0] + 0.2 * e[1]
    friends = e[0] + 0.3 * e[1] + 0.02 * np.array([e[3], -e[3], e[4], -e[4], e[5]])
    pair = e[0] + 0.25 * e[2] + 0.02 * np.array([e[3], -e[3]])
    return unit(e[[0]]), unit(np.concatenate([hub[None], friends, pair]))


def test_rerank_changes_order_and_equals_re_ranking() -> None:
    q, g = _hub_case()
    plain = search(build_index(g), q, topk=8)
    rr = search(build_index(g), q, topk=8, rerank=True, k1=3, k2=1)
    np.testing.assert_array_equal(plain.indices[0, :3], [0, 6, 7])
    np.testing.assert_array_equal(rr.indices[0, :3], [6, 7, 0])
    ref = re_ranking(pairwise_distance(q, g), pairwise_distance(q, q), pairwise_distance(g, g), 3, 1, 0.3)
    np.testing.assert_array_equal(rr.indices, np.argsort(ref, axis=1, kind="stable"))
    np.testing.assert_allclose(rr.distances, np.sort(ref, axis=1), atol=1e-6)  # features vs matrices: float32 rounding
    assert rr.reranked and not plain.reranked
    flat = search(build_index(g, backend="faiss-flat"), q, topk=3, rerank=True, k1=3, k2=1)
    np.testing.assert_array_equal(flat.indices, rr.indices[:, :3])


def test_rerank_ivf_with_all_candidates_equals_exact(monkeypatch) -> None:
    g, q = clustered(14, 400, 8, clusters=5), random_unit(15, 3, 8)
    monkeypatch.setattr(search_mod, "IVF_RERANK_CANDIDATES", 400)
    ivf = search(build_index(g, backend="faiss-ivf", nlist=10, nprobe=10), q, topk=5, rerank=True)
    exact = search(build_index(g), q, topk=5, rerank=True)
    np.testing.assert_array_equal(ivf.indices, exact.indices)
    np.testing.assert_allclose(ivf.distances, exact.distances, atol=1e-6)


def test_rerank_refuses_large_gallery(monkeypatch) -> None:
    monkeypatch.setattr(metrics.rerank, "MAX_RERANK_ITEMS", 41)  # the one re-ranking limit
    g = random_unit(16, 41, 4)
    with pytest.raises(ValueError, match=r"1 queries \+ 41 gallery items: Q \+ G = 42 exceeds MAX_RERANK_ITEMS = 41"):
        search(build_index(g), g[:1], rerank=True)


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_naming_the_value() -> None:
    g = random_unit(17, 20, 8)
    nan = g.copy()
    nan[4, 2] = np.nan
    with pytest.raises(ValueError, match="row 4 holds NaN"):
        build_index(nan)
    with pytest.raises(ValueError, match=r"row 1 has norm 2"):
        build_index(np.concatenate([g[:1], 2 * g[1:]]))
    with pytest.raises(ValueError, match=r"non-empty \(N, D\).*\(0, 8\)"):
        build_index(np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match=r"got shape \(8,\)"):
        build_index(g[0])
    with pytest.raises(ValueError, match="dtype int64"):
        build_index(np.eye(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"pids has 19 entries.*\(20\)"):
        build_index(g, pids=np.arange(19))
    with pytest.raises(ValueError, match=r"paths has 3 entries.*\(20\)"):
        build_index(g, paths=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\['auto', 'exact', 'faiss-flat', 'faiss-ivf'\], got 'hnsw'"):
        build_index(g, backend="hnsw")
    index = build_index(g)
    with pytest.raises(ValueError, match="queries have D=4 but the index holds D=8"):
        search(index, random_unit(18, 2, 4))
    with pytest.raises(ValueError, match="topk must be an integer >= 1, got 0"):
        search(index, g[:1], topk=0)
    with pytest.raises(ValueError, match=r"query_pids has 2 entries.*\(1\)"):
        search(index, g[:1], query_pids=[1, 2])
    with pytest.raises(ValueError, match="index must be a GalleryIndex"):
        search(g, g[:1])
    assert isinstance(search(index, torch.from_numpy(g[:1])), SearchResult)
