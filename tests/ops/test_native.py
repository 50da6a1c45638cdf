import os
import subprocess
import sys

import pytest
import torch
from helpers import property_settings, random_batch
from hypothesis import given
from hypothesis import strategies as st
from reference import brute_pairs, dense_row_sums

from tg_rapidalign import backends, kernel_mmd, kernel_sums, radius_pairs
from tg_rapidalign.ops import native

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason="native extension not built")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def inputs(device="cpu", dtype=torch.float64, seed=0, bands=2, channels=3):
    gen = torch.Generator().manual_seed(seed)
    a, ba = random_batch([40, 0, 25, 1], dtype=dtype)
    b, bb = random_batch([30, 6, 0, 12], dtype=dtype)
    cb = torch.rand(len(b), channels, dtype=dtype, generator=gen)
    sigmas = torch.tensor([0.1, 0.35][:bands], dtype=dtype)
    coefs = torch.tensor([0.7, 1.3][:bands], dtype=dtype)
    return [t.to(device) for t in (a, b, cb, ba, bb, sigmas, coefs)]


# One band with 1, 4 (forward) or 5 channels on small graphs takes the fused per-graph tile
# path of the CPU kernels; other shapes the general one.
SHAPES = [(2, 3), (1, 1), (1, 4), (1, 5), (2, 5)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cutoff", [None, 1.2])
@pytest.mark.parametrize("bands,channels", SHAPES)
def test_row_sums_match_dense_reference(device, cutoff, bands, channels):
    a, b, cb, ba, bb, s, c = inputs(device, bands=bands, channels=channels)
    out = native.kernel_row_sums(a, b, cb, ba, bb, s, c, cutoff, 4)
    # The op's radius: the cutoff in units of the widest band.
    r = None if cutoff is None else cutoff * float(s.max())
    ref = dense_row_sums(a.cpu(), b.cpu(), cb.cpu(), ba.cpu(), bb.cpu(), s, c, r)
    assert torch.allclose(out.cpu(), ref, rtol=1e-12, atol=1e-14)
    a32, b32, cb32 = a.float(), b.float(), cb.float()
    out32 = native.kernel_row_sums(a32, b32, cb32, ba, bb, s.float(), c.float(), cutoff, 4)
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.cpu().double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.full  # gradchecks (native gradients: test_native_mmd_gradients_match_dense)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bands,channels", SHAPES)
def test_row_sums_gradcheck(device, bands, channels):
    a, b, cb, ba, bb, s, c = inputs(device, bands=bands, channels=channels)
    a, b, cb = a[:20].requires_grad_(), b.requires_grad_(), cb.requires_grad_()
    ba = ba[:20]
    s, c = s.requires_grad_(), c.requires_grad_()
    for r in (None, 0.5):
        assert torch.autograd.gradcheck(
            lambda *t, r=r: native.kernel_row_sums(t[0], t[1], t[2], ba, bb, t[3], t[4], r, 4),
            (a, b, cb, s, c))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bands,channels", SHAPES)
def test_opcheck(device, bands, channels):
    a, b, cb, ba, bb, s, c = inputs(device, bands=bands, channels=channels)
    a, b, cb = a.requires_grad_(), b.requires_grad_(), cb.requires_grad_()
    torch.library.opcheck(torch.ops.tg_rapidalign.kernel_row_sums, (a, b, cb, ba, bb, s, c, 0.5, 4))
    grad = torch.rand(len(a), channels, dtype=a.dtype, device=a.device)
    torch.library.opcheck(torch.ops.tg_rapidalign.kernel_row_sums_backward,
                          (grad, a.detach(), b.detach(), cb.detach(), ba, bb, s, c, 0.5, 4, True, True))
    torch.library.opcheck(torch.ops.tg_rapidalign.radius_pairs, (a.detach(), b.detach(), 0.3, ba, bb, 4),
                          test_utils=("test_schema", "test_faketensor"))


def test_torch_compile_fullgraph():
    a, b, cb, ba, bb, s, c = inputs()

    def f(a, b, cb):
        return (native.kernel_row_sums(a, b, cb, ba, bb, s, c, 0.5, 4) ** 2).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    a1, a2 = a.clone().requires_grad_(), a.clone().requires_grad_()
    v1, v2 = f(a1, b, cb), compiled(a2, b, cb)
    assert torch.allclose(v1, v2)
    v1.backward()
    v2.backward()
    assert torch.allclose(a1.grad, a2.grad)


@property_settings(25)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=4), st.floats(0.05, 0.8),
       st.sampled_from([1, 2, 3]), st.integers(0, 10_000))
def test_radius_native_matches_brute_force(sizes, r, dim, seed):
    torch.manual_seed(seed)
    x, bx = random_batch(sizes, dim=dim)
    y, by = random_batch(list(reversed(sizes)), dim=dim)
    e = radius_pairs(x, y, r, bx, by, backend="native", num_graphs=len(sizes))
    assert set(map(tuple, e.t().tolist())) == brute_pairs(x, y, r, bx, by)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_kernel_sums_agree_across_backends(dtype, tol):
    x, bx = random_batch([700, 5, 1], dtype=dtype)
    y, by = random_batch([600, 9, 2], dtype=dtype)
    ref = kernel_sums(x.double(), y.double(), bx, by, sigma=0.1, cutoff=4.0, backend="dense")
    for backend in ("tiled", "native"):
        s = kernel_sums(x, y, bx, by, sigma=0.1, cutoff=4.0, backend=backend)
        for f in ("kxx", "kyy", "kxy"):
            assert torch.allclose(getattr(s, f).double(), getattr(ref, f), rtol=tol, atol=0), (backend, f)


def test_too_many_bands_or_dimensions_fall_back_or_raise():
    x, bx = random_batch([50])
    limit = native.LIMITS["MAX_BANDS"]
    assert not backends.native_supports(torch.randn(5, 4))
    assert not backends.native_supports(x, bands=limit + 1)
    assert backends.native_supports(x, bands=limit)
    with pytest.raises(ValueError, match="backend='native' cannot run"):
        kernel_mmd(torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64),
                   backend="native")


@pytest.mark.full  # a fresh interpreter imports the package
def test_without_extension_package_warns_once_and_falls_back():
    code = (
        "import sys, warnings\n"
        "sys.modules['tg_rapidalign._C'] = None\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import tg_rapidalign, torch\n"
        "    from tg_rapidalign.ops import native\n"
        "    assert not native.AVAILABLE\n"
        "    x = torch.rand(3000, 3, dtype=torch.float64)\n"
        "    v = tg_rapidalign.kernel_mmd(x, x.flip(0) * 0.9, sigma=0.1)\n"
        "    assert torch.isfinite(v).all()\n"
        "msgs = [str(m.message) for m in w if 'native extension is not available' in str(m.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert 'TG_RAPIDALIGN_NO_EXT=1 forbids' in msgs[0] and 'To fix: unset' in msgs[0], msgs\n"
        "print('ok')\n")
    # NO_EXT: no first-import build either (tests/ops/test_native_loader.py has that).
    env = {k: v for k, v in os.environ.items() if k != "TG_RAPIDALIGN_REQUIRE_EXT"}
    env["TG_RAPIDALIGN_NO_EXT"] = "1"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_radius():
    a, b, cb, ba, bb, s, c = inputs("cpu")
    args = [t.cuda() for t in (a, b, cb, ba, bb, s, c)]
    for r in (None, 0.4):
        cpu = native.kernel_row_sums(a, b, cb, ba, bb, s, c, r, 4)
        gpu = native.kernel_row_sums(*args[:7], r, 4)
        assert torch.allclose(gpu.cpu(), cpu, rtol=1e-12, atol=1e-14)
    e = radius_pairs(args[0], args[1], 0.3, args[3], args[4], backend="native", num_graphs=4)
    assert set(map(tuple, e.t().tolist())) == brute_pairs(a, b, 0.3, ba, bb)


@pytest.mark.parametrize("learnable", [False, True])
def test_native_mmd_gradients_match_dense(learnable):
    """The native MMD differentiates one slot of each self sum and doubles it
    (fixed bandwidths); with learnable bandwidths it differentiates both."""
    from tg_rapidalign import MultiBandGaussianKernel

    x, bx = random_batch([300, 40], dtype=torch.float64)
    y, by = random_batch([280, 35], dtype=torch.float64)
    wx = torch.rand(len(x), dtype=torch.float64)
    wy = torch.rand(len(y), dtype=torch.float64)
    grads = {}
    for backend in ("dense", "native"):
        kern = MultiBandGaussianKernel([0.1, 0.25], learnable=learnable).double() if learnable else 0.15
        ins = [t.clone().requires_grad_() for t in (x, y, wx, wy)]
        v = kernel_mmd(ins[0], ins[1], bx, by, ins[2], ins[3], sigma=kern, cutoff=None, backend=backend)
        (v * torch.tensor([1.0, -0.7], dtype=torch.float64)).sum().backward()
        grads[backend] = [t.grad for t in ins] + ([p.grad for p in kern.parameters()] if learnable else [])
    for g_dense, g_native in zip(grads["dense"], grads["native"]):
        assert torch.allclose(g_native, g_dense, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("r", [None, 0.6])
def test_estep_moments_match_the_dense_evaluator(dtype, tol, r):
    from tg_rapidalign.alignment.evaluators import DenseCorrelation, em_coefs
    from tg_rapidalign.transforms import random_rotation

    x, bx = random_batch([17, 0, 40, 1, 9], dtype=torch.float64)
    y, by = random_batch([12, 5, 33, 0, 9], dtype=torch.float64)
    q, p = torch.rand(len(x), dtype=torch.float64), torch.rand(len(y), dtype=torch.float64)
    R, t = random_rotation(5), 0.1 * torch.randn(5, 3, dtype=torch.float64)
    sig, coef = torch.tensor([0.3], dtype=torch.float64), torch.tensor([1.7], dtype=torch.float64)
    _, ref = DenseCorrelation(x, y, bx, by, q, p, 5).estep(R, t, sig, em_coefs(sig, coef), r)
    out = native.estep_moments(*(v.to(dtype) for v in (x, y, q, p)), bx, by, R.to(dtype), t.to(dtype),
                               sig, coef, r, 5)
    # The dense evaluator leaves a single band's coefficient out of the moments (only ratios
    # set the pose); the op keeps it.
    want = coef * torch.cat([ref.mass[:, None], ref.mx, ref.my, ref.sxy.flatten(1), ref.vx[:, None],
                             ref.vy[:, None]], 1)
    assert out.dtype == dtype and out.shape == (5, 18)
    assert torch.allclose(out.double(), want, rtol=tol, atol=tol * float(want.abs().max()))
    assert (out[[1, 3]] == 0).all()  # a side without points: no pair weight
    torch.library.opcheck(torch.ops.tg_rapidalign.estep_moments,
                          (x, y, q, p, bx, by, R, t, sig, coef, -1.0 if r is None else r, 5))


def test_alignment_uses_the_estep_op_only_without_gradients_and_agrees():
    from tg_rapidalign import MultiBandGaussianKernel, se3_kernel_alignment

    x, bx = random_batch([20, 31, 7])
    y = x + 0.05 * torch.randn_like(x)
    kernel = MultiBandGaussianKernel([0.4], learnable=False, scale=1.7).double()  # a coefficient != 1
    res = {}
    for grad in ("detach", "full"):  # "full" differentiates the E-step: the row-sum path
        res[grad] = se3_kernel_alignment(x.clone().requires_grad_(), y, bx, bx, sigma=kernel, iterations=3,
                                         pose_grad=grad, init="identity", backend="native")
    ref = se3_kernel_alignment(x, y, bx, bx, sigma=kernel, iterations=3, init="identity", backend="dense")
    for out in res.values():
        assert torch.allclose(out.R.detach(), ref.R, atol=1e-12)
        assert torch.allclose(out.loss.detach(), ref.loss, rtol=1e-10)
        assert torch.allclose(out.history, ref.history, rtol=1e-10)


@pytest.mark.parametrize("r", [None, 0.5])
def test_row_sums_first_moment_gradient_matches_the_generic_backward(r):
    a, b, cb, ba, bb, s, c = inputs(bands=1, channels=1)
    w = cb[:, 0]
    assert native.row_sums_first_moment_applies(a, b, w, s, c)
    a = a.requires_grad_()
    out = native.row_sums_first_moment(a, b, w, ba, bb, s, c, r, 4)
    ref = native.kernel_row_sums(a, b, w.unsqueeze(1), ba, bb, s, c, r, 4)[:, 0]
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-14)
    g = torch.rand(len(a), dtype=a.dtype)
    (ga,), (gr,) = torch.autograd.grad(out, a, g), torch.autograd.grad(ref, a, g)
    assert torch.allclose(ga, gr, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda t: native.row_sums_first_moment(t, b, w, ba, bb, s, c, r, 4), (a.detach().requires_grad_(),))
    # Anything else that needs a gradient routes to the generic op.
    for other in (b.requires_grad_(), s.requires_grad_()):
        assert not native.row_sums_first_moment_applies(a, b, w, s, c)
        other.requires_grad_(False)


def test_alignment_gradient_with_the_first_moment_path_matches_dense(monkeypatch):
    from tg_rapidalign import se3_kernel_alignment

    calls = []
    original = native.row_sums_first_moment
    monkeypatch.setattr(native, "row_sums_first_moment", lambda *a: calls.append(1) or original(*a))

    x, bx = random_batch([20, 31, 7, 1])
    y, by = random_batch([18, 31, 9, 2])
    res = {}
    for backend in ("native", "dense"):
        xr = x.clone().requires_grad_()
        out = se3_kernel_alignment(xr, y, bx, by, sigma=0.4, iterations=2, backend=backend)
        (out.loss * torch.tensor([1.0, -0.5, 2.0, 0.3], dtype=x.dtype)).sum().backward()
        res[backend] = (out.loss.detach(), xr.grad)
    assert len(calls) == 2  # the correlation and x's self sum
    assert torch.allclose(res["native"][0], res["dense"][0], rtol=1e-12)
    assert torch.allclose(res["native"][1], res["dense"][1], rtol=1e-10, atol=1e-12)


def _svd_polar(S):
    from tg_rapidalign.alignment.pose import SpecialPolar as _SpecialPolar
    return _SpecialPolar.apply(S)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_special_polar3_matches_the_svd_polar(dtype, tol):
    gen = torch.Generator().manual_seed(3)
    S = torch.randn(500, 3, 3, dtype=torch.float64, generator=gen)
    S[:100] *= 1e-30  # scale-free: tiny and huge matrices alike
    S[100:200] *= 1e30
    S[200:250] = -S[200:250]  # negative determinants: the proper rotation, not a reflection
    out = native.special_polar3(S.to(dtype))
    assert out.dtype == dtype
    assert torch.allclose(out.double(), _svd_polar(S), atol=tol)
    torch.library.opcheck(torch.ops.tg_rapidalign.special_polar3, (S,))


@property_settings(60)
@given(rank=st.integers(0, 3), seed=st.integers(0, 2**31 - 1), repeated=st.booleans())
def test_special_polar3_is_a_nearest_rotation_also_for_ties(rank, seed, repeated):
    """Low rank or repeated singular values make the rotation non-unique: the op
    must still return a proper rotation that attains the largest tr(R^T S)."""
    gen = torch.Generator().manual_seed(seed)
    U, _, Vh = torch.linalg.svd(torch.randn(3, 3, dtype=torch.float64, generator=gen))
    sig = torch.rand(3, dtype=torch.float64, generator=gen).sort(descending=True).values + 0.1
    if repeated:
        sig[1] = sig[0]
    sig[rank:] = 0
    S = (U * sig) @ Vh
    R = native.special_polar3(S[None])[0]
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert abs(float(torch.linalg.det(R)) - 1) < 1e-12
    best = float((_svd_polar(S[None])[0] * S).sum())
    assert float((R * S).sum()) >= best - 1e-12
    if rank == 0:
        assert torch.equal(R, torch.eye(3, dtype=torch.float64))


@pytest.mark.full  # gradcheck
def test_special_polar_uses_the_op_only_without_a_gradient():
    from tg_rapidalign import special_polar

    S = torch.randn(20, 3, 3, dtype=torch.float64)
    tracked = S.clone().requires_grad_()
    R = special_polar(tracked)
    assert R.grad_fn is not None and "SpecialPolar" in type(R.grad_fn).__name__
    assert torch.allclose(special_polar(S), R.detach(), atol=1e-12)
    assert torch.autograd.gradcheck(special_polar, (tracked,))
