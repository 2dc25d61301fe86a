"""Training callbacks: evaluation, probe recording and the run-directory writer.

``fit`` calls every callback's hooks in list order, passing one mutable epoch record
(see ``metrics.jsonl`` in :mod:`esnet.engine.rundir`) to ``on_epoch_end``; so the
evaluation callback must come before the writer that stores the record, which is the
order :func:`esnet.engine.run.train_run` uses: eval -> probes -> run dir -> extras.
Callbacks return data and write files; they never print.
"""
from __future__ import annotations

import io
import math
import os
import traceback
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from esnet.checkpoint import save_checkpoint
from esnet.config import Config
from esnet.data.images import load_rgb
from esnet.data.transforms import build_transforms
from esnet.data.types import Sample
from esnet.engine import rundir
from esnet.metrics import evaluate, pairwise_distance
from esnet.model import ESNet


@dataclass
class TrainState:
    """What ``fit`` hands to ``Callback.on_train_start``.

    Attributes:
        model: the ESNet itself (unwrapped from DistributedDataParallel).
        optimizer, scheduler: as passed to ``fit``.
        scaler: the AMP GradScaler (disabled off CUDA; its state is saved with checkpoints).
        cfg: the run config.
        device: where the model lives.
        start_epoch: epochs already done (0 for a fresh run).
        total_epochs: ``cfg.optim.epochs``.
        iters_per_epoch: batches per epoch after ``train.max_iters_per_epoch``.
        use_amp: whether autocast is on.
    """

    model: ESNet
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    cfg: Config
    device: torch.device
    start_epoch: int
    total_epochs: int
    iters_per_epoch: int
    use_amp: bool


class Callback:
    """Base class: every hook does nothing. Epochs given to hooks are 1-based."""

    def on_train_start(self, state: TrainState) -> None:
        """Before the first epoch (also on resume)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Before epoch ``epoch`` (1-based) trains."""

    def on_batch_end(self, epoch: int, iteration: int, losses: dict[str, float]) -> None:
        """After an optimiser step; ``iteration`` is 1-based, ``losses`` holds ``total``."""

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        """After epoch ``epoch``; ``record`` may be extended (e.g. with ``eval``)."""

    def on_train_end(self) -> None:
        """After the last epoch."""

    def on_exception(self, exc: BaseException) -> None:
        """Training stopped with ``exc`` (it is re-raised after all callbacks ran)."""


def should_evaluate(epoch: int, every: int, total_epochs: int) -> bool:
    """Evaluate after 1-based ``epoch``: every ``every`` epochs and at the last; never if every == 0."""
    if every <= 0:
        return False
    return epoch % every == 0 or epoch == total_epochs


@torch.no_grad()
def embed(model: nn.Module, loader: DataLoader, device: torch.device, *, use_amp: bool = False) -> torch.Tensor:
    """Test features of every image of a test loader, in dataset order.

    The model is put in eval mode and left there.

    Returns:
        (N, D) float32 on the CPU, row i for dataset item i.
    """
    model.eval()
    feats: torch.Tensor | None = None
    n = len(loader.dataset)
    seen = torch.zeros(n, dtype=torch.bool)
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            emb = model(images).embedding
        emb = emb.float().cpu()  # (B, D)
        if feats is None:
            feats = torch.empty(n, emb.shape[1], dtype=torch.float32)
        feats[batch["index"]] = emb
        seen[batch["index"]] = True
    if feats is None or not bool(seen.all()):
        raise ValueError(f"embedding covered {int(seen.sum())} of {n} images: the loader skipped some")
    return feats


class EvalCallback(Callback):
    """Query/gallery retrieval after evaluated epochs; adds ``record["eval"]``.

    Args:
        query_loader, gallery_loader: in-order test loaders (``build_test_loader``).
        query, gallery: their samples (pids and camera ids come from here).
        every: ``train.eval_every``.
    """

    def __init__(self, query_loader: DataLoader, gallery_loader: DataLoader,
                 query: Sequence[Sample], gallery: Sequence[Sample], *, every: int) -> None:
        if every < 1:
            raise ValueError(f"EvalCallback needs every >= 1, got {every!r}")
        self.query_loader = query_loader
        self.gallery_loader = gallery_loader
        self.q_pids = np.array([s.pid for s in query], dtype=np.int64)
        self.g_pids = np.array([s.pid for s in gallery], dtype=np.int64)
        self.q_camids = np.array([s.camid for s in query], dtype=np.int64)
        self.g_camids = np.array([s.camid for s in gallery], dtype=np.int64)
        self.every = every
        self.state: TrainState | None = None

    def on_train_start(self, state: TrainState) -> None:
        self.state = state

    def evaluate_now(self) -> dict[str, Any]:
        """Embed query and gallery, rank by cosine distance, return the eval dict."""
        assert self.state is not None, "on_train_start was not called"
        st = self.state
        qf = embed(st.model, self.query_loader, st.device, use_amp=st.use_amp)  # (Q, D)
        gf = embed(st.model, self.gallery_loader, st.device, use_amp=st.use_amp)  # (G, D)
        dist = pairwise_distance(qf.numpy(), gf.numpy(), metric="cosine")  # (Q, G)
        result = evaluate(dist, self.q_pids, self.g_pids, self.q_camids, self.g_camids)
        out: dict[str, Any] = {k: float(v) for k, v in result.summary().items()}
        out["cmc"] = [float(v) for v in np.asarray(result.cmc)[: rundir.CMC_KEEP]]
        return out

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        assert self.state is not None, "on_train_start was not called"
        if should_evaluate(epoch, self.every, self.state.total_epochs):
            record["eval"] = self.evaluate_now()


# --- probes ----------------------------------------------------------------------------
PROBE_SEED_STREAM = 0x9B0BE
"""Mixed into the seed for probe choice so it does not share draws with the sampler."""


def choose_probes(train: Sequence[Sample], count: int, seed: int) -> list[int]:
    """Indices of ``count`` training images spread over as many identities as possible.

    Identities are visited in a seeded random order, one random unused image each, round
    after round until ``count`` images are chosen (or the split runs out).

    Returns:
        Indices into ``train``, sorted by (pid, index); deterministic given the inputs.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count!r}")
    rng = np.random.default_rng([PROBE_SEED_STREAM, int(seed)])
    by_pid: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(train):
        by_pid[s.pid].append(i)
    pids = sorted(by_pid)
    order = [pids[j] for j in rng.permutation(len(pids))]
    chosen: list[int] = []
    remaining = {p: list(v) for p, v in by_pid.items()}
    target = min(count, len(train))
    while len(chosen) < target:
        for pid in order:
            if len(chosen) == target:
                break
            pool = remaining[pid]
            if pool:
                chosen.append(pool.pop(int(rng.integers(len(pool)))))
    return sorted(chosen, key=lambda i: (train[i].pid, i))


def _relpath(path: str, root: str) -> str:
    """``path`` relative to the dataset root (its basename when root is a manifest file)."""
    base = root if os.path.isdir(root) else os.path.dirname(root)
    return os.path.relpath(path, base) if base else os.path.basename(path)


class ProbeCallback(Callback):
    """Records the CAM and salient block of a fixed set of training images every epoch.

    On a fresh run it chooses the probes (:func:`choose_probes`), writes
    ``probes/probes.json``, ``probes/images/NN.jpg`` and ``probes/epoch_0000.npz``; on a
    resumed run it reads the stored probe set back and checks it matches the dataset.

    Args:
        run_dir: the run directory.
        train: the training samples (the probe ``index`` points into this).
        label_map: ``{pid: training class}`` as used by the train loader.
        dataset_root: the dataset root, for ``relpath``.
    """

    def __init__(self, run_dir: str | Path, train: Sequence[Sample], label_map: dict[int, int],
                 dataset_root: str) -> None:
        self.run_dir = Path(run_dir)
        self.train = tuple(train)
        self.label_map = dict(label_map)
        self.dataset_root = dataset_root
        self.state: TrainState | None = None
        self.images: torch.Tensor | None = None  # (P, 3, H, W)
        self.labels: torch.Tensor | None = None  # (P,)

    def on_train_start(self, state: TrainState) -> None:
        self.state = state
        cfg = state.cfg
        pdir = self.run_dir / rundir.PROBES_DIR
        stored = rundir.read_probes(self.run_dir) if pdir.exists() else None
        if state.start_epoch > 0:
            if stored is None:
                raise rundir.RunDirError(f"cannot resume: {str(pdir / rundir.PROBES_FILE)!r} is missing or unreadable")
            indices = [e.index for e in stored.entries]
            for e in stored.entries:
                if not 0 <= e.index < len(self.train) or self.train[e.index].path != e.path:
                    raise rundir.RunDirError(
                        f"cannot resume: probe {e.path!r} (train index {e.index}) is not in the dataset any more"
                    )
        else:
            indices = choose_probes(self.train, cfg.train.probe_count, cfg.train.seed)
        if not indices:
            raise ValueError("ProbeCallback needs at least one probe (train.probe_count = 0 means: do not add it)")
        transform = build_transforms(cfg.data, train=False)
        pil = [load_rgb(self.train[i].path) for i in indices]
        self.images = torch.stack([transform(im) for im in pil]).to(state.device)  # (P, 3, H, W)
        self.labels = torch.tensor([self.label_map[self.train[i].pid] for i in indices],
                                   dtype=torch.int64, device=state.device)  # (P,)
        if state.start_epoch > 0:
            return
        cam, box, feature_size = self._replay()
        size = (cfg.data.width, cfg.data.height)
        entries = []
        for k, (i, im) in enumerate(zip(indices, pil)):
            buf = io.BytesIO()
            im.resize(size, resample=3).save(buf, format="JPEG", quality=92)  # 3 = BICUBIC
            name = rundir.probe_image_name(k)
            rundir.atomic_write_bytes(pdir / name, buf.getvalue())
            s = self.train[i]
            entries.append({"index": i, "path": s.path, "relpath": _relpath(s.path, self.dataset_root),
                            "pid": s.pid, "label": self.label_map[s.pid], "camid": s.camid, "camera": s.camera,
                            "image": name})
        rundir.atomic_write_json(pdir / rundir.PROBES_FILE, {
            "probes": entries,
            "feature_size": list(feature_size),
            "input_size": [cfg.data.height, cfg.data.width],
        })
        rundir.write_probe_epoch(self.run_dir, 0, cam, box)

    def _replay(self) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        assert self.state is not None and self.images is not None and self.labels is not None
        rec = self.state.model.erasing_replay(self.images, self.labels)
        return rec.cam.float().cpu().numpy(), rec.box.cpu().numpy(), tuple(rec.feature_size)

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        cam, box, _ = self._replay()
        rundir.write_probe_epoch(self.run_dir, epoch, cam, box)


# --- the run-directory writer -----------------------------------------------------------
class StopRequested(KeyboardInterrupt):
    """Training stopped on the user's request (SIGINT/SIGTERM); status.json says ``stopped``, resumable."""


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text or type(exc).__name__


class RunDirCallback(Callback):
    """Writes status.json, metrics.jsonl and the checkpoints of a run directory.

    Per epoch, in this order (so a kill at any point leaves a resumable directory with
    no duplicate or missing metrics line): append the metrics record, save best.pt if
    the epoch's mAP beats every earlier one, save last.pt, rewrite status.json.

    Args:
        run_dir: the run directory (config.json / meta.json are written by ``train_run``).
        num_classes: classifier size, saved in checkpoints.
        start_epoch, total_epochs: for status.json, also when training fails before
            ``on_train_start`` reached this callback.
        code: the training process's :func:`esnet.engine.code.code_identity`, saved in every
            checkpoint as ``extra["code"]`` (what ``--resume`` compares); None saves none.
    """

    def __init__(self, run_dir: str | Path, *, num_classes: int, start_epoch: int, total_epochs: int,
                 code: dict[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.num_classes = num_classes
        self.code = code
        self.total_epochs = total_epochs
        self.state: TrainState | None = None
        self.epoch = start_epoch
        self.best_map = -math.inf

    def _status(self, state: str, error: str | None = None) -> None:
        rundir.write_status(self.run_dir, state=state, epoch=self.epoch, total_epochs=self.total_epochs, error=error)

    def on_train_start(self, state: TrainState) -> None:
        self.state = state
        self.epoch = state.start_epoch
        self.total_epochs = state.total_epochs
        best = rundir.best_eval(rundir.read_metrics(self.run_dir))
        self.best_map = float(best["eval"]["mAP"]) if best else -math.inf
        self._status("running")

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        st = self.state
        assert st is not None
        rundir.append_metrics(self.run_dir, record)
        extra = {"scaler": st.scaler.state_dict(), "record": record}
        if self.code is not None:
            extra["code"] = self.code
        kwargs = dict(model=st.model, optimizer=st.optimizer, scheduler=st.scheduler, epoch=epoch,
                      config=st.cfg, num_classes=self.num_classes, extra=extra)
        m_ap = record.get("eval", {}).get("mAP")
        if m_ap is not None and m_ap > self.best_map:
            self.best_map = float(m_ap)
            save_checkpoint(rundir.checkpoint_path(self.run_dir, "best"), **kwargs)
        save_checkpoint(rundir.checkpoint_path(self.run_dir, "last"), **kwargs)
        self.epoch = epoch
        self._status("running")

    def on_train_end(self) -> None:
        self._status("finished")

    def on_exception(self, exc: BaseException) -> None:
        try:
            if isinstance(exc, StopRequested):
                self._status("stopped", str(exc))
            else:
                self._status("failed", _error_text(exc))
        except OSError:
            # The disk refuses the status too (read-only, full): ``exc`` is the failure to report, not
            # this. status.json keeps "running", which readers show as failed once no process holds the lock.
            pass


def format_epoch_summary(record: dict[str, Any], total_epochs: int) -> str:
    """One line for the console, e.g.
    ``epoch 3/120 loss 4.213 acc 0.52/0.47 p 3.01/2.98 lr 3.50e-04 812 img/s R1 71.2% mAP 48.0%``.
    """
    acc = "/".join(f"{v:.3f}" for v in record.get("acc", {}).values())
    parts = [f"epoch {record['epoch']}/{total_epochs}", f"loss {record['loss']['total']:.4f}"]
    if acc:
        parts.append(f"acc {acc}")
    p = record.get("p") or {}
    if p:
        parts.append("p " + "/".join(f"{v:.3f}" for v in p.values()))
    parts += [f"lr {record['lr']:.2e}", f"{record['img_per_s']:.0f} img/s"]
    ev = record.get("eval")
    if ev:
        parts.append(f"R1 {100 * ev['R1']:.1f}% mAP {100 * ev['mAP']:.1f}%")
    return " ".join(parts)
