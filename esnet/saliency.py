"""Saliency of a trained ES-Net: which image regions drive an identity, an embedding, a match.

Every function takes an ``ESNet`` in eval mode and preprocessed images ``(B, 3, H, W)``
float32 (ImageNet-normalised, see ``esnet.data.transforms``) and returns data, never
figures. Maps come back as ``SaliencyMap``: ``heat`` at image resolution in [0, 1]
(bilinear upsampling of the feature-level map, then min-max scaling per image; a
constant map becomes all zeros) and ``raw``, the unscaled values it was made from.

Methods:
  * ``own_cam``: the global branch's own CAM, the map ES-Net erases from.
  * ``grad_cam``: captum ``LayerGradCAM`` on the backbone output F (B, C, h, w).
  * ``integrated_gradients``: captum ``IntegratedGradients`` at pixel level from a grey
    or blurred baseline (never all-zeros: see ``ig_baseline``).
  * ``similarity_saliency``: Grad-CAM of the cosine similarity of two images.
  * ``erasing_replay_map``: the block ES-Net would erase now, in image pixels.

Targets (``grad_cam``, ``integrated_gradients``): with ``class_ids`` the global
branch's identity logit; without, the *self projection* ``t(x') = <e(x'), e(x)/|e(x)|>``,
the length of the embedding along the input's own (fixed, detached) descriptor direction.
At ``x' = x`` it equals ``|e(x)|`` and its gradient is the unit embedding, so the map
shows the regions that make up the descriptor; it is a fixed function of ``x'``, as
Integrated Gradients needs, and for ``grad_cam`` its map equals
``similarity_saliency(x, x)``'s.

No function mutates the model: nothing is trained, modes and ``requires_grad`` flags are
untouched (a model in train mode is rejected), captum's hooks are removed, and gradients
are taken with ``torch.autograd.grad`` (no ``.grad`` is accumulated on parameters).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerGradCam

from esnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from esnet.model import ESNet, minmax_scale

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

    from esnet.data.types import Sample
    from esnet.embedding import Inference

IG_BASELINES = ("blur", "grey")
BLUR_SIGMA_FRACTION = 0.1
"""Gaussian sigma of the ``blur`` baseline as a fraction of ``max(H, W)`` (12.8 px at 128)."""


@dataclass(frozen=True)
class SaliencyMap:
    """One image's saliency.

    Attributes:
        heat: (H, W) float32 in [0, 1] at image resolution, min-max scaled (all zeros
            when the map is constant).
        raw: float32 values before upsampling/scaling: (h, w) feature cells for CAM-type
            maps (signed CAM for ``own_cam``, ReLU'd Grad-CAM otherwise), (H, W) summed
            |attribution| for Integrated Gradients.
        kind: ``own_cam``, ``grad_cam``, ``integrated_gradients`` or ``similarity``.
        info: the numbers behind the map (class_id, prob, score, baseline, delta, ...).
    """

    heat: np.ndarray
    raw: np.ndarray
    kind: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ErasingView:
    """The block salient erasing would drop now, at image resolution.

    Attributes:
        cam: (H, W) float32 in [0, 1], the upsampled CAM the block was chosen from.
        box_pixels: ``top, left, height, width`` in image pixels (cells times H/h, W/w,
            edges rounded half up).
        box_cells: ``top, left, height, width`` in feature cells.
        class_id: identity whose CAM it is (given or predicted).
        mask: (H, W) bool, True inside ``box_pixels``.
    """

    cam: np.ndarray
    box_pixels: tuple[int, int, int, int]
    box_cells: tuple[int, int, int, int]
    class_id: int
    mask: np.ndarray


# --- checks and small pieces ---------------------------------------------------------------
def _check_inputs(model: ESNet, images: torch.Tensor, name: str = "images") -> None:
    if not isinstance(model, ESNet):
        raise TypeError(f"model must be an esnet.model.ESNet, got {type(model).__name__}")
    training = [n or "<root>" for n, m in model.named_modules() if m.training]
    if training:
        raise ValueError(f"model must be in eval mode (call model.eval()); modules in train mode: {training[:3]}")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a (B, 3, H, W) tensor with B >= 1, got {shape}")
    if images.dtype != torch.float32:
        raise ValueError(f"{name} must be float32 (normalised), got {images.dtype}")
    device = next(model.parameters()).device
    if images.device != device:
        raise ValueError(f"{name} are on {images.device} but the model is on {device}; move them explicitly")


def _check_class_ids(model: ESNet, class_ids: torch.Tensor, batch: int) -> torch.Tensor:
    if not isinstance(class_ids, torch.Tensor) or class_ids.shape != (batch,) or class_ids.dtype not in (
        torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8
    ):
        got = f"{class_ids.dtype} {tuple(class_ids.shape)}" if isinstance(class_ids, torch.Tensor) else repr(class_ids)
        raise ValueError(f"class_ids must be an integer ({batch},) tensor, got {got}")
    lo, hi = int(class_ids.min()), int(class_ids.max())
    if lo < 0 or hi >= model.num_classes:
        raise ValueError(f"class_ids must be in [0, {model.num_classes}), got range [{lo}, {hi}]")
    return class_ids.to(torch.int64)


def _heat(raw: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """raw: (B, h, w) -> (B, H, W) float32 numpy in [0, 1].

    Min-max per image, bilinear upsampling, min-max again: the first scaling decides
    constancy on the raw values (upsampling a constant map adds rounding noise that a
    single min-max after it would blow up to [0, 1]); the second puts the upsampled peak,
    which falls between pixels, back at exactly 1.
    """
    scaled = minmax_scale(raw.detach().float())[:, None]  # (B, 1, h, w)
    up = F.interpolate(scaled, size=size, mode="bilinear", align_corners=False)  # (B, 1, H, W)
    return minmax_scale(up[:, 0]).cpu().numpy().astype(np.float32)  # (B, H, W)


def _logits(model: ESNet, embedding: torch.Tensor) -> torch.Tensor:
    """(B, D) eval embedding -> (B, N) global-branch logits (its first C dims are the BNNeck output)."""
    return model.global_head.classifier(embedding[:, : model.backbone.out_channels])


def _unit_embedding(model: ESNet, images: torch.Tensor) -> torch.Tensor:
    """(B, D) float32 L2-normalised embedding, no gradient."""
    with torch.no_grad():
        return F.normalize(model(images).embedding.float(), dim=1)


def _projection(model: ESNet, normalise: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``t(x, u) = <e(x), u>`` (divided by the detached ``|e(x)|`` when ``normalise``): (B,)."""

    def forward(x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        e = model(x).embedding  # (B, D)
        t = (e * direction).sum(dim=1)  # (B,)
        return t / e.norm(dim=1).detach() if normalise else t

    return forward


def _layer_grad_cam(forward: Callable[..., torch.Tensor], model: ESNet, images: torch.Tensor,
                    target: torch.Tensor | None, extra: tuple) -> torch.Tensor:
    """ReLU(sum_k mean_hw(dT/dF_k) F_k) on the backbone output via captum: (B, h, w) float32."""
    with torch.enable_grad():
        attr = LayerGradCam(forward, model.backbone).attribute(
            images, target=target, additional_forward_args=extra or None, relu_attributions=True
        )  # (B, 1, h, w)
    return attr.detach().float()[:, 0]


def _target(model: ESNet, images: torch.Tensor, class_ids: torch.Tensor | None):
    """(forward, captum target, extra args, info per image) of a ``grad_cam``/IG target."""
    b = images.shape[0]
    if class_ids is None:
        unit = _unit_embedding(model, images)  # (B, D)
        with torch.no_grad():
            score = _projection(model, normalise=False)(images, unit)  # (B,) = |e|
        info = [{"target": "embedding", "score": float(s)} for s in score]
        return _projection(model, normalise=False), None, (unit,), info
    ids = _check_class_ids(model, class_ids, b)
    with torch.no_grad():
        logits = _logits(model, model(images).embedding).float()  # (B, N)
    probs = logits.softmax(dim=1)
    info = [{"target": "identity", "class_id": int(c), "score": float(logits[i, c]), "prob": float(probs[i, c])}
            for i, c in enumerate(ids.tolist())]
    return (lambda x: _logits(model, model(x).embedding)), ids, (), info


def _maps(raw: torch.Tensor, size: tuple[int, int], kind: str, infos: list[dict]) -> list[SaliencyMap]:
    heat = _heat(raw, size)
    raw_np = raw.detach().float().cpu().numpy()
    return [SaliencyMap(heat=heat[i], raw=raw_np[i], kind=kind, info=infos[i]) for i in range(len(infos))]


# --- public API ----------------------------------------------------------------------------
def own_cam(model: ESNet, images: torch.Tensor, class_ids: torch.Tensor | None = None) -> list[SaliencyMap]:
    """The global branch's CAM ``sum_k W[c, k] s_k F_k``: what ES-Net erases from.

    Args:
        model: ESNet in eval mode.
        images: (B, 3, H, W) float32 normalised.
        class_ids: (B,) integer identities in [0, N); None uses the predicted identity.
    Returns:
        B maps; ``raw`` (h, w) is the signed unscaled CAM, ``info`` has ``class_id``,
        ``prob`` (softmax of the global logits) and ``logit``.
    """
    _check_inputs(model, images)
    head = model.global_head
    with torch.no_grad():
        fmap = model.forward_features(images)  # (B, C, h, w)
        logits = head.classifier(head.bnneck(head.pool(fmap))).float()  # (B, N)
        ids = logits.argmax(dim=1) if class_ids is None else _check_class_ids(model, class_ids, images.shape[0])
        cam = model.global_cam(fmap, ids)  # (B, h, w)
    probs = logits.softmax(dim=1)
    infos = [{"class_id": int(c), "prob": float(probs[i, c]), "logit": float(logits[i, c])}
             for i, c in enumerate(ids.tolist())]
    return _maps(cam, tuple(images.shape[2:]), "own_cam", infos)


def grad_cam(model: ESNet, images: torch.Tensor, class_ids: torch.Tensor | None = None) -> list[SaliencyMap]:
    """Grad-CAM (captum ``LayerGradCAM``, ReLU'd) on the backbone output F (B, C, h, w).

    Args:
        model: ESNet in eval mode.
        images: (B, 3, H, W) float32 normalised.
        class_ids: (B,) integer ids: attribute the global identity logit; None:
            attribute the self projection ``<e(x), e(x)/|e(x)|>`` (module docstring).
    Returns:
        B maps; ``raw`` (h, w) ReLU'd Grad-CAM; ``info`` has ``target``, ``score`` (target
        value) and, for identities, ``class_id`` and ``prob``.
    """
    _check_inputs(model, images)
    forward, target, extra, infos = _target(model, images, class_ids)
    raw = _layer_grad_cam(forward, model, images, target, extra)  # (B, h, w)
    return _maps(raw, tuple(images.shape[2:]), "grad_cam", infos)


def ig_baseline(images: torch.Tensor, kind: str) -> torch.Tensor:
    """The Integrated-Gradients starting image, in normalised space.

    ``grey``: mid-grey 0.5 in [0, 1] pixel space, i.e. ``(0.5 - mean) / std`` per channel
    (all-zeros is the ImageNet mean colour, not grey, and is not offered).
    ``blur``: the input convolved with a Gaussian of sigma ``0.1 * max(H, W)`` px
    (replicate padding); blurring commutes with per-channel normalisation.

    Args:
        images: (B, 3, H, W) float32 normalised.
        kind: ``blur`` or ``grey``.
    Returns:
        (B, 3, H, W) float32, same device.
    """
    if kind not in IG_BASELINES:
        raise ValueError(f"baseline must be one of {list(IG_BASELINES)}, got {kind!r}")
    if kind == "grey":
        mean = torch.tensor(IMAGENET_MEAN, device=images.device)
        std = torch.tensor(IMAGENET_STD, device=images.device)
        grey = ((0.5 - mean) / std).to(images.dtype)  # (3,)
        return grey[None, :, None, None].expand_as(images).clone()
    sigma = BLUR_SIGMA_FRACTION * max(images.shape[2:])
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images.dtype)  # (2r+1,)
    x = F.pad(images, (radius, radius, radius, radius), mode="replicate")  # (B, 3, H+2r, W+2r)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)  # along W
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)  # (B, 3, H, W)


def integrated_gradients(model: ESNet, images: torch.Tensor, baseline: str = "blur", steps: int = 32,
                         class_ids: torch.Tensor | None = None,
                         internal_batch_size: int | None = None) -> list[SaliencyMap]:
    """Pixel-level Integrated Gradients (captum, Gauss-Legendre) from a grey/blurred baseline.

    Args:
        model: ESNet in eval mode.
        images: (B, 3, H, W) float32 normalised.
        baseline: ``blur`` or ``grey`` (see ``ig_baseline``).
        steps: integration points, >= 1.
        class_ids: as in ``grad_cam``; the self projection uses the input's direction.
        internal_batch_size: images per forward pass inside captum; None = all B * steps.
    Returns:
        B maps; ``raw`` (H, W) is ``sum_c |attr|``; ``info`` has the target fields,
        ``baseline``, ``steps``, ``f_input``, ``f_baseline``, ``attr_sum`` (signed) and
        ``delta`` = attr_sum - (f_input - f_baseline), captum's convergence delta.
    """
    _check_inputs(model, images)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    base = ig_baseline(images, baseline)  # raises on unknown kinds
    forward, target, extra, infos = _target(model, images, class_ids)
    with torch.no_grad():
        idx = torch.arange(images.shape[0], device=images.device)
        f_in, f_base = (forward(x, *extra) if target is None else forward(x)[idx, target] for x in (images, base))
    with torch.enable_grad():
        attr, delta = IntegratedGradients(forward).attribute(
            images, baselines=base, target=target, additional_forward_args=extra or None, n_steps=steps,
            internal_batch_size=internal_batch_size, return_convergence_delta=True,
        )  # (B, 3, H, W), (B,)
    attr = attr.detach().float()
    for i, info in enumerate(infos):
        info.update(baseline=baseline, steps=steps, f_input=float(f_in[i]), f_baseline=float(f_base[i]),
                    attr_sum=float(attr[i].sum()), delta=float(delta[i]))
    return _maps(attr.abs().sum(dim=1), tuple(images.shape[2:]), "integrated_gradients", infos)


def similarity_saliency(model: ESNet, query: torch.Tensor, match: torch.Tensor,
                        center: torch.Tensor | np.ndarray | None = None) -> tuple[SaliencyMap, SaliencyMap]:
    """Which regions of each image drive their cosine similarity ``s = cos(e_q, e_m)``.

    For image a with partner b the map is Grad-CAM, ``ReLU(sum_k mean_hw(dT/dF_k) F_k)`` on
    a's backbone output F, of ``T_a = <e_a, e_b/|e_b|> / |e_a|`` with ``|e_a|`` and ``e_b``
    held fixed: T_a equals s, and its gradient is the part of ds/de_a along b's
    direction. The exact ds/de_a also removes the component along e_a, so it vanishes
    for identical images (cosine is at its maximum) and would give no map. ``e`` is the
    model's eval embedding, global + erasing branch for ``test_feature="concat"``.

    With ``center`` (the mean unit embedding of a reference set, normally the gallery) the
    partner's direction is ``(u_b - center) / |u_b - center|``: the map shows what makes the
    two images alike *compared with the average image*. Without it, when every embedding
    shares one large common component (measured on the shipped Market ES-Net: random pairs
    at cosine 0.96, because the erasing branch's BNNeck statistics come from erased maps),
    the partner's direction is mostly that component and every map is the same
    image-independent pattern.

    Args:
        model: ESNet in eval mode.
        query: (1, 3, H, W) float32 normalised.
        match: (1, 3, H', W') float32 normalised.
        center: optional (D,) mean of unit embeddings, finite.
    Returns:
        (query map, match map), ``kind="similarity"``; ``info`` has ``similarity`` (the
        plain cosine) and ``centered_similarity`` (cosine of ``u - center``; equal to
        ``similarity`` without a center).
    """
    _check_inputs(model, query, "query")
    _check_inputs(model, match, "match")
    for name, x in (("query", query), ("match", match)):
        if x.shape[0] != 1:
            raise ValueError(f"{name} must hold exactly one image (1, 3, H, W), got {tuple(x.shape)}")
    u_q, u_m = _unit_embedding(model, query), _unit_embedding(model, match)  # (1, D) each
    sim = float((u_q * u_m).sum())
    d_q, d_m = u_q, u_m  # the directions each partner's map is taken along
    if center is not None:
        c = torch.as_tensor(center, dtype=torch.float32, device=u_q.device)
        if c.shape != (u_q.shape[1],) or not bool(torch.isfinite(c).all()):
            raise ValueError(f"center must be a finite ({u_q.shape[1]},) vector (the mean unit embedding), "
                             f"got shape {tuple(c.shape)}")
        d_q, d_m = F.normalize(u_q - c, dim=1), F.normalize(u_m - c, dim=1)
    info = {"similarity": sim, "centered_similarity": float((d_q * d_m).sum())}
    forward = _projection(model, normalise=True)
    out = []
    for x, partner in ((query, d_m), (match, d_q)):
        raw = _layer_grad_cam(forward, model, x, None, (partner,))  # (1, h, w)
        out.append(_maps(raw, tuple(x.shape[2:]), "similarity", [dict(info)])[0])
    return out[0], out[1]


def erasing_replay_map(model: ESNet, images: torch.Tensor, class_ids: torch.Tensor | None = None) -> list[ErasingView]:
    """``ESNet.erasing_replay`` at image resolution: the block ES-Net would erase now.

    Args:
        model: ESNet in eval mode.
        images: (B, 3, H, W) float32 normalised.
        class_ids: (B,) integer ids; None uses the global branch's prediction.
    Returns:
        B views; boxes scale by H/h and W/w with edges rounded half up.
    """
    _check_inputs(model, images)
    ids = None if class_ids is None else _check_class_ids(model, class_ids, images.shape[0])
    rec = model.erasing_replay(images, ids)
    (H, W), (h, w) = images.shape[2:], rec.feature_size
    heat = _heat(rec.cam, (H, W))  # (B, H, W)
    views = []
    for i, (top, left, bh, bw) in enumerate(rec.box.tolist()):
        y0, y1 = (math.floor(v * H / h + 0.5) for v in (top, top + bh))
        x0, x1 = (math.floor(v * W / w + 0.5) for v in (left, left + bw))
        mask = np.zeros((H, W), dtype=bool)
        mask[y0:y1, x0:x1] = True
        views.append(ErasingView(cam=heat[i], box_pixels=(y0, x0, y1 - y0, x1 - x0), box_cells=(top, left, bh, bw),
                                 class_id=int(rec.class_id[i]), mask=mask))
    return views


# --- attention spread: how much of the image the CAM uses ----------------------------------------
SPREAD_MASS = 0.5
"""The share of the positive CAM mass whose area ``attention_spread``'s ``coverage`` measures."""


def attention_spread(cam: np.ndarray, mass: float = SPREAD_MASS) -> dict[str, np.ndarray]:
    """How widely each CAM spreads its positive evidence over the feature cells.

    The positive part of each map, ``relu(cam)``, is normalised to a distribution over its
    ``n = h * w`` cells. Two measures of its spread:

    * ``coverage``: the smallest fraction of the cells that holds ``mass`` of it, cells taken
      from the largest down, linear inside the last cell (so it is continuous). A single hot
      cell gives ``mass / n``; a flat map gives ``mass``. It reads as an area: "half of what
      the model looks at sits on this fraction of the image".
    * ``entropy``: Shannon entropy divided by ``log(n)``, 0 for one cell, 1 for a flat map.

    Args:
        cam: (B, h, w) float signed raw CAMs (e.g. ``SaliencyMap.raw`` of ``own_cam``).
        mass: in (0, 1).
    Returns:
        ``{"coverage": (B,), "entropy": (B,)}`` float64; NaN for a map with no positive cell.
    Raises:
        ValueError: a cam that is not (B, h, w) or not finite, or mass outside (0, 1).
    """
    cam = np.asarray(cam, dtype=np.float64)
    if cam.ndim != 3 or cam.shape[1] * cam.shape[2] < 2:
        raise ValueError(f"cam must be (B, h, w) with at least 2 cells, got shape {cam.shape}")
    if not np.isfinite(cam).all():
        raise ValueError("cam must be finite")
    if not 0.0 < mass < 1.0:
        raise ValueError(f"mass must be in (0, 1), got {mass!r}")
    b, n = cam.shape[0], cam.shape[1] * cam.shape[2]
    pos = np.maximum(cam.reshape(b, n), 0.0)  # (B, n)
    total = pos.sum(axis=1)  # (B,)
    ok = total > 0
    p = np.divide(pos, total[:, None], out=np.zeros_like(pos), where=ok[:, None])  # (B, n) rows sum to 1
    desc = -np.sort(-p, axis=1)  # (B, n) largest first
    cum = np.cumsum(desc, axis=1)  # (B, n)
    k = np.minimum((cum < mass).sum(axis=1), n - 1)  # (B,) index of the cell that crosses `mass`
    before = np.where(k > 0, np.take_along_axis(cum, np.maximum(k - 1, 0)[:, None], 1)[:, 0], 0.0)  # (B,)
    cell = np.take_along_axis(desc, k[:, None], 1)[:, 0]  # (B,)
    frac = np.divide(mass - before, cell, out=np.ones_like(cell), where=cell > 0)  # (B,) part of the last cell
    coverage = (k + np.clip(frac, 0.0, 1.0)) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)  # (B, n)
    entropy = -plogp.sum(axis=1) / np.log(n)
    coverage[~ok] = np.nan
    entropy[~ok] = np.nan
    return {"coverage": coverage, "entropy": entropy}


SPREAD_COLUMNS = ("path", "pid", "camid", "camera", "class_id", "prob", "coverage", "entropy")


def split_attention_spread(inf: Inference, samples: Sequence[Sample], *, batch_size: int = 64,
                           progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """:func:`attention_spread` of the model's own CAM on every image of ``samples``.

    The CAM is the global branch's (what ES-Net erases from) for the identity the model
    predicts: test identities are not training classes, so the predicted training identity
    is the one whose evidence the map shows. Unreadable images are left out.

    Args:
        inf: a loaded model (``esnet.embedding.load_inference``).
        samples: dataset samples (e.g. ``ReidData.query``).
        batch_size: images per forward pass, >= 1.
        progress: called with (images done, total) after each batch.
    Returns:
        DataFrame with ``SPREAD_COLUMNS``, one row per readable image, in ``samples`` order.
    Raises:
        ValueError: no samples, a bad batch size, or no readable image.
    """
    import pandas as pd

    from esnet.data.images import ImageError, load_rgb

    if not samples:
        raise ValueError("no images to measure")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    rows: list[dict[str, Any]] = []
    n = len(samples)
    for start in range(0, n, batch_size):
        batch, images = [], []
        for s in samples[start:start + batch_size]:
            try:
                images.append(load_rgb(s.path))
                batch.append(s)
            except ImageError:
                continue
        if images:
            x = inf.preprocess(images).to(inf.device)  # (B, 3, H, W)
            with inf.lock:
                maps = own_cam(inf.model, x)
            spread = attention_spread(np.stack([m.raw for m in maps]))  # (B,) each
            for i, (s, m) in enumerate(zip(batch, maps)):
                rows.append({"path": s.path, "pid": s.pid, "camid": s.camid, "camera": s.camera,
                             "class_id": m.info["class_id"], "prob": m.info["prob"],
                             "coverage": float(spread["coverage"][i]), "entropy": float(spread["entropy"][i])})
        if progress is not None:
            progress(min(start + batch_size, n), n)
    if not rows:
        raise ValueError(f"none of the {n} images could be read")
    # path as plain str objects from the start: pandas would store an Arrow string column, which
    # cannot hold the surrogate escapes of a file name that is not UTF-8.
    return pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=object) if c == "path" else [r[c] for r in rows]
                         for c in SPREAD_COLUMNS})


def compare_spread(a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Paired comparison of two models' spread on the same images: is ``b`` wider than ``a``?

    Args:
        a, b: (N,) spreads of the same N images (NaN pairs are dropped).
        n_boot: bootstrap resamples of the images for the 95 % interval of the mean difference.
        seed: bootstrap seed.
    Returns:
        ``mean_a, mean_b, median_a, median_b, diff`` (mean of b - a), ``ci_low, ci_high``
        (percentile bootstrap), ``frac_b_wider`` (share of images with b > a), ``n``.
    Raises:
        ValueError: different lengths or fewer than 2 usable pairs.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be (N,) arrays of the same images, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2:
        raise ValueError(f"need at least 2 images with a finite spread in both, got {a.size}")
    d = b - a  # (N,)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)  # (n_boot,)
    low, high = np.percentile(boots, [2.5, 97.5])
    return {"mean_a": float(a.mean()), "mean_b": float(b.mean()), "median_a": float(np.median(a)),
            "median_b": float(np.median(b)), "diff": float(d.mean()), "ci_low": float(low), "ci_high": float(high),
            "frac_b_wider": float((d > 0).mean()), "n": int(d.size)}
