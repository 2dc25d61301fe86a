"""Which esnet source a training process runs, so ``--resume`` can tell when it would continue
a run under other code than the code that saved the checkpoint.

A resumed epoch equals the uninterrupted run's only when the same code trains it: the
checkpoint restores weights, optimizer and schedule, not the arithmetic. The identity is
one sha256 per source file of the esnet package imported by the time training starts;
it is stored in every checkpoint (``extra["code"]``) and compared on resume.
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import esnet

MISSING = "missing"
"""The hash recorded for a source file that does not exist (any more)."""


def package_dir() -> Path:
    """The folder of the esnet package this process imported."""
    return Path(esnet.__file__).resolve().parent


def _loaded_files(pkg: Path) -> set[str]:
    """Paths, relative to ``pkg``, of the esnet modules imported so far."""
    rels = set()
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if not f:
            continue
        p = Path(f).resolve()
        if p.suffix == ".py" and p.is_relative_to(pkg):
            rels.add(p.relative_to(pkg).as_posix())
    return rels


def code_identity(extra: Iterable[str] = ()) -> dict[str, Any]:
    """The esnet source this process runs.

    Call it once the training code is imported (after the model, data and callbacks are built).

    Args:
        extra: more paths relative to the package to hash, e.g. those a checkpoint recorded
            (checked with :func:`stored_files` first).
    Returns:
        ``{"package": str, "files": {relpath: sha256 hex or MISSING}}``: every imported module
        of the package plus ``extra``, hashed as the files are on disk now.
    """
    pkg = package_dir()
    files = {}
    for rel in sorted(_loaded_files(pkg) | set(extra)):
        try:
            files[rel] = hashlib.sha256((pkg / rel).read_bytes()).hexdigest()
        except FileNotFoundError:
            files[rel] = MISSING
    return {"package": str(pkg), "files": files}


def stored_files(record: Any) -> dict[str, str]:
    """The ``files`` of a code identity read from a checkpoint, checked.

    Raises:
        ValueError: not a dict with a ``files`` dict of relative ``.py`` paths inside the
            package (no ``..``) to strings.
    """
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict):
        raise ValueError(f"the code record must be a dict with a 'files' dict, got {type(record).__name__}")
    for rel, digest in files.items():
        parts = PurePosixPath(rel).parts if isinstance(rel, str) else ()
        if not parts or rel.startswith("/") or ".." in parts or not rel.endswith(".py") or not isinstance(digest, str):
            raise ValueError(f"the code record lists {rel!r}: {digest!r}; expected a relative .py path and its sha256")
    return dict(files)


def code_changes(stored: dict[str, str], current: dict[str, Any]) -> list[str]:
    """Relative paths whose hash in ``current`` (:func:`code_identity` with ``extra=stored``)
    differs from ``stored`` (:func:`stored_files`), sorted."""
    now = current["files"]
    return sorted(rel for rel, digest in stored.items() if now.get(rel) != digest)


def changed_since(record: Any) -> list[str]:
    """The esnet source files (relative paths, sorted) that differ now from a checkpoint's code record
    (``extra["code"]``): what ``--resume`` would refuse without ``--allow-code-change``.

    Raises:
        ValueError: a malformed record (see :func:`stored_files`).
    """
    stored = stored_files(record)
    return code_changes(stored, code_identity(stored))
