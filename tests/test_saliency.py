"""Saliency on a tiny resnet18 ES-Net (64x32 -> 4x2 map): shapes, known answers, no side effects."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.modules import module as nn_module

from esnet import saliency as S
from esnet.config import ModelConfig
from esnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from esnet.model import build_model, minmax_scale, salient_box

N = 5
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")


def _build(**kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="resnet18", **kw), N).eval()


@pytest.fixture(scope="module")
def model():
    return _build()  # salient erasing, test_feature="concat": a 1024-d embedding


def _images(b=2, h=64, w=32, seed=1):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        {n: m.training for n, m in model.named_modules()},
        {n: tuple(len(getattr(m, a)) for a in HOOK_DICTS) for n, m in model.named_modules()},
        [p.grad is None for p in model.parameters()],
        len(nn_module._global_forward_hooks) + len(nn_module._global_backward_hooks),
    )


def _assert_same(before, after):
    state, *rest = before
    assert state.keys() == after[0].keys() and all(torch.equal(state[k], after[0][k]) for k in state)
    assert rest == list(after[1:])


CALLS = {
    "own_cam": lambda m, x: S.own_cam(m, x),
    "grad_cam": lambda m, x: S.grad_cam(m, x),
    "grad_cam_identity": lambda m, x: S.grad_cam(m, x, torch.tensor([1, 4])),
    "integrated_gradients": lambda m, x: S.integrated_gradients(m, x[:1], "grey", steps=2),
    "similarity": lambda m, x: list(S.similarity_saliency(m, x[:1], x[1:])),
    "erasing_replay_map": lambda m, x: S.erasing_replay_map(m, x),
}


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("frozen", [False, True])
def test_maps_are_image_sized_unit_range_and_model_untouched(model, name, frozen):
    if frozen:  # a cached app model may have requires_grad off everywhere: still works, stays off
        model = copy.deepcopy(model).requires_grad_(False)
    x = _images()
    x0, before = x.clone(), _snapshot(model)
    maps = CALLS[name](model, x)
    _assert_same(before, _snapshot(model))
    assert torch.equal(x, x0)
    for m in maps:
        heat = m.cam if name == "erasing_replay_map" else m.heat
        assert heat.shape == (64, 32) and heat.dtype == np.float32 and np.isfinite(heat).all()
        assert heat.min() == 0.0 and heat.max() == 1.0  # min-max scaled; these maps are not constant
        if name != "erasing_replay_map":
            assert m.raw.shape == ((64, 32) if name == "integrated_gradients" else (4, 2)) and np.isfinite(m.raw).all()


def _hot_model(base, fmap, weight_channel=7, cls=3):
    """A copy of ``base`` whose backbone outputs ``fmap`` and whose classifier reads one channel."""
    model = copy.deepcopy(base)
    with torch.no_grad():
        model.global_head.classifier.weight.zero_()
        model.global_head.classifier.weight[cls, weight_channel] = 2.0
    model.backbone.register_forward_hook(lambda mod, inp, out: fmap.clone())
    return model


def _hot_fmap(h=4, w=2, cells=((2, 1), (0, 0)), channel=7):
    fmap = torch.rand(len(cells), 512, h, w, generator=torch.Generator().manual_seed(3)) * 0.1
    for i, (r, c) in enumerate(cells):
        fmap[i, channel, r, c] = 5.0
    return fmap


def test_own_cam_peaks_where_the_only_weighted_channel_is_hot(model):
    fmap = _hot_fmap()
    model = _hot_model(model, fmap)
    maps = S.own_cam(model, _images())
    s = float(model.global_head.bn_scale()[7].detach())
    assert s == pytest.approx(1 / math.sqrt(1 + 1e-5))
    for i, (r, c) in enumerate(((2, 1), (0, 0))):
        m = maps[i]
        np.testing.assert_allclose(m.raw, 2.0 * s * fmap[i, 7].numpy(), rtol=1e-6)  # CAM = W[3, 7] s F_7
        assert np.unravel_index(m.raw.argmax(), m.raw.shape) == (r, c)
        # bilinear, align_corners=False: the cell centre lies between pixels 16 r + 7 and 16 r + 8
        peak = np.unravel_index(m.heat.argmax(), m.heat.shape)
        assert (peak[0] // 16, peak[1] // 16) == (r, c) and m.heat[peak] == 1.0
        assert m.heat[16 * r + 7: 16 * r + 9, 16 * c + 7: 16 * c + 9].min() > 0.93  # >= (31/32)^2
        # only class 3 has a non-zero logit: 2 s (p-pool of F_7); the others are 0
        pooled = float(fmap[i, 7].clamp(min=1e-6).pow(3).mean().pow(1 / 3))
        logit = 2.0 * s * pooled
        assert m.info["class_id"] == 3 and m.info["logit"] == pytest.approx(logit, rel=1e-5)
        assert m.info["prob"] == pytest.approx(math.exp(logit) / (math.exp(logit) + N - 1), rel=1e-5)


def test_erasing_replay_map_box_holds_the_peak_and_scales_to_pixels(model):
    model = _hot_model(model, _hot_fmap())
    views = S.erasing_replay_map(model, _images())
    # erase_height 1/3 of 4 rows -> 1 row, full width: the hot row, 16 px per cell
    assert [v.box_cells for v in views] == [(2, 0, 1, 2), (0, 0, 1, 2)]
    assert [v.box_pixels for v in views] == [(32, 0, 16, 32), (0, 0, 16, 32)]
    assert [v.class_id for v in views] == [3, 3]
    for v, (r, c) in zip(views, ((2, 1), (0, 0))):
        assert v.mask.dtype == bool and v.mask.sum() == 16 * 32
        assert v.mask[16 * r: 16 * r + 16].all() and v.mask.sum() == v.mask[16 * r: 16 * r + 16].sum()
        peak = np.unravel_index(v.cam.argmax(), v.cam.shape)
        assert v.mask[peak] and (peak[0] // 16, peak[1] // 16) == (r, c)
    # given ids override the prediction
    assert [v.class_id for v in S.erasing_replay_map(model, _images(), torch.tensor([0, 1]))] == [0, 1]


def test_erasing_replay_map_box_pixels_on_a_map_that_does_not_divide(model):
    # 72x40 -> 5x3 cells (H/h = 14.4, W/w = 13.33); block round(5/3) = 2 rows x 3 cols
    model = _hot_model(model, _hot_fmap(5, 3, cells=((4, 1),)))
    (view,) = S.erasing_replay_map(model, _images(1, 72, 40))
    assert view.box_cells == (3, 0, 2, 3)  # the only window holding row 4
    assert view.box_pixels == (43, 0, 29, 40)  # rows floor(3 * 14.4 + .5) = 43 .. floor(5 * 14.4 + .5) = 72
    assert view.mask.shape == (72, 40) and view.mask[43:].all() and not view.mask[:43].any()


def test_erasing_replay_map_matches_own_cam_on_a_random_model(model):
    x, ids = _images(), torch.tensor([2, 0])
    views, cams = S.erasing_replay_map(model, x, ids), S.own_cam(model, x, ids)
    raw = torch.from_numpy(np.stack([c.raw for c in cams]))  # (B, 4, 2)
    boxes = salient_box(minmax_scale(raw), 1, 2)
    for v, c, box in zip(views, cams, boxes.tolist()):
        assert v.box_cells == tuple(box) and v.class_id == c.info["class_id"]
        np.testing.assert_allclose(v.cam, c.heat, atol=1e-6)  # the same CAM, upsampled


def test_grad_cam_of_the_identity_logit_is_the_relu_cam_for_average_pooling():
    model = _build(pool="avg")
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        model.global_head.classifier.weight.copy_(torch.randn(N, 512, generator=g))
        model.global_head.bnneck.running_var.copy_(torch.rand(512, generator=g) + 0.5)
    x, ids = _images(), torch.tensor([1, 3])
    cams, grads = S.own_cam(model, x, ids), S.grad_cam(model, x, ids)
    for c, gc in zip(cams, grads):
        np.testing.assert_allclose(gc.raw, np.maximum(c.raw, 0) / 8, rtol=1e-4, atol=1e-6)  # h w = 8
        assert gc.info["target"] == "identity" and gc.info["class_id"] == c.info["class_id"]
        assert gc.info["score"] == pytest.approx(c.info["logit"], rel=1e-5)
        assert gc.raw.max() > 0


def test_default_grad_cam_is_self_similarity_saliency(model):
    x = _images(1)
    (gc,) = S.grad_cam(model, x)
    q, m = S.similarity_saliency(model, x, x)
    with torch.no_grad():
        norm = float(model(x).embedding.norm())
    assert gc.info == {"target": "embedding", "score": pytest.approx(norm, rel=1e-5)}
    np.testing.assert_allclose(q.raw, m.raw, rtol=1e-6)  # identical images: symmetric maps
    np.testing.assert_allclose(q.heat, m.heat, atol=1e-6)
    np.testing.assert_allclose(q.raw * norm, gc.raw, rtol=1e-3, atol=1e-6)  # T = |e| vs T = <e, e>/|e|
    np.testing.assert_allclose(q.heat, gc.heat, atol=1e-4)
    assert q.info["similarity"] == pytest.approx(1.0, abs=1e-5) and q.raw.max() > 0


def test_similarity_saliency_swaps_with_its_arguments_and_depends_on_the_input(model):
    a, b, c = _images(3).split(1)
    qa, mb = S.similarity_saliency(model, a, b)
    qb, ma = S.similarity_saliency(model, b, a)
    np.testing.assert_allclose(qa.raw, ma.raw, rtol=1e-5)
    np.testing.assert_allclose(mb.raw, qb.raw, rtol=1e-5)
    with torch.no_grad():
        ea, eb = model(a).embedding, model(b).embedding
    assert ea.shape == (1, 1024)  # concat: global + erasing branch
    assert qa.info["similarity"] == pytest.approx(float(F.cosine_similarity(ea, eb)), abs=1e-6)
    assert not np.allclose(qa.raw, mb.raw)  # a's map is not b's
    qa2, _ = S.similarity_saliency(model, a, c)
    assert not np.allclose(qa.raw, qa2.raw)  # a's map depends on its partner


def _manual_similarity_cam(model, x, direction):
    """ReLU(sum_k mean_hw(dT/dF_k) F_k) of T = <e(x), direction> / |e(x)| by plain autograd (no captum)."""
    store = {}

    def keep(_module, _inputs, out):
        store["F"] = out
        return out

    handle = model.backbone.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            e = model(x).embedding
            t = (e * direction).sum() / e.norm().detach()
            (grad,) = torch.autograd.grad(t, store["F"])
    finally:
        handle.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    return torch.relu((weights * store["F"]).sum(dim=1))[0].detach().numpy()  # (h, w)


def test_centered_similarity_saliency_takes_the_partner_direction_from_the_center(model):
    a, b, c = _images(3, seed=7).split(1)
    with torch.no_grad():
        u = F.normalize(model(torch.cat([a, b, c])).embedding, dim=1)  # (3, D)
    center = u.mean(dim=0)  # (D,): the reference set's mean unit embedding
    qa, mb = S.similarity_saliency(model, a, b, center)
    d_a, d_b = F.normalize(u[0] - center, dim=0), F.normalize(u[1] - center, dim=0)
    assert qa.info["similarity"] == pytest.approx(float(u[0] @ u[1]), abs=1e-5)
    assert qa.info["centered_similarity"] == pytest.approx(float(d_a @ d_b), abs=1e-5)
    assert abs(qa.info["centered_similarity"] - qa.info["similarity"]) > 0.05  # centring changes the cosine here
    np.testing.assert_allclose(qa.raw, _manual_similarity_cam(model, a, d_b), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(mb.raw, _manual_similarity_cam(model, b, d_a), rtol=1e-4, atol=1e-7)
    plain, _ = S.similarity_saliency(model, a, b)
    assert not np.allclose(plain.raw, qa.raw)  # the center changes the map
    zero, _ = S.similarity_saliency(model, a, b, np.zeros(u.shape[1], dtype=np.float32))
    np.testing.assert_allclose(zero.raw, plain.raw, rtol=1e-5, atol=1e-8)  # a zero center is the plain cosine
    assert zero.info["centered_similarity"] == pytest.approx(zero.info["similarity"], abs=1e-6)
    for bad in (torch.zeros(3), torch.full((u.shape[1],), float("nan"))):
        with pytest.raises(ValueError, match="center must be a finite"):
            S.similarity_saliency(model, a, b, bad)


def test_ig_baselines_are_grey_or_blurred():
    x = _images(1)
    grey = S.ig_baseline(x, "grey")
    expected = [(0.5 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(grey, torch.tensor(expected)[None, :, None, None].expand_as(x))
    assert grey.shape == x.shape and float(grey[0, 0, 0, 0]) == pytest.approx(0.0655, abs=1e-3)
    const = torch.full_like(x, 0.7)
    torch.testing.assert_close(S.ig_baseline(const, "blur"), const)  # blur keeps a flat image
    blur = S.ig_baseline(x, "blur")
    assert blur.shape == x.shape and float(blur.std()) < 0.2 * float(x.std())  # sigma 6.4 px flattens noise
    assert abs(float(blur.mean() - x.mean())) < 0.05
    for bad in ("zeros", "black", ""):
        with pytest.raises(ValueError, match=r"baseline must be one of \['blur', 'grey'\]"):
            S.ig_baseline(x, bad)


def test_integrated_gradients_info_and_completeness(model):
    x = _images(1)
    (ig,) = S.integrated_gradients(model, x, "blur", steps=4)
    info = ig.info
    with torch.no_grad():
        e, eb = model(x).embedding, model(S.ig_baseline(x, "blur")).embedding
    u = F.normalize(e, dim=1)
    assert info["f_input"] == pytest.approx(float(e.norm()), rel=1e-5)
    assert info["f_baseline"] == pytest.approx(float((eb * u).sum()), rel=1e-4)
    assert info["delta"] == pytest.approx(info["attr_sum"] - (info["f_input"] - info["f_baseline"]), abs=1e-3)
    assert math.isfinite(info["delta"]) and abs(info["delta"]) < 0.05 * abs(info["f_input"] - info["f_baseline"])
    assert (info["baseline"], info["steps"], info["target"]) == ("blur", 4, "embedding")
    assert ig.raw.shape == (64, 32) and ig.raw.min() >= 0
    np.testing.assert_allclose(ig.heat, (ig.raw - ig.raw.min()) / (ig.raw.max() - ig.raw.min()), atol=1e-6)


def test_bad_inputs_raise(model):
    x = _images()
    with pytest.raises(ValueError, match="baseline must be one of"):
        S.integrated_gradients(model, x, baseline="zeros")
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        S.integrated_gradients(model, x, steps=0)
    with pytest.raises(ValueError, match=r"class_ids must be in \[0, 5\), got range \[0, 5\]"):
        S.own_cam(model, x, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"class_ids must be an integer \(2,\) tensor"):
        S.grad_cam(model, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="query must hold exactly one image"):
        S.similarity_saliency(model, x, x[:1])
    with pytest.raises(ValueError, match=r"images must be a \(B, 3, H, W\)"):
        S.own_cam(model, x[:, :1])
    with pytest.raises(ValueError, match="images must be float32"):
        S.own_cam(model, x.double())
    with pytest.raises(TypeError, match="model must be an esnet.model.ESNet"):
        S.own_cam(torch.nn.Identity(), x)
    model.train()
    try:
        with pytest.raises(ValueError, match="model must be in eval mode"):
            S.erasing_replay_map(model, x)
    finally:
        model.eval()


def test_constant_map_gives_zero_heat(model):
    model = _hot_model(model, torch.ones(1, 512, 4, 2))
    (m,) = S.own_cam(model, _images(1))
    assert np.all(m.raw == m.raw[0, 0]) and m.heat.shape == (64, 32) and not m.heat.any()


def test_integrated_gradients_of_an_identity_logit(model):
    x = _images(1)
    (cam,) = S.own_cam(model, x, torch.tensor([2]))
    (ig,) = S.integrated_gradients(model, x, "grey", steps=2, class_ids=torch.tensor([2]))
    assert ig.info["target"] == "identity" and ig.info["class_id"] == 2
    assert ig.info["f_input"] == pytest.approx(cam.info["logit"], rel=1e-4, abs=1e-6)
    assert ig.info["prob"] == pytest.approx(cam.info["prob"], rel=1e-5) and math.isfinite(ig.info["delta"])


def test_attention_spread_reference_values():
    from esnet.saliency import attention_spread

    cam = np.zeros((5, 8, 4))
    cam[0, 3, 2] = 5.0  # one hot cell: half of it is half a cell
    cam[1] = 1.0  # flat: half of the mass on half of the cells
    cam[2, :2, :] = 1.0  # 8 equal cells of 32
    cam[2, 4:, :] = -3.0  # negative evidence does not count
    cam[3] = -1.0  # nothing positive
    cam[4, 0, 0], cam[4, 0, 1] = 3.0, 1.0  # 3/4 in one cell: 0.5 is 2/3 of it
    s = attention_spread(cam)
    np.testing.assert_allclose(s["coverage"][[0, 1, 2, 4]], [0.5 / 32, 0.5, 4 / 32, (2 / 3) / 32])
    np.testing.assert_allclose(s["entropy"][[0, 1, 2]], [0.0, 1.0, np.log(8) / np.log(32)], atol=1e-12)
    expected = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)) / np.log(32)
    np.testing.assert_allclose(s["entropy"][4], expected)
    assert np.isnan(s["coverage"][3]) and np.isnan(s["entropy"][3])
    assert attention_spread(cam, mass=0.9)["coverage"][1] == pytest.approx(0.9)


@pytest.mark.parametrize("cam,mass,match", [
    (np.zeros((2, 1, 1)), 0.5, "at least 2 cells"),
    (np.zeros((2, 4)), 0.5, "at least 2 cells"),
    (np.full((1, 2, 2), np.nan), 0.5, "finite"),
    (np.ones((1, 2, 2)), 1.0, "mass"),
])
def test_attention_spread_rejects_bad_input(cam, mass, match):
    from esnet.saliency import attention_spread

    with pytest.raises(ValueError, match=match):
        attention_spread(cam, mass=mass)
