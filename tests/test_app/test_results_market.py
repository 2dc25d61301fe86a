"""The committed Market-1501 results (results/market1501, no images) open in the dashboard.

Without a dataset the Erasing inspector draws the real CAMs on grey and says where images
would come from; with ``$ESNET_MARKET1501`` (make test unpacks ../shared/data there) the probe
images are read from the user's copy, as ``make results`` does through ``$ESNET_DATASET_ROOT``.
"""
import json
import os
from pathlib import Path

import pytest

from app import state
from tests.test_app.runpages import ROOT, frame_with, open_app, plotly_specs, tiny_demo

RESULT_DIRS = [ROOT / "results" / "market1501", ROOT / "results" / "market1501-pilots"]
COMMITTED = {run: d for d in RESULT_DIRS if d.is_dir() for run in sorted(p.name for p in d.iterdir())
             if (d / run / "metrics.jsonl").is_file()}
"""Every committed run (name -> its results folder)."""
WITH_PROBES = [run for run, d in COMMITTED.items() if (d / run / "probes" / "probes.json").is_file()]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_demo(tmp_path_factory)


def _best_map(run: str) -> float:
    """The best mAP (%) among the evaluations in the committed metrics.jsonl."""
    lines = (COMMITTED[run] / run / "metrics.jsonl").read_text().splitlines()
    return max(100 * e["mAP"] for e in (json.loads(line).get("eval") for line in lines) if e)


def test_results_are_committed() -> None:
    assert WITH_PROBES, f"no committed run with probe records among {COMMITTED}"


@pytest.mark.parametrize("results", [d for d in RESULT_DIRS if d in COMMITTED.values()], ids=lambda d: d.name)
def test_pooling_page_lists_committed_runs_with_their_best_map(results, demo_root, monkeypatch) -> None:
    at = open_app(monkeypatch, results, demo_root, "../pages/pooling.py", allowed=[ROOT])
    assert not at.exception, at.exception
    frame = frame_with(at, "best_mAP").set_index("run")
    assert set(frame.index) <= {r for r, d in COMMITTED.items() if d == results} and len(frame) >= 1
    for run in frame.index:
        assert frame.loc[run, "best_mAP"] == pytest.approx(_best_map(run), abs=0.01)
    cmc = plotly_specs(at)[0]
    assert len(cmc["data"]) == len(frame)


def _open_erasing(monkeypatch, demo_root, allowed):
    run = WITH_PROBES[0]
    at = open_app(monkeypatch, COMMITTED[run], demo_root, "../pages/erasing.py", allowed=allowed)
    at.sidebar.selectbox(key=state.KEY_RUN).set_value(run).run()
    return at


def test_erasing_inspector_draws_committed_cams_without_the_dataset(demo_root, monkeypatch) -> None:
    monkeypatch.setenv("ESNET_DATASET_ROOT", str(demo_root))  # a dataset that lacks these images
    at = _open_erasing(monkeypatch, demo_root, [ROOT])
    assert not at.exception, at.exception
    assert at.info and "Probe images unavailable for 16 of 16" in at.info[0].value
    assert at.image[0].captions == ["image unavailable"]


@pytest.mark.skipif(not os.environ.get("ESNET_MARKET1501"), reason="ESNET_MARKET1501 is not set (make test sets it "
                    "when ../shared/data holds Market-1501)")
def test_erasing_inspector_reads_probe_images_from_the_users_market(demo_root, monkeypatch) -> None:
    market = Path(os.environ["ESNET_MARKET1501"])
    monkeypatch.setenv("ESNET_DATASET_ROOT", str(market))
    at = _open_erasing(monkeypatch, demo_root, [ROOT, market])
    assert not at.exception, at.exception
    assert at.sidebar.text_input(key=state.KEY_DATASET_ROOT).value == str(market)
    assert not [i.value for i in at.info if "Probe images unavailable" in i.value]
    assert at.image[0].captions == ["probe image"]


MODEL_PAGES = ("rank_browser", "embeddings", "search", "evaluate")


@pytest.mark.parametrize("page", MODEL_PAGES)
def test_model_pages_say_in_one_sentence_what_they_need(tmp_path, demo_root, monkeypatch, page) -> None:
    """Committed Market runs without a Market copy, or without a checkpoint: one info sentence, no red error."""
    import shutil

    from tests.synthetic import random_checkpoint

    runs = tmp_path / "runs"
    shutil.copytree(COMMITTED["c_esnet_avg"] / "c_esnet_avg", runs / "with_model", ignore=shutil.ignore_patterns(
        "checkpoints"))
    random_checkpoint(runs / "with_model" / "checkpoints" / "last.pt")
    shutil.copytree(COMMITTED["c_esnet_avg"] / "c_esnet_avg", runs / "no_model", ignore=shutil.ignore_patterns(
        "checkpoints"))
    empty = tmp_path / "no-market"
    empty.mkdir()
    monkeypatch.setenv("ESNET_DATASET_ROOT", str(empty))
    at = open_app(monkeypatch, runs, demo_root, f"../pages/{page}.py", allowed=[tmp_path])
    at.sidebar.selectbox(key=state.KEY_RUN).set_value("with_model").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert [i.value for i in at.info if "needs the images of Market-1501" in i.value]
    assert any("make results" in i.value for i in at.info)
    at.sidebar.selectbox(key=state.KEY_RUN).set_value("no_model").run()
    assert not at.exception and not at.error
    needs = [i.value for i in at.info if "ships without a model checkpoint" in i.value]
    assert needs and "with_model" in needs[0]  # names the runs that can be used instead


def test_make_results_opens_on_the_es_net_run(demo_root, monkeypatch) -> None:
    """``make results`` sets ``$ESNET_DEFAULT_RUN``: the sidebar opens on that run, not the first by name."""
    monkeypatch.setenv("ESNET_DEFAULT_RUN", "l_esnet_avg_e40")
    at = open_app(monkeypatch, COMMITTED["l_esnet_avg_e40"], demo_root, allowed=[ROOT])
    assert at.sidebar.selectbox(key=state.KEY_RUN).value == "l_esnet_avg_e40"
    monkeypatch.setenv("ESNET_DEFAULT_RUN", "no_such_run")  # a name that is not here: the usual default
    at = open_app(monkeypatch, COMMITTED["l_esnet_avg_e40"], demo_root, allowed=[ROOT])
    assert at.sidebar.selectbox(key=state.KEY_RUN).value != "no_such_run"
