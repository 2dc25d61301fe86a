"""ES-Net on tiny inputs: output fields per mode, CAM == Grad-CAM, the erased block."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from esnet.config import ModelConfig
from esnet.model import BACKBONES, ESNet, build_model
from esnet.model.erasing import box_mask, minmax_scale, salient_box

N = 5


def _model(**kw) -> ESNet:
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="resnet18", **kw), N)


def _batch(b: int = 2):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, 64, 32, generator=g), torch.tensor([1, 3, 0, 4][:b])


def _shapes(out):
    return {f.name: None if getattr(out, f.name) is None else tuple(getattr(out, f.name).shape)
            for f in dataclasses.fields(out)}


@pytest.mark.parametrize("erasing", ["salient", "random", "off"])
def test_output_fields_per_mode(erasing):
    model = _model(erasing=erasing)
    x, pids = _batch()
    out = model.train()(x, pids)
    has = erasing != "off"
    assert _shapes(out) == {
        "embedding": (2, 1024 if has else 512),
        "global_feat": (2, 512),
        "global_logits": (2, N),
        "erase_feat": (2, 512) if has else None,
        "erase_logits": (2, N) if has else None,
        "cam": (2, 4, 2),  # resnet18, last stride 1: 64x32 / 16
        "erase_mask": (2, 4, 2) if has else None,
    }
    assert 0.0 <= float(out.cam.min()) and float(out.cam.max()) <= 1.0 and not out.cam.requires_grad
    out = model.eval()(x)
    assert _shapes(out) == {
        "embedding": (2, 1024 if has else 512),
        "global_feat": (2, 512),
        "global_logits": None,
        "erase_feat": (2, 512) if has else None,
        "erase_logits": None,
        "cam": None,
        "erase_mask": None,
    }
    assert model.embedding_dim == out.embedding.shape[1]
    assert model.learned_p() == ({"global": 3.0, "erase": 3.0} if has else {"global": 3.0})


def test_erasing_off_degenerates_to_the_global_feature():
    model = _model(erasing="off", test_feature="concat")
    assert model.cfg.test_feature == "global" and model.erase_head is None and model.erase_bottleneck is None
    x, _ = _batch()
    out = model.eval()(x)
    torch.testing.assert_close(out.embedding, model.global_head.bnneck(out.global_feat))


def test_test_feature_global_and_concat():
    x, _ = _batch()
    concat = _model(test_feature="concat").eval()
    out = concat(x)
    torch.testing.assert_close(out.embedding[:, :512], concat.global_head.bnneck(out.global_feat))
    torch.testing.assert_close(out.embedding[:, 512:], concat.erase_head.bnneck(out.erase_feat))
    fmap = concat.forward_features(x)
    torch.testing.assert_close(out.erase_feat, concat.erase_head.pool(concat.erase_bottleneck(fmap)))  # no erasing in eval
    only_global = _model(test_feature="global").eval()
    out = only_global(x)
    assert out.embedding.shape == (2, 512) and out.erase_feat.shape == (2, 512)
    only_erase = _model(test_feature="erase").eval()
    out_e = only_erase(x)
    assert only_erase.embedding_dim == 512
    torch.testing.assert_close(out_e.embedding, only_erase.erase_head.bnneck(out_e.erase_feat))
    torch.testing.assert_close(out_e.embedding, concat(x).embedding[:, 512:])  # same seed, same weights


def test_set_test_feature_switches_the_embedding_of_a_trained_model():
    x, pids = _batch()
    model = _model(test_feature="concat")
    model.train()(x, pids)  # moves the BN running statistics: not a freshly built model
    model.eval()
    both = model(x).embedding
    model.set_test_feature("erase")
    assert model.cfg.test_feature == "erase" and model.embedding_dim == 512
    torch.testing.assert_close(model(x).embedding, both[:, 512:])
    model.set_test_feature("global")
    torch.testing.assert_close(model(x).embedding, both[:, :512])
    model.set_test_feature("concat")
    assert model.embedding_dim == 1024
    torch.testing.assert_close(model(x).embedding, both)
    with pytest.raises(ValueError, match=r"model.test_feature must be one of \['concat', 'global', 'erase'\], got 'part'"):
        model.set_test_feature("part")
    assert model.cfg.test_feature == "concat"  # a refused name changes nothing
    baseline = _model(erasing="off")
    with pytest.raises(ValueError, match=r"'erase' needs an erasing branch, but model.erasing is 'off'"):
        baseline.set_test_feature("erase")
    baseline.set_test_feature("concat")  # one branch: normalised, as in ModelConfig
    assert baseline.cfg.test_feature == "global" and baseline.embedding_dim == 512


def test_salient_erasing_needs_pids_in_training_only():
    model = _model(erasing="salient")
    x, _ = _batch()
    with pytest.raises(ValueError, match="pids are required"):
        model.train()(x)
    model.eval()(x)  # fine
    random = _model(erasing="random")
    out = random.train()(x)
    assert out.cam is None and out.erase_mask.shape == (2, 4, 2)


def test_bad_inputs_raise():
    model = _model().train()
    x, _ = _batch()
    with pytest.raises(ValueError, match=r"pids must be in \[0, 5\)"):
        model(x, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="pids must be an integer"):
        model(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="images must be a float"):
        model(x[:, :1])
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_model(ModelConfig(backbone="vgg16"), N)
    with pytest.raises(ValueError, match="num_classes must be"):
        build_model(ModelConfig(backbone="resnet18"), 0)


def test_cam_equals_grad_cam_for_average_pooling():
    model = _model(pool="avg").eval()
    head = model.global_head
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # a non-trivial BNNeck scale s = gamma / sqrt(running_var + eps)
        head.bnneck.weight.copy_(torch.rand(512, generator=g) + 0.5)
        head.bnneck.running_var.copy_(torch.rand(512, generator=g) * 3 + 0.1)
        head.bnneck.running_mean.copy_(torch.randn(512, generator=g))
        head.classifier.weight.copy_(torch.randn(N, 512, generator=g))
    x, pids = _batch()
    fmap = model.forward_features(x).detach().requires_grad_(True)  # (B, C, h, w)
    logits = head.classifier(head.bnneck(head.pool(fmap)))
    (grad,) = torch.autograd.grad(logits[torch.arange(2), pids].sum(), fmap)
    alpha = grad.mean(dim=(2, 3))  # Grad-CAM channel weights, (B, C)
    grad_cam = (alpha[:, :, None, None] * fmap).sum(dim=1).detach()  # pre-ReLU, (B, h, w)
    h, w = fmap.shape[2:]
    ours = model.global_cam(fmap, pids)
    torch.testing.assert_close(ours / (h * w), grad_cam, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(minmax_scale(ours), minmax_scale(grad_cam), rtol=1e-4, atol=1e-5)
    assert float(ours.std()) > 0


def _train_step_inputs(model, x, pids):
    """One train-mode forward; returns (out, backbone map F, erasing pool's input) seen by hooks."""
    seen = {}

    def keep(name):
        def hook(module, inputs, output):  # returns None: the output is untouched
            seen[name] = inputs[0].detach()
        return hook

    hooks = [model.global_head.pool.register_forward_hook(keep("fmap")),
             model.erase_head.pool.register_forward_hook(keep("erased"))]
    with torch.no_grad():
        out = model(x, pids)
    for h in hooks:
        h.remove()
    return out, seen["fmap"], seen["erased"]


def test_train_mode_cam_is_grad_cam_of_the_train_mode_logit():
    # Average pooling: the train-mode CAM must be h*w x pre-ReLU Grad-CAM of the logit that is
    # trained, i.e. with the BNNeck normalising by the batch's own (biased) statistics, treated
    # as constants. Computed here by hand with autograd, without global_cam / bn_scale.
    model = _model(pool="avg", erasing="salient").train()
    head = model.global_head
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        head.bnneck.weight.copy_(torch.rand(512, generator=g) + 0.5)
        head.bnneck.running_var.copy_(torch.rand(512, generator=g) * 50 + 0.1)  # far from the batch's
        head.classifier.weight.copy_(torch.randn(N, 512, generator=g))
    x, pids = _batch(4)
    out, fmap, _ = _train_step_inputs(model, x, pids)
    f = fmap.clone().requires_grad_(True)  # (B, C, h, w)
    pooled = f.mean(dim=(2, 3))  # (B, C)
    mu, var = pooled.detach().mean(dim=0), pooled.detach().var(dim=0, unbiased=False)  # constants
    bn = head.bnneck
    normed = bn.weight.detach() * (pooled - mu) / torch.sqrt(var + bn.eps) + bn.bias.detach()
    logits = normed @ head.classifier.weight.detach().T  # (B, N): the train-mode logits
    torch.testing.assert_close(logits.detach(), out.global_logits, rtol=1e-4, atol=1e-5)
    (grad,) = torch.autograd.grad(logits[torch.arange(4), pids].sum(), f)
    alpha = grad.mean(dim=(2, 3))  # Grad-CAM channel weights, (B, C)
    grad_cam = (alpha[:, :, None, None] * fmap).sum(dim=1)  # pre-ReLU, (B, h, w)
    torch.testing.assert_close(out.cam, minmax_scale(grad_cam), rtol=1e-4, atol=1e-5)
    h, w = fmap.shape[2:]
    raw = model.global_cam(fmap, pids, out.global_feat)
    torch.testing.assert_close(raw / (h * w), grad_cam, rtol=1e-4, atol=1e-5)
    # The running-variance CAM (eval mode) is a different map here: the test can tell them apart.
    assert (minmax_scale(model.global_cam(fmap, pids)) - out.cam).abs().max() > 0.05


def test_erased_block_is_the_salient_one_and_really_zeroed():
    model = _model(erasing="salient").train()
    x, pids = _batch(4)
    before = {k: v.clone() for k, v in model.global_head.bnneck.state_dict().items()}
    out, fmap, erased = _train_step_inputs(model, x, pids)
    # The CAM is the min-max scaled CAM of the ground-truth ids, with the BNNeck scale of this
    # batch: generalized mean, biased batch variance, W[pid] * gamma / sqrt(var + eps), by hand.
    head = model.global_head
    p = head.pool.effective_p()
    pooled = fmap.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)  # (B, C)
    scale = head.bnneck.weight / torch.sqrt(pooled.var(dim=0, unbiased=False) + head.bnneck.eps)  # (C,)
    weights = head.classifier.weight[pids] * scale  # (B, C)
    expected = torch.einsum("bc,bchw->bhw", weights.detach(), fmap)
    lo = expected.flatten(1).amin(dim=1)[:, None, None]
    hi = expected.flatten(1).amax(dim=1)[:, None, None]
    torch.testing.assert_close(out.cam, (expected - lo) / (hi - lo), rtol=1e-4, atol=1e-5)
    assert not torch.equal(before["running_var"], model.global_head.bnneck.running_var)  # it was a train step
    bh, bw = model.erase_block_size(4, 2)
    assert (bh, bw) == (1, 2)
    boxes = salient_box(out.cam, bh, bw)
    assert torch.equal(out.erase_mask, box_mask(boxes, 4, 2))
    assert out.erase_mask.sum(dim=(1, 2)).tolist() == [2.0] * 4
    # The window of the mask has the largest CAM sum of all candidate rows.
    row_sums = out.cam.sum(dim=2)  # (B, h): with a full-width block, windows are rows
    assert torch.equal(boxes[:, 0], row_sums.argmax(dim=1))
    # erased: (B, C, h, w), F' * (1 - mask)
    inside = out.erase_mask.bool()[:, None].expand_as(erased)
    assert float(erased[inside].abs().max()) == 0.0
    assert float(erased[~inside].abs().sum()) > 0.0


def test_random_erasing_is_reproducible_with_a_generator():
    model = _model(erasing="random").train()
    x, pids = _batch(4)
    masks = []
    for _ in range(2):
        model.erasing_generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            masks.append(model(x, pids).erase_mask)
    assert torch.equal(masks[0], masks[1]) and masks[0].sum(dim=(1, 2)).tolist() == [2.0] * 4


@pytest.mark.parametrize("erasing", ["salient", "random"])
def test_inactive_erasing_keeps_the_whole_map(erasing):
    model = _model(erasing=erasing).train()
    x, pids = _batch(4)
    seen = {}
    hook = model.erase_head.pool.register_forward_hook(lambda m, inputs, out: seen.update(map=inputs[0].detach()))
    model.erasing_active = False
    model.erasing_generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        out = model(x, pids)
        refined = model.erase_bottleneck(model.forward_features(x))
    hook.remove()
    assert out.erase_mask.shape == (4, 4, 2) and float(out.erase_mask.abs().sum()) == 0.0
    torch.testing.assert_close(seen["map"], refined)  # nothing dropped: the pool sees F' itself
    assert float((refined.abs().sum(dim=1) > 0).float().mean()) > 0.5  # ... which is not already zero
    model.erasing_active = True
    with torch.no_grad():
        assert model(x, pids).erase_mask.sum(dim=(1, 2)).tolist() == [2.0] * 4


def test_erasing_replay_has_no_side_effects():
    model = _model(erasing="salient").train()
    x, pids = _batch()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rec = model.erasing_replay(x, pids)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert rec.feature_size == (4, 2) and rec.cam.shape == (2, 4, 2) and rec.box.dtype == torch.int64
    assert torch.equal(rec.class_id, pids)
    assert torch.equal(rec.box, salient_box(rec.cam, 1, 2))
    assert 0.0 <= float(rec.cam.min()) and float(rec.cam.max()) <= 1.0
    model.eval()
    rec = model.erasing_replay(x)  # predicted ids
    with torch.no_grad():
        predicted = model.global_head.classifier(model(x).embedding[:, :512]).argmax(dim=1)
    assert torch.equal(rec.class_id, predicted) and not model.training


def test_forward_does_not_modify_inputs_and_trains_end_to_end():
    model = _model(erasing="salient").train()
    x, pids = _batch()
    x0 = x.clone()
    out = model(x, pids)
    assert torch.equal(x, x0)
    loss = F.cross_entropy(out.global_logits, pids) + F.cross_entropy(out.erase_logits, pids)
    loss.backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    for head in (model.global_head, model.erase_head):  # p learns: a non-zero gradient on q
        assert head.pool.q.grad is not None and float(head.pool.q.grad.abs().sum()) > 0
    assert model.global_head.bnneck.bias.requires_grad is False and model.global_head.classifier.bias is None
    assert 0.0005 < float(model.global_head.classifier.weight.detach().std()) < 0.002


def test_backbones_and_last_stride():
    assert sorted(BACKBONES) == ["mobilenet_v2", "resnet18", "resnet50"]
    x = torch.randn(1, 3, 128, 64)
    with torch.no_grad():
        for stride, size in ((1, (8, 4)), (2, (4, 2))):
            mobile = BACKBONES["mobilenet_v2"](stride).eval()
            assert mobile.out_channels == 1280 and mobile(x).shape == (1, 1280, *size)
        for stride, size in ((1, (4, 2)), (2, (2, 1))):
            res = BACKBONES["resnet18"](stride).eval()
            assert res.out_channels == 512 and res(x[:, :, :64, :32]).shape == (1, 512, *size)


def test_per_channel_p_is_logged_as_mean_and_spread():
    from esnet.model.pooling import q_from_p

    model = _model(p_per_channel=True)
    assert model.global_head.pool.q.shape == (512,) and model.erase_head.pool.q.shape == (512,)
    assert model.learned_p() == {"global": 3.0, "erase": 3.0}
    values = torch.linspace(1.5, 6.5, 512)
    with torch.no_grad():
        model.global_head.pool.q.copy_(q_from_p(values))
    p = model.learned_p()
    assert p["global"] == pytest.approx(4.0, abs=1e-4) and p["erase"] == 3.0
    spread = model.p_spread()
    assert set(spread) == {"global", "erase"} and set(spread["global"]) == {"min", "q10", "median", "q90", "max"}
    assert spread["global"]["min"] == pytest.approx(1.5, abs=1e-5)
    assert spread["global"]["max"] == pytest.approx(6.5, abs=1e-5)
    assert spread["global"]["q10"] == pytest.approx(2.0, abs=1e-2) and spread["global"]["median"] == pytest.approx(
        4.0, abs=1e-2)
    assert len(model.p_channels()["global"]) == 512
    assert _model().p_spread() == {} and len(_model().p_channels()["global"]) == 1
    assert _model(pool="avg").p_spread() == {} and _model(pool="avg").learned_p() == {}
    with pytest.raises(ValueError, match=r"model.p_init must be > 1 with model.pool 'p'"):
        ModelConfig(p_init=1.0)
    assert ModelConfig(pool="avg", p_init=1.0).p_init == 1.0  # old avg configs still load
