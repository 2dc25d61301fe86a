"""The embedded demo: four short training runs on the synthetic demo data, kept in ``assets/``.

``esnet demo build`` (``make demo-assets``) writes, under ``assets/demo_runs/``::

    esnet-p/        ES-Net, salient erasing, P-pooling   (keeps checkpoints/last.pt)
    esnet-avg/      ES-Net, salient erasing, avg pooling
    esnet-max/      ES-Net, salient erasing, max pooling
    baseline-avg/   erasing off, avg pooling (the BoT-style baseline)

Each is an ordinary run directory (see :mod:`esnet.engine.rundir`) trained with one
budget and seed on ``assets/demo_data`` (MobileNetV2 with the real ImageNet weights,
128x64, CPU). To keep the assets small, ``checkpoints/best.pt`` (chosen on the test split,
never the default) is deleted from every run and the ES-Net P-pooling run's ``last.pt`` is
rewritten as a slim checkpoint:
model weights in float16, no optimizer (``checkpoint.write_release_checkpoint(pack=False)``); the other runs keep
no checkpoint at all (their metrics, probes and erasing records are what the pages
show). Everything is seeded and trained on the CPU, so the same command gives the same
numbers.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from esnet.checkpoint import CheckpointError, write_release_checkpoint
from esnet.config import Config, override
from esnet.data.demo import demo_is_current, demo_marker, generate_demo
from esnet.engine.run import train_run

DEMO_RUNS: dict[str, dict[str, str]] = {
    "esnet-p": {"model.pool": "p", "model.erasing": "salient", "model.test_feature": "concat"},
    "esnet-avg": {"model.pool": "avg", "model.erasing": "salient", "model.test_feature": "concat"},
    "esnet-max": {"model.pool": "max", "model.erasing": "salient", "model.test_feature": "concat"},
    "baseline-avg": {"model.pool": "avg", "model.erasing": "off", "model.test_feature": "global"},
}
"""Run name -> the config keys that differ between the demo runs."""

CHECKPOINT_RUN = "esnet-p"
"""The one demo run that keeps a (slim) checkpoint: the model the Search pages load."""

DEMO_BUDGET: dict[str, object] = {
    "data.dataset": "demo",
    "data.height": 128,
    "data.width": 64,
    "data.batch_size": 32,
    "data.num_instances": 4,
    "data.workers": 1,
    "model.backbone": "mobilenet_v2",
    "optim.epochs": 8,
    "optim.lr": 3.5e-4,  # what the committed demo runs were trained with (the default is now 1e-3)
    "optim.warmup_epochs": 1,
    "optim.milestones": (5, 7),
    "train.seed": 0,
    "train.device": "cpu",
    "train.eval_every": 2,
    "train.probe_count": 16,
}
"""What every demo run shares: one budget, one seed, one schedule."""


@dataclass(frozen=True)
class DemoBuild:
    """What ``build_demo_assets`` wrote: run name -> run dir, and the slim checkpoint."""

    runs: dict[str, str]
    checkpoint: str
    seconds: float


def demo_config(name: str, data_root: str | Path, weights: str | Path, epochs: int | None = None) -> Config:
    """The config of demo run ``name`` (a key of ``DEMO_RUNS``)."""
    if name not in DEMO_RUNS:
        raise ValueError(f"demo run must be one of {sorted(DEMO_RUNS)}, got {name!r}")
    updates: dict[str, object] = {**DEMO_BUDGET, **DEMO_RUNS[name], "data.root": str(data_root),
                                  "model.weights": str(weights)}
    if epochs is not None:
        updates["optim.epochs"] = epochs
        updates["optim.milestones"] = tuple(m for m in (5, 7) if m < epochs) or ()
        updates["optim.warmup_epochs"] = min(1, epochs - 1)
    return override(Config(), updates)


def build_demo_assets(
    out: str | Path,
    *,
    data_root: str | Path,
    weights: str | Path,
    runs: tuple[str, ...] = tuple(DEMO_RUNS),
    epochs: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> DemoBuild:
    """Generate the demo data if needed, train the demo runs into ``out`` and slim them.

    Each run is trained into ``<out>/.<name>.building`` and moved into place only when it
    finished, so an interrupted build never leaves a half-trained run that looks done.

    Args:
        out: directory for the run directories (``assets/demo_runs``).
        data_root: demo dataset directory (generated when missing or outdated).
        weights: the MobileNetV2 ImageNet state dict (``esnet weights fetch mobilenet_v2``).
        runs: which of ``DEMO_RUNS`` to build.
        epochs: override the budget (tests use 1).
        overwrite: replace existing runs of the same name.
        log: progress lines.
    Raises:
        ValueError: unknown run name, or a run exists and ``overwrite`` is False.
    """
    start = time.perf_counter()
    unknown = [r for r in runs if r not in DEMO_RUNS]
    if unknown:
        raise ValueError(f"unknown demo runs {unknown}; choose from {sorted(DEMO_RUNS)}")
    if not Path(weights).is_file():
        raise CheckpointError(f"weights file {str(weights)!r} does not exist; run 'esnet weights fetch mobilenet_v2'")
    out = Path(out)
    for name in runs:
        if (out / name).exists() and not overwrite:
            raise ValueError(f"{out / name} already exists; pass overwrite to rebuild it")
    if not demo_is_current(data_root):
        log(f"generating the demo dataset in {data_root}")
        generate_demo(data_root, overwrite=demo_marker(data_root) is not None)
    done: dict[str, str] = {}
    checkpoint = ""
    for name in runs:
        cfg = demo_config(name, data_root, weights, epochs)
        building = out / f".{name}.building"
        if building.exists():
            shutil.rmtree(building)
        log(f"training demo run {name} ({cfg.optim.epochs} epochs) ...")
        t0 = time.perf_counter()
        train_run(cfg, building, command=f"esnet demo build (run {name})")
        (building / "checkpoints" / "best.pt").unlink(missing_ok=True)
        last = building / "checkpoints" / "last.pt"
        if name == CHECKPOINT_RUN and last.exists():
            write_release_checkpoint(last, last, pack=False)  # float16, no optimizer
        elif last.exists():
            last.unlink()
            shutil.rmtree(building / "checkpoints", ignore_errors=True)
        if (out / name).exists():
            shutil.rmtree(out / name)
        building.rename(out / name)
        done[name] = str(out / name)
        if name == CHECKPOINT_RUN:
            checkpoint = str(out / name / "checkpoints" / "last.pt")
        log(f"  {name}: {time.perf_counter() - t0:.0f} s")
    return DemoBuild(runs=done, checkpoint=checkpoint, seconds=round(time.perf_counter() - start, 1))

