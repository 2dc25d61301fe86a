"""Training entry point: ``esnet train ...``, ``python -m esnet.train ...`` or
``torchrun --nproc_per_node N -m esnet.train ...`` (same arguments).

The config is built as defaults <- ``--config FILE`` <- ``--set key=value`` <- the
named flags (``--epochs`` ...), then ``esnet.engine.train_run`` does the rest. With
``WORLD_SIZE`` > 1 (set by torchrun) the process group is initialised (nccl on CUDA,
gloo on CPU), every rank trains ``data.batch_size`` images per step on its own share of
the P x K batches (so the effective batch is world_size x batch_size) and only rank 0
writes the run directory and prints.

Like ``esnet.cli``, this module seeds global RNGs and prints; the library does neither.
Module-level imports stay light so building the CLI parser does not import torch.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

NO_WEIGHTS = "none"  # esnet.weights.NO_WEIGHTS (that module is imported lazily)

# flag -> dotted config key; values go through esnet.config.override, which checks them
FLAG_KEYS = {
    "dataset": "data.dataset",
    "root": "data.root",
    "backbone": "model.backbone",
    "pool": "model.pool",
    "erasing": "model.erasing",
    "weights": "model.weights",
    "epochs": "optim.epochs",
    "lr": "optim.lr",
    "batch": "data.batch_size",
    "instances": "data.num_instances",
    "workers": "data.workers",
    "seed": "train.seed",
    "device": "train.device",
    "eval_every": "train.eval_every",
    "probes": "train.probe_count",
    "max_iters": "train.max_iters_per_epoch",
    "camera_regex": "data.camera_regex",
}

SCHEDULE_KEYS = ("optim.warmup_epochs", "optim.milestones")
"""Each of these not given (in --set or --config) is BoT's, scaled to optim.epochs."""


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The ``esnet train`` flags (values are checked by the config, not argparse)."""
    p.add_argument("--out", required=True, help="run directory to create (or continue with --resume)")
    p.add_argument("--dataset", help="dataset loader name, e.g. market1501, demo, folder, manifest")
    p.add_argument("--root", help="dataset root directory (the CSV file for --dataset manifest)")
    p.add_argument("--manifest", help="CSV manifest path,pid,camid,split (same as --dataset manifest --root CSV)")
    p.add_argument("--camera-regex", dest="camera_regex",
                   help=r"folder layout: regex whose group 1 is the camera in the file name (default c(\d+))")
    p.add_argument("--config", help="JSON config file (a partial file fills the rest with defaults)")
    p.add_argument("--backbone", help="resnet50 | resnet18 | mobilenet_v2")
    p.add_argument("--pool", help="p (P-pooling) | avg | max")
    p.add_argument("--erasing", help="salient (ES-Net) | random | off (baseline)")
    p.add_argument("--weights", help="ImageNet state dict for the backbone (see 'esnet weights fetch "
                                     "mobilenet_v2'); 'none' trains from scratch (a ResNet needs one or the other)")
    p.add_argument("--epochs", help="number of epochs (default 120); without optim.warmup_epochs / optim.milestones "
                                    "BoT's warm-up 10 and decays at 40, 70 of 120 are scaled to this many epochs")
    p.add_argument("--size", help="input size HxW in pixels (default 128x64, MobileNetV2's CPU-friendly size of "
                                  "the reported runs; the paper's ResNet-50 uses 256x128)")
    p.add_argument("--batch", help="images per batch (P x K)")
    p.add_argument("--instances", help="K, images per identity in a batch")
    p.add_argument("--lr", help="base learning rate (default 1e-3: on Market-1501 with MobileNetV2 at 128x64 it "
                                "gave +8.3 mAP over BoT's 3.5e-4 in the README's pilots)")
    p.add_argument("--seed", help="random seed")
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--eval-every", dest="eval_every", help="evaluate every N epochs (0 = never)")
    p.add_argument("--probes", help="number of probe images recorded each epoch (0 = none)")
    p.add_argument("--max-iters", dest="max_iters", help="cap on iterations per epoch (0 = full epoch)")
    p.add_argument("--workers", help="DataLoader worker processes")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any config value, e.g. --set loss.triplet_margin=0.5 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from checkpoints/last.pt (only epochs, device, "
                        "amp, eval-every, max-iters and workers may change)")
    p.add_argument("--allow-code-change", dest="allow_code_change", action="store_true",
                   help="with --resume: continue although esnet's source differs from the code that saved "
                        "the checkpoint (the continued epochs then differ from an uninterrupted run's)")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted config updates from ``--set`` and the named flags (flags win).

    Raises:
        ValueError: a malformed ``--set`` or ``--size``.
    """
    updates: dict[str, Any] = {}
    for item in args.sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE with KEY like section.key, got {item!r}")
        updates[key.strip()] = value
    if args.size is not None:
        h, sep, w = args.size.lower().partition("x")
        if not sep or not h.strip().isdigit() or not w.strip().isdigit():
            raise ValueError(f"--size must be HxW in pixels, e.g. 256x128, got {args.size!r}")
        updates["data.height"], updates["data.width"] = int(h), int(w)
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None:
            updates[key] = value
    manifest = getattr(args, "manifest", None)
    if manifest is not None:
        if args.root is not None or args.dataset not in (None, "manifest"):
            raise ValueError(f"--manifest {manifest} is the dataset: give it without --root / --dataset")
        updates["data.dataset"], updates["data.root"] = "manifest", manifest
    if args.weights is not None and args.weights.strip().lower() == NO_WEIGHTS:
        updates["model.weights"] = ""
    return updates


def schedule_given(updates: dict[str, Any], config_file: str | None) -> set[str]:
    """Which of :data:`SCHEDULE_KEYS` the user chose (``--set`` or the ``--config`` file's optim section)."""
    given = {k for k in SCHEDULE_KEYS if k in updates}
    if config_file:
        import json

        try:
            with open(config_file, encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, ValueError):
            raw = None  # esnet.config.load has named the problem already
        optim = raw.get("optim") if isinstance(raw, dict) else None
        if isinstance(optim, dict):
            given |= {k for k in SCHEDULE_KEYS if k.partition(".")[2] in optim}
    return given


def fresh_config(args: argparse.Namespace) -> tuple[Any, bool]:
    """The config of a new run from the parsed flags, and whether BoT's schedule was scaled into it.

    Raises:
        ValueError: a bad value, no dataset root, or a ResNet without a ``--weights`` choice.
    """
    from esnet.config import Config, load, override, scaled_schedule
    from esnet.weights import check_weights_choice

    updates = overrides_from_args(args)
    cfg = override(load(args.config) if args.config else Config(), updates)
    if not cfg.data.root:
        raise ValueError("--root is required (the dataset directory), or set data.root in --config")
    if args.weights is None or args.weights.strip().lower() != NO_WEIGHTS:
        check_weights_choice(cfg.model.backbone, cfg.model.weights)
    warmup, milestones = scaled_schedule(cfg.optim.epochs)
    scaled = {"optim.warmup_epochs": warmup, "optim.milestones": list(milestones)}
    for key in schedule_given(updates, args.config):
        del scaled[key]
    return (override(cfg, scaled) if scaled else cfg), bool(scaled)


def _stop_on_signal_callback(out: str):
    """A callback that turns SIGINT/SIGTERM into a clean stop at the next batch boundary.

    The first signal only sets a flag, so a checkpoint or metrics line being written is
    never cut; the next ``on_batch_end`` / ``on_epoch_start`` raises StopRequested
    (status.json: stopped, resumable). A second signal interrupts at once.
    """
    import signal

    from esnet.engine import Callback, StopRequested

    class StopOnSignal(Callback):
        def __init__(self) -> None:
            self.signal_name = ""
            self.previous: dict[int, Any] = {}

        def _handler(self, signum: int, frame: Any) -> None:
            if self.signal_name:
                raise KeyboardInterrupt(f"{signal.Signals(signum).name} received twice")
            self.signal_name = signal.Signals(signum).name

        def _check(self, where: str) -> None:
            if self.signal_name:
                raise StopRequested(f"stopped by {self.signal_name} {where}; continue with: "
                                    f"esnet train --out {out} --resume")

        def on_train_start(self, state) -> None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handler)

        def on_epoch_start(self, epoch: int) -> None:
            self._check(f"before epoch {epoch}")

        def on_batch_end(self, epoch: int, iteration: int, losses: dict[str, float]) -> None:
            self._check(f"at epoch {epoch}, iteration {iteration}")

        def _restore(self) -> None:
            for sig, handler in self.previous.items():
                signal.signal(sig, handler)
            self.previous.clear()

        def on_train_end(self) -> None:
            self._restore()

        def on_exception(self, exc: BaseException) -> None:
            self._restore()

    return StopOnSignal()


def _console_callback(total_epochs: int):
    """A progress bar per epoch (stderr) and a summary line per epoch (stdout)."""
    from tqdm import tqdm

    from esnet.engine import Callback, format_epoch_summary

    class Console(Callback):
        def __init__(self) -> None:
            self.bar = None
            self.total = total_epochs
            self.iters = 0

        def on_train_start(self, state) -> None:
            self.iters = state.iters_per_epoch
            self.total = state.total_epochs

        def on_epoch_start(self, epoch: int) -> None:
            self.bar = tqdm(total=self.iters, desc=f"epoch {epoch}/{self.total}", unit="batch",
                            file=sys.stderr, leave=False, dynamic_ncols=True)

        def on_batch_end(self, epoch: int, iteration: int, losses: dict[str, float]) -> None:
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{losses['total']:.3f}", refresh=False)
                self.bar.update(1)

        def _close(self) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

        def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
            self._close()
            print(format_epoch_summary(record, self.total), flush=True)

        def on_exception(self, exc: BaseException) -> None:
            self._close()

    return Console()


def _seed_globals(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_from_args(args: argparse.Namespace, command: str | None = None) -> int:
    """Train as the parsed arguments say; returns the exit code.

    ``command`` (stored in meta.json) defaults to ``sys.argv``.
    Exit codes: 0 done; 1 the loss became NaN/inf; 2 a usage, config, dataset, checkpoint or run
    directory error (one line on stderr); 130 interrupted (status.json says failed;
    continue with --resume).
    """
    from esnet.config import describe_schedule
    from esnet.data.types import DatasetError

    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if command is None:
        command = shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]])

    def fail(message: str, code: int) -> int:
        if rank == 0:
            print(f"error: {message}", file=sys.stderr)
        return code

    try:
        import torch

        from esnet.engine import read_config, resolve_device, resume_config, train_run

        updates = overrides_from_args(args)
        scaled = False
        if args.allow_code_change and not args.resume:
            raise ValueError("--allow-code-change applies to --resume only")
        if args.resume:
            if args.config:
                raise ValueError("--config cannot be used with --resume: the run's own config.json is used")
            cfg = resume_config(read_config(args.out), None, updates)
        else:
            cfg, scaled = fresh_config(args)
        if rank == 0:
            how = (" (BoT's warm-up 10 and decays at 40, 70 of 120 epochs, scaled to this run; "
                   "--set optim.warmup_epochs=N --set optim.milestones=A,B to choose)") if scaled else ""
            print(f"schedule: {describe_schedule(cfg.optim)}{how}", flush=True)
        device = resolve_device(cfg.train.device)
        if world_size > 1:
            if device.type == "cuda":
                torch.cuda.set_device(local_rank)
                device = torch.device("cuda", local_rank)
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        _seed_globals(cfg.train.seed)
        console = [_stop_on_signal_callback(args.out)]
        if rank == 0:
            console.append(_console_callback(cfg.optim.epochs))
        try:
            result = train_run(cfg, args.out, resume=args.resume, resume_updates=updates if args.resume else None,
                               command=command, callbacks=console, device=device, rank=rank,
                               world_size=world_size, allow_code_change=args.allow_code_change)
        finally:
            if world_size > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    except FloatingPointError as e:
        return fail(str(e), 1)
    except KeyboardInterrupt:
        return fail(f"interrupted; continue with: esnet train --out {args.out} --resume", 130)
    except (ValueError, DatasetError, FileNotFoundError, PermissionError) as e:
        return fail(str(e), 2)
    except OSError as e:  # a write the disk refused (full, read-only): one line, not a traceback
        return fail(f"{type(e).__name__}: {e}", 1)
    if rank == 0:
        best = "" if result.best_mAP is None else f", best mAP {100 * result.best_mAP:.1f}%"
        print(f"done: {result.epochs_done} epochs in {result.run_dir}{best}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esnet.train", description=__doc__.splitlines()[0])
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    shown = sys.argv[1:] if argv is None else list(argv)
    return run_from_args(args, shlex.join(["python", "-m", "esnet.train", *shown]))


if __name__ == "__main__":
    sys.exit(main())
