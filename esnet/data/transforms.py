"""Image -> tensor pipelines for training and testing (BoT / ES-Net augmentation).

Randomness: the train pipeline draws from torch's *global* CPU RNG, as every
torchvision transform does. The library never seeds that RNG itself; instead
:class:`esnet.data.loader.ImageDataset` (given a ``seed``) runs each transform call
inside ``torch.random.fork_rng`` on its own private RNG stream, which the train loader
re-seeds in every DataLoader worker from the loader's seeded ``torch.Generator``. So a
run's augmentation depends only on ``train.seed`` and ``data.workers``, and the
caller's global RNG is left exactly as it was.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from esnet.config import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ERASING_SCALE = (0.02, 0.4)
"""Random-erasing area range as a fraction of the image (BoT: sl=0.02, sh=0.4)."""

ERASING_RATIO = (0.3, 1.0 / 0.3)
"""Random-erasing aspect-ratio range (BoT: r1=0.3)."""


class _TestTransform:
    """The test pipeline, ``Resize -> ToImage -> ToDtype(float32, scale) -> Normalize``, with the
    same tensor operations as torchvision's v2 kernels (so the result is bit-identical) but
    without their per-call dispatch, which costs about as much as decoding a 128x64 JPEG: it
    held gallery embedding to 0.84x of the model's own speed."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self.resize = v2.Resize(size, antialias=True)
        self.mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image) or image.mode != "RGB":
            raise ValueError(f"the test transform takes an RGB PIL image, got {getattr(image, 'mode', type(image))!r}")
        if (image.height, image.width) != self.size:
            image = self.resize(image)
        x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute((2, 0, 1)).contiguous()  # (3, H, W) uint8
        return x.to(torch.float32).mul_(1.0 / 255).sub_(self.mean).div_(self.std)


def build_transforms(cfg: DataConfig, *, train: bool) -> Callable[[Image.Image], torch.Tensor]:
    """The preprocessing pipeline for one RGB image.

    Test: Resize((h, w)) -> float in [0, 1] -> ImageNet Normalize.
    Train: Resize((h, w)) -> RandomHorizontalFlip(flip_p) -> Pad(pad, zeros) ->
    RandomCrop((h, w)) -> float -> Normalize -> RandomErasing(random_erasing_p).
    Random erasing fills with 0 *after* normalisation, i.e. with the ImageNet mean
    colour (BoT fills with a mean colour too).

    Args:
        cfg: uses ``height``, ``width``, ``flip_p``, ``pad``, ``random_erasing_p``.
        train: whether to add the random augmentations.
    Returns:
        A callable mapping a ``PIL.Image.Image`` (mode RGB, any size) to a
        (3, height, width) float32 tensor.
    """
    size = (cfg.height, cfg.width)
    to_tensor = [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
    ]
    if not train:
        return _TestTransform(size)
    steps: list[v2.Transform] = [v2.Resize(size, antialias=True)]
    if cfg.flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(p=cfg.flip_p))
    if cfg.pad > 0:
        steps += [v2.Pad(cfg.pad, fill=0), v2.RandomCrop(size)]
    steps += to_tensor
    if cfg.random_erasing_p > 0:
        steps.append(v2.RandomErasing(p=cfg.random_erasing_p, scale=ERASING_SCALE, ratio=ERASING_RATIO, value=0.0))
    steps.append(v2.ToPureTensor())  # a plain Tensor, not a tv_tensors.Image subclass
    return v2.Compose(steps)
