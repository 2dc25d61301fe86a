"""Atomic file writes: readers see the old file or the new one, never a part of either.

The one implementation: a temporary file in the destination's directory (``.<name>.*.tmp``,
so a rename never crosses a file system and ``rundir.remove_orphan_tmp`` can find what a
killed writer left), written, fsync'd, made readable (0644; ``mkstemp`` creates 0600),
optionally checked, renamed over the destination with ``os.replace``, and the directory
fsync'd so the rename itself survives a crash. On any failure (the check's too) the
temporary file is removed and the destination is left as it was.

Standard library only: every layer may import it.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

FILE_MODE = 0o644
"""Permissions of a file written here (run files, checkpoints and exports are meant to be shared)."""


def fsync_path(path: str | Path) -> None:
    """fsync a file's data or a directory's entries (a rename, a new file) through a new
    read-only descriptor: fsync flushes the file or directory, not the descriptor."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_beside(path: str | Path) -> Path:
    """A new empty temporary file next to ``path`` (``<dir>/.<name>.<random>.tmp``), the
    directory created when missing. The caller writes it and either hands it to
    :func:`replace_with` or removes it."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    return Path(tmp_name)


def replace_with(tmp: str | Path, path: str | Path) -> None:
    """Make the complete file ``tmp`` (from :func:`temp_beside`) become ``path``: fsync it, make it
    readable (:data:`FILE_MODE`), rename it over ``path``, fsync the directory."""
    fsync_path(tmp)
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)
    fsync_path(Path(path).parent)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces ``path`` when the block ends without error.

    For writers that want a file name rather than a file object (``torch.onnx.export``, a
    writer that re-reads what it wrote). The temporary file exists (empty) when the block
    starts; the block writes it and may raise to abandon it (a failed check).

    Args:
        path: the destination; its directory is created when missing.
    Yields:
        The temporary file's path (:func:`temp_beside`).
    Raises:
        Whatever the block or the file system raises; the temporary file is then removed
        and ``path`` is unchanged.
    """
    tmp = temp_beside(path)
    try:
        yield tmp
        replace_with(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """``write(f)`` into a binary file object that atomically becomes ``path`` (see :func:`atomic_path`).

    Returns:
        ``path`` as a Path.
    """
    dest = Path(path)
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        write(f)
    return dest


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """:func:`atomic_write_text` of ``obj`` as indented, key-sorted JSON (NaN/inf refused: ValueError,
    raised before anything is written)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")
