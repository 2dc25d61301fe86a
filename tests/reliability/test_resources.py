"""Memory bounds: ``evaluate`` at Market-1501 size within its documented working set; cached
embeddings streamed to a memory-mapped file on disk.

Peak memory is measured with tracemalloc, which numpy reports its array buffers to, from
after the inputs exist: it is the working memory *beyond the inputs*.
"""
from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from esnet import metrics
from esnet.data.types import Sample
from esnet.embedding import embed_samples, load_inference
from esnet.metrics import CHUNK_BYTES, evaluate
from tests.synthetic import random_checkpoint

Q, G = 3368, 19732  # Market-1501 query x gallery
MiB = 2**20


@pytest.fixture(scope="module")
def market_ids() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    return (rng.integers(1, 751, Q), rng.integers(-1, 751, G), rng.integers(0, 6, Q), rng.integers(0, 6, G))


def _random(rng: np.random.Generator, ids) -> np.ndarray:
    return rng.random((Q, G), dtype=np.float32)


def _trained(rng: np.random.Generator, ids) -> np.ndarray:
    d = rng.random((Q, G), dtype=np.float32)
    d[ids[0][:, None] == ids[1][None, :]] *= 0.05  # correct matches near: the sparse path
    return d


def _fp16(rng: np.random.Generator, ids) -> np.ndarray:
    return rng.random((Q, G), dtype=np.float32).astype(np.float16)  # ~1k distinct values: ties everywhere


def _fortran(rng: np.random.Generator, ids) -> np.ndarray:
    return np.asfortranarray(rng.random((Q, G), dtype=np.float32))  # e.g. the transpose of a (G, Q) matrix


KINDS: dict[str, tuple[str, Callable]] = {
    "random_fp32": ("random float32 distances (every row value-sorted: the dense path)", _random),
    "trained_fp32": ("float32 distances with near correct matches (the sparse path)", _trained),
    "fp16_ties": ("float16 distances, as from AMP features (many exact ties)", _fp16),
    "fortran_fp32": ("column-major (Fortran-order) float32 matrix", _fortran),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_evaluate_market_size_within_documented_bound(kind: str, market_ids, record) -> None:
    """evaluate on a 3,368 x 19,732 distmat stays under CHUNK_BYTES (256 MiB) beyond its inputs."""
    label, make = KINDS[kind]
    dist = make(np.random.default_rng(1), market_ids)
    tracemalloc.start()
    try:
        result = evaluate(dist, *market_ids)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.num_valid_queries == Q and 0.0 < result.mAP <= 1.0
    assert peak < CHUNK_BYTES, f"{kind}: peak {peak / MiB:.0f} MiB beyond the inputs > {CHUNK_BYTES / MiB:.0f} MiB"
    assert "256 MiB beyond the inputs" in " ".join(metrics.evaluate.__doc__.split())
    record(f"{Q} x {G} {label}", "metrics.evaluate", f"peak below {CHUNK_BYTES // MiB} MiB beyond the inputs "
           f"(input {dist.nbytes // MiB} MiB)")


# --- embedding cache: a memmap on disk --------------------------------------------------------
@pytest.fixture(scope="module")
def inf(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("ckpt")
    return load_inference(random_checkpoint(d / "m.pt"), device="cpu")


def test_cached_embeddings_stream_to_a_memmap(inf, tmp_path: Path, record) -> None:
    """With cache_dir the features are written into, and returned as, a read-only .npy memmap of exactly k x D."""
    rng = np.random.default_rng(2)
    paths = []
    for i in range(20):
        p = tmp_path / "imgs" / f"{i:04d}_c1s1_000001_00.jpg"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    (tmp_path / "imgs" / "0005_c1s1_000001_00.jpg").write_bytes(b"broken")  # one file to skip
    cache = tmp_path / "cache"
    samples = [Sample(p, i, 0, "gallery") for i, p in enumerate(paths)]
    emb = embed_samples(inf, samples, batch_size=8, cache_dir=cache)
    feats = emb.features
    assert isinstance(feats, np.memmap) and not feats.flags.writeable
    assert feats.shape[0] == 19 and feats.dtype == np.float32 and len(emb.skipped) == 1
    files = sorted(cache.iterdir())
    npy = [f for f in files if f.suffix == ".npy"]
    assert [f.suffix for f in files] == [".json", ".npy"], files  # no temporary file left behind
    assert Path(feats.filename) == npy[0].resolve()
    header = npy[0].stat().st_size - feats.nbytes
    assert 0 < header <= 4096 and feats.nbytes == 19 * feats.shape[1] * 4  # exactly the kept rows, no slack
    assert np.allclose(np.linalg.norm(np.asarray(feats), axis=1), 1.0, atol=1e-5)
    again = embed_samples(inf, samples, batch_size=8, cache_dir=cache)
    assert again.from_cache and isinstance(again.features, np.memmap)
    assert np.array_equal(np.asarray(again.features), np.asarray(feats))
    record("20 images (1 unreadable) embedded with cache_dir", "embed_samples",
           f"read-only np.memmap on disk, {feats.shape[0]} x {feats.shape[1]} float32, file = header + rows")
