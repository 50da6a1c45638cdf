"""Numerics of the pure-torch tiled kernel sums (``backend="tiled"``): float32
sums, cosines and gradients against the dense float64 reference evaluated on
the *same* float32 values (``x.double()``), at coordinates far from the origin
(1e3 to 1e6), bandwidths from 1e-8 to 1e3, multi-band kernels, several graphs,
empty graphs and all-zero weights. The bound checked here is the one documented
in :mod:`tg_rapidalign.ops.pair_sum`."""
import pytest
import torch
from helpers import graph_index
from reference import ref_sums

from tg_rapidalign import MultiBandGaussianKernel, kernel_cosine, kernel_mmd, kernel_sums
from tg_rapidalign.ops import pair_sum

# The documented float32 bounds: relative error of each sum (whose float64
# reference is not tiny) and absolute error of the cosine.
SUM_RTOL = 1e-5
COS_ATOL = 1e-5
TINY = 1e-30

# Graph sizes of x and y: graph 1 has no x nodes, graph 2 no y nodes, graph 3
# has all-zero x weights (zero mass), graph 4 is empty on both sides.
SIZES_X = [130, 0, 70, 40, 0]
SIZES_Y = [110, 25, 0, 50, 0]


def clouds(offset, spread, seed, dim=3, sizes_x=SIZES_X, sizes_y=SIZES_Y):
    """float32 points uniform in a cube of side ``spread`` at ``offset``; y overlaps x
    (shifted by a tenth of the spread); random weights, zero on x's graph 3."""
    gen = torch.Generator().manual_seed(seed)
    bx, by = graph_index(sizes_x), graph_index(sizes_y)
    x = torch.rand(len(bx), dim, generator=gen, dtype=torch.float64) * spread + offset
    y = torch.rand(len(by), dim, generator=gen, dtype=torch.float64) * spread + offset + 0.1 * spread
    wx = torch.rand(len(bx), generator=gen, dtype=torch.float64) + 0.1
    wy = torch.rand(len(by), generator=gen, dtype=torch.float64) + 0.1
    if len(sizes_x) > 3:
        wx[bx == 3] = 0.0
    return x.float(), y.float(), bx, by, wx.float(), wy.float()


def bands_of(sigma):
    if isinstance(sigma, MultiBandGaussianKernel):
        sigmas, coefs = sigma.bands()
        return [float(s) for s in sigmas], [float(c) for c in coefs]
    return [float(sigma)], [1.0]


def reference(x, y, bx, by, wx, wy, sigma, cutoff, num_graphs):
    sigmas, coefs = bands_of(sigma)
    r = None if cutoff is None else cutoff * max(sigmas)
    return ref_sums(x, y, bx, by, wx, wy, sigmas, coefs, r=r, num_graphs=num_graphs)


def ref_cos(s):
    kxx, kyy, kxy = s.unbind(1)
    prod = kxx * kyy
    out = torch.where(prod > 0, kxy / prod.clamp_min(1e-300).sqrt(), torch.zeros_like(prod))
    return torch.where((kxx <= 0) & (kyy <= 0), torch.ones_like(out), out)


def check_sums(got, want):
    got = got.double()
    assert torch.isfinite(got).all()
    big = want.abs() > TINY
    err = (got - want).abs()
    assert float(torch.where(big, 0.0, err).max()) <= TINY
    rel = float(torch.where(big, err / want.abs(), 0.0).max())
    assert rel <= SUM_RTOL, rel


def check_all(x, y, bx, by, wx, wy, sigma, cutoff):
    ng = len(SIZES_X) if int(bx.max()) < len(SIZES_X) else None
    ng = max(int(bx.max()), int(by.max())) + 1 if ng is None else ng
    kw = dict(cutoff=cutoff, backend="tiled", num_graphs=ng)
    s = kernel_sums(x, y, bx, by, wx, wy, sigma, **kw)
    want = reference(x, y, bx, by, wx, wy, sigma, cutoff, ng)
    check_sums(torch.stack([s.kxx, s.kyy, s.kxy], 1), want)
    cos = kernel_cosine(x, y, bx, by, wx, wy, sigma, **kw)
    assert torch.isfinite(cos).all()
    assert float((cos.double() - ref_cos(want)).abs().max()) <= COS_ATOL
    return want


@pytest.mark.parametrize("offset", [0.0, 1e3, 3e3, 1e5, 1e6])
@pytest.mark.parametrize("sigma", [0.01, 0.1])
def test_sums_and_cosine_at_large_offsets(offset, sigma):
    # Padding slots used to sit at the origin: NaN from 3e3 on at sigma 0.01.
    check_all(*clouds(offset, 1.0, seed=1), sigma, 4.0)


@pytest.mark.parametrize("sigma,spread,offset,cutoff", [
    (1e-8, 30e-8, 0.0, 4.0),    # a cloud resolved by the bandwidth
    (1e-8, 1.0, 0.0, 4.0),      # isolated points: only the diagonal survives
    (1e-8, 1.0, 1e6, 4.0),      # float32 grid of 1/16 at 1e6: many coincident points
    (1e-6, 30e-6, 1.0, 4.0),
    (1e-6, 1.0, 1e3, None),     # no cutoff, every kernel value but the diagonal is 0
    (1e3, 1.0, 1e5, None),      # every kernel value close to 1
    (1e3, 3e3, 1e6, None),
])
def test_extreme_bandwidths(sigma, spread, offset, cutoff):
    want = check_all(*clouds(offset, spread, seed=2), sigma, cutoff)
    if spread == 1.0 and sigma < 1e-5:
        assert float(want[0, 2]) < TINY  # nothing between x and y: the cross term is 0


@pytest.mark.parametrize("offset", [1e3, 1e6])
def test_multiband_kernels(offset):
    k = MultiBandGaussianKernel([0.02, 0.1, 0.4], weights=[1.0, 2.0, 3.0], learnable=False)
    check_all(*clouds(offset, 1.0, seed=3), k, 3.0)
    # More bands than the native kernel takes (auto picks tiled there).
    many = MultiBandGaussianKernel([0.01 * 1.3 ** b for b in range(20)], learnable=False)
    check_all(*clouds(offset, 1.0, seed=4), many, 2.0)


def test_four_dimensional_points():
    check_all(*clouds(1e5, 1.0, seed=5, dim=4), 0.2, 3.0)


def test_separated_sets_at_tiny_bandwidth():
    # x and y 1e4 apart in one graph: the cross term is exactly 0 in float64.
    x, y, bx, by, wx, wy = clouds(1e4, 1.0, seed=6, sizes_x=[200], sizes_y=[150])
    y = y + 1e4
    s = check_all(x, y, bx, by, wx, wy, 1e-3, None)
    assert float(s[0, 2]) == 0.0
    cos = kernel_cosine(x, y, bx, by, wx, wy, 1e-3, cutoff=None, backend="tiled")
    assert float(cos.abs().max()) <= 1e-20


def reference_grads(x, y, bx, by, wx, wy, sigma, cutoff, num_graphs):
    xx, yy = x.double().requires_grad_(), y.double().requires_grad_()
    s = reference(xx, yy, bx, by, wx, wy, sigma, cutoff, num_graphs)
    (s[:, 0] + s[:, 1] - 2 * s[:, 2]).sum().backward()
    return xx.grad, yy.grad


@pytest.mark.parametrize("offset,sigma,spread,cutoff", [
    (1e3, 0.05, 1.0, 4.0),
    (1e5, 0.2, 1.0, 3.0),
    (1e6, 0.1, 1.0, 4.0),
    (1.0, 1e-6, 30e-6, 4.0),
    (0.0, 1e-8, 30e-8, None),
    (1e3, 1e-6, 1.0, 4.0),      # isolated points: the gradient is 0
    (1e5, 1e3, 1.0, None),
    (1e5, "multi", 1.0, 3.0),
])
def test_gradients_finite_and_match_reference(offset, sigma, spread, cutoff):
    if sigma == "multi":
        sigma = MultiBandGaussianKernel([0.03, 0.1, 0.3], learnable=False)
    x, y, bx, by, wx, wy = clouds(offset, spread, seed=7)
    ng = len(SIZES_X)
    xx, yy = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = kernel_mmd(xx, yy, bx, by, wx, wy, sigma, cutoff=cutoff, backend="tiled", num_graphs=ng)
    out.sum().backward()
    assert torch.isfinite(out).all()
    gx, gy = reference_grads(x, y, bx, by, wx, wy, sigma, cutoff, ng)
    for got, want in ((xx.grad, gx), (yy.grad, gy)):
        assert torch.isfinite(got).all()
        scale = float(want.abs().max())
        # (a pair beyond the cutoff adds exp(-80) to the kernel: 1e-35 scaled by 1 / sigma^2)
        assert float((got.double() - want).abs().max()) <= 1e-4 * scale + 1e-20


@pytest.mark.parametrize("form", ["expanded", "differences"])
def test_gradcheck_float64_at_large_offset(monkeypatch, form):
    # Every tile pair through one form of the exponent (and of the gradients).
    monkeypatch.setattr(pair_sum, "_EXPANSION_LIMIT", float("inf") if form == "expanded" else -1.0)
    gen = torch.Generator().manual_seed(8)
    bx, by = graph_index([5, 3]), graph_index([4, 4])
    x = (torch.rand(len(bx), 3, generator=gen, dtype=torch.float64) + 1e4).requires_grad_()
    y = (torch.rand(len(by), 3, generator=gen, dtype=torch.float64) + 1e4).requires_grad_()
    wx = (torch.rand(len(bx), generator=gen, dtype=torch.float64) + 0.1).requires_grad_()
    wy = (torch.rand(len(by), generator=gen, dtype=torch.float64) + 0.1).requires_grad_()
    sigma = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c, d, s: kernel_mmd(a, b, bx, by, c, d, s, cutoff=None, backend="tiled"),
        (x, y, wx, wy, sigma))


@pytest.mark.parametrize("limit", [-1.0, float("inf")])
def test_both_exponent_forms_match_in_float64(monkeypatch, limit):
    # Every tile pair through one form: the sums, and the gradients of positions,
    # weights and bandwidths, agree with the dense float64 reference and backend.
    monkeypatch.setattr(pair_sum, "_EXPANSION_LIMIT", limit)
    x, y, bx, by, wx, wy = clouds(1e3, 1.0, seed=9)
    x, y, wx, wy = x.double(), y.double(), wx.double(), wy.double()
    k = MultiBandGaussianKernel([0.05, 0.2], weights=[1.0, 3.0]).double()
    ng = len(SIZES_X)
    s = kernel_sums(x, y, bx, by, wx, wy, k, cutoff=3.0, backend="tiled", num_graphs=ng)
    want = reference(x, y, bx, by, wx, wy, k, 3.0, ng)
    assert torch.allclose(torch.stack([s.kxx, s.kyy, s.kxy], 1), want, rtol=1e-11, atol=1e-300)
    grads = []
    for backend in ("dense", "tiled"):
        xx, yy = x.clone().requires_grad_(), y.clone().requires_grad_()
        ww = wx.clone().requires_grad_()
        k.zero_grad()
        kernel_mmd(xx, yy, bx, by, ww, wy, k, cutoff=3.0, backend=backend, num_graphs=ng).sum().backward()
        grads.append(torch.cat([xx.grad.flatten(), yy.grad.flatten(), ww.grad, k.log_sigma.grad,
                                k.logits.grad]))
    assert torch.allclose(grads[1], grads[0], rtol=1e-9, atol=1e-9 * float(grads[0].abs().max()))


def test_schedule_routes_far_or_wide_pairs_to_differences():
    # Compact tiles at a moderate bandwidth take the one-product expansion;
    # at a bandwidth far below the tile size they take exact differences, and
    # tile pairs beyond the numerical zero are dropped.
    gen = torch.Generator().manual_seed(10)
    z = torch.rand(4000, 3, generator=gen)
    b = torch.zeros(len(z), dtype=torch.long)
    plan = pair_sum.make_plan(z, b, None, None, 1, None)
    wide = pair_sum._schedule(plan, torch.tensor([1.0]))
    assert all(c.expanded for c in wide) and sum(c.ia.numel() for c in wide) == plan.ia.numel()
    narrow = pair_sum._schedule(plan, torch.tensor([1e-3]))
    assert not any(c.expanded for c in narrow)
    assert sum(c.ia.numel() for c in narrow) < plan.ia.numel() // 4


def chunked_ref(x, y, sigma, cutoff, chunk=2048):
    """One graph, uniform weights: (K_XX, K_YY, K_XY) in float64 by row chunks
    (exact differences, no Gram expansion)."""
    sigmas, coefs = bands_of(sigma)
    r = None if cutoff is None else cutoff * max(sigmas)
    x, y = x.double(), y.double()

    def term(p, q):
        total = torch.zeros((), dtype=torch.float64)
        for lo in range(0, len(p), chunk):
            d2 = torch.cdist(p[lo:lo + chunk], q, compute_mode="donot_use_mm_for_euclid_dist").square_()
            k = sum(c * torch.exp(-d2 / (2 * s * s)) for s, c in zip(sigmas, coefs))
            if r is not None:
                k = torch.where(d2 <= r * r, k, torch.zeros_like(k))
            total = total + k.sum()
        return total / (len(p) * len(q))

    return torch.stack([term(x, x), term(y, y), term(x, y)])


@pytest.mark.full  # a sweep of about a minute; run with -s to see the table
def test_error_sweep():
    """The measurement quoted in the docstring of :mod:`tg_rapidalign.ops.pair_sum`."""
    gen = torch.Generator().manual_seed(11)
    base_x = torch.rand(1500, 3, generator=gen, dtype=torch.float64)
    base_y = base_x + 0.05 * torch.randn(1500, 3, generator=gen, dtype=torch.float64)
    cases = []
    for sigma in [1e-8, 1e-6, 1e-4, 1e-2, 1e-1, 1.0, 1e2, 1e3]:
        for offset in [0.0, 1e3, 3e3, 1e5, 1e6]:
            cutoff = None if sigma >= 1e2 else 4.0
            cases.append((f"unit    sigma={sigma:.0e} offset={offset:.0e}", base_x + offset, base_y + offset,
                          sigma, cutoff))
            cases.append((f"scaled  sigma={sigma:.0e} offset={offset:.0e}", base_x * 30 * sigma + offset,
                          base_y * 30 * sigma + offset, sigma, 4.0))
    k = MultiBandGaussianKernel([0.01, 0.05, 0.2], learnable=False)
    for offset in [0.0, 1e3, 1e5, 1e6]:
        cases.append((f"3 bands offset={offset:.0e}", base_x + offset, base_y + offset, k, 4.0))
    big_x = torch.rand(20000, 3, generator=gen)
    big_y = torch.rand(20000, 3, generator=gen)
    cases += [("20000 uniform sigma=0.1", big_x, big_y, 0.1, 3.0),
              ("20000 uniform sigma=0.5", big_x, big_y, 0.5, 3.0)]
    worst_sum = worst_cos = 0.0
    for name, x, y, sigma, cutoff in cases:
        x, y = x.float(), y.float()
        s = kernel_sums(x, y, sigma=sigma, cutoff=cutoff, backend="tiled")
        got = torch.stack([s.kxx, s.kyy, s.kxy], 1)[0].double()
        want = chunked_ref(x, y, sigma, cutoff)
        assert torch.isfinite(got).all()
        big = want.abs() > TINY
        rel = float(torch.where(big, (got - want).abs() / want.abs(), 0.0).max())
        assert float(torch.where(big, 0.0, (got - want).abs()).max()) <= TINY
        cos = float(kernel_cosine(x, y, sigma=sigma, cutoff=cutoff, backend="tiled")[0])
        dcos = abs(cos - float(ref_cos(want.view(1, 3))[0]))
        worst_sum, worst_cos = max(worst_sum, rel), max(worst_cos, dcos)
        print(f"{name:40s} sums {rel:.1e}  cosine {dcos:.1e}")
    print(f"worst: sums {worst_sum:.1e} relative, cosine {worst_cos:.1e} absolute")
    assert worst_sum <= SUM_RTOL and worst_cos <= COS_ATOL


@pytest.mark.parametrize("search", [False, True])
def test_tile_pairs_do_not_grow_with_offset(monkeypatch, search):
    # The same float32 geometry at the origin and shifted by 1e6 (the shift is
    # exact on the 1/16 grid of float32 there) gives the same tile pairs: box
    # distances are exact, no slack grows with the offset (it used to make every
    # tile pair a candidate at 1e6: 155 s instead of 1.5 s for 100000 points).
    from tg_rapidalign.ops import tiles
    if search:
        monkeypatch.setattr(tiles, "_ENUMERATE_LIMIT", 64)
    gen = torch.Generator().manual_seed(12)
    far = (torch.rand(3000, 3, generator=gen, dtype=torch.float64) * 20 + 1e6).float()
    near = far - 1e6
    assert torch.equal(near + 1e6, far)
    b = torch.zeros(len(far), dtype=torch.long)
    pairs = []
    for z in (near, far):
        plan = pair_sum.make_plan(z, b, None, None, 1, 0.4)
        pairs.append(set(zip(plan.ia.tolist(), plan.ib.tolist())))
    assert pairs[0] == pairs[1]
    assert len(pairs[0]) < 0.2 * plan.a.num_tiles ** 2
