import dataclasses
import json

import pytest

from esnet import config as C


def test_defaults_are_bot_and_esnet_paper_values() -> None:
    cfg = C.Config()
    assert cfg.optim.milestones == (40, 70) and cfg.optim.epochs == 120
    assert cfg.optim.warmup_epochs == 10
    assert cfg.optim.lr == 1e-3  # not BoT's 3.5e-4: the Market pilots (README), see config.DEFAULT_LR
    assert (cfg.data.height, cfg.data.width) == (128, 64)  # README: MobileNetV2's CPU size, not the paper's 256x128
    assert cfg.model.pool == "p" and cfg.model.p_init == 3.0 and cfg.model.erasing == "salient"
    assert cfg.model.erase_height == pytest.approx(1 / 3) and cfg.model.erase_width == 1.0
    assert cfg.loss.label_smoothing == 0.1 and cfg.loss.triplet_margin == 0.3


@pytest.mark.parametrize(("epochs", "expected"), [
    (120, (10, (40, 70))), (20, (2, (7, 12))), (8, (1, (3, 5))), (3, (0, (1, 2))), (2, (0, (1,))), (1, (0, ())),
])
def test_scaled_schedule_keeps_bots_fractions(epochs: int, expected: tuple) -> None:
    assert C.scaled_schedule(epochs) == expected


def test_scaled_schedule_refuses_bad_epochs() -> None:
    with pytest.raises(ValueError, match=r"epochs must be an integer >= 1, got 0"):
        C.scaled_schedule(0)


def test_describe_schedule_names_lr_warmup_and_decays() -> None:
    optim = C.OptimConfig(epochs=3, warmup_epochs=0, milestones=(1, 2))
    assert C.describe_schedule(optim) == "lr 0.001, warm-up 0 epochs, x0.1 at epochs 1, 2 of 3"
    assert C.describe_schedule(C.OptimConfig(epochs=4, warmup_epochs=1, milestones=())).endswith(
        "warm-up 1 epoch, x0.1 at epochs none of 4")


def test_vehicle_preset_uses_half_square_block() -> None:
    v = C.preset("vehicle")
    assert (v.model.erase_height, v.model.erase_width) == (0.5, 0.5)
    with pytest.raises(ValueError, match=r"preset must be one of \['person', 'vehicle'\], got 'cat'"):
        C.preset("cat")


def test_round_trip_through_json(tmp_path) -> None:
    cfg = C.override(C.Config(), {"model.pool": "avg", "optim.milestones": "5,8", "train.amp": "false"})
    path = tmp_path / "c.json"
    path.write_text(C.dumps(cfg))
    back = C.load(path)
    assert back == cfg
    assert back.optim.milestones == (5, 8) and back.train.amp is False
    assert json.loads(path.read_text())["model"]["pool"] == "avg"


def test_partial_file_fills_defaults(tmp_path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"optim": {"epochs": 3}}')
    cfg = C.load(path)
    assert cfg.optim.epochs == 3 and cfg.model == C.ModelConfig()


@pytest.mark.parametrize(
    "updates, message",
    [
        ({"model.pool": "median"}, r"model.pool must be one of \['p', 'avg', 'max'\], got 'median'"),
        ({"model.erase_height": 0}, r"model.erase_height must be in \(0, 1\], got 0.0"),
        ({"model.erase_width": 1.5}, r"model.erase_width must be in \(0, 1\], got 1.5"),
        ({"model.p_init": 0.5}, r"model.p_init must be a finite number >= 1, got 0.5"),
        ({"data.batch_size": 30}, r"data.batch_size must be a multiple of data.num_instances \(4\)"),
        ({"optim.milestones": "70,40"}, r"optim.milestones must be increasing positive epochs"),
        ({"optim.epochs": "ten"}, r"optim.epochs must be an integer, got 'ten'"),
        ({"optim.epochs": 2.5}, r"optim.epochs must be an integer, got 2.5"),
        ({"train.device": "tpu"}, r"train.device must be one of \['auto', 'cpu', 'cuda'\], got 'tpu'"),
        ({"train.amp": "maybe"}, r"train.amp must be true or false, got 'maybe'"),
        ({"model.erase_from_epoch": 0}, r"model.erase_from_epoch must be an epoch >= 1, got 0"),
        ({"model.erase_from_epoch": 121}, r"model.erase_from_epoch 121 is after the last epoch \(optim.epochs 120\)"),
        ({"model.colour": 1}, r"unknown key 'model.colour'"),
        ({"nothing": 1}, r"override key must be 'section.key'"),
    ],
)
def test_bad_values_name_the_key_and_rule(updates, message) -> None:
    with pytest.raises(ValueError, match=message):
        C.override(C.Config(), updates)


def test_unknown_section_and_key_in_file(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"unknown config section\(s\) \['modle'\]"):
        C.from_dict({"modle": {}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['loss.margin'\]"):
        C.from_dict({"loss": {"margin": 0.3}})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"is not valid JSON"):
        C.load(bad)
    with pytest.raises(ValueError, match=r"cannot read config file"):
        C.load(tmp_path / "missing.json")


def test_frozen_and_erasing_off_normalises_test_feature() -> None:
    cfg = C.Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.pool = "avg"  # type: ignore[misc]
    off = C.override(cfg, {"model.erasing": "off"})
    assert off.model.test_feature == "global"
    with pytest.raises(ValueError, match=r"model.test_feature 'erase' needs an erasing branch"):
        C.override(cfg, {"model.erasing": "off", "model.test_feature": "erase"})


def test_erase_from_epoch_is_free_without_erasing() -> None:
    cfg = C.override(C.Config(), {"model.erasing": "off", "model.erase_from_epoch": 500})
    assert cfg.model.erase_from_epoch == 500  # no erasing branch: nothing to start
    assert C.Config().model.erase_from_epoch == 1  # ES-Net erases from the first epoch
