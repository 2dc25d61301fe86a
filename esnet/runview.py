"""Run directories as tables and arrays for the dashboard: runs, curves, erasing records, pooling.

Everything here reads (never writes) run directories through :mod:`esnet.engine.rundir`
and returns pandas DataFrames, numpy arrays or small dataclasses; the pages plot them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from esnet.checkpoint import LEGACY_P_SUFFIX, load_checkpoint
from esnet.data.datasets import display_camera
from esnet.data.images import ImageError, load_rgb
from esnet.engine import rundir
from esnet.model.pooling import avg_pool, max_pool, p_pool

RUN_COLUMNS = ["run", "state", "epochs", "backbone", "pool", "erasing", "dataset", "best_mAP", "best_R1",
               "best_epoch", "p_global", "p_erase", "p_moved", "updated", "error", "path"]


def runs_frame(runs_dir: str | Path) -> pd.DataFrame:
    """One row per run directory in ``runs_dir`` (see ``rundir.list_runs``).

    Columns: RUN_COLUMNS; ``epochs`` is "done/total"; mAP/R1 are percentages (None when
    never evaluated); ``p_global`` / ``p_erase`` the last learned P-pooling exponents and ``p_moved`` the
    largest distance of either from ``model.p_init`` (NaN for avg/max).

    Raises:
        RunDirError: ``runs_dir`` is missing or not a directory.
    """
    rows = []
    for s in rundir.list_runs(runs_dir):
        rows.append({
            "run": s.id, "state": s.state, "epochs": f"{s.epochs_done}/{s.total_epochs}", "backbone": s.backbone,
            "pool": s.pool, "erasing": s.erasing, "dataset": s.dataset,
            "best_mAP": None if s.best_mAP is None else round(100 * s.best_mAP, 2),
            "best_R1": None if s.best_R1 is None else round(100 * s.best_R1, 2),
            "best_epoch": s.best_epoch, "p_global": s.last_p.get("global", math.nan),
            "p_erase": s.last_p.get("erase", math.nan),
            "p_moved": math.nan if s.p_moved is None else s.p_moved, "updated": s.updated, "error": s.error or "",
            "path": s.path,
        })
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    row[f"{key}.{sub}"] = float(v)
                elif isinstance(v, dict):  # p_spread: {branch: {quantile: value}}
                    row.update({f"{key}.{sub}.{k}": float(x) for k, x in v.items()
                                if isinstance(x, (int, float)) and not isinstance(x, bool)})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            row[key] = value
    return row


def metrics_frame(run_dir: str | Path) -> pd.DataFrame:
    """metrics.jsonl as one row per epoch, nested keys flattened with dots.

    Columns (those present): ``epoch, lr, time_s, img_per_s, loss.<name>, acc.<branch>,
    p.<branch>, [p_spread.<branch>.<quantile>,] eval.R1, eval.R5, eval.R10, eval.mAP, eval.mINP``
    (eval columns are NaN on epochs that were not evaluated). A half-written last line is ignored. Empty frame
    (column ``epoch`` only) for a run without records.
    """
    rows = [_flatten(r) for r in rundir.read_metrics(run_dir) if isinstance(r.get("epoch"), int)]
    if not rows:
        return pd.DataFrame({"epoch": pd.Series(dtype="int64")})
    return pd.DataFrame(rows).sort_values("epoch").reset_index(drop=True)


def cmc_frame(run_dirs: dict[str, str | Path]) -> pd.DataFrame:
    """CMC of each run's best evaluated epoch: columns run, rank (1-based), cmc (fraction)."""
    rows = []
    for name, d in run_dirs.items():
        best = rundir.best_eval(rundir.read_metrics(d))
        cmc = best["eval"].get("cmc", []) if best else []
        rows += [{"run": name, "rank": i + 1, "cmc": float(v)} for i, v in enumerate(cmc)]
    return pd.DataFrame(rows, columns=["run", "rank", "cmc"])


@dataclass(frozen=True)
class ErasingFrame:
    """One probe at one epoch, at image resolution.

    Attributes:
        image: (H, W, 3) uint8 probe image resized to the input size, or None when neither
            the run's copy nor the dataset file is available.
        heat: (H, W) float32 in [0, 1], the global-branch CAM upsampled bilinearly.
        box: (top, left, height, width) of the erased block in image pixels.
        box_cells: the same in feature-map cells.
        pid, camid: the probe's identity and 0-based camera; relpath: its path in the dataset.
        camera: the camera as in the file name (``Sample.camera``), what the inspector shows.
    """

    image: np.ndarray | None
    heat: np.ndarray
    box: tuple[int, int, int, int]
    box_cells: tuple[int, int, int, int]
    pid: int
    camid: int
    relpath: str
    camera: int


def _probe_image(entry: rundir.ProbeEntry, size: tuple[int, int], dataset_root: str | Path | None) -> np.ndarray | None:
    candidates = [Path(entry.image)]
    if dataset_root is not None:
        candidates.append(Path(dataset_root) / entry.relpath)
    for path in candidates:
        if not path.is_file():
            continue
        try:
            img = load_rgb(path)
        except ImageError:
            continue
        return np.asarray(img.resize((size[1], size[0])), dtype=np.uint8)
    return None


def erasing_frames(run_dir: str | Path, epoch: int, *, dataset_root: str | Path | None = None) -> list[ErasingFrame]:
    """The probes of ``run_dir`` at ``epoch``: image, CAM overlay and erased block.

    Probe images come from the run's own copies (probes/images) or, for runs shipped
    without images (e.g. results on datasets that must not be redistributed), from
    ``dataset_root / relpath``.

    Raises:
        RunDirError: the run has no probe set or no record for ``epoch``.
    """
    probes = rundir.read_probes(run_dir)
    if probes is None:
        raise rundir.RunDirError(f"run {str(run_dir)!r} has no readable probes/probes.json")
    cam, box = rundir.read_probe_epoch(run_dir, epoch)  # (P, h, w), (P, 4)
    (h, w), (H, W) = probes.feature_size, probes.input_size
    heat = F.interpolate(torch.from_numpy(cam)[:, None], size=(H, W), mode="bilinear", align_corners=False)
    heat = heat[:, 0].clamp_(0.0, 1.0).numpy()  # (P, H, W)
    sy, sx = H / h, W / w
    frames, data_cfg = [], None
    for i, entry in enumerate(probes.entries[: len(cam)]):
        camera = entry.camera
        if camera is None:  # probes.json written before "camera" was recorded: the loader's rule
            data_cfg = data_cfg or rundir.read_config(run_dir).data
            camera = display_camera(data_cfg.dataset, entry.camid, entry.relpath, data_cfg.camera_regex)
        t, left, bh, bw = (int(v) for v in box[i])
        pixels = (round(t * sy), round(left * sx), round(bh * sy), round(bw * sx))
        frames.append(ErasingFrame(image=_probe_image(entry, (H, W), dataset_root), heat=heat[i], box=pixels,
                                   box_cells=(t, left, bh, bw), pid=entry.pid, camid=entry.camid,
                                   relpath=entry.relpath, camera=camera))
    return frames


def block_positions(run_dir: str | Path) -> pd.DataFrame:
    """Where the erased block falls, per epoch and probe.

    Columns: epoch, probe, top, height (feature cells), center (vertical centre of the
    block as a fraction of the map height, 0 = top of the image, 1 = bottom). Epochs
    whose record cannot be read are skipped.
    """
    probes = rundir.read_probes(run_dir)
    rows: list[dict[str, Any]] = []
    if probes is None:
        return pd.DataFrame(rows, columns=["epoch", "probe", "top", "height", "center"])
    h = probes.feature_size[0]
    for epoch in probes.epochs:
        try:
            _, box = rundir.read_probe_epoch(run_dir, epoch)
        except rundir.RunDirError:
            continue
        for i, (t, _, bh, _) in enumerate(box.tolist()):
            rows.append({"epoch": epoch, "probe": i, "top": t, "height": bh, "center": (t + bh / 2) / h})
    return pd.DataFrame(rows, columns=["epoch", "probe", "top", "height", "center"])


@dataclass(frozen=True)
class PoolingDemo:
    """One feature map pooled three ways.

    Attributes:
        fmap: (h, w) float32 >= 0, a synthetic activation map with one strong peak.
        avg, max, gem: the pooled values (gem at the chosen p).
        curve: DataFrame p, gem for p from 1 to 64 (GeM rises from avg to max).
    """

    fmap: np.ndarray
    avg: float
    max: float
    gem: float
    curve: pd.DataFrame


def pooling_demo(p: float, *, size: tuple[int, int] = (16, 8), seed: int = 0) -> PoolingDemo:
    """Average, max and generalized-mean (P-)pooling of the same map for exponent ``p``.

    Raises:
        ValueError: p < 1 or not finite.
    """
    if not (isinstance(p, (int, float)) and math.isfinite(p) and p >= 1.0):
        raise ValueError(f"p must be a finite number >= 1, got {p!r}")
    g = torch.Generator().manual_seed(seed)
    h, w = size
    fmap = torch.rand(h, w, generator=g) * 0.5  # (h, w) background activations
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    fmap += 3.0 * torch.exp(-((y - h * 0.3) ** 2 + (x - w * 0.6) ** 2) / 2.0)  # one salient part
    x4 = fmap[None, None]  # (1, 1, h, w)
    ps = np.unique(np.round(np.geomspace(1.0, 64.0, 40), 3))
    curve = pd.DataFrame({"p": ps, "gem": [float(p_pool(x4, torch.tensor([float(v)]))) for v in ps]})
    return PoolingDemo(fmap=fmap.numpy().astype(np.float32), avg=float(avg_pool(x4)), max=float(max_pool(x4)),
                       gem=float(p_pool(x4, torch.tensor([float(p)]))), curve=curve)


def final_p_channels(run_dir: str | Path) -> pd.DataFrame:
    """The exponents P-pooling uses in a run's checkpoint (last.pt, else best.pt), per branch and channel.

    Read from the state dict (``*.pool.q``: p = 1 + softplus(q); an old raw ``*.pool.p``:
    p clamped to >= 1, as it was used), without building the model.

    Returns:
        Columns branch (``global``/``erase``), channel (0-based), p; one row per branch for a
        single p, C per branch with ``model.p_per_channel``; empty when the run has no
        checkpoint or no P-pooling.
    Raises:
        CheckpointError: the checkpoint exists but cannot be read.
    """
    columns = ["branch", "channel", "p"]
    paths = [rundir.checkpoint_path(run_dir, w) for w in ("last", "best")]
    path = next((p for p in paths if p.is_file()), None)
    if path is None:
        return pd.DataFrame(columns=columns)
    state = load_checkpoint(path).model_state
    rows: list[dict[str, Any]] = []
    for key, value in state.items():
        if key.endswith(".pool.q"):
            p = 1.0 + F.softplus(value.float())
        elif key.endswith(LEGACY_P_SUFFIX):
            p = value.float().clamp(min=1.0)
        else:
            continue
        branch = key.split(".", 1)[0].removesuffix("_head")
        rows += [{"branch": branch, "channel": i, "p": float(v)} for i, v in enumerate(p.flatten().tolist())]
    return pd.DataFrame(rows, columns=columns)
