import pytest
import torch
from helpers import property_settings, random_batch
from hypothesis import given
from hypothesis import strategies as st
from reference import brute_pairs

from tg_rapidalign import radius_pairs
from tg_rapidalign.neighbors import available_backends


def as_set(e):
    return set(map(tuple, e.t().tolist()))


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("dim", [1, 2, 3, 5])
def test_backends_match_brute_force(backend, dim):
    x, bx = random_batch([30, 0, 45, 12], dim=dim)
    y, by = random_batch([20, 7, 33, 1], dim=dim)
    r = 0.35
    if backend == "native" and dim > 3:
        with pytest.raises(ValueError, match="dimension <= 3"):
            radius_pairs(x, y, r, bx, by, backend=backend)
        return
    e = radius_pairs(x, y, r, bx, by, backend=backend)
    assert e.dtype == torch.long and e.shape[0] == 2
    assert as_set(e) == brute_pairs(x, y, r, bx, by)
    assert e.size(1) == len(as_set(e))  # no duplicates


def test_grid_large_matches_dense():
    x, bx = random_batch([3000, 2000], dtype=torch.float32)
    y, by = random_batch([2500, 1500], dtype=torch.float32)
    a = radius_pairs(x, y, 0.08, bx, by, backend="grid")
    b = radius_pairs(x, y, 0.08, bx, by, backend="dense")
    assert as_set(a) == as_set(b)


def test_distance_exactly_r_is_included():
    # Integer lattice: distances are exact in floating point.
    g = torch.arange(4.0)
    x = torch.cartesian_prod(g, g, g)
    for backend in available_backends():
        e = radius_pairs(x, x, 1.0, backend=backend)
        d2 = ((x[e[0]] - x[e[1]]) ** 2).sum(1)
        assert int((d2 == 1).sum()) == 2 * 3 * 4 * 4 * 3  # axis-neighbor pairs, both orders
        assert as_set(e) == brute_pairs(x, x, 1.0)


def test_no_neighbor_cap():
    x = torch.zeros(500, 3)
    e = radius_pairs(x, x, 0.1, backend="grid")
    assert e.size(1) == 500 * 500


def test_far_apart_graphs_and_huge_extent():
    # Cell keys must not overflow when r is tiny compared with the extent.
    x = torch.tensor([[0.0, 0.0, 0.0], [1e-6, 0, 0], [1e9, 1e9, 1e9]], dtype=torch.float64)
    e = radius_pairs(x, x, 2e-6, backend="grid")
    assert as_set(e) == {(0, 0), (0, 1), (1, 0), (1, 1), (2, 2)}


@property_settings(40)
@given(n=st.integers(0, 40), m=st.integers(0, 40), r=st.floats(0.01, 2.0),
       graphs=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_grid_property(n, m, r, graphs, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=gen, dtype=torch.float64)
    y = torch.rand(m, 3, generator=gen, dtype=torch.float64)
    bx = torch.sort(torch.randint(0, graphs, (n,), generator=gen)).values
    by = torch.sort(torch.randint(0, graphs, (m,), generator=gen)).values
    e = radius_pairs(x, y, r, bx, by, backend="grid", num_graphs=graphs)
    assert as_set(e) == brute_pairs(x, y, r, bx, by)


def test_bad_input():
    x = torch.rand(5, 3)
    with pytest.raises(ValueError, match="r must be positive"):
        radius_pairs(x, x, 0.0)
    with pytest.raises(ValueError, match="backend"):
        radius_pairs(x, x, 1.0, backend="kd")
    with pytest.raises(ValueError, match="y must have the same number of columns|same number"):
        radius_pairs(x, torch.rand(5, 2), 1.0)
    with pytest.raises(ValueError, match="batch_x must be sorted"):
        radius_pairs(x, x, 1.0, torch.tensor([0, 1, 0, 1, 1]), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="x contains NaN"):
        radius_pairs(torch.tensor([[float("nan"), 0, 0]]), x, 1.0)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        radius_pairs(torch.ones(5, 3, dtype=torch.long), x, 1.0)
    with pytest.raises(ValueError, match="x must have shape"):
        radius_pairs(torch.rand(5), x, 1.0)


def test_external_backend_adapter(monkeypatch):
    """torch_cluster's convention (row 0 indexes y) and a strict '<' comparison
    must still give exact pairs with distance r included."""
    import sys
    import types

    import tg_rapidalign.backends as backends_mod

    calls = {}

    def fake_radius(x, y, r, batch_x=None, batch_y=None, max_num_neighbors=32):
        calls["cap"] = max_num_neighbors
        d2 = ((y[:, None] - x[None]) ** 2).sum(-1)
        same = batch_y[:, None] == batch_x[None]
        return ((d2 < r * r) & same).nonzero().t()  # [2, E]: (y index, x index)

    monkeypatch.setitem(sys.modules, "torch_cluster", types.SimpleNamespace(radius=fake_radius))
    monkeypatch.setattr(backends_mod, "has_torch_cluster", lambda: True)
    g = torch.arange(3.0)
    x = torch.cartesian_prod(g, g, g)
    y = x[:20] + 0.0
    bx = torch.zeros(len(x), dtype=torch.long)
    by = torch.zeros(len(y), dtype=torch.long)
    e = radius_pairs(x, y, 1.0, bx, by, backend="torch_cluster")
    assert as_set(e) == brute_pairs(x, y, 1.0, bx, by)
    assert calls["cap"] >= len(x)  # never caps neighbors


@pytest.mark.full  # large inputs
def test_grid_chunks_are_whole_rows_and_cover_every_pair():
    from tg_rapidalign.ops.grid import grid_radius_chunks
    x, bx = random_batch([300, 5, 200], dtype=torch.float64)
    y, by = random_batch([250, 7, 220], dtype=torch.float64)
    chunks = list(grid_radius_chunks(x, y, 0.2, bx, by, 3, chunk=500))
    assert len(chunks) > 10
    rows = [set(i.tolist()) for i, _ in chunks]
    assert all(a.isdisjoint(b) for k, a in enumerate(rows) for b in rows[k + 1:])  # whole rows
    got = {(int(i), int(j)) for ci, cj in chunks for i, j in zip(ci, cj)}
    assert got == brute_pairs(x, y, 0.2, bx, by)
