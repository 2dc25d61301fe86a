"""Synthetic datasets shared by several test modules."""
from pathlib import Path

import numpy as np
from PIL import Image


def make_market(root: Path, *, train_ids: int = 8, per_id: int = 4) -> Path:
    """A tiny Market-1501 layout of 32x16 JPEGs: one colour per identity plus noise."""
    rng = np.random.default_rng(0)
    splits = (
        ("bounding_box_train", range(1, train_ids + 1), per_id, (1, 2)),
        ("query", range(50, 54), 1, (1,)),
        ("bounding_box_test", range(50, 54), 2, (2,)),
    )
    for folder, ids, n, cams in splits:
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        for pid in ids:
            base = rng.integers(0, 256, 3)
            for k in range(n):
                arr = np.clip(base + rng.integers(-40, 40, (32, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{pid:04d}_c{cams[k % len(cams)]}s1_{k:06d}_00.jpg")
    return root
