"""The native CPU kernels on graphs too large for the per-graph tiles: the grid
paths (cell tiles for sparse neighbourhoods, the per-query cell visit for dense
ones) against a float64 dense reference, values and all gradients."""
import pytest
import torch
from helpers import graph_index

from tg_rapidalign.ops import native

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason="native extension not built")


def cutoff_mask(a, b, ba, bb, r2):
    """Same-graph pairs with d2 <= r2, d2 in the inputs' dtype with the squares added
    in coordinate order (the library's cutoff test)."""
    d = a[:, None] - b[None]
    d2 = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]
    return (ba[:, None] == bb[None]) & (d2 <= r2)


def dense_sums(a, b, cb, keep, sigma, coef):
    """Differentiable float64 reference of one band: sum_j coef e^(-d2 / 2 sigma^2) cb_j
    over the pairs in ``keep``."""
    d2 = ((a[:, None] - b[None]) ** 2).sum(-1)
    return (coef * torch.exp(-d2 / (2 * sigma * sigma)) * keep) @ cb


# (sizes of a, sizes of b, sigma): sparse neighbourhoods (a few points per ball:
# cell tiles), and a dense one whose inner cells exceed a tile (per-query visit)
# while its border cells fit one.
CASES = [([700, 0, 420], [520, 300, 380], 0.035), ([1500], [1400], 0.17)]


@pytest.mark.parametrize("sizes_a,sizes_b,sigma", CASES)
@pytest.mark.parametrize("channels", [1, 4, 5, 3])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_grid_paths_match_dense_reference(sizes_a, sizes_b, sigma, channels, dtype, tol):
    gen = torch.Generator().manual_seed(channels)
    a = torch.rand(sum(sizes_a), 3, generator=gen, dtype=dtype)
    b = torch.rand(sum(sizes_b), 3, generator=gen, dtype=dtype)
    cb = torch.rand(len(b), channels, generator=gen, dtype=dtype) - 0.3
    ba, bb = graph_index(sizes_a), graph_index(sizes_b)
    s = torch.tensor([sigma], dtype=dtype)
    c = torch.tensor([0.8], dtype=dtype)
    cutoff = 3.0
    r2 = torch.tensor((cutoff * float(s)) ** 2, dtype=dtype)  # the op's: radius in double, squared, cast
    grad = torch.rand(len(a), channels, generator=gen, dtype=dtype)

    out = native.kernel_row_sums(a, b, cb, ba, bb, s, c, cutoff, 3)
    a64, b64, cb64 = (t.double().requires_grad_() for t in (a, b, cb))
    s64, c64 = s.double().requires_grad_(), c.double().requires_grad_()
    ref = dense_sums(a64, b64, cb64, cutoff_mask(a, b, ba, bb, r2), s64, c64)
    scale = float(ref.abs().max())
    assert float((out.double() - ref.detach()).abs().max()) <= tol * scale

    op = torch.ops.tg_rapidalign.kernel_row_sums_backward
    got = op(grad, a, b, cb, ba, bb, s, c, cutoff, 3, True, True)
    want = torch.autograd.grad((ref * grad.double()).sum(), (a64, b64, cb64, s64, c64))
    for g, w in zip(got, want):
        assert float((g.double() - w).abs().max()) <= tol * float(w.abs().max())
