"""Tile pairs of the block-sparse path: the grid search used for large layouts
(compact tiles on a grid, wide tiles scanned in chunks) finds exactly the pairs
that exhaustive enumeration finds."""
import pytest
import torch
from helpers import random_batch

from tg_rapidalign.ops import tiles
from tg_rapidalign.ops.tiles import build_tiles, tile_pairs


def pair_set(ia, ib):
    return set(zip(ia.tolist(), ib.tolist()))


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("r", [0.05, 0.2])
def test_searched_pairs_equal_enumerated_pairs(monkeypatch, symmetric, r):
    x, bx = random_batch([900, 0, 40, 700])
    y, by = (x, bx) if symmetric else random_batch([500, 30, 0, 800])
    a = build_tiles(x, bx, 4, 16)
    b = a if symmetric else build_tiles(y, by, 4, 16)
    ha = a.half.norm(dim=1)
    assert float(ha.max()) > 2 * float(ha.median())  # Morton jumps make some tiles wide
    want = pair_set(*tile_pairs(a, b, r, symmetric))  # few tiles: enumerated
    monkeypatch.setattr(tiles, "_ENUMERATE_LIMIT", 64)  # search, and scan in many small chunks
    got_ia, got_ib = tile_pairs(a, b, r, symmetric)
    got = pair_set(got_ia, got_ib)
    assert got == want and len(got) == got_ia.numel()  # same pairs, none twice
    assert all(int(a.graph[i]) == int(b.graph[j]) for i, j in got)


@pytest.mark.full  # 40,000 points
def test_wide_tiles_do_not_widen_the_search():
    # A uniform cloud: a radius padded by the widest tile would pair nearly all tiles.
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40000, 3, generator=gen, dtype=torch.float64)
    b = torch.zeros(len(x), dtype=torch.long)
    layout = build_tiles(x, b, 1, 32)
    assert float(layout.half.norm(dim=1).max()) > 0.3
    chunks = []
    original = tiles.grid_radius

    def counting(*args):
        out = original(*args)
        chunks.append(out.size(1))
        return out

    tiles.grid_radius = counting
    try:
        ia, ib = tiles._searched_pairs(layout, layout, 0.02)
    finally:
        tiles.grid_radius = original
    # Padded by the widest tile (half diagonal > 0.3) the search radius would
    # exceed 0.6 and reach most of the 1250 x 1250 tile pairs.
    n = layout.num_tiles
    assert chunks[0] < 0.15 * n * n and ia.numel() < 0.15 * n * n


@pytest.mark.parametrize("r", [None, 0.1])
def test_empty_layouts_have_no_pairs(r):
    empty = build_tiles(torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, dtype=torch.long), 2, 16)
    x, bx = random_batch([20, 5])
    full = build_tiles(x, bx, 2, 16)
    for a, b, symmetric in ((empty, empty, True), (empty, full, False), (full, empty, False)):
        ia, ib = tile_pairs(a, b, r, symmetric)
        assert ia.numel() == 0 and ib.numel() == 0
