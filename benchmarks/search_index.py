"""Warm single-query latency of ``esnet.search`` per backend, and IVF recall@k vs exact.

Builds a random clustered gallery (``--gallery`` unit rows of ``--dim`` around
gallery/``--per-id`` identity centres, like a re-ID test set; default 20,000 x 2560,
the ES-Net MobileNetV2 concat embedding), indexes it with ``exact``, ``faiss-flat`` and
``faiss-ivf``, and prints for each: build time, the median (and min/max) of ``--runs``
timed one-query searches after one untimed warm-up, and for IVF the recall@k of
``--queries`` fresh queries against the exact top-k (|IVF hits & exact hits| / k).
Also the latency of one re-ranked query on a ``--rerank-gallery``-item exact index.

    python benchmarks/search_index.py [--gallery 20000 --dim 2560 --runs 20 --threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from esnet.search import build_index, search


def clustered(rng: np.random.Generator, n: int, dim: int, ids: int, spread: float, centres=None):
    """n unit rows around ``ids`` unit centres (noise norm ~ spread); returns (rows, centres)."""
    if centres is None:
        centres = rng.standard_normal((ids, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x *= spread / np.sqrt(dim)
    x += centres[rng.integers(0, len(centres), n)]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, centres


def latency_ms(index, query: np.ndarray, runs: int, topk: int, **kw) -> list[float]:
    search(index, query, topk=topk, **kw)  # warm-up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        search(index, query, topk=topk, **kw)
        out.append(1e3 * (time.perf_counter() - t))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gallery", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=2560, help="embedding size (2560 = 2 x 1280, MobileNetV2 concat)")
    p.add_argument("--per-id", type=int, default=25, help="gallery rows per identity cluster")
    p.add_argument("--spread", type=float, default=1.0, help="noise norm around a centre (centres are unit)")
    p.add_argument("--queries", type=int, default=200, help="queries for the IVF recall")
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--nlist", type=int, default=None)
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--rerank-gallery", type=int, default=2000, help="0 = skip the re-ranking timing")
    p.add_argument("--threads", type=int, default=None, help="torch and faiss threads (default: as set)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads is not None:
        import faiss

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    gallery, centres = clustered(rng, args.gallery, args.dim, max(1, args.gallery // args.per_id), args.spread)
    queries, _ = clustered(rng, args.queries, args.dim, 0, args.spread, centres)
    print(f"gallery {args.gallery} x {args.dim} float32 ({gallery.nbytes / 2**20:.0f} MiB), "
          f"{len(centres)} ids, torch threads {torch.get_num_threads()}, python {sys.version.split()[0]}")

    results = {}
    for backend in ("exact", "faiss-flat", "faiss-ivf"):
        kw = {"nlist": args.nlist, "nprobe": args.nprobe, "seed": args.seed} if backend == "faiss-ivf" else {}
        t = time.perf_counter()
        index = build_index(gallery, backend=backend, **kw)
        build_s = time.perf_counter() - t
        ms = latency_ms(index, queries[:1], args.runs, args.topk)
        results[backend] = search(index, queries, topk=args.topk)
        extra = f"  nlist {index.nlist} nprobe {index.nprobe}" if backend == "faiss-ivf" else ""
        print(f"{backend:>10}: build {build_s:7.2f} s   1-query search median {statistics.median(ms):8.2f} ms "
              f"(min {min(ms):.2f}, max {max(ms):.2f}, {args.runs} runs){extra}")
        del index

    exact, ivf, flat = results["exact"].indices, results["faiss-ivf"].indices, results["faiss-flat"].indices
    k = exact.shape[1]
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ivf, exact)])
    print(f"faiss-ivf recall@{k} vs exact over {len(exact)} queries: {recall:.4f}")
    print(f"faiss-flat top-{k} identical to exact for {np.mean((flat == exact).all(axis=1)):.1%} of queries")

    if args.rerank_gallery:
        small = build_index(gallery[:args.rerank_gallery], backend="exact")
        ms = latency_ms(small, queries[:1], max(1, args.runs // 5), args.topk, rerank=True)
        print(f"rerank (exact, gallery {args.rerank_gallery}): 1-query median {statistics.median(ms):.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
