"""esnet's evaluation and re-ranking against torchreid's (the peer), on the same matrices.

1. Ranking: ``esnet.metrics.evaluate`` and torchreid's ``evaluate_rank`` (its Cython version
   when a compiled ``rank_cy`` is importable, else its Python loop) on one Market-1501-sized
   cosine distance matrix: 3,368 queries x 15,913 gallery images (Market's test gallery
   without its 3,819 junk images, which torchreid's loader drops). Prints both times and the
   largest differences of mAP and CMC.
2. Re-ranking: ``esnet.metrics.re_ranking`` (dense matrices) and ``re_ranking_features``
   against torchreid's ``re_ranking`` on a subset (``--rerank-queries`` x ``--rerank-gallery``;
   torchreid's version holds several (N, N) float32 matrices and loops in Python), with the
   largest distance difference, the mAP of each, and the times.

    python benchmarks/peer_eval.py [--queries 3368 --gallery 19732 --rerank-queries 500 --rerank-gallery 2500]

Exits 0 with a message when torchreid is not installed (``pip install --no-deps torchreid==0.2.5``;
make test installs it from requirements-peers.txt; that package ships no compiled Cython, so its
Python loop runs). Measured on 2 CPU cores shared with two training runs, Market size: evaluate 0.5 s,
torchreid's Python evaluate_rank 86 s (a review measured its Cython version at 5.0 s), mAP diff 1e-8;
re-ranking 500 x 2,500: 0.35 s dense / 1.4 s from features vs torchreid's 1.8 s, max diff 3e-7.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"esnet_bench_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=3368)
    parser.add_argument("--gallery", type=int, default=19732, help="before dropping junk (Market: 19,732 -> 15,913)")
    parser.add_argument("--ids", type=int, default=751)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--rerank-queries", type=int, default=500, help="0 = skip the re-ranking comparison")
    parser.add_argument("--rerank-gallery", type=int, default=2500)
    args = parser.parse_args(argv)
    for flag in ("queries", "gallery", "ids", "dim"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    peers = _load("peers")
    rank, rerank = peers.torchreid_module("rank"), peers.torchreid_module("rerank")
    if rank is None:
        print(f"skipped: {peers.TORCHREID_ABSENT}")
        return 0
    torch.set_num_threads(args.threads)

    from esnet import metrics

    bench = _load("eval_speed")
    qf, gf, q_pids, g_pids, q_cams, g_cams = bench.make_problem(args.queries, args.gallery, args.ids, 6, args.seed,
                                                                dim=args.dim)
    keep = g_pids != -1  # torchreid's Market loader drops junk
    gf, g_pids, g_cams = gf[keep], g_pids[keep], g_cams[keep]
    dist = metrics.pairwise_distance(qf, gf)  # (Q, G) float32
    print(f"ranking: {dist.shape[0]} x {dist.shape[1]} cosine distances")
    ours, t_ours = _timed(lambda: metrics.evaluate(dist, q_pids, g_pids, q_cams, g_cams, max_rank=50))
    kind = "Cython" if rank.IS_CYTHON_AVAI else "Python"
    (cmc, m_ap), t_peer = _timed(lambda: rank.evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, max_rank=50))
    print(f"  esnet evaluate           {t_ours:8.3f} s   mAP {100 * ours.mAP:.4f}  R1 {100 * ours.cmc[0]:.4f}")
    print(f"  torchreid evaluate_rank  {t_peer:8.3f} s   mAP {100 * m_ap:.4f}  R1 {100 * cmc[0]:.4f}  ({kind})")
    print(f"  max |mAP diff| {abs(ours.mAP - m_ap):.2e}   max |CMC diff| {np.abs(ours.cmc - cmc).max():.2e}"
          f"   speed-up x{t_peer / t_ours:.1f}")

    if args.rerank_queries:
        nq, ng = min(args.rerank_queries, len(qf)), min(args.rerank_gallery, len(gf))
        rng = np.random.default_rng(args.seed)  # a random subset: the gallery is ordered distractors first
        qi, gi = np.sort(rng.choice(len(qf), nq, replace=False)), np.sort(rng.choice(len(gf), ng, replace=False))
        sq, sg = qf[qi], gf[gi]
        qg, qq, gg = metrics.pairwise_distance(sq, sg), metrics.pairwise_distance(sq, sq), metrics.pairwise_distance(sg, sg)
        print(f"re-ranking (k1=20, k2=6, lambda=0.3): {nq} x {ng}")
        ref, t_ref = _timed(lambda: rerank.re_ranking(qg, qq, gg, k1=20, k2=6, lambda_value=0.3))
        dense, t_dense = _timed(lambda: metrics.re_ranking(qg, qq, gg))
        feat, t_feat = _timed(lambda: metrics.re_ranking_features(sq, sg))
        for name, d, t in (("torchreid re_ranking", ref, t_ref), ("esnet re_ranking", dense, t_dense),
                           ("esnet re_ranking_features", feat, t_feat)):
            res = metrics.evaluate(d, q_pids[qi], g_pids[gi], q_cams[qi], g_cams[gi])
            diff = "" if d is ref else f"   max |dist - torchreid| {np.abs(d - ref).max():.2e}"
            print(f"  {name:<27}{t:8.3f} s   mAP {100 * res.mAP:.4f}{diff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
