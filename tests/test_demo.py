import hashlib
import itertools
import re

import pytest
from PIL import Image

from esnet.data import load_dataset
from esnet.data.demo import DEMO_PARTS, generate_demo, identity_attributes

MARKET = re.compile(r"^(-?\d+)_c(\d)s\d+_\d{6}_\d{2}\.jpg$")


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.jpg")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "d"
    summary = generate_demo(out, num_ids=12, seed=5)
    return out, summary


def test_market_layout_sizes_and_disjoint_ids(small) -> None:
    out, summary = small
    data = load_dataset("demo", str(out))
    assert {s.pid for s in data.train} == set(range(1, 7))
    assert {s.pid for s in data.query} == set(range(7, 13))
    assert {s.pid for s in data.gallery} - {0} == set(range(7, 13))
    assert len({s.camid for s in data.query + data.gallery}) >= 4
    assert summary.images == {"train": len(data.train), "query": len(data.query), "gallery": len(data.gallery)}
    for p in list(out.rglob("*.jpg"))[:20]:
        assert MARKET.match(p.name), p.name
        with Image.open(p) as im:
            assert im.size == (64, 128) and im.mode == "RGB"
    assert (out / ".complete").exists()
    assert "demo dataset written to" in str(summary)


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path) -> None:
    out, _ = small
    again = tmp_path / "again"
    generate_demo(again, num_ids=12, seed=5)
    assert _digest(again) == _digest(out)
    other = tmp_path / "other"
    generate_demo(other, num_ids=12, seed=6)
    assert _digest(other) != _digest(out)


def test_every_two_identities_differ_in_at_least_two_parts() -> None:
    attrs = [identity_attributes(pid, seed=0) for pid in range(1, 121)]
    assert set(attrs[0]) == set(DEMO_PARTS)
    for a, b in itertools.combinations(attrs, 2):
        assert sum(a[p] != b[p] for p in DEMO_PARTS) >= 2
    # No single part identifies a person: each torso colour is shared by several ids.
    torsos = [a["torso"] for a in attrs]
    assert min(torsos.count(t) for t in set(torsos)) >= 3


def test_refuses_bad_args_and_complete_target(small, tmp_path) -> None:
    out, _ = small
    with pytest.raises(ValueError, match=r"num_ids must be an even integer >= 10, got 7"):
        generate_demo(tmp_path / "x", num_ids=7)
    with pytest.raises(ValueError, match=r"already holds a complete demo dataset"):
        generate_demo(out, num_ids=12, seed=5)
    with pytest.raises(ValueError, match=r"pid must be >= 1"):
        identity_attributes(0)


def test_half_written_leftover_is_replaced(tmp_path) -> None:
    out = tmp_path / "d"
    (out / "query").mkdir(parents=True)
    (out / "query" / "junk.txt").write_text("left over from a killed run")
    generate_demo(out, num_ids=10, seed=0)
    assert not (out / "query" / "junk.txt").exists()
    assert (out / ".complete").exists()
    assert not list(tmp_path.glob(".d.tmp-*"))
