"""Cost of the Evaluate page's test-feature switch, as a ratio to one embedding pass of the gallery.

The Evaluate page scores a ``concat`` run with its global or erase branch alone by cutting that
branch out of the cached ``concat`` report (``api.feature_view``: slice, re-normalise, distance
matrix, protocol, ROC), instead of embedding everything again. Measured in one run:

* one embedding pass of the gallery (``api.embed``, no cache: decode, preprocess, model);
* the switch: ``api.feature_view(report, "global")`` and ``(..., "erase")`` on the cached
  ``concat`` report, median of ``--repeats``.

Target: switch / gallery pass < 10 %. The demo data is generated with ``--ids`` identities (half
of them query + gallery) into a temporary folder, so the figure can be taken at a small size.

    nice -n 19 python benchmarks/feature_switch.py [--checkpoint assets/demo_runs/esnet-p --ids 120 --threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from esnet import api
from esnet.data.demo import generate_demo

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.10


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(REPO / "assets" / "demo_runs" / "esnet-p"),
                    help="a run directory or checkpoint whose model has both branches")
    ap.add_argument("--ids", type=int, default=120, help="demo identities to generate (even, >= 10)")
    ap.add_argument("--repeats", type=int, default=3, help="timed switches per branch (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    torch.set_num_threads(args.threads)
    inf = api.load_inference(args.checkpoint, device="cpu", test_feature="concat")
    with tempfile.TemporaryDirectory(prefix="esnet-feature-switch-") as tmp:
        root, cache = Path(tmp) / "demo", Path(tmp) / "cache"
        generate_demo(root, num_ids=args.ids, seed=0)
        start = time.perf_counter()
        gallery = api.embed(inf, dataset="demo", root=root, split="gallery", cache_dir=cache)
        embed_s = time.perf_counter() - start
        report = api.evaluate_checkpoint(inf, "demo", root, cache_dir=cache)  # gallery from the cache
        assert report.gallery.from_cache and report.test_feature == "concat", "the concat report must reuse the pass"
        switch: dict[str, float] = {}
        for feature in ("global", "erase"):
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                view = api.feature_view(report, feature)
                times.append(time.perf_counter() - start)
            switch[feature] = statistics.median(times)
            print(f"{feature:>6}: mAP {100 * view.summary['mAP']:.2f} (concat {100 * report.summary['mAP']:.2f}), "
                  f"dim {view.query.features.shape[1]} of {report.query.features.shape[1]}")
    n_q, n_g = report.num_query, len(gallery.paths)
    print(f"{n_q} query x {n_g} gallery images, {args.threads} threads")
    print(f"one gallery embedding pass: {embed_s:.2f} s ({n_g / embed_s:.0f} img/s)")
    worst = max(switch.values())
    for feature, s in switch.items():
        print(f"switch to {feature}: {1000 * s:.0f} ms = {100 * s / embed_s:.1f} % of the gallery pass")
    verdict = "meets" if worst / embed_s < TARGET else "MISSES"
    print(f"feature-switch ratio (slowest switch / gallery pass): {worst / embed_s:.3f} "
          f"({verdict} the target < {TARGET:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
