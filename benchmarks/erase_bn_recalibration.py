"""The erasing branch's BNNeck statistics re-estimated on whole feature maps: does it change the score?

In training the erasing branch pools a map whose salient block is zeroed, so its BNNeck's running
mean and variance describe erased maps; at test time nothing is erased and the same BNNeck
normalises whole maps, which pool to larger values. This script measures the mismatch and what
removing it does: it embeds the training images (test transform, no erasing), sets the erasing
BNNeck's running mean / variance to their whole-map mean / variance, and scores the checkpoint
on the query / gallery before and after (concat, global and erase features from one embedding
pass each). Nothing is written: the checkpoint file is not changed.

    python benchmarks/erase_bn_recalibration.py runs/market/p_esnet_avg_batchcam --root DATA/market1501
"""
from __future__ import annotations

import argparse

import torch

from esnet import api
from esnet.checkpoint import CheckpointError
from esnet.data.datasets import DatasetError, load_dataset
from esnet.data.loader import build_test_loader


def whole_map_stats(inf, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """(C,) mean and unbiased variance of the erasing branch's pooled features on whole maps."""
    feats = []
    with torch.no_grad():
        for batch in loader:
            feats.append(inf.model(batch["image"].to(inf.device)).erase_feat.float().cpu())
    f = torch.cat(feats)  # (N, C)
    return f.mean(0), f.var(0, unbiased=True)


def scores(inf, dataset: str, root: str) -> dict[str, dict[str, float]]:
    """{feature: {R1, mAP, mINP} in %} for concat, global and erase."""
    report = api.evaluate_checkpoint(inf, dataset, root)
    out = {}
    for feature in ("concat", "global", "erase"):
        rep = report if feature == "concat" else api.feature_view(report, feature)
        out[feature] = {k: 100 * float(rep.summary[k]) for k in ("R1", "mAP", "mINP")}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="an ES-Net checkpoint or run directory (last.pt) with an erasing branch")
    ap.add_argument("--root", required=True, help="dataset root")
    ap.add_argument("--dataset", default="market1501")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        inf = api.load_inference(args.checkpoint, test_feature="concat")
        data = load_dataset(args.dataset, args.root)
    except (CheckpointError, DatasetError, ValueError) as e:
        raise SystemExit(f"erase_bn_recalibration: {e}") from None
    model = inf.model
    if model.erase_head is None:
        raise SystemExit(f"erase_bn_recalibration: {args.checkpoint} has no erasing branch (model.erasing='off')")
    bn = model.erase_head.bnneck
    mean, var = whole_map_stats(inf, build_test_loader(data.train, inf.config.data, batch_size=128))
    print(f"{args.checkpoint}: erasing BNNeck on {len(data.train)} whole training maps: "
          f"|running mean| {float(bn.running_mean.norm()):.2f} vs |whole-map mean| {float(mean.norm()):.2f}; "
          f"mean running var {float(bn.running_var.mean()):.5f} vs whole-map {float(var.mean()):.5f}")
    before = scores(inf, args.dataset, args.root)
    with torch.no_grad():
        bn.running_mean.copy_(mean.to(bn.running_mean))
        bn.running_var.copy_(var.to(bn.running_var))
    after = scores(inf, args.dataset, args.root)
    print(f"{'feature':8} {'R1 before':>10} {'after':>7} {'mAP before':>11} {'after':>7} {'mINP before':>12} {'after':>7}")
    for feature in before:
        b, a = before[feature], after[feature]
        print(f"{feature:8} {b['R1']:10.1f} {a['R1']:7.1f} {b['mAP']:11.1f} {a['mAP']:7.1f} "
              f"{b['mINP']:12.1f} {a['mINP']:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
