import pytest
import torch
from helpers import property_settings, run_gloo
from hypothesis import given
from hypothesis import strategies as st

from tg_rapidalign import MMDLoss, MultiBandGaussianKernel, group_mmd, kernel_mmd


def ref_pair(z, g, w, a, b, sigma, unbiased):
    """MMD² between two groups from the packed-graph kernel MMD (an independent path)."""
    xa, xb = z[g == a], z[g == b]
    wa, wb = (None, None) if w is None else (w[g == a], w[g == b])
    return kernel_mmd(xa, xb, weight_x=wa, weight_y=wb, sigma=sigma, cutoff=None, unbiased=unbiased,
                      backend="dense")[0]


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_pairwise_matches_kernel_mmd(unbiased, weighted):
    z = torch.randn(40, 5, dtype=torch.float64)
    g = torch.randint(0, 3, (40,))
    w = torch.rand(40, dtype=torch.float64) if weighted and not unbiased else None
    values, valid = group_mmd(z, g, w, 1.3, unbiased=unbiased)
    for a in range(3):
        for b in range(3):
            if a != b:
                assert valid[a, b]
                ref = ref_pair(z, g, w, a, b, 1.3, unbiased)
                assert torch.allclose(values[a, b], ref, rtol=1e-10, atol=1e-12)


def test_one_vs_rest_matches_kernel_mmd():
    z = torch.randn(30, 3, dtype=torch.float64)
    g = torch.randint(0, 4, (30,))
    values, valid = group_mmd(z, g, None, 0.8, mode="one_vs_rest")
    for a in range(4):
        ref = kernel_mmd(z[g == a], z[g != a], sigma=0.8, cutoff=None, backend="dense")[0]
        assert valid[a] and torch.allclose(values[a], ref, rtol=1e-10)


@property_settings(20)
@given(st.integers(2, 30), st.integers(1, 4), st.integers(0, 10_000))
def test_permutation_invariance_and_symmetry(n, num_groups, seed):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, dtype=torch.float64, generator=gen)
    g = torch.randint(0, num_groups, (n,), generator=gen)
    perm = torch.randperm(n, generator=gen)
    v1, m1 = group_mmd(z, g, None, 0.7, num_groups=num_groups)
    v2, m2 = group_mmd(z[perm], g[perm], None, 0.7, num_groups=num_groups)
    assert torch.equal(m1, m2)
    assert torch.allclose(v1[m1], v2[m2], atol=1e-12)
    assert torch.allclose(v1, v1.T, atol=1e-12)
    assert bool((v1[m1] >= -1e-12).all())


def test_module_mean_over_present_pairs_and_gradients():
    kern = MultiBandGaussianKernel([0.5, 2.0]).double()
    loss = MMDLoss(kern, num_groups=4)
    z = torch.randn(20, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randint(0, 3, (20,))  # group 3 absent: its pairs are excluded
    v = loss(z, g)
    values, valid = group_mmd(z, g, None, kern, num_groups=4)
    assert torch.allclose(v, values[valid.triu(1)].mean())
    v.backward()
    assert torch.isfinite(z.grad).all()
    assert "MMDLoss" in repr(loss)


def test_single_group_or_single_sample_is_zero_with_finite_gradient():
    z = torch.randn(5, 2, requires_grad=True)
    v = MMDLoss(1.0)(z, torch.zeros(5, dtype=torch.long))
    v.backward()
    assert float(v.detach()) == 0 and torch.isfinite(z.grad).all()
    z1 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    v = MMDLoss(1.0, unbiased=True)(z1, torch.tensor([0, 1]))
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(z1.grad).all()


def test_gradcheck():
    z = torch.randn(9, 2, dtype=torch.float64, requires_grad=True)
    w = torch.rand(9, dtype=torch.float64, requires_grad=True)
    g = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    for mode in ("pairwise", "one_vs_rest"):
        assert torch.autograd.gradcheck(lambda a, b, mode=mode: MMDLoss(0.9, mode=mode)(a, g, b), (z, w))


def test_bad_input():
    z = torch.randn(4, 2)
    with pytest.raises(TypeError, match="groups"):
        group_mmd(z, torch.zeros(4), None, 1.0)
    with pytest.raises(ValueError, match="groups must have shape"):
        group_mmd(z, torch.zeros(3, dtype=torch.long), None, 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        group_mmd(z, torch.tensor([0, -1, 0, 1]), None, 1.0)
    with pytest.raises(ValueError, match="weight must be non-negative"):
        group_mmd(z, torch.zeros(4, dtype=torch.long), -torch.ones(4), 1.0)
    with pytest.raises(ValueError, match="mode"):
        MMDLoss(mode="all")


def _problem():
    """Data, groups, weights and a small model, the same in every process."""
    torch.manual_seed(0)
    data = torch.randn(12, 6, dtype=torch.float64)
    groups = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 1, 2, 0, 0])
    weights = torch.rand(12, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    return data, groups, weights, model


def _rank_value_and_grads(rank):
    data, groups, weights, model = _problem()
    loss_fn = MMDLoss(MultiBandGaussianKernel([0.5, 1.5]).double(), unbiased=False)
    local = slice(0, 7) if rank == 0 else slice(7, 12)  # unequal shares exercise the padding
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    value = loss_fn(ddp(data[local]), groups[local], weights[local])
    value.backward()
    # The DDP reducer is freed on return, before the group ends (see helpers.shutdown_process_group).
    return {"value": value.detach(), "grads": [p.grad.clone() for p in model.parameters()]}


@pytest.mark.full
def test_ddp_two_processes_match_single_process():
    data, groups, weights, model = _problem()
    loss_fn = MMDLoss(MultiBandGaussianKernel([0.5, 1.5]).double(), unbiased=False, gather=False)
    value = loss_fn(model(data), groups, weights)
    value.backward()
    for res in run_gloo(_rank_value_and_grads):
        assert torch.allclose(res["value"], value.detach(), rtol=1e-12)
        for got, p in zip(res["grads"], model.parameters()):
            assert torch.allclose(got, p.grad, rtol=1e-10, atol=1e-13)
