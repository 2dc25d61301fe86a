"""P-pooling (generalized mean) and the Pool module: reference identities."""
import math

import pytest
import torch

from esnet.model.pooling import Pool, avg_pool, max_pool, p_pool, q_from_p


def _x(seed: int = 0, shape=(2, 3, 8, 4)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) + 0.05  # strictly positive


def test_p1_equals_average():
    x = _x()
    got = p_pool(x, torch.tensor([1.0]))
    torch.testing.assert_close(got, x.mean(dim=(2, 3)), atol=1e-6, rtol=0)


def test_large_p_approaches_max_within_the_closed_form_bound():
    # (mean r^p)^(1/p) >= (1/HW)^(1/p) * max: for p=100, HW=32 the result lies in [0.966 max, max];
    # for p=500 the error is below 1 %.
    x = _x(1)
    mx = x.amax(dim=(2, 3))
    for p, tol in ((100.0, 1 - (1 / 32) ** (1 / 100)), (500.0, 0.01)):
        got = p_pool(x, torch.tensor([p]))
        rel = (mx - got) / mx
        assert bool((rel >= -1e-6).all()) and bool((rel <= tol + 1e-6).all()), (p, rel)
    peaked = torch.full((1, 1, 4, 4), 0.99)
    peaked[0, 0, 1, 2] = 1.0  # most cells near the max: p=100 error < 2 %
    rel = (1.0 - p_pool(peaked, torch.tensor([100.0]))) / 1.0
    assert 0.0 <= float(rel) < 0.02


def test_large_p_is_numerically_safe_and_homogeneous():
    # The naive mean(x^p) overflows for 1e4^50 and underflows for 1e-3^50 in float32.
    x = _x(2)
    p = torch.tensor([50.0])
    base = p_pool(x, p)
    for scale in (1e4, 1e-3):
        got = p_pool(x * scale, p)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, base * scale, rtol=1e-4, atol=0)


def test_gradients_finite_including_p():
    x = _x(3).requires_grad_(True)
    p = torch.tensor([3.0], requires_grad=True)
    p_pool(x, p).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(p.grad).all()
    assert float(p.grad.abs()) > 0


def test_all_zero_input_gives_no_nan():
    x = torch.zeros(2, 3, 4, 2, requires_grad=True)
    pool = Pool("p", 3.0)
    out = pool(x)
    out.sum().backward()
    torch.testing.assert_close(out, torch.full((2, 3), 1e-6))
    assert torch.isfinite(x.grad).all() and torch.isfinite(pool.q.grad).all()


def test_p_pool_lies_between_avg_and_max():
    x = _x(4)
    got = p_pool(x, torch.tensor([3.0]))
    assert bool((got >= avg_pool(x) - 1e-6).all()) and bool((got <= max_pool(x) + 1e-6).all())


def test_pool_kinds():
    x = _x(5)
    torch.testing.assert_close(Pool("avg")(x), x.mean(dim=(2, 3)))
    torch.testing.assert_close(Pool("max")(x), x.amax(dim=(2, 3)))
    assert Pool("avg").q is None and Pool("avg").effective_p() is None and Pool("avg").exponent() is None
    pool = Pool("p", 3.0)
    assert pool.effective_p() == 3.0 and pool.q.requires_grad and pool.q.shape == (1,)
    for p_init in (1.0001, 1.5, 2.98, 7.0, 50.0):  # q = softplus^-1(p_init - 1) gives p_init back exactly
        assert Pool("p", p_init).effective_p() == float(torch.tensor(p_init))


def test_p_near_one_is_average_and_its_gradient_does_not_die():
    # p = 1 + softplus(q): as q -> -inf p -> 1 (average pooling) but dp/dq = sigmoid(q) stays > 0,
    # whereas the old clamp(min=1) had zero gradient once p had crossed 1.
    pool = Pool("p", 3.0)
    with torch.no_grad():
        pool.q.fill_(-8.0)
    x = _x(6)
    out = pool(x)
    assert 1.0 < pool.effective_p() < 1.001
    torch.testing.assert_close(out, x.mean(dim=(2, 3)), atol=1e-4, rtol=0)
    (out * torch.linspace(-1, 1, 3)).sum().backward()  # a loss that prefers a different p
    expected_dq = torch.sigmoid(torch.tensor(-8.0))  # dp/dq
    p = pool.exponent().detach().requires_grad_(True)
    (p_pool(x, p) * torch.linspace(-1, 1, 3)).sum().backward()
    torch.testing.assert_close(pool.q.grad, p.grad * expected_dq, rtol=1e-4, atol=0)
    assert float(pool.q.grad.abs()) > 1e-6


def test_q_from_p_round_trip_and_floor():
    p = torch.tensor([1.0 + 1e-3, 2.0, 3.0, 40.0])
    torch.testing.assert_close(1.0 + torch.nn.functional.softplus(q_from_p(p)), p, rtol=1e-6, atol=0)
    floor = 1.0 + torch.nn.functional.softplus(q_from_p(torch.tensor([0.5, 1.0])))
    torch.testing.assert_close(floor, torch.full((2,), 1.0 + 1e-6), rtol=0, atol=1e-7)


def test_per_channel_p():
    pool = Pool("p", 2.5, channels=3, per_channel=True)
    assert pool.q.shape == (3,) and pool.p_values().tolist() == [2.5] * 3
    with torch.no_grad():
        pool.q.copy_(q_from_p(torch.tensor([1.5, 3.0, 8.0])))
    x = _x(7)
    torch.testing.assert_close(pool(x), p_pool(x, torch.tensor([1.5, 3.0, 8.0])), rtol=1e-5, atol=1e-6)
    assert pool.effective_p() == pytest.approx((1.5 + 3.0 + 8.0) / 3, rel=1e-5)
    pool(x).sum().backward()
    assert pool.q.grad.shape == (3,) and bool((pool.q.grad.abs() > 0).all())
    assert Pool("p", 2.5, channels=3).q.shape == (1,)  # per_channel off: one p


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="pool kind must be one of"):
        Pool("gem")
    for bad in (0.5, 1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"p_init must be a finite number > 1"):
            Pool("p", bad)
    with pytest.raises(ValueError, match="channels must be an integer >= 1"):
        Pool("p", 3.0, channels=0, per_channel=True)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        p_pool(torch.ones(2, 3), torch.tensor([2.0]))
    with pytest.raises(ValueError, match="p must have shape"):
        p_pool(torch.ones(1, 3, 2, 2), torch.ones(2))
    assert math.isfinite(float(p_pool(torch.ones(1, 3, 2, 2), torch.ones(3)).sum()))
