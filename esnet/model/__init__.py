"""ES-Net model: backbones, pooling, salient erasing, the two-branch network."""
from esnet.model.backbone import BACKBONES, Backbone, build_backbone
from esnet.model.erasing import block_size, box_mask, linear_cam, minmax_scale, random_box, salient_box
from esnet.model.esnet import ESNet, ESNetOutput, ErasingRecord, build_model
from esnet.model.pooling import Pool, p_pool

__all__ = [
    "BACKBONES",
    "Backbone",
    "ESNet",
    "ESNetOutput",
    "ErasingRecord",
    "Pool",
    "block_size",
    "box_mask",
    "build_backbone",
    "build_model",
    "linear_cam",
    "minmax_scale",
    "p_pool",
    "random_box",
    "salient_box",
]
