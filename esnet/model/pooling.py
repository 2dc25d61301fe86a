"""Global pooling of a feature map: P-pooling (trainable generalized mean), average, max.

P-pooling (the pooling ES-Net uses) is the generalized mean
``(mean_hw x^p)^(1/p)``: p = 1 is average pooling and p -> inf tends to max pooling.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from esnet.config import POOLS  # the pooling kinds: one tuple, checked by the config too


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


def softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    """The q with ``softplus(q) = y`` for y > 0: ``q = y + log(-expm1(-y))`` (stable for small and large y)."""
    y64 = y.double()
    return (y64 + torch.log(-torch.expm1(-y64))).float()


def q_from_p(p: torch.Tensor, tiny: float = 1e-6) -> torch.Tensor:
    """The unconstrained parameter q of an exponent p: ``p = 1 + softplus(q)``.

    Exponents at or below 1 (an old raw-p checkpoint whose p was clamped to 1 in use)
    are mapped to ``1 + tiny``, the nearest exponent the smooth map can represent.

    Args:
        p: (1,) or (C,) exponent(s).
        tiny: margin above 1, > 0.
    Returns:
        q, same shape, float32.
    """
    return softplus_inverse(p.double().clamp(min=1.0 + tiny) - 1.0)


class Pool(nn.Module):
    """Global pooling ``(B, C, H, W) -> (B, C)``.

    For kind ``p`` the exponent is ``p = 1 + softplus(q)`` with q the trainable parameter:
    p > 1 always, and ``dp/dq = sigmoid(q) > 0``, so the gradient never dies (a clamp at 1
    has zero gradient below 1, and a p that crossed 1 would stick there). q starts at
    ``softplus^-1(p_init - 1)``, so p equals p_init exactly at initialisation.

    Args:
        kind: ``p`` (P-pooling with a trainable exponent), ``avg`` or ``max``.
        p_init: initial exponent for ``p``, > 1; ignored for the other kinds.
        eps: lower clamp of the input for ``p``.
        channels: C; with ``per_channel`` one exponent per channel, else ignored.
        per_channel: one p per channel (q of shape (C,)) instead of one per layer.

    Attributes:
        q: (1,) or (C,) trainable parameter of the exponent for kind ``p``; None otherwise.
    """

    def __init__(self, kind: str, p_init: float = 3.0, eps: float = 1e-6, *, channels: int = 1,
                 per_channel: bool = False) -> None:
        super().__init__()
        if kind not in POOLS:
            raise ValueError(f"pool kind must be one of {list(POOLS)}, got {kind!r}")
        if eps <= 0.0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.kind = kind
        self.eps = eps
        self.per_channel = bool(per_channel) and kind == "p"
        if kind == "p":
            if not (isinstance(p_init, (int, float)) and math.isfinite(p_init) and p_init > 1.0):
                raise ValueError(f"p_init must be a finite number > 1 (p = 1 + softplus(q)), got {p_init!r}")
            if per_channel and not (isinstance(channels, int) and channels >= 1):
                raise ValueError(f"channels must be an integer >= 1 for a per-channel p, got {channels!r}")
            n = channels if per_channel else 1
            q0 = q_from_p(torch.tensor([float(p_init)], dtype=torch.float64))  # (1,)
            self.q: nn.Parameter | None = nn.Parameter(q0.expand(n).clone())  # (1,) or (C,)
        else:
            self.q = None

    def exponent(self) -> torch.Tensor | None:
        """(1,) or (C,) ``p = 1 + softplus(q)``, differentiable in q; None for ``avg``/``max``."""
        if self.q is None:
            return None
        return 1.0 + F.softplus(self.q.float())

    def p_values(self) -> torch.Tensor | None:
        """(1,) or (C,) float32 exponent(s) in use, detached, on the CPU; None for ``avg``/``max``."""
        p = self.exponent()
        return None if p is None else p.detach().cpu()

    def effective_p(self) -> float | None:
        """The exponent in use for kind ``p`` (the mean over channels when per-channel); None otherwise."""
        p = self.p_values()
        return None if p is None else float(p.mean().item())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "p":
            p = self.exponent()
            assert p is not None
            return p_pool(x, p, self.eps)
        if self.kind == "avg":
            return avg_pool(x)
        return max_pool(x)

    def extra_repr(self) -> str:
        if self.q is None:
            return f"kind={self.kind!r}"
        shape = ", per channel (mean)" if self.per_channel else ""
        return f"kind={self.kind!r}, p={self.effective_p():.3f}{shape}"
