"""Run directory: atomic writes, the lock, and readers that survive partial files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from esnet.config import Config, dumps
from esnet.engine import rundir
from esnet.engine.rundir import RunDirError


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _record(epoch: int, m_ap: float | None = None, p: float = 3.0) -> dict:
    rec = {"epoch": epoch, "lr": 1e-4, "time_s": 1.0, "img_per_s": 10.0,
           "loss": {"global_ce": 1.0, "global_triplet": 0.5, "total": 1.5},
           "acc": {"global": 0.5}, "p": {"global": p}}
    if m_ap is not None:
        rec["eval"] = {"R1": m_ap + 0.1, "R5": 0.9, "R10": 0.95, "mAP": m_ap, "mINP": 0.1, "cmc": [m_ap + 0.1] * 20}
    return rec


def _finished_run(d: Path, records: list[dict]) -> None:
    rundir.write_config(d, Config())
    rundir.write_status(d, state="finished", epoch=len(records), total_epochs=len(records))
    for r in records:
        rundir.append_metrics(d, r)


# --- atomic writes ------------------------------------------------------------------------
def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    rundir.atomic_write_text(target, "one")
    rundir.atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]
    assert (target.stat().st_mode & 0o777) == 0o644


def test_atomic_write_json_refuses_nan_and_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    rundir.atomic_write_json(target, {"a": 1})
    with pytest.raises(ValueError):
        rundir.atomic_write_json(target, {"a": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1}


def test_append_jsonl_starts_a_new_line_after_a_cut_short_one(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"epoch": 1}\n{"epoch": 2, "lo')  # a writer died mid-line
    rundir.append_jsonl(path, {"epoch": 3})
    assert path.read_bytes() == b'{"epoch": 1}\n{"epoch": 2, "lo\n{"epoch": 3}\n'


# --- metrics ------------------------------------------------------------------------------
def test_read_metrics_ignores_half_written_last_line(tmp_path: Path) -> None:
    rundir.append_metrics(tmp_path, _record(1))
    rundir.append_metrics(tmp_path, _record(2))
    with open(tmp_path / rundir.METRICS_FILE, "ab") as f:
        f.write(b'{"epoch": 3, "lr": 0.0001, "loss": {"glo')
    recs = rundir.read_metrics(tmp_path)
    assert [r["epoch"] for r in recs] == [1, 2]
    assert recs[1]["loss"]["total"] == 1.5


def test_read_metrics_skips_garbage_and_missing_file(tmp_path: Path) -> None:
    assert rundir.read_metrics(tmp_path) == []
    (tmp_path / rundir.METRICS_FILE).write_bytes(b'\xff\xfe\n[1, 2]\n{"epoch": true}\n\n{"epoch": 4}\n')
    assert rundir.read_metrics(tmp_path) == [{"epoch": 4}]


def test_truncate_metrics_drops_later_epochs(tmp_path: Path) -> None:
    for e in (1, 2, 3):
        rundir.append_metrics(tmp_path, _record(e))
    assert rundir.truncate_metrics(tmp_path, 1) == 2
    assert [r["epoch"] for r in rundir.read_metrics(tmp_path)] == [1]
    assert rundir.truncate_metrics(tmp_path, 1) == 0


def test_best_eval_takes_highest_map_earliest_on_ties() -> None:
    recs = [_record(1, 0.2), _record(2), _record(3, 0.5), _record(4, 0.5), _record(5, 0.4)]
    assert rundir.best_eval(recs)["epoch"] == 3
    assert rundir.best_eval([_record(1)]) is None


# --- status -------------------------------------------------------------------------------
def test_read_status_running_with_dead_pid_reads_failed(tmp_path: Path) -> None:
    pid = _dead_pid()
    rundir.write_status(tmp_path, state="running", epoch=3, total_epochs=10, pid=pid)
    st = rundir.read_status(tmp_path)
    assert (st.state, st.epoch, st.total_epochs, st.pid) == ("failed", 3, 10, pid)
    assert st.error == f"process ended unexpectedly (pid {pid} is not running)"


def test_read_status_running_live_finished_and_unknown(tmp_path: Path) -> None:
    assert rundir.read_status(tmp_path).state == "unknown"
    rundir.write_status(tmp_path, state="running", epoch=1, total_epochs=2)
    st = rundir.read_status(tmp_path)  # our pid, but we hold no lock: not a trainer of this run
    assert (st.state, st.error) == ("failed", f"process ended unexpectedly (pid {os.getpid()} is running but "
                                              "is not this run's trainer: it does not hold .lock)")
    lock = rundir.acquire_lock(tmp_path)
    assert rundir.read_status(tmp_path).state == "running"
    rundir.release_lock(lock)
    rundir.write_status(tmp_path, state="failed", epoch=1, total_epochs=2, error="boom")
    st = rundir.read_status(tmp_path)
    assert (st.state, st.error) == ("failed", "boom")
    (tmp_path / rundir.STATUS_FILE).write_text('{"state": "runn')
    assert rundir.read_status(tmp_path).state == "unknown"
    with pytest.raises(ValueError, match="state must be one of"):
        rundir.write_status(tmp_path, state="done", epoch=1, total_epochs=2)


def test_readers_raise_clearly_on_a_missing_run_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for reader in (rundir.read_config, rundir.read_meta, rundir.read_status, rundir.read_metrics,
                   rundir.read_probes, rundir.list_runs):
        with pytest.raises(RunDirError, match="does not exist"):
            reader(missing)
    with pytest.raises(RunDirError, match="has no config.json"):
        rundir.read_config(tmp_path)


def test_read_config_and_meta_round_trip(tmp_path: Path) -> None:
    cfg = Config()
    rundir.write_config(tmp_path, cfg)
    assert rundir.read_config(tmp_path) == cfg
    assert (tmp_path / "config.json").read_text() == dumps(cfg)
    assert rundir.read_meta(tmp_path) == {}
    rundir.write_meta(tmp_path, {"dataset": "demo"})
    assert rundir.read_meta(tmp_path) == {"dataset": "demo"}


# --- probes -------------------------------------------------------------------------------
def test_probe_epoch_round_trip_float16_and_clipping(tmp_path: Path) -> None:
    cam = np.array([[[0.0, 0.25], [1.5, -0.1]]], dtype=np.float32)  # (1, 2, 2)
    box = np.array([[1, 0, 1, 2]])
    rundir.write_probe_epoch(tmp_path, 7, cam, box)
    with np.load(tmp_path / "probes" / "epoch_0007.npz") as z:
        assert z["cam"].dtype == np.float16 and z["box"].dtype == np.int16
    got_cam, got_box = rundir.read_probe_epoch(tmp_path, 7)
    np.testing.assert_array_equal(got_cam, [[[0.0, 0.25], [1.0, 0.0]]])
    np.testing.assert_array_equal(got_box, box)
    assert got_cam.dtype == np.float32 and got_box.dtype == np.int64
    with pytest.raises(RunDirError, match="no probe record for epoch 8"):
        rundir.read_probe_epoch(tmp_path, 8)
    with pytest.raises(ValueError, match=r"box \(P, 4\)"):
        rundir.write_probe_epoch(tmp_path, 1, cam, np.zeros((2, 4)))


def test_read_probes_lists_epochs_and_tolerates_partial(tmp_path: Path) -> None:
    assert rundir.read_probes(tmp_path) is None
    pdir = tmp_path / "probes"
    entry = {"index": 3, "path": "/d/a.jpg", "relpath": "a.jpg", "pid": 7, "label": 1, "camid": 0,
             "image": "images/00.jpg"}
    rundir.atomic_write_json(pdir / "probes.json", {"probes": [entry], "feature_size": [4, 2], "input_size": [64, 32]})
    for e in (2, 0, 1):
        rundir.write_probe_epoch(tmp_path, e, np.zeros((1, 4, 2)), np.zeros((1, 4)))
    (pdir / ".epoch_0003.npz.x.tmp").write_bytes(b"partial")
    ps = rundir.read_probes(tmp_path)
    assert ps.epochs == (0, 1, 2)
    assert ps.feature_size == (4, 2) and ps.input_size == (64, 32)
    assert ps.entries[0].pid == 7 and ps.entries[0].image == str(pdir / "images" / "00.jpg")
    (pdir / "probes.json").write_text('{"probes": [{"index": 1}], "feature_size": [4, 2]}')
    assert rundir.read_probes(tmp_path) is None


# --- the lock -----------------------------------------------------------------------------
def test_lock_refuses_live_owner_and_takes_over_stale(tmp_path: Path) -> None:
    lock = rundir.acquire_lock(tmp_path / "run")
    assert lock.read_text() == f"{os.getpid()} {rundir.process_start(os.getpid())}\n"
    assert rundir.trainer_pid(tmp_path / "run") == os.getpid()
    with pytest.raises(RunDirError, match=rf"in use by another training process \(pid {os.getpid()}\)"):
        rundir.acquire_lock(tmp_path / "run")
    rundir.release_lock(lock)
    assert not lock.exists()
    lock.write_text(f"{_dead_pid()}\n")
    assert rundir.acquire_lock(tmp_path / "run") == lock
    assert lock.read_text().split()[0] == str(os.getpid())
    rundir.release_lock(lock)
    lock.write_text(f"{os.getpid()} 1\n")  # our pid, another start time: a reused pid, nobody holds it
    assert rundir.trainer_pid(tmp_path / "run") is None
    assert rundir.acquire_lock(tmp_path / "run") == lock
    rundir.release_lock(lock)


def test_lock_without_pid_is_refused_and_foreign_lock_not_released(tmp_path: Path) -> None:
    lock = tmp_path / rundir.LOCK_FILE
    lock.write_text("")  # a trainer killed between creating and writing it: nobody holds it, taken over
    assert rundir.acquire_lock(tmp_path) == lock
    rundir.release_lock(lock)
    for junk in ("not a pid\n", "99999999999\n", "-5\n"):
        lock.write_text(junk)
        with pytest.raises(RunDirError, match="does not hold a pid"):
            rundir.acquire_lock(tmp_path)
    lock.write_text("1\n")  # pid 1 is alive and not us
    rundir.release_lock(lock)
    assert lock.exists()


# --- list_runs ----------------------------------------------------------------------------
def test_list_runs_with_a_finished_and_a_broken_run(tmp_path: Path) -> None:
    _finished_run(tmp_path / "b_good", [_record(1, 0.30, p=3.2), _record(2, 0.45, p=3.4), _record(3, 0.40, p=3.5)])
    broken = tmp_path / "a_broken"
    broken.mkdir()
    (broken / rundir.STATUS_FILE).write_text("{not json")
    (broken / rundir.METRICS_FILE).write_text('{"epoch": 1, "lo')
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "file.txt").write_text("x")
    _finished_run(tmp_path / ".c_building", [_record(1, 0.30)])  # hidden: being built elsewhere

    runs = rundir.list_runs(tmp_path)
    assert [r.id for r in runs] == ["a_broken", "b_good"]
    bad, good = runs
    assert bad.state == "broken" and "has no config.json" in bad.error
    assert (bad.epochs_done, bad.best_mAP, bad.backbone) == (0, None, "")
    assert good.state == "finished" and good.error is None
    assert (good.epochs_done, good.total_epochs) == (3, 3)
    assert (good.best_mAP, good.best_R1, good.best_epoch) == (0.45, pytest.approx(0.55), 2)
    assert good.last_p == {"global": 3.5}
    assert (good.backbone, good.pool, good.erasing, good.dataset) == ("resnet50", "p", "salient", "demo")
    assert good.path == str((tmp_path / "b_good").resolve())


def test_checkpoint_and_probe_paths() -> None:
    assert rundir.checkpoint_path("/r", "best") == Path("/r/checkpoints/best.pt")
    assert rundir.probe_epoch_path("/r", 12) == Path("/r/probes/epoch_0012.npz")
    assert rundir.probe_image_name(3) == "images/03.jpg"
    with pytest.raises(ValueError, match="which must be one of"):
        rundir.checkpoint_path("/r", "first")
