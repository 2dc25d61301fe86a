"""Query x gallery distance matrices (cosine or Euclidean) with torch matmul (``pairwise_distance``)."""
from __future__ import annotations

import numpy as np
import torch

from esnet.metrics._inputs import _check_int

METRICS = ("cosine", "euclidean")


def _as_features(name: str, x: object) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        a = np.asarray(x)
        # Read-only inputs (a cached memmap) are copied: torch refuses to wrap non-writable memory.
        t = torch.from_numpy(a if a.flags.writeable else np.array(a))
    if t.ndim != 2:
        raise ValueError(f"{name} must be (N, D) features, got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")
    t = t.detach().to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return t


def _unit_rows(name: str, t: torch.Tensor) -> torch.Tensor:
    """(N, D) rows divided by their L2 norm; a zero row is refused (cosine distance is undefined)."""
    norms = t.norm(dim=1)  # (N,)
    zero = (norms == 0).nonzero()
    if zero.numel():
        raise ValueError(f"{name} row {int(zero[0, 0])} has zero norm: cosine distance is undefined")
    return t / norms[:, None]


def pairwise_distance(
    qf: np.ndarray | torch.Tensor,
    gf: np.ndarray | torch.Tensor,
    metric: str = "cosine",
    *,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Query x gallery distance matrix with torch matmul, in chunks of query rows.

    Computed on the device of the inputs (numpy -> CPU), in float32, without gradient: for
    evaluation, search and re-ranking. The triplet loss's differentiable within-batch
    distances are ``esnet.losses.batch_euclidean_distance``.

    Args:
        qf: (Q, D) query features, any norm.
        gf: (G, D) gallery features, any norm.
        metric: ``cosine`` (1 - cosine similarity, in [0, 2]; zero-norm rows are
            rejected) or ``euclidean`` (via |q|^2 + |g|^2 - 2 q.g, clamped at 0).
        chunk_size: query rows per matmul.
    Returns:
        (Q, G) float32 numpy array.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    q, g = _as_features("qf", qf), _as_features("gf", gf)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"qf and gf must have the same feature size, got {q.shape[1]} and {g.shape[1]}")
    if q.device != g.device:
        raise ValueError(f"qf and gf must be on the same device, got {q.device} and {g.device}")
    if metric == "cosine":
        q, g = _unit_rows("qf", q), _unit_rows("gf", g)
    else:
        q2, g2 = (q * q).sum(dim=1), (g * g).sum(dim=1)  # (Q,), (G,)
    out = np.empty((q.shape[0], g.shape[0]), dtype=np.float32)
    out_t = torch.from_numpy(out)
    for s in range(0, q.shape[0], chunk_size):
        prod = q[s:s + chunk_size] @ g.T  # (c, G)
        if metric == "cosine":
            d = 1.0 - prod
        else:
            d = (q2[s:s + chunk_size, None] + g2[None, :] - 2.0 * prod).clamp_(min=0.0).sqrt_()
        out_t[s:s + chunk_size] = d.cpu()
    return out
