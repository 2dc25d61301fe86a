"""``esnet train`` / ``python -m esnet.train`` on tiny synthetic data."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from esnet import cli
from esnet import train as train_entry
from esnet.engine import rundir

TINY = ["--dataset", "market1501", "--size", "32x16", "--batch", "8", "--instances", "2", "--workers", "0",
        "--backbone", "mobilenet_v2", "--max-iters", "2", "--probes", "2", "--device", "cpu",
        "--set", "optim.warmup_epochs=1"]
SUMMARY = re.compile(
    r"^epoch 1/1 loss \d+\.\d{4} acc \d\.\d{3}/\d\.\d{3} p \d\.\d{3}/\d\.\d{3} lr \d\.\d\de-\d\d \d+ img/s "
    r"R1 \d+\.\d% mAP \d+\.\d%$", re.M)


def test_train_runs_prints_summary_and_resumes(market: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code = cli.main(["train", "--root", str(market), "--out", str(out), "--epochs", "1", "--eval-every", "1", *TINY])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert SUMMARY.search(captured.out), captured.out
    assert f"done: 1 epochs in {out}, best mAP " in captured.out
    assert rundir.read_status(out).state == "finished"
    cfg = rundir.read_config(out)
    assert (cfg.data.height, cfg.data.width, cfg.model.backbone, cfg.optim.warmup_epochs) == (32, 16, "mobilenet_v2", 1)
    assert rundir.read_meta(out)["command"].startswith(("esnet", "python", "pytest", "__main__"))

    # the same dir again without --resume: refused, nothing touched
    code = cli.main(["train", "--root", str(market), "--out", str(out), "--epochs", "1", *TINY])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: run dir '{out}' already holds a finished run (1/1 epochs); pass --resume" in err

    # --resume may extend the run, but not change the model
    code = cli.main(["train", "--out", str(out), "--resume", "--backbone", "resnet18"])
    assert code == 2 and "--resume cannot change ['model.backbone']" in capsys.readouterr().err
    code = cli.main(["train", "--out", str(out), "--resume", "--epochs", "2", "--eval-every", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert re.search(r"^epoch 2/2 loss ", captured.out, re.M) and "R1" not in captured.out.splitlines()[0]
    assert [r["epoch"] for r in rundir.read_metrics(out)] == [1, 2]


@pytest.mark.parametrize(("args", "message"), [
    (["--epochs", "abc"], "error: optim.epochs must be an integer, got 'abc'"),
    (["--pool", "mean"], "error: model.pool must be one of ['p', 'avg', 'max'], got 'mean'"),
    (["--set", "model.colour=red"], "error: unknown key 'model.colour'"),
    (["--set", "nokey"], "error: --set expects KEY=VALUE"),
    (["--size", "32by16"], "error: --size must be HxW in pixels, e.g. 256x128, got '32by16'"),
    (["--batch", "7"], "error: data.batch_size must be a multiple of data.num_instances (2)"),
    (["--allow-code-change"], "error: --allow-code-change applies to --resume only"),
])
def test_bad_values_exit_2_with_one_line(market: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                         args: list[str], message: str) -> None:
    out = tmp_path / "run"
    code = cli.main(["train", "--root", str(market), "--out", str(out), "--epochs", "1", *TINY, *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not out.exists()


def test_missing_dataset_and_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = cli.main(["train", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"), *TINY])
    assert code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere'}: dataset root does not exist\n"
    assert not (tmp_path / "run").exists()
    code = train_entry.main(["--out", str(tmp_path / "run"), "--dataset", "demo"])
    assert code == 2 and "--root is required" in capsys.readouterr().err
    code = cli.main(["train", "--out", str(tmp_path / "run"), "--resume"])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_overrides_from_args_precedence() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--out", "o", "--set", "optim.epochs=5", "--epochs", "7", "--size", "64x32"])
    assert train_entry.overrides_from_args(args) == {
        "optim.epochs": "7", "data.height": 64, "data.width": 32,
    }


def test_schedule_scaled_to_epochs_and_printed(market: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    tiny = [a for a in TINY if a not in ("--set", "optim.warmup_epochs=1")]
    code = cli.main(["train", "--root", str(market), "--out", str(out), "--epochs", "3", "--eval-every", "0",
                     "--probes", "0", *tiny])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("schedule: lr 0.001, warm-up 0 epochs, x0.1 at epochs 1, 2 of 3 (BoT's warm-up")
    cfg = rundir.read_config(out)
    assert (cfg.optim.lr, cfg.optim.warmup_epochs, cfg.optim.milestones) == (1e-3, 0, (1, 2))
    assert [r["lr"] for r in rundir.read_metrics(out)] == pytest.approx([1e-3, 1e-4, 1e-5])


def test_schedule_keys_given_are_kept_and_the_others_scaled(tmp_path: Path) -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--out", "o", "--root", "r", "--epochs", "20", "--set", "optim.milestones=15",
                              "--weights", "none"])
    cfg, scaled = train_entry.fresh_config(args)
    assert scaled and (cfg.optim.warmup_epochs, cfg.optim.milestones) == (2, (15,))
    both = tmp_path / "c.json"
    both.write_text('{"optim": {"warmup_epochs": 4, "milestones": [9]}}')
    cfg, scaled = train_entry.fresh_config(parser.parse_args(["train", "--out", "o", "--root", "r", "--config",
                                                              str(both), "--epochs", "20", "--weights", "none"]))
    assert not scaled and (cfg.optim.warmup_epochs, cfg.optim.milestones) == (4, (9,))


def test_resnet_without_weights_is_refused_unless_none(market: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code = cli.main(["train", "--root", str(market), "--out", str(out), "--backbone", "resnet18", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and not out.exists()
    assert err.startswith("error: --backbone resnet18 needs --weights: give an ImageNet state dict file")
    assert "--weights none to train from scratch" in err and "'esnet weights fetch mobilenet_v2'" in err
    args = cli.build_parser().parse_args(["train", "--out", "o", "--root", "r", "--backbone", "resnet18",
                                          "--weights", "none"])
    cfg, _ = train_entry.fresh_config(args)
    assert cfg.model.backbone == "resnet18" and cfg.model.weights == ""


def test_manifest_and_camera_regex_flags_spell_like_data_check() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--out", "o", "--manifest", "m.csv", "--camera-regex", r"cam(\d+)"])
    assert train_entry.overrides_from_args(args) == {"data.dataset": "manifest", "data.root": "m.csv",
                                                     "data.camera_regex": r"cam(\d+)"}
    with pytest.raises(ValueError, match=r"--manifest m.csv is the dataset: give it without --root"):
        train_entry.overrides_from_args(parser.parse_args(["train", "--out", "o", "--manifest", "m.csv",
                                                           "--root", "r"]))
