"""GPU smoke tests (marker ``gpu``): they run wherever CUDA is present and skip elsewhere.

One AMP fp16 training step with GradScaler and channels_last through the trainer's own
``train_one_epoch`` (as ``fit`` sets it up on CUDA), and a one-process NCCL process group
(what torchrun gives each rank) carrying the trainer's buffer broadcast.
"""
import math
import socket

import pytest
import torch
from torch import nn

from esnet.config import Config, override
from esnet.data.datasets import load_dataset
from esnet.data.loader import build_train_loader
from esnet.engine import trainer
from esnet.model import build_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _tiny(market):
    cfg = override(Config(), {"model.backbone": "resnet18", "data.height": 64, "data.width": 32,
                              "data.batch_size": 8, "data.num_instances": 4, "data.workers": 0,
                              "train.amp": True, "train.max_iters_per_epoch": 1})
    loader, num_classes = build_train_loader(load_dataset("market1501", str(market)).train, cfg.data, seed=0)
    torch.manual_seed(0)
    return cfg, loader, build_model(cfg.model, num_classes)


def test_amp_fp16_step_with_grad_scaler_and_channels_last(market):
    cfg, loader, model = _tiny(market)
    device = torch.device("cuda", 0)
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = trainer.build_optimizer(model, cfg.optim)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10)  # small enough that step 1 cannot overflow fp16
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    seen = {}
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_hook(lambda m, inp, out: seen.update(
        dtype=out.dtype, channels_last=inp[0].is_contiguous(memory_format=torch.channels_last)))

    record = trainer.train_one_epoch(model, loader, optimizer, scaler, cfg, 0, [], device=device, use_amp=True)

    assert seen == {"dtype": torch.float16, "channels_last": True}  # autocast and the memory format reached it
    assert math.isfinite(record["loss"]["total"]) and record["loss"]["total"] > 0
    assert scaler.get_scale() == 2.0**10  # no inf/NaN gradient: the step was taken, not skipped
    params = dict(model.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values())  # fp32 master weights
    moved = [k for k, p in params.items() if p.requires_grad and not torch.equal(p.detach(), before[k])]
    assert len(moved) > 0.9 * sum(p.requires_grad for p in params.values())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_nccl_group_carries_the_buffer_broadcast(market):
    import torch.distributed as dist

    assert dist.is_nccl_available(), "this CUDA build of torch has no NCCL"
    _, _, model = _tiny(market)
    model = model.to("cuda")
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1,
                            device_id=torch.device("cuda", 0))
    try:
        assert dist.get_backend() == "nccl" and dist.get_world_size() == 1
        t = torch.arange(4.0, device="cuda")
        dist.all_reduce(t)
        assert t.tolist() == [0.0, 1.0, 2.0, 3.0]
        buffers = [b.detach().clone() for b in model.buffers()]
        trainer._sync_buffers(model)  # rank 0 broadcasts to itself: unchanged
        assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
        torch.cuda.synchronize()
    finally:
        dist.destroy_process_group()
