"""How often the train-mode CAM on the batch's BNNeck variance erases another block than the CAM
on the running variance, measured with a trained checkpoint on real training batches.

Since issue 19 the train-mode CAM that picks the erased block scales each channel by the BNNeck's
*batch* variance, the variance the trained logit is actually divided by (``global_cam(...,
batch_feat)``); before, it used the running variance. For each of --batches P x K training
batches (the run's own sampler and augmentation, epoch 0, seed --seed), the model in train mode
computes the backbone map once and the salient block both ways. Printed: the share of images
whose block is the same, and the mean shift of the block's top row (in feature-map rows).

    python benchmarks/cam_batch_stats.py runs/market/p_esnet_avg_batchcam/checkpoints/last.pt \\
        --root DATA/market1501 --batches 40
"""
from __future__ import annotations

import argparse

import torch

from esnet.checkpoint import CheckpointError, load_model
from esnet.data.datasets import load_dataset
from esnet.data.loader import build_train_loader, set_epoch
from esnet.model.erasing import minmax_scale, salient_box


def compare_blocks(model, loader, batches: int) -> tuple[int, int, float]:
    """(same, total, mean |top-row shift|) over ``batches`` batches of ``loader``."""
    same = total = 0
    shift = 0.0
    model.train()  # train-mode pooling/BN, as the erased block is chosen in training
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            images, pids = batch["image"], batch["label"]
            fmap = model.forward_features(images)  # (B, C, h, w)
            h, w = fmap.shape[2:]
            bh, bw = model.erase_block_size(h, w)
            g_feat = model.global_head.pool(fmap)  # (B, C): what the BNNeck normalises
            running = salient_box(minmax_scale(model.global_cam(fmap, pids)), bh, bw)  # (B, 4)
            batch_stats = salient_box(minmax_scale(model.global_cam(fmap, pids, g_feat)), bh, bw)  # (B, 4)
            same += int((running == batch_stats).all(dim=1).sum())
            total += len(pids)
            shift += float((running[:, 0] - batch_stats[:, 0]).abs().sum())
    return same, total, shift / max(total, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="a trained ES-Net checkpoint (last.pt) with salient erasing")
    ap.add_argument("--root", required=True, help="dataset root")
    ap.add_argument("--dataset", default="market1501")
    ap.add_argument("--batches", type=int, default=40, help="training batches to compare")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = ap.parse_args(argv)
    if args.batches < 1:
        raise SystemExit(f"--batches must be >= 1, got {args.batches}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, ckpt = load_model(args.checkpoint)
        data = load_dataset(args.dataset, args.root)
    except (CheckpointError, ValueError) as e:
        raise SystemExit(f"cam_batch_stats: {e}") from None
    if model.erase_head is None or model.cfg.erasing != "salient":
        raise SystemExit(f"cam_batch_stats: {args.checkpoint} has model.erasing={model.cfg.erasing!r}; "
                         "it needs salient erasing")
    loader, _ = build_train_loader(data.train, ckpt.config.data, seed=args.seed)
    set_epoch(loader, 0)
    same, total, shift = compare_blocks(model, loader, args.batches)
    print(f"{args.checkpoint} (epoch {ckpt.epoch}, pool {model.cfg.pool}): same block in {same}/{total} "
          f"= {100 * same / total:.1f}% of training images; mean |top-row shift| {shift:.3f} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
