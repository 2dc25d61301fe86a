"""Speed and exactness of ``esnet.metrics.evaluate`` against a per-query loop.

Builds a Market-1501-sized random problem (identity centres + noise, junk and
distractor gallery images in Market's proportions, Market-like cameras), then times
``evaluate`` and ``reference_evaluate`` (the textbook loop below, one argsort per
query row) in the same run, and prints times, speed ratios, the largest differences
of mAP / CMC / mINP / per-query AP, and the peak extra memory of ``evaluate``.

    python benchmarks/eval_speed.py [--queries 3368 --gallery 19732 --ids 751 --cams 6 --seed 0]

The loop is timed twice: with numpy's default argsort (quicksort, what typical
reference code does) and with a stable argsort (ties by gallery index, the order
``evaluate`` defines). float32 distances do tie now and then; quicksort orders those
ties arbitrarily, so only the stable run must agree exactly.

``reference_evaluate`` is also the reference of tests/test_metrics.py (one copy).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

# Market-1501 gallery (bounding_box_test): 19,732 images, 3,819 junk (-1), 2,798 distractors (0).
JUNK_FRACTION = 3819 / 19732
DISTRACTOR_FRACTION = 2798 / 19732


def reference_evaluate(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    *,
    same_camera: bool = False,
    sort_kind: str = "stable",
) -> dict[str, object]:
    """Textbook CMC / mAP / mINP: one query at a time, one argsort per row.

    Same protocol as ``esnet.metrics.evaluate``: junk (pid -1) and, unless
    ``same_camera``, same-id-same-camera gallery items are removed; queries with no
    remaining correct match are skipped. ``sort_kind="stable"`` orders ties by
    gallery index, as ``evaluate`` does; numpy's default ``"quicksort"`` (what typical
    code uses) orders ties arbitrarily.

    Args:
        distmat: (Q, G) distances. q_pids, q_camids: (Q,). g_pids, g_camids: (G,).
    Returns:
        dict with cmc (max_rank,), mAP, mINP, num_valid_queries and per-query ap (NaN
        if skipped), first_hit, hardest_positive (-1 if skipped), num_positives.
    """
    num_q = distmat.shape[0]
    ap = np.full(num_q, np.nan)
    first_hit = np.full(num_q, -1, dtype=np.int64)
    hardest = np.full(num_q, -1, dtype=np.int64)
    num_pos = np.zeros(num_q, dtype=np.int64)
    all_cmc, all_inp = [], []
    for i in range(num_q):
        order = np.argsort(distmat[i], kind=sort_kind)
        pids, cams = g_pids[order], g_camids[order]
        remove = pids == -1
        if not same_camera:
            remove |= (pids == q_pids[i]) & (cams == q_camids[i])
        matches = (pids[~remove] == q_pids[i]).astype(np.int64)  # 1 where correct, in rank order
        if not matches.any():
            continue
        hits = np.flatnonzero(matches)
        cum = matches.cumsum()
        precision = cum / np.arange(1, matches.size + 1)
        ap[i] = (precision * matches).sum() / matches.sum()
        first_hit[i], hardest[i], num_pos[i] = hits[0], hits[-1], hits.size
        all_inp.append(hits.size / (hits[-1] + 1))
        cmc = np.minimum(cum, 1)[:max_rank]
        all_cmc.append(np.pad(cmc, (0, max_rank - cmc.size), constant_values=1))
    none = not all_cmc  # no valid query: undefined metrics as NaN
    return {
        "cmc": np.full(max_rank, np.nan) if none else np.mean(np.asarray(all_cmc, dtype=np.float64), axis=0),
        "mAP": math.nan if none else float(np.nanmean(ap)),
        "mINP": math.nan if none else float(np.mean(all_inp)),
        "num_valid_queries": len(all_cmc),
        "ap": ap,
        "first_hit": first_hit,
        "hardest_positive": hardest,
        "num_positives": num_pos,
    }


def make_problem(
    queries: int, gallery: int, ids: int, cams: int, seed: int, *, dim: int = 128, noise: float = 1.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random features of a Market-like split.

    Every identity 1..ids is seen by 2..cams cameras; its gallery images fall in
    those cameras; queries are (identity, camera) pairs like Market's one query per
    identity per camera. Junk (-1, ignored) and distractors (0, unrelated people)
    fill the gallery in Market's proportions. Feature = identity centre + noise.

    Returns:
        qf (Q, dim), gf (G, dim) float32, q_pids, g_pids, q_camids, g_camids int64.
    """
    if ids < 1 or cams < 2:
        raise ValueError(f"need ids >= 1 and cams >= 2, got ids={ids}, cams={cams}")
    rng = np.random.default_rng(seed)
    # Camera sets: identity p uses the cameras where seen[p] is True (2..cams of them).
    n_seen = rng.integers(2, cams + 1, size=ids + 1)
    seen = np.argsort(rng.random((ids + 1, cams)), axis=1) < n_seen[:, None]  # (ids+1, cams)

    def camera_of(pids: np.ndarray) -> np.ndarray:
        score = np.where(seen[pids], rng.random((pids.size, cams)), -1.0)
        return np.argmax(score, axis=1).astype(np.int64)

    n_junk = round(gallery * JUNK_FRACTION)
    n_distractor = round(gallery * DISTRACTOR_FRACTION)
    n_id = gallery - n_junk - n_distractor
    g_pids = np.concatenate([
        np.full(n_junk, -1), np.zeros(n_distractor, dtype=np.int64),
        np.arange(n_id) % ids + 1,  # every identity in the gallery
    ]).astype(np.int64)
    g_camids = np.concatenate([
        rng.integers(0, cams, n_junk + n_distractor), camera_of(g_pids[n_junk + n_distractor:]),
    ]).astype(np.int64)
    pair_pid, pair_cam = np.nonzero(seen[1:])
    pair_pid = pair_pid + 1
    pick = rng.choice(pair_pid.size, size=queries, replace=queries > pair_pid.size)
    q_pids, q_camids = pair_pid[pick].astype(np.int64), pair_cam[pick].astype(np.int64)

    centres = rng.standard_normal((ids + 1, dim)).astype(np.float32)

    def features(pids: np.ndarray) -> np.ndarray:
        f = noise * rng.standard_normal((pids.size, dim)).astype(np.float32)
        person = pids > 0
        f[person] += centres[pids[person]]
        junk = pids == -1  # bad crops of some identity
        f[junk] += 0.5 * centres[rng.integers(1, ids + 1, int(junk.sum()))]
        distractor = pids == 0  # unrelated people: their own centre each
        f[distractor] += rng.standard_normal((int(distractor.sum()), dim)).astype(np.float32)
        return f

    return features(q_pids), features(g_pids), q_pids, g_pids, q_camids, g_camids


def _peak_traced_mib(fn) -> tuple[object, float]:
    """Run fn() under tracemalloc: (result, peak of memory allocated during the call, MiB).

    numpy reports its buffers to tracemalloc, and ``evaluate`` is numpy-only, so this
    is its whole working memory (the distmat input, allocated before, is not counted).
    """
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return out, (peak - base) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=3368)
    parser.add_argument("--gallery", type=int, default=19732)
    parser.add_argument("--ids", type=int, default=751)
    parser.add_argument("--cams", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--noise", type=float, default=1.5, help="noise std around identity centres")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, at most 2")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of evaluate (best is reported)")
    parser.add_argument("--skip-stable", action="store_true", help="skip the stable-sort reference")
    args = parser.parse_args(argv)

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:  # run as a script from anywhere
        sys.path.insert(0, root)
    from esnet.metrics import evaluate, pairwise_distance

    torch.set_num_threads(max(1, min(args.threads, 2)))
    qf, gf, q_pids, g_pids, q_camids, g_camids = make_problem(
        args.queries, args.gallery, args.ids, args.cams, args.seed, dim=args.dim, noise=args.noise
    )
    distmat = pairwise_distance(qf, gf, "cosine")
    del qf, gf
    inputs = (distmat, q_pids, g_pids, q_camids, g_camids)
    print(f"problem: {args.queries} queries x {args.gallery} gallery, {args.ids} ids, {args.cams} cams, "
          f"seed {args.seed}, noise {args.noise}, distmat {distmat.dtype} {distmat.nbytes / 2**20:.0f} MiB, "
          f"torch threads {torch.get_num_threads()}")

    evaluate(distmat[:8], q_pids[:8], g_pids, q_camids[:8], g_camids)  # warm-up (lazy torch init)
    res, peak_mib = _peak_traced_mib(lambda: evaluate(*inputs))
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        evaluate(*inputs)
        times.append(time.perf_counter() - t0)
    t_fast = min(times)
    print(f"evaluate:                     {t_fast:8.3f} s (best of {args.repeats}: "
          f"{', '.join(f'{t:.3f}' for t in times)}), peak traced memory {peak_mib:.1f} MiB")
    print(f"  mAP {res.mAP:.4f}  mINP {res.mINP:.4f}  R1 {res.cmc[0]:.4f}  R5 {res.cmc[4]:.4f}  "
          f"R10 {res.cmc[9]:.4f}  valid queries {res.num_valid_queries}")

    kinds = ["quicksort"] + ([] if args.skip_stable else ["stable"])
    for kind in kinds:
        t0 = time.perf_counter()
        ref = reference_evaluate(*inputs, sort_kind=kind)
        t_ref = time.perf_counter() - t0
        ap_diff = np.nanmax(np.abs(res.ap - ref["ap"]))
        print(f"reference loop ({kind:9s}):   {t_ref:8.3f} s  -> evaluate is {t_ref / t_fast:5.1f}x faster")
        print(f"  max |diff|: mAP {abs(res.mAP - ref['mAP']):.2e}  CMC {np.max(np.abs(res.cmc - ref['cmc'])):.2e}  "
              f"mINP {abs(res.mINP - ref['mINP']):.2e}  per-query AP {ap_diff:.2e}  "
              f"first_hit mismatches {int(np.sum(res.first_hit != ref['first_hit']))}  "
              f"valid queries {ref['num_valid_queries']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
