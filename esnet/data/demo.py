"""Synthetic demo persons in Market-1501 layout, drawn procedurally and deterministically.

Identity is carried by six body parts (``DEMO_PARTS``), each drawn from a small palette,
so no single part identifies a person: every value is shared by many identities and the
values are balanced across them. The parts lie in three body regions (``DEMO_REGIONS``:
head, upper body, lower body) and every two identities, distractors included, differ in
at least two regions, hence in at least two parts: erasing any one horizontal stripe of
the body never makes two people identical, so "erase the most salient part, learn the
others" is meaningful. The torso is the largest, most saturated part, the one a network
latches onto first.

Six cameras differ in background (colour, texture, clutter), light (brightness and
colour gain), scale, sharpness and position; people change pose (leg spread, arm swing,
facing left or right); a quarter of the shots occlude the torso or the legs with a box
or a pole. Every random draw comes from ``numpy.random.default_rng`` seeded by ``seed``
plus the image's (split, identity, camera, shot), so one seed gives byte-identical files.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEMO_VERSION = 2  # bump when the images a seed produces change
WIDTH, HEIGHT = 64, 128
NUM_CAMERAS = 6
MAX_IDS = 600
DEMO_PARTS = ("head", "torso", "logo", "legs", "shoes", "bag")
DEMO_REGIONS = {"head": ("head",), "upper": ("torso", "logo", "bag"), "lower": ("legs", "shoes")}

# Per split and identity: cameras x shots. Test ids are seen by 6 cameras in random order:
# queries in the first 3, gallery in the last 4 (so one query camera also has same-camera
# gallery shots, which the standard protocol ignores).
TRAIN_CAMS, TRAIN_SHOTS = 4, 7
QUERY_CAMS = 3
GALLERY_CAMS, GALLERY_SHOTS = 4, 3
DISTRACTOR_SHOTS = 4  # gallery images per distractor person (pid 0000); num_ids // 4 persons
_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}

RGB = tuple[int, int, int]
_HEAD_KINDS = ("short hair", "long hair", "cap", "hat")
_HEAD_COLOURS: dict[str, RGB] = {"black": (30, 28, 32), "brown": (105, 65, 35), "blond": (210, 175, 95),
                                 "grey": (140, 140, 145), "maroon": (125, 30, 50)}
_TORSO_COLOURS: dict[str, RGB] = {"red": (215, 30, 35), "blue": (35, 85, 215), "green": (35, 165, 60),
                                  "yellow": (235, 190, 20), "purple": (140, 45, 175), "orange": (245, 120, 20),
                                  "cyan": (25, 175, 190), "pink": (235, 95, 165)}
_LOGO_KINDS = ("circle", "stripe", "cross")
_LOGO_COLOURS: dict[str, RGB] = {"white": (245, 245, 245), "black": (20, 20, 20)}
_LEG_KINDS = ("trousers", "shorts", "skirt")
_LEG_COLOURS: dict[str, RGB] = {"black": (35, 35, 40), "brown": (95, 65, 40), "khaki": (175, 155, 115),
                                "denim": (60, 85, 130), "grey": (120, 120, 125), "maroon": (120, 35, 55)}
_SHOE_COLOURS: dict[str, RGB] = {"black": (20, 20, 20), "white": (235, 235, 235), "brown": (125, 70, 30),
                                 "red": (200, 30, 30), "blue": (40, 60, 165)}
_BAG_KINDS = ("backpack", "shoulder bag")
_BAG_COLOURS: dict[str, RGB] = {"black": (25, 25, 25), "tan": (170, 120, 60), "olive": (85, 110, 45),
                                "silver": (195, 195, 185)}
_SKIN: tuple[RGB, ...] = ((235, 200, 170), (200, 150, 110), (140, 95, 65))

# Every value a part can take: (kind, colour name); kind "" = colour only, colour "" = none.
_VALUES: dict[str, tuple[tuple[str, str], ...]] = {
    "head": tuple((k, c) for k in _HEAD_KINDS for c in _HEAD_COLOURS),
    "torso": tuple(("", c) for c in _TORSO_COLOURS),
    "logo": (("none", ""),) + tuple((k, c) for k in _LOGO_KINDS for c in _LOGO_COLOURS),
    "legs": tuple((k, c) for k in _LEG_KINDS for c in _LEG_COLOURS),
    "shoes": tuple(("", c) for c in _SHOE_COLOURS),
    "bag": (("none", ""),) + tuple((k, c) for k in _BAG_KINDS for c in _BAG_COLOURS),
}
_SIZES = np.array([len(_VALUES[p]) for p in DEMO_PARTS], dtype=np.int64)  # (6,)
_CANDIDATES = 32  # candidate identities drawn per accepted one

# Cameras: background colour, texture (0 vertical stripes, 1 horizontal bands, 2 tiles),
# stripe period, floor height, colour gain, mean person scale, blur radius (pixels).
_CAM_BG: tuple[RGB, ...] = ((110, 120, 130), (150, 140, 120), (90, 110, 90), (170, 170, 175), (120, 100, 110),
                            (80, 90, 110))
_CAM_TEXTURE = (0, 1, 2, 0, 1, 2)
_CAM_PERIOD = (6, 9, 12, 15, 7, 10)
_CAM_FLOOR = (0.78, 0.82, 0.86, 0.8, 0.84, 0.76)
_CAM_GAIN = ((1.0, 1.0, 1.0), (1.15, 1.05, 0.9), (0.8, 0.85, 0.95), (1.05, 1.0, 1.12), (0.9, 0.9, 0.78),
             (1.2, 1.15, 1.15))
_CAM_SCALE = (0.96, 0.9, 0.93, 0.86, 0.98, 0.9)
_CAM_BLUR = (0.0, 0.5, 0.0, 0.8, 0.3, 0.0)
_SS = 2  # supersampling: draw at 2x, box-filter down (anti-aliased edges)
OCCLUSION_P = 0.25


@dataclass(frozen=True)
class DemoSummary:
    """What ``generate_demo`` wrote.

    Attributes:
        out: the dataset directory.
        ids: identities per split (``train``, ``query``, ``gallery``), distractors not counted.
        images: image files per split, distractors included (what the Market loader reads).
        distractors: gallery images labelled 0000 (people in no query).
        cameras: cameras used.
        seconds: generation wall time.
    """

    out: str
    ids: dict[str, int]
    images: dict[str, int]
    distractors: int
    cameras: int
    seconds: float

    def __str__(self) -> str:
        rows = [f"  {split:<8} {self.ids[split]:>4} ids {self.images[split]:>6} images" for split in self.images]
        rows[-1] += f" (incl. {self.distractors} distractors, pid 0000)"
        total = sum(self.images.values())
        return (f"demo dataset written to {self.out} in {self.seconds:.1f} s: {total} images, "
                f"{self.cameras} cameras\n" + "\n".join(rows))


# --------------------------------------------------------------------------- identities


def _region_keys(codes: np.ndarray) -> np.ndarray:
    """(N, 6) part value indices -> (N, 3) int64 keys, equal iff the region's parts all match."""
    head, torso, logo, legs, shoes, bag = codes.T
    upper = (torso * _SIZES[2] + logo) * _SIZES[5] + bag
    lower = legs * _SIZES[4] + shoes
    return np.stack([head, upper, lower], axis=1)  # (N, 3)


@lru_cache(maxsize=16)
def _codes(n: int, seed: int) -> np.ndarray:
    """(n, 6) int64 part value indices of identities 1..n (row k-1 = identity k).

    Sequential and prefix-stable: row k depends only on ``seed`` and rows < k, so tables of
    different lengths agree on their common prefix. Each row is the candidate, among
    ``_CANDIDATES`` random ones, that differs from every earlier row in >= 2 regions and
    whose part values are used least so far (keeps every value shared by many ids).
    """
    rng = np.random.default_rng([seed, 7919])
    codes = np.empty((n, len(DEMO_PARTS)), dtype=np.int64)
    keys = np.empty((n, 3), dtype=np.int64)
    counts = [np.zeros(int(s), dtype=np.int64) for s in _SIZES]
    k = 0
    failed = 0
    while k < n:
        cand = rng.integers(0, _SIZES, size=(_CANDIDATES, len(DEMO_PARTS)))  # (C, 6)
        cand_keys = _region_keys(cand)  # (C, 3)
        same = cand_keys[:, None, :] == keys[None, :k, :]  # (C, k, 3)
        ok = (same.sum(axis=2) <= 1).all(axis=1)  # (C,) differs from all in >= 2 regions
        if not ok.any():
            failed += 1
            if failed > 1000:  # invariant: MAX_IDS is far below the combinations available
                raise RuntimeError(f"cannot draw identity {k + 1}: part combinations exhausted")
            continue
        failed = 0
        score = sum(counts[j][cand[:, j]] for j in range(len(DEMO_PARTS)))  # (C,)
        best = int(np.argmin(np.where(ok, score, np.iinfo(np.int64).max)))
        codes[k], keys[k] = cand[best], cand_keys[best]
        for j in range(len(DEMO_PARTS)):
            counts[j][cand[best, j]] += 1
        k += 1
    codes.setflags(write=False)
    return codes


def _table(n: int, seed: int) -> np.ndarray:
    """Rows for identities 1..n, from a cached table rounded up to a power of two (>= 128)."""
    size = max(128, 1 << (n - 1).bit_length())
    return _codes(size, seed)[:n]


def _value_name(kind: str, colour: str) -> str:
    return " ".join(x for x in (colour, kind) if x) if colour else kind


def _attrs(row: np.ndarray) -> dict[str, tuple[str, str]]:
    return {p: _VALUES[p][int(i)] for p, i in zip(DEMO_PARTS, row)}


def identity_attributes(pid: int, seed: int = 0) -> dict[str, str]:
    """The part values that define identity ``pid`` (1-based) of the dataset made with ``seed``.

    Identity ``pid`` looks the same whatever ``num_ids`` was (pids beyond ``num_ids`` are
    the gallery distractors, labelled 0000 on disk).

    Returns:
        dict part -> value name, keys ``DEMO_PARTS``, e.g. ``{"head": "black cap", "torso":
        "red", "logo": "white circle", "legs": "denim skirt", "shoes": "white", "bag": "none"}``.
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or not 1 <= pid <= 2 * MAX_IDS:
        raise ValueError(f"pid must be an integer in [1, {2 * MAX_IDS}] (0 is the distractor label), got {pid!r}")
    _check_seed(seed)
    return {p: _value_name(*v) for p, v in _attrs(_table(pid, seed)[pid - 1]).items()}


# --------------------------------------------------------------------------- drawing


def _background(cam: int, rng: np.random.Generator) -> np.ndarray:
    """(HEIGHT, WIDTH, 3) float32 background of camera ``cam``: colour, texture, floor."""
    bg = np.empty((HEIGHT, WIDTH, 3), dtype=np.float32)
    bg[:] = np.asarray(_CAM_BG[cam], dtype=np.float32) + rng.uniform(-12, 12, size=3).astype(np.float32)
    period = _CAM_PERIOD[cam]
    phase = int(rng.integers(period))
    xs = (np.arange(WIDTH) + phase) // period % 2
    ys = (np.arange(HEIGHT) + phase) // period % 2
    texture = _CAM_TEXTURE[cam]
    if texture == 0:  # vertical stripes: a fence, a shop front
        bg += (xs * 14.0).astype(np.float32)[None, :, None]
    elif texture == 1:  # horizontal bands: bricks, steps
        bg += (ys * 14.0).astype(np.float32)[:, None, None]
    else:  # tiles
        bg += ((xs[None, :] ^ ys[:, None]) * 12.0).astype(np.float32)[:, :, None]
    floor = int(HEIGHT * (_CAM_FLOOR[cam] + rng.uniform(-0.03, 0.03)))
    bg[floor:] *= np.float32(0.78)
    return bg


class _Pen:
    """Draws in body units (person ~121 units tall, x=0 on the body axis) at scale and mirror."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, top: float, scale: float, mirror: int) -> None:
        self.d, self.cx, self.top, self.s, self.m = draw, cx * _SS, top * _SS, scale * _SS, mirror

    def pt(self, x: float, y: float) -> tuple[float, float]:
        return self.cx + self.m * x * self.s, self.top + y * self.s

    def box(self, x0: float, y0: float, x1: float, y1: float, fill: RGB, ellipse: bool = False) -> None:
        (a, b), (c, d) = self.pt(x0, y0), self.pt(x1, y1)
        xy = [min(a, c), b, max(a, c), d]
        (self.d.ellipse if ellipse else self.d.rectangle)(xy, fill=fill)

    def chord(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        """Upper half of the ellipse in the box (hair, cap crown)."""
        (a, b), (c, d) = self.pt(x0, y0), self.pt(x1, y1)
        self.d.chord([min(a, c), b, max(a, c), d], 180, 360, fill=fill)

    def poly(self, points: list[tuple[float, float]], fill: RGB) -> None:
        self.d.polygon([self.pt(x, y) for x, y in points], fill=fill)

    def line(self, points: list[tuple[float, float]], fill: RGB, width: float) -> None:
        self.d.line([self.pt(x, y) for x, y in points], fill=fill, width=max(1, round(width * self.s)))


def _draw_person(pen: _Pen, attrs: dict[str, tuple[str, str]], skin: RGB, spread: float, swing: float) -> None:
    torso = _TORSO_COLOURS[attrs["torso"][1]]
    bag_kind, bag_c = attrs["bag"]
    if bag_kind == "backpack":  # the pack shows above the shoulders, its straps on the chest
        pen.box(-14, 19, 14, 60, _BAG_COLOURS[bag_c])
    # legs
    leg_kind, leg_c = attrs["legs"]
    legs = _LEG_COLOURS[leg_c]
    if leg_kind == "skirt":
        pen.box(-8 - spread, 86, -2 - spread, 110, skin)
        pen.box(2 + spread, 86, 8 + spread, 110, skin)
        pen.poly([(-12, 63), (12, 63), (17, 90), (-17, 90)], legs)
    else:
        knee = 86 if leg_kind == "shorts" else 110
        pen.box(-10 - spread, 63, -1 - spread, knee, legs)
        pen.box(1 + spread, 63, 10 + spread, knee, legs)
        if leg_kind == "shorts":
            pen.box(-9 - spread, knee, -2 - spread, 110, skin)
            pen.box(2 + spread, knee, 9 + spread, 110, skin)
    shoes = _SHOE_COLOURS[attrs["shoes"][1]]
    pen.box(-12 - spread, 109, -1 - spread, 117, shoes)
    pen.box(1 + spread, 109, 12 + spread, 117, shoes)
    # arms (swinging) and torso: the largest, most saturated part
    for side, dy in ((-1, swing), (1, -swing)):
        x0, x1 = (-19, -13) if side < 0 else (13, 19)
        pen.box(x0, 26 + dy, x1, 57 + dy, torso)
        pen.box(x0 + 0.5, 57 + dy, x1 - 0.5, 63 + dy, skin)
    pen.box(-13, 24, 13, 66, torso)
    logo, logo_c = attrs["logo"]
    if logo != "none":
        mark = _LOGO_COLOURS[logo_c]
        if logo == "circle":
            pen.box(-6.5, 35, 6.5, 48, mark, ellipse=True)
        elif logo == "stripe":
            pen.box(-13, 39, 13, 46, mark)
        else:  # cross
            pen.box(-2.5, 31, 2.5, 55, mark)
            pen.box(-8.5, 39, 8.5, 44.5, mark)
    if bag_kind == "backpack":
        for x in (-10, 6):
            pen.box(x, 24, x + 4, 52, _BAG_COLOURS[bag_c])
    if bag_kind == "shoulder bag":
        bag = _BAG_COLOURS[bag_c]
        pen.line([(-11, 25), (14, 55)], bag, 2.5)
        pen.box(10, 51, 22, 66, bag)
    # head: hair or hat
    head_kind, head_c = attrs["head"]
    hair = _HEAD_COLOURS[head_c]
    if head_kind == "long hair":
        pen.box(-9, 6, 9, 31, hair)
    pen.box(-3, 18, 3, 25, skin)  # neck
    pen.box(-8, 4, 8, 21, skin, ellipse=True)
    if head_kind in ("short hair", "long hair"):
        pen.chord(-8.5, 2, 8.5, 17, hair)
    elif head_kind == "cap":
        pen.chord(-8.5, 1, 8.5, 16, hair)
        pen.box(0, 7, 14, 10, hair)  # visor, on the side the person faces
    else:  # hat with a brim
        pen.box(-7, -5, 7, 8, hair)
        pen.box(-13, 6, 13, 9.5, hair)


def _draw_occluder(pen: _Pen, rng: np.random.Generator) -> None:
    """A box over the torso or the legs, or a pole in front of legs and torso."""
    colour: RGB = tuple(int(v) for v in rng.integers(50, 200, size=3))  # type: ignore[assignment]
    edge: RGB = tuple(int(v * 0.6) for v in colour)  # type: ignore[assignment]
    kind = int(rng.integers(3))
    if kind == 0:  # a sign or a box held up: the torso
        y0 = float(rng.uniform(26, 36))
        pen.box(-24, y0, 24, 64, edge)
        pen.box(-22, y0 + 2, 22, 62, colour)
    elif kind == 1:  # a crate, a bench, a car bonnet: the legs
        y0 = float(rng.uniform(64, 78))
        pen.box(-26, y0, 26, 130, edge)
        pen.box(-24, y0 + 2, 24, 130, colour)
    else:  # a pole (lamp post, sign post) in front: centre of legs and torso
        x = float(rng.uniform(-9, 9))
        half = float(rng.uniform(4, 6))
        y0 = float(rng.uniform(30, 50))
        pen.box(x - half, y0, x + half, 130, colour)
        pen.box(x - half, y0, x - half + 1.5, 130, edge)
        pen.box(x - 10, y0 - 12, x + 10, y0, edge)  # the sign on top


def _render(attrs: dict[str, tuple[str, str]], skin: RGB, cam: int, rng: np.random.Generator) -> Image.Image:
    """One WIDTH x HEIGHT RGB image of a person with ``attrs`` seen by camera ``cam`` (0-based)."""
    img = Image.fromarray(np.clip(_background(cam, rng), 0, 255).astype(np.uint8))
    img = img.resize((WIDTH * _SS, HEIGHT * _SS), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 3))):  # background clutter: windows, posters, people far away
        x0, y0 = rng.uniform(-10, WIDTH, size=1)[0] * _SS, rng.uniform(0, HEIGHT * 0.7) * _SS
        size = rng.uniform(8, 30, size=2) * _SS
        tone = np.asarray(_CAM_BG[cam]) + rng.uniform(-45, 45, size=3)
        draw.rectangle([x0, y0, x0 + size[0], y0 + size[1]], fill=tuple(int(v) for v in np.clip(tone, 0, 255)))

    scale = float(np.clip(_CAM_SCALE[cam] + rng.uniform(-0.05, 0.05), 0.78, 1.0))
    feet = float(rng.uniform(119, 126))
    pen = _Pen(draw, WIDTH / 2 + float(rng.uniform(-4, 4)), feet - 117 * scale, scale, 1 if rng.random() < 0.5 else -1)
    _draw_person(pen, attrs, skin, spread=float(rng.uniform(0, 4)), swing=float(rng.uniform(-3, 3)))
    if rng.random() < OCCLUSION_P:
        _draw_occluder(pen, rng)

    img = img.reduce(_SS)
    blur = _CAM_BLUR[cam] + float(rng.uniform(0, 0.3))
    if blur > 0.35:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    gain = np.asarray(_CAM_GAIN[cam], dtype=np.float32) * np.float32(rng.uniform(0.82, 1.15))  # (3,)
    arr = np.asarray(img, dtype=np.float32) * gain  # (H, W, 3)
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(4.0)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------- dataset


def _plan(num_ids: int, seed: int) -> list[tuple[str, int, int, int, int]]:
    """(split, label, identity, camera 0-based, shot) per image; label 0 = distractor.

    Identities 1..num_ids/2 train, the rest test; distractors are identities after num_ids.
    """
    rng = np.random.default_rng([seed, 104729])
    plan: list[tuple[str, int, int, int, int]] = []
    half = num_ids // 2
    for pid in range(1, num_ids + 1):
        cams = [int(c) for c in rng.permutation(NUM_CAMERAS)]
        if pid <= half:
            plan += [("train", pid, pid, c, k) for c in cams[:TRAIN_CAMS] for k in range(TRAIN_SHOTS)]
        else:
            plan += [("query", pid, pid, c, 0) for c in cams[:QUERY_CAMS]]
            plan += [("gallery", pid, pid, c, k) for c in cams[-GALLERY_CAMS:] for k in range(GALLERY_SHOTS)]
    for d in range(num_ids // 4):
        cams = [int(c) for c in rng.permutation(NUM_CAMERAS)[:DISTRACTOR_SHOTS]]
        plan += [("gallery", 0, num_ids + 1 + d, c, k) for k, c in enumerate(cams)]
    return plan


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")


def demo_marker(out: str | Path) -> dict | None:
    """The ``.complete`` marker of a demo dataset at ``out`` (JSON dict), or None when absent/unreadable."""
    marker = Path(out) / ".complete"
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def demo_is_current(out: str | Path) -> bool:
    """True when ``out`` holds a complete demo dataset drawn by this ``DEMO_VERSION``."""
    marker = demo_marker(out)
    return marker is not None and marker.get("version") == DEMO_VERSION


def _check_target(target: Path, overwrite: bool) -> None:
    """Refuse a complete dataset (unless overwrite) and anything that is not a demo leftover."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ValueError(f"{target} exists and is not a directory")
    if (target / ".complete").exists():
        if not overwrite:
            raise ValueError(f"{target} already holds a complete demo dataset; pass overwrite=True to replace it")
        return
    # No marker: a half-written leftover is replaced, but never a folder holding anything else.
    foreign = sorted(p.name for p in target.iterdir() if p.name not in _FOLDERS.values() or not p.is_dir())
    if foreign:
        raise ValueError(f"{target} exists without a .complete marker and holds {foreign[:5]}, not only "
                         f"{sorted(_FOLDERS.values())}; it is not a demo leftover, remove it or choose another path")


def generate_demo(out: str | Path, *, num_ids: int = 120, seed: int = 0, overwrite: bool = False) -> DemoSummary:
    """Write the demo dataset into ``out`` atomically (temporary sibling, then rename).

    Default size: 120 ids, 2,700 JPEGs of 64x128 (1,680 train, 180 query, 840 gallery of
    which 120 distractors), about 9 MB.

    Args:
        out: target directory; gets ``bounding_box_train/``, ``query/``, ``bounding_box_test/``
            with files ``PPPP_cCs1_FFFFFF_00.jpg`` and a ``.complete`` marker (JSON) written last.
            An existing ``out`` without the marker that holds only those folders is a
            half-written leftover and is replaced.
        num_ids: identities, even, in [10, MAX_IDS]: the first half train, the rest query + gallery.
        seed: integer >= 0; everything random derives from it.
        overwrite: replace a complete dataset already at ``out``.
    Returns:
        DemoSummary.
    Raises:
        ValueError: bad arguments, or ``out`` holds a complete dataset (without overwrite)
            or something that is not a demo dataset.
    """
    if isinstance(num_ids, bool) or not isinstance(num_ids, int) or num_ids % 2 or not 10 <= num_ids <= MAX_IDS:
        raise ValueError(f"num_ids must be an even integer in [10, {MAX_IDS}], got {num_ids!r}")
    _check_seed(seed)
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite must be True or False, got {overwrite!r}")
    target = Path(out)
    _check_target(target, overwrite)
    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    trash = target.parent / f".{target.name}.old-{os.getpid()}"
    for stale in (tmp, trash):
        if stale.exists():
            shutil.rmtree(stale)
    plan = _plan(num_ids, seed)
    table = _table(num_ids + num_ids // 4, seed)
    counts = {split: 0 for split in _FOLDERS}
    ids: dict[str, set[int]] = {split: set() for split in _FOLDERS}
    try:
        for folder in _FOLDERS.values():
            (tmp / folder).mkdir(parents=True)
        for frame, (split, label, ident, cam, shot) in enumerate(plan):
            row = table[ident - 1]
            skin = _SKIN[int(row[1] + row[4]) % len(_SKIN)]  # not a part: follows torso + shoes
            rng = np.random.default_rng([seed, list(_FOLDERS).index(split), ident, cam, shot])
            img = _render(_attrs(row), skin, cam, rng)
            img.save(tmp / _FOLDERS[split] / f"{label:04d}_c{cam + 1}s1_{frame:06d}_00.jpg", format="JPEG",
                     quality=90)
            counts[split] += 1
            if label:
                ids[split].add(label)
        summary = DemoSummary(
            out=str(target),
            ids={k: len(v) for k, v in ids.items()},
            images=dict(counts),
            distractors=sum(1 for p in plan if p[1] == 0),
            cameras=NUM_CAMERAS,
            seconds=round(time.perf_counter() - start, 2),
        )
        # Byte-identical for one seed: no timing in the marker.
        marker = {**asdict(summary), "seconds": None, "seed": seed, "num_ids": num_ids, "version": DEMO_VERSION}
        (tmp / ".complete").write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if target.exists():  # complete + overwrite, or a half-written leftover
            os.replace(target, trash)
            os.replace(tmp, target)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
