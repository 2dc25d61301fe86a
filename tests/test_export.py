"""ONNX export: parity with torch, dynamic batch, metadata, atomic writes, clear errors."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from esnet import export
from esnet.checkpoint import CheckpointError, save_checkpoint
from esnet.config import Config, override
from esnet.embedding import load_inference
from esnet.model import build_model

DEMO_CKPT = Path(__file__).resolve().parents[1] / "assets" / "demo_runs" / "esnet-p" / "checkpoints" / "last.pt"


def _save(path: Path, **model) -> Path:
    cfg = override(Config(), {"model.backbone": "resnet18", "data.height": 64, "data.width": 32,
                              **{f"model.{k}": v for k, v in model.items()}})
    torch.manual_seed(0)
    save_checkpoint(path, model=build_model(cfg.model, 3), optimizer=None, scheduler=None, epoch=1, config=cfg,
                    num_classes=3)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _save(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory) -> tuple[Path, export.ParityReport]:
    out = tmp_path_factory.mktemp("onnx") / "sub" / "model.onnx"
    return out, export.export_checkpoint(ckpt, out)


def _tmp_leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_export_checkpoint_parity_below_1e4_and_no_temp_files(exported):
    out, report = exported
    assert out.is_file() and out.stat().st_size > 0
    assert report.ok and report.max_abs_diff < 1e-4 and report.tolerance == 1e-4 and report.batch == 4
    assert _tmp_leftovers(out.parent) == []
    assert json.loads(json.dumps(report.to_json()))["ok"] is True


def test_metadata_records_preprocessing_and_checkpoint(exported, ckpt):
    meta = export.read_metadata(exported[0])
    inf = load_inference(ckpt, device="cpu")
    assert set(export.METADATA_KEYS) <= set(meta)
    assert (int(meta["input_height"]), int(meta["input_width"])) == (64, 32)
    assert json.loads(meta["mean"]) == [0.485, 0.456, 0.406] and json.loads(meta["std"]) == [0.229, 0.224, 0.225]
    assert int(meta["embedding_dim"]) == inf.model.embedding_dim
    assert meta["checkpoint_sha256"] == inf.checkpoint_sha


def test_onnx_matches_torch_on_other_batch_sizes_and_image_sizes(exported, ckpt):
    rng = np.random.default_rng(5)
    from PIL import Image

    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in
              ((40, 20), (64, 32), (200, 90), (33, 47), (128, 64), (64, 32), (10, 5))]
    report = export.check_parity(ckpt, exported[0], images)
    assert report.ok and report.batch == 7 and report.max_abs_diff < 1e-4


def test_fixed_batch_export_also_checks(ckpt, tmp_path):
    out = export.export_onnx(ckpt, tmp_path / "fixed.onnx", batch_dynamic=False)
    import onnx

    dim = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_value == 1
    assert export.check_parity(ckpt, out).ok


def test_failing_export_leaves_no_file_and_keeps_the_old_one(ckpt, tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous model")

    def broken(*args, **kwargs):
        with open(args[2], "wb") as f:  # the exporter dies after writing part of the file
            f.write(b"half")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(export.ExportError, match="ONNX export of .* failed: RuntimeError: exporter crashed"):
        export.export_onnx(ckpt, out)
    assert out.read_bytes() == b"previous model"
    assert _tmp_leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="exporter crashed"):
        export.export_checkpoint(ckpt, tmp_path / "new.onnx")
    assert not (tmp_path / "new.onnx").exists() and _tmp_leftovers(tmp_path) == []


def test_parity_failure_deletes_the_new_file_and_names_diff_and_tolerance(ckpt, tmp_path, monkeypatch):
    real = export.embed_images
    monkeypatch.setattr(export, "embed_images", lambda inf, ims, flip: real(inf, ims, flip=flip) + 0.01)
    out = tmp_path / "model.onnx"
    with pytest.raises(export.ParityError, match=r"max abs diff 0\.01 > tolerance 0\.0001;.*not written") as info:
        export.export_checkpoint(ckpt, out)
    assert not info.value.report.ok and info.value.report.max_abs_diff == pytest.approx(0.01, rel=1e-3)
    assert list(tmp_path.iterdir()) == []


def test_bad_checkpoint_path_and_arguments_give_clear_errors(ckpt, tmp_path, exported):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="nope.pt.*does not exist"):
        export.export_onnx(missing, tmp_path / "m.onnx")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        export.export_checkpoint(garbage, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="is a directory"):
        export.export_onnx(ckpt, tmp_path)
    with pytest.raises(ValueError, match="opset must be an integer in \\[13, 20\\], got 7"):
        export.export_onnx(ckpt, tmp_path / "m.onnx", opset=7)
    with pytest.raises(ValueError, match="tolerance must be a finite number > 0, got -1"):
        export.check_parity(ckpt, exported[0], tolerance=-1)
    with pytest.raises(ValueError, match="ONNX file .*missing.onnx.* does not exist"):
        export.check_parity(ckpt, tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ValueError, match="onnxruntime cannot load .*junk.onnx"):
        export.check_parity(ckpt, tmp_path / "junk.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_onnx_of_another_model_is_reported(exported, tmp_path):
    other = _save(tmp_path / "other.pt", erasing="off")  # D = 512, not 1024
    with pytest.raises(ValueError, match="belongs to another model"):
        export.check_parity(other, exported[0])


def test_demo_checkpoint_exports_with_parity(tmp_path):
    if not DEMO_CKPT.is_file():
        pytest.fail(f"demo checkpoint {DEMO_CKPT} is missing: build it with `esnet demo build`")
    report = export.export_checkpoint(DEMO_CKPT, tmp_path / "demo.onnx")
    assert report.ok and report.max_abs_diff < 1e-4


def test_onnx_with_another_input_size_is_reported(exported, tmp_path):
    cfg = override(Config(), {"model.backbone": "resnet18", "data.height": 96, "data.width": 48})
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "big.pt", model=build_model(cfg.model, 3), optimizer=None, scheduler=None, epoch=1,
                    config=cfg, num_classes=3)
    expected = r"takes \(B, 3, 64, 32\) input but the checkpoint's is \(B, 3, 96, 48\): .*another model"
    with pytest.raises(ValueError, match=expected):
        export.check_parity(tmp_path / "big.pt", exported[0])


def test_sample_images_are_deterministic():
    a, b = export.sample_images(2, (20, 10), seed=3), export.sample_images(2, (20, 10), seed=3)
    assert [im.size for im in a] == [(10, 20)] * 2 and all(im.mode == "RGB" for im in a)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="count must be >= 1, got 0"):
        export.sample_images(0)
