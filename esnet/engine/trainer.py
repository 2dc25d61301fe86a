"""The training loop: a plain ``fit`` over epochs, with callbacks for everything else.

Reproducibility. Each epoch draws its randomness from streams seeded by
``(train.seed, epoch, rank)`` alone, never from what earlier epochs consumed: the PK
sampler's order (``set_epoch``), the augmentation stream of the train dataset (reseeded
directly with ``data.workers == 0``; with workers, through the DataLoader generator
that seeds each epoch's fresh worker processes) and torch's RNG inside the epoch (the
model's random-block erasing). torch's RNG is seeded inside ``torch.random.fork_rng``,
so the caller's global RNG state is the same after ``fit`` as before. Hence a run
resumed from the checkpoint of epoch e trains epoch e + 1 exactly as the uninterrupted
run does (bit-identical on the CPU; on CUDA up to non-deterministic kernels).
"""
from __future__ import annotations

import bisect
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from esnet.config import Config, OptimConfig
from esnet.data.loader import ImageDataset, set_epoch
from esnet.engine.callbacks import Callback, TrainState
from esnet.losses import total_loss
from esnet.model import ESNet


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cpu``; ``cuda`` (must be available).

    Raises:
        ValueError: unknown name, or ``cuda`` asked for without CUDA.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("train.device is 'cuda' but CUDA is not available on this machine; use cpu or auto")
        return torch.device("cuda")
    raise ValueError(f"train.device must be one of ['auto', 'cpu', 'cuda'], got {name!r}")


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed that depends only on ``(seed, epoch, rank)`` (all must be >= 0)."""
    for name, v in (("seed", seed), ("epoch", epoch), ("rank", rank)):
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v!r}")
    state = np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(1, dtype=np.uint64)
    return int(state[0]) & (2**63 - 1)


# --- optimiser and schedule ------------------------------------------------------------
P_PARAM_SUFFIX = "pool.q"
"""Parameter names ending in this are P-pooling exponents (``p = 1 + softplus(q)``)."""


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Adam:
    """Adam over the trainable parameters, in up to three groups, in this order:

    1. weights with ndim > 1, with ``cfg.weight_decay``;
    2. other 1-D parameters (BatchNorm scales/shifts, biases), no weight decay;
    3. the P-pooling exponents' parameters (``*pool.q``) at ``lr * p_lr_mult``, no weight
       decay (decay would pull q towards 0, i.e. p towards 1 + log 2, away from its meaning).

    Empty groups are left out. The scheduler's LambdaLR scales each group's own initial lr,
    so the P group keeps its multiplier through warm-up and decay.
    """
    decay, no_decay, p_params = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith(P_PARAM_SUFFIX):
            p_params.append(p)
        else:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0},
              {"params": p_params, "weight_decay": 0.0, "lr": cfg.lr * cfg.p_lr_mult}]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=cfg.lr)


def lr_factor(epoch: int, cfg: OptimConfig) -> float:
    """Multiplier of ``cfg.lr`` during 0-based ``epoch``.

    Linear warm-up from ``warmup_factor`` at epoch 0 to 1 at ``warmup_epochs``, times
    ``gamma ** (number of milestones <= epoch)``.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch!r}")
    warm = 1.0
    if epoch < cfg.warmup_epochs:
        alpha = epoch / cfg.warmup_epochs
        warm = cfg.warmup_factor * (1.0 - alpha) + alpha
    return warm * cfg.gamma ** bisect.bisect_right(cfg.milestones, epoch)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR with :func:`lr_factor`, stepped once per epoch (after it)."""

    def factor(epoch: int) -> float:
        return lr_factor(epoch, cfg)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --- the loop --------------------------------------------------------------------------
def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _reseed_epoch(loader: DataLoader, seed: int, epoch: int, rank: int) -> int:
    """Make the loader's randomness for ``epoch`` independent of history; returns the torch seed."""
    set_epoch(loader, epoch)
    s = epoch_seed(seed, epoch, rank)
    if loader.num_workers > 0 and getattr(loader, "persistent_workers", False):
        raise ValueError(
            "exact per-epoch seeding needs non-persistent DataLoader workers (persistent workers "
            "keep their augmentation stream across epochs)"
        )
    if loader.generator is not None:
        loader.generator.manual_seed(s)
    if isinstance(loader.dataset, ImageDataset):
        loader.dataset.reseed(s)
    return epoch_seed(seed, epoch, rank + 1_000_003)  # a different stream for torch's RNG


def _all_reduce_mean(values: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1:
        torch.distributed.all_reduce(values)
        values = values / world_size
    return values


def _sync_buffers(net: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers before each forward, so after the last step of an epoch each
    rank holds its own statistics; this makes all ranks' models identical again.
    """
    for buf in net.buffers():
        torch.distributed.broadcast(buf, src=0)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    cfg: Config,
    epoch: int,
    callbacks: Sequence[Callback],
    *,
    device: torch.device,
    use_amp: bool,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """Train 0-based ``epoch``; returns its metrics record without ``eval`` (see rundir).

    Raises:
        FloatingPointError: the loss is NaN or infinite (names epoch and iteration).
    """
    torch_seed = _reseed_epoch(loader, cfg.train.seed, epoch, rank)
    cap = cfg.train.max_iters_per_epoch
    n_iters = min(len(loader), cap) if cap else len(loader)
    lr = float(optimizer.param_groups[0]["lr"])
    net = unwrap(model)
    if net.erase_head is not None:
        net.erasing_active = epoch + 1 >= cfg.model.erase_from_epoch
    model.train()
    sums: dict[str, torch.Tensor] = {}
    correct = {"global": torch.zeros((), device=device)}
    if net.erase_head is not None:
        correct["erase"] = torch.zeros((), device=device)
    n_images = 0
    iters = 0
    devices = []  # CUDA devices whose RNG fork_rng saves and restores
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    start = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(torch_seed)
        for it, batch in enumerate(loader):
            if it >= n_iters:
                break
            images = batch["image"].to(device, non_blocking=True)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            pids = batch["label"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                out = model(images, pids)
            losses = total_loss(out, pids, cfg.loss)  # float32 whatever the autocast dtype
            total = float(losses["total"].detach())
            if not math.isfinite(total):
                parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
                raise FloatingPointError(
                    f"loss is {total} at epoch {epoch + 1}, iteration {it + 1}/{n_iters} ({parts}); "
                    "try a lower optim.lr or turn off train.amp"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            scaler.step(optimizer)
            scaler.update()
            for k, v in losses.items():
                sums[k] = sums[k] + v.detach() if k in sums else v.detach().clone()
            correct["global"] += (out.global_logits.argmax(dim=1) == pids).sum()
            if "erase" in correct:
                correct["erase"] += (out.erase_logits.argmax(dim=1) == pids).sum()
            n_images += images.shape[0]
            iters += 1
            for cb in callbacks:
                cb.on_batch_end(epoch + 1, it + 1, {"total": total})
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    if iters == 0:
        raise ValueError(f"epoch {epoch + 1} ran no iterations: the train loader is empty")
    keys = list(sums)
    stacked = torch.stack([sums[k] / iters for k in keys] + [correct[k] / n_images for k in correct])
    stacked = _all_reduce_mean(stacked.float(), world_size).cpu().tolist()
    loss = dict(zip(keys, stacked[: len(keys)]))
    acc = dict(zip(correct, stacked[len(keys):]))
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "time_s": elapsed,
        "img_per_s": n_images * world_size / elapsed if elapsed > 0 else 0.0,
        "loss": loss,
        "acc": acc,
        "p": net.learned_p(),
        **({"p_spread": spread} if (spread := net.p_spread()) else {}),
    }


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    cfg: Config,
    callbacks: Sequence[Callback],
    *,
    start_epoch: int = 0,
    device: torch.device | str,
    scaler_state: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> None:
    """Train epochs ``start_epoch + 1 .. cfg.optim.epochs`` (1-based).

    Per epoch: reseed (module docstring), train, ``scheduler.step()``, then every
    callback's ``on_epoch_end(epoch, record)`` in order. Mixed precision (autocast fp16
    + GradScaler, when ``train.amp``) and channels_last only on CUDA.

    Args:
        model: an ESNet on ``device``, or a DistributedDataParallel wrapping one.
        train_loader: from ``esnet.data.loader.build_train_loader``.
        optimizer, scheduler: ``build_optimizer`` / ``build_scheduler`` (restored on resume).
        cfg: the run config.
        callbacks: hooks, called in order; on any exception each gets
            ``on_exception(exc)`` and the exception is re-raised.
        start_epoch: epochs already done (the checkpoint's ``epoch`` on resume).
        device: where to train.
        scaler_state: GradScaler state from the checkpoint (resume on CUDA).
        rank, world_size: distributed position (1 process: 0, 1).
    Raises:
        FloatingPointError: a NaN/inf loss.
        ValueError: bad start_epoch, or an empty loader.
    """
    device = torch.device(device)
    total = cfg.optim.epochs
    if not 0 <= start_epoch <= total:
        raise ValueError(f"start_epoch must be in [0, optim.epochs={total}], got {start_epoch!r}")
    net = unwrap(model)
    if not isinstance(net, ESNet):
        raise ValueError(f"fit trains an ESNet, got {type(net).__name__}")
    use_amp = bool(cfg.train.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    if scaler_state:
        scaler.load_state_dict(scaler_state)
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)
    cap = cfg.train.max_iters_per_epoch
    state = TrainState(
        model=net, optimizer=optimizer, scheduler=scheduler, scaler=scaler, cfg=cfg, device=device,
        start_epoch=start_epoch, total_epochs=total,
        iters_per_epoch=min(len(train_loader), cap) if cap else len(train_loader), use_amp=use_amp,
    )
    try:
        for cb in callbacks:
            cb.on_train_start(state)
        for epoch in range(start_epoch, total):
            for cb in callbacks:
                cb.on_epoch_start(epoch + 1)
            record = train_one_epoch(model, train_loader, optimizer, scaler, cfg, epoch, callbacks,
                                     device=device, use_amp=use_amp, rank=rank, world_size=world_size)
            scheduler.step()
            if world_size > 1:
                _sync_buffers(net)
            for cb in callbacks:
                cb.on_epoch_end(epoch + 1, record)
            if world_size > 1:
                torch.distributed.barrier()  # rank 0 may have evaluated; keep ranks in step
        for cb in callbacks:
            cb.on_train_end()
    except BaseException as exc:
        for cb in callbacks:
            cb.on_exception(exc)
        raise
