"""The numeric policy: autocast changes nothing, half inputs compute in float32,
and float32 structures far from the origin keep float32 accuracy."""
import pytest
import torch
from helpers import graph_index
from torch_geometric.data import Batch, Data

from tg_rapidalign import (
    SE3KernelAlignmentLoss,
    drmmd,
    drmmd_witness_grad,
    group_mmd,
    kabsch_rmsd,
    kernel_cosine,
    kernel_mmd,
    se3_kernel_alignment,
    weighted_procrustes,
)
from tg_rapidalign.metrics import AlignmentMetric
from tg_rapidalign.numerics import compute_dtype
from tg_rapidalign.ops import native
from tg_rapidalign.transforms import AlignToReference, random_rotation

ALIGN_BACKENDS = ["dense", "pairs"] + (["native"] if native.AVAILABLE else [])
MMD_BACKENDS = ["dense"] + (["native"] if native.AVAILABLE else [])


def _pair(sizes=(40, 25), seed=0, dtype=torch.float32, noise=0.1):
    """Anisotropic structures and rotated noisy copies (distinct principal axes)."""
    gen = torch.Generator().manual_seed(seed)
    batch = graph_index(list(sizes))
    y = torch.randn(len(batch), 3, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0],
                                                                                       dtype=torch.float64)
    R = random_rotation(len(sizes), gen, torch.float64)
    x = (R[batch] @ y.unsqueeze(-1)).squeeze(-1) + noise * torch.randn(y.shape, generator=gen, dtype=y.dtype)
    return x.to(dtype), y.to(dtype), batch


def test_compute_dtype():
    assert compute_dtype(torch.float64) == torch.float64
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        assert compute_dtype(dt) == torch.float32


def _ops():
    """(name, f(x, y, batch) -> tensors to compare) for every public op of the policy."""
    ops = []
    for b in ALIGN_BACKENDS:
        for init in ("paired", "principal_axes"):
            ops.append((f"align-{b}-{init}", lambda x, y, bt, b=b, init=init: se3_kernel_alignment(
                x, y, bt, bt, sigma=0.8, iterations=2, init=init, backend=b)[:4]))
    for b in MMD_BACKENDS:
        ops.append((f"mmd-{b}", lambda x, y, bt, b=b: (kernel_mmd(x, y, bt, bt, sigma=0.8, backend=b),)))
        ops.append((f"cos-{b}", lambda x, y, bt, b=b: (kernel_cosine(x, y, bt, bt, sigma=0.8, backend=b),)))
    ops.append(("procrustes", lambda x, y, bt: weighted_procrustes(x, y, batch=bt)))
    ops.append(("drmmd", lambda x, y, bt: (drmmd(x, y, sigma=0.8, lam=0.5),)))
    ops.append(("drmmd-witness", lambda x, y, bt: (drmmd_witness_grad(x, x, y, sigma=0.8, lam=0.5),)))
    ops.append(("group_mmd", lambda x, y, bt: group_mmd(x, bt, sigma=0.8)[:1]))
    ops.append(("rmsd", lambda x, y, bt: (kabsch_rmsd(x, y, batch=bt),)))
    return ops


@pytest.mark.parametrize("name, op", _ops(), ids=[n for n, _ in _ops()])
def test_autocast_changes_nothing(name, op):
    """bf16 CPU autocast around the call: bit-identical values and gradients."""
    x, y, b = _pair()
    outs, grads = [], []
    for autocast in (False, True):
        xr = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = op(xr, y, b)
        outs.append(out)
        grads.append(torch.autograd.grad(out[0].sum(), xr)[0])
    for a, c in zip(*outs):
        assert a.dtype == torch.float32 and torch.equal(a, c), name
    assert torch.equal(grads[0], grads[1]), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name, op", _ops(), ids=[n for n, _ in _ops()])
def test_half_inputs_compute_in_float32(name, op, dtype):
    """Half inputs: the same result as their float32 values, float32 out, and a
    gradient back in the input's dtype."""
    x, y, b = _pair(dtype=dtype)
    xr = x.clone().requires_grad_(True)
    out = op(xr, y, b)
    ref = op(x.float().requires_grad_(True), y.float(), b)  # the same code path (tracked)
    for a, c in zip(out, ref):
        assert a.dtype == torch.float32 and torch.equal(a, c), name
    g, = torch.autograd.grad(out[0].sum(), xr)
    assert g.dtype == dtype and torch.isfinite(g.float()).all()


def test_half_inputs_in_the_modules_metric_and_transform():
    x, y, b = _pair(dtype=torch.bfloat16)
    pred = Batch.from_data_list([Data(pos=x[b == g]) for g in range(2)])
    target = Batch.from_data_list([Data(pos=y[b == g]) for g in range(2)])
    loss = SE3KernelAlignmentLoss(0.8, init="paired")(pred, target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    metric = AlignmentMetric(kernel=0.8)
    metric.update(pred, target)
    assert all(torch.isfinite(v) for v in metric.compute().values())
    moved = AlignToReference(Data(pos=y[b == 0]))(Data(pos=x[b == 0]))
    assert torch.isfinite(moved.pos.float()).all()


@pytest.mark.parametrize("offset", [1e3, 1e5, 1e6])
def test_far_from_the_origin_float32_keeps_float32_accuracy(offset):
    """Float32 structures at 1e3-1e6: every result agrees with float64 on the
    same float32 values to float32 rounding relative to the structure's size
    (before centring in float64, 1e5 moved the loss by 20x)."""
    x, y, b = _pair(sizes=(300, 120), seed=3)
    shift = torch.tensor([offset, -0.5 * offset, 0.25 * offset])
    x32, y32 = x + shift, y - 2 * shift + 7.0  # float32 values, far from the origin
    x64, y64 = x32.double(), y32.double()
    for init in ("paired", "principal_axes", "identity"):
        a = se3_kernel_alignment(x32, y32, b, b, sigma=1.0, init=init, iterations=3)
        c = se3_kernel_alignment(x64, y64, b, b, sigma=1.0, init=init, iterations=3)
        assert torch.allclose(a.loss.double(), c.loss, rtol=5e-4, atol=0), (init, a.loss, c.loss)
        assert torch.allclose(a.R.double(), c.R, atol=1e-4), init
    R32, t32 = weighted_procrustes(x32, y32, batch=b)
    R64, t64 = weighted_procrustes(x64, y64, batch=b)
    assert torch.allclose(R32.double(), R64, atol=1e-5)
    assert torch.allclose(t32.double(), t64, rtol=1e-6, atol=1e-6 * offset)
    r32, r64 = kabsch_rmsd(x32, y32, batch=b), kabsch_rmsd(x64, y64, batch=b)
    assert torch.allclose(r32.double(), r64, rtol=1e-4)
    for backend in MMD_BACKENDS:
        z32 = x32 + 0.05 * torch.randn(x32.shape, generator=torch.Generator().manual_seed(1))
        m32 = kernel_mmd(x32, z32, b, b, sigma=1.0, backend=backend)
        m64 = kernel_mmd(x64, z32.double(), b, b, sigma=1.0, backend=backend)
        # MMD is a difference of sums near 1: float32 rounding of the sums, not the offset.
        assert torch.allclose(m32.double(), m64, rtol=0, atol=2e-6), backend
    metric = AlignmentMetric(kernel=1.0)
    pred = Batch.from_data_list([Data(pos=x32[b == g]) for g in range(2)])
    target = Batch.from_data_list([Data(pos=y32[b == g]) for g in range(2)])
    metric.update(pred, target)
    got = metric.compute()
    assert abs(float(got["rmsd"]) - float(r64.mean())) < 1e-4 * float(r64.mean())
