"""Pilot for optim.p_lr_mult: how far P-pooling's p moves, and why, per learning-rate multiplier.

For each multiplier in --mults, the same model (same seed, same --weights, same batches)
trains --iters iterations of the real training step (forward(images, pids) -> total_loss
-> backward -> Adam with ``build_optimizer``, p in its own group at lr x mult). The
learning rate is held at --lr (no warm-up or decay: the pilot looks at the peak rate).
Printed per multiplier and branch:

- p at the start, at the end, and its largest excursion from the start;
- the gradient of each loss on p (cross-entropy vs batch-hard triplet, both weighted as in
  training), over batches: mean, std, |mean|/std, and the fraction of batches where the two
  have opposite signs. |mean|/std well below 1 means Adam's normalised steps mostly cancel.

Gradients are on p itself (``dL/dp = dL/dq / sigmoid(q)``, p = 1 + softplus(q)); with
``--per-channel`` they are averaged over channels. Each per-loss gradient is an
``autograd.grad`` to q only, which stops at the pooling layer, so it costs little.

    python benchmarks/p_pilot.py --root /tmp/demo_data --dataset demo --iters 20 --mults 1,10
    python benchmarks/p_pilot.py --root DATA/market1501 --dataset market1501 --iters 300 \\
        --weights ~/.cache/esnet/weights/mobilenet_v2_imagenet.pt --threads 8
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch

from esnet.checkpoint import load_backbone_weights
from esnet.config import Config, override
from esnet.data.datasets import load_dataset
from esnet.data.loader import build_train_loader, set_epoch
from esnet.engine.trainer import build_optimizer
from esnet.losses import total_loss
from esnet.model import build_model

BRANCH_LOSSES = {"global": ("global_ce", "global_triplet"), "erase": ("erase_ce", "erase_triplet")}


def _batches(loader, iters: int):
    """``iters`` batches, walking through as many sampler epochs as needed."""
    done, epoch = 0, 0
    while done < iters:
        set_epoch(loader, epoch)
        for batch in loader:
            if done >= iters:
                return
            yield batch
            done += 1
        epoch += 1


def _stats(values: list[float]) -> tuple[float, float, float]:
    """(mean, std, |mean| / std) of per-batch gradients (std over batches, population)."""
    mean = statistics.fmean(values)
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return mean, std, (abs(mean) / std if std > 0 else math.inf)


def run_one(cfg: Config, mult: float, args: argparse.Namespace, data) -> dict:
    """Train ``args.iters`` iterations with p at lr x mult; returns p trajectory and per-loss gradients."""
    cfg = override(cfg, {"optim.p_lr_mult": mult})
    loader, num_classes = build_train_loader(data.train, cfg.data, seed=cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, num_classes)
    if args.weights:
        load_backbone_weights(model, args.weights)
    model.train()
    opt = build_optimizer(model, cfg.optim)
    pools = {name: head.pool for name, head in (("global", model.global_head), ("erase", model.erase_head))
             if head is not None}
    qs = [pool.q for pool in pools.values()]
    start = {name: pool.effective_p() for name, pool in pools.items()}
    trace = {name: [p] for name, p in start.items()}
    grads: dict[str, dict[str, list[float]]] = {name: {"ce": [], "triplet": []} for name in pools}
    w = {"ce": cfg.loss.ce_weight, "triplet": cfg.loss.triplet_weight}
    t0 = time.perf_counter()
    for it, batch in enumerate(_batches(loader, args.iters)):
        images, pids = batch["image"], batch["label"]
        out = model(images, pids)
        losses = total_loss(out, pids, cfg.loss)
        total = float(losses["total"].detach())
        if not math.isfinite(total):
            raise SystemExit(f"multiplier {mult:g}: loss is {total} at iteration {it + 1}")
        for kind, idx in (("ce", 0), ("triplet", 1)):
            names = [BRANCH_LOSSES[b][idx] for b in pools]
            term = w[kind] * sum(losses[n] * (cfg.loss.erase_weight if n.startswith("erase") else 1.0) for n in names)
            dq = torch.autograd.grad(term, qs, retain_graph=True, allow_unused=True)
            for (name, pool), g in zip(pools.items(), dq):
                dp = torch.zeros_like(pool.q) if g is None else g / torch.sigmoid(pool.q.detach())  # dL/dp
                grads[name][kind].append(float(dp.mean()))
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        for name, pool in pools.items():
            trace[name].append(pool.effective_p())
        if args.verbose and (it + 1) % max(1, args.iters // 5) == 0:
            ps = " ".join(f"{n} {trace[n][-1]:.3f}" for n in pools)
            print(f"    x{mult:g} iter {it + 1}/{args.iters} loss {total:.3f} p {ps}", flush=True)
    return {"start": start, "trace": trace, "grads": grads, "seconds": time.perf_counter() - t0}


def report(mult: float, res: dict, lr: float) -> None:
    print(f"\nmultiplier x{mult:g} (p lr {lr * mult:.2e}), {res['seconds']:.0f} s")
    for name, trace in res["trace"].items():
        p0, p1 = trace[0], trace[-1]
        far = max(trace, key=lambda v: abs(v - p0))
        print(f"  {name:6s} p {p0:.3f} -> {p1:.3f}  (moved {p1 - p0:+.3f}; largest excursion {far - p0:+.3f})")
        g = res["grads"][name]
        for kind in ("ce", "triplet"):
            mean, std, ratio = _stats(g[kind])
            print(f"    dL_{kind:7s}/dp  mean {mean:+.3e}  std {std:.3e}  |mean|/std {ratio:.2f}")
        both = [a + b for a, b in zip(g["ce"], g["triplet"])]
        mean, std, ratio = _stats(both)
        opposite = sum((a > 0) != (b > 0) for a, b in zip(g["ce"], g["triplet"]) if a != 0 and b != 0)
        print(f"    dL_total  /dp  mean {mean:+.3e}  std {std:.3e}  |mean|/std {ratio:.2f}; "
              f"CE and triplet of opposite sign in {opposite}/{len(both)} batches")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="dataset root")
    ap.add_argument("--dataset", default="market1501", help="dataset name (e.g. market1501, demo)")
    ap.add_argument("--iters", type=int, default=300, help="training iterations per multiplier")
    ap.add_argument("--mults", default="1,10,100", help="comma-separated p learning-rate multipliers")
    ap.add_argument("--weights", default="", help="ImageNet backbone weights file (as in the Market runs)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--size", default="128x64", help="HxW")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3, help="base learning rate, held constant")
    ap.add_argument("--erasing", default="salient", choices=["salient", "random", "off"])
    ap.add_argument("--per-channel", action="store_true", help="model.p_per_channel")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="print p a few times per run")
    args = ap.parse_args(argv)

    try:
        mults = [float(m) for m in args.mults.split(",") if m.strip()]
    except ValueError:
        raise SystemExit(f"--mults must be comma-separated numbers, got {args.mults!r}") from None
    if not mults or any(not (math.isfinite(m) and m > 0) for m in mults):
        raise SystemExit(f"--mults must be numbers > 0, got {args.mults!r}")
    if args.iters < 1:
        raise SystemExit(f"--iters must be >= 1, got {args.iters}")
    h, _, w = args.size.lower().partition("x")
    if not (h.isdigit() and w.isdigit()):
        raise SystemExit(f"--size must be HxW, e.g. 128x64, got {args.size!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = override(Config(), {
            "data.dataset": args.dataset, "data.root": args.root, "data.height": int(h), "data.width": int(w),
            "data.batch_size": args.batch, "data.num_instances": args.instances, "data.workers": 0,
            "model.backbone": args.backbone, "model.pool": "p", "model.erasing": args.erasing,
            "model.p_per_channel": args.per_channel, "optim.lr": args.lr, "train.seed": args.seed,
        })
        data = load_dataset(args.dataset, args.root)
    except ValueError as e:
        raise SystemExit(f"p_pilot: {e}") from None

    print(f"{args.backbone} {h}x{w} batch {args.batch} ({args.instances} per id), erasing {args.erasing}, "
          f"lr {args.lr:g} constant, {args.iters} iterations per multiplier, seed {args.seed}, "
          f"{torch.get_num_threads()} threads, weights {args.weights or 'none (from scratch)'}"
          + (", one p per channel (gradients: channel mean)" if args.per_channel else ""))
    summary = []
    for mult in mults:
        res = run_one(cfg, mult, args, data)
        report(mult, res, args.lr)
        summary.append((mult, {n: t[-1] - t[0] for n, t in res["trace"].items()}))
    print("\nsummary: p moved (end - start) per branch")
    for mult, moved in summary:
        print(f"  x{mult:<6g} " + "  ".join(f"{n} {d:+.3f}" for n, d in moved.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
