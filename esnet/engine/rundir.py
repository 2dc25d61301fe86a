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
                            "p": {"global", ["erase"]}  ({} for avg/max pooling;
                                  the mean over channels with model.p_per_channel),
                            ["p_spread": {"global", ["erase"]: {"min", "q10", "median",
                                          "q90", "max"}}]  (model.p_per_channel only),
                            "eval": {"R1", "R5", "R10", "mAP", "mINP",
                                     "cmc": [first 20 CMC values]}  (evaluated epochs only)}
                           CMC/mAP values are fractions in [0, 1]. On --resume, lines
                           for epochs after the checkpoint are dropped (atomic rewrite).
    probes/probes.json     the fixed probe set, chosen once from train.seed:
                           {"probes": [{"index" (into the train split), "path"
                            (absolute), "relpath" (relative to the dataset root), "pid"
                            (dataset id), "label" (training class 0..N-1), "camid"
                            (0-based), "camera" (as in the file name; absent in runs
                            written before it was recorded),
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
    .lock                  "<pid> <start>\n": the owner's pid and start time (clock ticks
                           after boot); the owner holds an exclusive flock on it for its
                           whole life (the kernel drops it when the process ends, however)
                           and removes it at the end. A held lock refuses a second trainer;
                           a lock nobody holds is taken over.

Reader states. ``read_status`` reports the file's state, except that a run whose
status says ``running`` while its pid is not the verified holder of ``.lock``
(:func:`trainer_pid`: the holder of the flock, with the recorded start time, not a
zombie) is reported as ``failed`` with error ``"process ended unexpectedly (pid N is not
running)"`` (it can be continued with ``--resume``); a pid that was reused by another
process, or that a hand-written status.json points at, never reads as running. A run directory without status.json reads as
``unknown``. ``list_runs`` adds ``broken`` for a directory whose config.json is
missing or invalid, except that a directory without config.json whose ``.lock`` is
held by a verified trainer is a trainer still starting up (loading its dataset): ``running``.

Readers are pure (they write nothing) and do not raise on partial or malformed files;
a missing run directory raises :class:`RunDirError`.
"""
from __future__ import annotations

import dataclasses
import fcntl
import io
import json
import math
import os
import re
import signal
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from esnet.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
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

STATES = ("running", "finished", "failed", "stopped")
"""States a trainer writes into status.json (``stopped``: by the user, SIGINT/SIGTERM; resumable)."""

LAUNCH_FILE = "launch.json"
"""Written by whoever starts a trainer as its own process (the dashboard): {"pid", "process_start", "at"}.
Until the trainer writes status.json (after loading its dataset) the run reads ``starting``; if the
process ends first, ``failed`` with the last ``error:`` line of train.log."""

CMC_KEEP = 20
"""How many CMC values an evaluated epoch records."""

_RUN_FILES = (CONFIG_FILE, META_FILE, STATUS_FILE, METRICS_FILE, LOCK_FILE, LAUNCH_FILE)
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


LOG_FILE = "train.log"
"""The trainer's output when the dashboard starts it (written into the run directory before the trainer runs)."""


def check_out_dir(run_dir: str | Path) -> None:
    """Refuse, before any work, an output path no run directory can be made at or that holds other things.

    Allowed: a path that does not exist yet (its parents are created) and whose nearest
    existing ancestor is a directory; an empty directory; a run directory (one holding run
    files: a fresh run is then refused by the trainer, a resume continues it); a directory
    holding only hidden entries or ``train.log``. Refused: a file, a path under a file, a
    symlink loop or a name too long, and a non-empty directory that is not a run
    directory (a folder of images must not receive ``config.json`` and ``checkpoints/``).

    Raises:
        RunDirError: the rule broken, naming the path.
    """
    d = Path(run_dir)
    try:
        st = d.stat()
    except FileNotFoundError:
        st = None
    except (OSError, ValueError) as e:
        raise RunDirError(f"--out {_short(d)!r} cannot be used: {getattr(e, 'strerror', None) or e}") from None
    if st is None:
        for parent in d.absolute().parents:
            try:
                pst = parent.stat()
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                raise RunDirError(f"--out {_short(d)!r} cannot be made: {_short(parent)!r}: "
                                  f"{getattr(e, 'strerror', None) or e}") from None
            if not stat.S_ISDIR(pst.st_mode):
                raise RunDirError(f"--out {_short(d)!r} cannot be made: {_short(parent)!r} is a file, not a directory")
            return
        return
    if not stat.S_ISDIR(st.st_mode):
        raise RunDirError(f"--out {_short(d)!r} is a file, not a directory; choose a new folder")
    if has_run_files(d):
        return
    try:
        others = sorted(e.name for e in os.scandir(d) if not e.name.startswith(".") and e.name != LOG_FILE)
    except OSError as e:
        raise RunDirError(f"--out {_short(d)!r} cannot be listed: {e.strerror}") from None
    if others:
        raise RunDirError(
            f"--out {_short(d)!r} is a non-empty folder that is not a run directory ({len(others)} entries, "
            f"e.g. {others[0]!r}); choose a new or empty folder (nothing was written)"
        )


# --- atomic writing: esnet.atomic's helpers (imported above); leftovers of dead writers --
def remove_orphan_tmp(run_dir: str | Path) -> list[Path]:
    """Remove the temporary files (``.<name>.*.tmp``) a writer killed mid-write left in the run directory.

    Only the lock holder may call this (no other writer can be mid-write). Looks in the run
    directory, checkpoints/ and probes/.

    Returns:
        The files removed.
    """
    d = Path(run_dir)
    removed = []
    for folder in (d, d / CHECKPOINTS_DIR, d / PROBES_DIR):
        for p in sorted(folder.glob(".*.tmp")) if folder.is_dir() else ():
            if p.is_file() and not p.is_symlink():
                p.unlink()
                removed.append(p)
    return removed


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


# --- the lock and the trainer's identity -------------------------------------------------
PID_MAX = 4_194_304
"""Linux's PID_MAX_LIMIT: no process id is larger (a larger "pid" in a file is junk, not a process)."""

_PROC = Path("/proc")
_HELD: dict[str, int] = {}  # absolute lock path -> the descriptor this process holds its flock on


def _has_proc() -> bool:
    return (_PROC / "self" / "stat").exists()


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks after boot) of a process, from /proc/<pid>/stat; None if none."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()  # after "pid (comm) ": field 3 (state) onwards
    try:
        return fields[0].decode("ascii"), int(fields[19])  # field 22: starttime
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (/proc/<pid>/stat field 22); None if unknown.

    With the pid it identifies one process for the life of the host: a pid reused by a
    later process has a later start time.
    """
    if not isinstance(pid, int) or not 0 < pid <= PID_MAX:
        return None
    st = _proc_stat(pid)
    return st[1] if st is not None else None


def process_cmdline(pid: int) -> list[str]:
    """The command line of process ``pid`` (/proc/<pid>/cmdline), [] when unknown or not readable."""
    if not isinstance(pid, int) or not 0 < pid <= PID_MAX:
        return []
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "backslashreplace") for a in raw.split(b"\0") if a]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (a zombie, dead but not yet reaped, does not)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= PID_MAX:
        return False
    if _has_proc():
        st = _proc_stat(pid)
        return st is not None and st[0] not in ("Z", "X", "x")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class LockRecord:
    """What ``.lock`` says: ``"<pid> <start>\\n"`` (``start`` = :func:`process_start` of the owner).

    ``start`` is None for a lock written before the lock held an OS lock (``"<pid>\\n"``).
    """

    pid: int
    start: int | None


def _parse_lock(text: str) -> LockRecord | None:
    """The record in a lock file's text; None when it is not ``pid`` or ``pid start`` (digits, pid in range)."""
    parts = text.split()
    if not 1 <= len(parts) <= 2 or not all(p.isascii() and p.isdigit() for p in parts) or len(parts[0]) > 7:
        return None
    pid = int(parts[0])
    if not 0 < pid <= PID_MAX:
        return None
    return LockRecord(pid, int(parts[1]) if len(parts) == 2 and len(parts[1]) <= 20 else None)


def _read_lock(lock: Path) -> LockRecord | None | str:
    """The lock's record; None when the file is missing or empty; its text (str) when it holds no pid."""
    try:
        with open(lock, "rb") as f:
            raw = f.read(256)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"<unreadable: {e.strerror}>"
    text = raw.decode("utf-8", "backslashreplace")
    if not text.strip():
        return None
    rec = _parse_lock(text)
    return rec if rec is not None else text


def _flock_holders(lock: Path) -> set[int] | None:
    """Pids that hold an flock on ``lock``'s inode, from /proc/locks; None when /proc/locks cannot be read.

    Entries are matched by inode number (an overlay filesystem reports another device there);
    callers also check the pid and start time, so a same-numbered inode elsewhere cannot pass.
    """
    try:
        ino = os.stat(lock, follow_symlinks=False).st_ino
        table = (_PROC / "locks").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return set() if _has_proc() and (_PROC / "locks").exists() else None
    except OSError:
        return None
    holders = set()
    for line in table.splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 5465 fe:00:2148437 0 EOF"; waiters read "1: -> FLOCK ..."
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        try:
            holder, inode = int(parts[4]), int(parts[5].rsplit(":", 1)[1])
        except (ValueError, IndexError):
            continue
        if inode == ino:
            holders.add(holder)
    return holders


def _looks_like_trainer(pid: int) -> bool:
    """Whether ``pid``'s command line is an ``esnet ... train`` (for locks of older trainers, which hold no flock)."""
    args = process_cmdline(pid)
    return any("esnet" in a for a in args) and "train" in args


def _owner_is_live(lock: Path, rec: LockRecord, holders: set[int] | None) -> bool:
    """Whether the process ``rec`` names still runs and is the one that took ``lock``."""
    if not pid_alive(rec.pid):
        return False
    if rec.start is None:  # an older trainer's lock: no flock, no start time; its command line must fit
        return _looks_like_trainer(rec.pid)
    if process_start(rec.pid) not in (rec.start, None):
        return False  # the pid now belongs to a later process
    return holders is None or rec.pid in holders


def trainer_pid(run_dir: str | Path) -> int | None:
    """The pid of the live process that holds ``<run_dir>/.lock``, after checking who it is; else None.

    The process must (1) hold an flock on the lock file (per /proc/locks), (2) be the pid
    the file names, started at the time the file records (so a reused pid does not pass)
    and (3) not be a zombie. A lock written by an older trainer (pid only, no flock) passes
    when that pid runs a command line of the form ``... esnet ... train ...``. Only this pid
    may be shown as "running" or sent a signal.
    """
    lock = Path(run_dir) / LOCK_FILE
    rec = _read_lock(lock)
    if not isinstance(rec, LockRecord):
        return None
    holders = _flock_holders(lock) if rec.start is not None else None
    return rec.pid if _owner_is_live(lock, rec, holders) else None


def signal_trainer(run_dir: str | Path, pid: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` only if it is the verified trainer of ``run_dir`` (:func:`trainer_pid`).

    The process is pinned with a pidfd before the check, so it cannot be replaced by another
    process with the same pid between the check and the signal.

    Returns:
        True when the signal was sent, False when ``pid`` is not (or no longer) that trainer.
    """
    if not isinstance(pid, int) or not 0 < pid <= PID_MAX or trainer_pid(run_dir) != pid:
        return False
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # no pidfd on this system: the check above must do
        fd = None
    try:
        if trainer_pid(run_dir) != pid:
            return False
        if fd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if fd is not None:
            os.close(fd)


def _in_use(d: Path, rec: LockRecord | None) -> RunDirError:
    who = f" (pid {rec.pid})" if rec is not None else ""
    return RunDirError(f"run dir {str(d)!r} is in use by another training process{who}; "
                       "wait for it to finish or choose another --out")


def acquire_lock(run_dir: str | Path) -> Path:
    """Lock ``<run_dir>`` for this process (the directory is created if needed).

    Takes an exclusive ``flock`` on ``<run_dir>/.lock``, held on an open descriptor until
    :func:`release_lock` or the end of the process (the kernel drops it however the process
    ends, SIGKILL included), and writes ``"<pid> <start>\\n"`` into it. Of several processes
    racing for the same directory exactly one wins. A lock file nobody holds is taken over,
    except one that holds no pid (refused, to be looked at) and one written by an older
    trainer (pid only) whose process still runs ``esnet train``.

    Returns:
        The lock path (pass it to :func:`release_lock`).
    Raises:
        RunDirError: another live process (this one included) holds the lock, the lock
            file holds no pid, or it cannot be opened.
    """
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    lock = d / LOCK_FILE
    for _ in range(50):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise RunDirError(f"cannot lock run dir {str(d)!r}: {str(lock)!r}: {e.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                rec = _read_lock(lock)
                raise _in_use(d, rec if isinstance(rec, LockRecord) else None) from None
            try:
                same = os.stat(lock, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its holder released (and removed) it between our open and flock: again
                continue
            rec = _read_lock(lock)
            if isinstance(rec, str):
                raise RunDirError(
                    f"run dir {str(d)!r} is locked by {str(lock)!r}, which does not hold a pid "
                    f"({rec[:40]!r}); remove it if no training is writing to this directory"
                )
            if rec is not None and rec.start is None and rec.pid != os.getpid() and _owner_is_live(lock, rec, None):
                raise _in_use(d, rec)
            me = os.getpid()
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{me} {process_start(me) or 0}\n".encode("ascii"), 0)
            os.fsync(fd)
            _HELD[os.path.abspath(lock)] = fd
            fd = -1
            return lock
        finally:
            if fd >= 0:
                os.close(fd)
    raise RunDirError(f"could not lock run dir {str(d)!r}: another process keeps taking {str(lock)!r}")


def release_lock(lock: str | Path) -> None:
    """Release a lock this process holds and remove its file (a lock it does not hold is left alone).

    Never raises: a lock file that cannot be removed (the directory turned read-only) is
    left behind, harmless, since no process holds it any more; the error that ended the
    run is the one to report.
    """
    p = Path(lock)
    fd = _HELD.pop(os.path.abspath(p), None)
    if fd is None:
        return
    try:
        if os.stat(p, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
            p.unlink()
    except OSError:
        pass  # read-only or vanished: the flock below goes with the descriptor anyway
    finally:
        os.close(fd)


# --- readers ---------------------------------------------------------------------------
def _require_dir(run_dir: str | Path, what: str = "run dir") -> Path:
    d = Path(run_dir)
    try:
        st = d.stat()
    except FileNotFoundError:
        raise RunDirError(f"{what} {str(d)!r} does not exist") from None
    except (OSError, ValueError) as e:  # name too long, symlink loop, permission, NUL byte
        raise RunDirError(f"{what} {_short(d)!r} cannot be used: {getattr(e, 'strerror', None) or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise RunDirError(f"{what} {str(d)!r} is not a directory")
    return d


def _short(p: Path, limit: int = 200) -> str:
    """``p`` as text, cut to ``limit`` characters with the total length named (a 5,000-character path stays readable)."""
    text = str(p)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _read_json(path: Path) -> Any:
    """Parsed JSON, or None when the file is missing, unreadable or not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # deep nesting: junk too
        return None


def _parse_jsonl(lines: list[bytes]) -> list[dict[str, Any]]:
    """Records of metrics lines; lines that are cut short or lack an int ``epoch`` are skipped."""
    out = []
    for raw in lines:
        try:
            rec = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # deep nesting: junk too
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
        state: ``starting`` (launched, not yet training), ``running``, ``finished``, ``failed``,
            ``stopped`` (by the user; resumable) or ``unknown`` (no readable status.json).
        epoch: epochs finished.
        total_epochs: epochs planned.
        pid: the writer's pid (0 when unknown).
        updated: ISO 8601 time of the last write ("" when unknown).
        error: why it failed (or where it was stopped), else None.
    """

    state: str
    epoch: int = 0
    total_epochs: int = 0
    pid: int = 0
    updated: str = ""
    error: str | None = None


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def write_launch(run_dir: str | Path, pid: int) -> None:
    """Record that a trainer process ``pid`` was started for ``run_dir`` (see :data:`LAUNCH_FILE`)."""
    atomic_write_json(Path(run_dir) / LAUNCH_FILE, {"pid": int(pid), "process_start": process_start(pid),
                                                    "at": now_iso()})


def log_error(run_dir: str | Path, limit: int = 8192) -> str | None:
    """The last ``error: ...`` line of the run's train.log (else its last line), from its last ``limit`` bytes."""
    try:
        with open(Path(run_dir) / LOG_FILE, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in tail.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    text = (errors or lines or [None])[-1]
    return None if text is None else text[:300]


def _launch_status(d: Path, status: RunStatus) -> RunStatus:
    """``status`` corrected by a launch record newer than it: ``starting`` while that process lives, else
    ``failed`` with train.log's error (the trainer died before or without writing status.json)."""
    raw = _read_json(d / LAUNCH_FILE)
    if not isinstance(raw, dict) or status.state in ("running", "finished"):
        return status
    pid, at = _as_int(raw.get("pid")), raw.get("at") if isinstance(raw.get("at"), str) else ""
    if status.state != "unknown" and at < status.updated:
        return status  # an older launch, already reported on by the trainer
    start = raw.get("process_start")
    if pid_alive(pid) and (start is None or process_start(pid) == start):
        return RunStatus(state="starting", epoch=status.epoch, total_epochs=status.total_epochs, pid=pid, updated=at)
    if status.state != "unknown" and at == status.updated:
        return status
    why = log_error(d) or f"the trainer (pid {pid}) ended before it started training; see {LOG_FILE}"
    return RunStatus(state="failed", epoch=status.epoch, total_epochs=status.total_epochs, pid=pid, updated=at,
                     error=why)


def read_status(run_dir: str | Path) -> RunStatus:
    """The run's status; a ``running`` run whose pid is dead reads as ``failed``; a launch record
    (:data:`LAUNCH_FILE`) newer than status.json gives ``starting`` or ``failed`` (see :func:`_launch_status`)."""
    d = _require_dir(run_dir)
    status = _read_status_file(d)
    return _launch_status(d, status) if (d / LAUNCH_FILE).exists() else status


def _read_status_file(d: Path) -> RunStatus:
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
    if status.state == "running" and trainer_pid(d) != status.pid:
        again = _read_json(d / STATUS_FILE)  # the trainer may have written its end and released the lock since
        if isinstance(again, dict) and again.get("state") in STATES and again.get("state") != "running":
            return _read_status_file(d)
        why = ("is not running" if not pid_alive(status.pid)
               else f"is running but is not this run's trainer: it does not hold {LOCK_FILE}")
        return dataclasses.replace(status, state="failed", error=f"process ended unexpectedly (pid {status.pid} {why})")
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
    camera: int | None = None  # as in the file name; None: not recorded (older runs)


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
                camera=int(e["camera"]) if "camera" in e else None,
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
        p_moved: the largest distance of ``last_p`` from the run's ``model.p_init`` over its branches
            (None without a learned p or a readable config): how far P-pooling learned.
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
    p_moved: float | None
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


def summarize_run(run_dir: str | Path) -> RunSummary:
    """A :class:`RunSummary` of one run directory (never raises on its files)."""
    d = _require_dir(run_dir)
    status = read_status(d)
    records = read_metrics(d)
    best = best_eval(records)
    last_p = records[-1].get("p") if records else None
    last_p = dict(last_p) if isinstance(last_p, dict) else {}
    p_moved = None
    error = status.error
    backbone = pool = erasing = dataset = ""
    total = status.total_epochs
    state = status.state
    try:
        cfg = read_config(d)
    except RunDirError as e:
        if not (d / CONFIG_FILE).exists() and trainer_pid(d) is not None:
            state, error = "running", None  # the trainer is starting: config.json comes after the dataset
        elif not (d / CONFIG_FILE).exists() and state in ("starting", "failed") and (d / LAUNCH_FILE).exists():
            pass  # launched from the dashboard: starting, or died before writing its config (train.log's error)
        else:
            state, error = "broken", str(e)
    else:
        backbone, pool, erasing, dataset = cfg.model.backbone, cfg.model.pool, cfg.model.erasing, cfg.data.dataset
        total = total or cfg.optim.epochs
        moved = [abs(float(v) - cfg.model.p_init) for v in last_p.values() if isinstance(v, (int, float))]
        p_moved = max(moved) if moved else None
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
        last_p=last_p,
        p_moved=p_moved,
        backbone=backbone,
        pool=pool,
        erasing=erasing,
        dataset=dataset,
        updated=status.updated,
        error=error if state in ("failed", "broken", "unknown", "stopped") else None,
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
    try:
        dirs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and has_run_files(p)),
                      key=lambda p: p.name)
    except OSError as e:  # e.g. a folder we may not list
        raise RunDirError(f"runs dir {_short(root)!r} cannot be listed: {e.strerror}") from None
    return [summarize_run(p) for p in dirs]
