"""The façade the dashboard (app/, pages/) imports: plain functions returning data.

Pages never import torch or esnet internals; they call these.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from esnet import embedding, evaluation, projection, saliency
from esnet.checkpoint import CheckpointError, checkpoint_extra
from esnet.data import images
from esnet.data.check import check_dataset
from esnet.data.datasets import DATASETS, load_dataset
from esnet.data.datasets import VEHICLEID_TEST_SIZES as _VEHICLEID_LISTS
from esnet.data.images import ImageError
from esnet.paths import default_cache_dir  # embeddings and projections: default_cache_dir()
from esnet.data.types import DatasetError
from esnet.embedding import TEST_SELECTED, Embeddings, Inference, is_test_selected
from esnet.evaluation import EvalReport, VehicleIDReport
from esnet.saliency import ErasingView, SaliencyMap
from esnet.search import GalleryIndex, SearchResult, build_index, search
from esnet.engine import rundir
from esnet.engine.code import changed_since
from esnet.engine.rundir import RunDirError
from esnet.runview import (
    ErasingFrame,
    PoolingDemo,
    block_positions,
    cmc_frame,
    erasing_frames,
    final_p_channels,
    metrics_frame,
    pooling_demo,
    runs_frame,
)

__all__ = [
    "model_page_needs", "runs_with_checkpoint",
    "DATASET_LABELS", "ModelCard", "OPERATING_FPRS", "model_card", "operating_points",
    "attention_spread_frame", "compare_attention", "compare_reports", "true_matches",
    "DATASETS", "SALIENCY_KINDS", "CheckpointError", "DatasetError", "Embeddings", "ErasingFrame", "ErasingView",
    "EvalReport", "Gallery", "ImageError", "Inference", "PoolingDemo", "RunDirError", "SaliencyMap", "SearchResult",
    "TrainingJob", "block_positions", "cmc_frame", "dataset_overview", "default_cache_dir", "default_dataset_root",
    "default_demo_root", "default_runs_dir", "embed", "embedding_projection", "ensure_demo_data", "erasing_frames",
    "embedding_center", "erasing_replay", "evaluate_checkpoint", "final_p_channels", "image_saliency", "load_gallery", "load_inference", "metrics_frame",
    "nearest_neighbours", "pair_saliency", "pooling_demo", "printable", "csv_bytes", "query_ranking", "read_image",
    "read_run_config", "run_status", "runs_frame", "search_images", "start_training", "stop_training",
    "warm_up_projection", "TEST_SELECTED", "is_test_selected", "VehicleIDReport", "VEHICLEID_TEST_SIZES",
    "evaluate_vehicleid_checkpoint", "feature_view", "dataset_camera_regex", "run_dataset",
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


def default_dataset_root() -> Path:
    """The dataset root the dashboard opens with (``$ESNET_DATASET_ROOT``, else the demo dataset root).

    ``make results MARKET=...`` sets it to the user's Market-1501 so the committed results in
    results/market1501 (which ship without images) show their probe images.
    """
    env = os.environ.get("ESNET_DATASET_ROOT", "").strip()
    return Path(env).expanduser() if env else default_demo_root()


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


# --- inference: load, embed, search, evaluate, saliency, projections -------------------------
def printable(text: str) -> str:
    """``text`` safe to display: a file name that is not valid UTF-8 reaches Python with lone
    surrogates (``\\udcff``), which a browser cannot be sent; they become ``\\xff`` escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as CSV in UTF-8, file names that are not valid UTF-8 written back as their own bytes
    (``read_csv(..., encoding_errors="surrogateescape")`` reads them back the same)."""
    return frame.to_csv(index=False).encode("utf-8", "surrogateescape")


def load_inference(path: str | Path, device: str = "auto", test_feature: str | None = None,
                   which: str = "last") -> Inference:
    """A checkpoint file, or a run directory (its last.pt; ``which="best"``: its best.pt), ready to embed images.

    best.pt is the epoch with the best query/gallery mAP, i.e. selected on the test split:
    ``Inference.test_selected`` is True for it, and what shows it labels it ``test-selected``.

    ``test_feature`` (``concat``, ``global``, ``erase``) embeds with other branches than the
    run was configured with; None keeps the run's ``model.test_feature``.

    Raises:
        CheckpointError: missing, unreadable, untrusted (not weights-only) or mismatched checkpoint.
        ValueError: an unknown device or test feature, or ``erase`` without an erasing branch.
    """
    return embedding.load_inference(path, device=device, test_feature=test_feature, which=which)


def read_image(source: str | Path | bytes, name: str | None = None) -> Image.Image:
    """A file path or the bytes of an upload -> 8-bit RGB image, by the rules of ``esnet.data.images``.

    Raises:
        ImageError: the message names the file (``name`` for bytes) and the reason.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return images.load_rgb_bytes(bytes(source), name or "upload")
    return images.load_rgb(source)


@dataclass(frozen=True, eq=False)
class Gallery:
    """Embedded gallery images and their search index.

    Attributes:
        embeddings: features (N, D) float32 unit rows, paths, pids, camids, skipped files.
        index: the ``esnet.search`` index over them.
    """

    embeddings: Embeddings
    index: GalleryIndex

    def __len__(self) -> int:
        return len(self.embeddings.paths)


def dataset_camera_regex(inf: Inference, dataset: str, camera_regex: str | None = None) -> str | None:
    """The camera regex to load ``dataset`` with: ``camera_regex`` if given, else the run's own
    ``data.camera_regex`` when ``dataset`` is the run's dataset, else None (the loader's default)."""
    if camera_regex:
        return camera_regex
    data = inf.config.data
    return data.camera_regex if dataset == data.dataset and dataset == "folder" else None


def run_dataset(inf: Inference, dataset: str | None, root: str | Path | None) -> tuple[str, str]:
    """(dataset, root) given, else the checkpoint's run's own ``data.dataset`` / ``data.root``.

    Raises:
        ValueError: no root given and the run's config names none.
    """
    name = dataset or inf.config.data.dataset
    where = str(root) if root else (inf.config.data.root if name == inf.config.data.dataset else "")
    if not where:
        raise ValueError(f"dataset {name!r} needs a root directory (--root DIR): the checkpoint's run names none "
                         f"for it")
    return name, where


def _load(dataset: str, root: str | Path, camera_regex: str | None):
    return load_dataset(dataset, str(root), **({} if camera_regex is None else {"camera_regex": camera_regex}))


def embed(inf: Inference, *, folder: str | Path | None = None, dataset: str | None = None,
          root: str | Path | None = None, split: str = "gallery", flip: bool = False,
          cache_dir: str | Path | None = None, batch_size: int = 64,
          progress: Callable[[int, int], None] | None = None, camera_regex: str | None = None) -> Embeddings:
    """Embed every image of ``folder`` (recursive), or one ``split`` of ``dataset`` at ``root``.

    Unreadable images are skipped and listed in ``Embeddings.skipped``; with ``cache_dir``
    a gallery already embedded by the same checkpoint is read back instead. ``camera_regex``:
    see :func:`dataset_camera_regex`.

    Raises:
        ValueError: neither or both of folder / dataset given, an empty folder or split,
            or every image unreadable.
        DatasetError: the dataset cannot be loaded.
    """
    if (folder is None) == (dataset is None):
        raise ValueError("give exactly one of folder=... or dataset=... (with root=...)")
    if folder is not None:
        return embedding.embed_folder(inf, folder, batch_size=batch_size, flip=flip, cache_dir=cache_dir,
                                      progress=progress)
    if root is None:
        raise ValueError(f"dataset {dataset!r} needs root=<its directory>")
    data = _load(dataset, root, dataset_camera_regex(inf, dataset, camera_regex))
    return embedding.embed_split(inf, data, split, batch_size=batch_size, flip=flip, cache_dir=cache_dir,
                                 progress=progress)


def load_gallery(inf: Inference, *, folder: str | Path | None = None, dataset: str | None = None,
                 root: str | Path | None = None, split: str = "gallery", flip: bool = False,
                 cache_dir: str | Path | None = None, backend: str = "auto",
                 progress: Callable[[int, int], None] | None = None, camera_regex: str | None = None) -> Gallery:
    """:func:`embed` the gallery, then index it (``backend`` as ``esnet.search.build_index``)."""
    emb = embed(inf, folder=folder, dataset=dataset, root=root, split=split, flip=flip, cache_dir=cache_dir,
                progress=progress, camera_regex=camera_regex)
    index = build_index(emb.features, paths=list(emb.paths), pids=emb.pids, camids=emb.camids, cameras=emb.cameras,
                        backend=backend)
    return Gallery(embeddings=emb, index=index)


def search_images(inf: Inference, gallery: Gallery, query_images: Sequence[Image.Image], *, topk: int = 10,
                  rerank: bool = False, flip: bool = False) -> SearchResult:
    """Rank the gallery for each query image (RGB PIL images, e.g. from :func:`read_image`).

    Returns:
        ``SearchResult`` with (Q, k) arrays, distances ascending; ``to_frame(i)`` per query.
    """
    if flip != gallery.embeddings.flip:
        raise ValueError(f"flip={flip} but the gallery was embedded with flip={gallery.embeddings.flip}; "
                         "queries and gallery must use the same features")
    feats = embedding.embed_images(inf, list(query_images), flip=flip)  # (Q, D)
    return search(gallery.index, feats, topk=topk, rerank=rerank)


def evaluate_checkpoint(checkpoint: str | Path | Inference, dataset: str, root: str | Path, *,
                        rerank: bool = False, flip: bool = False, cache_dir: str | Path | None = None,
                        progress: Callable[[str, int, int], None] | None = None, camera_regex: str | None = None,
                        feature: str | None = None) -> EvalReport:
    """CMC / mAP / mINP of a checkpoint (file, run directory or loaded ``Inference``) on a dataset.

    ``feature`` (``global`` / ``erase``) of a model whose test feature is ``concat`` is cut out of
    the concat embeddings (:func:`feature_view`): one embedding pass, one cache entry for all three.
    ``camera_regex``: see :func:`dataset_camera_regex`.

    Returns:
        ``EvalReport``: summary, CMC, per-query results, embeddings and the verification ROC.
    Raises:
        CheckpointError, DatasetError, ValueError: with the file / rule named.
    """
    inf = checkpoint if isinstance(checkpoint, Inference) else load_inference(checkpoint)
    own = inf.config.model.test_feature
    if feature not in (None, own) and own != "concat":
        inf = load_inference(inf.checkpoint, device=inf.device.type, test_feature=feature)
    report = evaluation.evaluate_dataset(inf, dataset, str(root), rerank=rerank, flip=flip,
                                         cache_dir=None if cache_dir is None else str(cache_dir), progress=progress,
                                         camera_regex=dataset_camera_regex(inf, dataset, camera_regex))
    return report if feature is None else evaluation.feature_view(report, feature)


VEHICLEID_TEST_SIZES = tuple(_VEHICLEID_LISTS)
"""VehicleID's test lists: small, medium, large = test_list_800.txt, test_list_1600.txt, test_list_2400.txt."""


def evaluate_vehicleid_checkpoint(checkpoint: str | Path | Inference, root: str | Path, test_size: str = "small", *,
                                  flip: bool = False, cache_dir: str | Path | None = None,
                                  progress: Callable[[str, int, int], None] | None = None,
                                  repeats: int = evaluation.VEHICLEID_REPEATS, seed: int = 0) -> VehicleIDReport:
    """A checkpoint on a VehicleID test list by the VehicleID protocol: one random gallery image per
    vehicle, ``repeats`` draws, mean ± std (``VehicleIDReport.summary``).

    Raises:
        CheckpointError, DatasetError, ValueError: with the file / rule named.
    """
    if test_size not in VEHICLEID_TEST_SIZES:
        raise ValueError(f"test_size must be one of {list(VEHICLEID_TEST_SIZES)}, got {test_size!r}")
    inf = checkpoint if isinstance(checkpoint, Inference) else load_inference(checkpoint)
    return evaluation.evaluate_vehicleid_dataset(inf, str(root), test_size, flip=flip, repeats=repeats, seed=seed,
                                                 cache_dir=None if cache_dir is None else str(cache_dir),
                                                 progress=progress)


def feature_view(report: EvalReport, feature: str) -> EvalReport:
    """A ``concat`` report scored with one branch (``global`` / ``erase``) without embedding again."""
    return evaluation.feature_view(report, feature)


def query_ranking(report: EvalReport, query_row: int, topk: int = 10) -> pd.DataFrame:
    """One query's ranked gallery (rank, index, path, pid, camid, distance, correct, ignored)."""
    return evaluation.query_ranking(report, query_row, topk)


SALIENCY_KINDS = ("cam", "gradcam", "ig")


def _batch(inf: Inference, image: Image.Image):
    return inf.preprocess([image]).to(inf.device)  # (1, 3, H, W)


def image_saliency(inf: Inference, image: Image.Image, kind: str = "cam", *, class_id: int | None = None,
                   baseline: str = "blur") -> SaliencyMap:
    """One image's saliency at the network's input resolution (H, W).

    Args:
        kind: ``cam`` (the model's own CAM: what ES-Net erases), ``gradcam`` (captum
            LayerGradCAM) or ``ig`` (captum IntegratedGradients from a ``blur`` or ``grey`` baseline).
        class_id: identity to explain (training class index); None = predicted / own embedding.
    """
    import torch

    if kind not in SALIENCY_KINDS:
        raise ValueError(f"saliency kind must be one of {list(SALIENCY_KINDS)}, got {kind!r}")
    x = _batch(inf, image)
    ids = None if class_id is None else torch.tensor([class_id], device=inf.device)
    with inf.lock:  # captum hooks on the shared model: one user at a time
        if kind == "cam":
            return saliency.own_cam(inf.model, x, ids)[0]
        if kind == "gradcam":
            return saliency.grad_cam(inf.model, x, ids)[0]
        return saliency.integrated_gradients(inf.model, x, baseline=baseline, class_ids=ids)[0]


def embedding_center(features: np.ndarray) -> np.ndarray:
    """(D,) float32 mean of unit embedding rows (N, D), N >= 1: the ``center`` of ``pair_saliency``."""
    feats = np.asarray(features, dtype=np.float32)
    if feats.ndim != 2 or not len(feats):
        raise ValueError(f"features must be a non-empty (N, D) array, got shape {feats.shape}")
    return feats.mean(axis=0)


def pair_saliency(inf: Inference, query: Image.Image, match: Image.Image,
                  center: np.ndarray | None = None) -> tuple[SaliencyMap, SaliencyMap]:
    """Which regions of the query and of the match drive their cosine similarity.

    ``center``: the gallery's ``embedding_center``, so the maps show what the two share beyond
    the average image (see ``saliency.similarity_saliency``); None = the plain cosine.
    """
    q, m = _batch(inf, query), _batch(inf, match)
    with inf.lock:
        return saliency.similarity_saliency(inf.model, q, m, center)


def erasing_replay(inf: Inference, image: Image.Image) -> ErasingView:
    """The block ES-Net would erase from this image now (CAM of the predicted identity)."""
    x = _batch(inf, image)
    with inf.lock:
        return saliency.erasing_replay_map(inf.model, x)[0]


def _projection_key(report: EvalReport, method: str, seed: int) -> str:
    h = hashlib.sha256(json.dumps([report.checkpoint_sha, report.query.paths, report.gallery.paths, report.flip,
                                   method, seed]).encode())
    return h.hexdigest()[:32]


def embedding_projection(report: EvalReport, *, method: str = "umap", seed: int = 0,
                         cache_dir: str | Path | None = None) -> pd.DataFrame:
    """2-D projection of the report's query + gallery features (queries first).

    Returns:
        DataFrame x, y, pid, camid (0-based), camera (as in the file name; shown), split
        (``query``/``gallery``), path. With ``cache_dir`` the
        coordinates are stored (atomically) and read back for the same checkpoint, images,
        method and seed.
    """
    feats = np.concatenate([np.asarray(report.query.features), np.asarray(report.gallery.features)])  # (Q+G, D)
    meta = {"pids": np.concatenate([report.query.pids, report.gallery.pids]),
            "camids": np.concatenate([report.query.camids, report.gallery.camids]),
            "splits": ["query"] * report.num_query + ["gallery"] * report.num_gallery,
            "paths": list(report.query.paths) + list(report.gallery.paths)}
    cameras = np.concatenate([report.query.cameras, report.gallery.cameras])
    cached = None if cache_dir is None else Path(cache_dir) / f"projection-{_projection_key(report, method, seed)}.npy"
    if cached is not None and cached.is_file():
        xy = np.load(cached, allow_pickle=False)
        if xy.shape == (len(feats), 2):
            frame = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "pid": meta["pids"], "camid": meta["camids"],
                                  "camera": cameras, "split": meta["splits"],
                                  "path": pd.Series(meta["paths"], dtype=object)})
            frame.attrs.update(method=method, seed=seed, from_cache=True)
            return frame
    frame = projection.projection_frame(feats, method=method, seed=seed, **meta)
    frame.insert(frame.columns.get_loc("camid") + 1, "camera", cameras)
    if cached is not None:
        buf = io.BytesIO()
        np.save(buf, frame[["x", "y"]].to_numpy(np.float32))
        cached.parent.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write_bytes(cached, buf.getvalue())
    frame.attrs["from_cache"] = False
    return frame


def warm_up_projection() -> float:
    """Compile UMAP's numba kernels once per process (~20-40 s the first time); returns seconds."""
    return projection.warm_up()


DATASET_LABELS = {
    "demo": "the synthetic demo data (drawn figures, not photos of real people)",
    "market1501": "Market-1501", "dukemtmcreid": "DukeMTMC-reID", "msmt17": "MSMT17", "veri776": "VeRi-776",
    "vehicleid": "VehicleID", "folder": "a folder of images", "manifest": "a CSV manifest",
}
"""How the pages name a dataset (``data.dataset`` of a run's config) when they say what a model saw."""


@dataclass(frozen=True)
class ModelCard:
    """What a loaded model is and what it was trained on, in words for a page.

    Attributes:
        architecture: e.g. ``ES-Net (salient erasing), mobilenet_v2, avg pooling, 128x64``.
        trained_on: the training data as a reader knows it (``DATASET_LABELS``).
        synthetic: True for the embedded demo (the model has never seen a real person).
        num_ids: identities it was trained on.
    """

    architecture: str
    trained_on: str
    synthetic: bool
    num_ids: int


def model_card(inf: Inference) -> ModelCard:
    """:class:`ModelCard` of a loaded model, from its stored config."""
    m, d = inf.config.model, inf.config.data
    kind = {"off": "baseline (no erasing)", "salient": "ES-Net (salient erasing)",
            "random": "random-block erasing"}.get(m.erasing, m.erasing)
    pool = "P-pooling" if m.pool == "p" else f"{m.pool} pooling"
    return ModelCard(architecture=f"{kind}, {m.backbone}, {pool}, {d.height}x{d.width}",
                     trained_on=DATASET_LABELS.get(d.dataset, d.dataset), synthetic=d.dataset == "demo",
                     num_ids=int(inf.model.num_classes))


OPERATING_FPRS = (0.001, 0.01, 0.1)
"""False-positive rates at which "same person?" thresholds are offered (read off the verification ROC)."""


def operating_points(report: EvalReport) -> pd.DataFrame:
    """The "same person?" thresholds calibrated on the report's own query x gallery pairs.

    Returns:
        DataFrame point (the target, e.g. ``FPR 1%``), target_fpr, fpr (the share of
        different-person pairs the threshold actually accepts, <= the target), threshold
        (accept when distance <= it), tpr (same-person pairs accepted), one row per
        ``OPERATING_FPRS``, then Youden's J point (target_fpr = fpr = its FPR).
    """
    v = report.verification
    rows = [{"point": f"FPR {100 * f:g}%", "target_fpr": f, "fpr": v.fpr_at_fpr[f], "threshold": float(v.threshold_at_fpr[f]),
             "tpr": float(v.tpr_at_fpr[f])} for f in OPERATING_FPRS if f in v.threshold_at_fpr]
    rows.append({"point": "max TPR - FPR", "target_fpr": float(v.best_fpr), "fpr": float(v.best_fpr),
                 "threshold": float(v.best_threshold),
                 "tpr": float(v.best_tpr)})
    return pd.DataFrame(rows)


def model_page_needs(run_dir: str | Path, dataset: str, root: str | Path) -> str | None:
    """What a model page (rank, embeddings, search, evaluate, compare) lacks for a run, in one sentence; None if nothing.

    A run without ``checkpoints/last.pt`` cannot embed anything; a dataset root without the
    dataset's query/gallery folders (e.g. the committed Market-1501 results opened without a
    copy of Market-1501) cannot be evaluated. Only the sentence is returned, never a traceback.
    """
    run = Path(run_dir)
    if not (run / "checkpoints" / "last.pt").is_file():
        return (f"Run {run.name} ships without a model checkpoint (checkpoints/last.pt), so this page cannot embed "
                "images with it: pick a run that has one in the sidebar, or train it with the command in its "
                "meta.json.")
    try:
        load_dataset(dataset, str(root))
    except (DatasetError, ValueError, OSError):
        label = DATASET_LABELS.get(dataset, dataset)
        how = (" With the shared archives, `make test` unpacks it into .cache/market1501 once; then run "
               "`make results`, or `make results MARKET=/path/to/market1501` for your own copy."
               if dataset == "market1501" else "")
        return (f"This page needs the images of {label} (its query and gallery) at the dataset root in the sidebar,"
                f" and that folder does not hold them.{how}")
    return None


def runs_with_checkpoint(runs: pd.DataFrame) -> list[str]:
    """Names of the runs in a ``runs_frame`` whose directory holds ``checkpoints/last.pt``."""
    return [str(n) for n, p in zip(runs["run"], runs["path"]) if (Path(p) / "checkpoints" / "last.pt").is_file()]


SPREAD_CACHE_VERSION = 1


def attention_spread_frame(inf: Inference, dataset: str, root: str | Path, *, split: str = "query",
                           cache_dir: str | Path | None = None,
                           progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Attention spread (``esnet.saliency.attention_spread`` of the model's own CAM) of one split.

    Returns:
        DataFrame ``saliency.SPREAD_COLUMNS``, one row per readable image. With ``cache_dir``
        the frame is stored (atomically) and read back for the same checkpoint and images.
    Raises:
        DatasetError, ValueError: the dataset or split cannot be read.
    """
    data = load_dataset(dataset, str(root))
    samples = data.split(split)
    key = hashlib.sha256(json.dumps([SPREAD_CACHE_VERSION, inf.checkpoint_sha, inf.config.model.test_feature,
                                     [s.path for s in samples], saliency.SPREAD_MASS]).encode()).hexdigest()[:32]
    cached = None if cache_dir is None else Path(cache_dir) / f"spread-{key}.csv"
    if cached is not None and cached.is_file():
        frame = pd.read_csv(cached, dtype={"path": object}, encoding_errors="surrogateescape")
        if list(frame.columns) == list(saliency.SPREAD_COLUMNS):
            frame.attrs["from_cache"] = True
            return frame
    frame = saliency.split_attention_spread(inf, samples, progress=progress)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write_bytes(cached, csv_bytes(frame))
    frame.attrs["from_cache"] = False
    return frame


def compare_attention(a: pd.DataFrame, b: pd.DataFrame, measure: str = "coverage", *,
                      n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Is model b's attention wider than model a's on the same images? (``saliency.compare_spread``).

    ``a`` and ``b`` are :func:`attention_spread_frame` results; images are paired by path.
    Raises:
        ValueError: an unknown measure, or fewer than 2 images in common.
    """
    if measure not in ("coverage", "entropy"):
        raise ValueError(f"measure must be 'coverage' or 'entropy', got {measure!r}")
    both = a[["path", measure]].merge(b[["path", measure]], on="path", suffixes=("_a", "_b"))
    return saliency.compare_spread(both[f"{measure}_a"].to_numpy(), both[f"{measure}_b"].to_numpy(),
                                   n_boot=n_boot, seed=seed)


def compare_reports(a: EvalReport, b: EvalReport) -> pd.DataFrame:
    """Per-query comparison of two evaluations of the same queries (e.g. baseline vs ES-Net).

    Returns:
        DataFrame: query, path, pid, camid, camera, ap_a, ap_b, delta (= ap_b - ap_a),
        first_hit_a, first_hit_b (1-based), for the queries both score (valid in both).
    Raises:
        ValueError: the reports hold different query images.
    """
    qa, qb = a.per_query, b.per_query
    if list(qa["path"]) != list(qb["path"]):
        raise ValueError(f"the two evaluations hold different queries ({a.dataset} at {a.root}: {len(qa)} vs "
                         f"{b.dataset} at {b.root}: {len(qb)}); compare runs evaluated on the same dataset")
    keep = qa["valid"].to_numpy(bool) & qb["valid"].to_numpy(bool)
    cols = [c for c in ("query", "path", "pid", "camid", "camera") if c in qa]
    out = qa.loc[keep, cols].copy()
    out["ap_a"] = qa.loc[keep, "ap"].to_numpy(float)
    out["ap_b"] = qb.loc[keep, "ap"].to_numpy(float)
    out["delta"] = out["ap_b"] - out["ap_a"]
    out["first_hit_a"] = qa.loc[keep, "first_hit"].to_numpy()
    out["first_hit_b"] = qb.loc[keep, "first_hit"].to_numpy()
    return out.reset_index(drop=True)


def true_matches(report: EvalReport, query_row: int, limit: int = 4) -> pd.DataFrame:
    """The gallery images the protocol scores as correct for one query (same id, other camera).

    Returns:
        query_ranking-style rows (rank among scored items, path, pid, camera, distance), best first.
    """
    ranking = evaluation.query_ranking(report, query_row, topk=report.num_gallery)
    return ranking.loc[ranking["correct"] & ~ranking["ignored"]].head(limit).reset_index(drop=True)


def nearest_neighbours(report: EvalReport, row: int, k: int = 8) -> pd.DataFrame:
    """The ``k`` nearest images (query + gallery, cosine) to row ``row`` of :func:`embedding_projection`'s frame.

    Returns:
        DataFrame row, path, pid, camid (0-based), camera (as in the file name), split, distance;
        nearest first, the image itself excluded.
    """
    feats = np.concatenate([np.asarray(report.query.features), np.asarray(report.gallery.features)])  # (N, D)
    n = len(feats)
    if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not 0 <= row < n:
        raise ValueError(f"row must be an integer in [0, {n}), got {row!r}")
    d = 1.0 - feats @ feats[row]  # (N,)
    d[row] = np.inf
    order = np.argsort(d, kind="stable")[:max(0, min(int(k), n - 1))]
    q = report.num_query
    paths = list(report.query.paths) + list(report.gallery.paths)
    pids = np.concatenate([report.query.pids, report.gallery.pids])
    camids = np.concatenate([report.query.camids, report.gallery.camids])
    cameras = np.concatenate([report.query.cameras, report.gallery.cameras])
    return pd.DataFrame({"row": order, "path": pd.Series([paths[i] for i in order], dtype=object), "pid": pids[order],
                         "camid": camids[order], "camera": cameras[order], "split": ["query" if i < q else "gallery" for i in order],
                         "distance": d[order].astype(np.float32)})


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
TRAIN_NAME_MAX = 100
"""Longest run name (a file name may have 255 bytes; the trainer adds suffixes inside the folder)."""


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
    warmup_epochs: int | None = None,
    milestones: Sequence[int] | None = None,
) -> TrainingJob:
    """Start ``esnet train`` as its own process (new session) writing ``runs_dir/name``.

    The dashboard only reads the run directory; the process outlives the page. The values
    are checked first (:func:`check_training_args`), so a bad form never starts a process;
    ``launch.json`` makes the run read ``starting`` at once and ``failed`` with train.log's
    error if the trainer dies before training. ``warmup_epochs`` / ``milestones`` None: BoT's,
    scaled to ``epochs`` (:func:`scaled_schedule`).

    Raises:
        ValueError: a bad run name (letters, digits, ``-_.`` only; not starting with ``.``; at
            most ``TRAIN_NAME_MAX`` characters), a value the trainer would refuse (the
            message names it), or the run directory already holds a run or any other file.
        RunDirError: ``runs_dir`` does not exist.
    """
    if not name or name.startswith(".") or not set(name) <= TRAIN_NAME_CHARS:
        raise ValueError(f"run name must use letters, digits, '-', '_' or '.' and not start with '.', got {name!r}")
    if len(name) > TRAIN_NAME_MAX:
        raise ValueError(f"run name must be at most {TRAIN_NAME_MAX} characters, got {len(name)}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    warmup, decays = scaled_schedule(epochs)
    warmup = warmup if warmup_epochs is None else warmup_epochs
    decays = tuple(decays if milestones is None else milestones)
    check_training_args(dataset=dataset, root=root, backbone=backbone, pool=pool, erasing=erasing, epochs=epochs,
                        size=size, batch=batch, weights=weights, device=device, eval_every=eval_every,
                        warmup_epochs=warmup, milestones=decays)
    runs = Path(runs_dir)
    if not runs.is_dir():
        raise RunDirError(f"runs dir {str(runs)!r} does not exist")
    out = runs / name
    if out.exists() and rundir.has_run_files(out):
        raise ValueError(f"{str(out)!r} already holds a run; choose another name")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{str(out)!r} exists and is not an empty folder; choose another name (nothing was written)")
    try:
        out.mkdir(exist_ok=out.is_dir())  # claims a new name: a second start racing for it fails here
    except FileExistsError:
        raise ValueError(f"{str(out)!r} was just created by another start; choose another name") from None
    argv = [sys.executable, "-m", "esnet.cli", "train", "--out", str(out), "--dataset", dataset, "--root", str(root),
            "--backbone", backbone, "--pool", pool, "--erasing", erasing, "--epochs", str(epochs), "--size", size,
            "--batch", str(batch), "--device", device, "--eval-every", str(eval_every), "--workers", "0"]
    argv += ["--set", f"optim.warmup_epochs={warmup}", "--set", f"optim.milestones={','.join(map(str, decays))}"]
    if weights:
        argv += ["--weights", str(weights)]
    return _launch(out, argv)


def _launch(out: Path, argv: list[str]) -> TrainingJob:
    """Start ``argv`` writing into ``out/train.log``, record it in ``launch.json``, reap it when it ends."""
    log = out / rundir.LOG_FILE
    with open(log, "ab") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(REPO_ROOT))
    rundir.write_launch(out, proc.pid)
    _reap_when_done(proc)
    return TrainingJob(pid=proc.pid, run_dir=str(out), log=str(log), command=tuple(argv))


def resume_training(run_dir: str | Path, *, allow_code_change: bool = False) -> TrainingJob:
    """Continue a stopped or failed run (``esnet train --out run_dir --resume``) as its own process.

    Args:
        allow_code_change: pass ``--allow-code-change``: continue even where esnet's source differs
            from the code that saved the checkpoint (see :func:`resume_code_changes`; meta.json records it).
    Raises:
        ValueError: the run is starting, running or finished, or has no checkpoint to resume from.
        RunDirError: the run directory does not exist.
    """
    out = Path(run_dir)
    status = rundir.read_status(out)
    if status.state in ("starting", "running", "finished"):
        raise ValueError(f"run {out.name!r} is {status.state}; only a stopped or failed run can be resumed")
    if not rundir.checkpoint_path(out, "last").is_file():
        raise ValueError(f"run {out.name!r} has no checkpoints/last.pt (no epoch finished): start a new run instead")
    argv = [sys.executable, "-m", "esnet.cli", "train", "--out", str(out), "--resume"]
    return _launch(out, argv + ["--allow-code-change"] if allow_code_change else argv)


def resume_code_changes(run_dir: str | Path) -> list[str]:
    """The esnet source files (``esnet/...``, sorted) that differ from the code that saved the run's
    checkpoints/last.pt: a resume refuses them unless ``allow_code_change``. [] when the code is the
    same, when the checkpoint predates code records (such a resume is not checked) and when there is no
    checkpoints/last.pt (nothing to resume: :func:`resume_training` says so).

    Reads only the checkpoint's ``extra`` (its tensors are memory-mapped, not read) and hashes the
    recorded source files: milliseconds, so a page can call it on every rerun.

    Raises:
        CheckpointError: an unreadable checkpoints/last.pt, or a malformed code record in it.
    """
    last = rundir.checkpoint_path(Path(run_dir), "last")
    if not last.is_file():
        return []
    extra = checkpoint_extra(last)
    if "code" not in extra:
        return []
    try:
        return [f"esnet/{rel}" for rel in changed_since(extra["code"])]
    except ValueError as e:
        raise CheckpointError(f"{str(last)!r}: {e}") from None


def scaled_schedule(epochs: int) -> tuple[int, tuple[int, ...]]:
    """BoT's (warm-up epochs, decay epochs) at the same fractions of an ``epochs``-epoch run."""
    from esnet.config import scaled_schedule as scaled

    return scaled(epochs)


def check_training_args(*, dataset: str, root: str | Path, backbone: str, pool: str, erasing: str, epochs: int,
                        size: str, batch: int, weights: str, device: str, eval_every: int, warmup_epochs: int,
                        milestones: Sequence[int]) -> None:
    """Refuse what ``esnet train`` would refuse, before a process is started.

    Raises:
        ValueError: one line naming the value and the rule (e.g. ``data.height must be > 0, got 0``).
    """
    from esnet.config import Config, override
    from esnet.weights import NO_WEIGHTS, check_weights_choice

    h, sep, w = str(size).lower().partition("x")
    if not sep or not h.strip().isdigit() or not w.strip().isdigit():
        raise ValueError(f"input size must be HxW in pixels, e.g. 128x64, got {size!r}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid names: {sorted(DATASETS)}")
    if not Path(root).exists():
        raise ValueError(f"dataset root {str(root)!r} does not exist")
    if any(m > epochs for m in milestones):
        raise ValueError(f"decay epochs must be <= epochs ({epochs}), got {list(milestones)}")
    override(Config(), {"data.dataset": dataset, "data.root": str(root), "model.backbone": backbone,
                        "model.pool": pool, "model.erasing": erasing, "optim.epochs": epochs,
                        "data.height": int(h), "data.width": int(w), "data.batch_size": batch,
                        "train.device": device, "train.eval_every": eval_every,
                        "optim.warmup_epochs": warmup_epochs, "optim.milestones": list(milestones)})
    if backbone not in training_choices()["backbone"]:
        raise ValueError(f"backbone must be one of {training_choices()['backbone']}, got {backbone!r}")
    if str(weights).strip().lower() != NO_WEIGHTS:
        check_weights_choice(backbone, str(weights))


def user_runs_dir() -> Path:
    """Where runs started from the dashboard go (``$ESNET_USER_RUNS_DIR`` or ``runs/``, ignored by git)."""
    return Path(os.environ.get("ESNET_USER_RUNS_DIR", REPO_ROOT / "runs"))


def _reap_when_done(proc: subprocess.Popen) -> None:
    """Wait for ``proc`` in a daemon thread, so that when it ends (SIGKILL included) it is reaped at once.

    Without it a trainer that dies while the dashboard runs stays a zombie until the server
    exits; its pid stays taken and its run would not read as ended.
    """
    threading.Thread(target=proc.wait, name=f"reap-trainer-{proc.pid}", daemon=True).start()


def stop_training(run_dir: str | Path, *, timeout_s: float = 30.0) -> str:
    """Ask the trainer writing ``run_dir`` to stop (SIGINT).

    The trainer finishes the batch (or evaluation / checkpoint) in progress, marks the
    run failed with "stopped by SIGINT ...", and can be continued with ``--resume``.

    Returns:
        ``"stopped"`` (it ended within ``timeout_s``), ``"stopping"`` (signalled, still
        finishing its current step) or ``"not running"`` (no live trainer owns the run).
        Only the process that holds the run's lock, with the pid and start time it recorded
        there (:func:`esnet.engine.rundir.trainer_pid`), is ever signalled: a pid that
        status.json names but that is another process is left alone.
    Raises:
        RunDirError: the run directory does not exist.
    """
    status = rundir.read_status(run_dir)  # "running" only when status.json's pid is the verified lock holder
    if status.state != "running" or not rundir.signal_trainer(run_dir, status.pid, signal.SIGINT):
        return "not running"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if rundir.read_status(run_dir).state != "running":
            return "stopped"
        time.sleep(0.2)
    return "stopping"


ALLOWED_ROOTS_ENV = "ESNET_ALLOWED_ROOTS"


def default_allowed_roots() -> list[Path]:
    """Where dashboard paths may point: the repository, ``$HOME`` and each ``$ESNET_ALLOWED_ROOTS`` entry.

    ``$ESNET_ALLOWED_ROOTS`` is ``os.pathsep``-separated (``:`` on Linux); empty entries are ignored.
    """
    extra = os.environ.get(ALLOWED_ROOTS_ENV, "")
    return [REPO_ROOT, Path.home()] + [Path(p).expanduser() for p in extra.split(os.pathsep) if p.strip()]


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(r) for r in roots)


def confine_path(path: str | Path, allowed_roots: list[str | Path] | None = None) -> Path:
    """``path`` resolved (``~`` expanded, ``..`` and symlinks followed) if it stays inside an allowed root.

    A relative path is taken from the repository root. The path need not exist.

    Args:
        path: a path typed by the user.
        allowed_roots: the roots to confine to (default :func:`default_allowed_roots`); each is resolved too.
    Returns:
        The resolved absolute path.
    Raises:
        ValueError: empty path, or the resolved path lies outside every root; the message names
            the path, what it resolves to and the rule it broke ('..' escape, symlink escape, outside).
    """
    raw = str(path).strip()
    if not raw:
        raise ValueError("path is empty")
    roots_in = default_allowed_roots() if allowed_roots is None else [Path(r) for r in allowed_roots]
    try:
        p = Path(raw).expanduser()  # '~nosuchuser/x': RuntimeError
        p = p if p.is_absolute() else REPO_ROOT / p
        roots = [Path(r).expanduser().resolve() for r in roots_in]
        resolved = p.resolve()
    except (OSError, RuntimeError, ValueError) as e:
        raise ValueError(f"path {raw!r} cannot be resolved: {e}") from None
    if _inside(resolved, roots):
        return resolved
    shown = ", ".join(str(r) for r in roots)
    lexical = Path(os.path.normpath(p))
    if ".." in Path(raw).parts and not _inside(lexical, roots):
        rule = "'..' may not climb out of the allowed roots"
    elif _inside(lexical, roots):
        rule = "a symlink inside the allowed roots may not lead out of them"
    else:
        rule = (f"it is outside the allowed roots; add a root to ${ALLOWED_ROOTS_ENV} "
                f"({os.pathsep}-separated) to allow it")
    raise ValueError(f"path {raw!r} resolves to {str(resolved)!r}: {rule} (allowed: {shown})")


def training_choices() -> dict[str, list[str]]:
    """Valid values for the dashboard's start-training form: backbone, pool, erasing, dataset, device."""
    from esnet.config import ERASING, POOLS
    from esnet.model.backbone import BACKBONES

    return {"backbone": sorted(BACKBONES), "pool": list(POOLS), "erasing": list(ERASING),
            "dataset": sorted(DATASETS), "device": ["cpu", "cuda", "auto"]}


__all__ += ["confine_path", "default_allowed_roots", "training_choices", "resume_training", "resume_code_changes",
            "scaled_schedule", "check_training_args", "user_runs_dir"]
