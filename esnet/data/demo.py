"""Synthetic demo persons in Market-1501 layout, drawn procedurally and deterministically.

Identity is carried by several body parts, each drawn from a small palette so that no
single part identifies a person (every value is shared by many identities) and every
two identities differ in at least two parts: erasing any one part never makes two
people identical, so "erase the most salient part, learn the others" is meaningful.
The torso is the largest, most saturated part, the one a network latches onto first.

Cameras change background, light, scale and position, and sometimes occlude the torso
or the legs. Every random draw comes from ``numpy.random.default_rng`` seeded by
(seed, identity, camera, shot), so the same seed gives byte-identical files.
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
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 64, 128
NUM_CAMERAS = 6
DEMO_PARTS = ("head", "torso", "logo", "legs", "shoes", "bag")

_TORSO = [(220, 30, 30), (30, 90, 220), (30, 170, 60), (240, 200, 20), (150, 40, 180),
          (250, 130, 20), (20, 180, 190), (240, 240, 240)]
_DARK = [(35, 35, 40), (90, 60, 35), (170, 150, 110), (60, 80, 120), (120, 120, 125), (150, 30, 60)]
_SHOES = [(20, 20, 20), (235, 235, 235), (130, 70, 30), (200, 30, 30), (40, 60, 160)]
_BAG = [(25, 25, 25), (120, 80, 40), (200, 30, 120), (60, 130, 60)]
_HEAD_KINDS = ("short", "long", "cap", "hat")
_LOGOS = ("none", "circle", "stripe", "cross")
_LEG_KINDS = ("trousers", "shorts", "skirt")
_BAG_KINDS = ("none", "backpack", "shoulder")
_SKIN = [(235, 200, 170), (200, 150, 110), (140, 95, 65)]
_CAM_BG = [(110, 120, 130), (150, 140, 120), (90, 110, 90), (170, 170, 175), (120, 100, 110), (80, 90, 110)]
_CAM_GAIN = [(1.0, 1.0, 1.0), (1.15, 1.05, 0.9), (0.8, 0.85, 0.95), (1.05, 1.0, 1.1), (0.9, 0.9, 0.8),
             (1.2, 1.15, 1.15)]


@dataclass(frozen=True)
class DemoSummary:
    """What ``generate_demo`` wrote."""

    out: str
    ids: dict[str, int]
    images: dict[str, int]
    cameras: int
    seconds: float

    def __str__(self) -> str:
        rows = "\n".join(
            f"  {split:<8} {self.ids[split]:>4} ids {self.images[split]:>6} images" for split in self.images
        )
        return (f"demo dataset written to {self.out} in {self.seconds:.1f} s "
                f"({self.cameras} cameras)\n{rows}")


def _draw_attributes(rng: np.random.Generator) -> dict[str, tuple]:
    return {
        "head": (_HEAD_KINDS[rng.integers(4)], int(rng.integers(len(_DARK)))),
        "torso": (int(rng.integers(len(_TORSO))),),
        "logo": (_LOGOS[rng.integers(4)], int(rng.integers(2))),
        "legs": (_LEG_KINDS[rng.integers(3)], int(rng.integers(len(_DARK)))),
        "shoes": (int(rng.integers(len(_SHOES))),),
        "bag": (_BAG_KINDS[rng.integers(3)], int(rng.integers(len(_BAG)))),
    }


def _differing_parts(a: dict, b: dict) -> int:
    return sum(a[p] != b[p] for p in DEMO_PARTS)


@lru_cache(maxsize=8)
def _attribute_table(num_ids: int, seed: int) -> tuple[dict[str, tuple], ...]:
    """Attributes of pids 1..num_ids; pid k depends only on pids < k (sampled in order)."""
    rng = np.random.default_rng([seed, 7919])
    table: list[dict[str, tuple]] = []
    while len(table) < num_ids:
        cand = _draw_attributes(rng)
        if all(_differing_parts(cand, other) >= 2 for other in table):
            table.append(cand)
    return tuple(table)


def identity_attributes(pid: int, seed: int = 0) -> dict[str, tuple]:
    """The part attributes that define identity ``pid`` (1-based) for a given seed.

    Returns:
        dict part -> tuple of (kind, palette index) values; keys are ``DEMO_PARTS``.
    """
    if pid < 1:
        raise ValueError(f"pid must be >= 1 (0 is the distractor label), got {pid!r}")
    return dict(_attribute_table(pid, seed)[pid - 1])


def _gain(colour: tuple[int, int, int], gain: tuple[float, float, float], light: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * g * light))) for c, g in zip(colour, gain))  # type: ignore[return-value]


def _render(attrs: dict[str, tuple], cam: int, rng: np.random.Generator) -> Image.Image:
    """One 64x128 RGB image of a person with ``attrs`` seen by camera ``cam`` (0-based)."""
    gain = _CAM_GAIN[cam % len(_CAM_GAIN)]
    light = float(rng.uniform(0.85, 1.15))

    def col(c: tuple[int, int, int]) -> tuple[int, int, int]:
        return _gain(c, gain, light)

    # Background: camera colour, a per-camera texture (stripes / floor line) and noise later.
    bg = np.empty((HEIGHT, WIDTH, 3), dtype=np.float32)
    bg[:] = _CAM_BG[cam % len(_CAM_BG)]
    period = 6 + 3 * cam
    if cam % 2 == 0:  # vertical stripes (a fence, a shop front)
        bg += ((np.arange(WIDTH) // period) % 2)[None, :, None] * 14.0
    else:  # horizontal bands (a wall of bricks, steps)
        bg += ((np.arange(HEIGHT) // period) % 2)[:, None, None] * 14.0
    floor = int(HEIGHT * (0.78 + 0.03 * (cam % 3)))
    bg[floor:] *= 0.8
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)

    s = float(rng.uniform(0.82, 1.0))  # scale
    cx = WIDTH / 2 + float(rng.uniform(-4, 4))
    top = 4 + float(rng.uniform(0, 6)) + (1 - s) * 40

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [cx + x0 * s, top + y0 * s, cx + x1 * s, top + y1 * s]

    skin = col(_SKIN[(attrs["torso"][0] + attrs["shoes"][0]) % len(_SKIN)])
    torso = col(_TORSO[attrs["torso"][0]])
    leg_kind, leg_c = attrs["legs"]
    legs = col(_DARK[leg_c])
    spread = float(rng.uniform(0, 4))

    bag_kind, bag_c = attrs["bag"]
    if bag_kind == "backpack":  # visible behind the shoulders on both sides
        d.rectangle(box(-17, 26, 17, 60), fill=col(_BAG[bag_c]))
    # legs
    if leg_kind == "skirt":
        d.polygon([(cx - 11 * s, top + 64 * s), (cx + 11 * s, top + 64 * s), (cx + 16 * s, top + 88 * s),
                   (cx - 16 * s, top + 88 * s)], fill=legs)
        d.rectangle(box(-9 - spread, 88, -3 - spread, 110), fill=skin)
        d.rectangle(box(3 + spread, 88, 9 + spread, 110), fill=skin)
    else:
        knee = 86 if leg_kind == "shorts" else 110
        d.rectangle(box(-10 - spread, 64, -1 - spread, knee), fill=legs)
        d.rectangle(box(1 + spread, 64, 10 + spread, knee), fill=legs)
        if leg_kind == "shorts":
            d.rectangle(box(-9 - spread, knee, -2 - spread, 110), fill=skin)
            d.rectangle(box(2 + spread, knee, 9 + spread, 110), fill=skin)
    shoes = col(_SHOES[attrs["shoes"][0]])
    d.rectangle(box(-12 - spread, 110, -1 - spread, 117), fill=shoes)
    d.rectangle(box(1 + spread, 110, 12 + spread, 117), fill=shoes)
    # arms and torso (the largest, most saturated part)
    d.rectangle(box(-19, 26, -13, 58), fill=torso)
    d.rectangle(box(13, 26, 19, 58), fill=torso)
    d.rectangle(box(-19, 58, -13, 63), fill=skin)
    d.rectangle(box(13, 58, 19, 63), fill=skin)
    d.rectangle(box(-13, 24, 13, 66), fill=torso)
    logo, logo_c = attrs["logo"]
    mark = col((250, 250, 250) if logo_c == 0 else (15, 15, 15))
    if logo == "circle":
        d.ellipse(box(-6, 36, 6, 48), fill=mark)
    elif logo == "stripe":
        d.rectangle(box(-13, 40, 13, 46), fill=mark)
    elif logo == "cross":
        d.rectangle(box(-2, 32, 2, 54), fill=mark)
        d.rectangle(box(-8, 40, 8, 45), fill=mark)
    if bag_kind == "shoulder":
        bag = col(_BAG[bag_c])
        d.line([(cx - 11 * s, top + 25 * s), (cx + 14 * s, top + 56 * s)], fill=bag, width=max(1, int(2 * s)))
        d.rectangle(box(10, 52, 21, 66), fill=bag)
    # head and hair / hat
    head_kind, head_c = attrs["head"]
    hair = col(_DARK[head_c])
    if head_kind == "long":
        d.rectangle(box(-9, 8, 9, 30), fill=hair)
    d.rectangle(box(-3, 19, 3, 25), fill=skin)  # neck
    d.ellipse(box(-8, 4, 8, 21), fill=skin)
    if head_kind in ("short", "long"):
        d.chord(box(-8, 2, 8, 16), 180, 360, fill=hair)
    elif head_kind == "cap":
        d.chord(box(-8, 2, 8, 16), 180, 360, fill=hair)
        d.rectangle(box(0, 8, 13, 10), fill=hair)
    else:  # hat with a brim
        d.rectangle(box(-7, -4, 7, 8), fill=hair)
        d.rectangle(box(-12, 7, 12, 10), fill=hair)

    # Occlusion of one part (torso or legs) in some shots: a pole, a box or a passer-by.
    if rng.random() < 0.25:
        occ = col(tuple(int(v) for v in rng.integers(40, 200, size=3)))  # type: ignore[arg-type]
        if rng.random() < 0.5:
            d.rectangle(box(-22, 28 + rng.uniform(0, 8), 22, 62), fill=occ)
        else:
            d.rectangle(box(-22, 66 + rng.uniform(0, 10), 22, 118), fill=occ)

    arr = np.asarray(img, dtype=np.float32)
    arr += rng.normal(0.0, 5.0, size=arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _plan(num_ids: int, seed: int) -> list[tuple[str, int, int, int]]:
    """(folder, pid, camera 0-based, shot) for every image; train ids first, test ids after."""
    rng = np.random.default_rng([seed, 104729])
    plan: list[tuple[str, int, int, int]] = []
    half = num_ids // 2
    for pid in range(1, num_ids + 1):
        cams = [int(c) for c in rng.permutation(NUM_CAMERAS)[:4]]
        if pid <= half:
            plan += [("bounding_box_train", pid, c, k) for c in cams for k in range(4)]
        else:
            plan += [("query", pid, c, 0) for c in cams[:2]]
            plan += [("bounding_box_test", pid, c, k) for c in cams[1:] for k in range(2)]
    # A few distractors (pid 0, Market convention): people who are in no query.
    plan += [("bounding_box_test", 0, k % NUM_CAMERAS, k) for k in range(max(4, num_ids // 3))]
    return plan


def generate_demo(out: str | Path, *, num_ids: int = 120, seed: int = 0, overwrite: bool = False) -> DemoSummary:
    """Write the demo dataset into ``out`` atomically (temporary sibling, then rename).

    Args:
        out: target directory; gets ``bounding_box_train/``, ``query/``, ``bounding_box_test/``
            and a ``.complete`` marker (JSON summary) written last.
        num_ids: identities, even, >= 10: half train, half test (query + gallery).
        seed: everything random derives from it.
        overwrite: replace a complete dataset already at ``out``.
    Returns:
        DemoSummary.
    """
    if isinstance(num_ids, bool) or not isinstance(num_ids, int) or num_ids < 10 or num_ids % 2:
        raise ValueError(f"num_ids must be an even integer >= 10, got {num_ids!r}")
    if num_ids > 2000:
        raise ValueError(f"num_ids must be <= 2000 (distinct part combinations run out), got {num_ids!r}")
    target = Path(out)
    if (target / ".complete").exists() and not overwrite:
        raise ValueError(f"{target} already holds a complete demo dataset; pass overwrite=True to replace it")
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} exists and is not a directory")
    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    table = _attribute_table(num_ids, seed)
    distractor_rng = np.random.default_rng([seed, 15485863])
    distractors: dict[int, dict[str, tuple]] = {}
    counts: dict[str, int] = {}
    ids: dict[str, set[int]] = {}
    try:
        for folder in ("bounding_box_train", "query", "bounding_box_test"):
            (tmp / folder).mkdir(parents=True)
        for frame, (folder, pid, cam, shot) in enumerate(_plan(num_ids, seed)):
            if pid == 0:
                attrs = distractors.setdefault(shot, _draw_attributes(distractor_rng))
            else:
                attrs = table[pid - 1]
            rng = np.random.default_rng([seed, pid, cam, shot, len(folder)])
            img = _render(attrs, cam, rng)
            name = f"{pid:04d}_c{cam + 1}s1_{frame:06d}_00.jpg"
            img.save(tmp / folder / name, format="JPEG", quality=90)
            split = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}[folder]
            counts[split] = counts.get(split, 0) + 1
            ids.setdefault(split, set()).add(pid)
        summary = DemoSummary(
            out=str(target),
            ids={k: len(ids[k]) for k in ("train", "query", "gallery")},
            images={k: counts[k] for k in ("train", "query", "gallery")},
            cameras=NUM_CAMERAS,
            seconds=round(time.perf_counter() - start, 2),
        )
        marker = {**asdict(summary), "seed": seed, "num_ids": num_ids, "seconds": None}
        (tmp / ".complete").write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        if target.exists():  # complete + overwrite, or a half-written leftover without .complete
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
