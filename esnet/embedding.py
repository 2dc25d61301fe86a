"""Test features with a trained ES-Net: ``load_inference`` once, then embed PIL images or files.

Files that cannot be read are skipped and listed in ``Embeddings.skipped``. Disk cache
(``cache_dir``): ``<key>.npy`` + ``<key>.json``, key = sha256 of (checkpoint sha256, flip,
input size, test feature, each image's path, pid, camid, camera, size, mtime_ns). Features are written batch by
batch into a memory-mapped temporary file, renamed into place and returned memory-mapped
read-only; the json, written last and atomically, completes the entry. An unreadable
entry warns and is rebuilt.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from esnet.atomic import atomic_write_bytes, replace_with, temp_beside
from esnet.checkpoint import CheckpointError, load_model
from esnet.config import Config
from esnet.data.images import ImageError, load_rgb
from esnet.data.transforms import build_transforms
from esnet.data.types import ReidData, Sample
from esnet.engine.rundir import checkpoint_path
from esnet.engine.trainer import resolve_device
from esnet.model import ESNet

FOLDER_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
"""File extensions (any case) that ``embed_folder`` picks up."""

CACHE_VERSION = 2
_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
_COPY_ROWS = 4096
_CACHE_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Inference:
    """A loaded checkpoint ready to embed images.

    Attributes:
        model: the ESNet in eval mode, on ``device``.
        config: the run config stored in the checkpoint.
        checkpoint: path of the checkpoint file.
        checkpoint_sha: sha256 hex digest of the checkpoint file's bytes.
        device: where the model runs.
        size: (H, W) network input size, from ``config.data``.
        transform: PIL RGB image -> (3, H, W) float32 normalised tensor (test pipeline).
        lock: held around every use of ``model``. One loaded model serves every dashboard
            session (``st.cache_resource``), and saliency attaches captum hooks to it: a
            forward pass of another thread while they are attached would feed them (or the
            backward pass) the wrong tensors.
    """

    model: ESNet
    config: Config
    checkpoint: str
    checkpoint_sha: str
    device: torch.device
    size: tuple[int, int]
    transform: Callable[[Image.Image], torch.Tensor]
    lock: threading.RLock = field(default_factory=threading.RLock, compare=False, repr=False)

    @property
    def test_selected(self) -> bool:
        """Whether the checkpoint is a run's ``best.pt``: see :func:`is_test_selected`."""
        return is_test_selected(self.checkpoint)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """B RGB PIL images (any size) -> (B, 3, H, W) float32 CPU tensor via the run's test pipeline.

        Raises ValueError for no images or one that is not an RGB ``PIL.Image.Image``.
        """
        if len(images) == 0:
            raise ValueError("preprocess needs at least one image, got an empty sequence")
        for i, im in enumerate(images):
            if not isinstance(im, Image.Image) or im.mode != "RGB":
                what = f"mode {im.mode!r}" if isinstance(im, Image.Image) else type(im).__name__
                raise ValueError(f"image {i} must be an RGB PIL image (use esnet.data.images.load_rgb), got {what}")
        return torch.stack([self.transform(im) for im in images])  # (B, 3, H, W)


@dataclass(frozen=True, eq=False)
class Embeddings:
    """Features of a list of image files; skipped files are in ``skipped`` only.

    Attributes:
        features: (N, D) float32, L2-normalised rows (read-only memmap when cached).
        paths: N image paths, row order.
        pids: (N,) int64 identities (-1 = unknown).
        camids: (N,) int64 0-based cameras (-1 = unknown).
        cameras: (N,) int64 camera numbers as people read them (``Sample.camera``: the file
            name's, e.g. 6 for Market ``0004_c6s1_...``; -1 = unknown). Display only.
        skipped: (path, reason) of each file that could not be read.
        checkpoint_sha: sha256 of the checkpoint that made the features.
        flip: whether features average the image and its mirror.
        from_cache: True when read from ``cache_dir`` without running the model.
    """

    features: np.ndarray
    paths: tuple[str, ...]
    pids: np.ndarray
    camids: np.ndarray
    cameras: np.ndarray
    skipped: tuple[tuple[str, str], ...]
    checkpoint_sha: str
    flip: bool
    from_cache: bool


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in ``chunk``-byte pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


CHECKPOINT_FILES = ("last", "best")
"""What a run directory resolves to: ``last`` (the default: the final epoch's model) or ``best``
(the epoch with the highest mAP on the query/gallery split, i.e. chosen on the test set)."""

TEST_SELECTED = "test-selected"
"""The label of a ``best.pt`` wherever it is shown: its epoch was picked by test-set mAP."""


def is_test_selected(path: str | Path) -> bool:
    """True for a run's ``best.pt`` (kept for the epoch with the best query/gallery mAP, which is the
    test split: numbers from it are optimistic). Judged by the file name, as the trainer writes it."""
    return Path(path).name == "best.pt"


def resolve_checkpoint(path: str | Path, which: str = "last") -> Path:
    """A checkpoint file -> itself; a run directory -> its checkpoints/<which>.pt; else CheckpointError.

    ``which="best"`` only when asked for: best.pt is selected on the test split. A run directory
    without the requested file is an error (no fallback to the other one).
    """
    if which not in CHECKPOINT_FILES:
        raise ValueError(f"which must be one of {list(CHECKPOINT_FILES)}, got {which!r}")
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        wanted = checkpoint_path(p, which)
        if wanted.is_file():
            return wanted
        other = checkpoint_path(p, "best" if which == "last" else "last")
        hint = ""
        if other.is_file():
            hint = (f"; it has {other.name}" + (f", the {TEST_SELECTED} epoch: ask for it with --checkpoint-file best "
                                               "or pass the file" if which == "last" else ": pass --checkpoint-file last"))
        raise CheckpointError(f"run directory {str(p)!r} has no {wanted.name}: looked for {str(wanted)!r}{hint}")
    raise CheckpointError(f"checkpoint {str(p)!r} does not exist: expected a checkpoint file or a run directory "
                          f"with checkpoints/{which}.pt")


def load_inference(path: str | Path, device: str = "auto", test_feature: str | None = None,
                   which: str = "last") -> Inference:
    """Load a checkpoint file or run directory (:func:`resolve_checkpoint`) for embedding.

    Args:
        path: a checkpoint file, or a run directory (its ``checkpoints/<which>.pt``).
        which: ``last`` (default) or ``best`` (test-selected, only when asked for).
        device: ``auto`` (cuda when available, else cpu), ``cpu`` or ``cuda``.
        test_feature: ``concat``, ``global`` or ``erase`` to embed with other branches than
            the run's ``model.test_feature`` (``ESNet.set_test_feature``); None keeps it.
    Raises:
        CheckpointError: no checkpoint, an unreadable one, or one replaced while loading.
        ValueError: unknown device or test feature, ``cuda`` without CUDA, or ``erase`` for
            a model without an erasing branch.
    """
    file = resolve_checkpoint(path, which)
    dev = resolve_device(device)
    before = _stat(str(file))
    sha = file_sha256(file)
    model, ckpt = load_model(file, device=dev)
    if _stat(str(file)) != before:
        raise CheckpointError(f"checkpoint {str(file)!r} changed while it was being loaded; load it again")
    cfg = ckpt.config
    if test_feature is not None:
        model.set_test_feature(test_feature)
        cfg = dataclasses.replace(cfg, model=model.cfg)
    return Inference(model=model, config=cfg, checkpoint=str(file), checkpoint_sha=sha, device=dev,
                     size=(cfg.data.height, cfg.data.width), transform=build_transforms(cfg.data, train=False))


def _features(inf: Inference, x: torch.Tensor, flip: bool) -> torch.Tensor:
    """(B, 3, H, W) -> (B, D) float32 CPU unit rows; flip averages with the mirror first."""
    if inf.model.training:
        raise ValueError("Inference.model must be in eval mode; something called .train() on it")
    with inf.lock, torch.no_grad():
        x = x.to(inf.device)
        f = inf.model(x).embedding.float()  # (B, D)
        if flip:
            f = (f + inf.model(torch.flip(x, dims=[3])).embedding.float()) / 2.0
        return F.normalize(f, dim=1).cpu()


def embed_images(inf: Inference, images: Sequence[Image.Image], *, flip: bool = False) -> torch.Tensor:
    """B RGB PIL images -> (B, D) float32 CPU, L2-normalised rows, no grad.

    ``flip=True`` averages each image's feature with its horizontal mirror's before normalising.
    """
    return _features(inf, inf.preprocess(images), flip)


class _Files(Dataset):
    """Item i: (i, (3, H, W) tensor, "") or (i, None, reason) when the file is unusable."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            image = load_rgb(self.paths[i])
        except ImageError as e:
            return i, None, e.reason
        return i, self.transform(image), ""


def _collate(items: list[tuple[int, torch.Tensor | None, str]]):
    """-> (good indices, (b, 3, H, W) tensor or None, [(index, reason)] of bad items)."""
    good = [(i, t) for i, t, _ in items if t is not None]
    bad = [(i, r) for i, t, r in items if t is None]
    return [i for i, _ in good], (torch.stack([t for _, t in good]) if good else None), bad


def _prefetched(batches: Iterator) -> Iterator:
    """``batches`` with the next one read in a helper thread while the caller uses the current one.

    With ``workers=0`` the DataLoader decodes in this process; PIL and torch release the GIL
    while decoding and computing, so reading batch i+1 overlaps the model's pass over batch i
    (a DataLoader worker process would too, but forking the threaded dashboard process is unsafe).
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, batches, None)
        while (batch := pending.result()) is not None:
            pending = pool.submit(next, batches, None)
            yield batch


def _stat(path: str) -> tuple[int, int]:
    """(size, mtime_ns), or (-1, -1) for a file that cannot be stat'ed (it is then skipped)."""
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def _cache_key(inf: Inference, samples: Sequence[Sample], flip: bool) -> str:
    h = hashlib.sha256(json.dumps(
        {"v": CACHE_VERSION, "checkpoint": inf.checkpoint_sha, "flip": flip, "size": list(inf.size),
         "feature": inf.config.model.test_feature}).encode())
    for s in samples:
        h.update(json.dumps([s.path, s.pid, s.camid, s.camera, *_stat(s.path)]).encode() + b"\n")
    return h.hexdigest()


def _read_cache(cache: Path, key: str, sha: str, flip: bool) -> Embeddings | None:
    """The cached entry, None when absent; an unreadable entry warns and returns None."""
    meta_file = cache / f"{key}.json"
    if not meta_file.exists():
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("key") != key or meta.get("version") != CACHE_VERSION:
            raise ValueError("it belongs to another key or cache version")
        feats = np.load(cache / f"{key}.npy", mmap_mode="r", allow_pickle=False)
        n, pids, camids = len(meta["paths"]), np.asarray(meta["pids"], np.int64), np.asarray(meta["camids"], np.int64)
        cameras = np.asarray(meta["cameras"], np.int64)
        shapes = (feats.dtype, feats.ndim, len(feats), pids.shape, camids.shape, cameras.shape)
        if n == 0 or shapes != (np.float32, 2, n, (n,), (n,), (n,)):
            raise ValueError(f"(dtype, ndim, rows, pids, camids, cameras) = {shapes} do not fit {n} paths")
        emb = Embeddings(features=feats, paths=tuple(map(str, meta["paths"])), pids=pids, camids=camids,
                         cameras=cameras,
                         skipped=tuple((str(p), str(r)) for p, r in meta["skipped"]),
                         checkpoint_sha=sha, flip=flip, from_cache=True)
    except _CACHE_ERRORS as e:
        warnings.warn(f"ignoring unreadable embedding cache entry {str(meta_file)!r} ({e}); rebuilding it",
                      stacklevel=3)
        return None
    return emb


def _tmp_memmap(cache: Path, key: str, shape: tuple[int, int], tmps: list[Path]) -> np.memmap:
    """A new (rows, D) float32 .npy memmap in a temporary file of ``cache``; its path is appended to tmps."""
    tmp = temp_beside(cache / f"{key}.npy")
    tmps.append(tmp)
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)


def embed_samples(inf: Inference, samples: Sequence[Sample], *, batch_size: int = 64, workers: int = 0,
                  flip: bool = False, cache_dir: str | Path | None = None,
                  progress: Progress | None = None) -> Embeddings:
    """Features of image files, in the order of ``samples``; unreadable files are skipped.

    Args:
        samples: the images (``path``, ``pid``, ``camid`` are used).
        batch_size, workers: images per forward pass (>= 1); DataLoader worker processes (>= 0).
        flip: average each image's feature with its mirror's (see :func:`embed_images`).
        cache_dir: read/write the disk cache there (module docstring); None = no cache.
        progress: ``progress(done, total)`` after each batch (images handled so far).
    Returns:
        Embeddings of the readable images; the others are in ``skipped`` with the reason.
    Raises:
        ValueError: no samples, a bad batch_size/workers, or every image unreadable.
    """
    n = len(samples)
    if n == 0:
        raise ValueError("no images to embed: the list of samples is empty")
    for name, v, low in (("batch_size", batch_size, 1), ("workers", workers, 0)):
        if not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    cache, key = (None, "") if cache_dir is None else (Path(cache_dir), _cache_key(inf, samples, flip))
    if cache is not None and (hit := _read_cache(cache, key, inf.checkpoint_sha, flip)) is not None:
        return hit
    paths = [s.path for s in samples]
    loader = DataLoader(_Files(paths, inf.transform), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate)
    out: np.ndarray | None = None
    kept, skipped, tmps = [], [], []  # row indices of read images, (path, reason), temporary files
    try:
        for idx, images, bad in (_prefetched(iter(loader)) if workers == 0 else loader):
            skipped += [(paths[i], reason) for i, reason in bad]
            if images is not None:
                feats = _features(inf, images, flip).numpy()  # (b, D)
                if out is None:
                    shape = (n, feats.shape[1])
                    out = np.empty(shape, np.float32) if cache is None else _tmp_memmap(cache, key, shape, tmps)
                out[len(kept):len(kept) + len(idx)] = feats
                kept += idx
            if progress is not None:
                progress(len(kept) + len(skipped), n)
        if out is None:
            raise ValueError(f"none of the {n} images could be read; first: {skipped[0][0]!r}: {skipped[0][1]}")
        k = len(kept)
        features = out[:k]  # (k, D), the kept images' rows
        meta = {"version": CACHE_VERSION, "key": key, "paths": [paths[i] for i in kept],
                "pids": [samples[i].pid for i in kept], "camids": [samples[i].camid for i in kept],
                "cameras": [samples[i].camera for i in kept],
                "skipped": skipped}
        if cache is not None:
            if k < n:  # shrink on disk a chunk at a time, so rows are never all in memory
                small = _tmp_memmap(cache, key, (k, out.shape[1]), tmps)
                for s in range(0, k, _COPY_ROWS):
                    small[s:s + _COPY_ROWS] = out[s:min(s + _COPY_ROWS, k)]
                out = small
            out.flush()
            del out, features
            replace_with(tmps[-1], cache / f"{key}.npy")
            atomic_write_bytes(cache / f"{key}.json", json.dumps(meta).encode("utf-8"))
            features = np.load(cache / f"{key}.npy", mmap_mode="r", allow_pickle=False)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return Embeddings(features=features, paths=tuple(meta["paths"]), pids=np.array(meta["pids"], np.int64),
                      camids=np.array(meta["camids"], np.int64), cameras=np.array(meta["cameras"], np.int64),
                      skipped=tuple(skipped),
                      checkpoint_sha=inf.checkpoint_sha, flip=flip, from_cache=False)


def parse_market_name(name: str) -> tuple[int, int]:
    """(pid, 0-based camid) from a Market-style file name ``PPPP_cC...``, else (-1, -1)."""
    m = _MARKET_NAME.match(os.path.basename(name))
    return (int(m.group(1)), int(m.group(2)) - 1) if m is not None and int(m.group(2)) >= 1 else (-1, -1)


def embed_folder(inf: Inference, folder: str | Path, *, batch_size: int = 64, workers: int = 0,
                 flip: bool = False, cache_dir: str | Path | None = None,
                 progress: Progress | None = None) -> Embeddings:
    """Every :data:`FOLDER_EXTS` file under ``folder`` (recursive, sorted), as :func:`embed_samples`.

    pid/camid/camera come from Market-style names (:func:`parse_market_name`), else -1. Raises
    ValueError when ``folder`` is missing, not a directory, or holds no image files.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} " + ("is not a directory" if root.exists() else "does not exist"))
    paths = sorted(str(p.absolute()) for p in root.rglob("*") if p.suffix.lower() in FOLDER_EXTS and p.is_file())
    if not paths:
        raise ValueError(f"image folder {str(root)!r} holds no image files (extensions {list(FOLDER_EXTS)})")
    samples = []
    for p in paths:
        pid, camid = parse_market_name(p)
        samples.append(Sample(p, pid, camid, "gallery", camid + 1 if camid >= 0 else -1))  # c6 -> camid 5, camera 6
    return embed_samples(inf, samples, batch_size=batch_size, workers=workers, flip=flip,
                         cache_dir=cache_dir, progress=progress)


def embed_split(inf: Inference, data: ReidData, split: str, *, batch_size: int = 64, workers: int = 0,
                flip: bool = False, cache_dir: str | Path | None = None,
                progress: Progress | None = None) -> Embeddings:
    """One split (``train``/``query``/``gallery``) of ``data``, as :func:`embed_samples`; ValueError if empty."""
    samples = data.split(split)
    if not samples:
        raise ValueError(f"split {split!r} of dataset {data.name!r} at {data.root!r} has no images")
    return embed_samples(inf, samples, batch_size=batch_size, workers=workers, flip=flip,
                         cache_dir=cache_dir, progress=progress)
