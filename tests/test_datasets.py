"""Dataset loaders on tiny on-disk fixtures that copy each dataset's real layout and names."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from esnet.data.datasets import DATASETS, display_camera, load_dataset
from esnet.data.types import DatasetError, ReidData


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 8), (120, 30, 200)).save(buf, format="JPEG")
    return buf.getvalue()


JPEG = _jpeg_bytes()


def _write(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(JPEG)


def _rows(samples) -> list[tuple[str, int, int]]:
    return [(os.path.basename(s.path), s.pid, s.camid) for s in samples]


# --------------------------------------------------------------------------- Market-1501 / demo


def _market(root: Path) -> None:
    _write(root / "bounding_box_train", [
        "0002_c1s1_000451_03_1_blur.jpg",      # augmented name as in /work/data/market1501
        "0002_c1s1_000451_03_2_gradient.jpg",
        "0007_c2s3_070952_01.jpg",
        "-1_c3s1_000401_03.jpg",               # junk in train: dropped
        "0000_c4s1_000100_01.jpg",             # distractor in train: dropped
    ])
    _write(root / "query", ["0001_c1s1_001051_00.jpg", "0001_c6s4_000076_00.JPG", "-1_c2s1_000001_00.jpg"])
    _write(root / "bounding_box_test", [
        "0001_c2s1_000301_01.jpg", "0000_c1s1_000151_01.jpg",
        "-1_c1s1_000401_03.jpg", "-1_c5s2_000451_04.jpg",
    ])
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")


def test_market1501_parses_names_drops_junk_and_keeps_distractors_in_gallery(tmp_path):
    _market(tmp_path)
    data = load_dataset("market1501", str(tmp_path))
    assert isinstance(data, ReidData) and data.name == "market1501" and data.protocol == "standard"
    assert _rows(data.train) == [
        ("0002_c1s1_000451_03_1_blur.jpg", 2, 0),
        ("0002_c1s1_000451_03_2_gradient.jpg", 2, 0),
        ("0007_c2s3_070952_01.jpg", 7, 1),
    ]
    assert _rows(data.query) == [("0001_c1s1_001051_00.jpg", 1, 0), ("0001_c6s4_000076_00.JPG", 1, 5)]
    assert _rows(data.gallery) == [("0000_c1s1_000151_01.jpg", 0, 0), ("0001_c2s1_000301_01.jpg", 1, 1)]
    assert all(os.path.isabs(s.path) and os.path.isfile(s.path) for s in data.train + data.query + data.gallery)
    assert [s.split for s in data.gallery] == ["gallery", "gallery"]
    assert data.notes == (
        "dropped 4 junk images (pid -1): train 1, query 1, gallery 2",
        "kept 1 distractor images (pid 0) in gallery",
        "dropped 1 distractor images (pid 0) from train; distractors belong in the gallery only",
    )


def test_market1501_camera_of_the_file_name_is_kept_for_display(tmp_path):
    _market(tmp_path)
    data = load_dataset("market1501", str(tmp_path))
    six = next(s for s in data.query if os.path.basename(s.path).startswith("0001_c6s4"))
    assert (six.camid, six.camera) == (5, 6)  # 0-based for the metrics, as in the name for people
    assert all(s.camera == s.camid + 1 for s in data.train + data.query + data.gallery)
    assert display_camera("market1501", 5, "0001_c6s4_000076_00.jpg") == 6


@pytest.mark.parametrize("sub", ["market1501", "Market-1501-v15.09.15"])
def test_market1501_accepts_parent_folder(tmp_path, sub):
    _market(tmp_path / sub)
    data = load_dataset("market1501", str(tmp_path))
    assert data.root == str(tmp_path / sub)
    assert len(data.train) == 3 and len(data.query) == 2 and len(data.gallery) == 2


def test_market1501_relative_root_gives_absolute_paths(tmp_path, monkeypatch):
    _market(tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    data = load_dataset("market1501", "m")
    assert data.root == str(tmp_path / "m")
    assert data.query[0].path == str(tmp_path / "m" / "query" / "0001_c1s1_001051_00.jpg")


def test_market1501_bad_name_raises_naming_file_and_pattern(tmp_path):
    _market(tmp_path)
    _write(tmp_path / "query", ["person_0001.jpg"])
    with pytest.raises(DatasetError) as e:
        load_dataset("market1501", str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "query" / "person_0001.jpg") in msg
    assert "PPPP_cCsS_FFFFFF_BB.jpg" in msg


def test_market1501_missing_train_folder_is_an_empty_split_with_note(tmp_path):
    _market(tmp_path)
    for f in (tmp_path / "bounding_box_train").iterdir():
        f.unlink()
    (tmp_path / "bounding_box_train").rmdir()
    data = load_dataset("market1501", str(tmp_path))
    assert data.train == ()
    assert f"train: folder {tmp_path / 'bounding_box_train'} does not exist, split is empty" in data.notes


def test_market1501_wrong_root_raises_listing_expected_folders(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"no dataset folders found; expected \['bounding_box_train', 'query'"):
        load_dataset("market1501", str(tmp_path))


def test_demo_uses_market_layout_and_is_deterministic(tmp_path):
    _market(tmp_path)
    a = load_dataset("demo", str(tmp_path))
    b = load_dataset("demo", str(tmp_path))
    assert a == b and a.name == "demo"
    assert _rows(a.query) == [("0001_c1s1_001051_00.jpg", 1, 0), ("0001_c6s4_000076_00.JPG", 1, 5)]
    assert [s.path for s in a.train] == sorted(s.path for s in a.train)


# --------------------------------------------------------------------------- DukeMTMC-reID


def _duke(root: Path) -> None:
    _write(root / "bounding_box_train", ["0001_c2_f0046182.jpg", "0001_c5_f0051781.jpg", "0002_c2_f0046280.jpg"])
    _write(root / "query", ["0005_c2_f0046985.jpg"])
    _write(root / "bounding_box_test", ["0005_c8_f0166711.jpg", "0005_c1_f0040355.jpg", "0019_c7_f0084236.jpg"])


def test_dukemtmcreid_parses_cameras_1_to_8(tmp_path):
    _duke(tmp_path / "DukeMTMC-reID")
    data = load_dataset("dukemtmcreid", str(tmp_path))
    assert _rows(data.train) == [("0001_c2_f0046182.jpg", 1, 1), ("0001_c5_f0051781.jpg", 1, 4),
                                 ("0002_c2_f0046280.jpg", 2, 1)]
    assert _rows(data.query) == [("0005_c2_f0046985.jpg", 5, 1)]
    assert _rows(data.gallery) == [("0005_c1_f0040355.jpg", 5, 0), ("0005_c8_f0166711.jpg", 5, 7),
                                   ("0019_c7_f0084236.jpg", 19, 6)]


def test_dukemtmcreid_bad_names_raise(tmp_path):
    _duke(tmp_path)
    _write(tmp_path / "query", ["0005_c9_f0046985.jpg"])
    with pytest.raises(DatasetError, match=r"0005_c9_f0046985\.jpg: camera c9 is out of range"):
        load_dataset("dukemtmcreid", str(tmp_path))
    (tmp_path / "query" / "0005_c9_f0046985.jpg").unlink()
    _write(tmp_path / "bounding_box_test", ["0005-c1-f1.jpg"])
    with pytest.raises(DatasetError, match=r"0005-c1-f1\.jpg: file name does not match the DukeMTMC-reID pattern"):
        load_dataset("dukemtmcreid", str(tmp_path))


# --------------------------------------------------------------------------- MSMT17


def _msmt(root: Path, train_dir: str = "train", test_dir: str = "test") -> None:
    train = {"0000/0000_000_01_0303morning_0015_0.jpg": 0, "0000/0000_001_05_0303morning_0036_1.jpg": 0,
             "0001/0001_000_15_0303afternoon_0587_0.jpg": 1}
    val = {"0001/0001_002_07_0303noon_0020_2.jpg": 1}
    query = {"0000/0000_000_01_0303morning_0008_0.jpg": 0}
    gallery = {"0000/0000_003_02_0303morning_0011_0.jpg": 0, "0003/0003_000_12_0113noon_0101_0.jpg": 3}
    for folder, entries, list_name in ((train_dir, train, "list_train.txt"), (train_dir, val, "list_val.txt"),
                                       (test_dir, query, "list_query.txt"), (test_dir, gallery, "list_gallery.txt")):
        for rel in entries:
            _write(root / folder / os.path.dirname(rel), [os.path.basename(rel)])
        (root / list_name).write_text("".join(f"{rel} {pid}\n" for rel, pid in entries.items()))


def test_msmt17_v1_train_includes_val_and_camera_is_third_field(tmp_path):
    _msmt(tmp_path / "MSMT17_V1")
    data = load_dataset("msmt17", str(tmp_path))
    base = tmp_path / "MSMT17_V1"
    assert [(os.path.relpath(s.path, base), s.pid, s.camid) for s in data.train] == [
        ("train/0000/0000_000_01_0303morning_0015_0.jpg", 0, 0),
        ("train/0000/0000_001_05_0303morning_0036_1.jpg", 0, 4),
        ("train/0001/0001_000_15_0303afternoon_0587_0.jpg", 1, 14),
        ("train/0001/0001_002_07_0303noon_0020_2.jpg", 1, 6),
    ]
    assert _rows(data.query) == [("0000_000_01_0303morning_0008_0.jpg", 0, 0)]
    assert _rows(data.gallery) == [("0000_003_02_0303morning_0011_0.jpg", 0, 1),
                                   ("0003_000_12_0113noon_0101_0.jpg", 3, 11)]
    assert all(os.path.isfile(s.path) for s in data.train + data.query + data.gallery)
    assert "list_val.txt" in data.notes[0]


def test_msmt17_v2_folders(tmp_path):
    _msmt(tmp_path, "mask_train_v2", "mask_test_v2")
    data = load_dataset("msmt17", str(tmp_path))
    assert data.query[0].path == str(tmp_path / "mask_test_v2" / "0000" / "0000_000_01_0303morning_0008_0.jpg")


def test_msmt17_bad_list_lines_name_line_number(tmp_path):
    _msmt(tmp_path)
    (tmp_path / "list_query.txt").write_text("0000/0000_000_01_0303morning_0008_0.jpg 0\n0000/x.jpg\n")
    with pytest.raises(DatasetError, match=r"list_query\.txt:2: expected '<relative path> <pid>'"):
        load_dataset("msmt17", str(tmp_path))
    (tmp_path / "list_query.txt").write_text("0000/0000_000_16_0303morning_0008_0.jpg 0\n")
    with pytest.raises(DatasetError, match=r"list_query\.txt:1: camera 16 .* MSMT17 cameras are 01\.\.15"):
        load_dataset("msmt17", str(tmp_path))
    (tmp_path / "list_query.txt").write_text("0000/img_1.jpg 0\n")
    with pytest.raises(DatasetError, match=r"list_query\.txt:1: file name '0000/img_1\.jpg' does not match"):
        load_dataset("msmt17", str(tmp_path))
    (tmp_path / "list_query.txt").write_text("0000/0000_000_01_0303morning_0008_0.jpg zero\n")
    with pytest.raises(DatasetError, match=r"list_query\.txt:1: identity 'zero' is not an integer"):
        load_dataset("msmt17", str(tmp_path))


def test_msmt17_missing_list_file(tmp_path):
    _msmt(tmp_path)
    (tmp_path / "list_val.txt").unlink()
    with pytest.raises(DatasetError, match=r"list_val\.txt: MSMT17 list file is missing"):
        load_dataset("msmt17", str(tmp_path))


# --------------------------------------------------------------------------- VeRi-776


def _veri(root: Path) -> None:
    _write(root / "image_train", ["0001_c001_00016450_0.jpg", "0001_c002_00016460_0.jpg", "0002_c020_00030600_1.jpg"])
    _write(root / "image_query", ["0002_c002_00030600_0.jpg"])
    _write(root / "image_test", ["0002_c003_00084280_0.jpg", "0005_c015_00080900_1.jpg"])


def test_veri776_lists_folders(tmp_path):
    _veri(tmp_path / "VeRi")
    data = load_dataset("veri776", str(tmp_path))
    assert _rows(data.train) == [("0001_c001_00016450_0.jpg", 1, 0), ("0001_c002_00016460_0.jpg", 1, 1),
                                 ("0002_c020_00030600_1.jpg", 2, 19)]
    assert _rows(data.query) == [("0002_c002_00030600_0.jpg", 2, 1)]
    assert _rows(data.gallery) == [("0002_c003_00084280_0.jpg", 2, 2), ("0005_c015_00080900_1.jpg", 5, 14)]


def test_veri776_name_lists_choose_files(tmp_path):
    _veri(tmp_path)
    (tmp_path / "name_train.txt").write_text("0002_c020_00030600_1.jpg\n0001_c001_00016450_0.jpg\n")
    (tmp_path / "name_test.txt").write_text("0005_c015_00080900_1.jpg\n")
    data = load_dataset("veri776", str(tmp_path))
    assert _rows(data.train) == [("0001_c001_00016450_0.jpg", 1, 0), ("0002_c020_00030600_1.jpg", 2, 19)]
    assert _rows(data.query) == [("0002_c002_00030600_0.jpg", 2, 1)]  # no name_query.txt: folder listed
    assert _rows(data.gallery) == [("0005_c015_00080900_1.jpg", 5, 14)]
    (tmp_path / "name_test.txt").write_text("0005_c015_00080900_1.jpg\nvehicle.jpg\n")
    with pytest.raises(DatasetError, match=r"name_test\.txt:2: vehicle\.jpg: file name does not match the VeRi-776"):
        load_dataset("veri776", str(tmp_path))


# --------------------------------------------------------------------------- VehicleID


def _vehicleid(root: Path) -> None:
    _write(root / "image", [f"{i:07d}.jpg" for i in (1, 2, 3, 4, 5, 6, 7)])
    split = root / "train_test_split"
    split.mkdir()
    (split / "train_list.txt").write_text("0000004 1\n0000001 1\n0000002 2\n")
    (split / "test_list_800.txt").write_text("0000005 10\n0000003 10\n")
    (split / "test_list_1600.txt").write_text("0000005 10\n0000003 10\n0000006 11\n")
    (split / "test_list_2400.txt").write_text("0000005 10\n0000003 10\n0000006 11\n0000007 12\n")


def test_vehicleid_query_equals_gallery_and_sizes(tmp_path):
    _vehicleid(tmp_path / "VehicleID_V1.0")
    data = load_dataset("vehicleid", str(tmp_path))
    assert data.protocol == "vehicleid"
    assert _rows(data.train) == [("0000001.jpg", 1, 0), ("0000002.jpg", 2, 0), ("0000004.jpg", 1, 0)]
    assert _rows(data.query) == _rows(data.gallery) == [("0000003.jpg", 10, 0), ("0000005.jpg", 10, 0)]
    assert {s.split for s in data.gallery} == {"gallery"}
    assert {s.camera for s in data.train + data.query} == {-1}  # VehicleID has no cameras to show
    assert len(load_dataset("vehicleid", str(tmp_path), vehicleid_test_size="medium").query) == 3
    assert len(load_dataset("vehicleid", str(tmp_path), vehicleid_test_size="large").gallery) == 4
    with pytest.raises(DatasetError, match=r"one of \['small', 'medium', 'large'\], got 'huge'"):
        load_dataset("vehicleid", str(tmp_path), vehicleid_test_size="huge")


def test_vehicleid_bad_line(tmp_path):
    _vehicleid(tmp_path)
    (tmp_path / "train_test_split" / "train_list.txt").write_text("0000004 1\n\n0000001\n")
    with pytest.raises(DatasetError, match=r"train_list\.txt:3: expected '<image name without extension> <vehicle"):
        load_dataset("vehicleid", str(tmp_path))


# --------------------------------------------------------------------------- folder layout


def _folder(root: Path) -> None:
    _write(root / "train" / "17", ["a_c3_1.jpg", "b_c1_2.png"])
    _write(root / "train" / "alice", ["x_c1_1.jpg"])
    _write(root / "query" / "bob", ["q_c7_1.jpeg"])
    _write(root / "query" / "17", ["q_c1_9.BMP"])
    _write(root / "gallery" / "bob", ["g_c3_1.jpg"])
    _write(root / "gallery" / "17", ["g_c7_4.jpg"])
    (root / "gallery" / "17" / "notes.txt").write_text("ignored")


def test_folder_maps_ids_and_cameras_consistently(tmp_path):
    _folder(tmp_path)
    data = load_dataset("folder", str(tmp_path))
    # numeric "17" keeps 17; "alice", "bob" (sorted) -> 18, 19; cameras 1, 3, 7 -> 0, 1, 2
    assert [(os.path.relpath(s.path, tmp_path), s.pid, s.camid) for s in data.train] == [
        ("train/17/a_c3_1.jpg", 17, 1), ("train/17/b_c1_2.png", 17, 0), ("train/alice/x_c1_1.jpg", 18, 0)]
    assert _rows(data.query) == [("q_c1_9.BMP", 17, 0), ("q_c7_1.jpeg", 19, 2)]
    assert _rows(data.gallery) == [("g_c7_4.jpg", 17, 2), ("g_c3_1.jpg", 19, 1)]
    assert "2 non-numeric identity folders numbered 18..19 in sorted order (first: 'alice' -> 18)" in data.notes
    assert "cameras 1->0, 3->1, 7->2 (regex 'c(\\d+)')" in data.notes
    # renumbered camids, but the camera shown is the file name's: c7 stays camera 7
    assert [(s.camid, s.camera) for s in data.query] == [(0, 1), (2, 7)]
    assert all(display_camera("folder", s.camid, s.path) == s.camera for s in data.train + data.query + data.gallery)


def test_folder_custom_regex_and_optional_train(tmp_path):
    _write(tmp_path / "query" / "5", ["cam02-001.jpg"])
    _write(tmp_path / "gallery" / "5", ["cam01-001.jpg", "cam02-007.jpg"])
    data = load_dataset("folder", str(tmp_path), camera_regex=r"^cam(\d+)-")
    assert data.train == ()
    assert _rows(data.gallery) == [("cam01-001.jpg", 5, 0), ("cam02-007.jpg", 5, 1)]
    assert _rows(data.query) == [("cam02-001.jpg", 5, 1)]
    assert [s.camera for s in data.gallery] == [1, 2]
    assert display_camera("folder", 1, "cam02-007.jpg", r"^cam(\d+)-") == 2
    with pytest.raises(DatasetError, match=r"photo\.jpg: file name does not match camera regex"):
        display_camera("folder", 0, "photo.jpg")


def test_folder_name_not_matching_regex_raises_naming_file_and_regex(tmp_path):
    _folder(tmp_path)
    _write(tmp_path / "gallery" / "bob", ["photo.jpg"])
    with pytest.raises(DatasetError) as e:
        load_dataset("folder", str(tmp_path))
    assert str(tmp_path / "gallery" / "bob" / "photo.jpg") in str(e.value)
    assert "does not match camera regex 'c(\\d+)'" in str(e.value)


def test_folder_bad_regex_and_bad_layout(tmp_path):
    _folder(tmp_path)
    with pytest.raises(DatasetError, match=r"camera regex 'c\(' is not a valid regular expression"):
        load_dataset("folder", str(tmp_path), camera_regex="c(")
    with pytest.raises(DatasetError, match=r"camera regex 'c\\d' needs a capturing group"):
        load_dataset("folder", str(tmp_path), camera_regex=r"c\d")
    with pytest.raises(DatasetError, match=r"group 1 matched 'c', which is not an integer"):
        load_dataset("folder", str(tmp_path), camera_regex=r"_(c)")
    _write(tmp_path / "query", ["loose_c1.jpg"])
    with pytest.raises(DatasetError, match=r"loose_c1\.jpg: image directly in the split folder"):
        load_dataset("folder", str(tmp_path))


def test_folder_conflicting_numeric_ids(tmp_path):
    _write(tmp_path / "query" / "7", ["a_c1.jpg"])
    _write(tmp_path / "gallery" / "007", ["b_c2.jpg"])
    with pytest.raises(DatasetError, match=r"identity folders '007' and '7' both mean identity 7"):
        load_dataset("folder", str(tmp_path))


# --------------------------------------------------------------------------- manifest


def test_manifest_relative_and_absolute_paths(tmp_path):
    _write(tmp_path / "imgs", ["a.jpg", "b.png"])
    csv = tmp_path / "data.csv"
    csv.write_text(f"path,pid,camid,split\nimgs/b.png,3,1,query\n{tmp_path / 'imgs' / 'a.jpg'},3,0,gallery\n"
                   "imgs/a.jpg,4,2,train\n")
    data = load_dataset("manifest", str(csv))
    assert data.name == "manifest" and data.root == str(csv)
    assert [(s.path, s.pid, s.camid, s.split) for s in data.query] == [(str(tmp_path / "imgs" / "b.png"), 3, 1, "query")]
    assert [(s.path, s.pid, s.camid) for s in data.gallery] == [(str(tmp_path / "imgs" / "a.jpg"), 3, 0)]
    assert [(s.path, s.pid, s.camid) for s in data.train] == [(str(tmp_path / "imgs" / "a.jpg"), 4, 2)]
    assert [s.camera for s in data.query + data.gallery + data.train] == [1, 0, 2]  # shown as the CSV writes it


@pytest.mark.parametrize("body, expected", [
    ("path,pid,split\na.jpg,1,query\n", r"data\.csv:1: header must be path,pid,camid,split, got 'path,pid,split'"),
    ("path,pid,camid,split\na.jpg,1,0,query\nb.jpg,x,0,gallery\n", r"data\.csv:3: pid must be an integer, got 'x'"),
    ("path,pid,camid,split\na.jpg,1,c1,query\n", r"data\.csv:2: camid must be an integer, got 'c1'"),
    ("path,pid,camid,split\na.jpg,1,-1,query\n", r"data\.csv:2: camid must be in \[0, 2147483647\] \(0-based\), got -1"),
    ("path,pid,camid,split\na.jpg,1,0,test\n", r"data\.csv:2: split must be one of \['train', 'query', 'gallery'\]"),
    ("path,pid,camid,split\na.jpg,1,0\n", r"data\.csv:2: expected 4 columns path,pid,camid,split, got 3"),
    ("path,pid,camid,split\n,1,0,query\n", r"data\.csv:2: path is empty"),
    ("path,pid,camid,split\na.txt,1,0,query\n", r"data\.csv:2: path 'a\.txt' is not an image"),
    ("", r"data\.csv:1: header must be path,pid,camid,split, got 'an empty file'"),
])
def test_manifest_bad_rows_name_line_and_rule(tmp_path, body, expected):
    csv = tmp_path / "data.csv"
    csv.write_text(body)
    with pytest.raises(DatasetError, match=expected):
        load_dataset("manifest", str(csv))


def test_manifest_with_excel_bom_is_read(tmp_path):
    _write(tmp_path / "imgs", ["a.jpg"])
    csv = tmp_path / "excel.csv"
    csv.write_bytes(b"\xef\xbb\xbfpath,pid,camid,split\r\nimgs/a.jpg,5,2,train\r\n")
    data = load_dataset("manifest", str(csv))
    assert [(s.pid, s.camid, s.split) for s in data.train] == [(5, 2, "train")]


def test_manifest_not_utf8_names_file_line_and_column(tmp_path):
    csv = tmp_path / "latin1.csv"
    csv.write_bytes("path,pid,camid,split\nimgs/a.jpg,1,0,train\nimgs/caf\u00e9.jpg,2,0,train\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin1\.csv:3: not UTF-8 \(byte 0xe9 at column 9\); save the manifest as UTF-8"):
        load_dataset("manifest", str(csv))


def test_manifest_root_must_be_a_file(tmp_path):
    with pytest.raises(DatasetError, match=r"manifest must be a CSV file"):
        load_dataset("manifest", str(tmp_path))


# --------------------------------------------------------------------------- registry


def test_registry_names_and_errors(tmp_path):
    assert sorted(DATASETS) == ["demo", "dukemtmcreid", "folder", "manifest", "market1501", "msmt17",
                                "vehicleid", "veri776"]
    with pytest.raises(DatasetError, match=r"unknown dataset 'cuhk03'; valid names: \['demo', 'dukemtmcreid'"):
        load_dataset("cuhk03", str(tmp_path))
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError, match=f"{missing}: dataset root does not exist"):
        load_dataset("market1501", str(missing))
    _market(tmp_path)
    with pytest.raises(DatasetError, match=r"camera_regex applies only to the 'folder' dataset"):
        load_dataset("market1501", str(tmp_path), camera_regex=r"cam(\d)")
    with pytest.raises(DatasetError, match=r"vehicleid_test_size applies only to 'vehicleid'"):
        load_dataset("market1501", str(tmp_path), vehicleid_test_size="large")


# --------------------------------------------------------------------------- real data (optional)


@pytest.mark.skipif(not os.environ.get("ESNET_MARKET1501"), reason="ESNET_MARKET1501 is not set")
def test_real_market1501_counts_and_speed():
    root = os.environ["ESNET_MARKET1501"]
    if not os.path.isdir(root):
        pytest.skip(f"ESNET_MARKET1501={root} is not a directory")
    start = time.perf_counter()
    data = load_dataset("market1501", root)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"listing Market-1501 took {elapsed:.2f} s"
    assert len(data.query) == 3368 and len({s.pid for s in data.query}) == 750
    assert len(data.gallery) == 15913 and len({s.pid for s in data.gallery}) == 751  # 750 ids + distractor 0
    assert {s.camid for s in data.query} == set(range(6))
    assert all(s.pid != -1 for s in data.train + data.query + data.gallery)
