"""AppTest of the Evaluate page on the demo checkpoint and demo data."""
import io

import pandas as pd
import pytest

from esnet import api
from tests.test_app.model_pages import broken_run, demo_env, errors, mismatched_checkpoint, open_page, select_run

__all__ = ["demo_env"]  # the fixture, used by name

METRICS = ["R1", "R5", "R10", "mAP", "mINP"]


def _table(at) -> pd.DataFrame:
    return at.dataframe[0].value


def test_metrics_table_matches_the_api(demo_env) -> None:
    at = open_page("evaluate")
    assert not at.exception, at.exception
    assert not errors(at)
    table = _table(at)
    assert list(table.columns) == ["setting"] + METRICS
    expected = api.evaluate_checkpoint(demo_env.run_dir, "demo", demo_env.data_root, cache_dir=demo_env.cache_dir)
    for k in METRICS:
        assert table[k].item() == pytest.approx(100 * expected.summary[k])
    assert 0 < table["R1"].item() <= 100
    assert len(at.get("plotly_chart")) == 2  # CMC + ROC
    assert any("Operating point" in c.value for c in at.caption)


def test_rerank_checkbox_changes_the_metrics(demo_env) -> None:
    at = open_page("evaluate")
    plain = _table(at)
    at.checkbox(key="eval_rerank").check().run()
    assert not at.exception, at.exception
    reranked = _table(at)
    assert reranked["setting"].item() == "re-ranked"
    assert not reranked[METRICS].equals(plain[METRICS])
    expected = api.evaluate_checkpoint(demo_env.run_dir, "demo", demo_env.data_root, rerank=True,
                                       cache_dir=demo_env.cache_dir)
    assert reranked["mAP"].item() == pytest.approx(100 * expected.summary["mAP"])


def test_test_feature_select_scores_each_branch(demo_env) -> None:
    at = open_page("evaluate")
    box = at.selectbox(key="eval_feature")
    assert box.options == ["both branches (concat)", "global branch", "erasing branch"] and not box.disabled
    both = _table(at)
    for feature, label in (("erase", "erasing branch"), ("global", "global branch")):
        at.selectbox(key="eval_feature").set_value(feature).run()
        assert not at.exception, at.exception
        assert not errors(at)
        inf = api.load_inference(demo_env.run_dir, test_feature=feature)
        expected = api.evaluate_checkpoint(inf, "demo", demo_env.data_root, cache_dir=demo_env.cache_dir)
        table = _table(at)
        assert table["mAP"].item() == pytest.approx(100 * expected.summary["mAP"])
        assert not table[METRICS].equals(both[METRICS])
        assert any(f"test feature: {label}" in c.value for c in at.caption)


def test_a_baseline_run_has_only_the_global_feature(demo_env) -> None:
    import torch

    from esnet.checkpoint import save_checkpoint
    from esnet.config import Config, override
    from esnet.model import build_model

    cfg = override(Config(), {"model.backbone": "resnet18", "model.erasing": "off", "data.height": 64,
                              "data.width": 32})
    torch.manual_seed(0)
    made = demo_env.runs_dir.parent / "baseline.pt"
    save_checkpoint(made, model=build_model(cfg.model, 3), optimizer=None, scheduler=None, epoch=1, config=cfg,
                    num_classes=3)
    runs = demo_env.runs_dir.parent / "baseline_runs"
    broken_run(runs, "base", made.read_bytes())  # the demo run's metadata, a baseline's checkpoint
    at = open_page("evaluate", state=select_run(runs, "base"))
    assert not at.exception, at.exception
    assert not errors(at)
    box = at.selectbox(key="eval_feature")
    assert box.options == ["global branch"] and box.disabled
    assert any("test feature: global branch" in c.value for c in at.caption)


def test_per_query_csv_download(demo_env) -> None:
    at = open_page("evaluate")
    button = at.get("download_button")[0]
    assert "Download per-query results" in button.proto.label
    from app import model_views

    rep = api.evaluate_checkpoint(demo_env.run_dir, "demo", demo_env.data_root, cache_dir=demo_env.cache_dir)
    frame = pd.read_csv(io.BytesIO(model_views.per_query_csv(rep)))
    assert len(frame) == rep.num_query == 180
    assert {"query", "path", "pid", "camid", "ap", "first_hit"} <= set(frame.columns)


@pytest.mark.parametrize("kind", ["corrupt", "mismatched"])
def test_a_bad_checkpoint_is_an_error_on_the_page(demo_env, kind) -> None:
    runs = demo_env.runs_dir.parent / f"broken_{kind}"
    data = b"\x00garbage, not a torch file" if kind == "corrupt" else mismatched_checkpoint(demo_env.run_dir)
    broken_run(runs, "bad", data)
    at = open_page("evaluate", state=select_run(runs, "bad"))
    assert not at.exception, at.exception
    assert errors(at) and "bad" in errors(at)[0]
    assert not at.dataframe


def test_a_vehicleid_run_is_scored_by_its_protocol_with_mean_and_std(demo_env) -> None:
    import json

    from tests.synthetic import VEHICLEID_FIXTURE_IDS, make_vehicleid

    base = demo_env.runs_dir.parent
    root = make_vehicleid(base / "vehicleid_data")
    runs = base / "vehicleid_runs"
    run = broken_run(runs, "veh", (demo_env.run_dir / "checkpoints" / "last.pt").read_bytes())
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["dataset"] = "vehicleid"  # the run's dataset decides the protocol
    (run / "config.json").write_text(json.dumps(cfg))
    at = open_page("evaluate", state={**select_run(runs, "veh"), "esnet.dataset_root": str(root)})
    assert not at.exception, at.exception
    assert not errors(at)
    table = _table(at)
    assert list(table.columns) == ["test list", "R1", "R5", "R10", "mAP"]
    expected = api.evaluate_vehicleid_checkpoint(run, root, "small", cache_dir=demo_env.cache_dir)
    m, s = expected.summary["mAP"]
    assert table["mAP"].item() == f"{100 * m:.2f} ± {100 * s:.2f}"
    assert any(f"{3 * VEHICLEID_FIXTURE_IDS['small']} images of {VEHICLEID_FIXTURE_IDS['small']} vehicles" in c.value
               and "10 draws" in c.value for c in at.caption)
    at.selectbox(key="eval_vehicleid_size").select("large").run()
    assert not at.exception, at.exception
    assert _table(at)["test list"].item() == "large"
    assert any(f"of {VEHICLEID_FIXTURE_IDS['large']} vehicles" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 1  # the mean CMC; no ROC (no fixed gallery)
