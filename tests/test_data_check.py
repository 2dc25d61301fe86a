"""Dataset validator: every rule, its message, the report table and the CLI."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from esnet.data.check import RULES, CheckReport, Problem, SplitStats, check_dataset, verify_image
from esnet.data.types import ReidData, Sample


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 8), (10, 200, 60)).save(buf, format="JPEG")
    return buf.getvalue()


JPEG = _jpeg_bytes()


def _data(tmp_path: Path, rows: dict[str, list[tuple[str, int, int]]], protocol: str = "standard",
          write: bool = True) -> ReidData:
    """rows: split -> [(file name, pid, camid)]; files are written under tmp_path/<split>/."""
    splits = {}
    for split in ("train", "query", "gallery"):
        samples = []
        for name, pid, cam in rows.get(split, []):
            path = tmp_path / split / name
            if write and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(JPEG)
            samples.append(Sample(str(path), pid, cam, split))
        splits[split] = tuple(samples)
    return ReidData(name="toy", root=str(tmp_path), protocol=protocol, notes=("loader note",), **splits)


GOOD = {
    "train": [("t1.jpg", 1, 0), ("t2.jpg", 1, 1), ("t3.jpg", 2, 0)],
    "query": [("q1.jpg", 5, 0), ("q2.jpg", 6, 1)],
    "gallery": [("g1.jpg", 5, 1), ("g2.jpg", 6, 2), ("g3.jpg", 6, 0), ("g4.jpg", 0, 2)],
}


def _rules(report: CheckReport) -> list[str]:
    return [p.rule for p in report.problems]


def test_clean_dataset_stats_and_table(tmp_path):
    report = check_dataset(_data(tmp_path, GOOD))
    assert report.ok and report.problems == []
    assert report.stats == {"train": SplitStats(2, 3, 2), "query": SplitStats(2, 2, 2),
                            "gallery": SplitStats(3, 4, 3)}
    assert report.images_checked == 9
    text = report.format()
    assert f"dataset toy at {tmp_path}" in text
    lines = text.splitlines()
    assert "split         ids     images  cameras" in lines
    assert "train           2          3        2" in lines
    assert "query           2          2        2" in lines
    assert "gallery         3          4        3" in lines
    assert "  - loader note" in lines
    assert any(line.startswith("  - opened and decoded 9 images in ") for line in lines)
    assert lines[-1] == "ok: no problems found"


def test_missing_split_query_fails_but_empty_train_is_a_note(tmp_path):
    rows = {"train": [], "query": [], "gallery": GOOD["gallery"]}
    report = check_dataset(_data(tmp_path, rows), verify_images=False)
    assert not report.ok
    assert report.problems == [Problem("missing-split", str(tmp_path),
                                       "query split is empty: evaluation needs query and gallery images")]
    assert "train split is empty: fine for evaluation only, training needs it" in report.notes
    assert "image check skipped" in report.notes
    assert report.format().splitlines()[-1] == (
        f"missing-split: {tmp_path}: query split is empty: evaluation needs query and gallery images")

    only_train_missing = check_dataset(_data(tmp_path, {**GOOD, "train": []}), verify_images=False)
    assert only_train_missing.ok


def test_unreadable_images_name_file_and_reason(tmp_path):
    data = _data(tmp_path, GOOD)
    empty = tmp_path / "gallery" / "g2.jpg"
    empty.write_bytes(b"")
    garbage = tmp_path / "query" / "q1.jpg"
    garbage.write_bytes(b"this is not a jpeg at all")
    truncated = tmp_path / "train" / "t2.jpg"
    truncated.write_bytes(JPEG[: len(JPEG) // 2])
    (tmp_path / "train" / "t3.jpg").unlink()
    report = check_dataset(data, workers=1)
    assert _rules(report) == ["unreadable-image"] * 4
    by_path = {p.path: p.message for p in report.problems}
    # the same reasons as every loader gives (esnet.data.images.load_rgb)
    assert by_path[str(empty)] == "cannot read image: file is empty (0 bytes)"
    assert by_path[str(garbage)].startswith("cannot read image: not an image: no known image format")
    assert by_path[str(truncated)].startswith("cannot read image: corrupt image header: Truncated File Read")
    assert by_path[str(tmp_path / "train" / "t3.jpg")] == "cannot read image: file does not exist"
    assert f"unreadable-image: {empty}: cannot read image: file is empty (0 bytes)" in report.format()
    # the thread pool gives the same answer
    assert check_dataset(data, workers=2).problems == report.problems


def test_verify_image_accepts_png_and_bmp(tmp_path):
    for ext in ("png", "bmp"):
        path = tmp_path / f"x.{ext}"
        Image.new("L", (4, 8), 7).save(path)
        assert verify_image(str(path)) is None


def test_query_id_not_in_gallery_lists_at_most_ten(tmp_path):
    rows = {"query": [(f"q{i}.jpg", i, 0) for i in range(1, 14)], "gallery": [("g.jpg", 1, 1)]}
    report = check_dataset(_data(tmp_path, rows), verify_images=False)
    assert report.problems == [Problem(
        "query-id-not-in-gallery", str(tmp_path),
        "12 query id(s) have no gallery image, so those queries cannot be evaluated: "
        "2, 3, 4, 5, 6, 7, 8, 9, 10, 11 (and 2 more)")]


def test_single_camera_fails_unless_same_camera(tmp_path):
    rows = {"train": GOOD["train"], "query": [("q.jpg", 5, 3)], "gallery": [("g1.jpg", 5, 3), ("g2.jpg", 6, 3)]}
    data = _data(tmp_path, rows)
    report = check_dataset(data, verify_images=False)
    assert _rules(report) == ["single-camera"]
    msg = report.problems[0].message
    assert msg.startswith("all query and gallery images come from camera 3: cross-camera evaluation is impossible")
    assert "pass --same-camera to evaluate same-camera matches" in msg

    relaxed = check_dataset(data, verify_images=False, same_camera=True)
    assert relaxed.ok
    assert any(n.startswith("single-camera: all query and gallery images come from camera 3") for n in relaxed.notes)


def test_duplicate_path_within_split_and_across_query_gallery(tmp_path):
    rows = {"train": [("t.jpg", 1, 0)],
            "query": [("q.jpg", 5, 0), ("q.jpg", 5, 0)],
            "gallery": [("g.jpg", 5, 1)]}
    data = _data(tmp_path, rows)
    cross = Sample(data.query[0].path, 5, 0, "gallery")
    data = ReidData(name="toy", root=str(tmp_path), train=data.train, query=data.query,
                    gallery=data.gallery + (cross,))
    report = check_dataset(data, verify_images=False)
    q = str(tmp_path / "query" / "q.jpg")
    assert report.problems == [
        Problem("duplicate-path", q, "listed 2 times in query"),
        Problem("duplicate-path", q, "appears in more than one split: query and gallery (the same image must not "
                                     "be both train and test, or both query and gallery)"),
    ]
    assert f"duplicate-path: {q}: listed 2 times in query" in report.format()


def test_vehicleid_protocol_allows_query_equal_gallery_and_one_camera(tmp_path):
    test = [("a.jpg", 10, 0), ("b.jpg", 10, 0), ("c.jpg", 11, 0)]
    base = _data(tmp_path, {"train": [("t.jpg", 1, 0)], "query": test})
    data = ReidData(name="vehicleid", root=str(tmp_path), train=base.train, query=base.query,
                    gallery=tuple(Sample(s.path, s.pid, s.camid, "gallery") for s in base.query),
                    protocol="vehicleid")
    report = check_dataset(data)
    assert report.ok, report.format()
    assert "protocol vehicleid: cameras are not used" in report.notes
    assert report.images_checked == 4


def test_no_cross_camera_match(tmp_path):
    rows = {"query": [("q1.jpg", 5, 0), ("q2.jpg", 6, 1)],
            "gallery": [("g1.jpg", 5, 0), ("g2.jpg", 6, 0)]}  # id 5 only under query's own camera 0
    data = _data(tmp_path, rows)
    report = check_dataset(data, verify_images=False)
    assert report.problems == [Problem(
        "no-cross-camera-match", str(tmp_path / "query" / "q1.jpg"),
        "query id 5 appears in the gallery only under its own camera 0; the standard protocol ignores this query "
        "(pass --same-camera to evaluate same-camera matches)")]
    assert check_dataset(data, verify_images=False, same_camera=True).ok


def test_problems_sorted_by_rule_and_rules_are_stable():
    assert RULES == ("missing-split", "unreadable-image", "query-id-not-in-gallery", "single-camera",
                     "duplicate-path", "no-cross-camera-match")


def test_workers_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        check_dataset(_data(tmp_path, GOOD), workers=0)


# --------------------------------------------------------------------------- CLI


def _market_fixture(root: Path) -> None:
    for folder, names in {
        "bounding_box_train": ["0002_c1s1_000451_03_1_blur.jpg", "0002_c2s1_000551_01.jpg"],
        "query": ["0001_c1s1_001051_00.jpg"],
        "bounding_box_test": ["0001_c2s1_000301_01.jpg", "0000_c1s1_000151_01.jpg", "-1_c1s1_000401_03.jpg"],
    }.items():
        (root / folder).mkdir(parents=True)
        for n in names:
            (root / folder / n).write_bytes(JPEG)


def test_cli_data_check_exit_codes(tmp_path, capsys):
    from esnet.cli import main

    _market_fixture(tmp_path)
    assert main(["data", "check", "--dataset", "market1501", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "query           1          1        1" in out
    assert "dropped 1 junk images (pid -1): train 0, query 0, gallery 1" in out

    (tmp_path / "query" / "0001_c1s1_001051_00.jpg").write_bytes(b"")
    assert main(["data", "check", "--dataset", "market1501", "--root", str(tmp_path)]) == 1
    assert "unreadable-image: " in capsys.readouterr().out
    assert main(["data", "check", "--dataset", "market1501", "--root", str(tmp_path), "--skip-image-check"]) == 0
    capsys.readouterr()

    (tmp_path / "query" / "bad_name.jpg").write_bytes(JPEG)
    assert main(["data", "check", "--dataset", "market1501", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'query' / 'bad_name.jpg'}: file name does not match" in err
