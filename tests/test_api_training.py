"""Starting and stopping a training process from the dashboard (esnet.api)."""
import time

import pytest

from esnet import api
from esnet.checkpoint import load_checkpoint
from esnet.engine import rundir
from tests.synthetic import make_run


def _wait(pred, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.3)
    return False


def test_start_then_stop_a_training_process(tmp_path, market):
    job = api.start_training(tmp_path, "ui-run", dataset="market1501", root=market, backbone="resnet18",
                             epochs=200, size="64x32", batch=8, eval_every=0)
    run = tmp_path / "ui-run"
    assert job.run_dir == str(run) and "--epochs" in job.command
    assert _wait(lambda: rundir.read_status(run).state == "running" and rundir.read_metrics(run)), \
        (run / "train.log").read_text()
    assert api.stop_training(run) == "stopped"
    status = rundir.read_status(run)
    assert status.state == "failed" and "stopped by SIGINT" in (status.error or ""), status.error
    assert _wait(lambda: not (run / ".lock").exists(), 30)
    assert not list(run.rglob("*.tmp"))  # no half-written file left behind
    assert load_checkpoint(run / "checkpoints" / "last.pt").epoch == status.epoch >= 1
    assert api.stop_training(run) == "not running"
    with pytest.raises(ValueError, match="already holds a run"):
        api.start_training(tmp_path, "ui-run", dataset="market1501", root=market)


def test_start_training_refuses_bad_names_and_missing_runs_dir(tmp_path, market):
    for bad in ("", ".hidden", "a/b", "../up", "spaced name"):
        with pytest.raises(ValueError, match="run name"):
            api.start_training(tmp_path, bad, dataset="market1501", root=market)
    with pytest.raises(ValueError, match="epochs"):
        api.start_training(tmp_path, "ok", dataset="market1501", root=market, epochs=0)
    with pytest.raises(api.RunDirError, match="does not exist"):
        api.start_training(tmp_path / "missing", "ok", dataset="market1501", root=market)
    make_run(tmp_path / "done")
    assert api.stop_training(tmp_path / "done") == "not running"
