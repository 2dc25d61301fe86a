"""ONNX export of a trained ES-Net's test feature, with a torch-vs-onnxruntime parity check.

The exported graph maps ``images: (B, 3, H, W) float32`` (normalised with the run's test
pipeline: resize to (H, W), [0, 1], ImageNet mean/std) to ``embedding: (B, D) float32``
L2-normalised rows, exactly ``F.normalize(model(images).embedding)``; B is dynamic unless
``batch_dynamic=False``. The model's ``metadata_props`` record what a consumer needs to
preprocess and to know where the graph came from (keys in :data:`METADATA_KEYS`).

The legacy TorchScript exporter (``dynamo=False``) is used: it runs offline, takes
seconds, and honours ``opset`` as asked (the torch.export-based one in torch 2.14 bumps
opset 17 to 18 and fails converting back). Files are written atomically: a temporary file
in the destination directory is renamed over ``out`` only once complete, so a failed export
leaves nothing behind and never a half-written model.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from google.protobuf.message import DecodeError
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state
from PIL import Image
from torch import nn

import esnet
from esnet.atomic import atomic_path
from esnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from esnet.embedding import Inference, embed_images, load_inference
from esnet.model import ESNet

INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
METADATA_KEYS = ("esnet_version", "input_height", "input_width", "mean", "std", "embedding_dim",
                 "checkpoint_sha256", "model", "layout")
"""``metadata_props`` keys written by :func:`export_onnx` (values are strings; lists are JSON)."""

DEFAULT_TOLERANCE = 1e-4
_SAMPLE_SEED = 0
_SAMPLE_COUNT = 4
# onnxruntime's load errors are plain Exception subclasses, not RuntimeError.
_ORT_ERRORS = (RuntimeError, _ort_state.Fail, _ort_state.InvalidGraph, _ort_state.InvalidProtobuf,
               _ort_state.NoSuchFile, _ort_state.InvalidArgument)


class ExportError(ValueError):
    """The exporter failed, or the exported graph does not reproduce the torch features."""


@dataclass(frozen=True)
class ParityReport:
    """torch vs onnxruntime on the same preprocessed images.

    Attributes:
        max_abs_diff: largest |torch - onnx| over all feature entries (inf when not finite).
        ok: ``max_abs_diff <= tolerance``.
        tolerance: the bound used.
        batch: number of images compared (run as one batch, and the first one alone too).
    """

    max_abs_diff: float
    ok: bool
    tolerance: float
    batch: int

    def to_json(self) -> dict:
        """Plain-data form for ``--json`` output."""
        return {"max_abs_diff": self.max_abs_diff, "ok": self.ok, "tolerance": self.tolerance, "batch": self.batch}


class ParityError(ExportError):
    """ONNX features differ from torch's by more than the tolerance.

    Attributes:
        report: the failed ParityReport.
    """

    def __init__(self, report: ParityReport, message: str) -> None:
        self.report = report
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.report, str(self)))


class EmbeddingNet(nn.Module):
    """The exported function: (B, 3, H, W) normalised float32 -> (B, D) float32 unit rows."""

    def __init__(self, model: ESNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(images).embedding.float(), dim=1)  # (B, D)


def export_onnx(checkpoint: str | Path, out: str | Path, *, opset: int = 17, batch_dynamic: bool = True) -> Path:
    """Export a checkpoint's L2-normalised test feature to an ONNX file.

    Args:
        checkpoint: a checkpoint file or a run directory (see ``esnet.embedding.resolve_checkpoint``).
        out: the ``.onnx`` file to write; its directory is created; an existing file is replaced
            only once the new one is complete.
        opset: ONNX opset version, 13..20.
        batch_dynamic: True = any batch size B; False = the graph is fixed to B = 1.
    Returns:
        ``out`` as a Path.
    Raises:
        CheckpointError: no checkpoint, or an unreadable one.
        ExportError: the exporter failed.
        ValueError: a bad ``opset`` or ``out`` (a directory).
    """
    dest = _check_out(out, opset)
    inf = load_inference(checkpoint, device="cpu")
    with atomic_path(dest) as tmp:
        _export_to(inf, tmp, dest, opset=opset, batch_dynamic=batch_dynamic)
    return dest


def _check_out(out: str | Path, opset: int) -> Path:
    if not isinstance(opset, int) or isinstance(opset, bool) or not 13 <= opset <= 20:
        raise ValueError(f"opset must be an integer in [13, 20], got {opset!r}")
    dest = Path(out)
    if dest.is_dir():
        raise ValueError(f"ONNX output {str(dest)!r} is a directory; give a file path such as model.onnx")
    return dest


def _export_to(inf: Inference, tmp: Path, dest: Path, *, opset: int, batch_dynamic: bool) -> None:
    """Export into ``tmp``, the temporary file of an atomic write of ``dest`` (named in errors)."""
    net = EmbeddingNet(inf.model).eval()  # the exporter restores this module's mode afterwards: keep it eval
    h, w = inf.size
    dummy = torch.zeros(2 if batch_dynamic else 1, 3, h, w)  # (B, 3, H, W)
    dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if batch_dynamic else None
    try:
        with warnings.catch_warnings():
            # Known and harmless: the legacy exporter's deprecation notice, and tracer notes on the
            # model's input-shape validation (constant for a given H, W; parity checks the result).
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export",
                                    category=DeprecationWarning)
            warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning,
                                    module=r"torch\.onnx")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            with torch.no_grad():
                torch.onnx.export(net, (dummy,), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic,
                                  do_constant_folding=True)
        proto = onnx.load(str(tmp))
        meta = _metadata(inf)
        del proto.metadata_props[:]
        for key in METADATA_KEYS:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, meta[key]
        onnx.checker.check_model(proto)
        tmp.write_bytes(proto.SerializeToString())
    except (RuntimeError, torch.onnx.errors.OnnxExporterError, onnx.checker.ValidationError) as e:
        raise ExportError(f"ONNX export of {inf.checkpoint!r} to {str(dest)!r} failed: {type(e).__name__}: {e}") from e


def _metadata(inf: Inference) -> dict[str, str]:
    h, w = inf.size
    m = inf.config.model
    return {
        "esnet_version": esnet.__version__,
        "input_height": str(h),
        "input_width": str(w),
        "mean": json.dumps(list(IMAGENET_MEAN)),
        "std": json.dumps(list(IMAGENET_STD)),
        "embedding_dim": str(inf.model.embedding_dim),
        "checkpoint_sha256": inf.checkpoint_sha,
        "model": json.dumps({"backbone": m.backbone, "pool": m.pool, "erasing": m.erasing,
                             "test_feature": m.test_feature}),
        "layout": f"{INPUT_NAME}: (B, 3, {h}, {w}) float32 RGB, resized, /255, (x - mean) / std; "
                  f"{OUTPUT_NAME}: (B, {inf.model.embedding_dim}) float32, L2-normalised rows",
    }


def read_metadata(onnx_path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (ValueError when the file cannot be read)."""
    path = Path(onnx_path)
    if not path.is_file():
        raise ValueError(f"ONNX file {str(path)!r} " + ("is not a file" if path.exists() else "does not exist"))
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError, ValueError) as e:
        raise ValueError(f"cannot read ONNX file {str(path)!r}: {e}") from e
    return {p.key: p.value for p in proto.metadata_props}


def sample_images(count: int = _SAMPLE_COUNT, size: tuple[int, int] = (128, 64), seed: int = _SAMPLE_SEED
                  ) -> list[Image.Image]:
    """Deterministic parity-check inputs: smooth colour fields plus noise.

    Not natural images, but they drive every layer with varied, in-range inputs, which is
    what a parity check needs.

    Args:
        count: number of images, >= 1.
        size: (H, W) of each image.
        seed: numpy seed; the same arguments give the same pixels.
    Returns:
        ``count`` RGB ``PIL.Image.Image`` of H x W (arrays (H, W, 3) uint8).
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count!r}")
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)  # (H, W) each
    out = []
    for _ in range(count):
        base = np.stack([128 + 100 * np.sin(xx / w * rng.uniform(1, 6) + yy / h * rng.uniform(1, 6)
                                            + rng.uniform(0, 6)) for _ in range(3)], axis=-1)  # (H, W, 3)
        arr = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        out.append(Image.fromarray(arr, mode="RGB"))
    return out


def _session(onnx_path: Path) -> ort.InferenceSession:
    if not onnx_path.is_file():
        what = "is not a file" if onnx_path.exists() else "does not exist"
        raise ValueError(f"ONNX file {str(onnx_path)!r} {what}")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    except _ORT_ERRORS as e:
        raise ValueError(f"onnxruntime cannot load {str(onnx_path)!r}: {e}") from e


def _parity(inf: Inference, onnx_path: Path, images: Sequence[Image.Image] | None, tolerance: float) -> ParityReport:
    _check_tolerance(tolerance)
    imgs = list(images) if images is not None else sample_images(size=inf.size)
    x = inf.preprocess(imgs)  # (B, 3, H, W) float32; validates the images
    session = _session(onnx_path)
    ref = embed_images(inf, imgs, flip=False).numpy()  # (B, D)
    shape = session.get_inputs()[0].shape  # [B or "batch", 3, H, W]
    if list(shape[1:]) != [3, *inf.size]:
        raise ValueError(f"ONNX {str(onnx_path)!r} takes (B, {', '.join(map(str, shape[1:]))}) input but the "
                         f"checkpoint's is (B, 3, {inf.size[0]}, {inf.size[1]}): the file belongs to another model")
    fixed = shape[0] == 1  # a graph exported with batch_dynamic=False
    batches = [x[i:i + 1] for i in range(len(imgs))] if fixed else [x, x[:1]]
    got = []
    for b in batches:
        try:
            (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: b.numpy()})
        except _ORT_ERRORS as e:
            raise ValueError(f"ONNX {str(onnx_path)!r} cannot run the checkpoint's {tuple(b.shape)} input: {e}; "
                             "the file belongs to another model") from e
        got.append(out)  # (b, D)
    onnx_feats = np.concatenate(got if fixed else got[:1])  # (B, D)
    if onnx_feats.shape != ref.shape:
        raise ValueError(f"ONNX {str(onnx_path)!r} returns features of shape {onnx_feats.shape}, "
                         f"torch returns {ref.shape}: the file belongs to another model")
    diffs = [np.abs(onnx_feats - ref)] + ([] if fixed else [np.abs(got[1] - ref[:1])])
    worst = [float(d.max()) for d in diffs]
    diff = max(worst) if all(np.isfinite(worst)) else float("inf")  # NaN anywhere fails the check
    return ParityReport(max_abs_diff=diff, ok=diff <= tolerance, tolerance=float(tolerance), batch=len(imgs))


def check_parity(checkpoint: str | Path, onnx_path: str | Path, images: Sequence[Image.Image] | None = None, *,
                 tolerance: float = DEFAULT_TOLERANCE) -> ParityReport:
    """Compare the checkpoint's torch features with the ONNX file's on the same inputs.

    Args:
        checkpoint: checkpoint file or run directory.
        onnx_path: a file written by :func:`export_onnx`.
        images: RGB PIL images (any size; preprocessed with the run's test pipeline); None =
            :func:`sample_images` (4 deterministic images). They run through onnxruntime
            (CPUExecutionProvider) as one batch and the first alone, so a dynamic batch
            axis is exercised.
        tolerance: largest allowed absolute difference of any feature entry, > 0.
    Returns:
        ParityReport.
    Raises:
        CheckpointError / ValueError: unreadable checkpoint or ONNX file, bad images or tolerance.
    """
    return _parity(load_inference(checkpoint, device="cpu"), Path(onnx_path), images, tolerance)


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, tolerance: float = DEFAULT_TOLERANCE,
                      opset: int = 17) -> ParityReport:
    """:func:`export_onnx` (dynamic batch) then :func:`check_parity` on the sample images.

    The parity check runs on the temporary file, which replaces ``out`` only when it passes.

    Raises:
        CheckpointError: no checkpoint, or an unreadable one.
        ParityError: max diff > tolerance; the message gives both, and ``out`` is left as it
            was (no new file).
        ExportError: the exporter failed.
        ValueError: a bad argument.
    """
    _check_tolerance(tolerance)
    dest = _check_out(out, opset)
    inf = load_inference(checkpoint, device="cpu")
    with atomic_path(dest) as tmp:  # replaces dest only when the parity check passes
        _export_to(inf, tmp, dest, opset=opset, batch_dynamic=True)
        report = _parity(inf, tmp, None, tolerance)
        if not report.ok:
            raise ParityError(report, f"ONNX parity check failed for {inf.checkpoint!r}: max abs diff "
                             f"{report.max_abs_diff:.3g} > tolerance {report.tolerance:g}; {str(dest)!r} not written")
    return report


def _check_tolerance(tolerance: float) -> None:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
            np.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance!r}")
