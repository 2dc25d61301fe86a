"""esnet.data.loader on a tiny synthetic Market-style set of 4x8 (w x h) JPEGs."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from esnet.config import DataConfig
from esnet.data.images import ImageError
from esnet.data.loader import ImageDataset, build_test_loader, build_train_loader, relabel, set_epoch
from esnet.data.sampler import PKSampler
from esnet.data.transforms import build_transforms
from esnet.data.types import Sample

PIDS = (2, 7, 11, 30, 31, 500)  # 6 ids x 3 images
CFG = DataConfig(height=8, width=4, batch_size=8, num_instances=2, workers=0, pad=2)


@pytest.fixture()
def samples(tmp_path) -> list[Sample]:
    out = []
    for j, pid in enumerate(PIDS):
        for k in range(3):
            cam = k + 1
            path = tmp_path / f"{pid:04d}_c{cam}s1_{k:06d}_00.jpg"
            img = Image.new("RGB", (4, 8), (40 * j, 10 + 60 * k, 200 - 30 * j))
            img.putpixel((0, 0), (255, 255, 255))  # asymmetric, so flips show
            img.save(path, quality=95)
            out.append(Sample(path=str(path), pid=pid, camid=cam - 1, split="train"))
    return out


def test_relabel_sorted_dense():
    s = [Sample(f"/x/{p}.jpg", p, 0, "train") for p in (30, 2, 30, 500, 7)]
    assert relabel(s) == {2: 0, 7: 1, 30: 2, 500: 3}


def test_train_batches_shapes_and_relabelled_labels(samples):
    loader, num_classes = build_train_loader(samples, CFG, seed=0)
    assert num_classes == 6
    assert isinstance(loader.sampler, PKSampler)
    # 6 ids x 1 group (3 images // K=2), P = 4 -> 1 batch per epoch
    assert len(loader) == 1
    batches = list(loader)
    assert len(batches) == 1
    b = batches[0]
    assert b["image"].shape == (8, 3, 8, 4) and b["image"].dtype == torch.float32
    assert b["label"].dtype == torch.int64 and b["camid"].dtype == torch.int64
    label_map = relabel(samples)
    for lab, idx, cam in zip(b["label"].tolist(), b["index"].tolist(), b["camid"].tolist()):
        assert lab == label_map[samples[idx].pid]
        assert cam == samples[idx].camid
    assert set(b["label"].tolist()) <= set(range(6))
    assert len(set(b["label"].tolist())) == 4  # P identities


def test_first_batch_reproducible_for_same_seed_workers0(samples):
    state = torch.get_rng_state()
    a = next(iter(build_train_loader(samples, CFG, seed=4)[0]))
    b = next(iter(build_train_loader(samples, CFG, seed=4)[0]))
    c = next(iter(build_train_loader(samples, CFG, seed=5)[0]))
    assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])
    assert not (torch.equal(a["index"], c["index"]) and torch.equal(a["image"], c["image"]))
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global RNG is untouched


def test_augmentation_independent_of_global_rng(samples):
    loader, _ = build_train_loader(samples, CFG, seed=1)
    torch.manual_seed(0)
    a = next(iter(loader))
    loader2, _ = build_train_loader(samples, CFG, seed=1)
    torch.manual_seed(12345)
    b = next(iter(loader2))
    assert torch.equal(a["image"], b["image"])


def test_set_epoch_changes_order_and_is_reproducible(samples):
    loader, _ = build_train_loader(samples, dataclasses.replace(CFG, batch_size=4), seed=0)  # P = 2: 3 batches
    assert len(loader) == 3
    orders = []
    for epoch in (0, 1, 0):
        set_epoch(loader, epoch)
        orders.append(torch.cat([b["index"] for b in loader]).tolist())
    assert orders[0] == orders[2] and orders[0] != orders[1]
    with pytest.raises(ValueError, match="build_train_loader"):
        set_epoch(build_test_loader(samples, CFG), 0)


def test_workers2_reproducible(samples):
    cfg = dataclasses.replace(CFG, workers=2, batch_size=4)  # 3 batches over 2 workers

    def run() -> list[torch.Tensor]:
        loader, _ = build_train_loader(samples, cfg, seed=7)
        return [b["image"] for b in loader]

    a, b = run(), run()
    assert len(a) == 3
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_test_loader_in_order_with_raw_pids(samples):
    loader = build_test_loader(samples, CFG, batch_size=5)
    batches = list(loader)
    assert [len(b["index"]) for b in batches] == [5, 5, 5, 3]
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(18))
    assert torch.cat([b["label"] for b in batches]).tolist() == [s.pid for s in samples]
    first = batches[0]["image"][0]
    with Image.open(samples[0].path) as raw:
        expected = build_transforms(CFG, train=False)(raw.convert("RGB"))
    assert torch.equal(first, expected)
    again = next(iter(build_test_loader(samples, CFG, batch_size=5)))
    assert torch.equal(again["image"], batches[0]["image"])


def test_broken_image_raises_image_error(samples, tmp_path):
    bad = tmp_path / "0002_c1s1_999999_00.jpg"
    bad.write_text("not a jpeg")
    ds = ImageDataset([Sample(str(bad), 2, 0, "train")], build_transforms(CFG, train=False))
    with pytest.raises(ImageError, match="not an image") as info:
        ds[0]
    assert info.value.path == str(bad)


def test_missing_pid_in_label_map(samples):
    ds = ImageDataset(samples[:1], build_transforms(CFG, train=False), label_map={999: 0})
    with pytest.raises(ValueError, match=r"pid 2 of .* is not in label_map"):
        ds[0]


def test_empty_and_bad_arguments(samples):
    with pytest.raises(ValueError, match="no samples"):
        build_train_loader([], CFG, seed=0)
    with pytest.raises(ValueError, match="no samples"):
        build_test_loader([], CFG)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        build_test_loader(samples, CFG, batch_size=0)
    with pytest.raises(ValueError, match="at least P"):
        build_train_loader(samples[:6], CFG, seed=0)  # 2 ids < P = 4


def test_workers_get_distinct_augmentation_streams(tmp_path):
    # All images identical: if both workers replayed one stream, batch 0 (worker 0)
    # and batch 1 (worker 1) would be augmented identically.
    same = []
    for j, pid in enumerate(PIDS):
        for k in range(3):
            path = tmp_path / f"{pid:04d}_c1s1_{k:06d}_00.jpg"
            img = Image.new("RGB", (4, 8), (90, 120, 30))
            img.putpixel((0, 0), (255, 255, 255))
            img.save(path, quality=95)
            same.append(Sample(str(path), pid, 0, "train"))
    cfg = dataclasses.replace(CFG, workers=2, batch_size=4)
    b0, b1, _ = [b["image"] for b in build_train_loader(same, cfg, seed=3)[0]]
    assert not torch.equal(b0, b1)
    c0 = next(iter(build_train_loader(same, cfg, seed=4)[0]))["image"]
    assert not torch.equal(b0, c0)
