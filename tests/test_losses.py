"""Losses on hand-computed cases."""
import math

import pytest
import torch
import torch.nn.functional as F

from esnet.config import LossConfig
from esnet.losses import accuracy, batch_euclidean_distance, batch_hard_triplet, cross_entropy_smooth, total_loss
from esnet.model import ESNetOutput


def test_ce_without_smoothing_equals_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    pids = torch.tensor([0, 1, 2, 3, 1, 0])
    torch.testing.assert_close(cross_entropy_smooth(logits, pids, epsilon=0.0), F.cross_entropy(logits, pids))
    torch.testing.assert_close(
        cross_entropy_smooth(logits, pids, epsilon=0.1), F.cross_entropy(logits, pids, label_smoothing=0.1)
    )


def test_ce_smoothing_two_class_hand_case():
    # softmax([0, ln 3]) = [1/4, 3/4]; target 1 with epsilon 0.2 -> q = [0.1, 0.9]
    logits = torch.tensor([[0.0, math.log(3.0)]])
    expected = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))  # 0.39754...
    got = cross_entropy_smooth(logits, torch.tensor([1]), epsilon=0.2)
    assert abs(float(got) - expected) < 1e-6
    assert abs(expected - 0.3975433) < 1e-6
    with pytest.raises(ValueError, match="epsilon must be in"):
        cross_entropy_smooth(logits, torch.tensor([1]), epsilon=1.0)


def test_batch_hard_triplet_hand_case():
    # a=(0,0), b=(3,4) are id 0; c=(3,0), d=(0,8) are id 1.
    # ab=5 ac=3 ad=8 bc=4 bd=5 cd=sqrt(73)
    # a: 5-3+m  b: 5-4+m  c: sqrt73-3+m  d: sqrt73-5+m  (all > 0 at m = 0.3)
    feats = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 0.0], [0.0, 8.0]])
    pids = torch.tensor([0, 0, 1, 1])
    m = 0.3
    expected = ((5 - 3 + m) + (5 - 4 + m) + (math.sqrt(73) - 3 + m) + (math.sqrt(73) - 5 + m)) / 4
    got = batch_hard_triplet(feats, pids, margin=m)
    assert abs(float(got) - expected) < 1e-5
    # 1-D: x = [0, 2, 3, 4], ids [0, 0, 1, 1]: per-anchor [0, 1.3, 0.3, 0] -> 0.4
    x = torch.tensor([[0.0], [2.0], [3.0], [4.0]])
    assert abs(float(batch_hard_triplet(x, pids, margin=0.3)) - 0.4) < 1e-5
    assert abs(float(batch_hard_triplet(x, pids, margin=0.0)) - 0.25) < 1e-5  # [0, 1, 0, 0]


def test_triplet_is_finite_on_duplicate_points_and_needs_two_ids():
    feats = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [2.0, 1.0]], requires_grad=True)
    loss = batch_hard_triplet(feats, torch.tensor([0, 0, 1, 1]), margin=0.3)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()
    with pytest.raises(ValueError, match="at least 2 identities"):
        batch_hard_triplet(feats, torch.tensor([2, 2, 2, 2]), margin=0.3)
    d = batch_euclidean_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    torch.testing.assert_close(d, torch.tensor([[0.0, 5.0], [5.0, 0.0]]), atol=1e-5, rtol=0)


def _output(erasing: bool) -> ESNetOutput:
    g = torch.Generator().manual_seed(3)
    feat = lambda: torch.randn(4, 6, generator=g)  # noqa: E731
    logits = lambda: torch.randn(4, 3, generator=g)  # noqa: E731
    return ESNetOutput(
        embedding=feat(),
        global_feat=feat(),
        global_logits=logits(),
        erase_feat=feat() if erasing else None,
        erase_logits=logits() if erasing else None,
    )


@pytest.mark.parametrize("erasing", [True, False])
def test_total_loss_keys_and_weights(erasing):
    out = _output(erasing)
    pids = torch.tensor([0, 0, 2, 2])
    cfg = LossConfig(label_smoothing=0.1, triplet_margin=0.3, ce_weight=2.0, triplet_weight=0.5, erase_weight=0.25)
    losses = total_loss(out, pids, cfg)
    keys = {"global_ce", "global_triplet", "total"} | ({"erase_ce", "erase_triplet"} if erasing else set())
    assert set(losses) == keys
    ce = cross_entropy_smooth(out.global_logits, pids, epsilon=0.1)
    tri = batch_hard_triplet(out.global_feat, pids, margin=0.3)
    torch.testing.assert_close(losses["global_ce"], ce)
    expected = 2.0 * ce + 0.5 * tri
    if erasing:
        e_ce = cross_entropy_smooth(out.erase_logits, pids, epsilon=0.1)
        e_tri = batch_hard_triplet(out.erase_feat, pids, margin=0.3)
        expected = expected + 0.25 * (2.0 * e_ce + 0.5 * e_tri)
    torch.testing.assert_close(losses["total"], expected)


def test_total_loss_rejects_eval_output():
    out = ESNetOutput(embedding=torch.zeros(2, 3), global_feat=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="train-mode output"):
        total_loss(out, torch.tensor([0, 1]), LossConfig())


def test_accuracy():
    logits = torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, -1.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
