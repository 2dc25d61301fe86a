"""Independent peer implementations for the tests and benchmarks: torchreid's own files.

torchreid (deep-person-reid, pinned in requirements-peers.txt and installed with
``pip install --no-deps``: it must not pull another torch) imports torchvision models,
gdown and more when its package is imported. Its re-ranking (``reid/utils/rerank.py``) and
rank (``reid/metrics/rank.py``) modules need only numpy, so they are loaded from their files
here, under empty stand-ins for the parent packages; the rank module's optional Cython
extension (``rank_cylib/rank_cy*.so``, present only where someone compiled it) is found
through the same stand-ins.

    rerank = torchreid_module("rerank")   # None when torchreid is not installed
"""
from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from pathlib import Path

TORCHREID_PIN = "torchreid==0.2.5"
"""The pinned peer (also in requirements-peers.txt)."""

TORCHREID_FILES = {"rerank": "reid/utils/rerank.py", "rank": "reid/metrics/rank.py"}

TORCHREID_ABSENT = (f"torchreid is not installed: `.venv/bin/pip install --no-deps {TORCHREID_PIN}` "
                    "(make test installs it from requirements-peers.txt)")

_PARENTS = ("torchreid", "torchreid.reid", "torchreid.reid.utils", "torchreid.reid.metrics",
            "torchreid.reid.metrics.rank_cylib")


def torchreid_root() -> Path | None:
    """The installed torchreid package folder, found without importing it; None when absent."""
    spec = importlib.util.find_spec("torchreid")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def torchreid_module(name: str) -> types.ModuleType | None:
    """torchreid's ``rerank`` or ``rank`` module loaded from its file; None when torchreid is absent.

    Raises:
        ValueError: an unknown name.
        FileNotFoundError: torchreid is installed but the file is not where the pin has it.
    """
    if name not in TORCHREID_FILES:
        raise ValueError(f"name must be one of {sorted(TORCHREID_FILES)}, got {name!r}")
    root = torchreid_root()
    if root is None:
        return None
    path = root / TORCHREID_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: torchreid is installed but has no {TORCHREID_FILES[name]} "
                                f"(expected {TORCHREID_PIN})")
    saved = {k: sys.modules.get(k) for k in _PARENTS}
    try:
        for parent in _PARENTS:  # stand-ins: importing the real package would import torchvision & co.
            stub = types.ModuleType(parent)
            stub.__path__ = [str(root.joinpath(*parent.split(".")[1:]))]
            sys.modules[parent] = stub
        spec = importlib.util.spec_from_file_location(f"_peer_torchreid_{name}", path)
        module = importlib.util.module_from_spec(spec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Cython evaluation ... is unavailable"
            spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        for k in [k for k in sys.modules if k.startswith("torchreid.reid.metrics.rank_cylib.")]:
            sys.modules.pop(k)
    return module
