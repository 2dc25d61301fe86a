"""One training run from a Config: dataset -> loaders -> model -> ``fit`` into a run directory.

``train_run`` is what ``esnet train`` and ``python -m esnet.train`` call. It owns the
run directory's life cycle (see :mod:`esnet.engine.rundir`): lock, refuse to overwrite,
config/meta, resume, and the callbacks that write the rest.
"""
from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

import esnet
from esnet.checkpoint import Checkpoint, legacy_p_keys, load_backbone_weights, load_checkpoint, restore_model
from esnet.config import Config, dumps, override, to_dict
from esnet.data.datasets import load_dataset
from esnet.data.loader import build_test_loader, build_train_loader, relabel
from esnet.data.types import ReidData
from esnet.engine import rundir
from esnet.engine.callbacks import Callback, EvalCallback, ProbeCallback, RunDirCallback
from esnet.engine.code import code_changes, code_identity, stored_files
from esnet.engine.trainer import build_optimizer, build_scheduler, fit, resolve_device
from esnet.model import build_model

RESUME_MUTABLE = (
    "optim.epochs",
    "train.device",
    "train.amp",
    "train.eval_every",
    "train.max_iters_per_epoch",
    "data.workers",
)
"""Config keys that --resume may change; any other difference from the stored config is refused."""

EVAL_BATCH_SIZE = 128


@dataclass(frozen=True)
class RunResult:
    """What a finished ``train_run`` did.

    Attributes:
        run_dir: the run directory.
        epochs_done: epochs finished in total (including those before a resume).
        last_record: the last epoch's metrics record ({} if no epoch ran now).
        best_mAP: best evaluated mAP over the run, or None.
    """

    run_dir: str
    epochs_done: int
    last_record: dict[str, Any]
    best_mAP: float | None


class _LastRecord(Callback):
    def __init__(self) -> None:
        self.record: dict[str, Any] = {}

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        self.record = record


def _changes(a: Config, b: Config) -> dict[str, Any]:
    """The dotted keys whose values differ between ``a`` and ``b``, each with its value in ``b``."""
    da, db = to_dict(a), to_dict(b)
    return {f"{s}.{k}": db[s][k] for s in da for k in da[s] if da[s][k] != db[s][k]}


def resume_config(stored: Config, requested: Config | None, updates: dict[str, Any] | None = None) -> Config:
    """The config a resumed run continues with.

    Args:
        stored: the run directory's config.json.
        requested: a full config the caller built (e.g. from --config + flags), or None.
        updates: dotted overrides; applied to ``stored`` when ``requested`` is None.
    Raises:
        ValueError: a key outside :data:`RESUME_MUTABLE` would change.
    """
    new = requested if requested is not None else override(stored, updates or {})
    changed = [k for k in _changes(stored, new) if k not in RESUME_MUTABLE]
    if changed:
        raise ValueError(
            f"--resume cannot change {changed} (the run was started with other values); "
            f"only {list(RESUME_MUTABLE)} may change"
        )
    return new


def _check_fresh(run_dir: Path) -> None:
    """Refuse to start a new run over an existing one."""
    if not any((run_dir / name).exists() for name in (rundir.CONFIG_FILE, rundir.STATUS_FILE, rundir.METRICS_FILE)):
        return  # empty, or only our own fresh lock
    status = rundir.read_status(run_dir)
    what = f"a {status.state} run ({status.epoch}/{status.total_epochs} epochs)"
    if status.state == "unknown":
        what = "run files"
    raise rundir.RunDirError(
        f"run dir {str(run_dir)!r} already holds {what}; pass --resume to continue it "
        "or choose another --out (nothing was overwritten)"
    )


def _meta(cfg: Config, data: ReidData, num_classes: int, device: torch.device, command: str,
          world_size: int, code_package: str) -> dict[str, Any]:
    dev = str(device)
    if device.type == "cuda":
        dev += f" ({torch.cuda.get_device_name(device)})"
    return {
        "dataset": data.name,
        "root": data.root,
        "num_classes": num_classes,
        "num_train_images": len(data.train),
        "num_train_ids": data.num_train_pids(),
        "num_query_images": len(data.query),
        "num_gallery_images": len(data.gallery),
        "esnet_version": esnet.__version__,
        "code_package": code_package,
        "command": command,
        "started_at": rundir.now_iso(),
        "device": dev,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "world_size": world_size,
        "resumed_at": [],
    }


def build_callbacks(cfg: Config, run_dir: Path, data: ReidData, num_classes: int, *,
                    start_epoch: int = 0, code: dict[str, Any] | None = None) -> list[Callback]:
    """Eval (if ``train.eval_every``) -> probes (if ``train.probe_count``) -> run-dir writer.

    ``code`` (:func:`esnet.engine.code.code_identity`) is stored in every checkpoint.

    Raises:
        ValueError: evaluation asked for but the dataset has no query or gallery images.
    """
    callbacks: list[Callback] = []
    if cfg.train.eval_every > 0:
        if not data.query or not data.gallery:
            raise ValueError(
                f"train.eval_every={cfg.train.eval_every} but dataset {data.name!r} at {data.root!r} has "
                f"{len(data.query)} query and {len(data.gallery)} gallery images; set train.eval_every to 0"
            )
        if data.protocol != "standard":
            raise ValueError(
                f"in-training evaluation supports the standard protocol only, dataset {data.name!r} uses "
                f"{data.protocol!r}; set train.eval_every to 0 and evaluate with 'esnet eval'"
            )
        callbacks.append(EvalCallback(
            build_test_loader(data.query, cfg.data, batch_size=EVAL_BATCH_SIZE),
            build_test_loader(data.gallery, cfg.data, batch_size=EVAL_BATCH_SIZE),
            data.query, data.gallery, every=cfg.train.eval_every,
        ))
    if cfg.train.probe_count > 0:
        callbacks.append(ProbeCallback(run_dir, data.train, relabel(data.train), data.root))
    callbacks.append(RunDirCallback(run_dir, num_classes=num_classes, start_epoch=start_epoch,
                                    total_epochs=cfg.optim.epochs, code=code))
    return callbacks


# --- the steps of train_run, in order ------------------------------------------------------
def _resume_checks(out: Path, resume_updates: dict[str, Any] | None, *,
                   holds_lock: bool = True) -> tuple[Config, Config, Checkpoint]:
    """What --resume continues from, checked: (stored config, config to run, last checkpoint).

    ``holds_lock`` (rank 0): it first removes the temporary files of a dead writer. Other DDP
    ranks do not hold the lock and leave them: one may be rank 0's write in progress.

    Raises:
        RunDirError: no run, no ``last.pt``, a checkpoint from before learnable P-pooling, a
            checkpoint whose config differs beyond :data:`RESUME_MUTABLE`, or more epochs
            done than ``optim.epochs``.
    """
    if holds_lock:
        rundir.remove_orphan_tmp(out)  # we hold the lock: a .tmp here is a dead writer's, e.g. a killed save
    if not (out / rundir.CONFIG_FILE).exists():
        raise rundir.RunDirError(f"cannot resume: {str(out)!r} holds no run ({rundir.CONFIG_FILE} missing)")
    stored = rundir.read_config(out)
    cfg = resume_config(stored, None, resume_updates)
    last_pt = rundir.checkpoint_path(out, "last")
    if not last_pt.exists():
        raise rundir.RunDirError(
            f"cannot resume: {str(last_pt)!r} does not exist (no epoch finished); start a new run instead"
        )
    ckpt = load_checkpoint(last_pt)
    if legacy_p_keys(ckpt.model_state):
        raise rundir.RunDirError(
            f"cannot resume: {str(last_pt)!r} predates learnable P-pooling (raw exponent "
            f"{legacy_p_keys(ckpt.model_state)[0]!r}, p in the base-lr group); its optimizer state does "
            "not fit p = 1 + softplus(q) in its own group (optim.p_lr_mult). Its weights still load for eval, "
            "search and export; start a new run to train further"
        )
    if [k for k in _changes(ckpt.config, cfg) if k not in RESUME_MUTABLE]:
        raise rundir.RunDirError(f"cannot resume: {str(last_pt)!r} was saved with a different config than "
                                 f"{str(out / rundir.CONFIG_FILE)!r}")
    if ckpt.epoch > cfg.optim.epochs:
        raise rundir.RunDirError(f"cannot resume: {ckpt.epoch} epochs are already done, more than "
                                 f"optim.epochs={cfg.optim.epochs}")
    return stored, cfg, ckpt


def _build_data(cfg: Config, rank: int, world_size: int) -> tuple[ReidData, Any, int]:
    """(dataset, this rank's PK-sampled train loader, number of training identities)."""
    data = load_dataset(cfg.data.dataset, cfg.data.root, camera_regex=cfg.data.camera_regex)
    loader, num_classes = build_train_loader(data.train, cfg.data, seed=cfg.train.seed, rank=rank,
                                             world_size=world_size)
    return data, loader, num_classes


def _build_model(cfg: Config, num_classes: int, ckpt: Checkpoint | None,
                 dev: torch.device) -> tuple[torch.nn.Module, int, dict[str, Any] | None]:
    """(model on ``dev``, first epoch to run, AMP scaler state): seeded initialisation, then the
    checkpoint's weights (resume) or the backbone weights (``model.weights``).

    Initialisation is seeded from ``train.seed`` inside ``fork_rng`` (the caller's global RNG is
    untouched), so every DDP rank builds the same model.

    Raises:
        RunDirError: the checkpoint does not fit the dataset or lacks optimizer/scheduler state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg.model, num_classes)
    start_epoch, scaler_state = 0, None
    if ckpt is not None:
        if ckpt.num_classes != num_classes:
            raise rundir.RunDirError(
                f"cannot resume: the checkpoint has {ckpt.num_classes} classes, the dataset now {num_classes}"
            )
        if ckpt.optimizer_state is None or ckpt.scheduler_state is None:
            raise rundir.RunDirError("cannot resume: the checkpoint lacks optimizer or scheduler state")
        restore_model(ckpt, model)
        start_epoch = ckpt.epoch
        scaler_state = ckpt.extra.get("scaler") or None
    elif cfg.model.weights:
        load_backbone_weights(model, cfg.model.weights)
    model.to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)  # before DDP builds its gradient buckets
    return model, start_epoch, scaler_state


def _build_optimiser(model: torch.nn.Module, cfg: Config, ckpt: Checkpoint | None) -> tuple[Any, Any]:
    """(optimizer, scheduler) for ``model``, with the checkpoint's states on resume."""
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt.optimizer_state)  # moves the state to the parameters' device
        scheduler.load_state_dict(ckpt.scheduler_state)
    return optimizer, scheduler


def _write_header(out: Path, cfg: Config, data: ReidData, num_classes: int, dev: torch.device, *, command: str,
                  world_size: int, resumed_from: tuple[Config, int] | None, code_package: str,
                  code_changed: list[str] | None = None) -> None:
    """config.json and meta.json of a fresh run; on resume (``resumed_from`` = (stored config,
    first epoch)) the updated config, the resume appended to meta.json (with the esnet source
    files changed since the checkpoint, None when it predates code records), and metrics.jsonl
    cut back to the checkpoint's epoch."""
    if resumed_from is None:
        rundir.write_config(out, cfg)
        rundir.write_meta(out, _meta(cfg, data, num_classes, dev, command, world_size, code_package))
        return
    stored, start_epoch = resumed_from
    if (out / rundir.CONFIG_FILE).read_text(encoding="utf-8") != dumps(cfg):
        rundir.write_config(out, cfg)
    meta = rundir.read_meta(out)
    at = rundir.now_iso()
    meta["resumed_at"] = [*meta.get("resumed_at", []), at]
    meta["resumes"] = [*meta.get("resumes", []), {"at": at, "from_epoch": start_epoch, "command": command,
                                                  "changed": _changes(stored, cfg), "code_package": code_package,
                                                  "code_changed": code_changed}]
    rundir.write_meta(out, meta)
    rundir.truncate_metrics(out, start_epoch)


def _check_code(out: Path, ckpt: Checkpoint | None, allow_code_change: bool) -> tuple[dict[str, Any], list[str] | None]:
    """(this process's code identity, the esnet source files changed since the checkpoint was saved).

    The files are None for a fresh run and for a checkpoint saved before code records.

    Raises:
        RunDirError: on resume, a malformed code record, or changed files without ``allow_code_change``.
    """
    if ckpt is None or "code" not in ckpt.extra:
        return code_identity(), None
    last_pt = rundir.checkpoint_path(out, "last")
    try:
        stored = stored_files(ckpt.extra["code"])
    except ValueError as e:
        raise rundir.RunDirError(f"cannot resume: {str(last_pt)!r}: {e}") from None
    code = code_identity(stored)
    changed = code_changes(stored, code)
    if changed and not allow_code_change:
        shown = ", ".join(f"esnet/{rel}" for rel in changed[:6])
        if len(changed) > 6:
            shown += f" and {len(changed) - 6} more"
        was = ckpt.extra["code"].get("package")
        raise rundir.RunDirError(
            f"cannot resume exactly: esnet's source differs from the code that saved {str(last_pt)!r} "
            f"(epoch {ckpt.epoch}) in {shown}, so the epochs after it would not equal an uninterrupted run's. "
            f"Resume with the code the run was started with (it ran from {was!r}, this is {code['package']!r}), "
            "or pass --allow-code-change to continue with this code (recorded in meta.json)"
        )
    return code, changed


def _distributed(model: torch.nn.Module, dev: torch.device, world_size: int) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel when ``world_size`` > 1, else ``model``."""
    if world_size > 1:
        return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    return model


def train_run(
    cfg: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    resume_updates: dict[str, Any] | None = None,
    command: str = "",
    callbacks: Sequence[Callback] = (),
    device: torch.device | None = None,
    rank: int = 0,
    world_size: int = 1,
    allow_code_change: bool = False,
) -> RunResult:
    """Train (or continue) one run into ``run_dir``.

    Fresh run: ``run_dir`` must be missing, empty or hold no run files. Resume: the
    stored config.json is the config (``cfg`` is ignored); ``resume_updates`` may change
    the keys in :data:`RESUME_MUTABLE` (e.g. ``{"optim.epochs": 200}`` to train longer).

    Model initialisation is seeded from ``train.seed`` inside ``fork_rng`` (the caller's
    global RNG is untouched); with DistributedDataParallel every rank builds the same
    model. Only rank 0 locks and writes the run directory.

    Args:
        cfg: the resolved config (fresh runs).
        run_dir: output directory.
        resume: continue from ``checkpoints/last.pt``.
        resume_updates: dotted overrides allowed on resume.
        command: the command line, stored in meta.json.
        callbacks: extra callbacks (progress display), run after the built-in ones.
        device: overrides ``train.device`` (DDP passes ``cuda:<local_rank>``).
        rank, world_size: distributed position; the model is wrapped in DDP when > 1.
        allow_code_change: resume even though esnet's source files differ from those of the
            process that saved the checkpoint (every checkpoint records their hashes); the
            changed files go to meta.json.
    Returns:
        RunResult.
    Raises:
        RunDirError: the directory is locked, already holds a run (fresh), has no
            checkpoint (resume), or esnet's source changed since the checkpoint (resume
            without ``allow_code_change``).
        ValueError, DatasetError, CheckpointError: bad config, dataset or checkpoint.
        FloatingPointError: NaN/inf loss.
    """
    out = Path(run_dir)
    writer = rank == 0
    if writer:
        rundir.check_out_dir(out)
    created = [p for p in (out, *out.absolute().parents) if not p.exists()]  # the folders the lock will make
    lock = rundir.acquire_lock(out) if writer else None
    started = False
    try:
        ckpt, stored = None, None
        if resume:
            stored, cfg, ckpt = _resume_checks(out, resume_updates, holds_lock=writer)
        elif writer:
            _check_fresh(out)
        if cfg.train.seed < 0:
            raise ValueError(f"train.seed must be >= 0, got {cfg.train.seed!r}")
        dev = device if device is not None else resolve_device(cfg.train.device)

        data, loader, num_classes = _build_data(cfg, rank, world_size)
        model, start_epoch, scaler_state = _build_model(cfg, num_classes, ckpt, dev)
        optimizer, scheduler = _build_optimiser(model, cfg, ckpt)
        code, code_changed = _check_code(out, ckpt, allow_code_change)  # the training code is imported by now
        own: list[Callback] = []
        if writer:
            own = build_callbacks(cfg, out, data, num_classes, start_epoch=start_epoch,
                                  code=code)  # may refuse: before writing
            _write_header(out, cfg, data, num_classes, dev, command=command, world_size=world_size,
                          resumed_from=None if ckpt is None else (stored, start_epoch),
                          code_package=code["package"], code_changed=code_changed)
        started = True
        last = _LastRecord()
        fit(_distributed(model, dev, world_size), loader, optimizer, scheduler, cfg, [*own, *callbacks, last],
            start_epoch=start_epoch, device=dev, scaler_state=scaler_state, rank=rank, world_size=world_size)
        best = rundir.best_eval(rundir.read_metrics(out)) if writer else None
        return RunResult(
            run_dir=str(out),
            epochs_done=cfg.optim.epochs,
            last_record=last.record,
            best_mAP=float(best["eval"]["mAP"]) if best else None,
        )
    finally:
        if lock is not None:
            rundir.release_lock(lock)
            if created and not started and not any(out.iterdir()):
                for made in created:  # we made it (and its missing parents) and wrote nothing: leave no trace
                    try:
                        os.rmdir(made)
                    except OSError:
                        break  # not empty (something else was put there) or not ours to remove
