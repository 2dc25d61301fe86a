"""AppTests of the Pooling comparison: run table, CMC and p curves, the live avg / GeM / max demo."""
from pathlib import Path

import pytest

from tests.synthetic import make_run
from tests.test_app.runpages import frame_with, open_app, plotly_specs, plotly_values, tiny_demo

PAGE = "views/pooling.py"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_demo(tmp_path_factory)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    d = tmp_path / "runs"
    make_run(d / "esnet-p")
    make_run(d / "esnet-avg", pool="avg", epochs=2)
    make_run(d / "esnet-max", pool="max", epochs=6)
    make_run(d / "baseline-avg", pool="avg", erasing="off")
    return d


def _metrics(at) -> dict[str, float]:
    return {m.label: float(m.value) for m in at.metric}


def test_defaults_to_the_demo_pooling_runs(runs, demo_root, monkeypatch) -> None:
    at = open_app(monkeypatch, runs, demo_root, PAGE)
    assert not at.exception, at.exception
    assert at.multiselect(key="pooling.runs").value == ["esnet-p", "esnet-avg", "esnet-max"]
    table = frame_with(at, "best_mAP").set_index("run")
    assert list(table.index) == ["esnet-p", "esnet-avg", "esnet-max"]
    assert list(table["pool"]) == ["p", "avg", "max"]
    # make_run: mAP 0.3 + 0.1 per further evaluated epoch (every 2nd): 4 -> 40, 2 -> 30, 6 -> 50.
    assert list(table["best_mAP"]) == pytest.approx([40.0, 30.0, 50.0])
    cmc, p = plotly_specs(at)[:2]
    assert sorted(t["name"] for t in cmc["data"]) == ["esnet-avg", "esnet-max", "esnet-p"]
    first = {t["name"]: plotly_values(t["y"])[0] for t in cmc["data"]}
    assert first == pytest.approx({"esnet-p": 60.0, "esnet-avg": 50.0, "esnet-max": 70.0})  # CMC@1 = R1
    assert sorted(t["name"] for t in p["data"]) == ["esnet-p · erase", "esnet-p · global"]  # only P-pooling learns p


def test_choosing_runs_changes_the_table(runs, demo_root, monkeypatch) -> None:
    at = open_app(monkeypatch, runs, demo_root, PAGE)
    at.multiselect(key="pooling.runs").set_value(["baseline-avg"]).run()
    table = frame_with(at, "best_mAP")
    assert list(table["run"]) == ["baseline-avg"] and list(table["erasing"]) == ["off"]
    assert "no P-pooling run selected" in plotly_specs(at)[1]["layout"]["annotations"][0]["text"]
    at.multiselect(key="pooling.runs").set_value([]).run()
    assert any("Choose one or more runs" in i.value for i in at.info)


def test_p_slider_moves_gem_between_average_and_max(runs, demo_root, monkeypatch) -> None:
    at = open_app(monkeypatch, runs, demo_root, PAGE)
    m3 = _metrics(at)
    assert m3["Average pooling"] < m3["GeM (p = 3)"] < m3["Max pooling"]
    at.slider(key="pooling.p_demo").set_value(1.0).run()
    m1 = _metrics(at)
    assert m1["GeM (p = 1)"] == pytest.approx(m1["Average pooling"], abs=1e-4)  # p = 1 is average pooling
    at.slider(key="pooling.p_demo").set_value(64.0).run()
    m64 = _metrics(at)
    assert m3["GeM (p = 3)"] < m64["GeM (p = 64)"] <= m64["Max pooling"]
    assert m64["GeM (p = 64)"] == pytest.approx(m64["Max pooling"], rel=0.1)  # large p approaches max
    curve = plotly_specs(at)[-1]
    assert plotly_values(curve["data"][1]["x"]) == [64.0]  # the chosen p is marked on the curve


def test_no_runs_still_shows_the_live_demo(tmp_path, demo_root, monkeypatch) -> None:
    at = open_app(monkeypatch, tmp_path / "missing", demo_root, PAGE)
    assert not at.exception, at.exception
    assert "does not exist" in at.warning[0].value
    assert set(_metrics(at)) == {"Average pooling", "GeM (p = 3)", "Max pooling"}


def test_other_runs_default_to_the_first_three(tmp_path, demo_root, monkeypatch) -> None:
    for name in ("r1", "r2", "r3", "r4"):
        make_run(tmp_path / "runs" / name)
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    assert at.multiselect(key="pooling.runs").value == ["r1", "r2", "r3"]


def test_pooling_trio_prefers_one_es_net_run_per_pooling() -> None:
    import pandas as pd

    from app.panels import pooling_trio

    runs = pd.DataFrame({"run": ["a_base", "b_p", "c_avg", "d_max", "e_rand_p", "f_p_seed1"],
                         "pool": ["avg", "p", "avg", "max", "p", "p"],
                         "erasing": ["off", "salient", "salient", "salient", "random", "salient"]})
    assert pooling_trio(runs) == ["b_p", "c_avg", "d_max"]
    assert pooling_trio(runs.iloc[[0, 4]]) == ["e_rand_p", "a_base"]  # no pair of ES-Net runs: any two poolings
    assert pooling_trio(runs.iloc[[1, 5]]) == ["b_p", "f_p_seed1"]  # one pooling only: the first runs
    assert pooling_trio(runs.iloc[[]]) == []
