"""Global pooling of a feature map: P-pooling (trainable generalized mean), average, max.

P-pooling (the pooling ES-Net uses) is the generalized mean
``(mean_hw x^p)^(1/p)``: p = 1 is average pooling and p -> inf tends to max pooling.
"""
from __future__ import annotations

import torch
from torch import nn

POOL_KINDS = ("p", "avg", "max")


def p_pool(x: torch.Tensor, p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Generalized mean over H, W, computed in a form that is safe for large p.

    Uses ``m * (mean((x / m)^p))^(1/p)`` with ``m`` the per-channel maximum (detached:
    the identity holds for any constant m, so value and gradients are those of the plain
    formula). Every ratio lies in (0, 1] and the largest is exactly 1, so nothing
    overflows and the mean never underflows to 0, even for p = 100.

    Args:
        x: (B, C, H, W) features; values are clamped to >= eps (so zeros are safe).
        p: (1,) or (C,) exponent, >= 1; 1 = average, large -> max.
        eps: lower clamp of x, > 0.
    Returns:
        (B, C), dtype of x (computed in float32).
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if p.ndim != 1 or p.shape[0] not in (1, x.shape[1]):
        raise ValueError(f"p must have shape (1,) or (C,) = ({x.shape[1]},), got {tuple(p.shape)}")
    xf = x.float().clamp(min=eps)
    pf = p.float().view(1, -1, 1, 1)
    m = xf.detach().amax(dim=(2, 3), keepdim=True)  # (B, C, 1, 1), >= eps
    mean = (xf / m).pow(pf).mean(dim=(2, 3))  # (B, C), in [1/(H*W), 1]
    pooled = m.view(m.shape[0], m.shape[1]) * mean.pow(1.0 / pf.view(1, -1))  # (B, C)
    return pooled.to(x.dtype)


def avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Average over H, W: (B, C, H, W) -> (B, C)."""
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    return x.mean(dim=(2, 3))


def max_pool(x: torch.Tensor) -> torch.Tensor:
    """Maximum over H, W: (B, C, H, W) -> (B, C)."""
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    return x.amax(dim=(2, 3))


class Pool(nn.Module):
    """Global pooling ``(B, C, H, W) -> (B, C)``.

    Args:
        kind: ``p`` (P-pooling with a trainable exponent, clamped to >= 1 in use),
            ``avg`` or ``max``.
        p_init: initial exponent for ``p``; ignored for the other kinds.
        eps: lower clamp of the input for ``p``.

    Attributes:
        p: (1,) trainable exponent for kind ``p``; None otherwise.
    """

    def __init__(self, kind: str, p_init: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        if kind not in POOL_KINDS:
            raise ValueError(f"pool kind must be one of {list(POOL_KINDS)}, got {kind!r}")
        if eps <= 0.0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.kind = kind
        self.eps = eps
        if kind == "p":
            if not p_init >= 1.0:
                raise ValueError(f"p_init must be >= 1, got {p_init!r}")
            self.p: nn.Parameter | None = nn.Parameter(torch.tensor([float(p_init)]))  # (1,)
        else:
            self.p = None

    def effective_p(self) -> float | None:
        """The exponent in use (clamped to >= 1) for kind ``p``; None for ``avg``/``max``."""
        if self.p is None:
            return None
        return float(self.p.detach().clamp(min=1.0).item())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "p":
            assert self.p is not None
            return p_pool(x, self.p.clamp(min=1.0), self.eps)
        if self.kind == "avg":
            return avg_pool(x)
        return max_pool(x)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}" + (f", p={self.effective_p():.3f}" if self.p is not None else "")
