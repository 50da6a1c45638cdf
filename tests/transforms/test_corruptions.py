import pytest
import torch
from helpers import path_edges
from torch_geometric.data import Data
from torch_geometric.utils import is_undirected

from tg_rapidalign.transforms import GaussianNoise, NodeMasking, RigidSubpartDisplacement
from tg_rapidalign.transforms.corruptions import rms_radius


def chain(n=40, dim=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.cumsum(torch.randn(n, dim, dtype=torch.float64, generator=gen), 0)
    return Data(pos=pos, edge_index=path_edges(n), z=torch.arange(n), num_nodes=n)


TRANSFORMS = [lambda lvl, **kw: GaussianNoise(lvl, **kw), lambda lvl, **kw: NodeMasking(min(lvl, 1.0), **kw),
              lambda lvl, **kw: RigidSubpartDisplacement(lvl, **kw)]


@pytest.mark.parametrize("make", TRANSFORMS)
def test_deterministic_under_a_seed_or_generator_and_input_untouched(make):
    data = chain()
    before = data.pos.clone()
    a, b = make(0.3, seed=7)(data), make(0.3, seed=7)(data)
    assert torch.equal(a.pos, b.pos)
    c = make(0.3, generator=torch.Generator().manual_seed(7))(data)
    assert torch.equal(a.pos, c.pos)
    t = make(0.3, seed=7)
    assert not torch.equal(t(data).pos, t(data).pos) or isinstance(t, NodeMasking)  # the sequence moves on
    assert torch.equal(data.pos, before)
    assert a.corruption_level == pytest.approx(0.3) and isinstance(a.corruption, str)


@pytest.mark.parametrize("make", TRANSFORMS)
def test_level_zero_is_the_identity(make):
    data = chain()
    out = make(0.0, seed=1)(data)
    assert torch.allclose(out.pos, data.pos, atol=1e-12)
    assert out.num_nodes == data.num_nodes


def test_noise_has_the_requested_scale():
    data = chain(n=20000)
    out = GaussianNoise(0.2, seed=0)(data)
    step = (out.pos - data.pos).pow(2).sum(1).mean().sqrt() / 3**0.5
    assert float(step) == pytest.approx(0.2 * rms_radius(data.pos), rel=0.02)
    out = GaussianNoise(0.5, length=2.0, seed=0)(data)
    assert float((out.pos - data.pos).std()) == pytest.approx(1.0, rel=0.02)


def test_masking_drops_the_fraction_and_relabels_edges():
    data = chain(50)
    out = NodeMasking(0.3, seed=3)(data)
    assert out.num_nodes == 35 and out.pos.size(0) == 35 and out.z.size(0) == 35
    kept = out.z  # original ids of the kept nodes (z was arange)
    assert torch.equal(out.pos, data.pos[kept])
    assert int(out.edge_index.max()) < 35 and is_undirected(out.edge_index)
    # every kept edge joins nodes that were neighbors in the chain
    assert bool(((kept[out.edge_index[0]] - kept[out.edge_index[1]]).abs() == 1).all())
    assert NodeMasking(1.0, seed=0)(data).num_nodes == 1  # at least one node is kept


@pytest.mark.parametrize("edges", [True, False])
def test_rigid_subpart_keeps_internal_distances_and_moves_only_the_part(edges):
    data = chain(60)
    if not edges:
        data.edge_index = None
    t = RigidSubpartDisplacement(0.6, seed=5)
    out = t(data)
    m = out.moved_mask
    assert int(m.sum()) == 30
    assert torch.equal(out.pos[~m], data.pos[~m])
    def dist(p):
        return (p[:, None] - p[None]).norm(dim=-1)

    assert torch.allclose(dist(out.pos[m]), dist(data.pos[m]), atol=1e-9)
    assert not torch.allclose(out.pos[m], data.pos[m])
    if edges:  # a breadth-first region of a chain is a contiguous stretch
        idx = m.nonzero().view(-1)
        assert int(idx.max() - idx.min()) == len(idx) - 1


def test_bigger_levels_move_more():
    data = chain(80)
    for T in (GaussianNoise, RigidSubpartDisplacement):
        moves = [float((T(lvl, seed=2)(data).pos - data.pos).norm()) for lvl in (0.1, 0.3, 0.9)]
        assert moves[0] < moves[1] < moves[2]


def test_bad_input():
    with pytest.raises(ValueError, match="level"):
        GaussianNoise(-0.1)
    with pytest.raises(ValueError, match="level"):
        NodeMasking(1.5)
    with pytest.raises(TypeError, match="level"):
        GaussianNoise("a lot")
    with pytest.raises(ValueError, match="seed or generator"):
        GaussianNoise(0.1, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="data.pos"):
        GaussianNoise(0.1)(Data(x=torch.randn(3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        GaussianNoise(0.1)(Data(pos=torch.full((3, 3), float("nan"))))
    assert "GaussianNoise(level=0.1" in repr(GaussianNoise(0.1))
