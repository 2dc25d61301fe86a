"""Embedding: checkpoint resolution, unit-norm deterministic features, flip, skipped files, disk cache."""
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from esnet.checkpoint import CheckpointError, save_checkpoint
from esnet.config import Config, override
from esnet.data import load_dataset
from esnet.data.images import load_rgb
from esnet.data.types import Sample
from esnet.embedding import (
    Embeddings,
    Inference,
    embed_folder,
    embed_images,
    embed_samples,
    embed_split,
    file_sha256,
    is_test_selected,
    load_inference,
    parse_market_name,
    resolve_checkpoint,
)
from esnet.model import build_model


def _cfg() -> Config:
    return override(Config(), {"model.backbone": "resnet18", "data.height": 64, "data.width": 32})


def _save(path: Path, seed: int = 0) -> Path:
    cfg = _cfg()
    torch.manual_seed(seed)
    model = build_model(cfg.model, 3)
    save_checkpoint(path, model=model, optimizer=None, scheduler=None, epoch=1, config=cfg, num_classes=3)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _save(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def inf(ckpt) -> Inference:
    return load_inference(ckpt, device="cpu")


def _images(d: Path, n: int = 4, size=(32, 16)) -> list[Path]:
    """n random RGB JPEGs named like Market files, pid 10+i, camera (i % 3) + 1."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        p = d / f"{10 + i:04d}_c{i % 3 + 1}s1_000001_00.jpg"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def _samples(paths) -> list[Sample]:
    return [Sample(str(p), 10 + i, i % 3, "gallery") for i, p in enumerate(paths)]


class _Boom(torch.nn.Module):
    def forward(self, x):
        raise AssertionError("the model ran although the cache should have answered")


# --- loading -----------------------------------------------------------------------------
def test_load_inference_fields(inf, ckpt):
    assert inf.checkpoint == str(ckpt) and inf.device == torch.device("cpu") and inf.size == (64, 32)
    assert inf.checkpoint_sha == file_sha256(ckpt) and len(inf.checkpoint_sha) == 64
    assert not inf.model.training and inf.config.model.backbone == "resnet18"
    x = inf.preprocess([Image.new("RGB", (20, 50), (255, 0, 0))])
    assert x.shape == (1, 3, 64, 32) and x.dtype == torch.float32
    assert float(x[0, 0, 0, 0]) == pytest.approx((1.0 - 0.485) / 0.229, abs=1e-4)  # ImageNet-normalised red


def test_preprocess_rejects_non_rgb(inf):
    with pytest.raises(ValueError, match="image 1 must be an RGB PIL image.*'L'"):
        inf.preprocess([Image.new("RGB", (8, 8)), Image.new("L", (8, 8))])
    with pytest.raises(ValueError, match="empty"):
        embed_images(inf, [])


def test_resolve_checkpoint_is_last_and_best_only_when_asked(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"has no last\.pt"):
        resolve_checkpoint(run)
    (run / "checkpoints" / "best.pt").write_bytes(b"x")
    # only best.pt: no silent fallback to the test-selected file; the message says how to ask for it
    with pytest.raises(CheckpointError, match=r"has no last\.pt.*it has best\.pt, the test-selected epoch.*"
                                              r"--checkpoint-file best"):
        resolve_checkpoint(run)
    assert resolve_checkpoint(run, "best") == run / "checkpoints" / "best.pt"
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    assert resolve_checkpoint(run) == run / "checkpoints" / "last.pt"  # last.pt even though best.pt exists
    assert resolve_checkpoint(run, "best") == run / "checkpoints" / "best.pt"
    assert resolve_checkpoint(run / "checkpoints" / "best.pt") == run / "checkpoints" / "best.pt"  # a file: itself
    assert is_test_selected(run / "checkpoints" / "best.pt") and not is_test_selected(run / "checkpoints" / "last.pt")
    with pytest.raises(ValueError, match=r"which must be one of \['last', 'best'\], got 'top'"):
        resolve_checkpoint(run, "top")
    with pytest.raises(CheckpointError, match="nowhere.*does not exist"):
        resolve_checkpoint(tmp_path / "nowhere")


def test_load_inference_from_run_dir(tmp_path, ckpt):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    os.link(ckpt, run / "checkpoints" / "last.pt")
    loaded = load_inference(run, device="cpu")
    assert loaded.checkpoint == str(run / "checkpoints" / "last.pt")
    with pytest.raises(ValueError, match="'tpu'"):
        load_inference(run, device="tpu")


# --- in-memory images --------------------------------------------------------------------
def test_features_are_unit_norm_and_deterministic(inf, tmp_path):
    ims = [load_rgb(p) for p in _images(tmp_path, 3)]
    a = embed_images(inf, ims)
    b = embed_images(inf, ims[::-1])
    assert a.shape == (3, 1024) and a.dtype == torch.float32 and not a.requires_grad
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(a, b.flip(0), atol=1e-5, rtol=0)  # batch-order independent (eval BN)
    assert float((a[0] - a[1]).abs().max()) > 1e-3  # different images, different features


def test_flip_is_the_normalised_mean_with_the_mirror(inf, tmp_path):
    ims = [load_rgb(p) for p in _images(tmp_path, 2)]
    plain, flipped = embed_images(inf, ims), embed_images(inf, ims, flip=True)
    with torch.no_grad():
        raw = inf.model(inf.preprocess(ims)).embedding
        mirror = inf.model(inf.preprocess([ImageOps.mirror(im) for im in ims])).embedding
    torch.testing.assert_close(flipped, F.normalize((raw + mirror) / 2, dim=1), atol=1e-5, rtol=0)
    torch.testing.assert_close(flipped.norm(dim=1), torch.ones(2))
    assert float((flipped - plain).abs().max()) > 1e-3


# --- files -------------------------------------------------------------------------------
def test_embed_samples_equals_embed_images_and_reports_progress(inf, tmp_path):
    paths = _images(tmp_path, 5)
    calls = []
    emb = embed_samples(inf, _samples(paths), batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    assert emb.features.shape == (5, 1024) and emb.features.dtype == np.float32
    assert emb.paths == tuple(map(str, paths)) and emb.skipped == () and not emb.from_cache and not emb.flip
    assert emb.pids.tolist() == [10, 11, 12, 13, 14] and emb.camids.tolist() == [0, 1, 2, 0, 1]
    assert emb.pids.dtype == np.int64 and emb.checkpoint_sha == inf.checkpoint_sha
    direct = embed_images(inf, [load_rgb(p) for p in paths]).numpy()
    np.testing.assert_allclose(emb.features, direct, atol=1e-5)
    flipped = embed_samples(inf, _samples(paths), batch_size=3, flip=True)
    np.testing.assert_allclose(flipped.features, embed_images(inf, [load_rgb(p) for p in paths], flip=True).numpy(),
                               atol=1e-5)


def test_bad_images_are_skipped_and_reported(inf, tmp_path):
    good = _images(tmp_path, 3)
    empty, text = tmp_path / "0099_c1s1_000001_00.jpg", tmp_path / "0098_c2s1_000001_00.jpg"
    empty.write_bytes(b"")
    text.write_text("not a picture")
    samples = _samples([good[0], empty, good[1], text, good[2]])
    emb = embed_samples(inf, samples, batch_size=2)
    assert emb.paths == (str(good[0]), str(good[1]), str(good[2]))
    assert emb.pids.tolist() == [10, 12, 14] and emb.camids.tolist() == [0, 2, 1]
    assert [p for p, _ in emb.skipped] == [str(empty), str(text)]
    assert "empty" in emb.skipped[0][1] and "not an image" in emb.skipped[1][1]
    np.testing.assert_allclose(emb.features, embed_images(inf, [load_rgb(p) for p in good]).numpy(), atol=1e-5)


def test_all_bad_raises_with_count_and_first_reason(inf, tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.jpg").write_text("text")
    samples = [Sample(str(tmp_path / n), 1, 0, "query") for n in ("a.jpg", "b.jpg")]
    with pytest.raises(ValueError, match=r"none of the 2 images.*a\.jpg.*empty"):
        embed_samples(inf, samples, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing was written
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        embed_samples(inf, samples, batch_size=0)


def test_embed_folder_parses_market_names_recursively(inf, tmp_path):
    paths = _images(tmp_path / "imgs" / "sub", 2)
    Image.new("RGB", (16, 32), (0, 200, 0)).save(tmp_path / "imgs" / "photo.PNG")
    (tmp_path / "imgs" / "notes.txt").write_text("ignored")
    emb = embed_folder(inf, tmp_path / "imgs", batch_size=2)
    assert emb.paths == (str(tmp_path / "imgs" / "photo.PNG"), *map(str, paths))
    assert emb.pids.tolist() == [-1, 10, 11] and emb.camids.tolist() == [-1, 0, 1]
    assert parse_market_name("/x/0002_c3s1_000451_03.jpg") == (2, 2)
    assert parse_market_name("-1_c1s1_000001_00.jpg") == (-1, 0) and parse_market_name("cat.jpg") == (-1, -1)
    with pytest.raises(ValueError, match="missing.*does not exist"):
        embed_folder(inf, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*holds no image files"):
        embed_folder(inf, tmp_path / "empty")


def test_embed_split_of_a_dataset(inf, market):
    data = load_dataset("market1501", str(market))
    emb = embed_split(inf, data, "query", batch_size=3)
    assert emb.paths == tuple(s.path for s in data.query)
    assert emb.pids.tolist() == [s.pid for s in data.query] and emb.camids.tolist() == [0, 0, 0, 0]
    np.testing.assert_allclose(np.linalg.norm(emb.features, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="split must be one of"):
        embed_split(inf, data, "test")


def test_workers_give_the_same_result(inf, tmp_path):
    paths = _images(tmp_path, 3)
    (tmp_path / "0001_c1s1_000001_00.jpg").write_bytes(b"")
    samples = _samples([*paths, tmp_path / "0001_c1s1_000001_00.jpg"])
    a = embed_samples(inf, samples, batch_size=2, workers=1)
    b = embed_samples(inf, samples, batch_size=2)
    assert a.paths == b.paths and a.skipped == b.skipped and len(a.skipped) == 1
    np.testing.assert_allclose(a.features, b.features, atol=1e-6)


# --- disk cache --------------------------------------------------------------------------
def test_cache_hit_skips_the_model_and_is_memory_mapped(inf, tmp_path):
    paths = _images(tmp_path / "imgs", 4)
    (tmp_path / "imgs" / "0001_c1s1_000009_00.jpg").write_text("bad")
    samples = _samples([*paths, tmp_path / "imgs" / "0001_c1s1_000009_00.jpg"])
    cache = tmp_path / "cache"
    first = embed_samples(inf, samples, batch_size=2, cache_dir=cache)
    assert not first.from_cache and isinstance(first.features, np.memmap) and not first.features.flags.writeable
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npy"]  # no temporary files left
    boom = dataclasses.replace(inf, model=_Boom().eval())
    second = embed_samples(boom, samples, batch_size=3, cache_dir=cache)
    assert second.from_cache and isinstance(second.features, np.memmap)
    np.testing.assert_array_equal(second.features, first.features)
    assert second.paths == first.paths and second.skipped == first.skipped and len(second.skipped) == 1
    assert second.pids.tolist() == first.pids.tolist() and second.camids.tolist() == first.camids.tolist()
    np.testing.assert_allclose(first.features, embed_samples(inf, samples[:4]).features, atol=1e-6)
    with pytest.raises(AssertionError, match="model ran"):  # flip is part of the key
        embed_samples(boom, samples, cache_dir=cache, flip=True)


def test_cache_invalidated_by_file_size_mtime_and_checkpoint(inf, tmp_path):
    paths = _images(tmp_path / "imgs", 3)
    samples, cache = _samples(paths), tmp_path / "cache"
    embed_samples(inf, samples, cache_dir=cache)
    boom = dataclasses.replace(inf, model=_Boom().eval())
    assert embed_samples(boom, samples, cache_dir=cache).from_cache
    st = os.stat(paths[0])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same bytes, new mtime
    with pytest.raises(AssertionError, match="model ran"):
        embed_samples(boom, samples, cache_dir=cache)
    after_touch = embed_samples(inf, samples, cache_dir=cache)
    assert not after_touch.from_cache and embed_samples(boom, samples, cache_dir=cache).from_cache
    Image.new("RGB", (16, 32), (9, 9, 9)).save(paths[1])  # new content and size
    changed = embed_samples(inf, samples, cache_dir=cache)
    assert not changed.from_cache and float(np.abs(changed.features[1] - after_touch.features[1]).max()) > 1e-3
    other = load_inference(_save(tmp_path / "other.pt", seed=1), device="cpu")
    assert other.checkpoint_sha != inf.checkpoint_sha
    new_ckpt = embed_samples(other, samples, cache_dir=cache)
    assert not new_ckpt.from_cache and new_ckpt.checkpoint_sha == other.checkpoint_sha
    assert float(np.abs(new_ckpt.features - changed.features).max()) > 1e-3
    assert len(list(cache.glob("*.npy"))) == 4


def test_failure_mid_way_leaves_no_cache_files(inf, tmp_path):
    samples, cache = _samples(_images(tmp_path / "imgs", 4)), tmp_path / "cache"
    calls = []

    class FailSecond(torch.nn.Module):
        def forward(self, x):
            calls.append(len(x))
            if len(calls) == 2:
                raise RuntimeError("out of memory (simulated)")
            return inf.model(x)

    with pytest.raises(RuntimeError, match="simulated"):
        embed_samples(dataclasses.replace(inf, model=FailSecond().eval()), samples, batch_size=2, cache_dir=cache)
    assert calls == [2, 2] and list(cache.iterdir()) == []  # the temporary memmap was removed
    assert not embed_samples(inf, samples, batch_size=2, cache_dir=cache).from_cache


@pytest.mark.parametrize("damage", ["truncate_npy", "garbage_json", "drop_npy"])
def test_corrupt_cache_is_rebuilt(inf, tmp_path, damage):
    samples, cache = _samples(_images(tmp_path / "imgs", 3)), tmp_path / "cache"
    good = np.array(embed_samples(inf, samples, cache_dir=cache).features)
    npy, meta = next(cache.glob("*.npy")), next(cache.glob("*.json"))
    assert json.loads(meta.read_text())["paths"] == [s.path for s in samples]
    if damage == "truncate_npy":
        npy.write_bytes(npy.read_bytes()[:200])
    elif damage == "garbage_json":
        meta.write_text("{not json")
    else:
        npy.unlink()
    with pytest.warns(UserWarning, match="ignoring unreadable embedding cache entry"):
        rebuilt = embed_samples(inf, samples, cache_dir=cache)
    assert not rebuilt.from_cache
    np.testing.assert_allclose(rebuilt.features, good, atol=1e-6)
    again = embed_samples(dataclasses.replace(inf, model=_Boom().eval()), samples, cache_dir=cache)
    assert again.from_cache and isinstance(again, Embeddings)
    np.testing.assert_array_equal(again.features, rebuilt.features)
