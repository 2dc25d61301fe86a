"""app.viz builders of the run-centred pages: pure functions of frames and arrays."""
import numpy as np
import pandas as pd
import pytest

from app import viz


def test_cam_overlay_scales_to_the_display_height_and_outlines_the_block() -> None:
    image = np.zeros((64, 32, 3), dtype=np.uint8)
    heat = np.zeros((64, 32), dtype=np.float32)
    out = viz.cam_overlay(image, heat, (16, 0, 16, 32), height=128)
    assert out.shape == (128, 64, 3) and out.dtype == np.uint8
    assert (out[32, 10] == viz.BOX_COLOUR).all()  # top edge of the block, scaled x2
    assert not (out[0, 10] == viz.BOX_COLOUR).all()
    hot = viz.cam_overlay(image, np.ones_like(heat), None, height=64, alpha=1.0)
    assert hot[..., 0].mean() > 100 and hot[..., 2].mean() < 50  # jet at 1.0 is red


def test_cam_overlay_without_image_uses_grey_and_checks_shapes() -> None:
    out = viz.cam_overlay(None, np.zeros((8, 4), dtype=np.float32), alpha=0.0, height=8)
    assert (out == 96).all()
    with pytest.raises(ValueError, match="differ in size"):
        viz.cam_overlay(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 4), np.float32))


def test_erased_view_fills_the_block_grey() -> None:
    image = np.full((16, 8, 3), 200, dtype=np.uint8)
    out = viz.erased_view(image, (4, 0, 4, 8), height=16)
    assert (out[6, 4] == viz.ERASED_GREY).all() and (out[12, 4] == 200).all()
    assert viz.erased_view(None, (0, 0, 2, 2), shape=(16, 8), height=16).shape == (16, 8, 3)


def test_metric_figures_tolerate_empty_and_partial_frames() -> None:
    empty = pd.DataFrame({"epoch": pd.Series(dtype="int64")})
    for build in (viz.loss_figure, viz.accuracy_figure, viz.eval_figure, viz.lr_figure, viz.p_figure,
                  viz.epoch_time_figure):
        assert build(empty).layout.annotations, build.__name__
    frame = pd.DataFrame({"epoch": [1, 2], "eval.mAP": [np.nan, 0.5], "loss.total": [2.0, 1.0]})
    ev = viz.eval_figure(frame)
    assert list(ev.data[0].x) == [2] and list(ev.data[0].y) == [50.0]
    assert [t.name for t in viz.loss_figure(frame).data] == ["total"]


def test_block_position_heatmap_counts_probes_per_epoch_and_centre() -> None:
    pos = pd.DataFrame({"epoch": [0, 0, 1], "probe": [0, 1, 0], "top": [0, 0, 6], "height": [2, 2, 2],
                        "center": [0.125, 0.125, 0.875]})
    heat = viz.block_position_heatmap(pos).data[0]
    assert list(heat.y) == [0.125, 0.875] and list(heat.x) == [0, 1]
    assert np.asarray(heat.z).tolist() == [[2, 0], [0, 1]]
    bars = viz.block_position_histogram(pos, 0).data[0]
    assert list(bars.x) == [0.125] and list(bars.y) == [2]
    assert viz.block_position_histogram(pos, 5).layout.annotations  # no record for that epoch


def test_cmc_figure_is_one_plot_for_a_cmc_frame_and_for_named_curves() -> None:
    from app import viz_model

    assert viz_model.cmc_figure is viz.cmc_figure
    frame = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 3, "rank": [3, 1, 2] * 2, "cmc": [0.9, 0.5, 0.7, 1.0, 0.8, 0.9]})
    from_frame = viz.cmc_figure(frame, max_rank=2)
    from_dict = viz.cmc_figure({"a": np.array([0.5, 0.7, 0.9]), "b": np.array([0.8, 0.9, 1.0])}, max_rank=2)
    for f, d in zip(from_frame.data, from_dict.data):
        assert f.name == d.name and list(f.x) == list(d.x) == [1, 2] and np.allclose(f.y, d.y)
    assert np.allclose(from_frame.data[0].y, [50.0, 70.0])  # percent, rank order
    assert from_frame.layout.title.text == "CMC (best epoch)" and from_dict.layout.title.text is None
    empty = viz.cmc_figure(frame.iloc[0:0])
    assert not empty.data and "no evaluated epoch" in empty.layout.annotations[0].text


def test_p_trajectories_skips_a_branch_without_finite_values() -> None:
    # metrics.jsonl may hold JSON's NaN literal (json.loads accepts it): the column exists, all NaN
    nan_only = pd.DataFrame({"epoch": [1, 2], "p.global": [np.nan, np.nan]})
    fig = viz.p_trajectories({"broken": nan_only})
    assert not fig.data  # the "no P-pooling run" figure, not a crash
    ok = pd.DataFrame({"epoch": [1, 2], "p.global": [3.0, 3.5]})
    fig = viz.p_trajectories({"broken": nan_only, "ok": ok})
    assert [t.name for t in fig.data] == ["ok · global"]
    assert fig.layout.yaxis.range[1] == pytest.approx(3.85)


def test_p_trajectories_colour_per_run_and_dash_per_branch() -> None:
    two = pd.DataFrame({"epoch": [1, 2], "p.global": [3.0, 2.8], "p.erase": [3.0, 2.5]})
    runs = {f"run{i}": two for i in range(12)}  # more runs than one ten-colour palette
    runs["avg"] = pd.DataFrame({"epoch": [1, 2], "mAP": [0.1, 0.2]})  # no p: left out, takes no colour
    fig = viz.p_trajectories(runs)
    assert len(fig.data) == 24
    by_run: dict[str, set[str]] = {}
    for t in fig.data:
        run, branch = t.name.split(" · ")
        assert t.line.color == t.marker.color and t.legendgroup == run
        assert t.line.dash == {"global": "solid", "erase": "dash"}[branch]
        by_run.setdefault(run, set()).add(t.line.color)
    assert all(len(c) == 1 for c in by_run.values())  # both branches of a run share its colour
    assert len({c for cs in by_run.values() for c in cs}) == 12  # and no two runs share one
