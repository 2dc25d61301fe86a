"""The training engine on tiny synthetic data: fit, run directory, resume, lock, schedule."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import esnet
from esnet.checkpoint import load_checkpoint
from esnet.config import Config, OptimConfig, override
from esnet.data.types import Sample
from esnet.engine import rundir, trainer
from esnet.engine.callbacks import Callback, choose_probes, format_epoch_summary, should_evaluate
from esnet.engine.run import resume_config, train_run
from esnet.engine.rundir import RunDirError
from tests.synthetic import make_market


def tiny_config(root: Path, **updates) -> Config:
    base = {
        "data.dataset": "market1501", "data.root": str(root), "data.height": 32, "data.width": 16,
        "data.batch_size": 8, "data.num_instances": 2, "data.workers": 0,
        "model.backbone": "mobilenet_v2", "optim.epochs": 2, "optim.warmup_epochs": 1,
        "train.device": "cpu", "train.eval_every": 1, "train.probe_count": 3, "train.max_iters_per_epoch": 2,
    }
    base.update(updates)
    return override(Config(), base)


@pytest.fixture(scope="module")
def finished_run(market: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("runs") / "r1"
    result = train_run(tiny_config(market), out, command="pytest")
    return out, result


# --- schedule, optimiser, device, seeds --------------------------------------------------------
def test_lr_factor_hand_values() -> None:
    cfg = OptimConfig(lr=1.0, warmup_epochs=10, warmup_factor=0.01, milestones=(40, 70), gamma=0.1)
    expected = {0: 0.01, 5: 0.505, 9: 0.901, 10: 1.0, 39: 1.0, 40: 0.1, 69: 0.1, 70: 0.01, 119: 0.01}
    for epoch, factor in expected.items():
        assert trainer.lr_factor(epoch, cfg) == pytest.approx(factor, abs=1e-12), epoch
    no_warm = OptimConfig(warmup_epochs=0, milestones=(2,), gamma=0.5)
    assert [trainer.lr_factor(e, no_warm) for e in range(4)] == [1.0, 1.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        trainer.lr_factor(-1, cfg)


def test_scheduler_steps_per_epoch() -> None:
    cfg = OptimConfig(lr=2.0, warmup_epochs=2, warmup_factor=0.1, milestones=(3, 4), gamma=0.5, epochs=6)
    model = torch.nn.Linear(2, 2)
    opt = trainer.build_optimizer(model, cfg)
    sched = trainer.build_scheduler(opt, cfg)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # warm-up 0.1 -> 0.55 -> 1, then x0.5 at epoch 3 and again at 4
    assert lrs == pytest.approx([0.2, 1.1, 2.0, 1.0, 0.5, 0.5])


def test_optimizer_no_decay_on_1d_params() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = trainer.build_optimizer(model, OptimConfig(weight_decay=5e-4))
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3, 3, 3])]
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 3  # conv bias, BN weight, BN bias


def test_p_pooling_gets_its_own_group_with_the_lr_multiplier_through_the_schedule() -> None:
    from esnet.model.pooling import Pool

    model = torch.nn.ModuleDict({"conv": torch.nn.Conv2d(3, 4, 3), "pool": Pool("p", 3.0)})
    cfg = OptimConfig(lr=2.0, weight_decay=5e-4, warmup_epochs=2, warmup_factor=0.1, milestones=(3,), gamma=0.5,
                      epochs=5, p_lr_mult=10.0)
    opt = trainer.build_optimizer(model, cfg)
    decay, no_decay, p_group = opt.param_groups
    assert p_group["params"] == [model["pool"].q] and p_group["weight_decay"] == 0.0
    assert all(p is not model["pool"].q for g in (decay, no_decay) for p in g["params"])
    sched = trainer.build_scheduler(opt, cfg)
    lrs = []
    for _ in range(5):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    factors = [0.1, 0.55, 1.0, 0.5, 0.5]  # warm-up, then x0.5 at epoch 3
    assert lrs == [pytest.approx([2.0 * f, 2.0 * f, 20.0 * f]) for f in factors]
    with pytest.raises(ValueError, match=r"optim.p_lr_mult must be a finite number > 0, got 0"):
        OptimConfig(p_lr_mult=0)


def test_p_moves_faster_with_a_larger_multiplier() -> None:
    from esnet.model.pooling import Pool

    moved = {}
    for mult in (1.0, 10.0):
        torch.manual_seed(0)
        pool = Pool("p", 3.0)
        opt = trainer.build_optimizer(torch.nn.ModuleDict({"pool": pool}), OptimConfig(lr=1e-2, p_lr_mult=mult))
        x = torch.rand(4, 3, 4, 2, generator=torch.Generator().manual_seed(1)) + 0.1
        for _ in range(5):  # a loss that wants the pooled value (and so p) larger
            opt.zero_grad()
            (-pool(x).sum()).backward()
            opt.step()
        moved[mult] = pool.effective_p() - 3.0
    assert moved[1.0] > 0 and moved[10.0] == pytest.approx(10 * moved[1.0], rel=0.1)


def test_resolve_device() -> None:
    assert trainer.resolve_device("cpu") == torch.device("cpu")
    assert trainer.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="train.device must be one of"):
        trainer.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            trainer.resolve_device("cuda")


def test_epoch_seed_depends_only_on_its_inputs() -> None:
    a = trainer.epoch_seed(0, 3)
    assert a == trainer.epoch_seed(0, 3) and 0 <= a < 2**63
    assert len({trainer.epoch_seed(0, 3), trainer.epoch_seed(0, 4), trainer.epoch_seed(1, 3),
                trainer.epoch_seed(0, 3, rank=1)}) == 4
    with pytest.raises(ValueError, match="seed must be >= 0"):
        trainer.epoch_seed(-1, 0)


def test_should_evaluate() -> None:
    assert [e for e in range(1, 8) if should_evaluate(e, 3, 7)] == [3, 6, 7]
    assert not any(should_evaluate(e, 0, 7) for e in range(1, 8))


def test_choose_probes_spreads_over_ids_deterministically() -> None:
    train = [Sample(f"/d/{pid}_{k}.jpg", pid, 0, "train") for pid in (5, 6, 7) for k in range(3)]
    five = choose_probes(train, 5, seed=1)
    assert five == choose_probes(train, 5, seed=1)
    pids = [train[i].pid for i in five]
    assert sorted(set(pids)) == [5, 6, 7]  # all ids before a second image of any
    assert max(pids.count(p) for p in (5, 6, 7)) == 2
    assert pids == sorted(pids) and len(set(five)) == 5
    assert sorted(choose_probes(train, 50, seed=1)) == list(range(9))
    assert choose_probes(train, 0, seed=1) == []
    assert any(choose_probes(train, 3, seed=s) != choose_probes(train, 3, seed=1) for s in range(2, 6))


def test_format_epoch_summary() -> None:
    rec = {"epoch": 3, "lr": 3.5e-4, "img_per_s": 812.4, "loss": {"total": 4.21349},
           "acc": {"global": 0.52, "erase": 0.47}, "p": {"global": 3.01, "erase": 2.98},
           "eval": {"R1": 0.712, "mAP": 0.48}}
    assert format_epoch_summary(rec, 120) == (
        "epoch 3/120 loss 4.2135 acc 0.520/0.470 p 3.010/2.980 lr 3.50e-04 812 img/s R1 71.2% mAP 48.0%"
    )


# --- a full tiny run ---------------------------------------------------------------------------
def test_fit_writes_the_whole_run_dir(finished_run: tuple[Path, object], market: Path) -> None:
    out, result = finished_run
    cfg = tiny_config(market)
    assert rundir.read_config(out) == cfg

    meta = rundir.read_meta(out)
    assert meta["dataset"] == "market1501" and meta["root"] == str(market)
    assert (meta["num_classes"], meta["num_train_images"], meta["num_train_ids"]) == (8, 32, 8)
    assert (meta["num_query_images"], meta["num_gallery_images"]) == (4, 8)
    assert meta["esnet_version"] == esnet.__version__ and meta["torch_version"] == torch.__version__
    assert meta["command"] == "pytest" and meta["device"] == "cpu" and meta["started_at"].endswith("+00:00")

    status = json.loads((out / "status.json").read_text())
    assert set(status) == {"state", "epoch", "total_epochs", "pid", "updated", "error"}
    assert (status["state"], status["epoch"], status["total_epochs"], status["pid"], status["error"]) == (
        "finished", 2, 2, os.getpid(), None)

    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    recs = [json.loads(ln) for ln in lines]
    assert [r["epoch"] for r in recs] == [1, 2]
    for r in recs:
        assert set(r) == {"epoch", "lr", "time_s", "img_per_s", "loss", "acc", "p", "eval"}
        assert set(r["loss"]) == {"global_ce", "global_triplet", "erase_ce", "erase_triplet", "total"}
        parts = ("global_ce", "global_triplet", "erase_ce", "erase_triplet")
        assert r["loss"]["total"] == pytest.approx(sum(r["loss"][k] for k in parts), rel=1e-5)
        assert set(r["acc"]) == {"global", "erase"} and all(0 <= v <= 1 for v in r["acc"].values())
        assert set(r["p"]) == {"global", "erase"} and all(v >= 1 for v in r["p"].values())
        assert set(r["eval"]) == {"R1", "R5", "R10", "mAP", "mINP", "cmc"} and len(r["eval"]["cmc"]) == 20
        assert r["eval"]["R1"] == r["eval"]["cmc"][0] and r["eval"]["cmc"][-1] == 1.0  # 4-image gallery per query
        assert r["img_per_s"] == pytest.approx(16 / r["time_s"])  # 2 iterations x 8 images
    assert [r["lr"] for r in recs] == pytest.approx([1e-3 * 0.01, 1e-3])  # warm-up 1 epoch

    probes = json.loads((out / "probes" / "probes.json").read_text())
    assert probes["input_size"] == [32, 16] and probes["feature_size"] == [2, 1]
    assert len(probes["probes"]) == 3 and len({p["pid"] for p in probes["probes"]}) == 3
    for k, p in enumerate(probes["probes"]):
        assert set(p) == {"index", "path", "relpath", "pid", "label", "camid", "camera", "image"}
        assert p["camera"] == int(Path(p["path"]).name.split("_c")[1][0]) == p["camid"] + 1  # 0002_c3s1_... -> 3
        assert Path(p["path"]).is_absolute() and (market / p["relpath"]).resolve() == Path(p["path"]).resolve()
        assert p["label"] == p["pid"] - 1  # ids 1..8 -> classes 0..7
        with Image.open(out / "probes" / p["image"]) as im:
            assert im.size == (16, 32) and im.mode == "RGB"
    for epoch in (0, 1, 2):
        with np.load(out / "probes" / f"epoch_{epoch:04d}.npz") as z:
            assert z["cam"].shape == (3, 2, 1) and z["cam"].dtype == np.float16
            assert z["box"].shape == (3, 4) and z["box"].dtype == np.int16
            assert float(z["cam"].min()) >= 0.0 and float(z["cam"].max()) <= 1.0
            np.testing.assert_array_equal(z["box"][:, 2:], [[1, 1]] * 3)  # 1/3 of 2 rows -> 1 row, full width
    assert rundir.read_probes(out).epochs == (0, 1, 2)

    last = load_checkpoint(out / "checkpoints" / "last.pt")
    assert last.epoch == 2 and last.num_classes == 8 and last.config == cfg
    best_epoch = rundir.best_eval(recs)["epoch"]
    assert load_checkpoint(out / "checkpoints" / "best.pt").epoch == best_epoch
    assert not (out / ".lock").exists()
    assert not [p for p in out.rglob("*.tmp")]
    assert result.epochs_done == 2 and result.last_record["epoch"] == 2
    assert result.best_mAP == max(r["eval"]["mAP"] for r in recs)

    summary = rundir.list_runs(out.parent)[0]
    assert (summary.state, summary.epochs_done, summary.backbone, summary.erasing) == (
        "finished", 2, "mobilenet_v2", "salient")


def test_finished_run_is_not_overwritten(finished_run: tuple[Path, object], market: Path) -> None:
    out, _ = finished_run
    before = (out / "metrics.jsonl").read_bytes()
    with pytest.raises(RunDirError, match=r"already holds a finished run \(2/2 epochs\).*--resume"):
        train_run(tiny_config(market), out)
    assert (out / "metrics.jsonl").read_bytes() == before and not (out / ".lock").exists()


def test_locked_run_dir_is_refused(market: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    lock = rundir.acquire_lock(out)  # a live owner: this process, holding the flock on another descriptor
    with pytest.raises(RunDirError, match=r"in use by another training process \(pid \d+\)"):
        train_run(tiny_config(market), out)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    rundir.release_lock(lock)


def test_nan_loss_raises_naming_the_iteration(market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = trainer.total_loss
    calls = {"n": 0}

    def loss_nan_on_second(out, pids, cfg):
        losses = real(out, pids, cfg)
        calls["n"] += 1
        if calls["n"] == 2:
            losses["total"] = losses["total"] * float("nan")
        return losses

    monkeypatch.setattr(trainer, "total_loss", loss_nan_on_second)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 1, iteration 2/2"):
        train_run(tiny_config(market, **{"train.eval_every": 0, "train.probe_count": 0}), out)
    status = rundir.read_status(out)
    assert status.state == "failed" and status.error.startswith("FloatingPointError: loss is nan at epoch 1")
    assert not (out / ".lock").exists() and not (out / "metrics.jsonl").exists()


def test_resume_is_exact(market: Path, tmp_path: Path) -> None:
    # random erasing + augmentation exercise both reseeded streams (torch RNG, dataset RNG)
    cfg = tiny_config(market, **{"model.erasing": "random", "train.eval_every": 0, "train.probe_count": 2})
    straight = tmp_path / "straight"
    torch.manual_seed(1)  # the global RNG differs before every call: results must not depend on it
    train_run(cfg, straight)
    split = tmp_path / "split"
    torch.manual_seed(2)
    train_run(override(cfg, {"optim.epochs": 1}), split)
    with open(split / "metrics.jsonl", "a") as f:  # killed while a later epoch was being recorded
        f.write('{"epoch": 2, "lr": 1.0}\n{"epoch": 3, "lo')
    assert rundir.read_status(split).state == "finished"
    torch.manual_seed(3)
    train_run(cfg, split, resume=True, resume_updates={"optim.epochs": 2})

    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(split / "checkpoints" / "last.pt")
    assert a.epoch == b.epoch == 2
    for key, value in a.model_state.items():
        assert torch.equal(value, b.model_state[key]), key
    ra, rb = rundir.read_metrics(straight), rundir.read_metrics(split)
    assert [r["epoch"] for r in rb] == [1, 2]
    assert [r["loss"] for r in ra] == [r["loss"] for r in rb]
    assert [r["lr"] for r in ra] == [r["lr"] for r in rb]
    assert rundir.read_config(split) == cfg
    meta = rundir.read_meta(split)
    assert len(meta["resumed_at"]) == 1  # what changed on resume is kept beside the first command
    assert meta["resumes"] == [{"at": meta["resumed_at"][0], "from_epoch": 1, "command": "",
                                "changed": {"optim.epochs": 2},
                                "code_package": str(Path(esnet.__file__).resolve().parent), "code_changed": []}]
    for epoch in (0, 1, 2):
        np.testing.assert_array_equal(rundir.read_probe_epoch(straight, epoch)[0],
                                      rundir.read_probe_epoch(split, epoch)[0])


def test_resume_refusals(market: Path, tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="holds no run"):
        train_run(tiny_config(market), tmp_path / "empty", resume=True)
    assert not (tmp_path / "empty").exists()
    stored = tiny_config(market)
    with pytest.raises(ValueError, match=r"--resume cannot change \['model.backbone'\]"):
        resume_config(stored, None, {"model.backbone": "resnet18", "optim.epochs": 5})
    assert resume_config(stored, None, {"optim.epochs": 5}).optim.epochs == 5


def test_resume_of_a_run_from_before_softplus_p_is_refused(finished_run: tuple[Path, object],
                                                            tmp_path: Path) -> None:
    # Its model weights load (checkpoint.upgrade_model_state), but p trained in the base-lr group:
    # the optimizer state has no P group, so resuming would be a silent change of recipe.
    import shutil

    out = tmp_path / "old"
    shutil.copytree(finished_run[0], out)
    last = out / "checkpoints" / "last.pt"
    raw = torch.load(last, weights_only=True)
    raw["model"] = {(k[:-1] + "p" if k.endswith("pool.q") else k): v for k, v in raw["model"].items()}
    torch.save(raw, last)
    with pytest.raises(RunDirError, match=r"cannot resume: .*last.pt' predates learnable P-pooling .*global_head"
                                          r"\.pool\.p"):
        train_run(rundir.read_config(out), out, resume=True, resume_updates={"optim.epochs": 3})
    assert rundir.read_status(out).state == "finished"


def test_resume_under_other_esnet_code_is_refused_unless_allowed(finished_run: tuple[Path, object],
                                                                  tmp_path: Path) -> None:
    # The checkpoint restores weights, optimizer and schedule, not the arithmetic: a Market ES-Net run
    # resumed after epoch 22 by a process that imported a newer esnet (train-mode CAM) drifted from
    # epoch 23 on. Every checkpoint records the hashes of the esnet source that trained it.
    import shutil

    out = tmp_path / "other-code"
    shutil.copytree(finished_run[0], out)
    last = out / "checkpoints" / "last.pt"
    code = load_checkpoint(last).extra["code"]
    assert code["package"] == str(Path(esnet.__file__).resolve().parent)
    assert {"model/esnet.py", "model/erasing.py", "engine/trainer.py", "losses.py"} <= set(code["files"])
    raw = torch.load(last, weights_only=True)
    raw["extra"]["code"]["files"]["model/esnet.py"] = "0" * 64  # saved by a process with another model/esnet.py
    torch.save(raw, last)
    cfg = rundir.read_config(out)
    with pytest.raises(RunDirError, match=r"cannot resume exactly: esnet's source differs from the code that saved "
                                          r".*last.pt' \(epoch 2\) in esnet/model/esnet\.py, so the epochs after"):
        train_run(cfg, out, resume=True, resume_updates={"optim.epochs": 3})
    assert rundir.read_status(out).state == "finished" and [r["epoch"] for r in rundir.read_metrics(out)] == [1, 2]

    train_run(cfg, out, resume=True, resume_updates={"optim.epochs": 3}, allow_code_change=True)
    assert rundir.read_meta(out)["resumes"][-1]["code_changed"] == ["model/esnet.py"]
    assert load_checkpoint(last).extra["code"]["files"]["model/esnet.py"] == code["files"]["model/esnet.py"]

    raw = torch.load(last, weights_only=True)
    raw["extra"]["code"]["files"] = {"../../etc/passwd.py": "0" * 64}  # never read outside the package
    torch.save(raw, last)
    with pytest.raises(RunDirError, match=r"the code record lists '\.\./\.\./etc/passwd\.py'"):
        train_run(cfg, out, resume=True, resume_updates={"optim.epochs": 4})


def test_resume_on_another_rank_leaves_the_writers_temporary_files(finished_run: tuple[Path, object],
                                                                    tmp_path: Path) -> None:
    # Only rank 0 holds the lock; a DDP rank > 0 resuming at the same time must not delete what
    # rank 0 is writing (a .tmp of its atomic writes), as remove_orphan_tmp's contract says.
    import shutil

    out = tmp_path / "ddp"
    shutil.copytree(finished_run[0], out)
    lock = rundir.acquire_lock(out)  # rank 0's
    live = out / ".meta.json.rank0.tmp"
    live.write_text("{}")
    try:
        with pytest.raises(RunDirError, match="more than optim.epochs"):  # stops before any DDP set-up
            train_run(rundir.read_config(out), out, resume=True, resume_updates={"optim.epochs": 1}, rank=1,
                      world_size=2)
        assert live.exists()
    finally:
        rundir.release_lock(lock)


def test_eval_needs_query_and_gallery(tmp_path: Path) -> None:
    root = make_market(tmp_path / "m")
    for f in (root / "query").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"train.eval_every=1 but dataset 'market1501' .* has 0 query"):
        train_run(tiny_config(root), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_fit_leaves_global_rng_alone(market: Path, tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_run(tiny_config(market, **{"optim.epochs": 1, "train.eval_every": 0, "train.probe_count": 0,
                                     "model.erasing": "random", "model.pool": "avg"}), tmp_path / "run")
    assert torch.equal(torch.rand(3), expected)
    rec = rundir.read_metrics(tmp_path / "run")[0]
    assert rec["p"] == {} and math.isfinite(rec["loss"]["total"])


# --- distributed -------------------------------------------------------------------------------
class _SaveFinalState(Callback):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.model = None

    def on_train_start(self, state) -> None:
        self.model = state.model

    def on_train_end(self) -> None:
        torch.save({k: v.detach().clone() for k, v in self.model.state_dict().items()}, self.path)


def _ddp_worker(rank: int, world_size: int, root: str, out: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        cfg = tiny_config(Path(root), **{"optim.epochs": 1, "train.eval_every": 1, "train.probe_count": 2})
        train_run(cfg, out, rank=rank, world_size=world_size, device=torch.device("cpu"),
                  callbacks=[_SaveFinalState(Path(out).parent / f"rank{rank}.pt")])
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_cpu_ranks_end_identical(market: Path, tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    mp.spawn(_ddp_worker, args=(2, str(market), str(out), port), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # rank 0 alone wrote the run dir; the epoch saw both ranks' batches (2 iterations x 8 images each)
    (rec,) = rundir.read_metrics(out)
    assert rundir.read_meta(out)["world_size"] == 2
    assert rec["img_per_s"] == pytest.approx(32 / rec["time_s"])
    assert "eval" in rec and rundir.read_status(out).state == "finished"
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    for key in a:
        assert torch.equal(ckpt.model_state[key], a[key]), key


def test_failure_before_the_first_epoch_marks_the_run_failed(market: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from esnet.data.images import ImageError
    from esnet.engine import callbacks

    def unreadable(path):
        raise ImageError(str(path), "file does not exist")

    monkeypatch.setattr(callbacks, "load_rgb", unreadable)  # the probe images only
    out = tmp_path / "run"
    with pytest.raises(ImageError, match="cannot use image"):
        train_run(tiny_config(market, **{"train.eval_every": 0}), out)
    status = rundir.read_status(out)
    assert (status.state, status.epoch, status.total_epochs) == ("failed", 0, 2)
    assert status.error.startswith("esnet.data.images.ImageError: cannot use image")
    assert not (out / ".lock").exists()


def test_erasing_starts_at_erase_from_epoch(market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = trainer.total_loss
    fractions: list[float] = []  # per training step: the erased fraction of the batch's feature maps

    def record(out, pids, cfg):
        fractions.append(float(out.erase_mask.mean()))
        return real(out, pids, cfg)

    monkeypatch.setattr(trainer, "total_loss", record)
    cfg = tiny_config(market, **{"model.erase_from_epoch": 2, "train.eval_every": 0, "train.probe_count": 0})
    train_run(cfg, tmp_path / "run")
    assert len(fractions) == 4  # 2 epochs x 2 iterations
    assert fractions[:2] == [0.0, 0.0]  # epoch 1: the erasing branch sees the whole map
    assert fractions[2] > 0 and fractions[3] == fractions[2]  # epoch 2: the same-size block in every image
