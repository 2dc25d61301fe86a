"""Run directories as tables and arrays for the dashboard (esnet.runview)."""
import json
import math

import numpy as np
import pytest

from esnet import runview
from esnet.engine.rundir import RunDirError
from tests.synthetic import make_run


def test_runs_frame_one_row_per_run_with_best_metrics(tmp_path):
    make_run(tmp_path / "a", pool="p", epochs=4)
    make_run(tmp_path / "b", pool="avg", erasing="off", epochs=3, state="failed")
    (tmp_path / "not_a_run").mkdir()
    df = runview.runs_frame(tmp_path)
    assert list(df["run"]) == ["a", "b"]
    a, b = df.iloc[0], df.iloc[1]
    assert a.state == "finished" and a.epochs == "4/4" and a.best_mAP == pytest.approx(40.0)
    assert a.best_R1 == pytest.approx(60.0) and a.best_epoch == 4 and a.p_global == pytest.approx(3.4)
    assert b.state == "failed" and "boom" in b.error and math.isnan(b.p_global) and b.erasing == "off"
    with pytest.raises(RunDirError, match="does not exist"):
        runview.runs_frame(tmp_path / "missing")


def test_metrics_frame_flattens_and_ignores_a_half_written_line(tmp_path):
    d = make_run(tmp_path / "r", epochs=4)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 5, "loss": {"tot')
    df = runview.metrics_frame(d)
    assert list(df["epoch"]) == [1, 2, 3, 4]
    assert df["loss.total"].tolist() == pytest.approx([3.5, 1.75, 3.5 / 3, 0.875])
    assert df["eval.mAP"].isna().tolist() == [True, False, True, False]
    assert {"p.global", "p.erase", "acc.erase", "lr", "time_s"} <= set(df.columns)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert list(runview.metrics_frame(empty).columns) == ["epoch"] and runview.metrics_frame(empty).empty


def test_cmc_frame_takes_the_best_epoch(tmp_path):
    a = make_run(tmp_path / "a", epochs=4)
    df = runview.cmc_frame({"A": a})
    assert len(df) == 20 and df["rank"].tolist() == list(range(1, 21))
    assert df["cmc"].iloc[0] == pytest.approx(0.6) and df["cmc"].iloc[-1] == pytest.approx(1.0)


def test_erasing_frames_upsample_the_cam_and_scale_the_block(tmp_path):
    d = make_run(tmp_path / "r", epochs=2, probes=3)
    frames = runview.erasing_frames(d, 2)
    assert len(frames) == 3
    f = frames[1]  # CAM row (1 + 2) % 8 = 3, block top 2 height 3 cells -> pixels x8
    assert f.image.shape == (64, 32, 3) and f.image.dtype == np.uint8
    assert f.heat.shape == (64, 32) and 0.0 <= f.heat.min() and f.heat.max() <= 1.0
    assert f.box_cells == (2, 0, 3, 4) and f.box == (16, 0, 24, 32)
    peak_row = int(np.argmax(f.heat.mean(axis=1)))
    assert 3 * 8 <= peak_row < 4 * 8 and f.box[0] <= peak_row < f.box[0] + f.box[2]
    assert frames[1].box != runview.erasing_frames(d, 0)[1].box  # the block moves over epochs
    with pytest.raises(RunDirError, match="epoch 9"):
        runview.erasing_frames(d, 9)


def test_erasing_frames_without_run_images_read_the_dataset(tmp_path):
    data = tmp_path / "data"
    d = make_run(tmp_path / "r", epochs=1, images=False, dataset_root=data)
    assert all(f.image is None for f in runview.erasing_frames(d, 1))
    with_data = runview.erasing_frames(d, 1, dataset_root=data)
    assert all(f.image is not None and f.image.shape == (64, 32, 3) for f in with_data)


def test_erasing_frames_show_the_camera_of_the_file_name(tmp_path):
    d = make_run(tmp_path / "r", epochs=1, probes=3)  # probes.json without "camera", as older runs wrote it
    names = [e["relpath"] for e in json.loads((d / "probes" / "probes.json").read_text())["probes"]]
    frames = runview.erasing_frames(d, 1)
    assert [f.camid for f in frames] == [0, 1, 0]
    assert [f.camera for f in frames] == [int(n.split("_c")[1][0]) for n in names] == [1, 2, 1]  # the demo's rule
    probes = json.loads((d / "probes" / "probes.json").read_text())
    for e in probes["probes"]:
        e["camera"] = 40 + e["index"]  # recorded by the trainer: used as is
    (d / "probes" / "probes.json").write_text(json.dumps(probes))
    assert [f.camera for f in runview.erasing_frames(d, 1)] == [40, 41, 42]


def test_block_positions_per_epoch(tmp_path):
    d = make_run(tmp_path / "r", epochs=3, probes=2)
    df = runview.block_positions(d)
    assert sorted(df["epoch"].unique()) == [0, 1, 2, 3] and len(df) == 8
    row = df[(df.epoch == 3) & (df.probe == 1)].iloc[0]  # CAM row 4 -> top 3, centre (3 + 1.5) / 8
    assert row.top == 3 and row.center == pytest.approx(4.5 / 8)


def test_pooling_demo_gem_lies_between_avg_and_max():
    demo = runview.pooling_demo(1.0)
    assert demo.gem == pytest.approx(demo.avg, rel=1e-5) and demo.avg < demo.max
    high = runview.pooling_demo(64.0)
    assert demo.avg < runview.pooling_demo(3.0).gem < high.gem <= demo.max
    assert high.gem > demo.avg + 0.9 * (demo.max - demo.avg)
    assert np.all(np.diff(demo.curve["gem"].to_numpy()) >= -1e-6)  # monotone in p
    for bad in (0.5, float("nan"), "3"):
        with pytest.raises(ValueError, match="p must be"):
            runview.pooling_demo(bad)
