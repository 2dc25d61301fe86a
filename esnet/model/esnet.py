"""ES-Net: a BoT-style global branch plus a branch trained on features with the most
salient block erased (Shen et al., "Erasing Salient Parts to Learn More in
Re-Identification", IEEE TIP 2021).

    images -> backbone -> F (B, C, h, w)
      global: F -> pool -> f_g (triplet) -> BNNeck -> classifier (CE)
      erase:  F -> Bottleneck -> F' -> F' * (1 - mask) -> pool -> f_e (triplet) -> BNNeck -> classifier (CE)

The mask is the block with the largest window sum of the global branch's CAM for the
ground-truth identity (``erasing="salient"``), a random block of the same size
(``"random"``), or there is no erasing branch at all (``"off"``, the BoT baseline).
See ``esnet.model.erasing`` for the CAM and why it needs no second backward pass.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from esnet.config import ModelConfig
from esnet.model.backbone import Backbone, build_backbone
from esnet.model.erasing import block_size, box_mask, linear_cam, minmax_scale, random_box, salient_box
from esnet.model.pooling import Pool


@dataclass
class ESNetOutput:
    """What ``ESNet.forward`` returns, in train and eval mode alike.

    Attributes:
        embedding: (B, D) test feature: BNNeck output(s) chosen by ``test_feature``:
            the global branch's, the erasing branch's, or both concatenated.
        global_feat: (B, C) pooled global feature before the BNNeck (triplet input).
        global_logits: (B, N) train only.
        erase_feat: (B, C) pooled erasing-branch feature before its BNNeck; None if
            erasing is ``off``.
        erase_logits: (B, N) train only; None if erasing is ``off``.
        cam: (B, h, w) float32 train only, when pids are given: global-branch CAM of the
            ground-truth id, min-max scaled to [0, 1] per image, detached.
        erase_mask: (B, h, w) float32 train only, erasing != ``off``: 1.0 inside the
            erased block; all 0 while ``erasing_active`` is False.
    """

    embedding: torch.Tensor
    global_feat: torch.Tensor
    global_logits: torch.Tensor | None = None
    erase_feat: torch.Tensor | None = None
    erase_logits: torch.Tensor | None = None
    cam: torch.Tensor | None = None
    erase_mask: torch.Tensor | None = None


@dataclass
class ErasingRecord:
    """What salient erasing would do to some images right now (``ESNet.erasing_replay``).

    Attributes:
        cam: (B, h, w) float32 in [0, 1], CAM of ``class_id`` from the global branch.
        box: (B, 4) int64 ``top, left, height, width`` in feature-map cells.
        class_id: (B,) int64 identity whose CAM it is (given or predicted).
        feature_size: (h, w).
    """

    cam: torch.Tensor
    box: torch.Tensor
    class_id: torch.Tensor
    feature_size: tuple[int, int]


class Head(nn.Module):
    """Pool -> BNNeck -> bias-free classifier (BoT).

    The BNNeck's bias is frozen at 0; the classifier is initialised normal(0, 0.001).
    """

    def __init__(self, channels: int, num_classes: int, pool: str, p_init: float, p_per_channel: bool = False) -> None:
        super().__init__()
        self.pool = Pool(pool, p_init, channels=channels, per_channel=p_per_channel)
        self.bnneck = nn.BatchNorm1d(channels)
        nn.init.ones_(self.bnneck.weight)
        nn.init.zeros_(self.bnneck.bias)
        self.bnneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(channels, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def bn_scale(self, batch_feat: torch.Tensor | None = None) -> torch.Tensor:
        """(C,) the BNNeck's per-channel scale ``gamma / sqrt(var + eps)``, detached.

        Args:
            batch_feat: None for the eval-mode scale (``var`` = running variance); or the
                (B, C) pooled features the BNNeck normalised in train mode, whose biased
                batch variance (what BatchNorm1d divides by in train mode) is then used.
        Returns:
            (C,) float32, no gradient.
        """
        bn = self.bnneck
        with torch.no_grad():
            if batch_feat is None:
                var = bn.running_var.float()
            else:
                if batch_feat.ndim != 2 or batch_feat.shape[1] != bn.num_features:
                    raise ValueError(f"batch_feat must be (B, {bn.num_features}), got {tuple(batch_feat.shape)}")
                var = batch_feat.detach().float().var(dim=0, unbiased=False)  # (C,)
            return bn.weight.detach().float() / torch.sqrt(var + bn.eps)


class BranchBottleneck(nn.Module):
    """Residual bottleneck ``C -> width -> C`` (1x1, 3x3, 1x1 with BN) on the erasing branch."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        if not 1 <= width <= channels:
            raise ValueError(f"bottleneck width must be in [1, {channels}], got {width!r}")
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, 1, bias=False), nn.BatchNorm2d(channels),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, h, w) -> (B, C, h, w)."""
        return self.relu(x + self.body(x))


class ESNet(nn.Module):
    """ES-Net; build with ``build_model``.

    Attributes:
        cfg: the model config.
        num_classes: N training identities.
        backbone, global_head: always present.
        erase_bottleneck, erase_head: the erasing branch; None when ``cfg.erasing == "off"``.
        embedding_dim: D of ``ESNetOutput.embedding``.
        erasing_generator: optional CPU ``torch.Generator`` for ``erasing="random"``; when
            None the global CPU generator is used (the CLI seeds it).
        erasing_active: False keeps the whole map in the erasing branch (no block dropped);
            the trainer sets it per epoch from ``cfg.erase_from_epoch``.
    """

    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.backbone: Backbone = build_backbone(cfg.backbone, cfg.last_stride)
        c = self.backbone.out_channels
        self.global_head = Head(c, num_classes, cfg.pool, cfg.p_init, cfg.p_per_channel)
        self.erase_bottleneck: nn.Module | None = None
        self.erase_head: Head | None = None
        if cfg.erasing != "off":
            self.erase_bottleneck = BranchBottleneck(c, self.backbone.branch_width)  # c -> c
            for m in self.erase_bottleneck.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            self.erase_head = Head(c, num_classes, cfg.pool, cfg.p_init, cfg.p_per_channel)
        self.embedding_dim: int
        self.set_test_feature(cfg.test_feature)  # sets embedding_dim: c, or 2c for concat
        self.erasing_generator: torch.Generator | None = None
        self.erasing_active = True

    def set_test_feature(self, name: str) -> None:
        """Choose the test embedding (``concat``, ``global`` or ``erase``) without retraining.

        ``cfg`` and ``embedding_dim`` follow. Raises ValueError for an unknown name, or
        ``concat``/``erase`` on a model without an erasing branch (``concat`` there is
        normalised to ``global``, as in ``ModelConfig``).
        """
        cfg = dataclasses.replace(self.cfg, test_feature=name)  # validates the name and the branch rule
        self.cfg = cfg
        c = self.global_head.bnneck.num_features
        self.embedding_dim = 2 * c if cfg.test_feature == "concat" else c

    def _embedding(self, g_bn: torch.Tensor, e_bn: torch.Tensor | None) -> torch.Tensor:
        """(B, D) test embedding from the BNNeck outputs, per ``cfg.test_feature``."""
        if e_bn is None or self.cfg.test_feature == "global":
            return g_bn
        if self.cfg.test_feature == "erase":
            return e_bn
        return torch.cat([g_bn, e_bn], dim=1)

    # --- pieces ------------------------------------------------------------------------
    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) float -> F: (B, C, h, w)."""
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"images must be a float (B, 3, H, W) tensor, got {images.dtype} {tuple(images.shape)}"
            )
        return self.backbone(images)

    def global_cam(
        self, fmap: torch.Tensor, class_ids: torch.Tensor, batch_feat: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw (signed, unscaled) CAM of ``class_ids`` from the global branch, no gradient.

        ``CAM(h, w) = sum_k W[c, k] s_k F[k, h, w]`` (see ``esnet.model.erasing``); with
        average pooling this is ``h * w`` x pre-ReLU Grad-CAM of the logit whose BNNeck
        scale ``s`` is used: the eval-mode logit (running variance) by default, or the
        train-mode logit (the batch's own variance, treated as a constant) when
        ``batch_feat`` is given.

        Args:
            fmap: (B, C, h, w) backbone map.
            class_ids: (B,) int64 in [0, N).
            batch_feat: optional (B, C) pooled global features of this training batch.
        Returns:
            (B, h, w) float32, detached.
        """
        with torch.no_grad():
            head = self.global_head
            weights = head.classifier.weight.float()[class_ids] * head.bn_scale(batch_feat)[None]  # (B, C)
            return linear_cam(fmap.detach(), weights)

    def erase_block_size(self, h: int, w: int) -> tuple[int, int]:
        """(bh, bw) of the erased block on an h x w map, from cfg.erase_height/width."""
        return block_size(h, w, self.cfg.erase_height, self.cfg.erase_width)

    def learned_p(self) -> dict[str, float]:
        """``{"global": p, "erase": p}`` for P-pooling (erase only with a branch); {} otherwise.

        With ``p_per_channel`` each value is the mean over channels (see :meth:`p_spread`).
        """
        out: dict[str, float] = {}
        for name, pool in self._p_pools().items():
            p = pool.effective_p()
            assert p is not None
            out[name] = p
        return out

    def p_spread(self) -> dict[str, dict[str, float]]:
        """Per-channel P-pooling only: ``{branch: {"min", "q10", "median", "q90", "max"}}`` of p; else {}."""
        out: dict[str, dict[str, float]] = {}
        for name, pool in self._p_pools().items():
            p = pool.p_values()
            if pool.per_channel and p is not None:
                q = torch.quantile(p.double(), torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64))
                out[name] = dict(zip(("min", "q10", "median", "q90", "max"), (float(v) for v in q)))
        return out

    def p_channels(self) -> dict[str, list[float]]:
        """Every exponent in use per branch (one value, or C with ``p_per_channel``); {} without P-pooling."""
        return {name: [float(v) for v in pool.p_values()] for name, pool in self._p_pools().items()}

    def _p_pools(self) -> dict[str, Pool]:
        heads = {"global": self.global_head, "erase": self.erase_head}
        return {name: head.pool for name, head in heads.items() if head is not None and head.pool.q is not None}

    def _check_pids(self, pids: torch.Tensor, batch: int) -> None:
        if pids.shape != (batch,) or pids.dtype in (torch.bool,) or pids.is_floating_point() or pids.is_complex():
            raise ValueError(f"pids must be an integer (B,) = ({batch},) tensor, got {pids.dtype} {tuple(pids.shape)}")
        if batch and (int(pids.min()) < 0 or int(pids.max()) >= self.num_classes):
            raise ValueError(
                f"pids must be in [0, {self.num_classes}), got range [{int(pids.min())}, {int(pids.max())}]"
            )

    # --- forward -----------------------------------------------------------------------
    def forward(self, images: torch.Tensor, pids: torch.Tensor | None = None) -> ESNetOutput:
        """Run the network.

        Args:
            images: (B, 3, H, W) float32, normalised.
            pids: (B,) int64 in [0, N); required in train mode when erasing is ``salient``.
        Returns:
            ESNetOutput. Eval mode: only embedding, global_feat, erase_feat are set and no
            block is erased. Train mode: logits per branch, cam (when pids are given) and
            erase_mask (when erasing != ``off``).
        """
        fmap = self.forward_features(images)  # (B, C, h, w)
        b, _, h, w = fmap.shape
        if pids is not None:
            self._check_pids(pids, b)
        g_feat = self.global_head.pool(fmap)  # (B, C)
        g_bn = self.global_head.bnneck(g_feat)  # (B, C)

        if not self.training:
            e_feat = e_bn = None
            if self.erase_head is not None:
                assert self.erase_bottleneck is not None
                e_feat = self.erase_head.pool(self.erase_bottleneck(fmap))  # (B, C)
                if self.cfg.test_feature != "global":
                    e_bn = self.erase_head.bnneck(e_feat)
            return ESNetOutput(embedding=self._embedding(g_bn, e_bn), global_feat=g_feat, erase_feat=e_feat)

        if self.cfg.erasing == "salient" and pids is None:
            raise ValueError("pids are required in train mode when model.erasing is 'salient'")
        g_logits = self.global_head.classifier(g_bn)  # (B, N)
        # The CAM of the logit being trained: the BNNeck normalised g_feat by its batch statistics.
        cam = None if pids is None else minmax_scale(self.global_cam(fmap, pids, g_feat))  # (B, h, w)
        out = ESNetOutput(embedding=g_bn, global_feat=g_feat, global_logits=g_logits, cam=cam)
        if self.erase_head is None:
            return out

        assert self.erase_bottleneck is not None
        bh, bw = self.erase_block_size(h, w)
        if not self.erasing_active:
            mask = fmap.new_zeros((b, h, w), dtype=torch.float32)  # (B, h, w): nothing dropped
        elif self.cfg.erasing == "salient":
            assert cam is not None
            mask = box_mask(salient_box(cam, bh, bw), h, w)  # (B, h, w)
        else:
            mask = box_mask(random_box(b, h, w, bh, bw, generator=self.erasing_generator, device=fmap.device), h, w)
        refined = self.erase_bottleneck(fmap)  # F': (B, C, h, w)
        erased = refined * (1.0 - mask).to(refined.dtype)[:, None]  # (B, C, h, w)
        e_feat = self.erase_head.pool(erased)  # (B, C)
        e_bn = self.erase_head.bnneck(e_feat)
        out.erase_feat = e_feat
        out.erase_logits = self.erase_head.classifier(e_bn)  # (B, N)
        out.erase_mask = mask
        out.embedding = self._embedding(g_bn, e_bn)
        return out

    def erasing_replay(self, images: torch.Tensor, pids: torch.Tensor | None = None) -> ErasingRecord:
        """The CAM and the block salient erasing would drop now, without training side effects.

        No gradients; BatchNorm runs in eval mode (running statistics neither used from
        the batch nor updated), whatever mode the model is in; the mode is restored. The
        block is the salient one even when the model erases randomly or not at all.

        Args:
            images: (B, 3, H, W) float32 normalised.
            pids: (B,) int64 ground-truth ids; None uses the global branch's prediction.
        Returns:
            ErasingRecord.
        """
        was_training = {m: m.training for m in self.modules()}
        self.eval()
        try:
            with torch.no_grad():
                fmap = self.forward_features(images)  # (B, C, h, w)
                b, _, h, w = fmap.shape
                if pids is None:
                    head = self.global_head
                    class_id = head.classifier(head.bnneck(head.pool(fmap))).argmax(dim=1)  # (B,)
                else:
                    self._check_pids(pids, b)
                    class_id = pids.to(torch.int64)
                cam = minmax_scale(self.global_cam(fmap, class_id))  # (B, h, w)
                box = salient_box(cam, *self.erase_block_size(h, w))
        finally:
            for m, flag in was_training.items():
                m.training = flag
        return ErasingRecord(cam=cam, box=box, class_id=class_id, feature_size=(h, w))


def build_model(cfg: ModelConfig, num_classes: int) -> ESNet:
    """A randomly initialised ES-Net (never loads files: see esnet.checkpoint)."""
    return ESNet(cfg, num_classes)
