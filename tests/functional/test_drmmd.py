import pytest
import torch
from helpers import property_settings
from hypothesis import given
from hypothesis import strategies as st

from tg_rapidalign import MultiBandGaussianKernel, drmmd, drmmd_witness_grad, kernel_mmd
from tg_rapidalign.functional.drmmd import mmd_witness_grad, solve_spd


def ref_drmmd(x, y, sigma, lam):
    """Float64 reference straight from the definition, with an explicit inverse."""
    x, y = x.double(), y.double()

    def k(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * sigma**2))

    n, m = len(x), len(y)
    mmd2 = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    a = k(y, x).sum(1) / n - k(y, y).sum(1) / m
    beta = torch.linalg.inv(k(y, y) + m * lam * torch.eye(m, dtype=torch.float64)) @ a
    return (1 + lam) / lam * (mmd2 - a @ beta)


@pytest.mark.parametrize("d", [1, 2, 5, 12])
def test_matches_reference(d):
    x, y = torch.randn(17, d, dtype=torch.float64), torch.randn(23, d, dtype=torch.float64) + 0.3
    for lam in (1e-3, 0.1, 10.0):
        assert torch.allclose(drmmd(x, y, 0.8, lam), ref_drmmd(x, y, 0.8, lam), rtol=1e-9, atol=1e-12)


def test_float32_in_float32_out():
    x, y = torch.randn(30, 2), torch.randn(20, 2)
    v = drmmd(x, y, 0.5, 0.01)
    assert v.dtype == torch.float32
    assert torch.allclose(v.double(), ref_drmmd(x, y, 0.5, 0.01), rtol=1e-5)


def test_large_lambda_tends_to_the_mmd_v_statistic():
    x, y = torch.randn(25, 3, dtype=torch.float64), torch.randn(30, 3, dtype=torch.float64) * 1.3
    mmd2 = kernel_mmd(x, y, sigma=0.9, cutoff=None, backend="dense")[0]
    gaps = [float((drmmd(x, y, 0.9, lam) - mmd2).abs()) for lam in (1e1, 1e3, 1e5)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-4 * float(mmd2)


def test_identical_sets_give_zero_and_it_is_nonnegative():
    x = torch.randn(20, 2, dtype=torch.float64)
    assert float(drmmd(x, x.clone(), 0.5, 1e-3).abs()) < 1e-10
    for seed in range(5):
        torch.manual_seed(seed)
        assert float(drmmd(torch.randn(10, 2, dtype=torch.float64), torch.randn(12, 2, dtype=torch.float64),
                           0.5, 1e-2)) > 0


@property_settings(25)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 4), st.floats(1e-3, 10.0),
       st.floats(0.2, 2.0), st.integers(0, 10_000))
def test_witness_gradient_is_n_times_the_particle_gradient(n, m, d, lam, sigma, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=torch.float64, generator=gen).requires_grad_()
    y = torch.randn(m, d, dtype=torch.float64, generator=gen)
    (g,) = torch.autograd.grad(drmmd(x, y, sigma, lam), x)
    h = drmmd_witness_grad(x.detach(), x.detach(), y, sigma, lam)
    assert torch.allclose(n * g, h, rtol=1e-7, atol=1e-9 * (1 + lam) / lam)


def test_witness_gradient_matches_autograd_of_the_witness():
    x, y = torch.randn(9, 3, dtype=torch.float64), torch.randn(11, 3, dtype=torch.float64)
    z = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    lam, sigma = 0.05, 0.7
    m = len(y)
    k = lambda a, b: torch.exp(-torch.cdist(a, b).pow(2) / (2 * sigma**2))  # noqa: E731
    a = k(y, x).mean(1) - k(y, y).mean(1)
    beta = torch.linalg.solve(k(y, y) + m * lam * torch.eye(m, dtype=torch.float64), a)
    h = 2 * (1 + lam) / lam * (k(z, x).mean(1) - k(z, y) @ (1 / m + beta))
    (ref,) = torch.autograd.grad(h.sum(), z)
    assert torch.allclose(drmmd_witness_grad(z.detach(), x, y, sigma, lam), ref, rtol=1e-9, atol=1e-12)
    # and the MMD witness: 2 [k(z, X) / N - k(z, Y) / M]
    (ref_mmd,) = torch.autograd.grad((2 * (k(z, x).mean(1) - k(z, y).mean(1))).sum(), z)
    assert torch.allclose(mmd_witness_grad(z.detach(), x, y, sigma), ref_mmd, rtol=1e-9, atol=1e-12)


def test_multiband_kernel_and_its_gradients():
    kern = MultiBandGaussianKernel([0.3, 1.0], weights=[0.4, 0.6]).double()
    x = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(10, 2, dtype=torch.float64)
    v = drmmd(x, y, kern, 0.1)
    v.backward()
    learnable = [p for p in kern.parameters() if p.requires_grad]
    assert learnable and all(p.grad is not None and torch.isfinite(p.grad).all() for p in learnable)
    (g,) = torch.autograd.grad(drmmd(x, y, kern, 0.1), x)
    assert torch.allclose(8 * g, drmmd_witness_grad(x.detach(), x.detach(), y, kern, 0.1), rtol=1e-7)


def test_gradcheck():
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, s: drmmd(a, b, s, 0.05), (x, y, sigma))
    z = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, a, b: drmmd_witness_grad(q, a, b, 0.7, 0.05), (z, x, y))


def test_degenerate_inputs_are_finite():
    one = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    same = torch.zeros(5, 2, dtype=torch.float64)  # coincident target points: K_YY is singular
    for x, y in ((one, one.detach()), (one, same), (same.clone().requires_grad_(), same)):
        for lam in (1e-8, 1e-3, 1e3):
            v = drmmd(x, y, 0.5, lam)
            assert torch.isfinite(v)
            if x.requires_grad:
                (g,) = torch.autograd.grad(v, x)
                assert torch.isfinite(g).all()
            assert torch.isfinite(drmmd_witness_grad(x.detach(), x.detach(), y, 0.5, lam)).all()


def test_solve_spd_uses_jitter_on_singular_systems():
    A = torch.ones(4, 4, dtype=torch.float64)  # rank one
    b = torch.ones(4, dtype=torch.float64)
    out = solve_spd(A, b)
    assert torch.isfinite(out).all()
    assert torch.allclose(A @ out, b, atol=1e-4)


def test_bad_input():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="lam"):
        drmmd(x, x, 1.0, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        drmmd(x, x, -1.0, 1.0)
    with pytest.raises(ValueError, match="x contains NaN"):
        drmmd(x.clone().fill_(float("nan")), x, 1.0, 1.0)
    with pytest.raises(ValueError, match="at least one point"):
        drmmd(x[:0], x, 1.0, 1.0)
    with pytest.raises(ValueError, match="columns"):
        drmmd(x, torch.randn(3, 3), 1.0, 1.0)
    with pytest.raises(ValueError, match="z and x"):
        drmmd_witness_grad(torch.randn(2, 3), x, x, 1.0, 1.0)


def test_from_gram_matches_the_gaussian_path_and_takes_any_kernel():
    from tg_rapidalign import drmmd_from_gram

    x, y = torch.randn(7, 3, dtype=torch.float64), torch.randn(9, 3, dtype=torch.float64)
    k = lambda a, b: torch.exp(-torch.cdist(a, b).pow(2) / (2 * 0.8**2))  # noqa: E731
    assert torch.allclose(drmmd_from_gram(k(x, x), k(x, y), k(y, y), 0.3), drmmd(x, y, 0.8, 0.3), rtol=1e-12)
    # A linear feature kernel: MMD^2 is the squared distance of the means, DrMMD is larger or equal.
    phi_x, phi_y = torch.randn(7, 4, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64)
    v = drmmd_from_gram(phi_x @ phi_x.T, phi_x @ phi_y.T, phi_y @ phi_y.T, 1e6)
    assert torch.allclose(v, (phi_x.mean(0) - phi_y.mean(0)).pow(2).sum(), rtol=1e-4)
    with pytest.raises(ValueError, match="shapes"):
        drmmd_from_gram(torch.eye(3), torch.ones(2, 2), torch.eye(2), 1.0)


def test_drmmd_loss_module():
    from tg_rapidalign import DrMMDLoss, GaussianKernel

    x, y = torch.randn(12, 3, dtype=torch.float64), torch.randn(15, 3, dtype=torch.float64)
    loss = DrMMDLoss(GaussianKernel(0.8, learnable=True).double(), lam=0.2)
    v = loss(x, y)
    assert torch.allclose(v, drmmd(x, y, 0.8, 0.2), rtol=1e-12)
    v.backward()
    assert all(torch.isfinite(p.grad).all() for p in loss.parameters())
    assert repr(loss).startswith("DrMMDLoss(kernel=GaussianKernel(")
    with pytest.raises(ValueError, match="lam"):
        DrMMDLoss(1.0, lam=-1.0)
