"""Backbones: torchvision ResNet-50/18 and MobileNetV2, cut before global pooling.

Always randomly initialised here (``weights=None``): pretrained weights are loaded only by
``esnet.checkpoint.load_backbone_weights``. The state-dict keys of each backbone match the
keys of the corresponding full torchvision model (``conv1.weight``, ``layer4.0...`` for
ResNet; ``features.0.0.weight`` ... for MobileNetV2), so an ImageNet state dict loads
after dropping its classifier keys (``classifier_prefixes``).
"""
from __future__ import annotations

from typing import Callable

import torch
import torchvision
from torch import nn


class Backbone(nn.Module):
    """A feature extractor ``(B, 3, H, W) -> (B, C, h, w)``.

    Attributes:
        name: key in ``BACKBONES``.
        out_channels: C.
        classifier_prefixes: key prefixes of the full torchvision model that are not part
            of the backbone (its ImageNet classifier), dropped when loading weights.
        branch_width: inner width of the erasing branch's bottleneck (C -> width -> C).
    """

    name: str = ""
    out_channels: int = 0
    classifier_prefixes: tuple[str, ...] = ()

    @property
    def branch_width(self) -> int:
        """C/4 as in ResNet bottlenecks (BDB's extra block); backbones may narrow it."""
        return self.out_channels // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_last_stride(last_stride: int) -> None:
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")


class ResNetBackbone(Backbone):
    """torchvision ResNet conv1..layer4; ``last_stride`` is the stride of layer4.

    Args:
        arch: ``resnet50`` or ``resnet18``.
        last_stride: 1 (BoT / ES-Net default: a 16x8 map from 256x128) or 2 (torchvision).
    """

    classifier_prefixes = ("fc.",)

    def __init__(self, arch: str, last_stride: int = 1) -> None:
        super().__init__()
        _check_last_stride(last_stride)
        builders = {"resnet50": torchvision.models.resnet50, "resnet18": torchvision.models.resnet18}
        if arch not in builders:
            raise ValueError(f"ResNet arch must be one of {sorted(builders)}, got {arch!r}")
        net = builders[arch](weights=None)
        self.name = arch
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        first = self.layer4[0]
        for module in first.modules():  # the stride-2 conv of the first block + its downsample
            if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                module.stride = (last_stride, last_stride)
        self.out_channels = net.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) float -> (B, C, H/16, W/16) at last_stride 1 (H/32 at 2)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


class MobileNetV2Backbone(Backbone):
    """``torchvision.models.mobilenet_v2().features`` (1280 channels).

    Args:
        last_stride: 1 sets the stride of the last stride-2 block (features[14], its
            depthwise conv) to 1: a 128x64 input gives an 8x4 map instead of 4x2.
    """

    name = "mobilenet_v2"
    classifier_prefixes = ("classifier.",)

    def __init__(self, last_stride: int = 1) -> None:
        super().__init__()
        _check_last_stride(last_stride)
        self.features = torchvision.models.mobilenet_v2(weights=None).features
        depthwise = self.features[14].conv[1][0]
        if not (isinstance(depthwise, nn.Conv2d) and depthwise.stride == (2, 2)):
            raise RuntimeError("torchvision MobileNetV2 layout changed: features[14].conv[1][0] is not a stride-2 conv")
        depthwise.stride = (last_stride, last_stride)
        self.out_channels = 1280

    @property
    def branch_width(self) -> int:
        """1280/16 = 80: MobileNetV2's own blocks are narrow (inverted residuals); a C/4 block
        on 1280 channels would cost as much as the whole backbone (measured 1.35x step time)."""
        return self.out_channels // 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) float -> (B, 1280, H/16, W/16) at last_stride 1 (H/32 at 2)."""
        return self.features(x)


def resnet50(last_stride: int = 1) -> Backbone:
    return ResNetBackbone("resnet50", last_stride)


def resnet18(last_stride: int = 1) -> Backbone:
    return ResNetBackbone("resnet18", last_stride)


def mobilenet_v2(last_stride: int = 1) -> Backbone:
    return MobileNetV2Backbone(last_stride)


BACKBONES: dict[str, Callable[[int], Backbone]] = {
    "resnet50": resnet50,
    "resnet18": resnet18,
    "mobilenet_v2": mobilenet_v2,
}


def build_backbone(name: str, last_stride: int = 1) -> Backbone:
    """``BACKBONES[name](last_stride)``; unknown names raise ValueError listing the choices."""
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {name!r}")
    return BACKBONES[name](last_stride)
