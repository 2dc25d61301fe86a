"""Training-step cost of ES-Net (salient erasing) against the baseline (erasing off).

Both models share the backbone, pooling, input size and batch; a step is what ``fit``
does per batch: forward(images, pids) -> total_loss -> backward -> Adam step (with
autocast + GradScaler on CUDA when --amp). Inputs are random tensors, so data loading
is not measured. Steps alternate between the two models (ES, base, ES, base ...) after
--warmup untimed steps each, so drifting machine load hits both alike; the median step
time of each is reported with the ratio ES-Net / baseline (target: <= 1.25).

    python benchmarks/train_step.py                       # mobilenet_v2, 128x64, batch 32, CPU
    python benchmarks/train_step.py --backbone resnet50 --size 256x128 --batch 64 --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from esnet.config import LossConfig, ModelConfig, OptimConfig
from esnet.engine.trainer import build_optimizer, resolve_device
from esnet.losses import total_loss
from esnet.model import build_model


def make_step(erasing: str, args: argparse.Namespace, device: torch.device, num_classes: int):
    torch.manual_seed(args.seed)
    model = build_model(ModelConfig(backbone=args.backbone, erasing=erasing, pool=args.pool), num_classes).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = build_optimizer(model, OptimConfig())
    use_amp = args.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    loss_cfg = LossConfig()

    def step(images: torch.Tensor, pids: torch.Tensor) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            out = model(images, pids)
        loss = total_loss(out, pids, loss_cfg)["total"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="mobilenet_v2")
    p.add_argument("--pool", default="p")
    p.add_argument("--size", default="128x64", help="HxW")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--instances", type=int, default=4)
    p.add_argument("--steps", type=int, default=20, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="autocast on CUDA")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    h, _, w = args.size.lower().partition("x")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch % args.instances:
        raise SystemExit(f"--batch must be a multiple of --instances, got {args.batch} and {args.instances}")
    num_ids = args.batch // args.instances
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, int(h), int(w), generator=gen).to(device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    pids = torch.arange(num_ids).repeat_interleave(args.instances).to(device)  # (B,) P x K

    steps = {"es-net (salient)": make_step("salient", args, device, num_ids),
             "baseline (off)": make_step("off", args, device, num_ids)}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.warmup):
        for step in steps.values():
            step(images, pids)
    for i in range(args.steps):
        order = list(steps) if i % 2 == 0 else list(reversed(steps))
        for name in order:
            times[name].append(steps[name](images, pids))

    where = f"{device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                           f" ({torch.get_num_threads()} threads)")
    print(f"{args.backbone} pool={args.pool} {h}x{w} batch {args.batch} on {where}, "
          f"amp={'on' if args.amp and device.type == 'cuda' else 'off'}; "
          f"median of {args.steps} interleaved steps after {args.warmup} warm-up")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        q = statistics.quantiles(times[name], n=4) if len(times[name]) >= 2 else [t, t, t]
        print(f"  {name:18s} {1000 * t:8.1f} ms/step  (IQR {1000 * q[0]:.1f}-{1000 * q[2]:.1f})  "
              f"{args.batch / t:7.1f} img/s")
    ratio = med["es-net (salient)"] / med["baseline (off)"]
    print(f"  ratio es-net / baseline: {ratio:.3f}x (target <= 1.25x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
