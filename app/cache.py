"""The only place that uses st.cache_*: keyed by path (+ mtime) so edits on disk invalidate."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from esnet import api


def _mtime(path: Path) -> float:
    marker = path / ".complete"
    return marker.stat().st_mtime if marker.exists() else path.stat().st_mtime


@st.cache_data(show_spinner="Reading dataset ...")
def _overview(name: str, root: str, _mtime_key: float) -> pd.DataFrame:
    return api.dataset_overview(name, root)


def dataset_overview(name: str, root: Path) -> pd.DataFrame:
    return _overview(name, str(root), _mtime(root))


@st.cache_resource(show_spinner="Generating the demo dataset (first start only, ~5 s) ...")
def _ensure_demo(root: str) -> Path:
    return api.ensure_demo_data(root)


def demo_root() -> Path:
    """The demo dataset root (``$ESNET_DEMO_ROOT`` or assets/demo_data), generated once if missing."""
    return _ensure_demo(str(api.default_demo_root()))
