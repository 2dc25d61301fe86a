"""Datasets and DataLoaders over lists of :class:`~esnet.data.types.Sample`.

Reproducibility: the train loader's augmentation depends only on ``seed``, ``rank``
and ``data.workers``; nothing here reads or changes torch's global RNG in the main
process. :class:`ImageDataset` given a ``seed`` keeps a private torch RNG state and
runs each transform call inside ``torch.random.fork_rng`` with that state swapped in.
With ``workers == 0`` the stream is seeded from ``seed`` directly; with workers, each
worker re-seeds its copy from ``get_worker_info().seed`` (= a base seed drawn from the
loader's seeded ``torch.Generator`` + worker id) in :func:`seed_worker`. Workers are
NOT persistent: they restart each epoch, so the trainer's per-epoch reseeding of the
loader generator reaches them and a resumed run repeats an uninterrupted one exactly.

The sampler's order depends on ``(seed, epoch)``: the trainer calls
:func:`set_epoch` (``loader.sampler.set_epoch(epoch)``) before each epoch.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from esnet.config import DataConfig
from esnet.data.images import load_rgb
from esnet.data.sampler import PKSampler
from esnet.data.transforms import build_transforms
from esnet.data.types import Sample


def relabel(samples: Sequence[Sample]) -> dict[int, int]:
    """Map each identity to a class index 0..N-1, in ascending pid order.

    Returns:
        ``{pid: label}`` for the N distinct pids of ``samples``.
    """
    return {pid: label for label, pid in enumerate(sorted({s.pid for s in samples}))}


class ImageDataset(Dataset):
    """Loads, transforms and labels samples.

    Args:
        samples: the images; item i is ``samples[i]``.
        transform: PIL RGB image -> (C, H, W) float32 tensor (see ``build_transforms``).
        label_map: ``{pid: class index}``; without it the label is the pid itself.
        seed: if given, the transform's random draws come from a private torch RNG
            stream seeded with it (see the module docstring); if None they come from
            torch's global RNG (fine for deterministic test transforms).

    Items are dicts:
        ``image``: (C, H, W) float32; ``label``: () int64, ``label_map[pid]`` or pid;
        ``camid``: () int64; ``index``: () int64, i. Collated: (B, C, H, W) and (B,).
    Raises:
        esnet.data.images.ImageError: an image fails to load (never skipped silently;
            inside DataLoader workers torch re-raises it as a RuntimeError carrying
            the same message).
        ValueError: a sample's pid is missing from ``label_map``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        label_map: dict[int, int] | None = None,
        seed: int | None = None,
    ) -> None:
        self.samples = tuple(samples)
        self.transform = transform
        self.label_map = dict(label_map) if label_map is not None else None
        self._rng_state: torch.Tensor | None = None
        if seed is not None:
            self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the private augmentation RNG stream from ``seed``."""
        self._rng_state = torch.Generator().manual_seed(int(seed)).get_state()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.samples[i]
        if self.label_map is None:
            label = s.pid
        elif s.pid in self.label_map:
            label = self.label_map[s.pid]
        else:
            raise ValueError(f"pid {s.pid} of {s.path!r} is not in label_map ({len(self.label_map)} identities)")
        image = load_rgb(s.path)
        if self._rng_state is None:
            tensor = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(self._rng_state)
                tensor = self.transform(image)
                self._rng_state = torch.get_rng_state()
        return {
            "image": tensor,  # (C, H, W) float32
            "label": torch.tensor(label, dtype=torch.int64),
            "camid": torch.tensor(s.camid, dtype=torch.int64),
            "index": torch.tensor(i, dtype=torch.int64),
        }


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed the worker's augmentation stream.

    ``get_worker_info().seed`` is the loader generator's base seed + ``worker_id``
    (torch has already seeded the worker's global RNGs with it); the dataset copy in
    this worker restarts its private stream from it.
    """
    info = torch.utils.data.get_worker_info()
    if info is None:  # invariant: torch calls this only inside a worker
        raise RuntimeError("seed_worker must run inside a DataLoader worker")
    if isinstance(info.dataset, ImageDataset) and info.dataset._rng_state is not None:
        info.dataset.reseed(info.seed)


def build_train_loader(
    samples: Sequence[Sample],
    cfg: DataConfig,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[DataLoader, int]:
    """The training loader: P x K batches of augmented images with labels 0..N-1.

    Args:
        samples: training samples (their images are assumed validated already).
        cfg: data section (size, augmentation, batch_size, num_instances, workers).
        seed: seeds the sampler (with the epoch) and the augmentation stream; the
            augmentation of rank r uses ``seed + r`` so ranks do not share draws.
        rank, world_size: distributed position; each rank gets disjoint whole batches.
    Returns:
        ``(loader, num_classes)``. Batches are dicts: ``image`` (B, 3, H, W) float32,
        ``label`` (B,) int64 in [0, num_classes), ``camid`` (B,) int64, ``index`` (B,)
        int64. ``len(loader)`` is exact and the same every epoch. Call
        :func:`set_epoch` before each epoch.
    Raises:
        ValueError: no samples, or too few identities for one batch (from PKSampler).
    """
    if len(samples) == 0:
        raise ValueError("build_train_loader got no samples")
    label_map = relabel(samples)
    sampler = PKSampler(
        [s.pid for s in samples],
        batch_size=cfg.batch_size,
        num_instances=cfg.num_instances,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )
    aug_seed = int(seed) + int(rank)
    dataset = ImageDataset(samples, build_transforms(cfg, train=True), label_map=label_map, seed=aug_seed)
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(aug_seed),
        worker_init_fn=seed_worker if cfg.workers > 0 else None,
        persistent_workers=False,  # per-epoch reseeding must reach the workers (exact resume)
    )
    return loader, len(label_map)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell a train loader's PKSampler which epoch comes next (its shuffle depends on it)."""
    if not isinstance(loader.sampler, PKSampler):
        raise ValueError(f"set_epoch needs a loader built by build_train_loader, got sampler {type(loader.sampler).__name__}")
    loader.sampler.set_epoch(epoch)


def build_test_loader(samples: Sequence[Sample], cfg: DataConfig, *, batch_size: int = 128) -> DataLoader:
    """An in-order loader of test-transformed images (query, gallery, probes).

    Args:
        samples: the images, yielded in this order.
        cfg: data section (``height``, ``width``, ``workers``).
        batch_size: images per batch; the last batch may be smaller.
    Returns:
        A DataLoader whose batches hold ``image`` (B, 3, H, W) float32, ``label``
        (B,) int64 raw pids, ``camid`` (B,) int64, ``index`` (B,) int64.
    Raises:
        ValueError: no samples, or batch_size < 1.
    """
    if len(samples) == 0:
        raise ValueError("build_test_loader got no samples")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    dataset = ImageDataset(samples, build_transforms(cfg, train=False))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=cfg.workers,
        drop_last=False,
        pin_memory=torch.cuda.is_available(),
    )
