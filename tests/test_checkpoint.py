"""Checkpoints: round trip, atomic writes, refusing unsafe / corrupt / foreign files."""
import builtins
import os
import pickle
from pathlib import Path

import pytest
import torch
import torchvision

from esnet import checkpoint as ckpt_mod
from esnet.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    load_backbone_weights,
    load_checkpoint,
    load_model,
    restore_model,
    save_checkpoint,
)
from esnet.config import Config, ModelConfig, override, to_dict
from esnet.model import build_model


def _config(**model) -> Config:
    base = override(Config(), {"model.pool": "avg", "optim.epochs": 7, "optim.milestones": [3, 5], "train.seed": 11})
    return override(base, {f"model.{k}": v for k, v in model.items()})


def _small(cfg: Config, num_classes: int = 3):
    torch.manual_seed(0)
    return build_model(cfg.model, num_classes)


def _save(path, model, cfg, num_classes=3, **kw):
    save_checkpoint(path, model=model, optimizer=None, scheduler=None, epoch=2, config=cfg, num_classes=num_classes, **kw)


class Unloadable:  # module level, so torch.save can pickle it; weights_only refuses it
    pass


class Evil:
    """Unpickling this would create a marker file (builtins.open(marker, 'w'))."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def test_round_trip_restores_parameters_config_and_training_state(tmp_path):
    cfg = _config(backbone="mobilenet_v2", erasing="off")
    model = _small(cfg).train()
    opt = torch.optim.Adam(model.global_head.parameters(), lr=1e-3)  # small state, same format
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 5])
    out = model(torch.randn(2, 3, 64, 32), torch.tensor([0, 2]))
    out.global_logits.sum().backward()
    opt.step()
    sched.step()
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, epoch=4, config=cfg, num_classes=3,
                    extra={"mAP": 0.5, "note": "x", "hist": [1, 2]})
    ck = load_checkpoint(path)
    assert ck.version == CHECKPOINT_VERSION and ck.epoch == 4 and ck.num_classes == 3
    assert ck.config == cfg and to_dict(ck.config) == to_dict(cfg) and ck.config.model.pool == "avg"
    assert ck.extra == {"mAP": 0.5, "note": "x", "hist": [1, 2]} and ck.path == str(path)
    fresh = _small(cfg)
    restore_model(ck, fresh)
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k
    opt2 = torch.optim.Adam(fresh.global_head.parameters(), lr=1e-3)
    opt2.load_state_dict(ck.optimizer_state)
    sched2 = torch.optim.lr_scheduler.MultiStepLR(opt2, milestones=[3, 5])
    sched2.load_state_dict(ck.scheduler_state)
    assert sched2.last_epoch == 1
    assert sorted(os.listdir(path.parent)) == ["last.pt"]


def test_load_model_rebuilds_from_the_stored_config(tmp_path):
    cfg = _config(backbone="mobilenet_v2", erasing="off", pool="max")
    model = _small(cfg, 4)
    _save(tmp_path / "m.pt", model, cfg, num_classes=4)
    loaded, ck = load_model(tmp_path / "m.pt", device="cpu")
    assert not loaded.training and ck.epoch == 2 and loaded.num_classes == 4 and loaded.cfg == cfg.model
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_failed_write_keeps_the_old_file_and_leaves_no_tmp(tmp_path, monkeypatch):
    cfg = _config(backbone="mobilenet_v2", erasing="off")
    model = _small(cfg)
    path = tmp_path / "last.pt"
    _save(path, model, cfg)
    old_bytes = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save(path, model, cfg)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes and os.listdir(tmp_path) == ["last.pt"]
    # A payload weights_only loading would refuse is never written either.
    with pytest.raises(CheckpointError, match="weights_only loading refuses"):
        _save(path, model, cfg, extra={"obj": Unloadable()})
    assert path.read_bytes() == old_bytes and os.listdir(tmp_path) == ["last.pt"]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("how", ["torch.save", "pickle-2", "pickle-4"])
def test_malicious_pickle_is_refused_without_running_code(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"version": 1, "model": {}, "epoch": 0, "config": {}, "num_classes": 1, "x": Evil(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=int(how[-1]))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"refusing to load .*not a plain-weights checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_backbone_weights(build_model(ModelConfig(backbone="mobilenet_v2", erasing="off"), 2), path)
    assert not marker.exists()


def test_truncated_empty_missing_and_foreign_files(tmp_path):
    cfg = _config(backbone="mobilenet_v2", erasing="off")
    good = tmp_path / "good.pt"
    _save(good, _small(cfg), cfg)
    data = good.read_bytes()
    for name, blob in (("half.pt", data[: len(data) // 2]), ("head.pt", data[:3000]), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match=r"not an esnet checkpoint.*got Tensor"):
        load_checkpoint(tmp_path / "tensor.pt")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match=r"not an esnet checkpoint.*\['weight'\]"):
        load_checkpoint(tmp_path / "sd.pt")


def test_newer_version_and_bad_config_are_refused(tmp_path):
    cfg = _config(backbone="mobilenet_v2", erasing="off")
    model = _small(cfg)
    base = {"version": 1, "model": model.state_dict(), "epoch": 0, "config": to_dict(cfg), "num_classes": 3}
    torch.save({**base, "version": 99}, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "v99.pt")
    bad = to_dict(cfg)
    bad["model"]["pool"] = "median"
    torch.save({**base, "config": bad}, tmp_path / "badcfg.pt")
    with pytest.raises(CheckpointError, match="invalid config.*model.pool"):
        load_checkpoint(tmp_path / "badcfg.pt")


def test_other_architecture_or_class_count_names_keys_and_shapes(tmp_path):
    cfg = _config(backbone="mobilenet_v2", erasing="off")
    _save(tmp_path / "mnv2.pt", _small(cfg, 3), cfg)
    ck = load_checkpoint(tmp_path / "mnv2.pt")
    with pytest.raises(CheckpointError, match=r"missing keys: backbone\.conv1.*unexpected keys: backbone\.features"):
        restore_model(ck, build_model(ModelConfig(backbone="resnet18", erasing="off"), 3))
    with pytest.raises(CheckpointError) as err:
        restore_model(ck, build_model(cfg.model, 5))
    assert "global_head.classifier.weight: file (3, 1280) vs model (5, 1280)" in str(err.value)
    assert "mnv2.pt" in str(err.value)


def test_load_backbone_weights_resnet(tmp_path):
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None).state_dict()  # full model, with fc.*
    old_style = {k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}
    torch.save(old_style, tmp_path / "r18.pth")
    model = build_model(ModelConfig(backbone="resnet18", erasing="off"), 3)
    report = load_backbone_weights(model, tmp_path / "r18.pth")
    assert report.ignored == ("fc.weight", "fc.bias") and not report.remapped and report.backbone == "resnet18"
    for k, v in model.backbone.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, source[k]), k
    torch.save({k: v for k, v in source.items() if not k.startswith("layer4.1.")}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: layer4\.1\.conv1\.weight"):
        load_backbone_weights(model, tmp_path / "partial.pth")
    wrong = dict(source, **{"conv1.weight": torch.zeros(64, 3, 3, 3), "layer5.0.weight": torch.zeros(1)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys: layer5\.0\.weight; shape mismatches: conv1\.weight: "
                       r"file \(64, 3, 3, 3\) vs model \(64, 3, 7, 7\)"):
        load_backbone_weights(model, tmp_path / "wrong.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="must hold a state dict of tensors"):
        load_backbone_weights(model, tmp_path / "list.pth")


def test_save_requires_a_config(tmp_path):
    model = _small(_config(backbone="mobilenet_v2", erasing="off"))
    with pytest.raises(CheckpointError, match="config must be an esnet.config.Config"):
        save_checkpoint(tmp_path / "x.pt", model=model, optimizer=None, scheduler=None, epoch=0,
                        config={"model": {}}, num_classes=3)
    assert ckpt_mod.CHECKPOINT_VERSION == 1 and os.listdir(tmp_path) == []


def test_old_raw_p_checkpoints_load_with_the_same_effective_p(tmp_path):
    # Before p = 1 + softplus(q), checkpoints stored the raw exponent as '*.pool.p' (clamped to >= 1 in use).
    cfg = override(_config(backbone="resnet18", erasing="salient"), {"model.pool": "p"})
    model = _small(cfg)
    state = model.state_dict()
    for branch, raw in (("global_head", torch.tensor([2.7])), ("erase_head", torch.tensor([0.8]))):
        del state[f"{branch}.pool.q"]
        state[f"{branch}.pool.p"] = raw
    save_checkpoint(tmp_path / "old.pt", model=model, optimizer=None, scheduler=None, epoch=2, config=cfg,
                    num_classes=3)
    raw_ckpt = torch.load(tmp_path / "old.pt", weights_only=True)
    raw_ckpt["model"] = state
    torch.save(raw_ckpt, tmp_path / "old.pt")
    ck = load_checkpoint(tmp_path / "old.pt")
    assert ckpt_mod.legacy_p_keys(ck.model_state) == ["global_head.pool.p", "erase_head.pool.p"]
    fresh = _small(cfg)
    restore_model(ck, fresh)
    p = fresh.learned_p()
    assert p["global"] == pytest.approx(2.7, abs=1e-6)
    assert p["erase"] == pytest.approx(1.0 + 1e-6, abs=1e-7)  # an old p below 1 was used as 1
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in state.items() if "pool" not in k)
    loaded, _ = load_model(tmp_path / "old.pt")
    assert loaded.learned_p() == p


def test_committed_demo_checkpoint_keeps_its_learned_p():
    found = sorted((Path(__file__).resolve().parents[1] / "assets/demo_runs/esnet-p/checkpoints").glob("*.pt"))
    if not found:
        pytest.skip("no committed esnet-p demo checkpoint")
    path = found[0]
    raw = torch.load(path, weights_only=True, map_location="cpu")["model"]
    stored = {k.split("_head")[0]: float(v) for k, v in raw.items() if k.endswith(".pool.p")}
    if not stored:
        pytest.skip("the demo checkpoint was rebuilt in the softplus format (no raw pool.p keys)")
    model, _ = load_model(path)
    assert model.learned_p() == pytest.approx(stored, abs=1e-6) and set(stored) == {"global", "erase"}


def test_release_checkpoint_is_small_fp16_and_embeds_like_the_source(tmp_path):
    cfg = _config(backbone="mobilenet_v2", erasing="salient")
    model = _small(cfg, num_classes=40)
    with torch.no_grad():  # trained-looking weights: a classifier far from its N(0, 0.001) init
        model.global_head.classifier.weight.normal_(0.0, 0.05)
        model.erase_head.classifier.weight.normal_(0.0, 0.05)
    src = tmp_path / "last.pt"
    _save(src, model, cfg, num_classes=40)
    dst = ckpt_mod.write_release_checkpoint(src, tmp_path / "release" / "last.pt")

    raw = torch.load(dst, map_location="cpu", weights_only=True)
    assert raw["optimizer"] is None and raw["extra"]["release"] is True
    assert "erase_head.classifier.weight" not in raw["model"]  # training-only, dropped
    assert "global_head.classifier.weight" not in raw["model"]  # packed as int8 rows
    floats = [v for v in raw["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert dst.stat().st_size < 0.45 * src.stat().st_size
    assert not list(dst.parent.glob("*.tmp"))

    loaded, ck = load_model(dst)
    model.eval()
    x = torch.randn(4, 3, 64, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x).embedding, loaded(x).embedding
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.9999
    w0, w1 = model.global_head.classifier.weight.detach(), loaded.global_head.classifier.weight.detach()
    assert float((w0 - w1).abs().max()) <= float(w0.abs().amax(dim=1).max()) / 127.0  # int8 rounding, per row
    assert float((w0 - w1).abs().max()) > 0.0  # it really was packed
    assert torch.count_nonzero(loaded.erase_head.classifier.weight) == 0
    assert ck.num_classes == 40


@pytest.mark.parametrize("packed", [
    {"int8": {"backbone.features.0.0.weight": {"q": torch.zeros(2, 2, dtype=torch.int8), "scale": torch.ones(2)}}},
    {"int8": {"global_head.classifier.weight": {"q": torch.zeros(2, 2), "scale": torch.ones(2)}}},
    {"dropped": ["global_head.bnneck.weight"]},
    {"other": 1},
])
def test_malformed_release_packing_is_refused_by_name(tmp_path, packed):
    cfg = _config(backbone="mobilenet_v2", erasing="off")
    model = _small(cfg)
    state = {k: v for k, v in model.state_dict().items() if k != "global_head.classifier.weight"}
    payload = {"version": CHECKPOINT_VERSION, "model": state, "epoch": 1, "config": to_dict(cfg), "num_classes": 3,
               "extra": {"packed": packed}}
    torch.save(payload, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="packed"):
        load_checkpoint(tmp_path / "x.pt")


@pytest.mark.parametrize("extra", [5, "xy", [1, 2], torch.zeros(2)])
def test_extra_that_is_not_a_dict_is_refused_as_a_checkpoint_error(tmp_path, extra):
    # An untrusted file's 'extra' is read before the model: TypeError / ValueError would escape
    # the CheckpointError the dashboard and the CLI report.
    cfg = _config(backbone="mobilenet_v2", erasing="off")
    payload = {"version": CHECKPOINT_VERSION, "model": _small(cfg).state_dict(), "epoch": 1, "config": to_dict(cfg),
               "num_classes": 3, "extra": extra}
    torch.save(payload, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="extra"):
        load_checkpoint(tmp_path / "x.pt")


def test_cli_release_writes_the_small_copy_and_refuses_a_missing_run(tmp_path, capsys):
    from esnet.cli import main

    cfg = _config(backbone="mobilenet_v2", erasing="off")
    run = tmp_path / "run"
    _save(run / "checkpoints" / "last.pt", _small(cfg), cfg)
    assert main(["release", "--checkpoint", str(run), "--out", str(tmp_path / "out" / "last.pt")]) == 0
    assert "float16" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "out" / "last.pt").extra["release"] is True
    assert main(["release", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o.pt")]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()
