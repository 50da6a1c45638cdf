import math

import pytest
import torch
from helpers import graph_index, property_settings, random_batch
from hypothesis import given
from hypothesis import strategies as st
from reference import ref_cosine, ref_mmd, ref_sums, ref_unbiased_mmd

from tg_rapidalign import GaussianKernel, MultiBandGaussianKernel, kernel_cosine, kernel_mmd, kernel_sums
from tg_rapidalign.ops import native

BACKENDS = ["dense", "tiled"] + (["native"] if native.AVAILABLE else [])


def rel(a, b):
    return float((a - b).abs().max().detach() / b.abs().max().detach().clamp_min(1e-300))


@pytest.fixture
def batch_pair():
    x, bx = random_batch([40, 1, 70, 25])
    y, by = random_batch([35, 20, 1, 90])
    wx = torch.rand(len(x), dtype=torch.float64)
    wy = torch.rand(len(y), dtype=torch.float64)
    return x, y, bx, by, wx, wy


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_sum_matches_dense_reference(batch_pair, backend):
    x, y, bx, by, wx, wy = batch_pair
    out = kernel_mmd(x, y, bx, by, wx, wy, 0.2, cutoff=None, backend=backend)
    assert out.shape == (4,)
    assert rel(out, ref_mmd(x, y, bx, by, wx, wy, [0.2])) < 1e-10
    cos = kernel_cosine(x, y, bx, by, wx, wy, 0.2, cutoff=None, backend=backend)
    assert rel(cos, ref_cosine(x, y, bx, by, wx, wy, [0.2])) < 1e-10


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cutoff", [2.0, 3.0])
def test_truncated_sum_matches_truncated_reference(batch_pair, backend, cutoff):
    x, y, bx, by, wx, wy = batch_pair
    sigma = 0.1
    s = kernel_sums(x, y, bx, by, wx, wy, sigma, cutoff=cutoff, backend=backend)
    ref = ref_sums(x, y, bx, by, wx, wy, [sigma], r=cutoff * sigma)
    got = torch.stack([s.kxx, s.kyy, s.kxy], 1)
    assert rel(got, ref) < 1e-10
    # Truncation really drops pairs: the exact sums differ.
    exact = ref_sums(x, y, bx, by, wx, wy, [sigma])
    assert rel(exact, ref) > 1e-8


@pytest.mark.parametrize("backend", BACKENDS)
def test_multiband_matches_reference(batch_pair, backend):
    x, y, bx, by, wx, wy = batch_pair
    k = MultiBandGaussianKernel([0.05, 0.2, 0.5], weights=[1.0, 2.0, 3.0], scale=1.7).double()
    sigmas, coefs = k.bands()
    out = kernel_mmd(x, y, bx, by, wx, wy, k, cutoff=3.0, backend=backend)
    ref = ref_mmd(x, y, bx, by, wx, wy, sigmas.detach(), coefs.detach(), r=1.5)
    assert rel(out, ref) < 1e-10


def test_unbiased_matches_textbook_u_statistic():
    x, y = torch.rand(30, 3, dtype=torch.float64), torch.rand(45, 3, dtype=torch.float64)
    for backend in BACKENDS:
        out = kernel_mmd(x, y, sigma=0.3, unbiased=True, cutoff=None, backend=backend)
        assert rel(out, ref_unbiased_mmd(x, y, 0.3).view(1)) < 1e-10


@pytest.mark.full  # large inputs
def test_large_tiled_matches_dense_float32_and_float64():
    x, bx = random_batch([1500, 600], dtype=torch.float64)
    y, by = random_batch([1200, 900], dtype=torch.float64)
    ref = kernel_mmd(x, y, bx, by, sigma=0.1, cutoff=3.0, backend="dense")
    out = kernel_mmd(x, y, bx, by, sigma=0.1, cutoff=3.0, backend="tiled")
    assert rel(out, ref) < 1e-10
    out32 = kernel_mmd(x.float(), y.float(), bx, by, sigma=0.1, cutoff=3.0, backend="tiled")
    assert out32.dtype == torch.float32
    assert rel(out32.double(), ref) < 1e-3  # MMD is a small difference of large sums
    s32 = kernel_sums(x.float(), y.float(), bx, by, sigma=0.1, cutoff=3.0, backend="tiled")
    s64 = kernel_sums(x, y, bx, by, sigma=0.1, cutoff=3.0, backend="dense")
    assert rel(s32.kxy.double(), s64.kxy) < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_positions_weights(backend):
    x, bx = random_batch([7, 5])
    y, by = random_batch([6, 8])
    wx = torch.rand(len(x), dtype=torch.float64)
    wy = torch.rand(len(y), dtype=torch.float64)
    for t in (x, y, wx, wy):
        t.requires_grad_(True)
    for fn in (kernel_mmd, kernel_cosine):
        assert torch.autograd.gradcheck(
            lambda a, b, c, d, fn=fn: fn(a, b, bx, by, c, d, 0.3, cutoff=None, backend=backend),
            (x, y, wx, wy))
    assert torch.autograd.gradcheck(
        lambda a, b: kernel_mmd(a, b, bx, by, sigma=0.3, unbiased=True, cutoff=None, backend=backend),
        (x, y))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_kernel_parameters(backend):
    x, bx = random_batch([9, 4])
    y, by = random_batch([5, 7])
    log_sigma = torch.log(torch.tensor([0.2, 0.6], dtype=torch.float64)).requires_grad_(True)
    logits = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    log_scale = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)

    # Plain tensors carrying grad go into the buffer slots of a non-learnable kernel.
    def g(ls, lg, lsc):
        k = MultiBandGaussianKernel([1.0, 1.0], learnable=False).double()
        k.log_sigma, k.logits, k.log_scale = ls, lg, lsc
        return kernel_mmd(x, y, bx, by, sigma=k, cutoff=None, backend=backend)

    assert torch.autograd.gradcheck(g, (log_sigma, logits, log_scale))
    sigma = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s: kernel_cosine(x, y, bx, by, sigma=s, cutoff=None, backend=backend), (sigma,))


@pytest.mark.full  # long gradcheck
def test_gradcheck_tiled_with_cutoff_and_many_tiles():
    # Several tiles per graph, off-diagonal tile pairs and truncation in play.
    x, bx = random_batch([90, 70])
    y, by = random_batch([80, 65])
    x.requires_grad_(True)
    y.requires_grad_(True)
    # A pair within finite-difference reach of the cutoff radius would make the
    # numerical Jacobian jump: pick the bandwidth near 0.15 with the widest margin.
    z, bz = torch.cat([x, y]).detach(), torch.cat([bx, by])
    d = torch.cdist(z, z)[bz[:, None] == bz[None, :]]
    cands = 0.15 + 1e-4 * torch.arange(50, dtype=torch.float64)
    margins = torch.stack([(d - 3 * c).abs().min() for c in cands])
    assert float(margins.max()) > 1e-5
    sigma = cands[margins.argmax()].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b, s: kernel_mmd(a, b, bx, by, sigma=s, cutoff=3.0, backend="tiled"),
        (x, y, sigma), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_agree_across_backends(backend):
    x, bx = random_batch([200, 150])
    y, by = random_batch([180, 160])
    k = MultiBandGaussianKernel([0.1, 0.3]).double()
    grads = []
    for be in ("dense", backend):
        xx, yy = x.clone().requires_grad_(), y.clone().requires_grad_()
        k.zero_grad()
        kernel_mmd(xx, yy, bx, by, sigma=k, cutoff=3.0, backend=be).sum().backward()
        grads.append(torch.cat([xx.grad.flatten(), yy.grad.flatten(), k.log_sigma.grad, k.logits.grad]))
    assert rel(grads[1], grads[0]) < 1e-9


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_composition_independence(backend):
    x, bx = random_batch([30, 50, 20])
    y, by = random_batch([25, 45, 35])
    full = kernel_mmd(x, y, bx, by, sigma=0.2, backend=backend)
    for g in range(3):
        alone = kernel_mmd(x[bx == g], y[by == g], sigma=0.2, backend=backend)
        assert torch.allclose(full[g], alone[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_permutation_and_rigid_motion_invariance(backend):
    x, bx = random_batch([40, 30])
    y, by = random_batch([35, 45])
    wx = torch.rand(len(x), dtype=torch.float64)
    base = kernel_mmd(x, y, bx, by, wx, None, 0.2, backend=backend)
    # Permute nodes within each graph (batch stays sorted).
    perm = torch.cat([torch.randperm(40), 40 + torch.randperm(30)])
    out = kernel_mmd(x[perm], y, bx, by, wx[perm], None, 0.2, backend=backend)
    assert torch.allclose(out, base, rtol=1e-12)
    # A common rotation and translation of both sets leaves pairwise distances unchanged.
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    t = torch.randn(3, dtype=torch.float64) * 5
    out = kernel_mmd(x @ q.T + t, y @ q.T + t, bx, by, wx, None, 0.2, backend=backend)
    assert torch.allclose(out, base, rtol=1e-9)


def test_identical_sets_give_zero_mmd_and_unit_cosine():
    x, bx = random_batch([20, 33])
    w = torch.rand(len(x), dtype=torch.float64)
    for backend in BACKENDS:
        assert kernel_mmd(x, x, bx, bx, w, w, 0.3, backend=backend).abs().max() < 1e-12
        assert torch.allclose(kernel_cosine(x, x, bx, bx, w, w, 0.3, backend=backend),
                              torch.ones(2, dtype=torch.float64))


def test_weights_are_normalised_per_graph():
    x, bx = random_batch([20, 33])
    y, by = random_batch([15, 10])
    w = torch.rand(len(x), dtype=torch.float64)
    a = kernel_mmd(x, y, bx, by, w, None, 0.3)
    b = kernel_mmd(x, y, bx, by, w * torch.where(bx == 0, 3.0, 0.01).double(), None, 0.3)
    assert torch.allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_inputs_finite(backend):
    # single node, coincident points, all-zero weights, empty side, both empty
    x = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 1, 1], [2, 2, 2], [3, 3, 3]],
                     dtype=torch.float64, requires_grad=True)
    bx = torch.tensor([0, 1, 1, 2, 3])
    y = torch.tensor([[0.5, 0, 0], [1, 1, 1], [1, 1, 1], [7, 7, 7]], dtype=torch.float64,
                     requires_grad=True)
    by = torch.tensor([0, 1, 1, 2])
    wx = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    wy = torch.ones(4, dtype=torch.float64, requires_grad=True)
    nums = dict(num_graphs=5, backend=backend)
    mmd = kernel_mmd(x, y, bx, by, wx, wy, 0.5, **nums)
    mmd_u = kernel_mmd(x, y, bx, by, wx, wy, 0.5, unbiased=True, **nums)
    cos = kernel_cosine(x, y, bx, by, wx, wy, 0.5, **nums)
    (mmd.sum() + mmd_u.sum() + cos.sum()).backward()
    for t in (mmd, mmd_u, cos, x.grad, y.grad, wx.grad, wy.grad):
        assert torch.isfinite(t).all()
    # graph 1: identical coincident pairs; graph 2: zero-weight X -> MMD = K_YY = 1;
    # graph 3: empty Y -> MMD = K_XX = 1; graph 4: both empty.
    assert abs(float(mmd[1].detach())) < 1e-12
    assert torch.allclose(mmd[2:], torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(cos[1:], torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    assert float(mmd_u[0]) == pytest.approx(-2 * math.exp(-0.25 / 0.5))  # no self pairs


@property_settings(25)
@given(sizes=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=4),
       sigma=st.floats(0.05, 1.0), cutoff=st.sampled_from([None, 2.0, 4.0]),
       seed=st.integers(0, 2**16))
def test_tiled_property(sizes, sigma, cutoff, seed):
    gen = torch.Generator().manual_seed(seed)
    nx = torch.tensor([s[0] for s in sizes])
    ny = torch.tensor([s[1] for s in sizes])
    x = torch.rand(int(nx.sum()), 3, generator=gen, dtype=torch.float64)
    y = torch.rand(int(ny.sum()), 3, generator=gen, dtype=torch.float64)
    bx, by = graph_index(nx), graph_index(ny)
    r = None if cutoff is None else cutoff * sigma
    out = kernel_sums(x, y, bx, by, None, None, sigma, cutoff=cutoff, backend="tiled",
                      num_graphs=len(sizes))
    ref = ref_sums(x, y, bx, by, None, None, [sigma], r=r, num_graphs=len(sizes))
    got = torch.stack([out.kxx, out.kyy, out.kxy], 1)
    assert torch.allclose(got, ref, rtol=1e-10, atol=1e-14)


def test_bad_input_messages():
    x, y = torch.rand(5, 3), torch.rand(4, 3)
    with pytest.raises(ValueError, match="sigma must be positive"):
        kernel_mmd(x, y, sigma=-1.0)
    with pytest.raises(ValueError, match="sigma must be positive"):
        kernel_mmd(x, y, sigma=torch.tensor(0.0))
    with pytest.raises(ValueError, match="weight_x must be non-negative"):
        kernel_mmd(x, y, weight_x=torch.tensor([1.0, -1, 1, 1, 1]))
    with pytest.raises(ValueError, match="weight_y must have shape"):
        kernel_mmd(x, y, weight_y=torch.ones(3))
    with pytest.raises(ValueError, match="y contains NaN"):
        kernel_mmd(x, torch.full((4, 3), float("inf")))
    with pytest.raises(ValueError, match="batch_x describes 2 graphs but batch_y describes 1"):
        kernel_mmd(x, y, torch.tensor([0, 0, 1, 1, 1]), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_y must be sorted"):
        kernel_mmd(x, y, None, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="unknown backend"):
        kernel_mmd(x, y, backend="keops")
    with pytest.raises(ValueError, match="cutoff must be positive"):
        kernel_mmd(x, y, cutoff=0.0)
    with pytest.raises(TypeError, match="x and y must have the same dtype"):
        kernel_mmd(x, y.double())
    with pytest.raises(ValueError, match="sigmas must be positive"):
        MultiBandGaussianKernel([0.1, -0.2])
    with pytest.raises(ValueError, match="sigma must be positive"):
        GaussianKernel(0.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairs_exactly_at_cutoff_are_included(backend, dtype):
    # Integer lattice with cutoff * sigma = 1: axis neighbors sit exactly at the cutoff.
    g = torch.arange(5.0, dtype=dtype)
    x = torch.cartesian_prod(g, g, g)
    s = kernel_sums(x, x, sigma=0.25, cutoff=4.0, backend=backend)
    ref = ref_sums(x, x, None, None, None, None, [0.25], r=1.0)
    # float32 rounding is ~1e-6; a dropped boundary pair would cost > 1e-3 (below).
    assert rel(s.kxx.double(), ref[:, 0]) < (1e-5 if dtype == torch.float32 else 1e-12)
    inner = ref_sums(x, x, None, None, None, None, [0.25], r=0.999)
    assert rel(inner[:, 0], ref[:, 0]) > 1e-3  # the boundary pairs matter


@pytest.mark.parametrize("backend", BACKENDS)
def test_multiband_wide_bands_truncate_exactly(backend):
    """Bands wider than 1/sqrt(2): pairs beyond the cutoff must vanish in every
    band, not only in the one whose exponent the floor was chosen for."""
    x, bx = random_batch([300, 200], scale=40.0)
    y, by = random_batch([250, 280], scale=40.0)
    k = MultiBandGaussianKernel([0.5, 2.0, 3.0], learnable=False).double()
    sigmas, coefs = k.bands()
    s = kernel_sums(x, y, bx, by, sigma=k, cutoff=3.0, backend=backend)
    ref = ref_sums(x, y, bx, by, None, None, sigmas, coefs, r=9.0)
    assert rel(torch.stack([s.kxx, s.kyy, s.kxy], 1), ref) < 1e-10
