"""``esnet export | eval | embed | search``: JSON output, exit codes, files written, bad images named.

Run in-process through ``esnet.cli.main``; a tiny random checkpoint covers the plumbing and the
trained demo checkpoint (assets/demo_runs/esnet-p) the "right identity first" checks.
"""
import io
import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from esnet import cli, export
from esnet.checkpoint import save_checkpoint
from esnet.config import Config, override
from esnet.data.images import MAX_PIXELS
from esnet.model import build_model
from tests.synthetic import random_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEMO_CKPT = REPO / "assets" / "demo_runs" / "esnet-p" / "checkpoints" / "last.pt"
DEMO_DATA = REPO / "assets" / "demo_data"
METRICS = ("R1", "R5", "R10", "mAP", "mINP")


@pytest.fixture(autouse=True)
def default_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """eval / embed / search cache by default in the dashboard's cache: a fresh one per test."""
    cache = tmp_path_factory.mktemp("default-cache") / "cache"
    monkeypatch.setenv("ESNET_CACHE_DIR", str(cache))
    return cache


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _json(out: str) -> dict:
    """stdout must be exactly one JSON object."""
    obj = json.loads(out)
    assert isinstance(obj, dict)
    return obj


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", num_classes=3)


@pytest.fixture(scope="module")
def demo_ckpt() -> Path:
    if not DEMO_CKPT.is_file():
        pytest.fail(f"demo checkpoint {DEMO_CKPT} is missing: build it with `esnet demo build`")
    from esnet import api

    api.ensure_demo_data(DEMO_DATA)
    return DEMO_CKPT


# --- bad and odd image files --------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _huge_png(w: int, h: int) -> bytes:
    """A ~60-byte PNG whose header claims w x h RGB pixels (the data would not decode)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + _png_chunk(b"IEND", b""))


def _encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def _odd_files(d: Path) -> dict[str, tuple[Path, str | None]]:
    """name -> (file, None if it must be accepted else a phrase its refusal must contain)."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (64, 32, 3), dtype=np.uint8))
    jpeg = _encode(rgb, "JPEG")
    assert 10_000 * 10_000 > Image.MAX_IMAGE_PIXELS > 8_000 * 6_000 > MAX_PIXELS
    files = {
        "corrupt.jpg": (jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        "empty.jpg": (b"", "empty (0 bytes)"),
        "cmyk.jpg": (_encode(rgb.convert("CMYK"), "JPEG"), None),
        "sixteen.png": (_encode(Image.fromarray(rng.integers(0, 65536, (64, 32), dtype=np.uint16)), "PNG"), None),
        "rgba.png": (_encode(Image.fromarray(rng.integers(0, 256, (64, 32, 4), dtype=np.uint8), "RGBA"), "PNG"),
                     None),
        "tiny.png": (_encode(Image.new("RGB", (1, 1)), "PNG"), "too small"),
        "huge.png": (_huge_png(10_000, 10_000), "decompression-bomb"),  # beyond PIL's own limit too
        "big.png": (_huge_png(8_000, 6_000), f"exceeds the limit of {MAX_PIXELS} pixels"),  # only beyond ours
        "text.jpg": (b"this is not a picture, just text\n", "not an image"),
    }
    out = {}
    for name, (data, refusal) in files.items():
        (d / name).write_bytes(data)
        out[name] = (d / name, refusal)
    assert Image.open(d / "sixteen.png").mode.startswith("I") and Image.open(d / "cmyk.jpg").mode == "CMYK"
    return out


# --- export ------------------------------------------------------------------------------------
def test_export_json_reports_parity(ckpt, tmp_path, capsys):
    code, out, err = _run(capsys, "export", "--checkpoint", ckpt, "--onnx", tmp_path / "m.onnx", "--json")
    rep = _json(out)
    assert code == 0, err
    assert rep["ok"] is True and rep["max_abs_diff"] < 1e-4 and rep["tolerance"] == 1e-4
    assert (tmp_path / "m.onnx").is_file()


def test_export_failures_exit_with_clear_messages(ckpt, tmp_path, capsys, monkeypatch):
    code, out, err = _run(capsys, "export", "--checkpoint", tmp_path / "nope.pt", "--onnx", tmp_path / "m.onnx")
    assert code == 2 and out == "" and "nope.pt" in err and "does not exist" in err
    real = export.embed_images
    monkeypatch.setattr(export, "embed_images", lambda inf, ims, flip: real(inf, ims, flip=flip) + 0.01)
    code, out, err = _run(capsys, "export", "--checkpoint", ckpt, "--onnx", tmp_path / "m.onnx")
    assert code == 1 and "max abs diff 0.01 > tolerance 0.0001" in err
    assert list(tmp_path.iterdir()) == []


# --- eval --------------------------------------------------------------------------------------
def test_eval_json_is_one_object_with_metrics_in_unit_range(ckpt, market, tmp_path, capsys):
    csv = tmp_path / "out" / "per_query.csv"
    code, out, err = _run(capsys, "eval", "--checkpoint", ckpt, "--dataset", "market1501", "--root", market,
                          "--json", "--per-query", csv, "--device", "cpu")
    assert code == 0, err
    rep = _json(out)
    assert all(0.0 <= rep[k] <= 1.0 for k in METRICS)
    assert rep["R1"] <= rep["R5"] <= rep["R10"] and rep["num_query"] == 4 and rep["num_gallery"] == 8
    import pandas as pd

    frame = pd.read_csv(csv)
    assert len(frame) == 4 and {"ap", "first_hit", "pid"} <= set(frame.columns)
    assert [p.name for p in csv.parent.iterdir()] == ["per_query.csv"]


def test_eval_text_and_bad_inputs(ckpt, market, tmp_path, capsys):
    code, out, err = _run(capsys, "eval", "--checkpoint", ckpt, "--dataset", "market1501", "--root", market,
                          "--flip", "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    assert "4 queries, 8 gallery images" in out and all(f"{k} " in out for k in METRICS)
    code, out, err = _run(capsys, "eval", "--checkpoint", ckpt, "--dataset", "nope", "--root", market)
    assert code == 2 and "unknown dataset 'nope'" in err
    code, out, err = _run(capsys, "eval", "--checkpoint", tmp_path / "missing", "--dataset", "market1501",
                          "--root", market, "--json")
    assert code == 2 and out == "" and "missing" in err


def test_eval_feature_picks_the_branches_and_keys_the_cache(ckpt, market, tmp_path, capsys):
    cache = tmp_path / "cache"
    reps, feats = {}, {}
    for feature in ("concat", "global", "erase"):
        code, out, err = _run(capsys, "eval", "--checkpoint", ckpt, "--dataset", "market1501", "--root", market,
                              "--feature", feature, "--cache-dir", cache, "--json", "--device", "cpu")
        assert code == 0, err
        reps[feature] = _json(out)
        code, out, err = _run(capsys, "embed", "--checkpoint", ckpt, "--dataset", "market1501", "--root", market,
                              "--split", "gallery", "--feature", feature, "--out", tmp_path / f"{feature}.npz",
                              "--json", "--cache-dir", cache)
        assert code == 0, err
        with np.load(tmp_path / f"{feature}.npz") as z:
            feats[feature] = z["features"]
    assert [reps[f]["test_feature"] for f in reps] == ["concat", "global", "erase"]
    assert [feats[f].shape[1] for f in feats] == [1024, 512, 512]
    # concat rows are [g, e] / |[g, e]|: its halves point along the global and the erasing features
    g, e = feats["concat"][:, :512], feats["concat"][:, 512:]
    np.testing.assert_allclose(g / np.linalg.norm(g, axis=1, keepdims=True), feats["global"], atol=1e-5)
    np.testing.assert_allclose(e / np.linalg.norm(e, axis=1, keepdims=True), feats["erase"], atol=1e-5)
    # eval embeds query + gallery once (concat) and cuts the branches out of it; embed keys each feature
    assert len(list(cache.glob("*.npy"))) == 4
    # without --feature: the run's own (concat), read back from the cache
    code, out, err = _run(capsys, "eval", "--checkpoint", ckpt, "--dataset", "market1501", "--root", market,
                          "--cache-dir", cache, "--json")
    assert code == 0 and _json(out)["test_feature"] == "concat" and _json(out)["mAP"] == reps["concat"]["mAP"]
    with pytest.raises(SystemExit) as exc:
        cli.main(["eval", "--checkpoint", str(ckpt), "--dataset", "market1501", "--root", str(market),
                  "--feature", "part"])
    assert exc.value.code == 2 and "invalid choice: 'part'" in capsys.readouterr().err


def test_eval_feature_erase_on_a_baseline_is_refused(market, tmp_path, capsys):
    path = random_checkpoint(tmp_path / "baseline.pt", overrides={"model.erasing": "off"})
    code, out, err = _run(capsys, "eval", "--checkpoint", path, "--dataset", "market1501", "--root", market,
                          "--feature", "erase", "--json")
    assert code == 2 and out == ""
    assert "'erase' needs an erasing branch, but model.erasing is 'off'" in err and "Traceback" not in err


# --- embed -------------------------------------------------------------------------------------
def test_embed_dataset_split_writes_npz(ckpt, market, tmp_path, capsys):
    out_file = tmp_path / "feats.npz"
    code, out, err = _run(capsys, "embed", "--checkpoint", ckpt, "--dataset", "market1501", "--root", market,
                          "--split", "query", "--out", out_file, "--json")
    assert code == 0, err
    rep = _json(out)
    assert rep["num_images"] == 4 and rep["skipped"] == []
    with np.load(out_file, allow_pickle=False) as z:
        feats, paths, pids, camids = z["features"], z["paths"], z["pids"], z["camids"]
        assert str(z["checkpoint_sha256"]) == rep["checkpoint_sha256"]
    assert feats.shape == (4, rep["dim"]) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert sorted(pids.tolist()) == [50, 51, 52, 53] and camids.tolist() == [0, 0, 0, 0]
    assert all(Path(p).parent.name == "query" for p in paths)
    assert [p.name for p in tmp_path.iterdir()] == ["feats.npz"]


def test_embed_folder_skips_refused_files_and_names_them(ckpt, market, tmp_path, capsys):
    folder = tmp_path / "gallery"
    shutil.copytree(market / "bounding_box_test", folder)
    odd = _odd_files(folder / "odd")
    code, out, err = _run(capsys, "embed", "--checkpoint", ckpt, "--folder", folder, "--out", tmp_path / "f.npz",
                          "--json")
    assert code == 0, err
    rep = _json(out)
    skipped = {Path(s["path"]).name: s["reason"] for s in rep["skipped"]}
    refused = {name: phrase for name, (_, phrase) in odd.items() if phrase is not None}
    assert set(skipped) == set(refused)
    for name, phrase in refused.items():
        assert phrase in skipped[name], (name, skipped[name])
        assert f"skipped {odd[name][0]}: " in err
    assert rep["num_images"] == 8 + 3  # the gallery plus CMYK, 16-bit and RGBA, converted
    with np.load(tmp_path / "f.npz", allow_pickle=False) as z:
        assert sorted(Path(p).name for p in z["skipped_paths"]) == sorted(refused)
        assert {"cmyk.jpg", "sixteen.png", "rgba.png"} <= {Path(p).name for p in z["paths"]}


def test_embed_bad_arguments(ckpt, tmp_path, capsys):
    code, _, err = _run(capsys, "embed", "--checkpoint", ckpt, "--dataset", "market1501", "--out", tmp_path / "x.npz")
    assert code == 2 and "--root" in err and not (tmp_path / "x.npz").exists()
    code, _, err = _run(capsys, "embed", "--checkpoint", ckpt, "--folder", tmp_path, "--out", tmp_path)
    assert code == 2 and f"--out {tmp_path} is a directory" in err


# --- search ------------------------------------------------------------------------------------
def test_search_json_sorted_and_bad_queries_named_while_others_answered(ckpt, market, tmp_path, capsys):
    odd = _odd_files(tmp_path / "queries")
    good = sorted((market / "query").iterdir())[0]
    queries = [good] + [p for p, _ in odd.values()]
    code, out, err = _run(capsys, "search", "--checkpoint", ckpt, "--gallery", market / "bounding_box_test",
                          "--query", *queries, "--topk", "5", "--json", "--cache-dir", tmp_path / "cache")
    assert code == 2  # some query images were refused
    rep = _json(out)
    answers = {Path(a["query"]).name: a for a in rep["queries"]}
    assert [Path(a["query"]) for a in rep["queries"]] == queries
    assert rep["num_gallery"] == 8 and rep["topk"] == 5
    for name, a in answers.items():
        refusal = odd[name][1] if name in odd else None
        if refusal is None:
            assert a["ok"] is True and len(a["hits"]) == 5, name
            dists = [h["distance"] for h in a["hits"]]
            assert dists == sorted(dists) and [h["rank"] for h in a["hits"]] == [1, 2, 3, 4, 5]
        else:
            assert a["ok"] is False and refusal in a["error"], (name, a)
            assert f"cannot use image {str(odd[name][0])!r}: " in err and refusal in err


def test_search_text_table_and_all_queries_bad(ckpt, market, tmp_path, capsys):
    good = sorted((market / "query").iterdir())[0]
    code, out, err = _run(capsys, "search", "--checkpoint", ckpt, "--gallery", market / "bounding_box_test",
                          "--query", good, "--topk", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"query {good}" and lines[1].split() == ["rank", "distance", "pid", "camera", "path"]
    assert len(lines) == 5 and lines[2].split()[0] == "1"
    for line in lines[2:]:  # the camera of the file name (0004_c6s1_... -> 6), not the 0-based camid
        _, _, _, camera, path = line.split()
        assert camera == re.match(r"\d+_c(\d)s", Path(path).name).group(1), line
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    code, out, err = _run(capsys, "search", "--checkpoint", ckpt, "--gallery", market / "bounding_box_test",
                          "--query", text)
    assert code == 2 and "notes.jpg" in err and "not an image" in err
    code, out, err = _run(capsys, "search", "--checkpoint", ckpt, "--gallery", tmp_path / "nowhere",
                          "--query", good)
    assert code == 2 and "nowhere" in err and "does not exist" in err


# --- the trained demo checkpoint -------------------------------------------------------------
def _demo_subset(root: Path, out: Path, ids: int) -> tuple[Path, list[Path]]:
    """A gallery folder with the demo gallery images of the first ``ids`` identities, and their queries."""
    gallery = out / "gallery"
    gallery.mkdir(parents=True)
    pids = sorted({p.name.split("_")[0] for p in (root / "query").iterdir()})[:ids]
    for p in sorted((root / "bounding_box_test").iterdir()):
        if p.name.split("_")[0] in pids:
            shutil.copy(p, gallery / p.name)
    queries = [sorted((root / "query").glob(f"{pid}_*"))[0] for pid in pids]
    return gallery, queries


def test_demo_search_finds_the_right_identity_first(demo_ckpt, tmp_path, capsys):
    gallery, queries = _demo_subset(DEMO_DATA, tmp_path, ids=8)
    code, out, err = _run(capsys, "search", "--checkpoint", demo_ckpt, "--gallery", gallery, "--query", *queries,
                          "--topk", "5", "--json", "--device", "cpu")
    assert code == 0, err
    rep = _json(out)
    for q, a in zip(queries, rep["queries"]):
        dists = [h["distance"] for h in a["hits"]]
        assert dists == sorted(dists)
        assert a["hits"][0]["pid"] == int(q.name.split("_")[0]), (q.name, a["hits"][:2])


def test_eval_caches_by_default_and_no_cache_opts_out(ckpt, market, default_cache, capsys):
    default = default_cache
    argv = ("eval", "--checkpoint", ckpt, "--dataset", "market1501", "--root", market, "--json")
    code, out, err = _run(capsys, *argv, "--no-cache")
    assert code == 0, err
    assert not default.exists()
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    assert len(list(default.glob("*.npy"))) == 2  # query + gallery, where the dashboard looks


def test_eval_reads_the_runs_data_config_and_camera_regex(tmp_path, capsys):
    """A run trained on a folder dataset with its own camera regex is scored without repeating it."""
    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for split, pid, cams in (("query", 1, [3]), ("gallery", 1, [4, 5]), ("query", 2, [5]), ("gallery", 2, [3, 4]),
                             ("train", 9, [3, 4])):
        (root / split / str(pid)).mkdir(parents=True, exist_ok=True)
        for cam in cams:
            arr = rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / split / str(pid) / f"img_cam{cam}_{split}.jpg")
    cfg = override(Config(), {"model.backbone": "mobilenet_v2", "data.height": 32, "data.width": 16,
                              "data.dataset": "folder", "data.root": str(root), "data.camera_regex": r"cam(\d+)"})
    torch.manual_seed(0)
    path = tmp_path / "folder.pt"
    save_checkpoint(path, model=build_model(cfg.model, 1), optimizer=None, scheduler=None, epoch=1, config=cfg,
                    num_classes=1)
    code, out, err = _run(capsys, "eval", "--checkpoint", path)
    assert code == 0, err
    assert out.startswith(f"folder at {root}: 2 queries, 4 gallery images"), out
    code, out, err = _run(capsys, "eval", "--checkpoint", path, "--dataset", "folder", "--root", root,
                          "--camera-regex", r"nope(\d+)", "--json")
    assert code == 2 and "nope" in err and err.count("\n") == 1, err
    code, out, err = _run(capsys, "embed", "--checkpoint", path, "--split", "query", "--out", tmp_path / "q.npz",
                          "--json")
    assert code == 0, err
    with np.load(tmp_path / "q.npz") as z:
        assert sorted(z["camids"].tolist()) == [0, 2]  # cam3, cam5 of cameras 3, 4, 5: by the run's regex
        assert sorted(z["cameras"].tolist()) == [3, 5]  # shown as in the file names


def test_spread_measures_the_own_cam_and_compares_two_models(ckpt, market, tmp_path, capsys):
    from esnet import api, saliency

    other = random_checkpoint(tmp_path / "other.pt", num_classes=3, seed=1)
    csv = tmp_path / "spread.csv"
    code, out, err = _run(capsys, "spread", "--checkpoint", ckpt, "--against", other, "--dataset", "market1501",
                          "--root", market, "--csv", csv, "--json", "--device", "cpu")
    assert code == 0, err
    rep = _json(out)
    import pandas as pd

    frame = pd.read_csv(csv)
    assert len(frame) == rep["a"]["images"] == 4
    assert rep["a"]["coverage"]["mean"] == pytest.approx(frame["coverage"].mean(), abs=1e-6)
    # the per-image numbers are attention_spread of the model's own CAM, recomputed here independently
    inf = api.load_inference(ckpt, device="cpu")
    maps = saliency.own_cam(inf.model, inf.preprocess([api.read_image(p) for p in frame["path"]]))
    expected = saliency.attention_spread(np.stack([m.raw for m in maps]))["coverage"]
    np.testing.assert_allclose(frame["coverage"], expected, rtol=1e-6)
    diff = rep["b_minus_a"]["coverage"]
    assert diff["diff"] == pytest.approx(rep["b"]["coverage"]["mean"] - rep["a"]["coverage"]["mean"], abs=1e-5)
    assert diff["ci_low"] <= diff["diff"] <= diff["ci_high"] and diff["n"] == 4
    code, _, err = _run(capsys, "spread", "--checkpoint", tmp_path / "missing", "--dataset", "market1501",
                        "--root", market)
    assert code == 2 and "missing" in err
