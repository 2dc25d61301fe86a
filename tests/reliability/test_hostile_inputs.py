"""Hostile or unlucky inputs that used to end in a traceback: each now ends in one line naming the value and rule.

Doors: ``esnet train`` and ``esnet data check`` (called in-process through ``esnet.cli.main``:
exit code and stderr), the dashboard's sidebar and start form (AppTest: no exception, the
message on the page, the other fields kept).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app import state
from esnet import cli
from esnet.engine import rundir
from tests.reliability._train import TINY, tiny_market
from tests.synthetic import make_run
from tests.test_app.runpages import frame_with, open_app, tiny_demo

DEEP = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit in json.loads


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --- esnet train ---------------------------------------------------------------------------
def _out_file(tmp: Path) -> Path:
    (tmp / "afile").write_text("x")
    return tmp / "afile"


def _out_under_file(tmp: Path) -> Path:
    (tmp / "afile").write_text("x")
    return tmp / "afile" / "run"


def _out_loop(tmp: Path) -> Path:
    (tmp / "loop").symlink_to(tmp / "loop")
    return tmp / "loop"


def _out_gallery(tmp: Path) -> Path:
    (tmp / "gallery").mkdir()
    for i in range(3):
        (tmp / "gallery" / f"0001_c1s1_{i:06d}_00.jpg").write_bytes(b"\xff\xd8 not really")
    return tmp / "gallery"


def _out_lock_overflow(tmp: Path) -> Path:
    (tmp / "run").mkdir()
    (tmp / "run" / rundir.LOCK_FILE).write_text("99999999999\n")
    return tmp / "run"


OUTS = {
    "--out that is a file": (_out_file, "is a file, not a directory"),
    "--out under a file": (_out_under_file, "cannot be used: Not a directory"),
    "--out that is a symlink loop": (_out_loop, "cannot be used: Too many levels of symbolic links"),
    "--out an existing folder of images (a gallery)": (_out_gallery, "is a non-empty folder that is not a run "
                                                                     "directory (3 entries"),
    "--out whose .lock holds pid 99999999999": (_out_lock_overflow, "which does not hold a pid"),
}


@pytest.mark.parametrize("case", list(OUTS))
def test_train_refuses_bad_out(case: str, tmp_path: Path, capsys, record) -> None:
    """A bad --out: exit 2, one line, nothing written into it."""
    make, expected = OUTS[case]
    market = tiny_market(tmp_path / "market")
    out = make(tmp_path)
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() and not out.is_symlink() else None
    code = cli.main(["train", "--root", str(market), "--out", str(out), "--epochs", "1", *TINY])
    line = _one_line_error(capsys)
    assert code == 2 and expected in line, line
    if before is not None:
        assert sorted(p.name for p in out.iterdir()) == before
    record(case, "esnet train", "refused, exit 2", line)


def test_train_refuses_a_deeply_nested_config(tmp_path: Path, capsys, record) -> None:
    """--config holding 100,000 nested brackets: exit 2, one line (was RecursionError)."""
    cfg = tmp_path / "deep.json"
    cfg.write_text(DEEP)
    code = cli.main(["train", "--config", str(cfg), "--root", str(tmp_path), "--out", str(tmp_path / "run"), *TINY])
    line = _one_line_error(capsys)
    assert code == 2 and "nests too deeply" in line, line
    assert not (tmp_path / "run").exists()
    record("--config with 100,000 nested brackets", "esnet train", "refused, exit 2", line)


def test_failed_train_leaves_no_empty_parents(tmp_path: Path, capsys, record) -> None:
    """--out a/b/c that fails (no dataset there): a, b and c are all gone again."""
    code = cli.main(["train", "--root", str(tmp_path / "no-data"), "--out", str(tmp_path / "a" / "b" / "c"), *TINY])
    line = _one_line_error(capsys)
    assert code == 2 and not (tmp_path / "a").exists(), line
    record("failed run into a new --out a/b/c", "esnet train", "exit 2; no empty a/b/c left", line)


# --- CSV manifests ----------------------------------------------------------------------------
MANIFESTS = {
    "manifest with a quoted field over 128 KiB": ('"' + "a" * 140_000 + '.jpg",1,0,train\n',
                                                  "not a valid CSV row: field larger than field limit"),
    "manifest pid 99999999999999999999999": ("a.jpg,99999999999999999999999,0,query\n", "pid must be in [-1, "),
    "manifest camid 2**40": ("a.jpg,1,1099511627776,query\n", "camid must be in [0, "),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_manifest_validator_refuses(case: str, tmp_path: Path, capsys, record) -> None:
    """esnet data check refuses the manifest (so esnet eval never starts an embedding on it)."""
    body, expected = MANIFESTS[case]
    csv = tmp_path / "m.csv"
    csv.write_text("path,pid,camid,split\n" + body)
    code = cli.main(["data", "check", "--dataset", "manifest", "--root", str(csv)])
    line = _one_line_error(capsys)
    assert code == 2 and expected in line and ":2: " in line, line
    record(case, "esnet data check", "refused, exit 2", line)


# --- the dashboard ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_demo(tmp_path_factory)


def _no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_sidebar_survives_hostile_run_files(tmp_path: Path, demo_root: Path, monkeypatch, record) -> None:
    """A run with status pid 99999999999 and a metrics line of 100,000 nested brackets: every run page renders."""
    runs = tmp_path / "runs"
    make_run(runs / "overflow")
    status = json.loads((runs / "overflow" / rundir.STATUS_FILE).read_text())
    (runs / "overflow" / rundir.STATUS_FILE).write_text(json.dumps({**status, "state": "running",
                                                                   "pid": 99999999999}))
    make_run(runs / "deep")
    with open(runs / "deep" / rundir.METRICS_FILE, "a") as f:
        f.write(DEEP + "\n")
    at = open_app(monkeypatch, runs, demo_root)
    _no_exception(at)
    table = frame_with(at, "best_mAP").set_index("run")
    assert table.loc["overflow", "state"] == "failed" and table.loc["deep", "state"] == "finished"
    for page in ("../pages/monitor.py", "../pages/pooling.py", "../pages/erasing.py"):
        for run in ("overflow", "deep"):
            at.sidebar.selectbox(key=state.KEY_RUN).set_value(run)
            at.switch_page(page).run()
            _no_exception(at)
    record("status.json pid 99999999999", "sidebar, Runs / Monitor / Pooling / Erasing pages",
           "run shown failed; pages render")
    record("metrics.jsonl line of 100,000 nested brackets", "sidebar, Runs / Monitor / Pooling / Erasing pages",
           "line skipped; pages render")


SIDEBAR = {
    "5,000-character runs directory": (state.KEY_RUNS_DIR, "{repo}/" + "a" * 5000, "cannot be used: File name too"),
    "'~nosuchuser/x' as runs directory": (state.KEY_RUNS_DIR, "~nosuchuser/x", "cannot be resolved"),
    "'~nosuchuser/x' as dataset root": (state.KEY_DATASET_ROOT, "~nosuchuser/x", "cannot be resolved"),
}


@pytest.mark.parametrize("case", list(SIDEBAR))
def test_sidebar_refuses_unusable_paths(case: str, tmp_path: Path, demo_root: Path, monkeypatch, record) -> None:
    """An unusable typed path: a message on the page, the other sidebar field keeps its value."""
    key, typed, expected = SIDEBAR[case]
    runs = tmp_path / "runs"
    make_run(runs / "r")
    at = open_app(monkeypatch, runs, demo_root)
    other = state.KEY_DATASET_ROOT if key == state.KEY_RUNS_DIR else state.KEY_RUNS_DIR
    kept = at.sidebar.text_input(key=other).value
    at.sidebar.text_input(key=key).set_value(typed.format(repo=Path(__file__).resolve().parents[2])).run()
    _no_exception(at)
    shown = [m.value for m in (*at.warning, *at.caption, *at.sidebar.caption)]
    message = next((m for m in shown if expected in m), None)
    assert message is not None, shown
    assert at.sidebar.text_input(key=other).value == kept
    record(case, "sidebar", "refused on the page", message.replace("a" * 150, "a…"))


FORM = {
    "300-character run name": ("runs.name", "r" * 300, "run name must be at most 100 characters, got 300"),
    "'~nosuchuser/x' as weights": ("runs.weights", "~nosuchuser/x", "cannot be resolved"),
}


@pytest.mark.parametrize("case", list(FORM))
def test_start_form_refuses(case: str, tmp_path: Path, demo_root: Path, monkeypatch, record) -> None:
    """A bad start-form field: 'Cannot start the run: ...', no process started, no exception."""
    key, typed, expected = FORM[case]
    runs = tmp_path / "runs"
    make_run(runs / "r")
    at = open_app(monkeypatch, runs, demo_root)
    kept = at.sidebar.text_input(key=state.KEY_DATASET_ROOT).value
    if key != "runs.name":
        at.text_input(key="runs.name").set_value("fresh")
    at.text_input(key=key).set_value(typed)
    at.form_submit_button[0].click().run()
    _no_exception(at)
    errors = [e.value for e in at.error]
    assert errors and "Cannot start the run" in errors[0] and expected in errors[0], errors
    assert sorted(os.listdir(runs)) == ["r"]
    assert at.sidebar.text_input(key=state.KEY_DATASET_ROOT).value == kept
    record(case, "Runs page start form", "refused on the page", errors[0])


# --- a run directory that turns read-only mid-run -----------------------------------------------
def _tiny_cfg(market: Path, epochs: int):
    from esnet.config import Config, override

    return override(Config(), {
        "data.dataset": "market1501", "data.root": str(market), "data.height": 32, "data.width": 16,
        "data.batch_size": 8, "data.num_instances": 2, "data.workers": 0, "model.backbone": "mobilenet_v2",
        "optim.epochs": epochs, "optim.warmup_epochs": 1, "train.device": "cpu", "train.eval_every": 0,
        "train.probe_count": 2, "train.max_iters_per_epoch": 1})


def test_resume_removes_orphan_temporary_files(tmp_path: Path, record) -> None:
    """Temporary files a killed save left (checkpoints/.best.pt.*.tmp ...) are gone after a successful resume."""
    import torch

    from esnet.engine.run import train_run

    out = tmp_path / "run"
    cfg = _tiny_cfg(tiny_market(tmp_path / "market"), epochs=1)
    with torch.random.fork_rng(devices=[]):
        train_run(cfg, out, command="pytest")
    orphans = [out / "checkpoints" / ".best.pt.k1ll3d.tmp", out / ".status.json.x9.tmp",
               out / "probes" / ".epoch_0001.npz.q.tmp"]
    for p in orphans:
        p.write_bytes(b"half a file")
    keep = out / "checkpoints" / "notes.tmp"  # not one of ours (not hidden): left alone
    keep.write_text("x")
    with torch.random.fork_rng(devices=[]):
        train_run(cfg, out, resume=True, resume_updates={"optim.epochs": 2}, command="pytest")
    assert not [p for p in orphans if p.exists()] and keep.exists()
    assert not list(out.rglob(".*.tmp"))
    record("orphan checkpoints/.best.pt.*.tmp (and status/probe temporaries) before --resume", "train_run --resume",
           "removed; resume finished")


def test_run_dir_turning_read_only_reports_the_first_failure(tmp_path: Path, record) -> None:
    """chattr +i on the run directory after epoch 1: the write that failed is reported (not release_lock's),
    and the run reads failed once the trainer is gone."""
    import shutil
    import subprocess

    import torch

    from esnet.engine.callbacks import Callback
    from esnet.engine.run import train_run

    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("needs chattr and root (CAP_LINUX_IMMUTABLE)")
    out = tmp_path / "run"
    cfg = _tiny_cfg(tiny_market(tmp_path / "market"), epochs=3)

    class Freeze(Callback):
        def on_epoch_end(self, epoch: int, record: dict) -> None:
            if epoch == 1:
                subprocess.run(["chattr", "+i", str(out)], check=True)

    try:
        with torch.random.fork_rng(devices=[]):
            with pytest.raises(PermissionError) as info:
                train_run(cfg, out, command="pytest", callbacks=[Freeze()])
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=False)
    msg = str(info.value)
    assert rundir.LOCK_FILE not in msg and "status.json" in msg, msg  # the epoch-2 status write, not the lock
    status = rundir.read_status(out)
    assert (status.state, status.epoch) == ("failed", 1) and "ended unexpectedly" in status.error, status
    rundir.release_lock(rundir.acquire_lock(out))  # the stale .lock (not removable then) is no obstacle
    record("run directory made immutable (chattr +i) after epoch 1", "train_run (esnet train)",
           "the failed write is raised, not release_lock's; run reads failed", msg)


# --- output paths checked before the work; small things ---------------------------------------------
DEMO_CKPT = Path(__file__).resolve().parents[2] / "assets" / "demo_runs" / "esnet-p"  # the demo run with weights


def _outputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "X").write_text("a file")
    folder = str(tmp / "gallery")
    embed = ["embed", "--checkpoint", str(DEMO_CKPT), "--folder", folder, "--device", "cpu"]
    return {
        "embed --out X/f.npz with X a file": ([*embed, "--out", str(tmp / "X" / "f.npz")], "is a file, not a directory"),
        "embed --out /proc/x.npz": ([*embed, "--out", "/proc/x.npz"], "cannot be written: /proc refuses a new file"),
        "embed --cache-dir <a file>": ([*embed, "--out", str(tmp / "f.npz"), "--cache-dir", str(tmp / "X")],
                                       "--cache-dir"),
        "search --cache-dir <a file>": (["search", "--checkpoint", str(DEMO_CKPT), "--gallery", folder, "--query",
                                         str(tmp / "q.jpg"), "--cache-dir", str(tmp / "X")], "is a file, not a "
                                                                                              "directory"),
        "eval --per-query /proc/q.csv": (["eval", "--checkpoint", str(DEMO_CKPT), "--dataset", "demo", "--root", folder,
                                          "--per-query", "/proc/q.csv"], "cannot be written: /proc refuses a new file"),
    }


@pytest.mark.parametrize("case", [
    "embed --out X/f.npz with X a file", "embed --out /proc/x.npz", "embed --cache-dir <a file>",
    "search --cache-dir <a file>", "eval --per-query /proc/q.csv"])
def test_outputs_are_checked_before_the_work(case: str, tmp_path: Path, capsys, monkeypatch, record) -> None:
    """An output that cannot be written: exit 2 and one line before the checkpoint is even loaded."""
    from esnet import api

    monkeypatch.setattr(api, "load_inference", lambda *a, **k: pytest.fail("the work started"))
    args, expected = _outputs(tmp_path)[case]
    code = cli.main(args)
    line = _one_line_error(capsys)
    assert code == 2 and expected in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X"]  # no probe file or folder left
    record(case, f"esnet {args[0]}", "refused before loading, exit 2", line)


def test_topk_zero_is_refused_before_torch(tmp_path: Path, record) -> None:
    """esnet search --topk 0: refused before torch is imported."""
    import subprocess
    import sys

    code = ("import sys; from esnet import cli\n"
            "rc = cli.main(['search', '--checkpoint', 'c.pt', '--gallery', 'g', '--query', 'q.jpg', '--topk', '0'])\n"
            "print(rc, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout.split() == ["2", "False"], (proc.stdout, proc.stderr)
    assert proc.stderr.strip() == "error: --topk must be >= 1, got 0"
    record("search --topk 0", "esnet search", "refused before torch is imported, exit 2", proc.stderr)


def test_control_characters_in_file_names_are_escaped(tmp_path: Path, capsys, record) -> None:
    """A gallery file whose name holds a newline and ESC cannot forge a row of esnet search's table."""
    from PIL import Image

    gallery = tmp_path / "g"
    gallery.mkdir()
    forged = "a\n     1    0.0000      7      7  forged\x1b[2K.jpg"
    for name, colour in ((forged, (200, 10, 10)), ("b.jpg", (10, 200, 10))):
        Image.new("RGB", (32, 64), colour).save(gallery / name, format="JPEG")
    query = tmp_path / "q\tx.jpg"
    Image.new("RGB", (32, 64), (190, 20, 20)).save(query)
    ckpt = sorted((DEMO_CKPT / "checkpoints").glob("*.pt"))[0]  # its one checkpoint file
    code = cli.main(["search", "--checkpoint", str(ckpt), "--gallery", str(gallery), "--query", str(query),
                     "--no-cache", "--device", "cpu", "--topk", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert len(lines) == 4 and not any("\x1b" in ln or "\t" in ln for ln in lines), lines  # query, header, 2 hits
    hit = next(ln for ln in lines if "forged" in ln)
    assert "a\\n     1" in hit and "\\x1b[2K" in hit, hit
    assert lines[0] == f"query {tmp_path}/q\\tx.jpg", lines[0]
    record("gallery file name with a newline and ESC; query name with a TAB", "esnet search (text output)",
           "escaped: one row per hit", hit.strip())


def test_search_uploads_are_capped(monkeypatch, record) -> None:
    """50 query images in one upload: the first 16 are searched, the rest named in one message."""
    import io

    from PIL import Image

    from app import model_views as mv
    from esnet import api

    buf = io.BytesIO()
    Image.new("RGB", (16, 32), (1, 2, 3)).save(buf, format="PNG")
    files = [(f"q{i:02d}.png", buf.getvalue()) for i in range(50)]
    searched = []
    monkeypatch.setattr(api, "search_images", lambda inf, gallery, images, topk: searched.append(len(images)) or "r")
    outcome = mv.search_uploads(None, list(range(100)), files, topk=5)
    assert searched == [mv.MAX_UPLOADS] == [16] and len(outcome.queries) == 16
    assert [q.name for q in outcome.queries] == [f"q{i:02d}.png" for i in range(16)]
    (message,) = outcome.errors
    assert message.startswith("50 images uploaded, at most 16 are searched at once") and "'q16.png'" in message
    record("50 query images in one upload", "Search page (search_uploads)", "first 16 searched; the rest named",
           message)
