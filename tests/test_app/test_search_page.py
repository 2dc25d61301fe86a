"""Search page: its core (``app.model_views.search_uploads``, bytes in) and the page on the demo run."""
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from app import cache, model_views
from esnet import api
from tests.test_app.model_pages import (broken_run, demo_env, errors, image_captions, mismatched_checkpoint,
                                        open_page, select_run)

__all__ = ["demo_env"]  # the fixture, used by name


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression-bomb header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


BAD_UPLOADS = {
    "corrupt.jpg": b"\xff\xd8\xff\xe0 this JPEG stops here",
    "notes.png": b"just some text, not an image\n",
    "huge.png": _png_claiming(100_000, 100_000),
}


@pytest.fixture(scope="module")
def demo_query(demo_env) -> tuple[str, bytes, int]:
    """(file name, bytes, pid) of the first demo query image."""
    rep = api.evaluate_checkpoint(demo_env.run_dir, "demo", demo_env.data_root, cache_dir=demo_env.cache_dir)
    path = rep.query.paths[0]
    with open(path, "rb") as f:
        return path.rsplit("/", 1)[-1], f.read(), int(rep.query.pids[0])


@pytest.fixture(scope="module")
def model(demo_env):
    inf = api.load_inference(demo_env.run_dir)
    gallery = api.load_gallery(inf, dataset="demo", root=demo_env.data_root, cache_dir=demo_env.cache_dir)
    return inf, gallery


def test_search_uploads_ranks_the_gallery_and_reports_bad_files(model, demo_query) -> None:
    inf, gallery = model
    name, data, pid = demo_query
    files = [(name, data), *BAD_UPLOADS.items()]
    out = model_views.search_uploads(inf, gallery, files, topk=5)
    assert [q.name for q in out.queries] == [name]
    assert len(out.errors) == 3
    for bad, message in zip(BAD_UPLOADS, out.errors):
        assert bad in message
    assert "pixels" in out.errors[2]  # the huge header is refused before decoding
    hits = out.result.to_frame(0)
    assert list(hits["rank"]) == [1, 2, 3, 4, 5]
    assert hits["distance"].is_monotonic_increasing
    assert hits["pid"].iloc[0] == pid  # the demo model finds the query's identity first


def test_search_uploads_with_nothing_readable(model) -> None:
    inf, gallery = model
    out = model_views.search_uploads(inf, gallery, list(BAD_UPLOADS.items()))
    assert out.queries == () and out.result is None and len(out.errors) == 3


def test_empty_page_names_the_model_and_offers_calibrated_thresholds(demo_env) -> None:
    at = open_page("search")
    assert not at.exception, at.exception
    assert not errors(at)
    assert any("Upload one or more query images (up to 20 MB each)" in i.value for i in at.info)
    # the page says what answers: a demo model trained on synthetic figures, and which gallery it searches
    warning = at.warning[0].value
    assert "synthetic demo data" in warning and "60 identities" in warning and "real people" in warning
    rep = api.evaluate_checkpoint(demo_env.run_dir, "demo", demo_env.data_root, cache_dir=demo_env.cache_dir)
    assert f"{rep.num_gallery} images" in warning
    point = next(r for r in at.radio if r.label.startswith("Same person"))
    assert point.value == "FPR 1%"
    t = rep.verification.threshold_at_fpr[0.01]
    assert any(f"Threshold **{t:.3f}**" in c.value and f"{100 * rep.verification.tpr_at_fpr[0.01]:.1f}%" in c.value
               for c in at.caption)


def test_operating_points_are_read_off_the_roc(demo_env) -> None:
    rep = api.evaluate_checkpoint(demo_env.run_dir, "demo", demo_env.data_root, cache_dir=demo_env.cache_dir)
    points = api.operating_points(rep)
    assert list(points["point"]) == ["FPR 0.1%", "FPR 1%", "FPR 10%", "max TPR - FPR"]
    v = rep.verification
    for f in (0.001, 0.01, 0.1):  # each threshold accepts at most that share of different-person pairs
        row = points.loc[points["target_fpr"] == f].iloc[0]
        i = int(np.searchsorted(v.thresholds, row["threshold"], side="right")) - 1
        assert v.fpr[i] <= f and row["tpr"] == v.tpr[i]
        assert row["fpr"] == v.fpr[i]  # the FPR reached at that threshold, not the target
    assert points["threshold"].iloc[:3].is_monotonic_increasing


def test_uploaded_query_shows_ranked_hits_with_saliency(demo_env, demo_query) -> None:
    name, data, pid = demo_query
    at = open_page("search")
    at.file_uploader(key="search_files").set_value([(name, data, "image/jpeg")]).run()
    assert not at.exception, at.exception
    assert not errors(at)
    captions = image_captions(at)
    assert captions[0] == name and captions[1] == "query similarity vs #1"
    hits = [c for c in captions[2:] if c.startswith("#")]
    assert len(hits) == 8  # default top-k
    assert f"id {pid}" in hits[0]
    assert "same person" in hits[0] and any("within the threshold" in s.value for s in at.success)
    for choice in ("own CAM", "Grad-CAM"):
        at.radio(key="search_saliency").set_value(choice).run()
        assert not at.exception, at.exception
        assert image_captions(at)[1] == f"query {choice}"


def test_bad_uploads_are_errors_on_the_page(demo_env, demo_query) -> None:
    name, data, _ = demo_query
    at = open_page("search")
    files = [(n, b, "image/png") for n, b in BAD_UPLOADS.items()] + [(name, data, "image/jpeg")]
    at.file_uploader(key="search_files").set_value(files).run()
    assert not at.exception, at.exception
    messages = errors(at)
    assert len(messages) == 3
    for bad, message in zip(BAD_UPLOADS, messages):
        assert message.startswith("Skipped an upload") and bad in message
    assert image_captions(at)[0] == name  # the good upload is still searched


@pytest.mark.parametrize("kind", ["corrupt", "mismatched"])
def test_a_bad_checkpoint_is_an_error_on_the_page(demo_env, kind) -> None:
    runs = demo_env.runs_dir.parent / f"broken_search_{kind}"
    data = b"\x80\x02 not a torch file" if kind == "corrupt" else mismatched_checkpoint(demo_env.run_dir)
    broken_run(runs, "bad", data)
    at = open_page("search", state=select_run(runs, "bad"))
    assert not at.exception, at.exception
    assert errors(at) and "Cannot load the checkpoint of run 'bad'" in errors(at)[0]
    if kind == "mismatched":
        assert "does not fit" in errors(at)[0]


def test_cache_keys_follow_the_checkpoint_file(demo_env, tmp_path) -> None:
    path, mtimes = cache.checkpoint_key(demo_env.run_dir)
    assert path == str(demo_env.run_dir) and mtimes
    ckpt = broken_run(tmp_path, "r") / "checkpoints" / "last.pt"
    before = cache.checkpoint_key(ckpt.parent.parent)
    import os

    os.utime(ckpt, (1, 1))
    assert cache.checkpoint_key(ckpt.parent.parent) != before


def test_no_match_in_this_gallery(demo_env) -> None:
    """A query unlike every gallery image: nothing within the threshold, and the page says so."""
    from PIL import Image
    import io

    buf = io.BytesIO()
    Image.new("RGB", (64, 128), (0, 255, 0)).save(buf, format="PNG")  # a flat green card, no person
    at = open_page("search")
    at.file_uploader(key="search_files").set_value([("green.png", buf.getvalue(), "image/png")]).run()
    assert not at.exception, at.exception
    assert any("No match in this gallery" in w.value for w in at.warning)
    assert all("different" in c for c in image_captions(at)[2:])


def test_a_real_market_photo_is_not_the_same_person_as_any_demo_figure(demo_env) -> None:
    """The demo model is synthetic: a real Market-1501 query must not be called "same person" in its gallery."""
    import os

    market = os.environ.get("ESNET_MARKET1501")
    photo = Path(market or "/nonexistent") / "query" / "0717_c6s2_054493_00.jpg"
    if not photo.is_file():
        pytest.skip("needs Market-1501 (make test unpacks ../shared/data into .cache/market1501)")
    at = open_page("search")
    at.file_uploader(key="search_files").set_value([(photo.name, photo.read_bytes(), "image/jpeg")]).run()
    assert not at.exception, at.exception
    hits = [c for c in image_captions(at)[2:] if c.startswith("#")]
    assert hits and all("different" in c for c in hits)
    assert any("No match in this gallery" in w.value for w in at.warning)
