"""AppTests of the Pooling comparison: run table, CMC and p curves, the live avg / GeM / max demo."""
from pathlib import Path

import pytest

from tests.synthetic import make_run
from tests.test_app.runpages import frame_with, open_app, plotly_specs, plotly_values, tiny_demo

PAGE = "../pages/pooling.py"


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
    # of the P-pooling ES-Net runs, the one whose p learned most: f (moved 0.4) over b (0.02, p stayed at 3)
    moved = runs.assign(p_moved=[float("nan"), 0.02, float("nan"), float("nan"), 0.9, 0.4])
    assert pooling_trio(moved) == ["f_p_seed1", "c_avg", "d_max"]
    assert pooling_trio(moved.assign(p_moved=[float("nan"), 0.4, float("nan"), float("nan"), 0.9, 0.4])) == \
        ["b_p", "c_avg", "d_max"]  # a tie: the first by name


def _p_all(at) -> dict:
    """The 'Learned p of every P-pooling run' figure."""
    return next(s for s in plotly_specs(at) if "every P-pooling run" in str(s["layout"].get("title")))


def test_learned_p_of_every_p_run_next_to_average_pooling(runs, demo_root, monkeypatch) -> None:
    at = open_app(monkeypatch, runs, demo_root, PAGE)
    fig = _p_all(at)
    traces = {t["name"]: plotly_values(t["y"]) for t in fig["data"]}
    assert traces == {"esnet-p · global": pytest.approx([3.1, 3.2, 3.3, 3.4]),
                      "esnet-p · erase": pytest.approx([3.2, 3.4, 3.6, 3.8])}  # make_run: 3 + 0.1 / 0.2 per epoch
    assert [(s["y0"], s["y1"]) for s in fig["layout"]["shapes"]] == [(1.0, 1.0)]  # average pooling, p = 1
    notes = [a["text"] for a in fig["layout"]["annotations"]]
    assert "average pooling (p = 1)" in notes and any("max pooling as p → ∞" in n for n in notes)


def test_market_runs_show_their_learned_p(tmp_path, demo_root, monkeypatch) -> None:
    import json
    import shutil

    src = Path(__file__).resolve().parents[2] / "results" / "market1501"
    runs = tmp_path / "market1501"
    shutil.copytree(src, runs, ignore=shutil.ignore_patterns("probes", "*.png", "*.md"))
    at = open_app(monkeypatch, runs, demo_root, PAGE)
    assert not at.exception, at.exception
    traces = {t["name"]: plotly_values(t["y"]) for t in _p_all(at)["data"]}
    p_runs = sorted(d.name for d in runs.iterdir() if d.is_dir()
                    and json.loads((d / "config.json").read_text())["model"]["pool"] == "p")
    assert {"b_esnet_p", "e_random_p", "f_esnet_p_seed1"} <= set(p_runs)
    assert set(traces) == {f"{r} · {b}" for r in p_runs for b in ("global", "erase")}
    for run in p_runs:
        recs = [json.loads(line) for line in (runs / run / "metrics.jsonl").read_text().splitlines() if line]
        assert traces[f"{run} · global"] == pytest.approx([r["p"]["global"] for r in recs])
        assert traces[f"{run} · erase"] == pytest.approx([r["p"]["erase"] for r in recs])
    # the runs compared first: of the ES-Net P-pooling runs, the one whose p learned most
    moved = {}
    for run in p_runs:
        cfg = json.loads((runs / run / "config.json").read_text())["model"]
        last = [json.loads(line) for line in (runs / run / "metrics.jsonl").read_text().splitlines() if line][-1]
        if cfg["erasing"] == "salient":
            moved[run] = max(abs(v - cfg["p_init"]) for v in last["p"].values())
    assert at.multiselect(key="pooling.runs").value[0] == max(moved, key=moved.get)
    assert moved[max(moved, key=moved.get)] > 0.3  # (m)/(n) learned p; (b)/(f) stayed at 3


def test_per_channel_run_shows_the_final_p_distribution(tmp_path, demo_root, monkeypatch) -> None:
    import json

    import torch

    from esnet.checkpoint import save_checkpoint
    from esnet.config import Config
    from esnet.engine import rundir
    from esnet.model.pooling import Pool, q_from_p

    d = tmp_path / "runs"
    run = make_run(d / "esnet-pc")
    make_run(d / "esnet-avg", pool="avg")
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for rec in lines:
        rec["p_spread"] = {b: {"min": 1.5, "q10": 2.0, "median": 3.0, "q90": 4.0, "max": 5.0} for b in rec["p"]}
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    heads = torch.nn.ModuleDict({f"{b}_head": torch.nn.ModuleDict({"pool": Pool("p", 3.0, channels=8,
                                                                                per_channel=True)})
                                 for b in ("global", "erase")})
    with torch.no_grad():
        heads["global_head"]["pool"].q.copy_(q_from_p(torch.linspace(1.5, 5.0, 8)))
    save_checkpoint(rundir.checkpoint_path(run, "last"), model=heads, optimizer=None, scheduler=None, epoch=4,
                    config=Config(), num_classes=3)
    at = open_app(monkeypatch, d, demo_root, PAGE)
    assert not at.exception, at.exception
    hist = next(s for s in plotly_specs(at) if "Final p per channel" in str(s["layout"].get("title")))
    values = {t["name"]: plotly_values(t["x"]) for t in hist["data"]}
    assert values["esnet-pc · global"] == pytest.approx(torch.linspace(1.5, 5.0, 8).tolist(), abs=1e-5)
    assert values["esnet-pc · erase"] == pytest.approx([3.0] * 8, abs=1e-6)


def test_no_p_run_says_so(tmp_path, demo_root, monkeypatch) -> None:
    make_run(tmp_path / "runs" / "esnet-avg", pool="avg")
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    assert any("No P-pooling run in this runs directory" in i.value for i in at.info)
