import math

import pytest
import torch
from helpers import axis_rotation, graph_index, property_settings, rotation_angle
from hypothesis import given
from hypothesis import strategies as st
from reference import horn_rotation, ref_alignment

from tg_rapidalign import MultiBandGaussianKernel, se3_kernel_alignment, weighted_procrustes
from tg_rapidalign.ops import native
from tg_rapidalign.transforms import random_rotation

BACKENDS = ["dense", "pairs"] + (["native"] if native.AVAILABLE else [])


def anisotropic_batch(sizes, dtype=torch.float64, seed=0):
    """Random weighted graphs with distinct principal variances (well-defined axes)."""
    gen = torch.Generator().manual_seed(seed)
    batch = graph_index(sizes)
    y = torch.randn(sum(sizes), 3, dtype=dtype, generator=gen) * torch.tensor([3.0, 2.0, 1.0], dtype=dtype)
    w = torch.rand(sum(sizes), dtype=dtype, generator=gen) + 0.2
    return y, batch, w, gen


def move(y, batch, R, t):
    return (R[batch] @ y.unsqueeze(-1)).squeeze(-1) + t[batch]


def chain(n, gen, dtype=torch.float64):
    """A random walk with unit-free bond length 1.5: an asymmetric, molecule-like shape."""
    steps = torch.nn.functional.normalize(torch.randn(n, 3, dtype=dtype, generator=gen), dim=1) * 1.5
    return torch.cumsum(steps, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("init", ["paired", "principal_axes"])
def test_recovers_known_pose_including_near_180(dtype, init):
    sizes = [4, 10, 50, 7, 23]
    y, batch, w, gen = anisotropic_batch(sizes, dtype)
    R = random_rotation(5, generator=gen, dtype=dtype)
    R[3] = axis_rotation(torch.randn(3, generator=gen), math.pi - 1e-3, dtype)
    t = torch.randn(5, 3, dtype=dtype, generator=gen) * 10
    x = move(y, batch, R, t)
    res = se3_kernel_alignment(x, y, batch, batch, w, w, 0.7, init=init, iterations=2)
    tol = 2e-4 if dtype == torch.float32 else 1e-9
    assert torch.allclose(res.R, R, atol=tol) and torch.allclose(res.t, t, atol=tol * 50)
    assert torch.allclose(torch.linalg.det(res.R), torch.ones(5, dtype=dtype), atol=tol)
    assert res.loss.abs().max() < (1e-5 if dtype == torch.float32 else 1e-12)
    assert torch.allclose(res.similarity, torch.ones(5, dtype=dtype), atol=tol)


def test_mirrored_target_gives_proper_rotation():
    y, batch, w, _ = anisotropic_batch([30])
    x = y * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    for init in ["principal_axes", "octahedral", "paired", "identity"]:
        res = se3_kernel_alignment(x, y, batch, batch, sigma=0.8, init=init, iterations=5)
        assert torch.allclose(torch.linalg.det(res.R), torch.ones(1, dtype=torch.float64))
        assert torch.allclose(res.R[0] @ res.R[0].T, torch.eye(3, dtype=torch.float64), atol=1e-12)
        assert res.loss.item() > 1e-3  # a mirror image is a different structure


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_independent_em_reference(backend):
    """Kernel EM from the identity against per-graph loops with Horn's method,
    single and multi-band, truncated and exact."""
    gen = torch.Generator().manual_seed(3)
    sizes_x, sizes_y = [12, 7, 20], [9, 11, 20]
    bx = graph_index(sizes_x)
    by = graph_index(sizes_y)
    x = torch.randn(sum(sizes_x), 3, dtype=torch.float64, generator=gen)
    y = torch.randn(sum(sizes_y), 3, dtype=torch.float64, generator=gen) + 0.3
    wx = torch.rand(len(x), dtype=torch.float64, generator=gen) + 0.1
    wy = torch.rand(len(y), dtype=torch.float64, generator=gen) + 0.1
    multi = MultiBandGaussianKernel([0.4, 1.1], weights=[1.0, 3.0], learnable=False).double()
    for sigma, cutoff in [(0.9, None), (0.9, 2.0), (multi, 3.0)]:
        res = se3_kernel_alignment(x, y, bx, by, wx, wy, sigma, init="identity", iterations=3,
                                   cutoff=cutoff, backend=backend)
        sig, coef = multi.bands() if sigma is multi else (torch.tensor([sigma], dtype=torch.float64),
                                                          torch.ones(1))
        sig, coef = sig.tolist(), coef.tolist()
        r = None if cutoff is None else cutoff * max(sig)
        for g in range(3):
            mx_, my_ = bx == g, by == g
            R, t, hist, loss = ref_alignment(x[mx_], y[my_], wx[mx_], wy[my_], sig, coef, r,
                                             torch.eye(3, dtype=torch.float64),
                                             torch.zeros(3, dtype=torch.float64), 3)
            assert torch.allclose(res.R[g], R, atol=1e-9)
            assert torch.allclose(res.t[g], t, atol=1e-9)
            assert torch.allclose(res.history[:, g], hist, rtol=1e-9, atol=0)
            assert res.loss[g].item() == pytest.approx(loss, rel=1e-9, abs=1e-12)


def test_packed_batch_equals_per_graph_and_backends_agree():
    sizes_x, sizes_y = [15, 4, 40, 9], [12, 6, 33, 9]
    gen = torch.Generator().manual_seed(5)
    bx = graph_index(sizes_x)
    by = graph_index(sizes_y)
    x = (torch.randn(sum(sizes_x), 3, dtype=torch.float64, generator=gen) * 2).requires_grad_(True)
    y = (torch.randn(sum(sizes_y), 3, dtype=torch.float64, generator=gen) * 2).requires_grad_(True)
    results = {}
    for backend in BACKENDS:
        res = se3_kernel_alignment(x, y, bx, by, sigma=1.2, iterations=3, backend=backend)
        gx, gy = torch.autograd.grad(res.loss.sum(), (x, y))
        results[backend] = (res, gx, gy)
        for g in range(4):
            one = se3_kernel_alignment(x[bx == g], y[by == g], sigma=1.2, iterations=3, backend=backend)
            assert torch.allclose(one.loss, res.loss[g:g + 1], atol=1e-12)
            assert torch.allclose(one.R, res.R[g:g + 1], atol=1e-10)
            assert torch.allclose(one.t, res.t[g:g + 1], atol=1e-10)
    a, gxa, gya = results["dense"]
    for name, (b, gxb, gyb) in results.items():
        for f in ("loss", "kappa", "R", "t", "kappa_xx", "kappa_yy"):
            assert torch.allclose(getattr(a, f), getattr(b, f), rtol=1e-10, atol=1e-12), (name, f)
        assert torch.allclose(gxa, gxb, atol=1e-10) and torch.allclose(gya, gyb, atol=1e-10), name


def test_paired_init_is_the_weighted_least_squares_optimum():
    """Noisy weighted paired data: the initial pose is the WLS optimum (Horn), and
    a converged kernel EM pose is the WLS optimum of its own pair weights."""
    y, batch, w, gen = anisotropic_batch([25, 14])
    R, t = random_rotation(2, generator=gen), torch.randn(2, 3, dtype=torch.float64, generator=gen)
    x = move(y, batch, R, t)
    x = x + 0.3 * torch.randn(x.shape, dtype=torch.float64, generator=gen)
    res = se3_kernel_alignment(x, y, batch, batch, w, w, 1.0, init="paired", iterations=0)
    for g in range(2):
        m = batch == g
        q = w[m] ** 2 / (w[m] ** 2).sum()  # normalised q_i p_i
        mx, my = q @ x[m], q @ y[m]
        R = horn_rotation((q[:, None, None] * (y[m] - my)[:, :, None] * (x[m] - mx)[:, None, :]).sum(0))
        assert torch.allclose(res.R[g], R, atol=1e-10) and torch.allclose(res.t[g], mx - R @ my, atol=1e-10)
    # Fixed point of the EM: one more step from the converged pose does not move it.
    conv = se3_kernel_alignment(x, y, batch, batch, w, w, 1.0, init="paired", iterations=200, cutoff=None)
    more = se3_kernel_alignment(x, y, batch, batch, w, w, 1.0, init="paired", iterations=201, cutoff=None)
    assert torch.allclose(conv.R, more.R, atol=1e-9) and torch.allclose(conv.t, more.t, atol=1e-8)


CASES = {
    "single": [[0.3, -1.0, 2.0]],
    "two_points": [[0.0, 0, 0], [1, 0, 0]],
    "collinear": [[0.0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]],
    "coincident": [[1.0, 1, 1]] * 4,
    "octahedron": [[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
    "square": [[1.0, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]],
}


@pytest.mark.parametrize("case", list(CASES) + ["zero_weights", "empty_graph"])
@pytest.mark.parametrize("init", ["principal_axes", "paired", "identity"])
@pytest.mark.parametrize("mode", ["kernel", "full", "robust"])
def test_degenerate_inputs_finite(case, init, mode):
    base = torch.tensor(CASES.get(case, [[0.0, 1, 2], [1, 0, 0], [2, 1, 0]]), dtype=torch.float64)
    y = base.clone().requires_grad_(True)
    x = (base @ random_rotation(1)[0].T + 2.0).requires_grad_(True)
    w = torch.zeros(len(base), dtype=torch.float64) if case == "zero_weights" else torch.ones(len(base),
                                                                                               dtype=torch.float64)
    w.requires_grad_(True)
    sigma = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    bx = by = None
    num_graphs = None
    if case == "empty_graph":  # graph 1 of 3 is empty on both sides
        bx = by = torch.tensor([0, 0, 2])
        num_graphs = 3
    kwargs = dict(pose_grad="full") if mode == "full" else dict(estep="robust", iterations=5) \
        if mode == "robust" else {}
    res = se3_kernel_alignment(x, y, bx, by, w, w, sigma, init=init, num_graphs=num_graphs, **kwargs)
    res.loss.sum().backward()
    for v in (res.loss, res.kappa, res.R, res.t, res.similarity, x.grad, y.grad, w.grad, sigma.grad):
        assert torch.isfinite(v).all()
    assert torch.allclose(torch.linalg.det(res.R), torch.ones(len(res.R), dtype=torch.float64))
    if case in CASES and init == "paired":
        # the paired start already maps every node exactly
        assert res.loss.abs().max() < 1e-9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_mass_conventions(dtype, backend):
    x = torch.randn(5, 3, dtype=dtype)
    zero = torch.zeros(5, dtype=dtype)
    one = se3_kernel_alignment(x, x, weight_x=zero, backend=backend)
    assert one.similarity.item() == 0 and torch.isfinite(one.loss).all()
    assert one.loss.item() == pytest.approx(-math.log(1e-8), rel=1e-4)
    both = se3_kernel_alignment(x, x, weight_x=zero, weight_y=zero, backend=backend)
    assert both.similarity.item() == 1 and both.loss.item() == 0
    empty = torch.zeros(0, 3, dtype=dtype)
    for init in ["principal_axes", "paired", "identity"]:
        res = se3_kernel_alignment(empty, empty, init=init, backend=backend)
        assert res.loss.item() == 0 and res.R.shape == (1, 3, 3)
    assert torch.isfinite(se3_kernel_alignment(x, empty, backend=backend).loss).all()


@pytest.mark.parametrize("init", ["paired", "principal_axes", "octahedral"])
def test_invariances(init):
    sizes = [18, 7, 30]
    y, batch, w, gen = anisotropic_batch(sizes, seed=11)
    x = y + 0.2 * torch.randn(y.shape, dtype=torch.float64, generator=gen)  # similar, not identical

    def run(a, b, wa=w, wb=w):
        return se3_kernel_alignment(a, b, batch, batch, wa, wb, 0.8, init=init, iterations=3)

    ref = run(x, y)
    # large relative rotation and translation of y, graph by graph
    Rr = random_rotation(3, generator=gen)
    Rr[1] = axis_rotation([1.0, 2.0, 0.5], math.pi - 1e-4)
    tr = torch.randn(3, 3, dtype=torch.float64, generator=gen) * 20
    moved = run(x, move(y, batch, Rr, tr))
    assert torch.allclose(moved.loss, ref.loss, atol=1e-10)
    assert torch.allclose(moved.R @ Rr, ref.R, atol=1e-8)
    # joint rigid motion of both
    Rj, tj = random_rotation(3, generator=gen), torch.randn(3, 3, dtype=torch.float64, generator=gen)
    joint = run(move(x, batch, Rj, tj), move(y, batch, Rj, tj))
    assert torch.allclose(joint.loss, ref.loss, atol=1e-10)
    # independent translations
    shifted = run(x + torch.tensor([5.0, -3, 1], dtype=torch.float64), y - 7.0)
    assert torch.allclose(shifted.loss, ref.loss, atol=1e-10)
    # node order within each graph (the paired init needs the same order on both sides)
    perm = torch.cat([torch.randperm(n, generator=gen) + o for n, o in zip(sizes, [0, 18, 25])])
    permuted = run(x[perm], y[perm], w[perm], w[perm])
    assert torch.allclose(permuted.loss, ref.loss, atol=1e-10)


def test_identity_init_is_not_rotation_invariant_but_principal_axes_is():
    gen = torch.Generator().manual_seed(2)
    y = chain(40, gen)
    x = y @ axis_rotation([0.0, 0, 1], 2.5).T
    lit = se3_kernel_alignment(x, y, sigma=1.0, init="identity")
    pa = se3_kernel_alignment(x, y, sigma=1.0, init="principal_axes")
    assert lit.loss.item() > 0.1 and pa.loss.item() < 1e-10


@property_settings(25)
@given(st.integers(2, 30), st.integers(2, 30), st.floats(0.3, 3.0), st.sampled_from([None, 2.0, 3.0]),
       st.booleans(), st.integers(0, 10_000))
def test_kappa_never_decreases_with_fixed_neighbors(n, m, sigma, cutoff, multiband, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, dtype=torch.float64, generator=gen) * 2
    y = torch.randn(m, 3, dtype=torch.float64, generator=gen) * 2
    wx = torch.rand(n, dtype=torch.float64, generator=gen)
    wy = torch.rand(m, dtype=torch.float64, generator=gen)
    kernel = MultiBandGaussianKernel([sigma / 2, sigma], weights=[1.0, 2.0]).double() if multiband else sigma
    for backend in BACKENDS:
        res = se3_kernel_alignment(x, y, None, None, wx, wy, kernel, init="identity", iterations=8,
                                   cutoff=cutoff, refresh_neighbors=False, backend=backend)
        h = res.history[:, 0]
        assert h.shape == (9,)
        assert bool((h[1:] >= h[:-1] * (1 - 1e-12) - 1e-300).all()), h


@pytest.mark.full  # long gradcheck
def test_gradcheck_through_the_pose():
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(9, 3, dtype=torch.float64, generator=gen)).requires_grad_(True)
    y = (torch.randn(8, 3, dtype=torch.float64, generator=gen)).requires_grad_(True)
    wx = (torch.rand(9, dtype=torch.float64, generator=gen) + 0.1).requires_grad_(True)
    wy = (torch.rand(8, dtype=torch.float64, generator=gen) + 0.1).requires_grad_(True)
    # below the bounding-box sides: the robust E-step's volume floor (a constant) stays inactive
    sigma = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    bx = torch.tensor([0] * 5 + [1] * 4)
    by = torch.tensor([0] * 4 + [1] * 4)
    for backend in BACKENDS:
        # The initial pose is a constant of the gradient (except "paired"): use inits
        # that do not depend on the input, so that the gradient is the total derivative.
        for kwargs in (dict(), dict(iterations=2, objective="cosine", cutoff=4.0),
                       dict(estep="robust", iterations=3),
                       dict(pose_blend=0.3, pose_reg=0.5, objective="log_kappa")):
            opts = dict(dict(cutoff=None, pose_grad="full", init="identity"), **kwargs)

            def f(a, b, c, d, s, opts=opts, backend=backend):
                return se3_kernel_alignment(a, b, bx, by, c, d, s, backend=backend, **opts).loss
            assert torch.autograd.gradcheck(f, (x, y, wx, wy, sigma)), (backend, kwargs)
        xp, yp = x[:8].detach().clone().requires_grad_(True), y.detach().clone().requires_grad_(True)

        def paired(a, b, c, backend=backend):
            return se3_kernel_alignment(a, b, by, by, c, c, 1.3, init="paired", pose_grad="full",
                                        iterations=2, backend=backend).loss
        assert torch.autograd.gradcheck(paired, (xp, yp, wy))
    # Kernel-module parameters (log-bandwidths, logits, log-scale) against central differences.
    k = MultiBandGaussianKernel([0.6, 1.5], learnable_scale=True).double()
    params = list(k.parameters())

    def loss():
        return se3_kernel_alignment(x, y, bx, by, sigma=k, cutoff=None, objective="log_kappa",
                                    init="identity", pose_grad="full", iterations=2).loss.sum()
    grads = torch.autograd.grad(loss(), params)
    for p, gp in zip(params, grads):
        fd = torch.zeros_like(p)
        for i in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[i] += 1e-6
                up = loss()
                p.view(-1)[i] -= 2e-6
                down = loss()
                p.view(-1)[i] += 1e-6
            fd.view(-1)[i] = (up - down) / 2e-6
        assert torch.allclose(gp, fd, atol=1e-7, rtol=1e-5)


@pytest.mark.full  # 300 iterations, differentiated through
@pytest.mark.parametrize("backend", BACKENDS)
def test_detached_gradient_is_the_full_gradient_at_convergence(backend):
    """Envelope theorem: at a converged pose the detached-pose gradient equals
    the gradient through the pose; after one step it does not."""
    gen = torch.Generator().manual_seed(9)
    y = chain(25, gen)
    x = (y @ axis_rotation([1.0, 0, 1], 0.3).T + 0.2 * torch.randn(y.shape, dtype=torch.float64,
                                                                     generator=gen)).requires_grad_(True)
    grads = {}
    for mode in ("detach", "full"):
        for it in (1, 300):
            res = se3_kernel_alignment(x, y, sigma=1.0, init="identity", iterations=it, cutoff=None,
                                       pose_grad=mode, backend=backend)
            grads[mode, it], = torch.autograd.grad(res.loss.sum(), x)
    assert torch.allclose(grads["detach", 300], grads["full", 300], atol=1e-8)
    assert not torch.allclose(grads["detach", 1], grads["full", 1], atol=1e-4)


@pytest.mark.full  # many alignments
def test_partial_overlap_and_outliers_robust_estep():
    """30% of one cloud cropped, 10% outliers: the robust E-step recovers the pose
    to under a degree, the kernel E-step with a fixed sigma does not."""
    errors = {"robust": [], "kernel": []}
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        x = chain(150, gen)
        d = torch.nn.functional.normalize(torch.randn(3, dtype=torch.float64, generator=gen), dim=0)
        proj = x @ d
        kept = x[proj <= torch.quantile(proj, 0.7)]
        kept = kept + 0.02 * torch.randn(kept.shape, dtype=torch.float64, generator=gen)
        lo, hi = x.min(0).values, x.max(0).values
        outliers = lo + (hi - lo) * torch.rand(len(kept) // 10, 3, dtype=torch.float64, generator=gen)
        R, t = random_rotation(1, generator=gen)[0], torch.randn(3, dtype=torch.float64, generator=gen) * 5
        y = (torch.cat([kept, outliers]) - t) @ R  # x = R y + t on the kept part
        rob = se3_kernel_alignment(x, y, sigma=1.0, estep="robust", iterations=30)
        ker = se3_kernel_alignment(x, y, sigma=1.0, iterations=1)
        errors["robust"].append(rotation_angle(rob.R[0], R).item())
        errors["kernel"].append(rotation_angle(ker.R[0], R).item())
        assert (rob.t[0] - t).norm() < 0.1
    assert max(errors["robust"]) < 1.0, errors
    assert sum(e > 10 for e in errors["kernel"]) >= 2, errors


def test_objectives_and_floor():
    gen = torch.Generator().manual_seed(6)
    x = chain(20, gen)
    y = chain(20, gen)
    base = dict(sigma=1.0, init="paired")
    res = {o: se3_kernel_alignment(x, y, objective=o, tau=0.5, **base) for o in
           ("log_cosine", "cosine", "log_kappa", "kappa")}
    c, k = res["cosine"].similarity, res["cosine"].kappa
    assert torch.allclose(res["log_cosine"].loss, -(torch.log(c + 1e-8) - math.log1p(1e-8)) / 0.5)
    assert torch.allclose(res["cosine"].loss, (1 - c) / 0.5)
    assert torch.allclose(res["log_kappa"].loss, -torch.log(k + 1e-8) / 0.5)
    assert torch.allclose(res["kappa"].loss, (1 - k) / 0.5)
    # the raw design loss is not zero for identical structures; the default is
    same = {o: se3_kernel_alignment(x, x, objective=o, **base).loss.item()
            for o in ("log_cosine", "log_kappa")}
    assert same["log_cosine"] == pytest.approx(0, abs=1e-12) and same["log_kappa"] > 0.5
    # kappa_floor: above the floor nothing changes; below it the log continues linearly
    far = dict(sigma=0.3, init="identity", cutoff=None)  # two different chains: kappa ~ 1e-3
    kappa = se3_kernel_alignment(x, y, **far).kappa.item()
    assert 1e-5 < kappa < 1e-2
    for floor in (1e-2, 1e-1):
        xr = x.clone().requires_grad_(True)
        out = se3_kernel_alignment(xr, y, objective="log_kappa", kappa_floor=floor, eps=1e-30, **far)
        assert out.loss.item() == pytest.approx(-math.log(floor) + 1 - kappa / floor, rel=1e-9)
        gx, = torch.autograd.grad(out.loss.sum(), xr)
        dk, = torch.autograd.grad(se3_kernel_alignment(xr, y, **far).kappa.sum(), xr)
        assert torch.allclose(gx, -dk / floor)
    top = se3_kernel_alignment(x, y, objective="log_kappa", kappa_floor=1e-6, **base)
    assert torch.allclose(top.loss, res["log_kappa"].loss * 0.5)


def test_pose_regularisation_and_blending():
    gen = torch.Generator().manual_seed(8)
    y = chain(30, gen)
    x = y @ axis_rotation([0.0, 1, 0], 0.4).T
    free = se3_kernel_alignment(x, y, sigma=1.0, init="identity", iterations=100)
    assert rotation_angle(free.R[0], axis_rotation([0.0, 1, 0], 0.4)).item() < 1e-6
    held = se3_kernel_alignment(x, y, sigma=1.0, init="identity", iterations=20, pose_reg=1e6)
    assert rotation_angle(held.R[0], torch.eye(3, dtype=torch.float64)).item() < 0.01
    # from the principal-axes starts (a batch of two graphs), a strong pull keeps the chosen starts
    xb, yb = torch.cat([x, 2 * x]), torch.cat([y, 2 * y])
    b = torch.repeat_interleave(torch.arange(2), 30)
    start = se3_kernel_alignment(xb, yb, b, b, sigma=1.0, iterations=0)
    pulled = se3_kernel_alignment(xb, yb, b, b, sigma=1.0, iterations=5, pose_reg=1e6)
    assert (rotation_angle(pulled.R, start.R) < 0.01).all()
    one = se3_kernel_alignment(x, y, sigma=1.0, init="identity", iterations=1)
    damped = se3_kernel_alignment(x, y, sigma=1.0, init="identity", iterations=1, pose_blend=0.5)
    step = rotation_angle(one.R[0], torch.eye(3, dtype=torch.float64))
    half = rotation_angle(damped.R[0], torch.eye(3, dtype=torch.float64))
    assert 0.3 * step < half < 0.7 * step


def test_weight_clamping_matches_clamped_weights():
    from tg_rapidalign import normalize_weights
    y, batch, w, gen = anisotropic_batch([12, 9])
    w = w ** 6
    x = y + 0.1 * torch.randn(y.shape, dtype=torch.float64, generator=gen)
    clamped = normalize_weights(w, batch, 2, torch.float64, max_ratio=2.0)
    a = se3_kernel_alignment(x, y, batch, batch, w, w, 0.9, max_weight_ratio=2.0)
    b = se3_kernel_alignment(x, y, batch, batch, clamped, clamped, 0.9)
    assert torch.allclose(a.loss, b.loss, atol=1e-12)
    c = se3_kernel_alignment(x, y, batch, batch, w, w, 0.9)
    assert not torch.allclose(a.loss, c.loss)


def test_bad_input():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="x must have 3 columns"):
        se3_kernel_alignment(torch.randn(5, 2), x)
    with pytest.raises(ValueError, match="y contains NaN"):
        se3_kernel_alignment(x, torch.full((5, 3), float("nan")))
    with pytest.raises(ValueError, match="weight_y must be non-negative"):
        se3_kernel_alignment(x, x, weight_y=-torch.ones(5))
    with pytest.raises(ValueError, match="sigma"):
        se3_kernel_alignment(x, x, sigma=-1.0)
    with pytest.raises(ValueError, match="tau must be positive"):
        se3_kernel_alignment(x, x, tau=0.0)
    with pytest.raises(ValueError, match="batch_x must be sorted"):
        se3_kernel_alignment(x, x, torch.tensor([1, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="init='paired' needs"):
        se3_kernel_alignment(x, torch.randn(4, 3), init="paired")
    with pytest.raises(ValueError, match="unknown init"):
        se3_kernel_alignment(x, x, init="random")
    with pytest.raises(ValueError, match="iterations must be"):
        se3_kernel_alignment(x, x, iterations=-1)
    with pytest.raises(ValueError, match="outlier_weight must be"):
        se3_kernel_alignment(x, x, estep="robust", outlier_weight=1.0)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        se3_kernel_alignment(torch.ones(5, 3, dtype=torch.long), x)


def test_procrustes_is_reused_for_paired_init():
    y, batch, w, gen = anisotropic_batch([10])
    x = y + 0.5 * torch.randn(y.shape, dtype=torch.float64, generator=gen)
    R, t = weighted_procrustes(x, y, w * w, batch)
    res = se3_kernel_alignment(x, y, batch, batch, w, w, init="paired", iterations=0)
    assert torch.allclose(res.R, R, atol=1e-12) and torch.allclose(res.t, t, atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(), dict(estep="robust", iterations=4),
                                    dict(pose_grad="full", iterations=2, init="identity"),
                                    dict(refresh_neighbors=False, iterations=3),
                                    dict(sigma=MultiBandGaussianKernel([0.4, 1.2]).double())])
def test_size_buckets_match_one_padded_batch(monkeypatch, kwargs):
    """Large batches are split into buckets of similar-sized graphs: same values
    and gradients as one padded batch and as the pair-list backend."""
    from tg_rapidalign.alignment import evaluators
    sizes_x = [3, 17, 1, 9, 30, 5, 12, 2, 22, 8]
    sizes_y = [4, 15, 2, 9, 28, 6, 10, 3, 25, 8]
    gen = torch.Generator().manual_seed(12)
    bx = graph_index(sizes_x)
    by = graph_index(sizes_y)
    x = (torch.randn(sum(sizes_x), 3, dtype=torch.float64, generator=gen) * 2).requires_grad_(True)
    y = (torch.randn(sum(sizes_y), 3, dtype=torch.float64, generator=gen) * 2).requires_grad_(True)
    kwargs = dict(dict(sigma=0.9), **kwargs)
    out = {}
    runs = [("one", 10**9, "dense"), ("buckets", 2, "dense")] + [(b, 10**9, b) for b in BACKENDS[1:]]
    for name, per_bucket, backend in runs:
        monkeypatch.setattr(evaluators, "GRAPHS_PER_BUCKET", per_bucket)
        res = se3_kernel_alignment(x, y, bx, by, backend=backend, **kwargs)
        out[name] = (res, *torch.autograd.grad(res.loss.sum(), (x, y)))
    monkeypatch.setattr(evaluators, "GRAPHS_PER_BUCKET", 2)
    ev = evaluators.make_evaluator("dense", "auto", x, y, bx, by, torch.ones(len(x)).double(),
                              torch.ones(len(y)).double(), 10)
    assert len(ev.parts) == 5  # really bucketed in the second run
    ref, gx, gy = out["one"]
    # graphs of one or two points on a side leave the pose partly undetermined: compare it elsewhere
    posed = (torch.tensor(sizes_x) >= 3) & (torch.tensor(sizes_y) >= 3)
    for name in list(out)[1:]:
        res, hx, hy = out[name]
        for f in ("loss", "kappa", "R", "t", "kappa_xx", "kappa_yy"):
            a, b = getattr(res, f), getattr(ref, f)
            if f in ("R", "t"):
                a, b = a[posed], b[posed]
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-11), (name, f)
        px, py = posed[bx], posed[by]  # (so do the gradients, which follow the pose)
        assert torch.allclose(hx[px], gx[px], atol=1e-9) and torch.allclose(hy[py], gy[py], atol=1e-9), name


@property_settings(30)
@given(st.integers(4, 40), st.integers(0, 10_000), st.sampled_from(["paired", "principal_axes"]),
       st.sampled_from(BACKENDS))
def test_rotation_invariance_property(n, seed, init, backend):
    """Any rotation and translation of y leaves the loss unchanged (distinct
    principal variances, so the principal axes are defined)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(n, 3, dtype=torch.float64, generator=gen) * torch.tensor([4.0, 2.0, 1.0],
                                                                            dtype=torch.float64)
    x = y + 0.3 * torch.randn(n, 3, dtype=torch.float64, generator=gen)
    w = torch.rand(n, dtype=torch.float64, generator=gen) + 0.5
    R, t = random_rotation(1, generator=gen)[0], torch.randn(3, dtype=torch.float64, generator=gen) * 10
    a = se3_kernel_alignment(x, y, None, None, w, w, 1.0, init=init, iterations=2, backend=backend)
    b = se3_kernel_alignment(x, y @ R.T + t, None, None, w, w, 1.0, init=init, iterations=2, backend=backend)
    assert torch.allclose(a.loss, b.loss, atol=1e-9, rtol=1e-9)
    assert torch.allclose(b.R[0] @ R, a.R[0], atol=1e-7)


def test_pair_backend_streams_chunks(monkeypatch):
    """The pair-list backend reduces the neighbor pairs chunk by chunk: many small
    chunks give the same result as the dense evaluator, robust E-step included."""
    from tg_rapidalign.ops import grid
    monkeypatch.setattr(grid, "_CHUNK_CANDIDATES", 256)
    gen = torch.Generator().manual_seed(13)
    y = chain(120, gen)
    x = (y @ axis_rotation([0.3, 1, 0], 0.5).T + 0.1 * torch.randn(y.shape, dtype=torch.float64,
                                                                     generator=gen)).requires_grad_(True)
    for kwargs in (dict(iterations=3), dict(estep="robust", iterations=10)):
        out = [se3_kernel_alignment(x, y, sigma=1.0, backend=b, radius_backend="grid", **kwargs)
               for b in BACKENDS]
        grads = [torch.autograd.grad(o.loss.sum(), x)[0] for o in out]
        for o, g in zip(out[1:], grads[1:]):
            assert torch.allclose(out[0].loss, o.loss, rtol=1e-10)
            assert torch.allclose(out[0].R, o.R, atol=1e-10)
            assert torch.allclose(grads[0], g, atol=1e-10)


def test_pair_backend_streams_with_the_default_radius_backend(monkeypatch):
    """The pure-torch pair backend keeps its bounded memory when the native
    extension is built: its default neighbor search is the streaming grid."""
    from tg_rapidalign.neighbors import radius
    calls = []
    original = radius.grid_radius_chunks

    def counting(*args, **kwargs):
        calls.append(1)
        yield from original(*args, **kwargs)
    monkeypatch.setattr(radius, "grid_radius_chunks", counting)
    gen = torch.Generator().manual_seed(14)
    y = chain(300, gen)
    se3_kernel_alignment(y + 0.1, y, sigma=1.0, backend="pairs")
    assert calls
