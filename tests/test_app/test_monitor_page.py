"""AppTests of the Training monitor: headline numbers, the six charts, live refresh, partial files."""
from pathlib import Path

import pytest

from app import state
from esnet.engine import rundir
from tests.synthetic import make_run
from tests.test_app.runpages import open_app, plotly_specs, plotly_values, tiny_demo

PAGE = "../pages/monitor.py"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_demo(tmp_path_factory)


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_finished_run_shows_best_metrics_and_six_charts(tmp_path, demo_root, monkeypatch) -> None:
    make_run(tmp_path / "runs" / "esnet-p")
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    assert not at.exception, at.exception
    assert at.title[0].value == "Training monitor · esnet-p"
    m = _metrics(at)
    # make_run: 4 epochs, best mAP 0.4 / R1 0.6 at epoch 4, p.global = 3 + 0.1 * epoch, total loss 3.5 / epoch.
    assert m == {"Epoch": "4/4", "Total loss": "0.875", "Best mAP": "40.0%", "Best R1": "60.0%", "p (global)": "3.400"}
    specs = plotly_specs(at)
    assert [s["layout"]["title"]["text"] for s in specs] == [
        "Loss per branch", "Training accuracy", "Evaluation", "Learning rate", "Learned p", "Epoch time"]
    loss_names = {t["name"] for t in specs[0]["data"]}
    assert loss_names == {"global_ce", "global_triplet", "erase_ce", "total"}
    p_traces = {t["name"]: plotly_values(t["y"]) for t in specs[4]["data"]}
    assert p_traces["global"] == pytest.approx([3.1, 3.2, 3.3, 3.4])
    assert p_traces["erase"] == pytest.approx([3.2, 3.4, 3.6, 3.8])
    ev = {t["name"]: plotly_values(t["y"]) for t in specs[2]["data"]}
    assert ev["mAP"] == pytest.approx([30.0, 40.0])  # only the evaluated epochs 2 and 4
    assert "finished" in at.caption[0].value and "refreshing" not in at.caption[0].value


def test_half_written_last_metrics_line_is_ignored(tmp_path, demo_root, monkeypatch) -> None:
    run = make_run(tmp_path / "runs" / "live", state="running", epochs=6, written=4)  # at epoch 4 of 6
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'{"epoch": 5, "lr": 0.0001, "loss": {"global_ce": 0.4, "to')  # the trainer is mid-write
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    assert not at.exception, at.exception
    assert _metrics(at)["Epoch"] == "4/6"
    assert "running" in at.caption[0].value and "refreshing every 2 s" in at.caption[0].value
    # The line completes: the next read shows epoch 5.
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'tal": 0.5}}\n')
    at.run()
    assert _metrics(at)["Epoch"] == "5/6" and _metrics(at)["Total loss"] == "0.500"


def test_failed_run_shows_its_error(tmp_path, demo_root, monkeypatch) -> None:
    make_run(tmp_path / "runs" / "crashed", state="failed")
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    assert "boom" in at.error[0].value


def test_run_without_epochs_says_so(tmp_path, demo_root, monkeypatch) -> None:
    run = make_run(tmp_path / "runs" / "new", state="running")
    (run / "metrics.jsonl").write_bytes(b"")
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    assert not at.exception, at.exception
    assert "No epoch has finished yet" in at.info[0].value
    assert not at.get("plotly_chart")


def test_avg_pool_run_has_no_learned_p(tmp_path, demo_root, monkeypatch) -> None:
    make_run(tmp_path / "runs" / "avg", pool="avg", erasing="off")
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    assert _metrics(at)["p (global)"] == "–"
    p_fig = plotly_specs(at)[4]
    assert "nothing learned" in p_fig["layout"]["annotations"][0]["text"]


def test_sidebar_run_choice_switches_the_monitored_run(tmp_path, demo_root, monkeypatch) -> None:
    make_run(tmp_path / "runs" / "a", epochs=4)
    make_run(tmp_path / "runs" / "b", epochs=6)
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    assert _metrics(at)["Epoch"] == "4/4"
    at.sidebar.selectbox(key=state.KEY_RUN).set_value("b").run()
    assert at.title[0].value.endswith("· b") and _metrics(at)["Epoch"] == "6/6"


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_no_runs_gives_a_message(make, tmp_path, demo_root, monkeypatch) -> None:
    runs = tmp_path / "runs"
    if make == "empty":
        runs.mkdir()
    at = open_app(monkeypatch, runs, demo_root, PAGE)
    assert not at.exception, at.exception
    shown = [w.value for w in at.warning] + [i.value for i in at.info]
    assert any(("does not exist" if make == "missing" else "No runs in") in s for s in shown), shown
    assert not at.metric


def test_status_written_mid_run_is_followed(tmp_path, demo_root, monkeypatch) -> None:
    run = make_run(tmp_path / "runs" / "live", state="running")
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    assert "running" in at.caption[0].value
    rundir.write_status(run, state="finished", epoch=4, total_epochs=4)
    at.run()
    assert "finished" in at.caption[0].value and "refreshing" not in at.caption[0].value
