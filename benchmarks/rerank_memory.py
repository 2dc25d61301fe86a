"""Peak memory and time of ``esnet.metrics.re_ranking_features`` as the set grows.

For each size N = Q + G (queries a fixed fraction of N, MSMT17's by default) it builds
Market-like random features (``eval_speed.make_problem``), re-ranks them from the features,
and reports the time and the process's peak resident memory during the call above what it
held before (Linux: the peak is reset through /proc/self/clear_refs), split into the (Q, G)
float32 output and the rest. The rest should grow linearly in N (the sparse encodings,
O(N k1^2 k2)) while the time grows as N^2 (the exact k-NN pass); the last lines extrapolate
both to MSMT17's test set (11,659 queries + 82,161 gallery = 93,820 images).

    python benchmarks/rerank_memory.py [--sizes 2000,4000,8000 --dim 256 --check-dense 4000]

``--check-dense N0`` also runs ``re_ranking`` on the dense matrices for sizes <= N0 and
prints the largest difference (float32 rounding: ~1e-7).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

MSMT17_QUERIES, MSMT17_GALLERY = 11_659, 82_161


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"esnet_bench_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def peak_rss_mib(fn) -> tuple[object, float, float]:
    """(fn(), peak resident memory during the call above the resident memory before it (MiB), seconds)."""
    clear = Path("/proc/self/clear_refs")
    try:
        clear.write_text("5")  # resets VmHWM (the peak) to the current VmRSS
    except OSError as e:
        raise RuntimeError(f"cannot reset the peak RSS through {clear} ({e}); this benchmark needs Linux") from e
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    return out, (_status_kib("VmHWM") - before) / 1024, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,4000,8000", help="comma-separated N = Q + G")
    parser.add_argument("--query-fraction", type=float, default=MSMT17_QUERIES / (MSMT17_QUERIES + MSMT17_GALLERY))
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k1", type=int, default=20)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--check-dense", type=int, default=0, help="compare with re_ranking up to this N")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not all(s >= 50 for s in sizes):
        parser.error(f"--sizes must all be >= 50, got {sizes}")
    if not 0 < args.query_fraction < 1:
        parser.error(f"--query-fraction must be in (0, 1), got {args.query_fraction}")
    torch.set_num_threads(args.threads)

    from esnet import metrics

    bench = _load("eval_speed")
    rows = []
    print(f"{'N':>7} {'Q':>6} {'G':>7} {'time s':>8} {'peak MiB':>9} {'output MiB':>10} {'rest MiB':>9}")
    for n in sizes:
        nq = max(1, round(n * args.query_fraction))
        qf, gf, *_ = bench.make_problem(nq, n - nq, ids=max(2, n // 20), cams=6, seed=args.seed, dim=args.dim)
        out, peak, seconds = peak_rss_mib(lambda: metrics.re_ranking_features(qf, gf, k1=args.k1, k2=args.k2))
        out_mib = out.nbytes / 2**20
        rows.append((n, seconds, peak - out_mib))
        print(f"{n:>7} {nq:>6} {n - nq:>7} {seconds:>8.2f} {peak:>9.0f} {out_mib:>10.0f} {peak - out_mib:>9.0f}")
        if n <= args.check_dense:
            dense = metrics.re_ranking(metrics.pairwise_distance(qf, gf), metrics.pairwise_distance(qf, qf),
                                       metrics.pairwise_distance(gf, gf), k1=args.k1, k2=args.k2)
            print(f"        max |features - dense matrices| = {np.abs(dense - out).max():.2e}")
        del out
    if len(rows) >= 2:
        ns = np.array([r[0] for r in rows], dtype=float)
        rest = np.array([r[2] for r in rows])
        secs = np.array([r[1] for r in rows])
        slope, icept = np.polyfit(ns, rest, 1)
        n_big = MSMT17_QUERIES + MSMT17_GALLERY
        out_big = MSMT17_QUERIES * MSMT17_GALLERY * 4 / 2**20
        t_big = secs[-1] * (n_big / ns[-1]) ** 2
        if slope > 0:
            rest_big = f"~{max(slope * n_big + icept, rest.max()):.0f} MiB ({slope * 1024:.1f} KiB per image)"
        else:  # the chunk buffers (metrics.CHUNK_BYTES) dominate at these sizes
            rest_big = f"flat here (chunk buffers dominate, {rest.max():.0f} MiB); measure larger sizes to see the slope"
        print(f"MSMT17 ({MSMT17_QUERIES} x {MSMT17_GALLERY}), extrapolated: beyond the output {rest_big}; "
              f"output {out_big:.0f} MiB; time ~{t_big / 60:.0f} min at dim {args.dim} with {args.threads} threads "
              "(N^2 from the largest size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
