"""Typed samples and datasets shared by every loader."""
from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("train", "query", "gallery")


class DatasetError(ValueError):
    """A dataset on disk breaks a rule; the message names the file and the rule."""


@dataclass(frozen=True)
class Sample:
    """One image.

    Attributes:
        path: absolute path of the image file.
        pid: identity label as in the dataset (-1 = junk, 0 = distractor for Market-1501).
        camid: camera index, 0-based (what the metrics compare).
        split: one of ``train``, ``query``, ``gallery``.
        camera: the camera number a person reads in the data: as in the file name
            (Market ``0004_c6s1_...`` -> 6, camid 5; a ``folder`` dataset's regex match, whatever
            its renumbered camid), the manifest's camid as written; -1 = no camera (VehicleID,
            names without one). Shown wherever a camera is displayed.
    """

    path: str
    pid: int
    camid: int
    split: str
    camera: int = -1


@dataclass(frozen=True)
class ReidData:
    """A loaded dataset: three lists of samples plus how to evaluate them.

    Attributes:
        name: loader name (``market1501`` ...).
        root: the directory (or manifest) it was read from.
        train, query, gallery: samples per split.
        protocol: ``standard`` (same pid + same camera ignored) or ``vehicleid``
            (one random gallery image per identity, repeated).
        notes: human-readable remarks made while loading (e.g. junk dropped).
    """

    name: str
    root: str
    train: tuple[Sample, ...]
    query: tuple[Sample, ...]
    gallery: tuple[Sample, ...]
    protocol: str = "standard"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def split(self, name: str) -> tuple[Sample, ...]:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {name!r}")
        return getattr(self, name)

    def num_train_pids(self) -> int:
        return len({s.pid for s in self.train})
