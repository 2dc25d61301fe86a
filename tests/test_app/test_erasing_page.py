"""AppTests of the Erasing inspector: epoch slider, probe grid, block positions, missing images."""
import shutil
from pathlib import Path

import pytest

from app import state
from tests.synthetic import make_run
from tests.test_app.runpages import open_app, plotly_specs, plotly_values, tiny_demo

PAGE = "../pages/erasing.py"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_demo(tmp_path_factory)


def _detail(at) -> str:
    return next(c.value for c in at.caption if c.value.startswith("Epoch "))


def test_epoch_slider_moves_the_erased_block(tmp_path, demo_root, monkeypatch) -> None:
    make_run(tmp_path / "runs" / "esnet-p")
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    assert not at.exception, at.exception
    slider = at.select_slider(key="erasing.epoch")
    assert list(slider.options) == ["0", "1", "2", "3", "4"] and slider.value == 4
    # make_run: probe i's CAM peaks at row (i + epoch) % 8; the 3-row block starts one row above, clipped to [0, 5].
    assert "erased rows 3–5" in _detail(at)
    slider.set_value(1).run()
    assert not at.exception, at.exception
    assert "Epoch 1" in _detail(at) and "erased rows 0–2" in _detail(at)
    at.selectbox(key="erasing.probe").set_value(2).run()
    assert "#2 · id 3" in _detail(at) and "erased rows 2–4" in _detail(at)


def test_grid_shows_every_probe_at_the_epoch(tmp_path, demo_root, monkeypatch) -> None:
    make_run(tmp_path / "runs" / "esnet-p", probes=5)
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    grid = [c for img in at.image for c in img.captions if c.startswith("#")]
    assert len(grid) == 5
    assert grid[0] == "#0 · id 1 · cam 1 · erased rows 3–5"  # 0001_c1s1_...: camera 1 (camid 0)
    assert grid[4] == "#4 · id 5 · cam 1 · erased rows 0–2"  # CAM row (4 + 4) % 8 = 0: the block clips to the top
    assert [img.captions for img in at.image][:3] == [["probe image"], ["CAM at epoch 4"], ["erased block"]]
    assert not at.info  # the run ships its probe images


def test_block_position_histogram_follows_the_epoch(tmp_path, demo_root, monkeypatch) -> None:
    make_run(tmp_path / "runs" / "esnet-p", probes=3)
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    heat, hist = plotly_specs(at)
    assert heat["data"][0]["type"] == "heatmap" and plotly_values(heat["data"][0]["x"]) == [0, 1, 2, 3, 4]
    # Epoch 4: blocks at top 3, 4, 5 of 8 rows, 3 high -> centres 4.5/8, 5.5/8, 6.5/8, one probe each.
    assert plotly_values(hist["data"][0]["x"]) == pytest.approx([4.5 / 8, 5.5 / 8, 6.5 / 8])
    assert plotly_values(hist["data"][0]["y"]) == [1, 1, 1]
    at.select_slider(key="erasing.epoch").set_value(0).run()
    # Epoch 0: CAM rows 0, 1, 2 -> tops 0, 0, 1 -> two probes centred at 1.5/8, one at 2.5/8.
    bars = plotly_specs(at)[1]["data"][0]
    assert plotly_values(bars["x"]) == pytest.approx([1.5 / 8, 2.5 / 8]) and plotly_values(bars["y"]) == [2, 1]


def test_missing_probe_images_are_reported_and_found_under_the_dataset_root(tmp_path, demo_root,
                                                                            monkeypatch) -> None:
    data = tmp_path / "data"
    make_run(tmp_path / "runs" / "no-images", images=False, dataset_root=data)
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    assert not at.exception, at.exception
    assert "Probe images unavailable for 3 of 3" in at.info[0].value
    assert at.image[0].captions == ["image unavailable"]
    at.sidebar.text_input(key=state.KEY_DATASET_ROOT).set_value(str(data)).run()
    assert not at.info, [i.value for i in at.info]
    assert at.image[0].captions == ["probe image"]


def test_refused_dataset_root_is_named(tmp_path, demo_root, monkeypatch) -> None:
    make_run(tmp_path / "runs" / "no-images", images=False, dataset_root=tmp_path / "data")
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    at.sidebar.text_input(key=state.KEY_DATASET_ROOT).set_value(f"{tmp_path}/../../..").run()
    assert not at.exception, at.exception
    assert "'..' may not climb out" in at.sidebar.caption[0].value
    assert "no valid dataset root" in at.info[0].value


def test_run_without_probes_says_so(tmp_path, demo_root, monkeypatch) -> None:
    run = make_run(tmp_path / "runs" / "plain")
    shutil.rmtree(run / "probes")
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    assert not at.exception, at.exception
    assert "has no probe records" in at.info[0].value
    assert not at.image


def test_unreadable_epoch_record_gives_a_warning(tmp_path, demo_root, monkeypatch) -> None:
    run = make_run(tmp_path / "runs" / "esnet-p")
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    (run / "probes" / "epoch_0002.npz").write_bytes(b"not an npz")
    at.select_slider(key="erasing.epoch").set_value(2).run()
    assert not at.exception, at.exception
    assert any("Epoch 2 cannot be shown" in w.value for w in at.warning)


def test_the_note_says_what_the_block_is(tmp_path, demo_root, monkeypatch) -> None:
    from esnet.config import override
    from esnet.engine import rundir

    late = make_run(tmp_path / "runs" / "late")
    rundir.write_config(late, override(rundir.read_config(late), {"model.erase_from_epoch": 3}))
    at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
    assert not at.exception, at.exception
    assert not at.info  # epoch 4: the block shown is the one dropped
    at.select_slider(key="erasing.epoch").set_value(2).run()
    assert [i.value for i in at.info] == [
        "Erasing starts at epoch 3 (model.erase_from_epoch): at epoch 2 the erasing branch still saw the whole "
        "map, so the block shown is where salient erasing would drop it (the CAM's peak)."]

    for erasing, start in (("random", "This run erased a random block"), ("off", "This run has no erasing branch")):
        shutil.rmtree(tmp_path / "runs")
        make_run(tmp_path / "runs" / erasing, erasing=erasing)
        at = open_app(monkeypatch, tmp_path / "runs", demo_root, PAGE)
        assert not at.exception, at.exception
        assert len(at.info) == 1 and at.info[0].value.startswith(start), [i.value for i in at.info]
