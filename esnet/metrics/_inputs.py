"""Input checks shared by the metrics: matrices, id arrays, integers; the chunk memory bound."""
from __future__ import annotations

import numpy as np
import torch

CHUNK_BYTES = 256 * 2**20
"""Working memory bound of one chunk of ``evaluate``, beyond its inputs (bytes)."""


def _as_matrix(name: str, x: object, *, convert: bool = True) -> np.ndarray:
    """A 2-D real array as float32/float64, C-contiguous (copies only when needed).

    With ``convert=False`` the array is only checked (float16, integer or non-contiguous
    arrays come back as they are) so the caller can convert it a block of rows at a time
    with :func:`_as_float_rows` instead of copying a whole Market-size matrix.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {a.shape}")
    if a.dtype != np.float16 and a.dtype.kind not in "iu" and a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must hold float16/32/64 or integer values, got dtype {a.dtype}")
    return _as_float_rows(a) if convert else a


def _as_float_rows(a: np.ndarray) -> np.ndarray:
    """float16 -> float32, integers -> float64, C-contiguous (copies only when needed)."""
    if a.dtype == np.float16:
        a = a.astype(np.float32)
    elif a.dtype.kind in "iu":
        a = a.astype(np.float64)
    return np.ascontiguousarray(a)


def _as_ids(name: str, x: object, n: int, what: str) -> np.ndarray:
    """A 1-D integer id array of length ``n`` as int64."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    if a.shape[0] != n:
        raise ValueError(f"{name} must have one entry per {what} ({n}), got {a.shape[0]}")
    return a.astype(np.int64, copy=False)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _freeze(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.setflags(write=False)

