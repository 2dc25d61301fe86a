"""The embedded demo: how `esnet demo build` lays out assets/demo_runs, and the shipped assets."""
import json
from pathlib import Path

import pytest
import torch

from esnet import demo_build
from esnet.checkpoint import load_checkpoint, load_model, save_checkpoint
from esnet.config import Config, override
from esnet.checkpoint import write_release_checkpoint
from esnet.demo_build import CHECKPOINT_RUN, DEMO_RUNS, build_demo_assets, demo_config
from esnet.engine.rundir import read_metrics, read_probes, summarize_run
from esnet.model import build_model

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "demo_runs"


def _tiny_config(**updates) -> Config:
    return override(Config(), {"model.backbone": "resnet18", "model.pool": "p", "data.height": 64,
                               "data.width": 32, **updates})


def _save(path: Path, cfg: Config, num_classes: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()(torch.randn(4, 3, 64, 32), torch.tensor([0, 1, 2, 3])).global_logits.sum().backward()
    opt.step()  # optimizer state as big as the model: what slimming drops
    save_checkpoint(path, model=model, optimizer=opt, scheduler=None, epoch=3, config=cfg, num_classes=num_classes,
                    extra={"record": {"epoch": 3}})
    return model.eval()


def test_slim_checkpoint_keeps_the_model_in_float16_and_drops_the_optimizer(tmp_path):
    cfg = _tiny_config()
    model = _save(tmp_path / "full.pt", cfg)
    slim = write_release_checkpoint(tmp_path / "full.pt", tmp_path / "slim.pt", pack=False)
    full_size, slim_size = (tmp_path / "full.pt").stat().st_size, slim.stat().st_size
    assert slim_size < 0.3 * full_size  # fp16 halves the model, no Adam moments (2x model)
    ck = load_checkpoint(slim)
    assert ck.optimizer_state is None and ck.epoch == 3 and ck.extra["slim"] is True and "packed" not in ck.extra
    assert ck.extra["record"] == {"epoch": 3}
    floats = [v for k, v in ck.model_state.items() if v.is_floating_point() and not k.endswith("pool.q")]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    qs = {k: v for k, v in ck.model_state.items() if k.endswith("pool.q")}  # float16 would move p by ~1e-3
    assert set(qs) == {"global_head.pool.q", "erase_head.pool.q"} and all(v.dtype == torch.float32 for v in qs.values())
    assert ck.model_state["backbone.bn1.num_batches_tracked"].dtype == torch.int64
    restored, _ = load_model(slim)
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        a, b = model(x).embedding, restored(x).embedding
    assert next(restored.parameters()).dtype == torch.float32
    assert restored.learned_p() == model.learned_p()
    assert torch.allclose(a, b, rtol=2e-2, atol=2e-2) and not torch.equal(a, b)  # fp16 rounding, nothing else


def test_demo_config_shares_one_budget_and_differs_only_in_the_variant():
    cfgs = {name: demo_config(name, "data", "w.pt") for name in DEMO_RUNS}
    assert {c.model.pool for c in cfgs.values()} == {"p", "avg", "max"}
    assert cfgs["baseline-avg"].model.erasing == "off" and cfgs["esnet-p"].model.erasing == "salient"
    assert len({(c.optim, c.train.seed, c.data.height, c.data.width) for c in cfgs.values()}) == 1
    short = demo_config("esnet-p", "data", "w.pt", epochs=1)
    assert short.optim.epochs == 1 and short.optim.milestones == () and short.optim.warmup_epochs == 0
    with pytest.raises(ValueError, match="'nope'"):
        demo_config("nope", "data", "w.pt")


@pytest.fixture
def fake_training(monkeypatch, tmp_path):
    """train_run replaced by one that writes a tiny finished run (checkpoints included)."""
    calls: list[str] = []

    def fake_train_run(cfg, run_dir, *, command=""):
        calls.append(Path(run_dir).name)
        if cfg.model.pool == "max" and fail["max"]:
            raise RuntimeError("training failed")
        run_dir = Path(run_dir)
        (run_dir / "checkpoints").mkdir(parents=True)
        tiny = override(cfg, {"model.backbone": "resnet18", "model.weights": ""})
        _save(run_dir / "checkpoints" / "best.pt", tiny)
        _save(run_dir / "checkpoints" / "last.pt", tiny)
        (run_dir / "metrics.jsonl").write_text(json.dumps({"epoch": 1}) + "\n")

    fail = {"max": False}
    monkeypatch.setattr(demo_build, "train_run", fake_train_run)
    monkeypatch.setattr(demo_build, "demo_is_current", lambda root: True)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    return calls, fail, weights


def test_build_keeps_one_slim_checkpoint_and_no_half_built_runs(tmp_path, fake_training):
    calls, fail, weights = fake_training
    out = tmp_path / "demo_runs"
    build = build_demo_assets(out, data_root=tmp_path / "data", weights=weights, log=lambda s: None)
    assert sorted(build.runs) == sorted(DEMO_RUNS) and calls == [f".{n}.building" for n in DEMO_RUNS]
    assert sorted(p.name for p in out.iterdir()) == sorted(DEMO_RUNS)  # no .building left
    assert build.checkpoint == str(out / CHECKPOINT_RUN / "checkpoints" / "last.pt")
    assert [p.name for p in (out / CHECKPOINT_RUN / "checkpoints").iterdir()] == ["last.pt"]  # best.pt: test-selected
    assert load_checkpoint(build.checkpoint).extra["slim"] is True
    for name in DEMO_RUNS:
        if name != CHECKPOINT_RUN:
            assert not (out / name / "checkpoints").exists()

    with pytest.raises(ValueError, match="already exists"):
        build_demo_assets(out, data_root=tmp_path / "data", weights=weights, runs=("esnet-avg",), log=lambda s: None)

    fail["max"] = True  # a failing rebuild leaves the finished run it would replace untouched
    before = (out / "esnet-max" / "metrics.jsonl").read_text()
    with pytest.raises(RuntimeError):
        build_demo_assets(out, data_root=tmp_path / "data", weights=weights, runs=("esnet-max",), overwrite=True,
                          log=lambda s: None)
    assert (out / "esnet-max" / "metrics.jsonl").read_text() == before


def test_build_refuses_unknown_runs_and_missing_weights(tmp_path, fake_training):
    _, _, weights = fake_training
    with pytest.raises(ValueError, match="unknown demo runs"):
        build_demo_assets(tmp_path / "o", data_root=tmp_path, weights=weights, runs=("esnet-q",))
    with pytest.raises(ValueError, match="does not exist"):
        build_demo_assets(tmp_path / "o", data_root=tmp_path, weights=tmp_path / "missing.pt")


@pytest.mark.skipif(not (ASSETS / CHECKPOINT_RUN).is_dir(), reason="assets/demo_runs not built yet (esnet demo build)")
def test_shipped_demo_runs_are_complete_small_and_loadable():
    total = sum(f.stat().st_size for f in ASSETS.rglob("*") if f.is_file())
    assert total <= 30 * 2**20, f"assets/demo_runs is {total / 2**20:.1f} MiB"
    for name in DEMO_RUNS:
        summary = summarize_run(ASSETS / name)
        assert summary.state == "finished", (name, summary.state)
        records = read_metrics(ASSETS / name)
        assert records[-1]["epoch"] == demo_config(name, "d", "w").optim.epochs
        assert any("eval" in r for r in records)
        probes = read_probes(ASSETS / name)
        assert probes is not None and len(probes.entries) == 16
    model, ck = load_model(ASSETS / CHECKPOINT_RUN / "checkpoints" / "last.pt")
    assert ck.epoch == demo_config(CHECKPOINT_RUN, "d", "w").optim.epochs  # the final epoch's model
    assert ck.config.model.pool == "p" and ck.config.model.erasing == "salient"
    assert set(model.learned_p()) == {"global", "erase"}
