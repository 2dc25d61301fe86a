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


VEHICLEID_FIXTURE_IDS = {"train": 5, "small": 4, "medium": 6, "large": 8}
"""Vehicles per list of :func:`make_vehicleid` (3 images each); the test lists are nested like VehicleID's."""


def make_vehicleid(root: Path) -> Path:
    """A tiny PKU VehicleID in its real layout: ``image/NNNNNNN.jpg`` (7-digit names, 32x16 JPEGs,
    one colour per vehicle under strong noise) and ``train_test_split/{train_list, test_list_800,
    test_list_1600, test_list_2400}.txt`` with lines ``<image name without extension> <vehicle id>``.
    Test vehicles are ids 100.. (small: 4, medium: 6, large: 8), train vehicles 1..5."""
    rng = np.random.default_rng(1)
    (root / "image").mkdir(parents=True, exist_ok=True)
    (root / "train_test_split").mkdir(exist_ok=True)
    counter = iter(range(1, 10_000))

    def images(vid: int) -> list[str]:
        base = rng.integers(110, 146, 3)  # close colours, strong noise: a random model confuses vehicles
        names = []
        for _ in range(3):
            name = f"{next(counter):07d}"
            arr = np.clip(base + rng.integers(-90, 90, (32, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / "image" / f"{name}.jpg")
            names.append(f"{name} {vid}")
        return names

    train = [line for vid in range(1, VEHICLEID_FIXTURE_IDS["train"] + 1) for line in images(vid)]
    test = [line for vid in range(100, 100 + VEHICLEID_FIXTURE_IDS["large"]) for line in images(vid)]
    (root / "train_test_split" / "train_list.txt").write_text("\n".join(train) + "\n")
    for size, n in (("800", "small"), ("1600", "medium"), ("2400", "large")):
        lines = test[:3 * VEHICLEID_FIXTURE_IDS[n]]
        (root / "train_test_split" / f"test_list_{size}.txt").write_text("\n".join(lines) + "\n")
    return root


def make_run(d: Path, *, pool: str = "p", erasing: str = "salient", epochs: int = 4, eval_every: int = 2,
             probes: int = 3, state: str = "finished", images: bool = True, dataset_root: Path | None = None,
             written: int | None = None) -> Path:
    """A finished (or running/failed) run directory written with the trainer's own writers.

    ``epochs`` is the run's length; ``written`` (default: all, or all but one in status.json
    when not finished) the epochs already recorded, e.g. a running run at epoch 4 of 6.

    Feature map 8x4, input 64x32; probe ``i``'s CAM peaks at row ``(i + epoch) % 8`` so the
    erased block moves with the epoch; eval mAP rises by 0.1 per evaluated epoch from 0.3.
    With ``images=False`` the run has no probes/images and probes refer to files under
    ``dataset_root`` (relpath ``bounding_box_train/<name>``), written there.
    """
    from esnet.config import Config, override
    from esnet.engine import rundir

    d.mkdir(parents=True, exist_ok=True)
    cfg = override(Config(), {"model.pool": pool, "model.erasing": erasing, "model.backbone": "mobilenet_v2",
                              "data.height": 64, "data.width": 32, "optim.epochs": epochs,
                              "optim.milestones": [], "optim.warmup_epochs": 0, "data.dataset": "demo"})
    rundir.write_config(d, cfg)
    rng = np.random.default_rng(1)
    entries = []
    for i in range(probes):
        name = f"{i + 1:04d}_c{i % 2 + 1}s1_000001_00.jpg"
        arr = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)
        if images:
            (d / "probes" / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(d / "probes" / "images" / f"{i:02d}.jpg")
        elif dataset_root is not None:
            (dataset_root / "bounding_box_train").mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(dataset_root / "bounding_box_train" / name)
        entries.append({"index": i, "path": f"/elsewhere/{name}", "relpath": f"bounding_box_train/{name}",
                        "pid": i + 1, "label": i, "camid": i % 2, "image": f"images/{i:02d}.jpg"})
    rundir.atomic_write_json(d / "probes" / "probes.json",
                             {"probes": entries, "feature_size": [8, 4], "input_size": [64, 32]})
    m_ap = 0.2
    for epoch in range(0, (epochs if written is None else written) + 1):
        cam = np.zeros((probes, 8, 4), dtype=np.float32)
        box = np.zeros((probes, 4), dtype=np.int64)
        for i in range(probes):
            row = (i + epoch) % 8
            cam[i, row, :] = 1.0
            top = min(max(row - 1, 0), 8 - 3)
            box[i] = (top, 0, 3, 4)
        rundir.write_probe_epoch(d, epoch, cam, box)
        if epoch == 0:
            continue
        rec = {"epoch": epoch, "lr": 3.5e-4 / epoch, "time_s": 10.0 + epoch, "img_per_s": 50.0,
               "loss": {"global_ce": 3.0 / epoch, "global_triplet": 0.5 / epoch, "total": 3.5 / epoch},
               "acc": {"global": 0.2 * epoch}, "p": {"global": 3.0 + 0.1 * epoch} if pool == "p" else {}}
        if erasing != "off":
            rec["loss"]["erase_ce"] = 3.2 / epoch
            rec["acc"]["erase"] = 0.15 * epoch
            if pool == "p":
                rec["p"]["erase"] = 3.0 + 0.2 * epoch
        if epoch % eval_every == 0 or epoch == epochs:
            m_ap += 0.1
            rec["eval"] = {"R1": m_ap + 0.2, "R5": m_ap + 0.3, "R10": m_ap + 0.35, "mAP": m_ap, "mINP": m_ap / 3,
                           "cmc": list(np.linspace(m_ap + 0.2, 1.0, 20))}
        rundir.append_metrics(d, rec)
    done = written if written is not None else epochs if state == "finished" else max(epochs - 1, 0)
    if state == "running":  # this test process plays the trainer: it holds the run's lock until it exits
        rundir.acquire_lock(d)
    rundir.write_status(d, state=state, epoch=done, total_epochs=epochs,
                        error="RuntimeError: boom" if state == "failed" else None)
    return d


def random_checkpoint(path: Path, *, num_classes: int = 3, overrides: dict | None = None, seed: int = 0,
                      extra: dict | None = None) -> Path:
    """A checkpoint of an untrained model (torch seeded with ``seed``): resnet18 at 64x32 unless
    ``overrides`` (dotted config keys) say otherwise, with ``extra`` as its extra. Returns ``path``."""
    import torch

    from esnet.checkpoint import save_checkpoint
    from esnet.config import Config, override
    from esnet.model import build_model

    cfg = override(Config(), {"model.backbone": "resnet18", "data.height": 64, "data.width": 32, **(overrides or {})})
    torch.manual_seed(seed)
    save_checkpoint(path, model=build_model(cfg.model, num_classes), optimizer=None, scheduler=None, epoch=1,
                    config=cfg, num_classes=num_classes, extra=extra)
    return path


def make_noisy_market(root: Path, *, query_ids: int = 8, seed: int = 0) -> Path:
    """A tiny Market-1501 layout of 32x16 noise JPEGs, so two untrained models rank it differently.

    query: one image per test id (50, 51, ...) from camera 1. bounding_box_test: two images per
    test id from camera 2 (true matches), one more of id 50 from camera 1 (same id and camera as
    its query: ignored by the protocol) and 8 distractors (id 0). bounding_box_train: 3 ids x 2.
    """
    rng = np.random.default_rng(seed)
    test_ids = range(50, 50 + query_ids)
    files = [("bounding_box_train", pid, 1 + k, k) for pid in (1, 2, 3) for k in range(2)]
    files += [("query", pid, 1, 0) for pid in test_ids]
    files += [("bounding_box_test", pid, 2, k) for pid in test_ids for k in range(2)]
    files += [("bounding_box_test", 50, 1, 5)] + [("bounding_box_test", 0, 3, k) for k in range(8)]
    for folder, pid, cam, k in files:
        (root / folder).mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / folder / f"{pid:04d}_c{cam}s1_{k:06d}_00.jpg")
    return root
