"""The CLI's default feature cache: time of a second ``esnet eval`` / ``esnet embed`` ÷ the first.

``esnet eval``, ``embed`` and ``search`` keep gallery (and query) features in the dashboard's
cache by default (``$ESNET_CACHE_DIR``; ``--no-cache`` turns it off), so a second call on the
same checkpoint and images reads them back instead of embedding again. This runs each command
twice as a user would (a new process each time, wall clock including Python and torch start-up)
against a fresh, empty cache folder and prints second ÷ first, measured in one run.

The demo data is generated with ``--ids`` identities into a temporary folder, so the figure can
be taken at a small size.

    nice -n 19 python benchmarks/cli_cache.py [--checkpoint assets/demo_runs/esnet-p --ids 120]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from esnet.data.demo import generate_demo

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one CLI process; raises with its stderr when it fails."""
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(REPO / "assets" / "demo_runs" / "esnet-p"),
                    help="run directory or checkpoint file")
    ap.add_argument("--ids", type=int, default=120, help="demo identities to generate (even, >= 10)")
    ap.add_argument("--commands", nargs="+", choices=("eval", "embed"), default=["eval", "embed"])
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="esnet-cli-cache-") as tmp:
        root = Path(tmp) / "demo"
        generate_demo(root, num_ids=args.ids, seed=0)
        for command in args.commands:
            env = {**os.environ, "ESNET_CACHE_DIR": str(Path(tmp) / f"cache-{command}")}  # the default cache, empty
            cmd = [sys.executable, "-m", "esnet.cli", command, "--checkpoint", args.checkpoint,
                   "--dataset", "demo", "--root", str(root)]
            if command == "embed":
                cmd += ["--split", "gallery", "--out", str(Path(tmp) / "gallery.npz")]
            first, second = timed(cmd, env), timed(cmd, env)
            images = sum(1 for split in ("query", "bounding_box_test") if command == "eval" or split != "query"
                         for _ in (root / split).iterdir())
            print(f"esnet {command} ({images} images): first {first:.1f} s, second {second:.1f} s; "
                  f"cached-CLI ratio second / first = {second / first:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
