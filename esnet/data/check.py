"""Dataset validator behind ``esnet data check``.

``check_dataset`` takes a loaded ``ReidData`` and returns a ``CheckReport``: ids,
images and cameras per split, remarks (notes) and problems. Each problem carries a
stable rule name so scripts and tests can match on it:

- ``missing-split``: query or gallery is empty (an empty train split is only a note).
- ``unreadable-image``: a 0-byte, missing or undecodable image file.
- ``query-id-not-in-gallery``: query identities without any gallery image.
- ``single-camera``: all query and gallery images come from one camera, so the
  standard protocol (same id + same camera ignored) has nothing to evaluate.
- ``duplicate-path``: the same file twice in a split, or in two splits.
- ``no-cross-camera-match``: query images whose identity appears in the gallery
  only under the query's own camera (the standard protocol ignores those queries).

Unparseable file names never reach this module: the loaders raise ``DatasetError``.
"""
from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


from esnet.data.images import ImageError, load_rgb
from esnet.data.types import SPLITS, ReidData, Sample

RULES = (
    "missing-split",
    "unreadable-image",
    "query-id-not-in-gallery",
    "single-camera",
    "duplicate-path",
    "no-cross-camera-match",
)
MAX_LISTED = 10

@dataclass(frozen=True)
class SplitStats:
    """Counts for one split: distinct identities, images, distinct cameras."""

    ids: int
    images: int
    cameras: int


@dataclass(frozen=True)
class Problem:
    """One failed rule.

    Attributes:
        rule: one of ``RULES``.
        path: the file (or dataset root) concerned.
        message: what is wrong and, where possible, what to do.
    """

    rule: str
    path: str
    message: str


@dataclass
class CheckReport:
    """Result of ``check_dataset``.

    Attributes:
        name: dataset loader name.
        root: where it was read from.
        stats: per split (``train``, ``query``, ``gallery``) counts.
        problems: failed rules; the dataset is fine when empty.
        notes: remarks that do not fail the check (loader notes first).
        images_checked: number of distinct files opened (0 if verification skipped).
        image_check_s: seconds spent verifying images (0.0 if skipped).
    """

    name: str
    root: str
    stats: dict[str, SplitStats]
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images_checked: int = 0
    image_check_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        """Human-readable report: table of ids/images/cameras, notes, then ``RULE: path: message`` lines."""
        lines = [f"dataset {self.name} at {self.root}", ""]
        lines.append(f"{'split':<8} {'ids':>8} {'images':>10} {'cameras':>8}")
        for split in SPLITS:
            s = self.stats[split]
            lines.append(f"{split:<8} {s.ids:>8,} {s.images:>10,} {s.cameras:>8,}")
        if self.notes:
            lines += ["", "notes:"] + [f"  - {n}" for n in self.notes]
        lines.append("")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"{p.rule}: {p.path}: {p.message}" for p in self.problems]
        else:
            lines.append("ok: no problems found")
        return "\n".join(lines)


def _split_stats(samples: tuple[Sample, ...]) -> SplitStats:
    return SplitStats(ids=len({s.pid for s in samples}), images=len(samples),
                      cameras=len({s.camid for s in samples}))


def verify_image(path: str) -> str | None:
    """Read and fully decode one image by the rules every loader uses (``esnet.data.images.load_rgb``).

    Returns:
        None if the image is usable, else the reason (``file is empty (0 bytes)``,
        ``truncated or corrupt JPEG data: ...``, ``not a regular file (a FIFO / named pipe)`` ...).
    """
    try:
        load_rgb(path)
    except ImageError as e:
        return e.reason
    return None


def _listed(items: list, total: int) -> str:
    shown = ", ".join(str(x) for x in items[:MAX_LISTED])
    return shown + (f" (and {total - MAX_LISTED} more)" if total > MAX_LISTED else "")


def _check_splits(data: ReidData, problems: list[Problem], notes: list[str]) -> None:
    if not data.train:
        notes.append("train split is empty: fine for evaluation only, training needs it")
    for split in ("query", "gallery"):
        if not data.split(split):
            problems.append(Problem("missing-split", data.root,
                                    f"{split} split is empty: evaluation needs query and gallery images"))


def _check_duplicates(data: ReidData, problems: list[Problem]) -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for split in SPLITS:
        for s in data.split(split):
            where[s.path].append(split)
    for path in sorted(where):
        splits = where[path]
        if len(splits) == 1:
            continue
        counts = Counter(splits)
        for split, n in counts.items():
            if n > 1:
                problems.append(Problem("duplicate-path", path, f"listed {n} times in {split}"))
        distinct = sorted(counts, key=SPLITS.index)
        if data.protocol == "vehicleid" and distinct == ["query", "gallery"]:
            continue  # this protocol uses the same test list as query and gallery
        if len(distinct) > 1:
            problems.append(Problem("duplicate-path", path, f"appears in more than one split: {' and '.join(distinct)}"
                                    " (the same image must not be both train and test, or both query and gallery)"))


def _check_ids_and_cameras(data: ReidData, same_camera: bool, problems: list[Problem], notes: list[str]) -> None:
    if not data.query or not data.gallery:
        return
    gallery_cams: dict[int, set[int]] = defaultdict(set)
    for s in data.gallery:
        gallery_cams[s.pid].add(s.camid)
    missing = sorted({s.pid for s in data.query} - gallery_cams.keys())
    if missing:
        problems.append(Problem(
            "query-id-not-in-gallery", data.root,
            f"{len(missing)} query id(s) have no gallery image, so those queries cannot be evaluated: "
            + _listed(missing, len(missing))))
    if data.protocol == "vehicleid":
        notes.append("protocol vehicleid: cameras are not used")
        return
    cams = {s.camid for s in data.query} | {s.camid for s in data.gallery}
    if len(cams) == 1:
        (cam,) = cams
        message = (f"all query and gallery images come from camera {cam}: cross-camera evaluation is impossible "
                   "(the standard protocol ignores same-camera matches); pass --same-camera to evaluate "
                   "same-camera matches instead")
        if same_camera:
            notes.append(f"single-camera: {message} (--same-camera given: same-camera matches are evaluated)")
        else:
            problems.append(Problem("single-camera", data.root, message))
        return
    if same_camera:
        notes.append("--same-camera given: same-camera matches are evaluated")
        return
    no_cross = [s for s in data.query if s.pid in gallery_cams and not gallery_cams[s.pid] - {s.camid}]
    for s in no_cross[:MAX_LISTED]:
        problems.append(Problem(
            "no-cross-camera-match", s.path,
            f"query id {s.pid} appears in the gallery only under its own camera {s.camid}; "
            "the standard protocol ignores this query (pass --same-camera to evaluate same-camera matches)"))
    if len(no_cross) > MAX_LISTED:
        problems.append(Problem("no-cross-camera-match", data.root,
                                f"{len(no_cross) - MAX_LISTED} more query image(s) without a cross-camera match"))


def _check_images(data: ReidData, workers: int, problems: list[Problem], notes: list[str]) -> tuple[int, float]:
    paths = sorted({s.path for split in SPLITS for s in data.split(split)})
    start = time.perf_counter()
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            reasons = list(pool.map(verify_image, paths, chunksize=256))
    else:
        reasons = [verify_image(p) for p in paths]
    seconds = time.perf_counter() - start
    for path, reason in zip(paths, reasons):
        if reason is not None:
            problems.append(Problem("unreadable-image", path, f"cannot read image: {reason}"))
    notes.append(f"opened and decoded {len(paths):,} images in {seconds:.1f} s")
    return len(paths), seconds


def check_dataset(data: ReidData, *, verify_images: bool = True, same_camera: bool = False,
                  workers: int = 2) -> CheckReport:
    """Validate a loaded dataset.

    Args:
        data: the loaded dataset.
        verify_images: open and decode every image (a few seconds per 10k small images).
        same_camera: evaluation will count same-camera matches, so a single-camera
            dataset is fine (reported as a note instead of a problem).
        workers: threads used to decode images (1 = no thread pool).

    Returns:
        The report; ``report.ok`` is False when any rule failed.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    problems: list[Problem] = []
    notes: list[str] = list(data.notes)
    stats = {split: _split_stats(data.split(split)) for split in SPLITS}
    _check_splits(data, problems, notes)
    _check_duplicates(data, problems)
    _check_ids_and_cameras(data, same_camera, problems, notes)
    checked, seconds = 0, 0.0
    if verify_images:
        checked, seconds = _check_images(data, workers, problems, notes)
    else:
        notes.append("image check skipped")
    problems.sort(key=lambda p: RULES.index(p.rule))
    return CheckReport(name=data.name, root=data.root, stats=stats, problems=problems, notes=notes,
                       images_checked=checked, image_check_s=seconds)
