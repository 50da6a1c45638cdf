"""Node types: the kernel times the type kernel beta + (1 - beta)[a = b], against
the dense float64 reference on every backend, with gradients, invariances and
bad input."""
import pytest
import torch
from helpers import property_settings, random_batch
from hypothesis import given
from hypothesis import strategies as st
from reference import ref_sums

from tg_rapidalign import KernelMMDLoss, MultiBandGaussianKernel, kernel_cosine, kernel_mmd, kernel_sums
from tg_rapidalign.ops import native

BACKENDS = ["dense", "tiled"] + (["native"] if native.AVAILABLE else [])


def typed_case(seed=0, num_types=3):
    torch.manual_seed(seed)
    x, bx = random_batch([30, 1, 45, 0, 12])
    y, by = random_batch([25, 14, 2, 6, 20])
    tx = torch.randint(0, num_types, (len(x),)) * 3 + 1  # arbitrary labels (1, 4, 7), like atomic numbers
    ty = torch.randint(0, num_types, (len(y),)) * 3 + 1
    wx, wy = torch.rand(len(x), dtype=torch.float64), torch.rand(len(y), dtype=torch.float64)
    return x, y, bx, by, wx, wy, tx, ty


def kernel(beta, learnable=False):
    return MultiBandGaussianKernel([0.15, 0.4], weights=[0.6, 0.4], learnable=learnable,
                                   cross_type_weight=beta).double()


def stacked(s):
    return torch.stack([s.kxx, s.kyy, s.kxy], 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("cutoff", [None, 2.0])
def test_typed_sums_match_dense_reference(backend, beta, cutoff):
    x, y, bx, by, wx, wy, tx, ty = typed_case()
    k = kernel(beta)
    sigmas, coefs = k.bands()
    got = kernel_sums(x, y, bx, by, wx, wy, k, cutoff=cutoff, backend=backend, type_x=tx, type_y=ty)
    r = None if cutoff is None else cutoff * 0.4
    ref = ref_sums(x, y, bx, by, wx, wy, sigmas, coefs, r=r, tx=tx, ty=ty, beta=float(k.type_weight()))
    assert torch.allclose(stacked(got), ref, rtol=1e-12, atol=1e-14)
    if 0 < beta < 1:  # the types really change the sums
        plain = ref_sums(x, y, bx, by, wx, wy, sigmas, coefs, r=r)
        assert (plain - ref).abs().max() > 1e-3


def test_float_bandwidth_with_types_keeps_same_type_pairs_only():
    x, y, bx, by, wx, wy, tx, ty = typed_case(1)
    got = kernel_sums(x, y, bx, by, wx, wy, 0.3, type_x=tx, type_y=ty, cutoff=None)
    assert torch.allclose(stacked(got), ref_sums(x, y, bx, by, wx, wy, [0.3], tx=tx, ty=ty, beta=0.0))


@pytest.mark.full  # long gradcheck
@pytest.mark.parametrize("backend", ["dense"] + (["native"] if native.AVAILABLE else []))
def test_gradcheck_positions_weights_bandwidths_and_beta(backend):
    x, y, bx, by, wx, wy, tx, ty = typed_case(2)
    keep_x, keep_y = bx != 2, by != 2  # a smaller batch for gradcheck
    x, bx, wx, tx = x[keep_x], bx[keep_x], wx[keep_x], tx[keep_x]
    y, by, wy, ty = y[keep_y], by[keep_y], wy[keep_y], ty[keep_y]
    bx, by = torch.where(bx > 2, bx - 1, bx), torch.where(by > 2, by - 1, by)
    k = kernel(0.4, learnable=True)

    def f(x, y, wx, wy, log_sigma, logits, type_logit):
        # The kernel rebuilt from the inputs, so that gradcheck sees them as its parameters.
        sigmas, pis, beta = log_sigma.exp(), torch.softmax(logits, 0), torch.sigmoid(type_logit)
        kk = _FunctionalKernel(sigmas, pis, beta)
        return 1 - kernel_cosine(x, y, bx, by, wx, wy, kk, backend=backend, type_x=tx, type_y=ty,
                                 num_graphs=4)

    params = (x, y, wx, wy, k.log_sigma, k.logits, k.type_logit)
    inputs = [t.detach().clone().requires_grad_() for t in params]
    assert torch.autograd.gradcheck(f, inputs)


class _FunctionalKernel(MultiBandGaussianKernel):
    """A kernel whose bands and cross-type weight are given tensors (for gradcheck)."""

    def __init__(self, sigmas, pis, beta):
        super().__init__([1.0] * len(sigmas), learnable=False, cross_type_weight=0.5)
        self._s, self._p, self._b = sigmas, pis, beta

    def bands(self):
        return self._s, self._p

    def type_weight(self):
        return self._b


def test_learnable_beta_receives_a_gradient():
    x, y, bx, by, wx, wy, tx, ty = typed_case(3)
    k = kernel(0.5, learnable=True)
    kernel_mmd(x, y, bx, by, wx, wy, k, type_x=tx, type_y=ty).sum().backward()
    assert k.type_logit.grad is not None and float(k.type_logit.grad.abs()) > 0


@property_settings(25)
@given(seed=st.integers(0, 10_000), beta=st.floats(0.0, 1.0), num_types=st.integers(1, 4))
def test_invariant_to_relabelling_types_and_permuting_nodes(seed, beta, num_types):
    x, y, bx, by, wx, wy, tx, ty = typed_case(seed, num_types)
    k = kernel(beta)
    base = kernel_mmd(x, y, bx, by, wx, wy, k, type_x=tx, type_y=ty)
    # Any injective relabelling of the types.
    relabel = {t: 100 - 7 * t for t in range(0, 3 * num_types + 2)}
    rx = torch.tensor([relabel[int(t)] for t in tx], dtype=torch.long)
    ry = torch.tensor([relabel[int(t)] for t in ty], dtype=torch.long)
    assert torch.allclose(kernel_mmd(x, y, bx, by, wx, wy, k, type_x=rx, type_y=ry), base, atol=1e-12)
    # Nodes permuted within the (sorted) batch.
    perm = torch.argsort(bx * 1000 + torch.randperm(len(bx)), stable=True)
    assert torch.allclose(kernel_mmd(x[perm], y, bx[perm], by, wx[perm], wy, k, type_x=tx[perm], type_y=ty),
                          base, atol=1e-12)


def test_one_type_is_the_plain_kernel():
    x, y, bx, by, wx, wy, _, _ = typed_case(4)
    k = kernel(0.2)
    same_x, same_y = torch.full((len(x),), 6), torch.full((len(y),), 6)
    typed = kernel_mmd(x, y, bx, by, wx, wy, k, type_x=same_x, type_y=same_y)
    assert torch.allclose(typed, kernel_mmd(x, y, bx, by, wx, wy, k), atol=1e-13)


def test_unbiased_mmd_with_types_drops_the_diagonal():
    x, y, bx, by, _, _, tx, ty = typed_case(5)
    k = kernel(0.25)
    sigmas, coefs = k.bands()
    got = kernel_mmd(x, y, bx, by, sigma=k, unbiased=True, type_x=tx, type_y=ty, cutoff=None)
    ref = ref_sums(x, y, bx, by, None, None, sigmas, coefs, tx=tx, ty=ty, beta=float(k.type_weight()))
    k0 = float(coefs.sum())
    nx, ny = torch.bincount(bx, minlength=5).double(), torch.bincount(by, minlength=5).double()

    def u(s, n):
        ok = n >= 2
        return torch.where(ok, (s * n * n - n * k0) / (n * (n - 1)).clamp_min(1), torch.zeros_like(s))

    assert torch.allclose(got, u(ref[:, 0], nx) + u(ref[:, 1], ny) - 2 * ref[:, 2], atol=1e-12)


def test_graphs_sharing_no_type_are_finite():
    x, bx = random_batch([5, 4])
    y, by = random_batch([3, 6])
    tx, ty = torch.zeros(len(x), dtype=torch.long), torch.ones(len(y), dtype=torch.long)
    x.requires_grad_()
    cos = kernel_cosine(x, y, bx, by, sigma=0.5, type_x=tx, type_y=ty)
    assert torch.equal(cos, torch.zeros(2, dtype=torch.float64))
    mmd = kernel_mmd(x, y, bx, by, sigma=0.5, type_x=tx, type_y=ty)
    mmd.sum().backward()
    assert torch.isfinite(mmd).all() and torch.isfinite(x.grad).all()


def test_bad_types_are_refused():
    x, y, bx, by, wx, wy, tx, ty = typed_case()
    with pytest.raises(ValueError, match="type_x and type_y"):
        kernel_mmd(x, y, bx, by, type_x=tx)
    with pytest.raises(TypeError, match="type_x"):
        kernel_mmd(x, y, bx, by, type_x=tx.double(), type_y=ty)
    with pytest.raises(ValueError, match="type_y"):
        kernel_mmd(x, y, bx, by, type_x=tx, type_y=ty[:-1])
    with pytest.raises(ValueError, match="type_y"):
        kernel_mmd(x, y, bx, by, type_x=tx, type_y=-ty)
    with pytest.raises(ValueError, match="cross_type_weight"):
        MultiBandGaussianKernel([1.0], cross_type_weight=1.5)


def test_loss_module_reads_node_types():
    from torch_geometric.data import Batch, Data

    x, y, bx, by, _, _, tx, ty = typed_case(6)
    pred = Batch.from_data_list([Data(pos=x[bx == g], z=tx[bx == g]) for g in range(5)])
    target = Batch.from_data_list([Data(pos=y[by == g], z=ty[by == g]) for g in range(5)])
    k = kernel(0.3)
    loss = KernelMMDLoss(k, similarity="cosine", node_type="z", reduction="none")
    want = 1 - kernel_cosine(x, y, bx, by, sigma=k, type_x=tx, type_y=ty, num_graphs=5)
    assert torch.allclose(loss(pred, target), want, atol=1e-13)
    assert "node_type='z'" in repr(loss)
    with pytest.raises(ValueError, match="node_type"):
        KernelMMDLoss(k, node_type="charge")(pred, target)
