"""SIGKILL a real ``esnet train`` mid-epoch, resume it, and compare with a run that was never interrupted.

The trainer's promises (esnet.engine.rundir, esnet.engine.trainer): every file is written
atomically or as whole lines, so a kill anywhere leaves loadable checkpoints and readable
metrics; ``--resume`` continues from checkpoints/last.pt, redoing only the epoch that was
cut; each epoch's randomness depends on (seed, epoch) alone, so on the CPU the resumed
epochs equal the uninterrupted run's.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
from pathlib import Path

import pytest

from esnet import cli
from esnet.checkpoint import load_checkpoint
from esnet.engine import rundir
from esnet.runview import block_positions, cmc_frame, erasing_frames, metrics_frame, runs_frame
from tests.reliability._train import start, tiny_market, train_args, wait_for

EPOCHS = 3
HALF_LINE = b'{"epoch": 2, "lr": 0.00035, "loss": {"global_ce": 7.1, "tot'


def _epochs(run: Path) -> list[int]:
    return [r["epoch"] for r in rundir.read_metrics(run)]


def _close(a: float, b: float, tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def _same_record(a: dict, b: dict) -> list[str]:
    """Differences beyond 1e-6 between two metrics records (timing fields ignored)."""
    diffs = []
    for section in ("loss", "acc", "p"):
        for k in a[section].keys() | b[section].keys():
            if k not in a[section] or k not in b[section] or not _close(a[section][k], b[section][k]):
                diffs.append(f"{section}.{k}: {a[section].get(k)} vs {b[section].get(k)}")
    if not _close(a["lr"], b["lr"], 1e-12):
        diffs.append(f"lr: {a['lr']} vs {b['lr']}")
    for k in ("R1", "mAP", "mINP"):
        if not _close(a["eval"][k], b["eval"][k]):
            diffs.append(f"eval.{k}: {a['eval'][k]} vs {b['eval'][k]}")
    return diffs


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_market(tmp_path_factory.mktemp("market16"))


def test_kill_mid_epoch_then_resume_matches_uninterrupted(market: Path, tmp_path: Path, capsys, record) -> None:
    """Kill -9 during epoch 2, read everything, resume: epochs 2-3 equal an uninterrupted run's."""
    runs = tmp_path / "runs"
    ref, crash = runs / "reference", runs / "crashed"

    # The uninterrupted reference, in this process (same seed, one thread, same arithmetic).
    assert cli.main(train_args(market, ref, EPOCHS)) == 0, capsys.readouterr().err
    capsys.readouterr()
    ref_records = rundir.read_metrics(ref)
    assert [r["epoch"] for r in ref_records] == [1, 2, 3]

    # The run to be killed, as its own process.
    log = tmp_path / "crash.log"
    proc = start(train_args(market, crash, EPOCHS), log)
    try:
        wait_for("status 'running'", lambda: rundir.read_status(crash).state == "running"
                 if crash.exists() else False, proc, log)
        # A second trainer into the same directory is refused by the lock, fresh or --resume.
        for extra in ([], ["--resume"]):
            args = train_args(market, crash, EPOCHS) if not extra else ["train", "--out", str(crash), "--resume"]
            assert cli.main(args) == 2
            err = capsys.readouterr().err
            assert f"run dir '{crash}' is in use by another training process (pid {proc.pid})" in err, err
            record(f"second trainer into a running run dir{' (--resume)' if extra else ''}",
                   "esnet train", "refused, exit 2", err.strip())
        assert rundir.read_status(crash).state == "running"

        wait_for("epoch 1's checkpoint", lambda: rundir.read_status(crash).epoch >= 1, proc, log)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _epochs(crash) == [1], f"the kill came after epoch 2 ended, not mid-epoch: {_epochs(crash)}"

    # What a dashboard sees after the crash: a failed run with one finished epoch; everything loads.
    status = rundir.read_status(crash)
    assert (status.state, status.epoch) == ("failed", 1)
    assert status.error == f"process ended unexpectedly (pid {proc.pid} is not running)"
    ckpt = load_checkpoint(rundir.checkpoint_path(crash, "last"))
    assert ckpt.epoch == 1 and ckpt.optimizer_state is not None
    assert load_checkpoint(rundir.checkpoint_path(crash, "best")).epoch == 1
    record("SIGKILL during epoch 2", "checkpoints/last.pt, best.pt", "both load (epoch 1)")
    record("SIGKILL during epoch 2", "status.json", "reads failed, resumable", status.error)

    # A writer that died mid-line: every reader skips the cut-short line.
    with open(crash / rundir.METRICS_FILE, "ab") as f:
        f.write(HALF_LINE)
    assert _epochs(crash) == [1]
    assert metrics_frame(crash)["epoch"].tolist() == [1]
    table = runs_frame(runs).set_index("run")
    assert (table.loc["crashed", "state"], table.loc["crashed", "epochs"]) == ("failed", "1/3")
    assert table.loc["reference", "state"] == "finished"
    assert cmc_frame({"c": crash})["rank"].tolist()[:3] == [1, 2, 3]
    assert sorted(set(block_positions(crash)["epoch"])) == [0, 1]
    assert len(erasing_frames(crash, 1)) == 2
    record("half-written last line in metrics.jsonl", "read_metrics, metrics_frame, runs_frame, cmc_frame",
           "line ignored; 1 epoch shown")

    # Resume: the lock of the dead trainer is taken over, epoch 2 is redone, epoch 1 is not.
    log2 = tmp_path / "resume.log"
    proc2 = start(["train", "--out", str(crash), "--resume"], log2)
    assert proc2.wait(timeout=600) == 0, log2.read_text(errors="replace")[-3000:]
    printed = [int(m) for m in re.findall(r"^epoch (\d+)/3 loss", log2.read_text(errors="replace"), re.M)]
    assert printed == [2, 3], printed
    lines = (crash / rundir.METRICS_FILE).read_bytes().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2, 3]  # the cut line was dropped, not kept
    assert rundir.read_status(crash).state == "finished"
    assert len(rundir.read_meta(crash)["resumed_at"]) == 1
    assert not (crash / rundir.LOCK_FILE).exists()
    record("resume after SIGKILL", "esnet train --resume", "epoch 2 redone, epoch 1 not; lock taken over")

    # Same numbers as the run that was never interrupted (CPU, fixed seed).
    got = rundir.read_metrics(crash)
    for a, b in zip(got, ref_records):
        assert not _same_record(a, b), (a["epoch"], _same_record(a, b))
    last = load_checkpoint(rundir.checkpoint_path(crash, "last"))
    ref_last = load_checkpoint(rundir.checkpoint_path(ref, "last"))
    assert last.epoch == ref_last.epoch == EPOCHS
    worst = max(float((last.model_state[k].double() - v.double()).abs().max()) if v.is_floating_point()
                else float((last.model_state[k] != v).any()) for k, v in ref_last.model_state.items())
    assert worst <= 1e-6, worst
    record("resumed vs uninterrupted run (CPU, seed 3)", "metrics.jsonl, last.pt",
           "losses, accuracies, p, mAP and final weights equal within 1e-6")
