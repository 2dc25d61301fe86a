"""The only place that uses st.cache_*: keyed by path (+ mtime) so edits on disk invalidate."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import progress
from esnet import api


def _mtime(path: Path) -> float:
    marker = path / ".complete"
    return marker.stat().st_mtime if marker.exists() else path.stat().st_mtime


@st.cache_data(show_spinner="Reading dataset ...")
def _overview(name: str, root: str, mtime_key: float) -> pd.DataFrame:
    return api.dataset_overview(name, root)


def dataset_overview(name: str, root: Path) -> pd.DataFrame:
    return _overview(name, str(root), _mtime(root))


@st.cache_data(show_spinner=False, max_entries=64)
def _page_needs(run_dir: str, ckpt_key: tuple[int, int], dataset: str, root: str, mtime_key: float) -> str | None:
    return api.model_page_needs(run_dir, dataset, root)


def page_needs(run_dir: Path, dataset: str, root: Path) -> str | None:
    """``api.model_page_needs``, re-checked when the checkpoint or the dataset root changes."""
    try:
        mtime = _mtime(Path(root))
    except OSError:
        mtime = -1.0
    return _page_needs(str(run_dir), _stat_key(Path(run_dir) / "checkpoints" / "last.pt"), dataset, str(root), mtime)


@st.cache_resource(show_spinner="Generating the demo dataset (first start only, ~5 s) ...")
def _ensure_demo(root: str) -> Path:
    return api.ensure_demo_data(root)


def demo_root() -> Path:
    """The demo dataset root (``$ESNET_DEMO_ROOT`` or assets/demo_data), generated once if missing."""
    return _ensure_demo(str(api.default_demo_root()))


# --- run directories (keyed by path + the (mtime_ns, size) of the files read) -----------------
def _stat_key(path: Path) -> tuple[int, int]:
    """(mtime_ns, size) of a file or folder, (0, 0) when it is missing."""
    try:
        st_ = path.stat()
    except FileNotFoundError:
        return (0, 0)
    return (st_.st_mtime_ns, st_.st_size)


@st.cache_data(show_spinner=False, max_entries=256)
def _metrics(run_dir: str, stat_key: tuple[int, int]) -> pd.DataFrame:
    return api.metrics_frame(run_dir)


def metrics_frame(run_dir: Path) -> pd.DataFrame:
    """``api.metrics_frame``, re-read whenever metrics.jsonl changes (the live monitor polls this)."""
    return _metrics(str(run_dir), _stat_key(Path(run_dir) / "metrics.jsonl"))


@st.cache_data(show_spinner=False, max_entries=32, ttl=10)
def _code_changes(run_dir: str, stat_key: tuple[int, int]) -> list[str]:
    return api.resume_code_changes(run_dir)


def resume_code_changes(run_dir: Path) -> list[str]:
    """``api.resume_code_changes`` (milliseconds): re-read when checkpoints/last.pt changes, and at most
    10 s old (the source files it compares with can change while the dashboard runs)."""
    return _code_changes(str(run_dir), _stat_key(Path(run_dir) / "checkpoints" / "last.pt"))


@st.cache_data(show_spinner="Reading the checkpoint's P-pooling exponents ...", max_entries=32)
def _final_p(run_dir: str, mtimes: tuple[float, ...]) -> pd.DataFrame:
    return api.final_p_channels(run_dir)


def final_p_channels(run_dir: Path) -> pd.DataFrame:
    """``api.final_p_channels`` (branch, channel, p), re-read when the run's checkpoints change."""
    return _final_p(*checkpoint_key(run_dir))


@st.cache_data(show_spinner=False, max_entries=64)
def _cmc(runs: tuple[tuple[str, str], ...], stat_keys: tuple[tuple[int, int], ...]) -> pd.DataFrame:
    return api.cmc_frame(dict(runs))


def cmc_frame(run_dirs: dict[str, Path]) -> pd.DataFrame:
    """``api.cmc_frame`` of several runs (name -> run dir)."""
    runs = tuple((name, str(d)) for name, d in run_dirs.items())
    return _cmc(runs, tuple(_stat_key(Path(d) / "metrics.jsonl") for _, d in runs))


@st.cache_data(show_spinner=False, max_entries=64)
def _block_positions(run_dir: str, stat_key: tuple[int, int]) -> pd.DataFrame:
    return api.block_positions(run_dir)


def block_positions(run_dir: Path) -> pd.DataFrame:
    """``api.block_positions``, re-read when a probe record is added (the probes folder changes)."""
    return _block_positions(str(run_dir), _stat_key(Path(run_dir) / "probes"))


@st.cache_data(show_spinner=False, max_entries=128)
def _erasing_frames(run_dir: str, epoch: int, dataset_root: str | None,
                    stat_key: tuple[int, int]) -> list[api.ErasingFrame]:
    return api.erasing_frames(run_dir, epoch, dataset_root=dataset_root)


def erasing_frames(run_dir: Path, epoch: int, dataset_root: Path | None) -> list[api.ErasingFrame]:
    """``api.erasing_frames`` of one epoch (raises ``api.RunDirError`` like it)."""
    record = Path(run_dir) / "probes" / f"epoch_{epoch:04d}.npz"
    return _erasing_frames(str(run_dir), epoch, None if dataset_root is None else str(dataset_root),
                           _stat_key(record))


@st.cache_data(show_spinner=False, max_entries=128)
def pooling_demo(p: float) -> api.PoolingDemo:
    """``api.pooling_demo(p)`` (raises ValueError for p < 1)."""
    return api.pooling_demo(p)


# --- model pages (rank browser, embeddings, search, evaluate) --------------------------------
# Keys: the checkpoint path as given (run directory or file) + the mtimes of the checkpoint
# files it may resolve to, so a re-trained last.pt invalidates everything computed from it.
def checkpoint_key(path: str | Path) -> tuple[str, tuple[float, ...]]:
    """(path, mtimes) identifying a checkpoint file or a run directory's checkpoints/*.pt."""
    p = Path(path)
    files = [p] if p.is_file() else sorted((p / "checkpoints").glob("*.pt"))
    return str(p), tuple(f.stat().st_mtime for f in files if f.is_file())


@st.cache_resource(show_spinner="Loading the checkpoint ...", max_entries=4)
def _inference(path: str, mtimes: tuple[float, ...], feature: str | None = None) -> api.Inference:
    # one model object per test feature: set_test_feature changes the model, and it is shared
    return api.load_inference(path, test_feature=feature)


def inference(path: str | Path) -> api.Inference:
    """The checkpoint (file, or run directory: its last.pt) loaded once, eval mode, shared read-only."""
    return _inference(*checkpoint_key(path))


@st.cache_resource(show_spinner=False, max_entries=8)
def _evaluation(path: str, mtimes: tuple[float, ...], dataset: str, root: str, root_mtime: float,
                rerank: bool, flip: bool, feature: str | None) -> api.EvalReport:
    if feature is not None and _inference(path, mtimes).config.model.test_feature == "concat":
        # a branch is half of the concat feature: slice the run's own report, do not embed again
        return api.feature_view(_evaluation(path, mtimes, dataset, root, root_mtime, rerank, flip, None), feature)
    inf = _inference(path, mtimes, feature)
    return progress.with_bar(f"Evaluating {Path(path).name} on {dataset} (once; features cached on disk)",
                             lambda bar: api.evaluate_checkpoint(inf, dataset, root, rerank=rerank, flip=flip,
                                                                 cache_dir=api.default_cache_dir(), progress=bar))


def evaluation(path: str | Path, dataset: str, root: Path, *, rerank: bool = False,
               flip: bool = False, feature: str | None = None) -> api.EvalReport:
    """``api.evaluate_checkpoint`` once per checkpoint / dataset / options; the report is shared: never mutate it.

    ``feature``: the test embedding (``concat``, ``global``, ``erase``); None is the run's own.
    """
    return _evaluation(*checkpoint_key(path), dataset, str(root), _mtime(Path(root)), rerank, flip, feature)


@st.cache_resource(show_spinner="Evaluating by the VehicleID protocol (embeds the test list once; 10 random "
                                "gallery draws) ...", max_entries=8)
def _vehicleid_evaluation(path: str, mtimes: tuple[float, ...], root: str, root_mtime: float, test_size: str,
                          flip: bool) -> api.VehicleIDReport:
    return api.evaluate_vehicleid_checkpoint(_inference(path, mtimes), root, test_size, flip=flip,
                                             cache_dir=api.default_cache_dir())


def vehicleid_evaluation(path: str | Path, root: Path, *, test_size: str = "small",
                         flip: bool = False) -> api.VehicleIDReport:
    """``api.evaluate_vehicleid_checkpoint`` once per checkpoint / root / test list / flip; shared: never mutate it."""
    return _vehicleid_evaluation(*checkpoint_key(path), str(root), _mtime(Path(root)), test_size, flip)


@st.cache_resource(show_spinner=False, max_entries=4)
def _gallery(path: str, mtimes: tuple[float, ...], dataset: str, root: str, root_mtime: float) -> api.Gallery:
    inf = _inference(path, mtimes)
    return progress.with_bar("Embedding and indexing the gallery (once; cached on disk)",
                             lambda bar: api.load_gallery(inf, dataset=dataset, root=root, split="gallery",
                                                          cache_dir=api.default_cache_dir(),
                                                          progress=lambda done, total: bar("gallery", done, total)))


def gallery(path: str | Path, dataset: str, root: Path) -> api.Gallery:
    """The dataset's gallery split embedded by the checkpoint and indexed for search."""
    return _gallery(*checkpoint_key(path), dataset, str(root), _mtime(Path(root)))


@st.cache_data(show_spinner=False, max_entries=16)
def _center(key: tuple, _features: np.ndarray) -> np.ndarray:
    return api.embedding_center(_features)


def gallery_center(path: str | Path, dataset: str, root: Path) -> np.ndarray:
    """``api.embedding_center`` of ``gallery(path, dataset, root)``, computed once."""
    return _center(("gallery", *checkpoint_key(path), dataset, str(root), _mtime(Path(root))),
                   gallery(path, dataset, root).embeddings.features)


def report_center(rep: api.EvalReport) -> np.ndarray:
    """``api.embedding_center`` of a report's gallery embeddings, computed once per model, data and feature."""
    return _center(("report", rep.checkpoint_sha, rep.dataset, rep.root, _mtime(Path(rep.root)), rep.test_feature,
                    rep.flip, len(rep.gallery.paths)), rep.gallery.features)


UMAP_WARM_UP_S = 40.0
"""About how long UMAP's first call in a process compiles (numba), for the progress estimate."""

PROJECTION_S_PER_POINT = {"umap": 0.004, "tsne": 0.02, "pca": 0.0002}
"""Rough seconds per point of each projection on a 2-core CPU, for the progress estimate."""


@st.cache_resource(show_spinner=False)
def umap_warm_up() -> float:
    """Pay UMAP's one-off JIT compile once per process, behind a progress bar; returns the seconds it took."""
    return progress.ticking("Preparing UMAP", "compiling its numba kernels (once per server)",
                            api.warm_up_projection, expected_s=UMAP_WARM_UP_S, key="umap-warm-up")


@st.cache_data(show_spinner=False, max_entries=16)
def _projection(path: str, mtimes: tuple[float, ...], dataset: str, root: str, root_mtime: float,
                method: str, seed: int) -> pd.DataFrame:
    report = _evaluation(path, mtimes, dataset, root, root_mtime, False, False, None)
    n = report.num_query + report.num_gallery
    return progress.ticking(f"Projecting {n:,} embeddings to 2-D (once; cached on disk)", method,
                            lambda: api.embedding_projection(report, method=method, seed=seed,
                                                             cache_dir=api.default_cache_dir()),
                            expected_s=n * PROJECTION_S_PER_POINT.get(method, 0.004),
                            key=repr(("projection", path, mtimes, dataset, root, root_mtime, method, seed)))


def projection(path: str | Path, dataset: str, root: Path, *, method: str, seed: int = 0) -> pd.DataFrame:
    """2-D projection (x, y, pid, camid, split, path) of the evaluation's query + gallery features."""
    return _projection(*checkpoint_key(path), dataset, str(root), _mtime(Path(root)), method, seed)


@st.cache_data(show_spinner=False, max_entries=512)
def _image_heat(path: str, mtimes: tuple[float, ...], kind: str, image_key: str, _image) -> np.ndarray:
    return api.image_saliency(_inference(path, mtimes), _image, kind=kind).heat


def image_heat(path: str | Path, kind: str, image_key: str, image) -> np.ndarray:
    """(H, W) float32 saliency in [0, 1] of one image (``kind`` as ``api.image_saliency``).

    ``image_key`` identifies the PIL ``image`` (a file path, or the sha256 of an upload's bytes).
    """
    return _image_heat(*checkpoint_key(path), kind, image_key, image)


@st.cache_data(show_spinner=False, max_entries=512)
def _pair_heat(path: str, mtimes: tuple[float, ...], query_key: str, match_key: str, _query, _match,
               center: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    q, m = api.pair_saliency(_inference(path, mtimes), _query, _match, center)
    return q.heat, m.heat


def pair_heat(path: str | Path, query_key: str, query, match_key: str, match,
              center: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Similarity saliency (query heat, match heat), each (H, W) float32 in [0, 1], of one pair.

    ``center``: the gallery's ``api.embedding_center`` (what the pair shares beyond the average image).
    """
    return _pair_heat(*checkpoint_key(path), query_key, match_key, query, match, center)


@st.cache_data(show_spinner=False, max_entries=16)
def _attention_spread(path: str, mtimes: tuple[float, ...], dataset: str, root: str, root_mtime: float,
                      split: str) -> pd.DataFrame:
    inf = _inference(path, mtimes)
    return progress.with_bar(f"Measuring the attention spread of {Path(path).name} (once; cached on disk)",
                             lambda bar: api.attention_spread_frame(
                                 inf, dataset, root, split=split, cache_dir=api.default_cache_dir(),
                                 progress=lambda done, total: bar(f"{split} images", done, total)))


def attention_spread(path: str | Path, dataset: str, root: Path, *, split: str = "query") -> pd.DataFrame:
    """``api.attention_spread_frame`` of the checkpoint's own CAM on one split, with a progress bar
    (images done / total, ETA) while it runs; cached in memory and on disk."""
    return _attention_spread(*checkpoint_key(path), dataset, str(root), _mtime(Path(root)), split)
