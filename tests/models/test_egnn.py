import torch
from helpers import graph_index
from reference import brute_pairs

from tg_rapidalign.apps.models import EquivariantConv, EquivariantDenoiser, radius_graph
from tg_rapidalign.transforms import random_rotation


def _molecules(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(sum(sizes), 3, dtype=torch.float64, generator=gen) * 1.5
    batch = graph_index(sizes)
    z = torch.randint(1, 10, (sum(sizes),), generator=gen)
    return z, pos, batch


def test_radius_graph_matches_brute_force_without_self_loops():
    _, pos, batch = _molecules([9, 1, 14])
    edges = radius_graph(pos, 2.0, batch)
    got = set(map(tuple, edges.t().tolist()))
    want = {(i, j) for i, j in brute_pairs(pos, pos, 2.0, batch, batch) if i != j}
    assert got == want


def test_denoiser_is_e3_equivariant_and_permutation_equivariant():
    torch.manual_seed(0)
    model = EquivariantDenoiser(hidden=16, num_layers=2).double()
    for p in model.parameters():  # move away from the near-identity start
        torch.nn.init.normal_(p, std=0.3)
    z, pos, batch = _molecules([7, 11])
    out = model(z, pos, batch, 2)
    assert (out - pos).abs().max() > 1e-3
    R = random_rotation(2)
    R[1] = -R[1]  # a reflection too: E(3)
    t = torch.randn(2, 3, dtype=torch.float64)
    moved = (R[batch] @ pos.unsqueeze(-1)).squeeze(-1) + t[batch]
    want = (R[batch] @ out.unsqueeze(-1)).squeeze(-1) + t[batch]
    assert torch.allclose(model(z, moved, batch, 2), want, atol=1e-10)
    # Permuting the nodes of a graph permutes the output; graphs do not see each other.
    perm = torch.cat([torch.randperm(7), 7 + torch.randperm(11)])
    assert torch.allclose(model(z[perm], pos[perm], batch, 2), out[perm], atol=1e-10)
    alone = model(z[7:], pos[7:], torch.zeros(11, dtype=torch.long), 1)
    assert torch.allclose(alone, out[7:], atol=1e-10)


def test_conv_gradcheck_and_degenerate_graphs_are_finite():
    conv = EquivariantConv(4, num_distances=4, cutoff=3.0).double()
    h = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    pos = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    edges = radius_graph(pos.detach(), 10.0)
    assert torch.autograd.gradcheck(lambda a, b: conv(a, b, edges), (h, pos))
    model = EquivariantDenoiser(hidden=8, num_layers=2).double()
    z = torch.tensor([6, 1, 1])
    same = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)  # coincident atoms
    out = model(z, same)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(same.grad).all()
    single = model(torch.tensor([8]), torch.ones(1, 3, dtype=torch.float64))
    assert torch.allclose(single, torch.ones(1, 3, dtype=torch.float64))  # no neighbors: unchanged
    assert "EquivariantDenoiser(hidden=8, num_layers=2" in repr(model)
