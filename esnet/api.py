"""The façade the dashboard (app/, pages/) imports: plain functions returning data.

Pages never import torch or esnet internals; they call these.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from esnet.data.check import check_dataset
from esnet.data.datasets import DATASETS, load_dataset
from esnet.data.types import DatasetError
from esnet.engine import rundir
from esnet.engine.rundir import RunDirError
from esnet.runview import (
    ErasingFrame,
    PoolingDemo,
    block_positions,
    cmc_frame,
    erasing_frames,
    metrics_frame,
    pooling_demo,
    runs_frame,
)

__all__ = [
    "DATASETS", "DatasetError", "ErasingFrame", "PoolingDemo", "RunDirError", "TrainingJob", "block_positions",
    "cmc_frame", "dataset_overview", "default_demo_root", "default_runs_dir", "ensure_demo_data", "erasing_frames",
    "metrics_frame", "pooling_demo", "read_run_config", "run_status", "runs_frame", "start_training",
    "stop_training",
]

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


def default_runs_dir() -> Path:
    """The runs directory the dashboard opens first (``$ESNET_RUNS_DIR`` or the embedded demo runs)."""
    return Path(os.environ.get("ESNET_RUNS_DIR", REPO_ROOT / "assets" / "demo_runs"))


def read_run_config(run_dir: str | Path) -> dict:
    """config.json of a run as a nested dict (for display).

    Raises:
        RunDirError: missing directory or unreadable config.
    """
    from esnet.config import to_dict

    return to_dict(rundir.read_config(run_dir))


def run_status(run_dir: str | Path) -> rundir.RunStatus:
    """status.json of a run (a dead trainer's ``running`` reads ``failed``)."""
    return rundir.read_status(run_dir)


@dataclass(frozen=True)
class TrainingJob:
    """A training process started from the dashboard.

    Attributes:
        pid: the ``esnet train`` process id.
        run_dir: where it writes.
        log: its stdout/stderr file (``<run_dir>/train.log``).
        command: the argument list it was started with.
    """

    pid: int
    run_dir: str
    log: str
    command: tuple[str, ...]


TRAIN_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def start_training(
    runs_dir: str | Path,
    name: str,
    *,
    dataset: str,
    root: str | Path,
    backbone: str = "mobilenet_v2",
    pool: str = "p",
    erasing: str = "salient",
    epochs: int = 8,
    size: str = "128x64",
    batch: int = 32,
    weights: str = "",
    device: str = "cpu",
    eval_every: int = 2,
) -> TrainingJob:
    """Start ``esnet train`` as its own process (new session) writing ``runs_dir/name``.

    The dashboard only reads the run directory; the process outlives the page. The
    trainer validates everything else (dataset, sizes) and reports into status.json and
    train.log.

    Raises:
        ValueError: a bad run name (letters, digits, ``-_.`` only; not starting with ``.``),
            epochs < 1, or the run directory already holds a run.
        RunDirError: ``runs_dir`` does not exist.
    """
    if not name or name.startswith(".") or not set(name) <= TRAIN_NAME_CHARS:
        raise ValueError(f"run name must use letters, digits, '-', '_' or '.' and not start with '.', got {name!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    runs = Path(runs_dir)
    if not runs.is_dir():
        raise RunDirError(f"runs dir {str(runs)!r} does not exist")
    out = runs / name
    if out.exists() and rundir.has_run_files(out):
        raise ValueError(f"{str(out)!r} already holds a run; choose another name")
    out.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "esnet.cli", "train", "--out", str(out), "--dataset", dataset, "--root", str(root),
            "--backbone", backbone, "--pool", pool, "--erasing", erasing, "--epochs", str(epochs), "--size", size,
            "--batch", str(batch), "--device", device, "--eval-every", str(eval_every), "--workers", "0"]
    if weights:
        argv += ["--weights", str(weights)]
    log = out / "train.log"
    with open(log, "ab") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(REPO_ROOT))
    return TrainingJob(pid=proc.pid, run_dir=str(out), log=str(log), command=tuple(argv))


def stop_training(run_dir: str | Path, *, timeout_s: float = 30.0) -> str:
    """Ask the trainer writing ``run_dir`` to stop (SIGINT).

    The trainer finishes the batch (or evaluation / checkpoint) in progress, marks the
    run failed with "stopped by SIGINT ...", and can be continued with ``--resume``.

    Returns:
        ``"stopped"`` (it ended within ``timeout_s``), ``"stopping"`` (signalled, still
        finishing its current step) or ``"not running"`` (no live trainer owns the run).
    Raises:
        RunDirError: the run directory does not exist.
    """
    status = rundir.read_status(run_dir)
    if status.state != "running" or not status.pid or not rundir.pid_alive(status.pid):
        return "not running"
    os.kill(status.pid, signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if rundir.read_status(run_dir).state != "running":
            return "stopped"
        time.sleep(0.2)
    return "stopping"
