"""The façade the dashboard (app/, pages/) imports: plain functions returning data.

Pages never import torch or esnet internals; they call these.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from esnet.data.check import check_dataset
from esnet.data.datasets import DATASETS, load_dataset
from esnet.data.types import DatasetError

__all__ = ["DATASETS", "DatasetError", "dataset_overview", "default_demo_root", "ensure_demo_data"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_demo_root() -> Path:
    """Where the generated demo dataset lives (``$ESNET_DEMO_ROOT`` or ``assets/demo_data``)."""
    return Path(os.environ.get("ESNET_DEMO_ROOT", REPO_ROOT / "assets" / "demo_data"))


def ensure_demo_data(root: str | Path | None = None) -> Path:
    """Generate the synthetic demo dataset if it is missing or from an older generator; return its root.

    A complete dataset whose ``.complete`` marker names another ``DEMO_VERSION`` is
    replaced (atomically); a folder that is not a demo dataset is never touched.
    """
    from esnet.data.demo import demo_is_current, demo_marker, generate_demo

    out = Path(root) if root is not None else default_demo_root()
    if not demo_is_current(out):
        generate_demo(out, overwrite=demo_marker(out) is not None)
    return out


def dataset_overview(name: str, root: str | Path) -> pd.DataFrame:
    """Ids / images / cameras per split of a dataset, one row per split.

    Raises:
        DatasetError: the dataset cannot be read; the message names the file and rule.
    """
    data = load_dataset(name, str(root))
    report = check_dataset(data, verify_images=False)
    rows = [
        {"split": split, "ids": st.ids, "images": st.images, "cameras": st.cameras}
        for split, st in report.stats.items()
    ]
    return pd.DataFrame(rows, columns=["split", "ids", "images", "cameras"])
