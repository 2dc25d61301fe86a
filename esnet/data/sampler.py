"""P x K identity sampler for metric learning (batch-hard triplet needs positives in-batch).

Every consecutive ``batch_size`` indices it yields are P = batch_size / K distinct
identities with K images each, the K images of one identity adjacent. Like torchreid's
``RandomIdentitySampler``, an identity with n >= K images contributes ``n // K``
disjoint K-groups per epoch (the ``n % K`` left over change from epoch to epoch) and
one with n < K images contributes one group drawn with replacement. Unlike it, the
shuffle comes from ``numpy.random.default_rng((seed, epoch))`` (no global RNG), the
number of batches is fixed in advance (so ``len()`` is exact), and it splits whole
batches between distributed ranks.

Batches per epoch: the largest B with ``sum_i min(c_i, B) >= P * B``, where c_i is
identity i's number of groups; that is the most batches of P *distinct* identities
the groups allow (an identity cannot fill two slots of one batch). Each batch draws
its identities uniformly among those with groups left, except that identities which
would otherwise become impossible to place are drawn first.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


def _num_batches(groups: np.ndarray, p: int) -> int:
    """Largest B >= 0 with sum(min(groups, B)) >= p * B (the feasible set is [0, B*])."""
    lo, hi = 0, int(groups.sum()) // p
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int(np.minimum(groups, mid).sum()) >= p * mid:
            lo = mid
        else:
            hi = mid - 1
    return lo


class PKSampler(torch.utils.data.Sampler[int]):
    """Yields dataset indices in batches of P identities x K instances.

    Args:
        pids: identity of every dataset item, ``pids[i]`` for index i.
        batch_size: indices per batch, a multiple of ``num_instances``.
        num_instances: K, images per identity in a batch.
        seed: non-negative; with the epoch, fixes the order completely.
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of distributed processes; each rank gets
            ``num_batches // world_size`` whole batches, disjoint from the other ranks'
            (all ranks compute the same epoch plan and take every world_size-th batch).
    Raises:
        ValueError: bad sizes, or fewer distinct identities than P.
    """

    def __init__(
        self,
        pids: Sequence[int],
        *,
        batch_size: int,
        num_instances: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_instances < 1:
            raise ValueError(f"num_instances must be >= 1, got {num_instances!r}")
        if batch_size < num_instances or batch_size % num_instances != 0:
            raise ValueError(
                f"batch_size must be a positive multiple of num_instances ({num_instances}), got {batch_size!r}"
            )
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size) with world_size >= 1, got rank={rank!r}, world_size={world_size!r}")
        pid_arr = np.asarray(pids, dtype=np.int64)
        if pid_arr.ndim != 1:
            raise ValueError(f"pids must be a flat sequence of integers, got shape {pid_arr.shape}")
        self.batch_size = int(batch_size)
        self.num_instances = int(num_instances)
        self.num_pids_per_batch = self.batch_size // self.num_instances
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0

        ids, inverse = np.unique(pid_arr, return_inverse=True)
        if len(ids) < self.num_pids_per_batch:
            raise ValueError(
                f"PKSampler needs at least P = batch_size / num_instances = {self.batch_size} / "
                f"{self.num_instances} = {self.num_pids_per_batch} distinct identities, got {len(ids)}"
            )
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(ids)))[:-1]
        self._index_of_id: list[np.ndarray] = np.split(order, bounds)  # per identity, ascending indices
        sizes = np.array([len(ix) for ix in self._index_of_id], dtype=np.int64)
        self._groups = np.maximum(sizes // self.num_instances, 1)  # (num_ids,)
        self.num_batches = _num_batches(self._groups, self.num_pids_per_batch)
        self.batches_per_rank = self.num_batches // self.world_size
        if self.batches_per_rank == 0:
            raise ValueError(
                f"PKSampler makes {self.num_batches} batch(es) per epoch, fewer than world_size={self.world_size}"
            )

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next ``iter()`` yields (call before each epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_rank * self.batch_size

    def __iter__(self) -> Iterator[int]:
        for batch in self.epoch_batches(self.epoch):
            yield from batch.tolist()

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches for one epoch.

        Returns:
            ``batches_per_rank`` arrays, each (batch_size,) int64 dataset indices.
        """
        rng = np.random.default_rng((self.seed, int(epoch)))
        k, p, num_b = self.num_instances, self.num_pids_per_batch, self.num_batches
        groups: list[np.ndarray] = []  # per identity, (min(c_i, B), K) index groups
        for ix, c in zip(self._index_of_id, self._groups):
            if len(ix) < k:
                g = rng.choice(ix, size=(1, k), replace=True)
            else:
                g = rng.permutation(ix)[: c * k].reshape(c, k)
            groups.append(g[:num_b])
        left = np.array([len(g) for g in groups], dtype=np.int64)  # (num_ids,)
        used = np.zeros_like(left)
        batches = []
        for t in range(num_b):
            remaining = num_b - t
            # Keeping sum(min(left, remaining)) >= p * remaining makes every later batch
            # possible; it holds iff at most `slack` of the ids with left >= remaining skip this batch.
            slack = int(np.minimum(left, remaining).sum()) - p * remaining
            big = np.flatnonzero(left >= remaining)
            need = max(0, len(big) - slack)
            forced = rng.choice(big, size=need, replace=False) if need else big[:0]
            pool = np.setdiff1d(np.flatnonzero(left > 0), forced, assume_unique=True)
            chosen = np.concatenate([forced, rng.choice(pool, size=p - need, replace=False)])
            chosen = rng.permutation(chosen)
            batches.append(np.concatenate([groups[i][used[i]] for i in chosen]))
            used[chosen] += 1
            left[chosen] -= 1
        keep = batches[: self.batches_per_rank * self.world_size]
        return keep[self.rank :: self.world_size]
