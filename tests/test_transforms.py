"""esnet.data.transforms: shapes, exact normalisation, flips, seeded reproducibility."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from esnet.config import DataConfig
from esnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

CFG = DataConfig(height=16, width=8, batch_size=8, num_instances=4)


def _noise(w: int = 12, h: int = 20, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("train", [False, True])
def test_shape_and_dtype(train):
    with torch.random.fork_rng(devices=[]):
        out = build_transforms(CFG, train=train)(_noise())
    assert type(out) is torch.Tensor
    assert out.shape == (3, 16, 8) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_constant_image_normalised_exactly():
    im = Image.new("RGB", (5, 7), (255, 0, 128))
    out = build_transforms(CFG, train=False)(im)
    # (255/255 - 0.485)/0.229, (0 - 0.456)/0.224, (128/255 - 0.406)/0.225
    expected = torch.tensor([2.2489083, -2.0357143, 0.4264924])
    assert torch.allclose(out.mean(dim=(1, 2)), expected, atol=1e-5)
    assert torch.allclose(out.std(dim=(1, 2)), torch.zeros(3), atol=1e-5)
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)


def test_test_transform_deterministic_and_leaves_global_rng_alone():
    t = build_transforms(CFG, train=False)
    state = torch.get_rng_state()
    a, b = t(_noise()), t(_noise())
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)


def test_flip_p_one_mirrors_known_asymmetric_image():
    cfg = DataConfig(height=16, width=8, batch_size=8, num_instances=4, flip_p=1.0, pad=0, random_erasing_p=0.0)
    im = Image.new("RGB", (8, 16), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 4, 16))  # left half white
    white = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    black = (0.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    plain = build_transforms(cfg, train=False)(im)
    with torch.random.fork_rng(devices=[]):
        flipped = build_transforms(cfg, train=True)(im)
    assert plain[0, 5, 0].item() == pytest.approx(white, abs=1e-5)
    assert flipped[0, 5, 0].item() == pytest.approx(black, abs=1e-5)
    assert flipped[0, 5, 7].item() == pytest.approx(white, abs=1e-5)
    assert torch.equal(flipped, plain.flip(-1))


def test_no_augmentation_equals_test_transform():
    cfg = DataConfig(height=16, width=8, batch_size=8, num_instances=4, flip_p=0.0, pad=0, random_erasing_p=0.0)
    im = _noise()
    assert torch.equal(build_transforms(cfg, train=True)(im), build_transforms(cfg, train=False)(im))


def test_erasing_p_one_fills_with_zero_mean_colour():
    cfg = DataConfig(height=32, width=16, batch_size=8, num_instances=4, flip_p=0.0, pad=0, random_erasing_p=1.0)
    im = Image.new("RGB", (16, 32), (255, 255, 255))  # normalised: all strictly positive
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        out = build_transforms(cfg, train=True)(im)
    erased = (out == 0).all(dim=0)  # (H, W)
    frac = erased.float().mean().item()
    assert 0.02 - 1e-6 <= frac <= 0.4 + 0.05  # BoT scale range, allowing rounding of the box
    assert (out[:, ~erased] > 0).all()


def test_train_transform_reproducible_with_seed_and_varies_without():
    t = build_transforms(CFG, train=True)
    im = _noise()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        a = [t(im) for _ in range(4)]
        torch.manual_seed(123)
        b = [t(im) for _ in range(4)]
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert any(not torch.equal(a[0], x) for x in a[1:])  # draws differ within a stream
