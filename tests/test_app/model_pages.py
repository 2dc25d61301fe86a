"""Shared set-up of the model-page AppTests (rank browser, embeddings, search, evaluate).

Each test module gets its own runs directory holding the embedded demo run (a symlink to
``assets/demo_runs/esnet-p``), the suite's demo dataset and its shared embedding cache
(tests/conftest.py): the demo is embedded once per test session, later runs read the cache
(and the in-process ``st.cache_resource``).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest


ROOT = Path(__file__).resolve().parents[2]
ENTRY = str(ROOT / "app" / "main.py")
DEMO_RUN = Path(os.environ.get("ESNET_TEST_DEMO_RUN", ROOT / "assets" / "demo_runs" / "esnet-p"))
RUN = "esnet-p"
TIMEOUT = 300  # seconds per script run: the first evaluation embeds 1,020 images on a shared CPU


@dataclass(frozen=True)
class DemoEnv:
    """Where a test module's app looks: runs dir (one run, ``RUN``), dataset root, cache dir."""

    runs_dir: Path
    run_dir: Path
    data_root: Path
    cache_dir: Path


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory: pytest.TempPathFactory, demo_data: Path, embedding_cache: Path) -> DemoEnv:
    """The demo run + demo data behind the dashboard, through ``$ESNET_*`` for the whole module.

    The embedding cache is the suite's shared one, so the demo is embedded once per test session."""
    assert any((DEMO_RUN / "checkpoints" / f).is_file() for f in ("best.pt", "last.pt")), \
        f"no demo checkpoint at {DEMO_RUN}: build it with `make demo-assets`"
    base = tmp_path_factory.mktemp("model_pages")
    runs = base / "runs"
    runs.mkdir()
    (runs / RUN).symlink_to(DEMO_RUN.resolve(), target_is_directory=True)
    env = DemoEnv(runs_dir=runs, run_dir=runs / RUN, data_root=demo_data, cache_dir=embedding_cache)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ESNET_RUNS_DIR", str(runs))
        mp.setenv("ESNET_DEMO_ROOT", str(env.data_root))
        mp.setenv("ESNET_CACHE_DIR", str(env.cache_dir))
        mp.setenv("ESNET_ALLOWED_ROOTS", str(base))  # broken runs live in other runs dirs under base
        yield env


def open_page(page: str, *, state: dict | None = None) -> AppTest:
    """An AppTest of the router switched to ``pages/<page>.py`` and run once (``state`` preset first)."""
    at = AppTest.from_file(ENTRY, default_timeout=TIMEOUT)
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.run()  # the router first: the page reads the sidebar's selection (switching before a run skips it)
    assert not at.exception, at.exception
    return at.switch_page(f"../pages/{page}.py").run()


def broken_run(runs_dir: Path, name: str, checkpoint: bytes | None = None, *, source: Path = DEMO_RUN) -> Path:
    """A copy of the demo run's metadata at ``runs_dir/name`` whose last.pt holds ``checkpoint`` bytes.

    Open it with ``open_page(page, state=select_run(runs_dir, name))``.
    """
    d = runs_dir / name
    (d / "checkpoints").mkdir(parents=True)
    for f in ("config.json", "meta.json", "status.json", "metrics.jsonl"):
        if (source / f).is_file():
            shutil.copy(source / f, d / f)
    (d / "checkpoints" / "last.pt").write_bytes(checkpoint if checkpoint is not None else b"not a checkpoint")
    return d


def select_run(runs_dir: Path, name: str) -> dict:
    """Session state that points the sidebar at run ``name`` of ``runs_dir``."""
    return {"esnet.runs_dir": str(runs_dir), "esnet.run": name}


def mismatched_checkpoint(path: Path) -> bytes:
    """The demo checkpoint with ``num_classes`` changed, so its classifier no longer fits the model it builds."""
    import io

    import torch

    src = path / "checkpoints" / "last.pt"
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt["num_classes"] = int(ckpt["num_classes"]) + 7
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def images(at: AppTest) -> list:
    """Every st.image element on the page."""
    return list(at.get("image"))


def image_captions(at: AppTest) -> list[str]:
    """The captions of every image on the page, in page order."""
    return [c for im in images(at) for c in im.captions]
