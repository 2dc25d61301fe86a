"""Imports go one way: pages -> app -> esnet.api -> engine|search|saliency -> model|losses|data|metrics -> config."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lower rank = deeper. A module may import esnet modules of its own rank or below.
RANKS = {
    "esnet": 0,  # the package __init__: version only
    "esnet.config": 0,
    "esnet.atomic": 0,  # atomic writes, standard library only: every layer may use it
    "esnet.paths": 0,  # the cache-folder rule, standard library only
    "esnet.data": 1,
    "esnet.metrics": 1,
    "esnet.model": 1,
    "esnet.losses": 1,
    "esnet.checkpoint": 2,
    "esnet.weights": 2,
    "esnet.engine": 3,
    "esnet.search": 3,
    "esnet.saliency": 3,
    "esnet.embedding": 3,
    "esnet.projection": 3,
    "esnet.export": 3,
    "esnet.evaluation": 3,
    "esnet.runview": 3,
    "esnet.train": 4,
    "esnet.api": 4,
    "esnet.demo_build": 4,
    "esnet.cli": 5,
    "app": 6,
    "pages": 7,
    "app.main": 8,  # the router (streamlit run app/main.py)
}


def _rank(module: str) -> int | None:
    best = None
    for prefix, rank in RANKS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, rank)
    return None if best is None else best[1]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from esnet import api` imports esnet.api: record module.name per alias.
            out.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def _sources() -> list[Path]:
    return [p for d in ("esnet", "app", "pages") for p in (ROOT / d).rglob("*.py")]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    me = _module_name(path)
    my_rank = _rank(me)
    assert my_rank is not None, f"{me} has no layer in RANKS; add it"
    for imp in _imports(path):
        rank = _rank(imp)
        if rank is None:
            continue
        assert rank <= my_rank, f"{me} (rank {my_rank}) imports {imp} (rank {rank}): imports must point down"


@pytest.mark.parametrize("path", [p for p in _sources() if _module_name(p).startswith("esnet")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_library_never_imports_streamlit(path: Path) -> None:
    bad = [i for i in _imports(path) if i.split(".")[0] in ("streamlit", "plotly")]
    assert not bad, f"{path.name} imports UI packages {bad}: the library returns data, app/ draws"


@pytest.mark.parametrize("path", [p for p in _sources() if _module_name(p).startswith("pages")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_do_no_model_math(path: Path) -> None:
    for imp in _imports(path):
        assert imp.split(".")[0] != "torch", f"{path.name} imports torch: pages call esnet.api only"
        if imp.startswith("esnet"):
            assert imp == "esnet.api" or imp.startswith("esnet.api."), f"{path.name} imports {imp}: pages may import esnet.api only"


def test_rank_table_detects_an_upward_import() -> None:
    # The checker itself must be able to fail.
    assert _rank("esnet.model.esnet") == 1
    assert _rank("esnet.api") == 4 > _rank("esnet.engine.trainer")
    assert _rank("numpy") is None
