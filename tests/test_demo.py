"""The synthetic demo dataset: Market layout, identities made of parts, determinism, atomic writes."""
import hashlib
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from esnet import cli
from esnet.data import demo, load_dataset
from esnet.data.demo import DEMO_PARTS, DEMO_REGIONS, DEMO_VERSION, generate_demo, identity_attributes

NAME = re.compile(r"^(\d{4})_c([1-6])s1_(\d{6})_00\.jpg$")  # what generate_demo promises
MARKET = re.compile(r"([-\d]+)_c(\d)")  # how Market-1501 loaders parse names
# num_ids=10: 5 train ids x 4 cameras x 7 shots; 5 test ids x 3 queries; 5 x (4 cameras x 3 shots)
# gallery + 10 // 4 = 2 distractor persons x 4 shots.
COUNTS = {"train": 140, "query": 15, "gallery": 68}


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.jpg")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, demo.DemoSummary]:
    out = tmp_path_factory.mktemp("demo") / "d"
    return out, generate_demo(out, num_ids=10, seed=5)


def test_market_layout_names_and_counts(small) -> None:
    out, summary = small
    assert sorted(p.name for p in out.iterdir()) == [".complete", "bounding_box_test", "bounding_box_train", "query"]
    labels: dict[str, list[tuple[int, int]]] = {}
    frames = []
    for folder, split in (("bounding_box_train", "train"), ("query", "query"), ("bounding_box_test", "gallery")):
        for p in sorted((out / folder).iterdir()):
            m = NAME.match(p.name)
            assert m, p.name
            pid, cam = (int(g) for g in MARKET.search(p.name).groups())
            assert (pid, cam) == (int(m.group(1)), int(m.group(2)))
            labels.setdefault(split, []).append((pid, cam))
            frames.append(m.group(3))
    assert {k: len(v) for k, v in labels.items()} == COUNTS
    assert len(set(frames)) == sum(COUNTS.values())
    assert summary.images == COUNTS
    assert summary.ids == {"train": 5, "query": 5, "gallery": 5}
    assert summary.distractors == 8 and summary.cameras == 6
    assert sum(1 for pid, _ in labels["gallery"] if pid == 0) == 8
    # Per train identity: 4 cameras x 7 shots.
    assert Counter(pid for pid, _ in labels["train"]) == {pid: 28 for pid in range(1, 6)}
    assert all(len({c for p, c in labels["train"] if p == pid}) == 4 for pid in range(1, 6))
    marker = json.loads((out / ".complete").read_text())
    assert marker["version"] == DEMO_VERSION and marker["images"] == COUNTS and marker["seed"] == 5
    assert str(summary).splitlines()[1:] == [
        "  train       5 ids    140 images",
        "  query       5 ids     15 images",
        "  gallery     5 ids     68 images (incl. 8 distractors, pid 0000)",
    ]


def test_real_market_loader_reads_it_with_disjoint_ids_and_cross_camera_matches(small) -> None:
    out, _ = small
    data = load_dataset("market1501", str(out))
    assert (len(data.train), len(data.query), len(data.gallery)) == (140, 15, 68)
    assert {s.pid for s in data.train} == {1, 2, 3, 4, 5}
    assert {s.pid for s in data.query} == {6, 7, 8, 9, 10}
    assert {s.pid for s in data.gallery} == {0, 6, 7, 8, 9, 10}
    assert len({s.camid for s in data.train}) >= 4 and len({s.camid for s in data.query + data.gallery}) >= 4
    assert {s.camid for s in data.train + data.query + data.gallery} <= set(range(6))
    for q in data.query:  # every query has >= 2 true matches in other cameras
        matches = [g for g in data.gallery if g.pid == q.pid and g.camid != q.camid]
        assert len({g.camid for g in matches}) >= 3, q
    assert load_dataset("demo", str(out)).query == data.query


def test_images_are_64x128_rgb_and_torso_band_is_most_saturated(small) -> None:
    out, _ = small
    bands = []
    for p in sorted(out.rglob("*.jpg")):
        with Image.open(p) as im:
            assert (im.format, im.size, im.mode) == ("JPEG", (64, 128), "RGB"), p
            sat = np.asarray(im.convert("HSV"), dtype=np.float32)[..., 1]  # (128, 64)
        bands.append([sat[:43].mean(), sat[43:86].mean(), sat[86:].mean()])
    head, upper, lower = np.mean(bands, axis=0)
    assert upper > head + 15 and upper > lower + 15, (head, upper, lower)


def test_same_seed_gives_byte_identical_files(small, tmp_path) -> None:
    out, _ = small
    again = tmp_path / "again"
    generate_demo(again, num_ids=10, seed=5)
    assert _digest(again) == _digest(out)
    a, b = (json.loads((d / ".complete").read_text()) for d in (out, again))
    assert {**a, "out": ""} == {**b, "out": ""}


def test_other_seed_differs_and_overwrite_replaces_a_complete_dataset(small, tmp_path) -> None:
    out, _ = small
    other = tmp_path / "other"
    (other / "query").mkdir(parents=True)
    (other / "query" / "old.jpg").write_bytes(b"old")
    (other / ".complete").write_text("{}")
    with pytest.raises(ValueError, match=r"already holds a complete demo dataset; pass overwrite=True"):
        generate_demo(other, num_ids=10, seed=6)
    assert (other / "query" / "old.jpg").exists()
    generate_demo(other, num_ids=10, seed=6, overwrite=True)
    assert not (other / "query" / "old.jpg").exists()
    assert json.loads((other / ".complete").read_text())["seed"] == 6
    assert _digest(other) != _digest(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]  # no temporary siblings left


def test_half_written_leftover_is_replaced_via_cli(tmp_path, capsys) -> None:
    out = tmp_path / "d"
    (out / "query").mkdir(parents=True)
    (out / "query" / "junk.txt").write_text("left over from a killed run")
    assert cli.main(["data", "demo", "--out", str(out), "--ids", "10", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith(f"demo dataset written to {out} in ")
    assert not (out / "query" / "junk.txt").exists()
    assert len(list((out / "query").glob("*.jpg"))) == 15 and (out / ".complete").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_foreign_folder_is_never_replaced(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"exists without a \.complete marker and holds \['notes.txt'\]"):
        generate_demo(tmp_path, num_ids=10)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match=r"exists and is not a directory"):
        generate_demo(tmp_path / "f", num_ids=10)


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    def broken(*args: object) -> Image.Image:
        raise OSError("disk full")

    monkeypatch.setattr(demo, "_render", broken)
    with pytest.raises(OSError, match="disk full"):
        generate_demo(tmp_path / "d", num_ids=10)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_ids": 7}, r"num_ids must be an even integer in \[10, 600\], got 7"),
    ({"num_ids": 8}, r"num_ids must be an even integer in \[10, 600\], got 8"),
    ({"num_ids": 602}, r"got 602"),
    ({"num_ids": True}, r"got True"),
    ({"num_ids": 12.0}, r"got 12.0"),
    ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
    ({"seed": 1.5}, r"seed must be an integer >= 0, got 1.5"),
    ({"overwrite": "yes"}, r"overwrite must be True or False, got 'yes'"),
])
def test_bad_arguments_raise_naming_the_value(tmp_path, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        generate_demo(tmp_path / "d", **kwargs)
    assert not (tmp_path / "d").exists()


def test_identities_differ_in_two_regions_and_no_part_value_is_unique() -> None:
    assert set(itertools.chain(*DEMO_REGIONS.values())) == set(DEMO_PARTS)
    # 120 ids of the default dataset + its 30 distractor persons.
    attrs = [identity_attributes(pid, seed=0) for pid in range(1, 151)]
    assert all(tuple(a) == DEMO_PARTS for a in attrs)
    for a, b in itertools.combinations(attrs, 2):
        assert sum(a[p] != b[p] for p in DEMO_PARTS) >= 2
        regions = sum(any(a[p] != b[p] for p in parts) for parts in DEMO_REGIONS.values())
        assert regions >= 2, (a, b)  # erasing one body stripe never makes two people identical
    # No single part identifies a person: every value of every part is shared by >= 4 of the 120.
    for part in DEMO_PARTS:
        counts = Counter(a[part] for a in attrs[:120])
        assert len(counts) == len(demo._VALUES[part]) and min(counts.values()) >= 4, (part, counts)


def test_identity_attributes_are_stable_and_validated() -> None:
    # Pinned: if this changes, the images change too -- bump DEMO_VERSION.
    assert identity_attributes(1, seed=0) == {"head": "black cap", "torso": "pink", "logo": "white cross",
                                              "legs": "maroon skirt", "shoes": "white", "bag": "none"}
    # Identity k depends only on the seed, not on how many identities were asked for.
    assert np.array_equal(demo._codes(128, 3)[:100], demo._codes(256, 3)[:100])
    assert identity_attributes(7, seed=1) != identity_attributes(7, seed=2) or \
        identity_attributes(8, seed=1) != identity_attributes(8, seed=2)
    with pytest.raises(ValueError, match=r"pid must be an integer in \[1, 1200\] \(0 is the distractor label\), got 0"):
        identity_attributes(0)
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0, got -3"):
        identity_attributes(1, seed=-3)


def test_if_needed_keeps_a_current_dataset_and_replaces_an_outdated_one(tmp_path, capsys):
    from esnet.cli import main
    from esnet.data.demo import DEMO_VERSION, demo_is_current, demo_marker

    out = tmp_path / "demo"
    assert main(["data", "demo", "--out", str(out), "--ids", "10", "--if-needed"]) == 0
    assert demo_is_current(out)
    first = sorted(p.name for p in (out / "query").iterdir())
    assert main(["data", "demo", "--out", str(out), "--ids", "10", "--if-needed"]) == 0
    assert "complete and current" in capsys.readouterr().out
    # An older generator's marker: --if-needed replaces the dataset, same files again.
    marker = demo_marker(out)
    marker["version"] = DEMO_VERSION - 1
    (out / ".complete").write_text(json.dumps(marker), encoding="utf-8")
    (out / "query" / first[0]).unlink()
    assert not demo_is_current(out)
    assert main(["data", "demo", "--out", str(out), "--ids", "10", "--if-needed"]) == 0
    assert demo_is_current(out)
    assert sorted(p.name for p in (out / "query").iterdir()) == first


def test_if_needed_never_replaces_a_foreign_folder(tmp_path, capsys):
    from esnet.cli import main

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    assert main(["data", "demo", "--out", str(out), "--ids", "10", "--if-needed"]) != 0
    assert "not a demo leftover" in capsys.readouterr().err
    assert (out / "notes.txt").read_text(encoding="utf-8") == "keep me"
