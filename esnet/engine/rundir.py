"""The run directory: what ``esnet train`` writes and what the dashboard reads.

A run directory is the whole public record of one training run. Every file is either
written atomically (temporary file in the same directory, fsync, ``os.replace``) or
appended one complete line at a time, so a reader never sees a half-written JSON
object, ``.npz`` or checkpoint; at worst it sees the last line of ``metrics.jsonl``
cut short, which every reader here ignores. Temporary files start with ``.`` and end
with ``.tmp``.

Layout (``<run_dir>/``)::

    config.json            the resolved Config (esnet.config.dumps), written at start;
                           rewritten only when --resume changes an allowed key
                           (optim.epochs, train.eval_every, ...).
    meta.json              {"dataset", "root", "num_classes", "num_train_images",
                            "num_train_ids", "num_query_images", "num_gallery_images",
                            "esnet_version", "command", "started_at" (ISO 8601),
                            "device", "torch_version", "python_version", "world_size",
                            "resumed_at": [ISO 8601, ...], "resumes": [{"at", "from_epoch",
                            "command", "changed": {dotted key: new value}}, ...]}
    status.json            {"state": "running" | "finished" | "failed", "epoch": int
                            (epochs finished), "total_epochs": int, "pid": int,
                            "updated": ISO 8601, "error": str | null}; rewritten at
                           start, after each epoch, at the end and on any exception
                           (state "failed", error = the exception in one line, e.g.
                           "FloatingPointError: loss is nan at epoch 3, iteration 17/200 ...").
    metrics.jsonl          one JSON object per finished epoch, appended + fsync'd:
                           {"epoch": int (1-based), "lr": float, "time_s": float
                            (training loop only), "img_per_s": float,
                            "loss": {"global_ce", "global_triplet", ["erase_ce",
                                     "erase_triplet"], "total"}  (epoch means),
                            "acc": {"global", ["erase"]}  (epoch mean top-1 fraction),
                            "p": {"global", ["erase"]}  ({} for avg/max pooling),
                            "eval": {"R1", "R5", "R10", "mAP", "mINP",
                                     "cmc": [first 20 CMC values]}  (evaluated epochs only)}
                           CMC/mAP values are fractions in [0, 1]. On --resume, lines
                           for epochs after the checkpoint are dropped (atomic rewrite).
    probes/probes.json     the fixed probe set, chosen once from train.seed:
                           {"probes": [{"index" (into the train split), "path"
                            (absolute), "relpath" (relative to the dataset root), "pid"
                            (dataset id), "label" (training class 0..N-1), "camid",
                            "image" ("images/NN.jpg", relative to probes/)}, ...],
                            "feature_size": [h, w], "input_size": [H, W]}
    probes/images/NN.jpg   each probe resized to the input size (RGB JPEG), so the run
                           can be viewed without the dataset.
    probes/epoch_NNNN.npz  per epoch (0000 = before training): "cam" (P, h, w) float16
                           in [0, 1], the global-branch CAM of the probe's own id, and
                           "box" (P, 4) int16 top, left, height, width in feature cells,
                           the block salient erasing drops (ESNet.erasing_replay; written
                           for every erasing mode, "off" included).
    checkpoints/last.pt    after every epoch (esnet.checkpoint.save_checkpoint; "extra" holds
                           {"scaler": GradScaler state, "record": that epoch's metrics record}).
    checkpoints/best.pt    after an evaluated epoch whose mAP beats every earlier one.
                           Per epoch the order is: metrics line, best.pt, last.pt, status,
                           so a kill anywhere leaves a directory --resume continues cleanly.
    .lock                  the owner's pid; created with O_CREAT | O_EXCL at start and
                           removed at the end. A lock whose pid is alive on this host
                           refuses a second trainer; a dead pid's lock is taken over.

Reader states. ``read_status`` reports the file's state, except that a run whose
status says ``running`` while its pid is no longer alive on this host is reported as
``failed`` with error ``"process ended unexpectedly (pid N is not running)"`` (it can
be continued with ``--resume``). A run directory without status.json reads as
``unknown``. ``list_runs`` adds ``broken`` for a directory whose config.json is
missing or invalid, except that a directory without config.json whose ``.lock`` is
held by a live process is a trainer still starting up (loading its dataset): ``running``.

Readers are pure (they write nothing) and do not raise on partial or malformed files;
a missing run directory raises :class:`RunDirError`.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from esnet.config import Config, dumps, load

CONFIG_FILE = "config.json"
META_FILE = "meta.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
PROBES_DIR = "probes"
PROBES_FILE = "probes.json"
PROBE_IMAGES_DIR = "images"
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
LOCK_FILE = ".lock"

STATES = ("running", "finished", "failed")
"""States a trainer writes into status.json."""

CMC_KEEP = 20
"""How many CMC values an evaluated epoch records."""

_RUN_FILES = (CONFIG_FILE, META_FILE, STATUS_FILE, METRICS_FILE, LOCK_FILE)
_PROBE_EPOCH_RE = re.compile(r"^epoch_(\d{4,})\.npz$")


class RunDirError(ValueError):
    """A run directory is missing, locked, or cannot be used as asked."""


def now_iso() -> str:
    """The current UTC time as ISO 8601 with seconds, e.g. ``2024-05-01T12:00:00+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- paths -----------------------------------------------------------------------------
def checkpoint_path(run_dir: str | Path, which: str = "last") -> Path:
    """``<run_dir>/checkpoints/{last,best}.pt``."""
    names = {"last": LAST_CHECKPOINT, "best": BEST_CHECKPOINT}
    if which not in names:
        raise ValueError(f"which must be one of {sorted(names)}, got {which!r}")
    return Path(run_dir) / CHECKPOINTS_DIR / names[which]


def probe_epoch_path(run_dir: str | Path, epoch: int) -> Path:
    """``<run_dir>/probes/epoch_NNNN.npz``."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch!r}")
    return Path(run_dir) / PROBES_DIR / f"epoch_{epoch:04d}.npz"


def probe_image_name(i: int) -> str:
    """Relative path (under probes/) of probe ``i``'s image, e.g. ``images/03.jpg``."""
    return f"{PROBE_IMAGES_DIR}/{i:02d}.jpg"


def has_run_files(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds any file a trainer writes (config, meta, status, metrics, lock)."""
    d = Path(run_dir)
    return any((d / name).exists() for name in _RUN_FILES)


# --- atomic writing --------------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a part.

    A temporary file in the same directory (``.<name>.*.tmp``) is written, fsync'd and
    renamed over ``path``; the directory is created if needed. On failure the temporary
    file is removed and ``path`` is unchanged.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(p.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """:func:`atomic_write_text` of ``obj`` as indented JSON (NaN/inf refused)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Append ``obj`` as one JSON line, then flush and fsync.

    If the file ends in a cut-short line (a writer died mid-line), a newline is written
    first so the new object starts on its own line. NaN/inf are refused (ValueError).
    """
    line = json.dumps(obj, sort_keys=True, allow_nan=False).encode("utf-8") + b"\n"
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = b"\n" + line
        f.seek(0, os.SEEK_END)
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


# --- writers used by the trainer -------------------------------------------------------
def write_config(run_dir: str | Path, cfg: Config) -> None:
    atomic_write_text(Path(run_dir) / CONFIG_FILE, dumps(cfg))


def write_meta(run_dir: str | Path, meta: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / META_FILE, meta)


def write_status(run_dir: str | Path, *, state: str, epoch: int, total_epochs: int,
                 error: str | None = None, pid: int | None = None) -> None:
    """Rewrite status.json (``pid`` defaults to this process)."""
    if state not in STATES:
        raise ValueError(f"state must be one of {list(STATES)}, got {state!r}")
    atomic_write_json(Path(run_dir) / STATUS_FILE, {
        "state": state,
        "epoch": int(epoch),
        "total_epochs": int(total_epochs),
        "pid": os.getpid() if pid is None else int(pid),
        "updated": now_iso(),
        "error": error,
    })


def append_metrics(run_dir: str | Path, record: dict[str, Any]) -> None:
    append_jsonl(Path(run_dir) / METRICS_FILE, record)


def truncate_metrics(run_dir: str | Path, last_epoch: int) -> int:
    """Keep only metrics records with ``epoch <= last_epoch`` (atomic rewrite).

    Used by --resume: an epoch after the checkpoint will be trained again. Unparseable
    lines are dropped too.

    Returns:
        The number of records dropped.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return 0
    lines = path.read_bytes().splitlines()
    keep = [r for r in _parse_jsonl(lines) if r["epoch"] <= last_epoch]
    dropped = sum(1 for ln in lines if ln.strip()) - len(keep)
    if dropped:
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
    return dropped


def write_probe_epoch(run_dir: str | Path, epoch: int, cam: np.ndarray, box: np.ndarray) -> None:
    """Write ``probes/epoch_NNNN.npz``.

    Args:
        cam: (P, h, w) float, clipped to [0, 1] and stored as float16.
        box: (P, 4) int top, left, height, width in feature cells, stored as int16.
    """
    cam = np.asarray(cam)
    box = np.asarray(box)
    if cam.ndim != 3 or box.shape != (cam.shape[0], 4):
        raise ValueError(f"cam must be (P, h, w) and box (P, 4), got {cam.shape} and {box.shape}")
    buf = io.BytesIO()
    np.savez_compressed(buf, cam=np.clip(cam, 0.0, 1.0).astype(np.float16), box=box.astype(np.int16))
    atomic_write_bytes(probe_epoch_path(run_dir, epoch), buf.getvalue())


# --- the lock --------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _lock_owner(lock: Path) -> int | None:
    try:
        text = lock.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else -1


def acquire_lock(run_dir: str | Path) -> Path:
    """Create ``<run_dir>/.lock`` holding this pid (the directory is created if needed).

    A lock left by a process that is no longer alive is taken over.

    Returns:
        The lock path (pass it to :func:`release_lock`).
    Raises:
        RunDirError: another live process (this one included) holds the lock, or the
            lock file is unreadable.
    """
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    lock = d / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is None:  # released between our open and read: try again
                continue
            if owner == -1:
                raise RunDirError(
                    f"run dir {str(d)!r} is locked by {str(lock)!r}, which does not hold a pid; "
                    "remove it if no training is writing to this directory"
                ) from None
            if pid_alive(owner):
                raise RunDirError(
                    f"run dir {str(d)!r} is in use by another training process (pid {owner}); "
                    "wait for it to finish or choose another --out"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its owner is gone
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
            f.flush()
            os.fsync(f.fileno())
        return lock
    raise RunDirError(f"could not lock run dir {str(d)!r}: another process keeps taking {str(lock)!r}")


def release_lock(lock: str | Path) -> None:
    """Remove a lock this process holds (a lock owned by another pid is left alone)."""
    p = Path(lock)
    if _lock_owner(p) == os.getpid():
        p.unlink(missing_ok=True)


# --- readers ---------------------------------------------------------------------------
def _require_dir(run_dir: str | Path, what: str = "run dir") -> Path:
    d = Path(run_dir)
    if not d.exists():
        raise RunDirError(f"{what} {str(d)!r} does not exist")
    if not d.is_dir():
        raise RunDirError(f"{what} {str(d)!r} is not a directory")
    return d


def _read_json(path: Path) -> Any:
    """Parsed JSON, or None when the file is missing, unreadable or not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _parse_jsonl(lines: list[bytes]) -> list[dict[str, Any]]:
    """Records of metrics lines; lines that are cut short or lack an int ``epoch`` are skipped."""
    out = []
    for raw in lines:
        try:
            rec = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("epoch"), int) and not isinstance(rec["epoch"], bool):
            out.append(rec)
    return out


def read_config(run_dir: str | Path) -> Config:
    """The run's Config.

    Raises:
        RunDirError: the run dir or its config.json is missing, or config.json is invalid.
    """
    d = _require_dir(run_dir)
    path = d / CONFIG_FILE
    if not path.exists():
        raise RunDirError(f"run dir {str(d)!r} has no {CONFIG_FILE}: not a training run, or it never started")
    try:
        return load(path)
    except ValueError as e:
        raise RunDirError(f"run dir {str(d)!r}: {e}") from None


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    """meta.json as a dict; {} when missing or unreadable."""
    meta = _read_json(_require_dir(run_dir) / META_FILE)
    return meta if isinstance(meta, dict) else {}


@dataclass(frozen=True)
class RunStatus:
    """status.json as read.

    Attributes:
        state: ``running``, ``finished``, ``failed`` or ``unknown`` (no readable status.json).
        epoch: epochs finished.
        total_epochs: epochs planned.
        pid: the writer's pid (0 when unknown).
        updated: ISO 8601 time of the last write ("" when unknown).
        error: why it failed, else None.
    """

    state: str
    epoch: int = 0
    total_epochs: int = 0
    pid: int = 0
    updated: str = ""
    error: str | None = None


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def read_status(run_dir: str | Path) -> RunStatus:
    """The run's status; a ``running`` run whose pid is dead reads as ``failed``."""
    d = _require_dir(run_dir)
    raw = _read_json(d / STATUS_FILE)
    if not isinstance(raw, dict) or raw.get("state") not in STATES:
        return RunStatus(state="unknown", error=f"{STATUS_FILE} missing or unreadable")
    status = RunStatus(
        state=raw["state"],
        epoch=_as_int(raw.get("epoch")),
        total_epochs=_as_int(raw.get("total_epochs")),
        pid=_as_int(raw.get("pid")),
        updated=raw["updated"] if isinstance(raw.get("updated"), str) else "",
        error=raw["error"] if isinstance(raw.get("error"), str) else None,
    )
    if status.state == "running" and not pid_alive(status.pid):
        return dataclasses.replace(
            status, state="failed", error=f"process ended unexpectedly (pid {status.pid} is not running)"
        )
    return status


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """metrics.jsonl records in file order; a cut-short or malformed line is skipped."""
    path = _require_dir(run_dir) / METRICS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return _parse_jsonl(data.splitlines())


@dataclass(frozen=True)
class ProbeEntry:
    """One probe image (see probes.json in the module docstring); ``image`` is absolute."""

    index: int
    path: str
    relpath: str
    pid: int
    label: int
    camid: int
    image: str


@dataclass(frozen=True)
class ProbeSet:
    """The fixed probe images of a run.

    Attributes:
        entries: the probes, in the order of the npz rows.
        feature_size: (h, w) of the CAM grid.
        input_size: (H, W) network input in pixels.
        epochs: epochs with a probes/epoch_NNNN.npz, ascending (0 = before training).
    """

    entries: tuple[ProbeEntry, ...]
    feature_size: tuple[int, int]
    input_size: tuple[int, int]
    epochs: tuple[int, ...] = field(default_factory=tuple)


def read_probes(run_dir: str | Path) -> ProbeSet | None:
    """The run's probe set, or None when probes/probes.json is missing or unreadable."""
    pdir = _require_dir(run_dir) / PROBES_DIR
    raw = _read_json(pdir / PROBES_FILE)
    if not isinstance(raw, dict):
        return None
    try:
        entries = tuple(
            ProbeEntry(
                index=int(e["index"]), path=str(e["path"]), relpath=str(e["relpath"]), pid=int(e["pid"]),
                label=int(e["label"]), camid=int(e["camid"]), image=str(pdir / e["image"]),
            )
            for e in raw["probes"]
        )
        fh, fw = (int(v) for v in raw["feature_size"])
        ih, iw = (int(v) for v in raw["input_size"])
    except (KeyError, TypeError, ValueError):
        return None
    epochs = sorted(int(m.group(1)) for m in map(_PROBE_EPOCH_RE.match, os.listdir(pdir)) if m)
    return ProbeSet(entries=entries, feature_size=(fh, fw), input_size=(ih, iw), epochs=tuple(epochs))


def read_probe_epoch(run_dir: str | Path, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """CAMs and erased blocks of the probes at ``epoch``.

    Returns:
        cam: (P, h, w) float32 in [0, 1].
        box: (P, 4) int64 top, left, height, width in feature cells.
    Raises:
        RunDirError: the run dir or that epoch's file is missing or unreadable.
    """
    path = probe_epoch_path(_require_dir(run_dir), epoch)
    try:
        with np.load(path) as z:
            return z["cam"].astype(np.float32), z["box"].astype(np.int64)
    except FileNotFoundError:
        raise RunDirError(f"no probe record for epoch {epoch}: {str(path)!r} does not exist") from None
    except (OSError, KeyError, ValueError) as e:
        raise RunDirError(f"cannot read probe record {str(path)!r}: {e}") from None


@dataclass(frozen=True)
class RunSummary:
    """One line of the runs table.

    Attributes:
        id: the run directory's name.
        path: its absolute path.
        state: ``running``, ``finished``, ``failed``, ``unknown`` or ``broken`` (config unreadable).
        epochs_done, total_epochs: from metrics.jsonl and status.json.
        best_mAP, best_R1, best_epoch: the evaluated epoch with the highest mAP and its
            R1 (what best.pt holds); None if no epoch was evaluated.
        last_p: ``p`` of the last metrics record ({} for avg/max or no record).
        backbone, pool, erasing, dataset: from config.json ("" when broken).
        updated: status.json's time ("" when unknown).
        error: the failure text or why the run is broken, else None.
    """

    id: str
    path: str
    state: str
    epochs_done: int
    total_epochs: int
    best_mAP: float | None
    best_R1: float | None
    best_epoch: int | None
    last_p: dict[str, float]
    backbone: str
    pool: str
    erasing: str
    dataset: str
    updated: str
    error: str | None


def best_eval(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record with the highest eval mAP (the earliest on ties), or None."""
    best = None
    for rec in records:
        ev = rec.get("eval")
        if not isinstance(ev, dict) or not isinstance(ev.get("mAP"), (int, float)):
            continue
        if not math.isfinite(ev["mAP"]):
            continue
        if best is None or ev["mAP"] > best["eval"]["mAP"]:
            best = rec
    return best


def _held_by_live_process(lock: Path) -> bool:
    """Whether ``lock`` names the pid of a process alive on this host (False if unreadable)."""
    try:
        owner = _lock_owner(lock)
    except (OSError, UnicodeDecodeError):
        return False
    return owner is not None and owner > 0 and pid_alive(owner)


def summarize_run(run_dir: str | Path) -> RunSummary:
    """A :class:`RunSummary` of one run directory (never raises on its files)."""
    d = _require_dir(run_dir)
    status = read_status(d)
    records = read_metrics(d)
    best = best_eval(records)
    last_p = records[-1].get("p") if records else None
    error = status.error
    backbone = pool = erasing = dataset = ""
    total = status.total_epochs
    state = status.state
    try:
        cfg = read_config(d)
    except RunDirError as e:
        if not (d / CONFIG_FILE).exists() and _held_by_live_process(d / LOCK_FILE):
            state, error = "running", None  # the trainer is starting: config.json comes after the dataset
        else:
            state, error = "broken", str(e)
    else:
        backbone, pool, erasing, dataset = cfg.model.backbone, cfg.model.pool, cfg.model.erasing, cfg.data.dataset
        total = total or cfg.optim.epochs
    r1 = best["eval"].get("R1") if best else None
    return RunSummary(
        id=d.name,
        path=str(d.resolve()),
        state=state,
        epochs_done=max((r["epoch"] for r in records), default=0),
        total_epochs=total,
        best_mAP=float(best["eval"]["mAP"]) if best else None,
        best_R1=float(r1) if isinstance(r1, (int, float)) else None,
        best_epoch=best["epoch"] if best else None,
        last_p=dict(last_p) if isinstance(last_p, dict) else {},
        backbone=backbone,
        pool=pool,
        erasing=erasing,
        dataset=dataset,
        updated=status.updated,
        error=error if state in ("failed", "broken", "unknown") else None,
    )


def list_runs(runs_dir: str | Path) -> list[RunSummary]:
    """Summaries of the run directories directly inside ``runs_dir``, sorted by id.

    A subdirectory counts as a run when it holds any of config.json, meta.json,
    status.json, metrics.jsonl or .lock; other subdirectories are ignored, and so are
    hidden ones (``.name``: runs being built or collected elsewhere, e.g. by ``esnet demo build``).

    Raises:
        RunDirError: ``runs_dir`` does not exist or is not a directory.
    """
    root = _require_dir(runs_dir, "runs dir")
    dirs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and has_run_files(p)),
                  key=lambda p: p.name)
    return [summarize_run(p) for p in dirs]
