"""The dashboard's readers running flat out while a real ``esnet train`` process writes the run.

Readers never raise on a run being written (esnet.engine.rundir: atomic files, whole
lines), never report a live run as broken, and checkpoints read mid-run always load.
"""
from __future__ import annotations

import os
import time
import traceback
from collections import Counter
from pathlib import Path

import pytest

from esnet.checkpoint import load_checkpoint
from esnet.engine import rundir
from esnet.runview import block_positions, cmc_frame, erasing_frames, metrics_frame, runs_frame
from tests.reliability._train import start, tiny_market, train_args

EPOCHS = 2


def _read_everything(runs: Path, run: Path, seen: Counter, last_pt: dict) -> None:
    """One pass of every reader the dashboard uses; what it saw is counted in ``seen``."""
    table = runs_frame(runs)
    if len(table):
        seen[f"runs_frame:{table.loc[0, 'state']}"] += 1
    if not run.exists():
        return
    status = rundir.read_status(run)
    seen[f"status:{status.state}"] += 1
    frame = metrics_frame(run)
    seen[f"metrics_rows:{len(frame)}"] += 1
    cmc_frame({"run": run})
    block_positions(run)
    probes = rundir.read_probes(run)
    if probes is not None and probes.epochs:  # the newest record: the one being written
        frames = erasing_frames(run, probes.epochs[-1])
        assert len(frames) == len(probes.entries) and all(f.image is not None for f in frames)
        seen["erasing_frames"] += 1
    if (run / rundir.CONFIG_FILE).exists():
        rundir.read_config(run)
    rundir.read_meta(run)
    ckpt = rundir.checkpoint_path(run, "last")
    try:
        stamp = ckpt.stat().st_mtime_ns
    except FileNotFoundError:
        return
    if last_pt.get("stamp") != stamp:  # load each new last.pt once, while the trainer goes on
        last_pt["stamp"] = stamp
        seen[f"last.pt epoch {load_checkpoint(ckpt).epoch}"] += 1


def test_readers_while_training(tmp_path: Path, record) -> None:
    """runs_frame, read_status, metrics_frame, cmc_frame, block_positions, erasing_frames, load_checkpoint
    in a loop during a whole real run: no exception, no 'broken' state."""
    market = tiny_market(tmp_path / "market")
    runs = tmp_path / "runs"
    runs.mkdir()
    run = runs / "live"
    log = tmp_path / "train.log"
    proc = start(train_args(market, run, EPOCHS), log)
    seen: Counter = Counter()
    last_pt: dict = {}
    errors: list[str] = []
    passes = 0
    try:
        while proc.poll() is None:
            try:
                _read_everything(runs, run, seen, last_pt)
            except Exception:  # noqa: BLE001 - any exception at all is the failure being looked for
                errors.append(traceback.format_exc(limit=4))
            passes += 1
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]
    _read_everything(runs, run, seen, last_pt)  # and once after the end
    assert not errors, f"{len(errors)} reader errors in {passes} passes; first:\n{errors[0]}"
    assert seen["status:running"] > 0 and seen["status:finished"] >= 1, seen
    assert not [k for k in seen if k.endswith(":broken")], seen
    assert seen["erasing_frames"] > 0 and seen[f"last.pt epoch {EPOCHS}"] >= 1, seen
    assert metrics_frame(run)["epoch"].tolist() == [1, 2]
    record(f"every reader in a loop during a real {EPOCHS}-epoch run", "runs_frame, read_status, metrics_frame, "
           "cmc_frame, block_positions, erasing_frames, load_checkpoint", "no exception; no 'broken' state")


def test_starting_run_is_not_reported_broken(tmp_path: Path, record) -> None:
    """A run whose trainer holds the lock but has not written config.json yet reads as running, not broken."""
    runs = tmp_path / "runs"
    run = runs / "starting"
    lock = rundir.acquire_lock(run)  # this process plays the trainer that is still loading its dataset
    try:
        summary = rundir.list_runs(runs)[0]
        assert (summary.state, summary.error) == ("running", None), summary
    finally:
        rundir.release_lock(lock)
    (run / rundir.LOCK_FILE).write_text(f"{2**22 + 12345}\n")  # a dead trainer's lock: nothing was written
    summary = rundir.list_runs(runs)[0]
    assert summary.state == "broken" and "config.json" in summary.error
    record("run directory with a live trainer's .lock, no config.json yet", "list_runs / runs_frame", "running")
    record("run directory with a dead trainer's .lock only", "list_runs / runs_frame", "broken", summary.error)


@pytest.mark.parametrize("junk", [b"", b"{", b"[1, 2]", b'{"state": "running", "epoch": "x", "pid": -5}',
                                  b"\xff\xfe\x00garbage"])
def test_status_junk_never_raises(tmp_path: Path, junk: bytes, record) -> None:
    """A status.json cut short or rewritten by hand: read_status and list_runs answer, they do not raise."""
    run = tmp_path / "r"
    run.mkdir()
    (run / rundir.STATUS_FILE).write_bytes(junk)
    status = rundir.read_status(run)
    assert status.state in ("unknown", "failed")
    assert rundir.list_runs(tmp_path)[0].state in ("broken", "unknown", "failed")
    record(f"status.json = {junk[:30]!r}", "read_status", status.state, status.error or "")


def test_pid_of_lock_is_not_trusted_blindly(tmp_path: Path, record) -> None:
    """A .lock holding garbage refuses a trainer with a message instead of being silently taken over."""
    run = tmp_path / "r"
    run.mkdir()
    (run / rundir.LOCK_FILE).write_text("not a pid\n")
    with pytest.raises(rundir.RunDirError, match="does not hold a pid") as info:
        rundir.acquire_lock(run)
    record(".lock that holds no pid", "acquire_lock (esnet train)", "refused", str(info.value))
    assert os.path.exists(run / rundir.LOCK_FILE)
