"""esnet.data.sampler.PKSampler: P ids x K images per batch, exact length, seeded, rank-split."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esnet.data.sampler import PKSampler, _num_batches

# 6 ids: sizes 8, 5, 4, 3, 2, 1 -> groups (K=4): 2, 1, 1, 1, 1, 1 (7 groups)
SIZES = {10: 8, 11: 5, 12: 4, 13: 3, 14: 2, 15: 1}
PIDS = [pid for pid, n in SIZES.items() for _ in range(n)]


def _batches(s: PKSampler) -> list[list[int]]:
    idx = list(s)
    assert len(idx) == len(s)
    assert len(idx) % s.batch_size == 0
    return [idx[i : i + s.batch_size] for i in range(0, len(idx), s.batch_size)]


def _check_pk(batches, pids, p, k):
    for b in batches:
        ids = [pids[i] for i in b]
        counts = Counter(ids)
        assert len(counts) == p, b
        assert set(counts.values()) == {k}, b
        for j in range(p):  # each identity's K images are adjacent
            assert len(set(ids[j * k : (j + 1) * k])) == 1


def test_every_batch_is_p_ids_by_k_images():
    s = PKSampler(PIDS, batch_size=8, num_instances=4, seed=0)
    # 7 groups, P = 2: B = 3 (sum min(c, 3) = 7 >= 6; B = 4 would need 8)
    assert s.num_batches == 3 and len(s) == 24
    for epoch in range(5):
        s.set_epoch(epoch)
        batches = _batches(s)
        assert len(batches) == 3
        _check_pk(batches, PIDS, p=2, k=4)


def test_k_distinct_images_when_enough_and_replacement_when_not():
    s = PKSampler(PIDS, batch_size=8, num_instances=4, seed=3)
    seen_small = False
    for epoch in range(10):
        s.set_epoch(epoch)
        for b in _batches(s):
            for j in range(2):
                group = b[j * 4 : (j + 1) * 4]
                pid = PIDS[group[0]]
                if SIZES[pid] >= 4:
                    assert len(set(group)) == 4, (pid, group)
                else:
                    seen_small = True
                    assert len(set(group)) <= SIZES[pid]
                    assert {PIDS[i] for i in group} == {pid}
    assert seen_small


def test_id_with_many_images_gives_several_groups_disjoint():
    pids = [0] * 12 + [1] * 12 + [2] * 12  # each id: 3 groups of K=4
    s = PKSampler(pids, batch_size=8, num_instances=4, seed=1)
    assert s.num_batches == 4  # 9 groups, P = 2 -> floor(9 / 2) = 4, feasible
    idx = list(s)
    assert len(idx) == 32 and len(set(idx)) == 32  # no image twice in an epoch
    _check_pk(_batches(s), pids, p=2, k=4)


def test_deterministic_per_seed_epoch_and_different_across_epochs():
    a = PKSampler(PIDS, batch_size=8, num_instances=4, seed=5)
    b = PKSampler(PIDS, batch_size=8, num_instances=4, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating twice gives the same epoch
    b.set_epoch(3)
    assert list(a) != list(b)
    c = PKSampler(PIDS, batch_size=8, num_instances=4, seed=6)
    c.set_epoch(2)
    assert list(a) != list(c)


def test_no_global_rng_used():
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    s = PKSampler(PIDS, batch_size=8, num_instances=4, seed=0)
    first = list(s)
    np.random.seed(99)
    assert list(s) == first
    np.random.seed(0)
    assert np.array_equal(np.random.get_state()[1], state)


def test_two_ranks_disjoint_and_same_length():
    pids = [i // 4 for i in range(4 * 20)]  # 20 ids x 4 images, P = 4 -> 5 batches
    r0 = PKSampler(pids, batch_size=16, num_instances=4, seed=0, rank=0, world_size=2)
    r1 = PKSampler(pids, batch_size=16, num_instances=4, seed=0, rank=1, world_size=2)
    full = PKSampler(pids, batch_size=16, num_instances=4, seed=0)
    assert full.num_batches == 5
    assert len(r0) == len(r1) == 2 * 16  # 5 batches truncated to 4, 2 each
    for epoch in (0, 1):
        for s in (r0, r1, full):
            s.set_epoch(epoch)
        a, b = list(r0), list(r1)
        assert len(a) == len(r0) and len(b) == len(r1)
        assert not set(a) & set(b)
        whole = _batches(full)
        assert _batches(r0) == [whole[0], whole[2]] and _batches(r1) == [whole[1], whole[3]]
        _check_pk(_batches(r0) + _batches(r1), pids, p=4, k=4)


def test_too_few_ids_names_the_values():
    with pytest.raises(ValueError, match=r"at least P = batch_size / num_instances = 16 / 4 = 4 distinct identities, got 3"):
        PKSampler([0, 0, 1, 1, 2, 2], batch_size=16, num_instances=4, seed=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 10, "num_instances": 4, "seed": 0}, "multiple of num_instances"),
        ({"batch_size": 8, "num_instances": 0, "seed": 0}, "num_instances must be >= 1"),
        ({"batch_size": 8, "num_instances": 4, "seed": -1}, "seed must be a non-negative"),
        ({"batch_size": 8, "num_instances": 4, "seed": 0, "rank": 2, "world_size": 2}, "rank=2"),
        ({"batch_size": 8, "num_instances": 4, "seed": 0, "world_size": 4}, "fewer than world_size=4"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PKSampler(PIDS, **kwargs)


def test_num_batches_reference_values():
    assert _num_batches(np.array([1, 1, 1, 1]), 2) == 2
    assert _num_batches(np.array([10, 1, 1]), 2) == 2  # the big id can fill only one slot per batch
    assert _num_batches(np.array([10, 10, 1]), 2) == 10
    assert _num_batches(np.array([3, 3, 3]), 3) == 3


def test_unbalanced_ids_still_valid():
    pids = [0] * 40 + [1] * 4 + [2] * 4 + [3] * 4  # id 0 has 10 groups, others 1
    s = PKSampler(pids, batch_size=8, num_instances=4, seed=0)
    assert s.num_batches == 3  # sum min(c, 3) = 3 + 3 = 6 = 2 * 3
    _check_pk(_batches(s), pids, p=2, k=4)


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=3, max_size=12),
    k=st.integers(1, 4),
    p=st.integers(1, 3),
    seed=st.integers(0, 2**32),
    epoch=st.integers(0, 5),
)
def test_property_pk_structure_and_exact_length(sizes, k, p, seed, epoch):
    pids = [i for i, n in enumerate(sizes) for _ in range(n)]
    s = PKSampler(pids, batch_size=p * k, num_instances=k, seed=seed)
    s.set_epoch(epoch)
    batches = _batches(s)
    assert len(batches) == s.num_batches
    _check_pk(batches, pids, p=p, k=k)
