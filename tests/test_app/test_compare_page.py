"""AppTest of the Baseline vs ES-Net page on two untrained synthetic runs and a tiny noise dataset."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app import compare_views as cv
from esnet import api
from tests.synthetic import make_noisy_market, make_run, random_checkpoint
from tests.test_app.model_pages import errors, image_captions, images, open_page

DATASET = "market1501"


def checkpointed_run(runs: Path, name: str, erasing: str, *, seed: int, dataset: str = DATASET,
                     checkpoint: bool = True) -> Path:
    """A finished synthetic run (``make_run``) trained, as its config says, on ``dataset``, with an
    untrained resnet18 64x32 last.pt (``random_checkpoint``, torch seeded with ``seed``) unless not ``checkpoint``."""
    d = make_run(runs / name, pool="avg", erasing=erasing)
    cfg = json.loads((d / "config.json").read_text())
    cfg["data"]["dataset"] = dataset
    (d / "config.json").write_text(json.dumps(cfg))
    if checkpoint:
        random_checkpoint(d / "checkpoints" / "last.pt", overrides={"model.erasing": erasing}, seed=seed)
    return d


@dataclass(frozen=True)
class Env:
    base: Path
    runs: Path
    root: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    base = tmp_path_factory.mktemp("compare")
    root = make_noisy_market(base / "market")
    runs = base / "runs"
    checkpointed_run(runs, "baseline", "off", seed=0)
    checkpointed_run(runs, "esnet", "salient", seed=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ESNET_RUNS_DIR", str(runs))
        mp.setenv("ESNET_DATASET_ROOT", str(root))
        mp.setenv("ESNET_CACHE_DIR", str(base / "cache"))
        mp.setenv("ESNET_USER_RUNS_DIR", str(base / "user-runs"))
        mp.setenv("ESNET_ALLOWED_ROOTS", str(base))
        yield Env(base=base, runs=runs, root=root)


@pytest.fixture(scope="module")
def reports(env: Env) -> tuple[api.EvalReport, api.EvalReport, pd.DataFrame]:
    rep_a = api.evaluate_checkpoint(env.runs / "baseline", DATASET, env.root)
    rep_b = api.evaluate_checkpoint(env.runs / "esnet", DATASET, env.root)
    return rep_a, rep_b, api.compare_reports(rep_a, rep_b)


def _array(values) -> np.ndarray:
    """A plotly trace's data array, plain list or plotly 6's typed array ({"dtype", "bdata"})."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"]))
    return np.asarray(values, dtype=float)


def _chart(at, i: int) -> dict:
    return json.loads(at.get("plotly_chart")[i].proto.spec)


def test_delta_histogram_and_tables_are_compare_reports(env, reports) -> None:
    rep_a, rep_b, diff = reports
    at = open_page("compare")
    assert not at.exception, at.exception
    assert not errors(at)
    assert at.selectbox(key="compare_a").value == "baseline" and at.selectbox(key="compare_b").value == "esnet"
    # the fixture is built so that B wins some queries and loses others
    assert (diff["delta"] > 0).any() and (diff["delta"] < 0).any()
    assert len(diff) == int((rep_a.per_query["valid"] & rep_b.per_query["valid"]).sum()) == 8

    hist = _chart(at, 0)["data"][0]
    assert hist["type"] == "histogram"
    np.testing.assert_allclose(_array(hist["x"]), diff["delta"].to_numpy(), rtol=0, atol=1e-12)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["mean ΔAP (B − A)"] == f"{diff['delta'].mean():+.3f}"
    assert metrics["B wins"] == str(int((diff["delta"] > 0).sum()))
    assert metrics["B losses"] == str(int((diff["delta"] < 0).sum()))
    assert metrics["ties"] == "0"

    wins, losses = at.dataframe[0].value, at.dataframe[1].value
    assert list(wins.columns) == cv.EXTREME_COLUMNS
    assert list(wins["delta"]) == sorted(diff.loc[diff["delta"] > 0, "delta"], reverse=True)
    assert list(losses["delta"]) == sorted(diff.loc[diff["delta"] < 0, "delta"])
    for table in (wins, losses):
        for _, r in table.iterrows():
            q = int(r["query"])
            assert r["ap_a"] == rep_a.per_query.loc[q, "ap"] and r["ap_b"] == rep_b.per_query.loc[q, "ap"]
            assert r["delta"] == pytest.approx(r["ap_b"] - r["ap_a"], abs=1e-12)
            assert r["first_hit_a"] == rep_a.per_query.loc[q, "first_hit"]
            assert r["first_hit_b"] == rep_b.per_query.loc[q, "first_hit"]


def test_one_query_rankings_and_cams_of_both_models(env, reports) -> None:
    rep_a, rep_b, diff = reports
    at = open_page("compare")
    best = int(diff.loc[diff["delta"].idxmax(), "query"])
    assert at.selectbox(key="compare_query").value == best  # the biggest win by default
    for q in (best, int(diff.loc[diff["delta"].idxmin(), "query"])):  # then the biggest loss
        at.selectbox(key="compare_query").set_value(q).run()
        assert not at.exception, at.exception
        shown = [m.value for m in at.markdown]
        for name, rep in (("baseline", rep_a), ("esnet", rep_b)):
            pq = rep.per_query.loc[q]
            assert f"**{name}** · AP {pq['ap']:.2f} · first hit {pq['first_hit']}" in shown
        matches = api.true_matches(rep_b, q, 4)
        assert 1 <= len(matches) <= 2  # two images of the id from camera 2; one from camera 1 is ignored (id 50)
        # two top-10 strips (query + 10 scored + any ignored) and two rows of CAMs (query + true matches)
        strips = sum(1 + len(api.query_ranking(rep, q, topk=10)) for rep in (rep_a, rep_b))
        assert len(images(at)) == strips + 2 * (1 + len(matches))
        cams = [c for c in image_captions(at) if c.startswith("true match")]
        expected = [f"true match · rank {api.true_matches(rep, q, 100).set_index('path').loc[p, 'rank']}"
                    for rep in (rep_a, rep_b) for p in matches["path"]]
        assert cams == expected
    assert not at.get("progress")  # the attention-spread bars are gone once measured


def test_attention_spread_sentence_is_compare_attention(env) -> None:
    frames = [api.attention_spread_frame(api.load_inference(env.runs / n), DATASET, env.root)
              for n in ("baseline", "esnet")]
    at = open_page("compare")
    for measure in ("coverage", "entropy"):
        if measure != "coverage":
            at.radio(key="compare_measure").set_value(measure).run()
        assert not at.exception, at.exception
        c = api.compare_attention(frames[0], frames[1], measure)
        sentence = next(m.value for m in at.markdown if "paired bootstrap" in m.value)
        assert f"mean {measure} of **esnet** is {c['mean_b']:.3f} against {c['mean_a']:.3f}" in sentence
        interval = f"(95 % paired bootstrap interval {c['ci_low']:+.3f} to {c['ci_high']:+.3f})"
        assert f"{c['diff']:+.3f} {interval}" in sentence
        verdict = "wider" if c["ci_low"] > 0 else "narrower" if c["ci_high"] < 0 else "not measurably different"
        assert f"B's attention is **{verdict}**" in sentence
        spread = _chart(at, 1)["data"]
        assert [t["type"] for t in spread] == ["histogram", "histogram"]
        np.testing.assert_allclose(np.sort(_array(spread[1]["x"])), np.sort(frames[1][measure].to_numpy()), atol=1e-9)
    at.run()  # a rerun reads every cache (the bars made inside the cached function replay without error)
    assert not at.exception, at.exception


def test_fewer_than_two_checkpoints_is_one_sentence(env) -> None:
    runs = env.base / "one"
    checkpointed_run(runs, "baseline", "off", seed=0)
    checkpointed_run(runs, "esnet", "salient", seed=1, checkpoint=False)
    at = open_page("compare", state={"esnet.runs_dir": str(runs)})
    assert not at.exception, at.exception
    assert not errors(at)
    assert [i.value for i in at.info] == [
        f"Comparing needs two runs with a checkpoint (checkpoints/last.pt) in `{runs}`, for example a baseline "
        "(erasing off) and an ES-Net run (erasing salient); only 'baseline' has one."]
    assert not at.get("plotly_chart") and not at.dataframe


def test_runs_of_different_datasets_is_one_sentence(env) -> None:
    runs = env.base / "mixed"
    checkpointed_run(runs, "baseline", "off", seed=0)
    checkpointed_run(runs, "esnet", "salient", seed=1, dataset="demo")
    at = open_page("compare", state={"esnet.runs_dir": str(runs)})
    assert not at.exception, at.exception
    assert not errors(at)
    assert [i.value for i in at.info] == [
        "'baseline' was trained on 'market1501' and 'esnet' on 'demo': pick two runs of the same dataset to "
        "compare them query by query."]
    assert not at.get("plotly_chart")


def test_default_pair_prefers_the_focused_es_net_run() -> None:
    runs = pd.DataFrame({"run": ["a-esnet", "b-base", "c-esnet", "d-max"],
                         "erasing": ["salient", "off", "salient", "random"]})
    assert cv.default_pair(runs, None) == ("b-base", "a-esnet")
    assert cv.default_pair(runs, "c-esnet") == ("b-base", "c-esnet")
    assert cv.default_pair(runs, "d-max") == ("b-base", "a-esnet")  # not an ES-Net run: not B
    assert cv.default_pair(runs.iloc[[0, 2]], None) == ("c-esnet", "a-esnet")  # no baseline: another run as A
    assert cv.default_pair(runs.iloc[[1, 3]], None) == ("b-base", "d-max")  # no ES-Net run: another run as B
    with pytest.raises(ValueError, match="at least two runs"):
        cv.default_pair(runs.iloc[[1]], None)
