"""AppTest of the Embedding explorer on the demo checkpoint and demo data."""
import json

import numpy as np
import pytest

from app import model_views
from esnet import api
from tests.test_app.model_pages import demo_env, errors, image_captions, open_page
from tests.test_app.runpages import plotly_values

__all__ = ["demo_env"]  # the fixture, used by name


def _points(at) -> np.ndarray:
    """(N, 2) x, y of every data point in the page's scatter (the 'selected' ring excluded)."""
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    xy = [np.column_stack([plotly_values(t["x"]), plotly_values(t["y"])])
          for t in fig["data"] if t.get("name") != "selected"]
    return np.concatenate(xy)


def test_method_radio_changes_the_projection(demo_env) -> None:
    at = open_page("embeddings", state={"emb_method": "PCA"})
    assert not at.exception, at.exception
    assert not errors(at)
    pca = _points(at)
    assert pca.shape == (1020, 2)  # 180 query + 840 gallery
    assert any("1020 images (180 query, 840 gallery)" in c.value for c in at.caption)
    at.radio(key="emb_method").set_value("t-SNE").run()
    assert not at.exception, at.exception
    tsne = _points(at)
    assert tsne.shape == (1020, 2)
    assert not np.allclose(np.sort(pca[:, 0]), np.sort(tsne[:, 0]))


def test_umap_default_warms_up_and_projects(demo_env) -> None:
    at = open_page("embeddings")
    assert not at.exception, at.exception
    assert at.radio(key="emb_method").value == "UMAP"
    assert _points(at).shape == (1020, 2)
    assert np.isfinite(_points(at)).all()


def test_picked_image_and_its_neighbours(demo_env) -> None:
    at = open_page("embeddings", state={"emb_method": "PCA"})
    at.number_input(key="emb_row").set_value(200).run()  # row 200 = gallery image 20
    assert not at.exception, at.exception
    rep = api.evaluate_checkpoint(demo_env.run_dir, "demo", demo_env.data_root, cache_dir=demo_env.cache_dir)
    nn = api.nearest_neighbours(rep, 200, k=8)
    captions = image_captions(at)
    assert len(captions) == 1 + 8
    assert captions[0].startswith(f"picked · id {rep.gallery.pids[20]}")
    for caption, (_, n) in zip(captions[1:], nn.iterrows()):
        assert caption.startswith(f"d={n['distance']:.3f} · id {n['pid']}")
    heading = next(h.value for h in at.subheader if h.value.startswith("Row 200"))
    assert f"({int((nn['pid'] == rep.gallery.pids[20]).sum())} share its identity)" in heading


def test_colour_by_camera_groups_points_by_camera(demo_env) -> None:
    at = open_page("embeddings", state={"emb_method": "PCA", "emb_colour": "camera"})
    assert not at.exception, at.exception
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    groups = {t["legendgroup"].split(",")[0] for t in fig["data"] if t.get("name") != "selected"}
    # the legend names the cameras of the file names (demo c1..c6), not the 0-based camids
    named = {p.name.split("_c")[1][0] for split in ("query", "bounding_box_test")
             for p in (demo_env.data_root / split).iterdir()}
    assert groups == named and "0" not in groups and len(groups) >= 2


@pytest.mark.parametrize("event, row", [
    ({"selection": {"points": [{"curve_number": 3, "point_index": 7, "customdata": [412, 5, 1, "query", "a.jpg"]}],
                    "point_indices": [7], "box": [], "lasso": []}}, 412),
    ({"selection": {"points": [], "point_indices": [], "box": [], "lasso": []}}, None),
    (None, None),
])
def test_picked_row_reads_the_selection_event(event, row) -> None:
    assert model_views.picked_row(event) == row
