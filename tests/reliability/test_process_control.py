"""Process control with real processes: who may be shown as "running", who may be signalled, who gets the lock.

Every process these tests signal, kill or wait for is one they started themselves.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esnet import api
from esnet.engine import rundir
from tests.reliability._train import REPO, tiny_market, wait_for

DEMO_RUN = REPO / "assets" / "demo_runs" / "esnet-avg"
RACERS = 4
TRIALS = 600  # the old read-unlink-O_EXCL protocol let two win in ~1.7% of trials: ~10 expected

# A process that is not a trainer: on SIGINT it writes the file named by argv[1], then keeps sleeping.
STRANGER = ("import signal, sys, time\n"
            "signal.signal(signal.SIGINT, lambda *a: open(sys.argv[1], 'w').write('x'))\n"
            "print('ready', flush=True)\n"
            "time.sleep(600)\n")


@pytest.fixture
def stranger(tmp_path: Path):
    """A live stranger process in its own session, and the file it writes if it ever gets SIGINT."""
    got = tmp_path / "got"
    proc = subprocess.Popen([sys.executable, "-c", STRANGER, str(got)], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout.readline().strip() == b"ready"  # its handler is installed
    yield proc, got
    proc.kill()
    proc.wait()


def _victim(tmp_path: Path, pid: int) -> tuple[Path, Path]:
    """A copy of a demo run whose status.json claims "running" under ``pid``."""
    runs = tmp_path / "evil"
    run = runs / "victim"
    shutil.copytree(DEMO_RUN, run)
    (run / rundir.STATUS_FILE).write_text(json.dumps({"state": "running", "pid": pid, "epoch": 1, "total_epochs": 8}))
    return runs, run


@pytest.mark.parametrize("lock", ["none", "pid only", "pid and its true start time", "pid and another start time"])
def test_stop_training_spares_a_stranger(tmp_path: Path, stranger, lock: str, record) -> None:
    """status.json (and .lock) naming a live stranger: not shown running, Stop training does not signal it."""
    proc, got = stranger
    runs, run = _victim(tmp_path, proc.pid)
    start = rundir.process_start(proc.pid)
    assert start is not None
    text = {"none": None, "pid only": f"{proc.pid}\n", "pid and its true start time": f"{proc.pid} {start}\n",
            "pid and another start time": f"{proc.pid} {start + 1}\n"}[lock]
    if text is not None:
        (run / rundir.LOCK_FILE).write_text(text)
    status = rundir.read_status(run)
    assert status.state == "failed" and "is not this run's trainer" in status.error, status
    assert [r.state for r in rundir.list_runs(runs)] == ["failed"]
    assert rundir.trainer_pid(run) is None
    assert api.stop_training(run, timeout_s=0.5) == "not running"
    assert not rundir.signal_trainer(run, proc.pid, signal.SIGINT)
    time.sleep(0.2)
    assert proc.poll() is None and not got.exists(), "the stranger was signalled"
    record(f"status.json 'running' with a live stranger's pid; .lock: {lock}", "api.stop_training / read_status",
           "not running; shown failed; stranger untouched", status.error)


def test_runs_page_offers_no_stop_for_a_stranger(tmp_path: Path, tmp_path_factory, stranger, monkeypatch,
                                                 record) -> None:
    """The Runs page on such a directory: the run reads failed and there is no Stop button to press."""
    from tests.test_app.runpages import frame_with, open_app, tiny_demo

    proc, got = stranger
    runs, run = _victim(tmp_path, proc.pid)
    at = open_app(monkeypatch, runs, tiny_demo(tmp_path_factory))
    assert frame_with(at, "best_mAP").set_index("run").loc["victim", "state"] == "failed"
    assert not [b for b in at.button if b.key == "runs.stop"]
    assert proc.poll() is None and not got.exists()
    record("Runs page on a folder whose run names a stranger's pid", "Runs page (Stop training)",
           "run shown failed; no Stop button")


# Loads rundir.py on its own: importing the esnet.engine package would import torch (~10 s on a busy machine).
LOCK_HOLDER = ("import importlib.util, signal, sys, time\n"
               "spec = importlib.util.spec_from_file_location('rundir', 'esnet/engine/rundir.py')\n"
               "rundir = sys.modules['rundir'] = importlib.util.module_from_spec(spec)\n"
               "spec.loader.exec_module(rundir)\n"
               "run = sys.argv[1]\n"
               "rundir.acquire_lock(run)\n"
               "rundir.write_status(run, state='running', epoch=0, total_epochs=1)\n"
               "def stop(*a):\n"
               "    rundir.write_status(run, state='failed', epoch=0, total_epochs=1, error='stopped by SIGINT')\n"
               "    sys.exit(0)\n"
               "signal.signal(signal.SIGINT, stop)\n"
               "print('ready', flush=True)\n"
               "time.sleep(600)\n")


def test_stop_training_reaches_the_lock_holder(tmp_path: Path, record) -> None:
    """The process that holds the run's lock is shown running, and Stop training stops it."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run)], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        assert rundir.trainer_pid(run) == proc.pid
        assert rundir.read_status(run).state == "running"
        with pytest.raises(rundir.RunDirError, match=rf"in use by another training process \(pid {proc.pid}\)"):
            rundir.acquire_lock(run)
        assert api.stop_training(run, timeout_s=10) == "stopped"
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rundir.read_status(run).error == "stopped by SIGINT"
    record("the process holding the run's lock", "api.stop_training", "signalled, stopped", "stopped")


def test_a_zombie_is_not_alive(tmp_path: Path, record) -> None:
    """A child that died but was not reaped yet (a zombie) reads as not alive."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], stdin=subprocess.DEVNULL)
    assert rundir.pid_alive(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    wait_for("the zombie", lambda: rundir._proc_stat(proc.pid)[0] == "Z", None, None, timeout_s=10)
    assert not rundir.pid_alive(proc.pid)  # not reaped: still in the process table
    proc.wait()
    record("a SIGKILLed child not yet reaped (zombie)", "rundir.pid_alive", "not alive")


@pytest.mark.parametrize("pid", [99999999999, 2**63, -5, 0])
def test_absurd_pids_are_not_alive(tmp_path: Path, pid: int, record) -> None:
    """pids outside 1..PID_MAX in status.json or .lock: not alive, no OverflowError."""
    assert not rundir.pid_alive(pid)
    run = tmp_path / "r"
    run.mkdir()
    (run / rundir.STATUS_FILE).write_text(json.dumps({"state": "running", "pid": pid, "epoch": 0, "total_epochs": 1}))
    status = rundir.read_status(run)
    assert status.state == "failed"
    assert api.stop_training(run, timeout_s=0.1) == "not running"
    (run / rundir.LOCK_FILE).write_text(f"{pid}\n")
    with pytest.raises(rundir.RunDirError, match="does not hold a pid") as info:
        rundir.acquire_lock(run)
    record(f"pid {pid} in status.json and .lock", "read_status, stop_training, acquire_lock",
           "failed / not running / lock refused", str(info.value))


def test_sigkilled_trainer_started_by_the_dashboard_is_reaped(tmp_path: Path, record) -> None:
    """api.start_training, then SIGKILL: no zombie, the run reads failed, --resume may take the lock."""
    market = tiny_market(tmp_path / "market")
    job = api.start_training(tmp_path, "ui-run", dataset="market1501", root=market, backbone="mobilenet_v2",
                             epochs=50, size="32x16", batch=8, eval_every=0)
    run = Path(job.run_dir)
    try:
        wait_for("the trainer to hold the lock", lambda: rundir.trainer_pid(run) == job.pid, None, None,
                 timeout_s=120, poll_s=0.05)
    finally:
        os.kill(job.pid, signal.SIGKILL)  # the trainer this test started
    wait_for("the trainer to be reaped", lambda: rundir._proc_stat(job.pid) is None, None, None, timeout_s=10)
    status = rundir.read_status(run)
    assert status.state in ("failed", "unknown"), status  # killed before or after its first status.json
    rundir.release_lock(rundir.acquire_lock(run))  # what --resume does first: the lock is free
    record("trainer started from the dashboard, then SIGKILLed", "api.start_training / read_status",
           f"reaped (no zombie); reads {status.state}; lock free for --resume", status.error or "")


# --- the lock race -------------------------------------------------------------------------
def _racer(dirs: list[str], start, done, wins) -> None:
    for i, d in enumerate(dirs):
        start.wait()
        try:
            lock = rundir.acquire_lock(d)
        except rundir.RunDirError:
            lock = None
        else:
            with wins.get_lock():
                wins[i] += 1
        done.wait()  # hold the lock until every racer has tried
        if lock is not None:
            rundir.release_lock(lock)


def test_racing_trainers_exactly_one_wins(tmp_path: Path, record) -> None:
    """Four processes take the lock of a run whose .lock names a dead trainer, many times: one winner each time."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dirs = []
    for i in range(TRIALS):
        d = tmp_path / f"run{i:03d}"
        d.mkdir()
        if i % 3 == 0:  # an older trainer's lock, a crashed trainer's lock, or no lock at all
            (d / rundir.LOCK_FILE).write_text(f"{dead.pid}\n")
        elif i % 3 == 1:
            (d / rundir.LOCK_FILE).write_text(f"{dead.pid} 12345\n")
        dirs.append(str(d))
    ctx = mp.get_context("fork")
    start, done, wins = ctx.Barrier(RACERS), ctx.Barrier(RACERS), ctx.Array("i", TRIALS)
    procs = [ctx.Process(target=_racer, args=(dirs, start, done, wins)) for _ in range(RACERS)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    elapsed = time.monotonic() - t0
    assert [p.exitcode for p in procs] == [0] * RACERS
    counts = list(wins)
    assert counts == [1] * TRIALS, [i for i, c in enumerate(counts) if c != 1]
    assert not [d for d in dirs if (Path(d) / rundir.LOCK_FILE).exists()]  # every winner removed its lock
    record(f"{RACERS} processes racing for a stale lock, {TRIALS} trials", "rundir.acquire_lock (flock)",
           "exactly one winner in every trial")
    assert elapsed < 30
