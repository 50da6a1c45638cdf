"""DrMMD, its witness, the flows and the group MMD on CUDA against CPU
(skipped without a GPU)."""
import pytest
import torch

from tg_rapidalign import DrMMDFlow, MMDLoss, drmmd, drmmd_witness_grad, mmd_two_sample_test

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_drmmd_and_witness_match_cpu(dtype):
    x, y = torch.randn(50, 3, dtype=dtype), torch.randn(60, 3, dtype=dtype) + 0.5
    xc = x.clone().requires_grad_()
    xg = x.cuda().requires_grad_()
    vc, vg = drmmd(xc, y, 0.7, 1e-2), drmmd(xg, y.cuda(), 0.7, 1e-2)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert torch.allclose(vg.cpu(), vc, rtol=tol)
    vc.backward()
    vg.backward()
    assert torch.allclose(xg.grad.cpu(), xc.grad, rtol=tol, atol=tol)
    wc = drmmd_witness_grad(x, x, y, 0.7, 1e-2)
    wg = drmmd_witness_grad(x.cuda(), x.cuda(), y.cuda(), 0.7, 1e-2)
    assert torch.allclose(wg.cpu(), wc, rtol=tol, atol=tol)


def test_flow_and_group_mmd_on_cuda():
    y = torch.randn(40, 2, dtype=torch.float64)
    x = torch.randn(40, 2, dtype=torch.float64) * 0.3
    cpu = DrMMDFlow(y, 0.5, 0.05, 0.5, adaptive=True).run(x, 20, progress=False)
    gpu = DrMMDFlow(y.cuda(), 0.5, 0.05, 0.5, adaptive=True).run(x.cuda(), 20, progress=False)
    assert torch.allclose(gpu.particles.cpu(), cpu.particles, rtol=1e-9, atol=1e-12)
    z, g = torch.randn(30, 4, dtype=torch.float64), torch.randint(0, 3, (30,))
    assert torch.allclose(MMDLoss(0.8)(z.cuda(), g.cuda()).cpu(), MMDLoss(0.8)(z, g), rtol=1e-10)
    assert 0 <= mmd_two_sample_test(z.cuda(), z.cuda() + 1, num_permutations=20).p_value <= 1
