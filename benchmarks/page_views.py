"""First and warm views of the dashboard's model pages on real Market-1501, as ratios to one
embedding pass of the gallery (issue 18, item 3).

Measured in one process, one run:

* one embedding pass of the gallery (``api.embed`` of the ``--run``'s checkpoint on Market's
  bounding_box_test, no cache: decode, preprocess, model);
* the FIRST view of each page (``--pages``): the router (app/main.py) in ``AppTest``, switched to
  ``pages/<page>.py``, with a cold cache: a fresh, empty ``$ESNET_CACHE_DIR`` and Streamlit's
  in-process caches cleared. Search's first view includes one upload of a real Market query;
* the WARM view: the same page opened again in a new session of the same process (every cache warm).

Only the page's own script run is timed (the router's first run on the Runs page, which every
session does before switching, is not). The runs directory must hold runs with
``checkpoints/last.pt`` (default: results/market1501, whose checkpoints ship with issue 18); the
page opens on ``--run`` (the Baseline vs ES-Net page compares the default pair, the baseline
against ``--run``). Target: warm view < 1 s.

    nice -n 10 python benchmarks/page_views.py --runs-dir /tmp/realruns --market .cache/market1501 \
        [--run l_esnet_avg_e40] [--pages rank_browser,embeddings,search,evaluate,compare]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: app/ must import as the package the router uses
    sys.path.insert(0, str(REPO))

ENTRY = str(REPO / "app" / "main.py")
TITLES = {"rank_browser": "Rank browser", "embeddings": "Embedding explorer (UMAP)", "search": "Search (1 upload)",
          "evaluate": "Evaluate", "compare": "Baseline vs ES-Net"}
WARM_TARGET_S = 1.0
TIMEOUT_S = 4 * 3600  # per script run: a first view embeds ~23k images on a busy CPU


def _problems(at) -> list[str]:
    """Exception boxes and st.error alerts on the page, as text."""
    return [str(e.value) for e in at.exception] + [str(e.value) for e in at.error]


def _query_photo(market: Path) -> Path:
    photos = sorted((market / "query").glob("*.jpg"))
    if not photos:
        raise FileNotFoundError(f"no query/*.jpg under {market}: --market must be a Market-1501 folder")
    return photos[0]


def view(page: str, market: Path) -> float:
    """Seconds of one view of ``pages/<page>.py`` in a new AppTest session (the router's first run untimed).

    Raises:
        RuntimeError: the page showed an exception or an error alert, or stopped on a sentence instead
            of its content (no model or no dataset).
    """
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(ENTRY, default_timeout=TIMEOUT_S)
    at.run()
    if at.exception:
        raise RuntimeError(f"the router failed: {_problems(at)}")
    start = time.perf_counter()
    at.switch_page(f"../pages/{page}.py").run()
    if page == "search":
        photo = _query_photo(market)
        at.file_uploader(key="search_files").set_value([(photo.name, photo.read_bytes(), "image/jpeg")]).run()
    seconds = time.perf_counter() - start
    problems = _problems(at)
    needs = [i.value for i in at.info if "needs" in i.value or "ships without" in i.value]
    if problems or needs:
        raise RuntimeError(f"{page}: the page did not show its content: {problems or needs}")
    return seconds


def _warm_up(api, inf, market: Path, folder: Path, n: int = 128) -> None:
    """Read every query and gallery file once and embed ``n`` gallery images, untimed: the first read of
    the files from disk, torch's first convolutions and the decoder's start-up would otherwise be charged
    to the timed gallery pass only (the pages come after it and find the files in the OS page cache)."""
    for split in ("query", "bounding_box_test"):
        for path in (market / split).glob("*.jpg"):
            path.read_bytes()
    folder.mkdir(parents=True)
    for src in sorted((market / "bounding_box_test").glob("*.jpg"))[:n]:
        shutil.copy(src, folder / src.name)
    api.embed(inf, folder=folder, cache_dir=None)
    shutil.rmtree(folder)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs-dir", default=str(REPO / "results" / "market1501"),
                    help="a folder of runs with checkpoints/last.pt (default: results/market1501)")
    ap.add_argument("--run", default="l_esnet_avg_e40",
                    help="the run the pages open on and whose gallery pass is timed")
    ap.add_argument("--market", default=os.environ.get("ESNET_MARKET1501") or str(REPO / ".cache" / "market1501"),
                    help="Market-1501 root (query/, bounding_box_test/); default: $ESNET_MARKET1501, "
                         "else .cache/market1501")
    ap.add_argument("--cache-dir", default=None,
                    help="where the fresh per-page caches are made (default: the system temp folder); removed after")
    ap.add_argument("--pages", default=",".join(TITLES), help=f"comma-separated, of {', '.join(TITLES)}")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args(argv)
    runs_dir, market = Path(args.runs_dir).resolve(), Path(args.market).resolve()
    pages = [p.strip() for p in args.pages.split(",") if p.strip()]
    unknown = [p for p in pages if p not in TITLES]
    if unknown or not pages:
        ap.error(f"--pages: unknown {unknown} (choices: {', '.join(TITLES)})" if unknown else "--pages is empty")
    checkpoint = runs_dir / args.run / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        have = sorted(p.parent.parent.name for p in runs_dir.glob("*/checkpoints/last.pt"))
        ap.error(f"no checkpoint {checkpoint}; runs with checkpoints/last.pt in {runs_dir}: {have or 'none'}")
    if not (market / "query").is_dir() or not (market / "bounding_box_test").is_dir():
        ap.error(f"--market {market} is not a Market-1501 folder (needs query/ and bounding_box_test/)")
    if "compare" in pages and len(list(runs_dir.glob("*/checkpoints/last.pt"))) < 2:
        ap.error(f"the compare page needs two runs with checkpoints/last.pt in {runs_dir}")

    import streamlit as st
    import torch

    from esnet import api

    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="esnet-page-views-", dir=args.cache_dir))
    os.environ.update(ESNET_RUNS_DIR=str(runs_dir), ESNET_DATASET_ROOT=str(market), ESNET_DEFAULT_RUN=args.run,
                      ESNET_ALLOWED_ROOTS=os.pathsep.join(str(p) for p in (runs_dir, market, scratch)),
                      ESNET_USER_RUNS_DIR=str(scratch / "user-runs"))
    try:
        inf = api.load_inference(checkpoint, device="cpu")
        _warm_up(api, inf, market, scratch / "warm-up")  # the pass below then times steady-state work only
        start = time.perf_counter()
        gallery = api.embed(inf, dataset=inf.config.data.dataset, root=market, split="gallery", cache_dir=None)
        embed_s = time.perf_counter() - start
        n = len(gallery.paths)
        print(f"one embedding pass of the gallery ({args.run}, {n:,} images, {args.threads} threads): "
              f"{embed_s:.1f} s ({n / embed_s:.0f} img/s)", flush=True)
        rows = []
        for page in pages:
            os.environ["ESNET_CACHE_DIR"] = str(scratch / f"cache-{page}")  # cold: empty disk cache ...
            st.cache_data.clear()  # ... and nothing in this process's Streamlit caches
            st.cache_resource.clear()
            first = view(page, market)
            print(f"{TITLES[page]}: first view {first:.1f} s", flush=True)
            warm = view(page, market)
            print(f"{TITLES[page]}: warm view {warm:.2f} s", flush=True)
            rows.append((TITLES[page], first, first / embed_s, warm))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\n{'page':<28}{'first view s':>14}{'first / pass':>14}{'warm view s':>13}")
    for title, first, ratio, warm in rows:
        print(f"{title:<28}{first:>14.1f}{ratio:>14.2f}{warm:>13.2f}")
    slow = [t for t, *_, w in rows if w >= WARM_TARGET_S]
    print(f"gallery pass {embed_s:.1f} s; warm views {'all under' if not slow else 'OVER'} the {WARM_TARGET_S:.0f} s "
          f"target{'' if not slow else ': ' + ', '.join(slow)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
