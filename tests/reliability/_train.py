"""Helpers shared by the reliability tests that run real ``esnet train`` processes."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.synthetic import make_market

REPO = Path(__file__).resolve().parents[2]

# 16 ids x 4 images, batch 8 = 4 ids x 2: 8 iterations of a 32x16 MobileNetV2 per epoch (~0.1 s each
# on one CPU thread), evaluation on 4 query / 8 gallery images after every epoch, 2 probes.
TINY = ["--dataset", "market1501", "--size", "32x16", "--batch", "8", "--instances", "2", "--workers", "0",
        "--backbone", "mobilenet_v2", "--probes", "2", "--device", "cpu", "--eval-every", "1", "--seed", "3",
        "--set", "optim.warmup_epochs=1"]


def tiny_market(root: Path) -> Path:
    return make_market(root, train_ids=16, per_id=4)


def esnet_command() -> list[str]:
    """The installed ``esnet`` console script (falls back to ``python -m esnet.cli``)."""
    script = Path(sys.executable).with_name("esnet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "esnet.cli"]


def train_args(root: Path, out: Path, epochs: int) -> list[str]:
    return ["train", "--root", str(root), "--out", str(out), "--epochs", str(epochs), *TINY]


def child_env() -> dict[str, str]:
    """One intra-op thread, like the test process (tests/conftest.py): same arithmetic, same results."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start(args: Sequence[str], log: Path) -> subprocess.Popen:
    """``esnet <args>`` as a child process, stdout + stderr into ``log``."""
    with open(log, "wb") as f:
        return subprocess.Popen([*esnet_command(), *args], stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=REPO, env=child_env())


def wait_for(what: str, cond: Callable[[], bool], proc: subprocess.Popen | None, log: Path | None,
             timeout_s: float = 120.0, poll_s: float = 0.005) -> None:
    """Poll ``cond`` until true; fail naming ``what`` on timeout or if ``proc`` ends first."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace")[-2000:] if log is not None else ""
            raise AssertionError(f"the trainer exited ({proc.returncode}) before {what}:\n{text}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
