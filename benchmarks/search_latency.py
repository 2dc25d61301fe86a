"""Warm latency of one uploaded query against a 20k gallery, and gallery embedding throughput.

Latency: the dashboard's path for one upload, ``bytes -> api.read_image -> api.search_images``
(preprocess, embed, exact top-k), timed ``--runs`` times after one untimed warm-up, against a
gallery whose features come from the cache (``api.load_gallery(..., cache_dir=...)``):

* Market-1501's gallery (``$ESNET_MARKET1501`` or .cache/market1501, ``bounding_box_test``,
  19,732 images) when present: embedded once into ``--cache-dir`` (slow the first time), then
  read back from the cache;
* else the demo gallery's features replicated (with a little noise) to ``--gallery-size`` rows.

Throughput: images/s of ``api.embed`` over ``--throughput-images`` gallery files (decode,
validate, resize, normalise in the DataLoader, then the model), against the model alone on
the same images already preprocessed into tensors, same batch size, the two
timed alternately over ``--chunks`` parts; the ratio is pipeline / model-alone.

    python benchmarks/search_latency.py [--checkpoint assets/demo_runs/esnet-p --runs 20 --threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from esnet import api
from esnet.embedding import Embeddings
from esnet.search import build_index

REPO = Path(__file__).resolve().parents[1]
BATCH = 64  # api.embed's default batch size


def market_gallery() -> Path | None:
    root = Path(os.environ.get("ESNET_MARKET1501", REPO / ".cache" / "market1501"))
    g = root / "bounding_box_test"
    return g if g.is_dir() else None


def replicated_gallery(inf, size: int, seed: int) -> api.Gallery:
    """The demo gallery's features, repeated with small noise (renormalised) to ``size`` rows."""
    demo = api.embed(inf, dataset="demo", root=api.ensure_demo_data())
    base = np.asarray(demo.features)  # (n, D)
    rng = np.random.default_rng(seed)
    rows = base[np.arange(size) % len(base)] + rng.normal(0, 0.01, (size, base.shape[1])).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)  # (size, D)
    reps = np.arange(size) // len(base)
    paths = tuple(f"{demo.paths[i % len(base)]}#{r}" for i, r in zip(range(size), reps))
    emb = Embeddings(features=rows, paths=paths, pids=demo.pids[np.arange(size) % len(base)],
                     camids=demo.camids[np.arange(size) % len(base)], cameras=demo.cameras[np.arange(size) % len(base)],
                     skipped=(), checkpoint_sha=inf.checkpoint_sha,
                     flip=False, from_cache=False)
    return api.Gallery(embeddings=emb, index=build_index(rows, paths=list(paths), pids=emb.pids, camids=emb.camids))


def latency(inf, gallery: api.Gallery, data: bytes, runs: int, topk: int) -> list[float]:
    def once() -> None:
        image = api.read_image(data, name="upload.jpg")
        api.search_images(inf, gallery, [image], topk=topk)

    once()  # warm-up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        once()
        out.append(1e3 * (time.perf_counter() - t))
    return out


def _embed_folder_s(inf, files: list[Path]) -> tuple[int, float]:
    """(images embedded, seconds) of ``api.embed`` over a temporary folder of symlinks to ``files``."""
    with tempfile.TemporaryDirectory() as d:
        for f in files:
            os.symlink(f.resolve(), Path(d) / f.name)
        t = time.perf_counter()
        emb = api.embed(inf, folder=d, batch_size=BATCH)
        return len(emb.paths), time.perf_counter() - t


def _model_s(inf, batches: list[torch.Tensor]) -> float:
    """Seconds of the model alone (esnet.embedding's per-batch step) on ready (b, 3, H, W) batches."""
    t = time.perf_counter()
    with torch.no_grad():
        for x in batches:
            F.normalize(inf.model(x.to(inf.device)).embedding.float(), dim=1).cpu()  # (b, D)
    return time.perf_counter() - t


def throughput(inf, files: list[Path], chunks: int) -> tuple[float, float]:
    """(pipeline img/s, model-alone img/s) over ``files``.

    The files are split into ``chunks`` parts and the two measurements alternate part by
    part, so a change in load from other processes hits both about equally.
    """
    _embed_folder_s(inf, files[:BATCH])  # warm-up: DataLoader, model, allocator
    _model_s(inf, [inf.preprocess([api.read_image(f) for f in files[:BATCH]])])
    n_pipe = n_model = 0
    pipe_s = model_s = 0.0
    size = -(-len(files) // chunks)
    for part in (files[i:i + size] for i in range(0, len(files), size)):
        n, s = _embed_folder_s(inf, part)
        n_pipe, pipe_s = n_pipe + n, pipe_s + s
        batches = [inf.preprocess([api.read_image(f) for f in part[i:i + BATCH]]) for i in range(0, len(part), BATCH)]
        model_s += _model_s(inf, batches)
        n_model += sum(len(x) for x in batches)
    return n_pipe / pipe_s, n_model / model_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(REPO / "assets" / "demo_runs" / "esnet-p"))
    p.add_argument("--cache-dir", default=str(api.default_cache_dir()), help="gallery feature cache")
    p.add_argument("--gallery-size", type=int, default=20_000, help="rows when replicating the demo gallery")
    p.add_argument("--replicate", action="store_true", help="use replicated demo features even if Market exists")
    p.add_argument("--throughput-images", type=int, default=2000)
    p.add_argument("--chunks", type=int, default=4, help="alternate pipeline / model-alone timing over this many parts")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: as set)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    inf = api.load_inference(args.checkpoint, device="cpu")
    market = None if args.replicate else market_gallery()
    print(f"checkpoint {inf.checkpoint} ({inf.config.model.backbone}, input {inf.size[0]}x{inf.size[1]}, "
          f"D {inf.model.embedding_dim}); torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}, python {sys.version.split()[0]}")

    t = time.perf_counter()
    if market is not None:
        gallery = api.load_gallery(inf, folder=market, cache_dir=args.cache_dir)
        source = f"Market-1501 gallery {market} ({len(gallery)} images, {len(gallery.embeddings.skipped)} skipped)"
        files = sorted(market.glob("*.jpg"))
        query_file = sorted((market.parent / "query").glob("*.jpg"))[0]
    else:
        gallery = replicated_gallery(inf, args.gallery_size, args.seed)
        demo = api.ensure_demo_data()
        source = f"demo gallery features replicated to {len(gallery)} rows"
        files = sorted((demo / "bounding_box_test").glob("*.jpg"))
        query_file = sorted((demo / "query").glob("*.jpg"))[0]
    cached = ("from cache" if gallery.embeddings.from_cache else
              "computed now (cached for the next run)" if market is not None else "made")
    print(f"gallery: {source}; features {cached} in {time.perf_counter() - t:.1f} s; "
          f"index backend {gallery.index.backend}")

    ms = latency(inf, gallery, query_file.read_bytes(), args.runs, args.topk)
    print(f"warm 1-query latency (bytes -> read_image -> embed -> top-{args.topk} of {len(gallery)}): "
          f"median {statistics.median(ms):.1f} ms (min {min(ms):.1f}, max {max(ms):.1f}, {args.runs} runs); "
          f"target <= 150 ms; load average {os.getloadavg()[0]:.1f}")

    rng = np.random.default_rng(args.seed)
    subset = [files[i] for i in sorted(rng.choice(len(files), min(args.throughput_images, len(files)),
                                                  replace=False))]
    pipe, model = throughput(inf, subset, args.chunks)
    print(f"embedding throughput over {len(subset)} of the {len(files)} gallery files, batch {BATCH}: "
          f"pipeline (api.embed: files -> DataLoader -> model) {pipe:.0f} img/s, model alone on ready tensors "
          f"{model:.0f} img/s, ratio {pipe / model:.2f} (target >= 0.9); load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
