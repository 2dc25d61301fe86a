"""P-pooling (generalized mean) and the Pool module: reference identities."""
import math

import pytest
import torch

from esnet.model.pooling import Pool, avg_pool, max_pool, p_pool


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
    assert torch.isfinite(x.grad).all() and torch.isfinite(pool.p.grad).all()


def test_p_pool_lies_between_avg_and_max():
    x = _x(4)
    got = p_pool(x, torch.tensor([3.0]))
    assert bool((got >= avg_pool(x) - 1e-6).all()) and bool((got <= max_pool(x) + 1e-6).all())


def test_pool_kinds():
    x = _x(5)
    torch.testing.assert_close(Pool("avg")(x), x.mean(dim=(2, 3)))
    torch.testing.assert_close(Pool("max")(x), x.amax(dim=(2, 3)))
    assert Pool("avg").p is None and Pool("avg").effective_p() is None
    pool = Pool("p", 3.0)
    assert pool.effective_p() == 3.0 and pool.p.requires_grad


def test_p_below_one_is_clamped_to_average():
    pool = Pool("p", 3.0)
    with torch.no_grad():
        pool.p.fill_(0.5)
    x = _x(6)
    torch.testing.assert_close(pool(x), x.mean(dim=(2, 3)), atol=1e-6, rtol=0)
    assert pool.effective_p() == 1.0


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="pool kind must be one of"):
        Pool("gem")
    with pytest.raises(ValueError, match="p_init must be >= 1"):
        Pool("p", 0.5)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        p_pool(torch.ones(2, 3), torch.tensor([2.0]))
    with pytest.raises(ValueError, match="p must have shape"):
        p_pool(torch.ones(1, 3, 2, 2), torch.ones(2))
    assert math.isfinite(float(p_pool(torch.ones(1, 3, 2, 2), torch.ones(3)).sum()))
