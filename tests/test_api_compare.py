"""api.compare_reports, true_matches and compare_attention on small synthetic reports and frames."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from esnet import api
from tests.synthetic import make_noisy_market, random_checkpoint


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_noisy_market(tmp_path_factory.mktemp("noisy"))


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory, root: Path) -> tuple[api.EvalReport, api.EvalReport]:
    d = tmp_path_factory.mktemp("ckpt")
    a = random_checkpoint(d / "a.pt", overrides={"model.erasing": "off"}, seed=0)
    b = random_checkpoint(d / "b.pt", seed=1)
    return api.evaluate_checkpoint(a, "market1501", root), api.evaluate_checkpoint(b, "market1501", root)


def _with(report: api.EvalReport, **columns) -> api.EvalReport:
    """``report`` with per-query columns replaced (compare_reports reads per_query only)."""
    return dataclasses.replace(report, per_query=report.per_query.assign(**columns))


def test_compare_reports_pairs_the_queries_valid_in_both(reports) -> None:
    rep, _ = reports
    n = rep.num_query
    assert n == 8
    ap_a = np.linspace(0.1, 0.8, n)
    ap_b = ap_a[::-1].copy()
    valid_b = np.ones(n, bool)
    valid_b[2] = False  # not scored by b: left out
    a = _with(rep, ap=ap_a, first_hit=np.arange(1, n + 1))
    b = _with(rep, ap=ap_b, first_hit=np.arange(n, 0, -1), valid=valid_b)
    diff = api.compare_reports(a, b)
    keep = [q for q in range(n) if q != 2]
    assert list(diff["query"]) == keep
    assert list(diff["path"]) == [rep.per_query.loc[q, "path"] for q in keep]
    np.testing.assert_array_equal(diff["ap_a"], ap_a[keep])
    np.testing.assert_array_equal(diff["ap_b"], ap_b[keep])
    np.testing.assert_allclose(diff["delta"], ap_b[keep] - ap_a[keep], rtol=0, atol=1e-15)
    assert diff.loc[0, "delta"] == pytest.approx(0.7)  # 0.8 - 0.1
    assert list(diff["first_hit_a"]) == [q + 1 for q in keep]
    assert list(diff["first_hit_b"]) == [n - q for q in keep]


def test_compare_reports_of_two_models(reports) -> None:
    a, b = reports
    diff = api.compare_reports(a, b)
    assert len(diff) == 8 and set(diff.columns) >= {"pid", "camera", "ap_a", "ap_b", "delta"}
    np.testing.assert_array_equal(diff["ap_a"], a.per_query["ap"])
    np.testing.assert_array_equal(diff["ap_b"], b.per_query["ap"])
    assert (diff["delta"] != 0).all()  # untrained models of two seeds rank noise differently
    assert (diff["ap_a"] == a.result.ap).all() and (diff["first_hit_b"] == b.result.first_hit + 1).all()
    same = api.compare_reports(a, a)
    assert (same["delta"] == 0).all()


def test_compare_reports_refuses_different_queries(reports) -> None:
    a, b = reports
    other = _with(b, path=list(reversed(b.per_query["path"])))
    with pytest.raises(ValueError, match="different queries"):
        api.compare_reports(a, other)
    fewer = dataclasses.replace(b, per_query=b.per_query.iloc[:5])
    with pytest.raises(ValueError, match="different queries"):
        api.compare_reports(a, fewer)


def test_true_matches_are_the_scored_same_identity_images_best_first(reports) -> None:
    a, _ = reports
    for q in range(a.num_query):
        qpid = int(a.query.pids[q])
        matches = api.true_matches(a, q, limit=4)
        names = {Path(p).name for p in matches["path"]}
        # each test id has two gallery images from camera 2; id 50's camera-1 image shares the query's camera
        assert names == {f"{qpid:04d}_c2s1_{k:06d}_00.jpg" for k in range(2)}
        assert (matches["pid"] == qpid).all() and matches["correct"].all() and not matches["ignored"].any()
        assert list(matches["distance"]) == sorted(matches["distance"])
        assert matches.loc[0, "rank"] == a.per_query.loc[q, "first_hit"]  # the first true match is the first hit
        assert list(api.true_matches(a, q, limit=1)["path"]) == [matches.loc[0, "path"]]


def _spread(paths: list[str], coverage: list[float], entropy: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"path": paths, "coverage": coverage, "entropy": entropy})


def test_compare_attention_pairs_images_by_path() -> None:
    a = _spread(["p0", "p1", "p2", "p3"], [0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5])
    # b lists the same images in another order; per image: +0.1, +0.1, -0.1, +0.3
    b = _spread(["p3", "p2", "p1", "p0"], [0.7, 0.2, 0.3, 0.2], [0.6, 0.6, 0.6, 0.4])
    c = api.compare_attention(a, b, "coverage")
    assert c["n"] == 4
    assert c["mean_a"] == pytest.approx(0.25) and c["mean_b"] == pytest.approx(0.35)
    assert c["diff"] == pytest.approx(0.1) and c["frac_b_wider"] == pytest.approx(0.75)
    assert -0.1 <= c["ci_low"] <= c["diff"] <= c["ci_high"] <= 0.3  # inside the range of the differences
    e = api.compare_attention(a, b, "entropy")
    assert e["diff"] == pytest.approx(0.05) and e["frac_b_wider"] == pytest.approx(0.75)  # +0.1 x3, -0.1


def test_compare_attention_constant_gap_has_a_zero_width_interval_and_drops_nan() -> None:
    a = _spread([f"p{i}" for i in range(6)], [0.1, 0.2, 0.3, 0.4, 0.5, np.nan], [0.0] * 6)
    b = _spread([f"p{i}" for i in range(6)], [0.3, 0.4, 0.5, 0.6, 0.7, 0.9], [0.0] * 6)
    c = api.compare_attention(a, b)  # coverage by default
    assert c["n"] == 5
    assert c["diff"] == pytest.approx(0.2) and c["ci_low"] == pytest.approx(0.2) and c["ci_high"] == pytest.approx(0.2)
    assert c["frac_b_wider"] == 1.0
    assert api.compare_attention(b, a)["diff"] == pytest.approx(-0.2)


def test_compare_attention_bad_input() -> None:
    a = _spread(["p0", "p1"], [0.1, 0.2], [0.3, 0.4])
    with pytest.raises(ValueError, match="measure must be"):
        api.compare_attention(a, a, "area")
    with pytest.raises(ValueError, match="at least 2"):
        api.compare_attention(a, _spread(["p0", "x"], [0.3, 0.3], [0.3, 0.3]))  # one image in common


def test_attention_spread_frame_keeps_a_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    root = make_noisy_market(tmp_path / os.fsdecode(b"caf\xe9"))  # a Latin-1 byte in the root's name
    inf = api.load_inference(random_checkpoint(tmp_path / "m.pt", seed=0))
    first = api.attention_spread_frame(inf, "market1501", root, cache_dir=tmp_path / "cache")
    again = api.attention_spread_frame(inf, "market1501", root, cache_dir=tmp_path / "cache")
    assert not first.attrs["from_cache"] and again.attrs["from_cache"]
    assert len(first) > 0 and all("\udce9" in p for p in first["path"])  # the undecodable byte, kept
    assert list(again["path"]) == list(first["path"])
    np.testing.assert_allclose(again["coverage"], first["coverage"], rtol=1e-12)
