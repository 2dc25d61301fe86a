"""Salient-part erasing (ES-Net): class activation maps, block choice, block masks.

Pure tensor functions; the ES-Net module composes them.

CAM. For the global branch ``logit_c = sum_k W[c, k] * (s_k * (pool(F)_k - mu_k) + beta_k)``
with ``s_k = gamma_k / sqrt(running_var_k + eps)`` the BNNeck scale in eval mode,

    CAM_c(h, w) = sum_k W[c, k] * s_k * F[k, h, w].

With average pooling and the BNNeck in eval mode this is exactly ``h * w`` times the
(pre-ReLU) Grad-CAM map of class c: the gradient of ``logit_c`` with respect to
``F[k, h, w]`` is ``W[c, k] s_k / (h w)`` at every position, so Grad-CAM's channel weights
are ``W[c, k] s_k / (h w)``. No backward pass is needed. We do not apply Grad-CAM's final
ReLU: with average pooling, erasing a block lowers the (pre-shift) logit by the block's
CAM sum / (h w), so the block with the largest window sum of the signed CAM is the one
whose removal costs the class the most evidence. For P- or max pooling the map is the
same linear CAM (a first-order view, not exact Grad-CAM).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def block_size(h: int, w: int, erase_height: float, erase_width: float) -> tuple[int, int]:
    """Erased block size in feature cells: ``max(1, round(h * erase_height))`` x same for w.

    Rounds half up (2.5 -> 3), never exceeds the map.

    Args:
        h, w: feature-map size.
        erase_height, erase_width: fractions in (0, 1].
    Returns:
        (bh, bw) ints with 1 <= bh <= h, 1 <= bw <= w.
    """
    if h < 1 or w < 1:
        raise ValueError(f"feature map size must be >= 1x1, got {h}x{w}")
    for name, frac in (("erase_height", erase_height), ("erase_width", erase_width)):
        if not 0.0 < frac <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {frac!r}")
    bh = min(h, max(1, math.floor(h * erase_height + 0.5)))
    bw = min(w, max(1, math.floor(w * erase_width + 0.5)))
    return bh, bw


def linear_cam(fmap: torch.Tensor, channel_weights: torch.Tensor) -> torch.Tensor:
    """Per-image weighted channel sum ``cam[b] = sum_k channel_weights[b, k] * fmap[b, k]``.

    Args:
        fmap: (B, C, h, w) feature map.
        channel_weights: (B, C), e.g. ``W[class_b] * s`` (see module docstring).
    Returns:
        (B, h, w) float32 raw (signed, unscaled) CAM. Carries gradients if the inputs do.
    """
    if fmap.ndim != 4:
        raise ValueError(f"fmap must be (B, C, h, w), got shape {tuple(fmap.shape)}")
    if channel_weights.shape != fmap.shape[:2]:
        raise ValueError(
            f"channel_weights must be (B, C) = {tuple(fmap.shape[:2])}, got {tuple(channel_weights.shape)}"
        )
    return (fmap.float() * channel_weights.float()[:, :, None, None]).sum(dim=1)  # (B, h, w)


def minmax_scale(cam: torch.Tensor) -> torch.Tensor:
    """Scale each map to [0, 1] (min -> 0, max -> 1); a constant map becomes all zeros.

    Args:
        cam: (B, h, w) float.
    Returns:
        (B, h, w) float32 in [0, 1].
    """
    if cam.ndim != 3:
        raise ValueError(f"cam must be (B, h, w), got shape {tuple(cam.shape)}")
    flat = cam.float().flatten(1)  # (B, h*w)
    lo = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - lo  # (B, 1)
    scaled = (flat - lo) / span.clamp(min=torch.finfo(torch.float32).tiny)
    scaled = torch.where(span > 0, scaled, torch.zeros_like(scaled)).clamp(0.0, 1.0)
    return scaled.view_as(cam)


def _check_block(h: int, w: int, bh: int, bw: int) -> None:
    if not (1 <= bh <= h and 1 <= bw <= w):
        raise ValueError(f"block {bh}x{bw} must fit in the {h}x{w} feature map and be >= 1x1")


def salient_box(cam: torch.Tensor, bh: int, bw: int) -> torch.Tensor:
    """The bh x bw block whose CAM sum is largest (sliding window, stride 1).

    Ties go to the first block in row-major order (smallest top, then smallest left).

    Args:
        cam: (B, h, w) float saliency.
        bh, bw: block size in cells.
    Returns:
        (B, 4) int64 ``top, left, height, width`` on cam's device.
    """
    if cam.ndim != 3:
        raise ValueError(f"cam must be (B, h, w), got shape {tuple(cam.shape)}")
    b, h, w = cam.shape
    _check_block(h, w, bh, bw)
    sums = F.avg_pool2d(cam.float()[:, None], kernel_size=(bh, bw), stride=1)  # (B, 1, h-bh+1, w-bw+1)
    n_left = sums.shape[-1]
    best = sums.flatten(1).argmax(dim=1)  # (B,)
    top, left = best // n_left, best % n_left
    size = torch.tensor([bh, bw], dtype=torch.int64, device=cam.device).expand(b, 2)
    return torch.cat([top[:, None], left[:, None], size], dim=1).to(torch.int64)  # (B, 4)


def random_box(
    batch_size: int,
    h: int,
    w: int,
    bh: int,
    bw: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Uniformly random bh x bw blocks inside an h x w map.

    Drawn on the CPU (with ``generator``, or the global CPU generator when None) and then
    moved to ``device``, so the draw is the same on every device for a given seed.

    Returns:
        (B, 4) int64 ``top, left, height, width``.
    """
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size!r}")
    _check_block(h, w, bh, bw)
    top = torch.randint(0, h - bh + 1, (batch_size,), generator=generator)
    left = torch.randint(0, w - bw + 1, (batch_size,), generator=generator)
    size = torch.tensor([bh, bw], dtype=torch.int64).expand(batch_size, 2)
    return torch.cat([top[:, None], left[:, None], size], dim=1).to(device)  # (B, 4)


def box_mask(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Binary masks of boxes.

    Args:
        boxes: (B, 4) int ``top, left, height, width`` (must lie inside the map).
        h, w: map size.
    Returns:
        (B, h, w) float32 on boxes' device: 1.0 inside the box, 0.0 elsewhere.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (B, 4) top, left, height, width; got shape {tuple(boxes.shape)}")
    top, left, bh, bw = (boxes[:, i, None] for i in range(4))  # each (B, 1)
    rows = torch.arange(h, device=boxes.device)[None]  # (1, h)
    cols = torch.arange(w, device=boxes.device)[None]  # (1, w)
    in_rows = (rows >= top) & (rows < top + bh)  # (B, h)
    in_cols = (cols >= left) & (cols < left + bw)  # (B, w)
    return (in_rows[:, :, None] & in_cols[:, None, :]).float()  # (B, h, w)
