"""esnet.atomic: the one atomic-write helper (checkpoints, run files, caches, exports, weights)."""
from __future__ import annotations

from pathlib import Path

import pytest

from esnet import atomic


def test_atomic_write_creates_the_folder_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.bin"
    assert atomic.atomic_write(target, lambda f: f.write(b"one")) == target
    atomic.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]
    assert (target.stat().st_mode & 0o777) == atomic.FILE_MODE == 0o644


def test_a_failing_writer_or_check_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic.atomic_write_text(target, "old")

    def half(f) -> None:
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(target, half)
    seen = []
    with pytest.raises(ValueError, match="bad file"):
        with atomic.atomic_path(target) as tmp:
            seen.append(tmp)
            tmp.write_text("new")
            raise ValueError("bad file")  # a check of what was written failed
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".a.txt.") and seen[0].name.endswith(".tmp")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_temp_beside_and_replace_with_for_a_file_written_in_place(tmp_path: Path) -> None:
    target = tmp_path / "x" / "f.npy"
    tmp = atomic.temp_beside(target)
    assert tmp.parent == target.parent and tmp.exists() and tmp.stat().st_size == 0
    tmp.write_bytes(b"data")
    atomic.replace_with(tmp, target)
    assert target.read_bytes() == b"data" and not tmp.exists()


def test_atomic_write_json_refuses_nan_before_writing(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    atomic.atomic_write_json(target, {"b": 2, "a": 1})
    assert target.read_text() == '{\n  "a": 1,\n  "b": 2\n}\n'
    with pytest.raises(ValueError):
        atomic.atomic_write_json(target, {"a": float("nan")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]
