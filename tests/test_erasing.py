"""Erasing helpers: block size, salient/random boxes, masks, CAM scaling."""
import pytest
import torch

from esnet.model.erasing import block_size, box_mask, linear_cam, minmax_scale, random_box, salient_box


def test_block_size_rounds_half_up_and_clamps():
    assert block_size(16, 8, 1 / 3, 1.0) == (5, 8)  # 5.33 -> 5
    assert block_size(8, 4, 1 / 3, 1.0) == (3, 4)  # 2.67 -> 3
    assert block_size(4, 2, 1 / 3, 1.0) == (1, 2)
    assert block_size(16, 16, 0.5, 0.5) == (8, 8)
    assert block_size(5, 3, 0.5, 0.5) == (3, 2)  # 2.5 -> 3, 1.5 -> 2
    assert block_size(1, 1, 0.1, 0.1) == (1, 1)
    with pytest.raises(ValueError, match="erase_height must be in"):
        block_size(4, 4, 0.0, 1.0)


def _rows(values, width):
    return torch.tensor(values, dtype=torch.float32)[:, None].expand(len(values), width)


def test_salient_box_on_hand_made_cams():
    # 1) stripe: 2-row window sums are [0, 0, 1, 11, 15] -> top 4.
    cam1 = _rows([0, 0, 0, 1, 10, 5], 2)
    assert salient_box(cam1[None], 2, 2).tolist() == [[4, 0, 2, 2]]
    # 2) single hot cell at (0, 3) of a 4x4: the only 2x2 window holding it starts at (0, 2).
    hot = torch.zeros(1, 4, 4)
    hot[0, 0, 3] = 1.0
    assert salient_box(hot, 2, 2).tolist() == [[0, 2, 2, 2]]
    # 3) constant map: ties go to the first block in row-major order.
    assert salient_box(torch.ones(1, 4, 4), 2, 3).tolist() == [[0, 0, 2, 3]]
    # 4) signed map: the least negative cell wins.
    assert salient_box(torch.tensor([[[-5.0], [-1.0], [-3.0]]]), 1, 1).tolist() == [[1, 0, 1, 1]]
    # 5) the largest cell (9) is not in the best window: 2x2 sums (1,1)=9, (2,2)=12, (2,1)=4 ...
    grid = torch.tensor([[0, 0, 0, 0], [0, 4, 1, 0], [0, 1, 3, 9], [0, 0, 0, 0]], dtype=torch.float32)
    # windows holding the 9: (1,2): 1+0+3+9=13, (2,2): 3+9+0+0=12 -> (1, 2) wins
    assert salient_box(grid[None], 2, 2).tolist() == [[1, 2, 2, 2]]
    # 6) a batch is answered per image.
    batch = torch.stack([cam1, cam1.flip(0)])  # second image rows [5, 10, 1, 0, 0, 0] -> top 0
    assert salient_box(batch, 2, 2).tolist() == [[4, 0, 2, 2], [0, 0, 2, 2]]
    assert salient_box(batch, 1, 2).tolist() == [[4, 0, 1, 2], [1, 0, 1, 2]]


def test_salient_box_rejects_blocks_that_do_not_fit():
    with pytest.raises(ValueError, match="must fit"):
        salient_box(torch.zeros(1, 4, 2), 5, 1)


def test_box_mask_marks_exactly_the_box():
    boxes = torch.tensor([[1, 0, 2, 3], [3, 2, 1, 1]])
    mask = box_mask(boxes, 4, 3)
    assert mask.shape == (2, 4, 3) and mask.dtype == torch.float32
    expected = torch.zeros(2, 4, 3)
    expected[0, 1:3, 0:3] = 1
    expected[1, 3, 2] = 1
    assert torch.equal(mask, expected)
    assert mask.sum(dim=(1, 2)).tolist() == [6.0, 1.0]


def test_random_box_in_bounds_reproducible_and_covering():
    g = torch.Generator().manual_seed(0)
    boxes = random_box(200, 4, 3, 1, 2, generator=g)
    assert boxes.dtype == torch.int64 and boxes.shape == (200, 4)
    assert set(boxes[:, 0].tolist()) == {0, 1, 2, 3} and set(boxes[:, 1].tolist()) == {0, 1}
    assert bool((boxes[:, 2] == 1).all()) and bool((boxes[:, 3] == 2).all())
    again = random_box(200, 4, 3, 1, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(boxes, again)
    assert box_mask(boxes, 4, 3).sum(dim=(1, 2)).eq(2).all()


def test_minmax_scale():
    cam = torch.tensor([[[-2.0, 0.0], [2.0, 6.0]], [[3.0, 3.0], [3.0, 3.0]]])
    got = minmax_scale(cam)
    assert torch.equal(got[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.equal(got[1], torch.zeros(2, 2))  # constant map -> zeros, no NaN


def test_linear_cam_matches_explicit_sum():
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(2, 3, 4, 2, generator=g)
    weights = torch.randn(2, 3, generator=g)
    expected = torch.stack([sum(weights[b, k] * fmap[b, k] for k in range(3)) for b in range(2)])
    torch.testing.assert_close(linear_cam(fmap, weights), expected)
    with pytest.raises(ValueError, match="channel_weights must be"):
        linear_cam(fmap, weights[:, :2])
