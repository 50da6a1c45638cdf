"""The CUDA kernels against the dense float64 reference and the CPU kernels.
Skipped without a GPU (CI has none); run on a GPU machine with
``python -m pytest tests/ops/test_native_cuda.py``."""
import pytest
import torch
from helpers import random_batch
from reference import brute_pairs, dense_row_sums

from tg_rapidalign import (
    MultiBandGaussianKernel,
    kernel_cosine,
    kernel_mmd,
    radius_pairs,
    se3_kernel_alignment,
)
from tg_rapidalign.ops import native
from tg_rapidalign.transforms import random_rotation

CUDA_BUILT = (native.AVAILABLE and torch.cuda.is_available()
              and native.has_kernel("kernel_row_sums", torch.device("cuda")))
pytestmark = pytest.mark.skipif(not CUDA_BUILT, reason="needs CUDA and the extension built with it")


def case(sizes_a, sizes_b, channels, bands, dtype=torch.float64, seed=0):
    """Graphs above 256 points use the spatial grid (smaller ones one cell per graph)."""
    torch.manual_seed(seed)
    a, ba = random_batch(sizes_a, dtype=dtype)
    b, bb = random_batch(sizes_b, dtype=dtype)
    a, b = a[torch.randperm(len(a))], b  # unsorted rows: outputs must land at their own index
    ba = ba[torch.randperm(len(ba))].sort().values  # (batch stays sorted)
    cb = torch.rand(len(b), channels, dtype=dtype)
    sigmas = torch.tensor([0.06, 0.15, 0.3][:bands], dtype=dtype)
    coefs = torch.tensor([0.7, 1.3, 0.4][:bands], dtype=dtype)
    return a, b, cb, ba, bb, sigmas, coefs


SHAPES = [(1, 1), (2, 1), (5, 1), (5, 2), (3, 3), (1, 2)]


@pytest.mark.parametrize("channels,bands", SHAPES)
@pytest.mark.parametrize("cutoff", [None, 0.7])
@pytest.mark.parametrize("sizes", [([40, 0, 25, 1], [30, 6, 0, 12]), ([900, 3], [700, 5])])
def test_forward_matches_dense_reference(channels, bands, cutoff, sizes):
    a, b, cb, ba, bb, s, c = case(*sizes, channels, bands)
    ng = len(sizes[0])
    # The op's radius: the cutoff in units of the widest band.
    ref = dense_row_sums(a, b, cb, ba, bb, s, c, None if cutoff is None else cutoff * float(s.max()))
    on_gpu = [t.cuda() for t in (a, b, cb, ba, bb, s, c)]
    out = native.kernel_row_sums(*on_gpu, cutoff, ng)
    assert torch.allclose(out.cpu(), ref, rtol=1e-12, atol=1e-13)
    out32 = native.kernel_row_sums(*[t.float() if t.is_floating_point() else t for t in on_gpu], cutoff, ng)
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.cpu().double(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("channels,bands", SHAPES)
@pytest.mark.parametrize("r", [None, 0.2])
def test_backward_matches_cpu(channels, bands, r):
    a, b, cb, ba, bb, s, c = case([900, 3, 0], [700, 5, 2], channels, bands)
    grad = torch.randn(len(a), channels, dtype=a.dtype)

    def grads(device):
        ins = [t.detach().to(device).requires_grad_() for t in (a, b, cb, s, c)]
        out = native.kernel_row_sums(*ins[:3], ba.to(device), bb.to(device), *ins[3:], r, 3)
        (out * grad.to(device)).sum().backward()
        return [t.grad.cpu() for t in ins]

    for g_cpu, g_gpu in zip(grads("cpu"), grads("cuda")):
        assert torch.allclose(g_gpu, g_cpu, rtol=1e-10, atol=1e-12)


def test_gradcheck_on_the_grid():
    a, b, cb, ba, bb, s, c = case([300], [280], 2, 2)
    a, b, cb, s, c = (t.cuda().requires_grad_() for t in (a[:12], b, cb, s, c))
    ba, bb = ba[:12].cuda(), bb.cuda()
    assert torch.autograd.gradcheck(
        lambda *t: native.kernel_row_sums(t[0], t[1], t[2], ba, bb, t[3], t[4], 0.3, 1), (a, b, cb, s, c))


def test_opcheck_on_the_grid():
    a, b, cb, ba, bb, s, c = (t.cuda() for t in case([400, 7], [500, 2], 5, 1))
    torch.library.opcheck(torch.ops.tg_rapidalign.kernel_row_sums,
                          (a.requires_grad_(), b.requires_grad_(), cb.requires_grad_(), ba, bb, s, c, 0.2, 2))


def test_compile_fullgraph_on_cuda():
    a, b, cb, ba, bb, s, c = (t.cuda() for t in case([400], [500], 1, 1))

    def f(a):
        return native.kernel_row_sums(a, b, cb, ba, bb, s, c, 0.2, 1).pow(2).sum()

    a1, a2 = a.clone().requires_grad_(), a.clone().requires_grad_()
    v1, v2 = f(a1), torch.compile(f, fullgraph=True, backend="aot_eager")(a2)
    v1.backward()
    v2.backward()
    assert torch.allclose(v1, v2) and torch.allclose(a1.grad, a2.grad)


@pytest.mark.parametrize("sizes", [[40, 0, 25], [900, 3]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_radius_matches_brute_force(sizes, dtype):
    x, bx = random_batch(sizes, dtype=dtype)
    y, by = random_batch(sizes[::-1], dtype=dtype)
    e = radius_pairs(x.cuda(), y.cuda(), 0.1, bx.cuda(), by.cuda(), backend="native", num_graphs=len(sizes))
    pairs = list(map(tuple, e.t().tolist()))
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == brute_pairs(x, y, 0.1, bx, by)
    assert bool((e[0, 1:] >= e[0, :-1]).all())  # rows grouped by query, in input order


@pytest.mark.parametrize("fn", [kernel_mmd, kernel_cosine])
def test_public_losses_agree_with_cpu(fn):
    x, bx = random_batch([800, 30, 1])
    y, by = random_batch([700, 25, 4])
    wx = torch.rand(len(x), dtype=x.dtype)
    kw = dict(sigma=MultiBandGaussianKernel([0.05, 0.2], weights=[0.3, 0.7]).double(), cutoff=3.0)
    ref = fn(x, y, bx, by, wx, None, backend="dense", **kw)
    xg = x.detach().cuda().requires_grad_()
    out = fn(xg, y.cuda(), bx.cuda(), by.cuda(), wx.cuda(), None, backend="auto", **kw)
    assert torch.allclose(out.cpu(), ref, rtol=1e-10, atol=1e-12)
    xc = x.detach().clone().requires_grad_()
    fn(xc, y, bx, by, wx, None, backend="native", **kw).sum().backward()
    out.sum().backward()
    assert torch.allclose(xg.grad.cpu(), xc.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("init", ["identity", "principal_axes"])
@pytest.mark.parametrize("estep", ["kernel", "robust"])
def test_alignment_agrees_with_cpu(init, estep):
    torch.manual_seed(1)
    x, bx = random_batch([30, 12, 400])
    R = random_rotation(3)[bx]
    y = (R @ x.unsqueeze(-1)).squeeze(-1) + 0.01 * torch.randn_like(x)
    kw = dict(sigma=0.1, iterations=3, init=init, estep=estep)
    cpu = se3_kernel_alignment(x, y, bx, bx, backend="native", **kw)
    xg = x.detach().cuda().requires_grad_()
    gpu = se3_kernel_alignment(xg, y.cuda(), bx.cuda(), bx.cuda(), backend="native", **kw)
    for f in ("loss", "kappa", "R", "t"):
        assert torch.allclose(getattr(gpu, f).cpu(), getattr(cpu, f), rtol=1e-8, atol=1e-10), f
    gpu.loss.sum().backward()
    assert torch.isfinite(xg.grad).all()


def test_special_polar3_cuda_matches_cpu():
    S = torch.randn(70000, 3, 3, dtype=torch.float64)  # beyond one cuSOLVER-sized chunk
    S[:10] = 0
    for dtype in (torch.float64, torch.float32):
        out = native.special_polar3(S.to(dtype).cuda())
        assert out.dtype == dtype
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert torch.allclose(out.cpu(), native.special_polar3(S.to(dtype)), atol=tol)
    torch.library.opcheck(torch.ops.tg_rapidalign.special_polar3, (S[:50].cuda(),))


@pytest.mark.parametrize("beta", [0.0, 0.4])
def test_typed_sums_agree_with_cpu(beta):
    x, bx = random_batch([300, 20, 1])
    y, by = random_batch([280, 9, 4])
    tx, ty = torch.randint(0, 3, (len(x),)), torch.randint(0, 3, (len(y),))
    k = MultiBandGaussianKernel([0.05, 0.2], cross_type_weight=beta).double()
    ref = kernel_cosine(x, y, bx, by, sigma=k, type_x=tx, type_y=ty, backend="dense", cutoff=None)
    xg = x.detach().cuda().requires_grad_()
    out = kernel_cosine(xg, y.cuda(), bx.cuda(), by.cuda(), sigma=k.cuda(), type_x=tx.cuda(),
                        type_y=ty.cuda(), backend="native", cutoff=None)
    assert torch.allclose(out.cpu(), ref, rtol=1e-10, atol=1e-12)
    out.sum().backward()
    assert torch.isfinite(xg.grad).all()
