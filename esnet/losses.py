"""Re-ID losses: label-smoothed cross-entropy and batch-hard triplet, per ES-Net branch.

Pure functions of tensors; they compute in float32 whatever the input dtype (AMP).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from esnet.config import LossConfig

if TYPE_CHECKING:  # annotation only: losses do not depend on the model at run time
    from esnet.model.esnet import ESNetOutput


def _check_logits(logits: torch.Tensor, pids: torch.Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, N), got shape {tuple(logits.shape)}")
    if pids.shape != (logits.shape[0],):
        raise ValueError(f"pids must be (B,) = ({logits.shape[0]},), got shape {tuple(pids.shape)}")


def cross_entropy_smooth(logits: torch.Tensor, pids: torch.Tensor, *, epsilon: float) -> torch.Tensor:
    """Cross-entropy against ``(1 - epsilon) * one_hot + epsilon / N`` (label smoothing).

    Args:
        logits: (B, N) float.
        pids: (B,) int64 in [0, N).
        epsilon: smoothing in [0, 1); 0 is plain cross-entropy.
    Returns:
        () float32 mean over the batch.
    """
    _check_logits(logits, pids)
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon!r}")
    log_probs = F.log_softmax(logits.float(), dim=1)  # (B, N)
    n = logits.shape[1]
    targets = torch.full_like(log_probs, epsilon / n)
    targets.scatter_(1, pids.long()[:, None], 1.0 - epsilon + epsilon / n)  # (B, N)
    return -(targets * log_probs).sum(dim=1).mean()


def batch_euclidean_distance(feats: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``||f_i - f_j||`` within a training batch, differentiable: (B, D) ->
    (B, B) float32 (0 on the diagonal, with a zero gradient there).

    For the triplet loss. Evaluation's query x gallery distances (cosine or Euclidean, numpy,
    no gradient, chunked) are ``esnet.metrics.pairwise_distance``.
    """
    x = feats.float()
    sq = x.pow(2).sum(dim=1)  # (B,)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.t()  # (B, B)
    return d2.clamp(min=1e-12).sqrt()


def batch_hard_triplet(feats: torch.Tensor, pids: torch.Tensor, *, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017), Euclidean distance.

    For each anchor: the farthest same-id sample and the nearest other-id sample;
    ``loss = mean(relu(d_ap - d_an + margin))``. An anchor whose id occurs once uses
    ``d_ap = 0``.

    Args:
        feats: (B, D) float.
        pids: (B,) int ids.
        margin: >= 0.
    Returns:
        () float32.
    Raises:
        ValueError: the batch holds a single identity (no negatives).
    """
    if feats.ndim != 2:
        raise ValueError(f"feats must be (B, D), got shape {tuple(feats.shape)}")
    if pids.shape != (feats.shape[0],):
        raise ValueError(f"pids must be (B,) = ({feats.shape[0]},), got shape {tuple(pids.shape)}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    dist = batch_euclidean_distance(feats)  # (B, B)
    same = pids[:, None] == pids[None, :]  # (B, B)
    if bool(same.all()):
        raise ValueError("batch_hard_triplet needs at least 2 identities in the batch, got 1")
    d_ap = torch.where(same, dist, torch.zeros_like(dist)).amax(dim=1)  # (B,)
    d_an = torch.where(same, torch.full_like(dist, float("inf")), dist).amin(dim=1)  # (B,)
    return F.relu(d_ap - d_an + margin).mean()


def total_loss(out: ESNetOutput, pids: torch.Tensor, cfg: LossConfig) -> dict[str, torch.Tensor]:
    """All losses of one training step.

    Per branch: ``ce_weight * CE(logits) + triplet_weight * triplet(pre-BNNeck feature)``;
    ``total = global + erase_weight * erase``.

    Args:
        out: a train-mode ESNetOutput (logits set).
        pids: (B,) int64.
        cfg: loss weights, smoothing, margin.
    Returns:
        {"global_ce", "global_triplet", ["erase_ce", "erase_triplet",] "total"}: () tensors.
    """
    if out.global_logits is None:
        raise ValueError("total_loss needs a train-mode output (global_logits is None: was the model in eval mode?)")
    losses = {
        "global_ce": cross_entropy_smooth(out.global_logits, pids, epsilon=cfg.label_smoothing),
        "global_triplet": batch_hard_triplet(out.global_feat, pids, margin=cfg.triplet_margin),
    }
    total = cfg.ce_weight * losses["global_ce"] + cfg.triplet_weight * losses["global_triplet"]
    if out.erase_logits is not None:
        if out.erase_feat is None:
            raise ValueError("output has erase_logits but no erase_feat")
        losses["erase_ce"] = cross_entropy_smooth(out.erase_logits, pids, epsilon=cfg.label_smoothing)
        losses["erase_triplet"] = batch_hard_triplet(out.erase_feat, pids, margin=cfg.triplet_margin)
        erase = cfg.ce_weight * losses["erase_ce"] + cfg.triplet_weight * losses["erase_triplet"]
        total = total + cfg.erase_weight * erase
    losses["total"] = total
    return losses


def accuracy(logits: torch.Tensor, pids: torch.Tensor) -> float:
    """Top-1 fraction of rows whose argmax equals pids: (B, N), (B,) -> float in [0, 1]."""
    _check_logits(logits, pids)
    if logits.shape[0] == 0:
        raise ValueError("accuracy of an empty batch is undefined")
    return float((logits.argmax(dim=1) == pids).float().mean().item())
