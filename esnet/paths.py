"""Where esnet keeps its caches: one rule for all of them.

The root is ``$ESNET_CACHE_DIR``; else ``$ESNET_CACHE`` (the older name, which ``esnet
weights fetch`` read; kept as an alias of the same root); else ``~/.cache/esnet``. In it:

* the embedding and projection caches (``esnet eval/embed/search``, the dashboard): the root;
* fetched backbone weights (``esnet weights fetch``): ``<root>/weights``.

Standard library only: every layer may import it.
"""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "ESNET_CACHE_DIR"
CACHE_ENV_ALIAS = "ESNET_CACHE"
"""Older name of :data:`CACHE_ENV`, read only when :data:`CACHE_ENV` is unset or empty."""

CACHE_KINDS = ("features", "weights")


def cache_root() -> Path:
    """``$ESNET_CACHE_DIR``, else ``$ESNET_CACHE``, else ``~/.cache/esnet`` (``~`` expanded)."""
    for name in (CACHE_ENV, CACHE_ENV_ALIAS):
        value = os.environ.get(name, "").strip()
        if value:
            return Path(value).expanduser()
    return Path.home() / ".cache" / "esnet"


def default_cache_dir(kind: str = "features") -> Path:
    """The cache folder of ``kind``: ``features`` (embeddings, projections) = the root,
    ``weights`` (fetched backbone weights) = ``<root>/weights``.

    Raises:
        ValueError: an unknown kind, listing the valid ones.
    """
    if kind not in CACHE_KINDS:
        raise ValueError(f"cache kind must be one of {list(CACHE_KINDS)}, got {kind!r}")
    root = cache_root()
    return root if kind == "features" else root / "weights"
