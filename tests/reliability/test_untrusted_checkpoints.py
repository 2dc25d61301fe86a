"""Checkpoints from strangers: code in a pickle never runs; every bad file gives a CheckpointError that says why.

Each bad file goes through ``load_checkpoint``; the malicious pickle also through
``load_model``, ``load_inference``, ``load_backbone_weights`` and every CLI command that
takes a checkpoint (``esnet train --resume``, ``eval``, ``embed``, ``search``, ``export``),
with a marker file that the payload would create if it ever ran.
"""
from __future__ import annotations

import json
import os
import pickle
import resource
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from esnet import cli
from esnet.checkpoint import CheckpointError, load_backbone_weights, load_checkpoint, load_model, save_checkpoint
from esnet.config import Config, override, to_dict
from esnet.embedding import load_inference
from esnet.engine import rundir
from esnet.model import build_model
from tests.reliability._train import REPO, child_env, esnet_command
from tests.synthetic import make_market

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")


class Payload:
    """Unpickling this runs ``code`` (what a malicious checkpoint does with plain torch.load)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def _armed(marker: Path) -> Payload:
    return Payload(f"open({str(marker)!r}, 'w').write('the payload ran')")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cfg(backbone: str = "resnet18") -> Config:
    return override(Config(), {"model.backbone": backbone, "data.height": 64, "data.width": 32})


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good checkpoint and every kind of bad one, built once."""
    d = tmp_path_factory.mktemp("ckpts")
    marker = d / "PWNED"
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model(cfg.model, 3)
    good = d / "good.pt"
    save_checkpoint(good, model=model, optimizer=None, scheduler=None, epoch=1, config=cfg, num_classes=3)
    raw = torch.load(good, weights_only=True)
    out = {"good": good, "marker": marker}

    def put(name: str, obj, **kw) -> None:
        out[name] = d / f"{name}.pt"
        torch.save(obj, out[name], **kw)

    put("malicious", {**raw, "extra": {"note": _armed(marker)}})
    put("malicious_legacy", {**raw, "model": _armed(marker)}, _use_new_zipfile_serialization=False)
    out["malicious_plain_pickle"] = d / "plain_pickle.pt"
    out["malicious_plain_pickle"].write_bytes(pickle.dumps({"version": 1, "model": _armed(marker)}))
    put("numpy_inside", {**raw, "extra": {"hist": np.arange(3)}})
    put("plain_tensor", torch.zeros(3, 3))
    put("version_99", {**raw, "version": 99})
    put("invalid_config", {**raw, "config": {**to_dict(cfg), "model": {**to_dict(cfg)["model"], "pool": "mean"}}})
    put("unknown_backbone", {**raw, "config": {**to_dict(cfg), "model": {**to_dict(cfg)["model"], "backbone": "evil"}}})
    put("not_tensors", {**raw, "model": {"w": [1, 2, 3]}})
    other = build_model(_cfg("mobilenet_v2").model, 3).state_dict()
    put("other_architecture", {**raw, "model": other})  # mobilenet weights, resnet18 config
    put("shape_mismatch", {**raw, "num_classes": 5})  # classifier saved for 3 classes
    put("num_classes_500000", {**raw, "num_classes": 500_000})  # a real model would take 2 x 500000 x 512 floats
    put("num_classes_1e9", {**raw, "num_classes": 10**9})  # ... or 4 TB
    nan = {k: (v.clone().fill_(float("nan")) if k.endswith("classifier.weight") else v) for k, v in raw["model"].items()}
    put("nan_weights", {**raw, "model": nan})
    data = good.read_bytes()
    out["truncated"] = d / "truncated.pt"
    out["truncated"].write_bytes(data[: len(data) // 2])
    out["random_bytes"] = d / "random.pt"
    out["random_bytes"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out["json"] = d / "config.pt"
    out["json"].write_text(json.dumps({"version": 1, "model": {}, "epoch": 1}))
    out["empty"] = d / "empty.pt"
    out["empty"].write_bytes(b"")
    out["directory"] = d / "dir.pt"
    out["directory"].mkdir()
    out["fifo"] = d / "pipe.pt"
    os.mkfifo(out["fifo"])
    out["dev_zero"] = d / "zeros.pt"
    out["dev_zero"].symlink_to("/dev/zero")
    out["missing"] = d / "missing.pt"
    return out


def test_payload_is_armed(files: dict[str, Path], tmp_path: Path, record) -> None:
    """Control: the malicious file does run code under torch.load(weights_only=False)."""
    marker = tmp_path / "control"
    path = tmp_path / "control.pt"
    torch.save({"x": _armed(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "the payload ran"
    assert not files["marker"].exists()
    record("control: the same payload under torch.load(weights_only=False)", "torch.load", "code ran (marker written)")


# (file, words the CheckpointError must contain)
LOAD_CASES = [
    ("malicious", "refusing to load checkpoint", "a pickle whose __reduce__ calls exec (zip format)"),
    ("malicious_legacy", "refusing to load checkpoint", "the same, legacy (non-zip) torch format"),
    ("malicious_plain_pickle", "refusing to load checkpoint", "a raw pickle (not a torch file) with exec"),
    ("numpy_inside", "refusing to load checkpoint", "a numpy array in 'extra' (not weights-only data)"),
    ("plain_tensor", "is not an esnet checkpoint", "a plain tensor saved with torch.save"),
    ("version_99", "has format version 99", "a checkpoint of format version 99"),
    ("invalid_config", "holds an invalid config", "a checkpoint whose config says pool 'mean'"),
    ("not_tensors", "'model' must be a state dict of tensors", "'model' holding a list"),
    ("truncated", "truncated or corrupt", "a checkpoint cut at half its size"),
    ("random_bytes", "refusing to load checkpoint", "4 KiB of random bytes"),
    ("json", "refusing to load checkpoint", "a JSON file named .pt"),
    ("empty", "truncated or corrupt", "a 0-byte file"),
    ("directory", "is not a file", "a directory named dir.pt"),
    ("fifo", "is not a file", "a named pipe (FIFO) named pipe.pt"),
    ("dev_zero", "is not a file", "a symlink to /dev/zero"),
    ("missing", "does not exist", "a missing file"),
]


@pytest.mark.parametrize(("name", "words", "label"), LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_load_checkpoint_refuses(files: dict[str, Path], name: str, words: str, label: str, record) -> None:
    """Each bad file: CheckpointError naming the file and the reason; the payload never runs."""
    path = files[name]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert repr(str(path)) in msg and words in msg, msg
    assert "\n" not in msg and len(msg) < 800, msg
    assert "add_safe_globals" not in msg and "weights_only=False" not in msg, "no advice to trust the file"
    assert not files["marker"].exists(), "the pickle's code ran"
    record(label, "load_checkpoint", "refused (CheckpointError)", msg)


@pytest.mark.parametrize(("name", "words"), [
    ("other_architecture", "does not fit the model its config describes (num_classes=3): missing keys: backbone."),
    ("shape_mismatch", "shape mismatches: global_head.classifier.weight: file (3,"),
    ("unknown_backbone", "describes a model that cannot be built: backbone must be one of"),
    ("num_classes_500000", "(num_classes=500000): shape mismatches: global_head.classifier.weight: file (3, 512) "
                           "vs model (500000, 512)"),
    ("num_classes_1e9", "(num_classes=1000000000): shape mismatches: global_head.classifier.weight: file (3, 512)"),
    ("nan_weights", "holds non-finite (NaN or inf) weights in global_head.classifier.weight, "
                    "erase_head.classifier.weight"),
], ids=["other_architecture", "shape_mismatch", "unknown_backbone", "num_classes_500000", "num_classes_1e9",
        "nan_weights"])
def test_load_model_refuses_weights_that_do_not_fit(files: dict[str, Path], name: str, words: str, record) -> None:
    """Weights of another backbone, a classifier of another size, an unknown backbone: named, as CheckpointError."""
    assert load_checkpoint(files[name]).epoch == 1  # a well-formed file ...
    rss = _peak_rss_mib()
    t0 = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        load_model(files[name])  # ... that does not fit the model its config describes
    assert words in str(info.value), str(info.value)
    # checked before the model is built: no memory for a forged classifier, no time
    assert _peak_rss_mib() - rss < 200 and time.monotonic() - t0 < 10
    label = {"other_architecture": "MobileNetV2 weights under a ResNet-18 config",
             "shape_mismatch": "classifier for 3 classes, num_classes says 5",
             "unknown_backbone": "a checkpoint whose config names backbone 'evil'",
             "num_classes_500000": "num_classes 500000 over a 3-class classifier",
             "num_classes_1e9": "num_classes 10**9 over a 3-class classifier (4 TB if built)",
             "nan_weights": "NaN classifier weights"}[name]
    outcome = "refused (CheckpointError) before building the model"
    record(label, "load_model", outcome if name != "unknown_backbone" else "refused (CheckpointError)",
           str(info.value))


def test_other_library_doors(files: dict[str, Path], record) -> None:
    """load_inference (dashboard, CLI) and load_backbone_weights (--weights) refuse the payload too."""
    for door, call in (("load_inference", lambda p: load_inference(p, device="cpu")),
                       ("load_backbone_weights", lambda p: load_backbone_weights(build_model(_cfg().model, 3), p)),
                       ("load_model", load_model)):
        with pytest.raises(CheckpointError, match="refusing to load") as info:
            call(files["malicious"])
        record("a pickle whose __reduce__ calls exec", door, "refused (CheckpointError)", str(info.value))
    assert not files["marker"].exists()
    assert load_model(files["good"])[1].epoch == 1  # the good file still loads


# --- through the command line ---------------------------------------------------------------
@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_market(tmp_path_factory.mktemp("market"))


def _cli_cases(market: Path, bad: Path, tmp: Path) -> dict[str, list[str]]:
    query = tmp / "q.jpg"
    Image.new("RGB", (16, 32), (1, 2, 3)).save(query)
    return {
        "esnet eval": ["eval", "--checkpoint", str(bad), "--dataset", "market1501", "--root", str(market),
                       "--device", "cpu"],
        "esnet embed": ["embed", "--checkpoint", str(bad), "--folder", str(market / "query"), "--out",
                        str(tmp / "f.npz"), "--device", "cpu"],
        "esnet search": ["search", "--checkpoint", str(bad), "--gallery", str(market / "query"), "--query",
                         str(query), "--device", "cpu"],
        "esnet export": ["export", "--checkpoint", str(bad), "--onnx", str(tmp / "m.onnx")],
    }


@pytest.mark.parametrize("which", ["malicious", "truncated", "other_architecture", "num_classes_1e9", "nan_weights"])
def test_cli_commands_refuse(files: dict[str, Path], market: Path, tmp_path: Path, capsys, which: str,
                             record) -> None:
    """eval / embed / search / export with a bad --checkpoint: exit 2, one 'error:' line, nothing written."""
    for door, args in _cli_cases(market, files[which], tmp_path).items():
        if door.split()[1] not in cli.build_parser()._subparsers._group_actions[0].choices:
            pytest.fail(f"{door} is not a command any more; update this test")
        code = cli.main(args)
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (door, code, err)
        assert str(files[which]) in err, err
        assert not (tmp_path / "f.npz").exists() and not (tmp_path / "m.onnx").exists()
        record(f"--checkpoint {which}.pt", door, "exit 2", err.strip())
    assert not files["marker"].exists()


def test_train_resume_with_malicious_last_pt(files: dict[str, Path], tmp_path: Path, record) -> None:
    """The real ``esnet train --resume`` process on a run whose last.pt is malicious: refused, nothing runs."""
    run = tmp_path / "run"
    rundir.write_config(run, _cfg())
    last = rundir.checkpoint_path(run, "last")
    last.parent.mkdir(parents=True)
    last.write_bytes(files["malicious"].read_bytes())
    before = sorted(p.name for p in run.rglob("*"))
    proc = subprocess.run([*esnet_command(), "train", "--out", str(run), "--resume"], capture_output=True,
                          text=True, cwd=REPO, env=child_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith(f"error: refusing to load checkpoint '{last}'") and "\n" not in err, err
    assert "nothing in it was executed" in err and "exec" in err, err
    assert not files["marker"].exists()
    assert sorted(p.name for p in run.rglob("*")) == before  # no status, metrics or lock left behind
    record("last.pt = a pickle whose __reduce__ calls exec", "esnet train --resume (process)", "exit 2", err)


def test_eval_process_with_malicious_checkpoint(files: dict[str, Path], market: Path, record) -> None:
    """The real ``esnet eval`` process: refused with exit 2 and one line; the payload does not run."""
    proc = subprocess.run([*esnet_command(), "eval", "--checkpoint", str(files["malicious"]), "--dataset",
                           "market1501", "--root", str(market), "--device", "cpu"],
                          capture_output=True, text=True, cwd=REPO, env=child_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("error: refusing to load checkpoint") and "\n" not in err, err
    assert not files["marker"].exists()
    record("--checkpoint = a pickle whose __reduce__ calls exec", "esnet eval (process)", "exit 2", err)
