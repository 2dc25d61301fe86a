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
                             weights="none", epochs=200, size="64x32", batch=8, eval_every=0)
    run = tmp_path / "ui-run"
    assert job.run_dir == str(run) and "--epochs" in job.command
    assert "optim.warmup_epochs=17" in job.command and "optim.milestones=67,117" in job.command  # BoT's, scaled
    assert rundir.read_status(run).state in ("starting", "running")  # listed at once, before the trainer writes
    assert _wait(lambda: rundir.read_status(run).state == "running" and rundir.read_metrics(run)), \
        (run / "train.log").read_text()
    assert api.stop_training(run) == "stopped"
    status = rundir.read_status(run)
    assert status.state == "stopped" and "stopped by SIGINT" in (status.error or ""), status.error
    assert _wait(lambda: not (run / ".lock").exists(), 30)
    assert not list(run.rglob("*.tmp"))  # no half-written file left behind
    assert load_checkpoint(run / "checkpoints" / "last.pt").epoch == status.epoch >= 1
    assert api.stop_training(run) == "not running"
    with pytest.raises(ValueError, match="already holds a run"):
        api.start_training(tmp_path, "ui-run", dataset="market1501", root=market)
    resumed = api.resume_training(run)  # the Runs page's "Resume": same run, --resume
    assert resumed.command[-3:] == ("--out", str(run), "--resume")
    assert _wait(lambda: rundir.read_status(run).state == "running" and rundir.read_status(run).epoch > status.epoch)
    assert api.stop_training(run) == "stopped" and rundir.read_status(run).state == "stopped"


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


def test_start_training_refuses_a_folder_holding_other_files_and_writes_nothing(tmp_path, market):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"mine")
    (tmp_path / "notes").write_text("a file, not a folder")
    for name in ("photos", "notes"):
        with pytest.raises(ValueError, match="exists and is not an empty folder"):
            api.start_training(tmp_path, name, dataset="market1501", root=market)
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["holiday.jpg"]  # no train.log, no launch.json
    assert (tmp_path / "notes").read_text() == "a file, not a folder"


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_launched_run_reads_starting_then_failed_with_the_logs_error(tmp_path):
    import os

    run = tmp_path / "r"
    run.mkdir()
    rundir.write_launch(run, os.getpid())  # alive: the trainer is loading
    assert rundir.read_status(run).state == "starting"
    assert api.runs_frame(tmp_path)["state"].tolist() == ["starting"]
    rundir.write_launch(run, _dead_pid())
    (run / "train.log").write_text("schedule: ...\nerror: data.height must be > 0, got 0\n")
    status = rundir.read_status(run)
    assert (status.state, status.error) == ("failed", "error: data.height must be > 0, got 0")
    frame = api.runs_frame(tmp_path)
    assert frame[["state", "error"]].values.tolist() == [["failed", "error: data.height must be > 0, got 0"]]


def test_start_training_validates_before_starting_a_process(tmp_path, market):
    cases = [({"size": "0x0"}, r"data.height must be > 0, got 0"),
             ({"backbone": "resnet18"}, r"--backbone resnet18 needs --weights"),
             ({"batch": 6}, r"data.batch_size must be a multiple"),
             ({"epochs": 4, "milestones": (9,)}, r"decay epochs must be <= epochs \(4\), got \[9\]")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            api.start_training(tmp_path, "bad", dataset="market1501", root=market, **kwargs)
    assert not (tmp_path / "bad").exists()


def test_resume_refuses_running_finished_and_checkpointless_runs(tmp_path):
    make_run(tmp_path / "done")
    with pytest.raises(ValueError, match=r"run 'done' is finished; only a stopped or failed run can be resumed"):
        api.resume_training(tmp_path / "done")
    rundir.write_status(tmp_path / "done", state="stopped", epoch=1, total_epochs=4, error="stopped by SIGINT")
    with pytest.raises(ValueError, match=r"has no checkpoints/last.pt"):
        api.resume_training(tmp_path / "done")


def _code_checkpoint(path, extra=None):
    """A checkpoint file with ``extra`` around a one-weight model (resume_code_changes reads only extra)."""
    import torch

    from esnet.checkpoint import save_checkpoint
    from esnet.config import Config

    save_checkpoint(path, model=torch.nn.Linear(1, 1), optimizer=None, scheduler=None, epoch=1, config=Config(),
                    num_classes=3, extra=extra)


def test_resume_code_changes_names_the_files_that_differ_from_the_checkpoints_code(tmp_path):
    from esnet.engine.code import code_identity

    run = make_run(tmp_path / "r")
    assert api.resume_code_changes(run) == []  # no checkpoint: nothing to compare (resume_training refuses it)
    last = run / "checkpoints" / "last.pt"
    now = code_identity(["model/esnet.py", "losses.py"])
    assert {"model/esnet.py", "losses.py"} <= set(now["files"])
    _code_checkpoint(last, {"code": now})
    assert api.resume_code_changes(run) == []
    _code_checkpoint(last, {"code": {**now, "files": {**now["files"], "losses.py": "0" * 64}}})
    assert api.resume_code_changes(run) == ["esnet/losses.py"]
    _code_checkpoint(last, {"code": {"files": {"gone/old.py": "0" * 64}}})
    assert api.resume_code_changes(run) == ["esnet/gone/old.py"]  # a file that no longer exists differs too
    _code_checkpoint(last)  # saved before code records: not checked
    assert api.resume_code_changes(run) == []
    _code_checkpoint(last, {"code": {"files": {"../../etc/passwd.py": "0" * 64}}})
    with pytest.raises(api.CheckpointError, match=r"last\.pt'.*the code record lists '\.\./\.\./etc/passwd\.py'"):
        api.resume_code_changes(run)
    last.write_bytes(b"not a torch file")
    with pytest.raises(api.CheckpointError, match=r"cannot read checkpoint .*last\.pt'|refusing to load checkpoint"):
        api.resume_code_changes(run)


@pytest.mark.parametrize("allow", [False, True])
def test_resume_passes_allow_code_change_on_to_the_trainer(tmp_path, monkeypatch, allow):
    run = make_run(tmp_path / "r")
    rundir.write_status(run, state="stopped", epoch=1, total_epochs=4, error="stopped by SIGINT")
    _code_checkpoint(run / "checkpoints" / "last.pt")
    launched = []
    monkeypatch.setattr(api, "_launch", lambda out, argv: launched.append((out, argv)))
    api.resume_training(run, allow_code_change=allow)
    (out, argv), = launched
    assert out == run
    assert argv[argv.index("--out"):] == ["--out", str(run), "--resume"] + ["--allow-code-change"] * allow
