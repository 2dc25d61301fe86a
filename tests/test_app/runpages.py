"""Shared set-up for the AppTests of the run-centred pages (runs, monitor, erasing, pooling)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from esnet.data.demo import generate_demo

ROOT = Path(__file__).resolve().parents[2]
ENTRY = str(ROOT / "app" / "main.py")


def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-id demo dataset, so the Runs page never generates the full one."""
    out = tmp_path_factory.mktemp("demo") / "demo_data"
    generate_demo(out, num_ids=12, seed=3)
    return out


def open_app(monkeypatch: pytest.MonkeyPatch, runs_dir: Path, demo_root: Path, page: str | None = None, *,
             allowed: list[Path] | None = None) -> AppTest:
    """The dashboard on ``runs_dir`` (``$ESNET_RUNS_DIR``), switched to ``page`` (e.g. "../pages/monitor.py",
    relative to the entry app/main.py).

    ``$ESNET_ALLOWED_ROOTS`` is ``allowed`` (default: the parent of ``runs_dir``).
    """
    monkeypatch.setenv("ESNET_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("ESNET_DEMO_ROOT", str(demo_root))
    if "ESNET_USER_RUNS_DIR" not in os.environ:  # runs started from the form: never the repository's runs/
        monkeypatch.setenv("ESNET_USER_RUNS_DIR", str(runs_dir.parent / "user-runs"))
    monkeypatch.setenv("ESNET_ALLOWED_ROOTS", ":".join(str(p) for p in (allowed or [runs_dir.parent])))
    at = AppTest.from_file(ENTRY, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    if page is not None:
        at.switch_page(page).run()
    return at


def plotly_specs(at: AppTest) -> list[dict]:
    """The figure JSON of every plotly chart on the page, in order."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def plotly_values(v: list | dict) -> list[float]:
    """A plotly data array as floats (plotly encodes numpy arrays as {"dtype", "bdata"})."""
    if isinstance(v, dict):
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).astype(float).tolist()
    return [float(x) for x in v]


def frame_with(at: AppTest, column: str):
    """The value of the first st.dataframe on the page that has ``column`` (AppTest does not expose their keys)."""
    for el in at.dataframe:
        if column in el.value.columns:
            return el.value
    shown = [list(e.value.columns) for e in at.dataframe]
    raise AssertionError(f"no dataframe with column {column!r}; columns: {shown}")
