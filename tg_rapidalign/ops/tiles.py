"""Tiling of point sets for block-sparse pair sums.

Points of each graph are sorted along a Morton (Z-order) curve and cut into
tiles of ``T`` consecutive points, so a tile is spatially compact. Two tiles
interact only if their bounding boxes come within the cutoff radius; the sum
over pairs is then a sum of small dense ``T x T`` blocks, which plain torch
evaluates with batched matrix products instead of gathering an index list of
every pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..neighbors.grid import grid_radius

# Tile pairs enumerated exhaustively below this count; above it, candidate
# tiles are found with a grid search on the tile centres.
_ENUMERATE_LIMIT = 1 << 22


@dataclass
class TileLayout:
    index: Tensor   # [nt, T] original point index; -1 marks a padding slot
    gather: Tensor  # [nt, T] index with padding replaced by the tile's first point
    valid: Tensor   # [nt, T] bool
    graph: Tensor   # [nt] graph id of each tile
    tile_ptr: Tensor  # [B + 1] first tile of each graph
    center: Tensor  # [nt, D] bounding-box centre
    half: Tensor    # [nt, D] bounding-box half extent

    @property
    def num_tiles(self) -> int:
        return self.index.size(0)


def _morton(q: Tensor, bits: int) -> Tensor:
    key = torch.zeros(q.size(0), dtype=torch.long, device=q.device)
    dim = q.size(1)
    for b in range(bits):
        for d in range(dim):
            key |= ((q[:, d] >> b) & 1) << (b * dim + d)
    return key


def build_tiles(pos: Tensor, batch: Tensor, num_graphs: int, tile_size: int) -> TileLayout:
    """Cuts each graph's points into Morton-ordered tiles of ``tile_size``."""
    device = pos.device
    n, dim = pos.shape
    p = pos.detach()
    counts = torch.bincount(batch, minlength=num_graphs)
    tiles_per_graph = (counts + tile_size - 1) // tile_size
    tile_ptr = torch.zeros(num_graphs + 1, dtype=torch.long, device=device)
    tile_ptr[1:] = torch.cumsum(tiles_per_graph, 0)
    nt = int(tile_ptr[-1])
    graph = torch.repeat_interleave(torch.arange(num_graphs, device=device), tiles_per_graph)
    if n == 0:
        empty = torch.empty(0, tile_size, dtype=torch.long, device=device)
        box = torch.empty(0, dim, dtype=pos.dtype, device=device)
        return TileLayout(empty, empty, empty.bool(), graph, tile_ptr, box, box)

    # Quantise each graph into its own bounding cube, then sort by (graph, Morton key).
    bits = max(1, min(10, 60 // dim))
    idx = batch[:, None].expand(-1, dim)
    lo = torch.full((num_graphs, dim), float("inf"), dtype=p.dtype, device=device)
    lo = lo.scatter_reduce(0, idx, p, "amin")
    hi = torch.full((num_graphs, dim), float("-inf"), dtype=p.dtype, device=device)
    hi = hi.scatter_reduce(0, idx, p, "amax")
    extent = (hi - lo).amax(1).clamp_min(torch.finfo(p.dtype).tiny)
    levels = (1 << bits) - 1
    q = ((p - lo[batch]) / extent[batch, None] * levels).long().clamp_(0, levels)
    key = (batch << (bits * dim)) | _morton(q, bits)
    perm = torch.sort(key).indices
    ptr = tile_ptr.new_zeros(num_graphs + 1)
    ptr[1:] = torch.cumsum(counts, 0)
    sorted_batch = batch[perm]
    rank = torch.arange(n, device=device) - ptr[sorted_batch]
    tile = tile_ptr[sorted_batch] + torch.div(rank, tile_size, rounding_mode="floor")
    slot = rank % tile_size

    index = torch.full((nt, tile_size), -1, dtype=torch.long, device=device)
    index[tile, slot] = perm
    valid = index >= 0
    gather = torch.where(valid, index, index[:, :1])
    tp = p[gather]
    bmin, bmax = tp.amin(1), tp.amax(1)
    return TileLayout(index, gather, valid, graph, tile_ptr, (bmin + bmax) / 2, (bmax - bmin) / 2)


def _enumerate_pairs(a: TileLayout, b: TileLayout, symmetric: bool) -> Tuple[Tensor, Tensor]:
    device = a.index.device
    na = a.tile_ptr[1:] - a.tile_ptr[:-1]
    nb = b.tile_ptr[1:] - b.tile_ptr[:-1]
    per_graph = na * nb
    total = int(per_graph.sum())
    g = torch.repeat_interleave(torch.arange(na.numel(), device=device), per_graph)
    first = torch.cumsum(per_graph, 0) - per_graph
    local = torch.arange(total, device=device) - first[g]
    ia = a.tile_ptr[g] + torch.div(local, nb[g], rounding_mode="floor")
    ib = b.tile_ptr[g] + local % nb[g]
    if symmetric:
        keep = ia <= ib
        ia, ib = ia[keep], ib[keep]
    return ia, ib


def _box_gap2(a: TileLayout, b: TileLayout, ia: Tensor, ib: Tensor) -> Tensor:
    gap = ((a.center[ia] - b.center[ib]).abs() - a.half[ia] - b.half[ib]).clamp_min(0)
    return gap.pow(2).sum(1)


def tile_pairs(a: TileLayout, b: TileLayout, r: Optional[float],
               symmetric: bool) -> Tuple[Tensor, Tensor]:
    """Tile pairs ``(ia, ib)`` of the same graph whose boxes lie within ``r``
    (all same-graph pairs when ``r`` is None); ``ia <= ib`` when symmetric."""
    device = a.index.device
    na = a.tile_ptr[1:] - a.tile_ptr[:-1]
    nb = b.tile_ptr[1:] - b.tile_ptr[:-1]
    total = int((na * nb).sum())
    if r is None or total <= _ENUMERATE_LIMIT:
        ia, ib = _enumerate_pairs(a, b, symmetric)
    else:
        # Tiles whose centres are further apart than r plus both half diagonals
        # cannot interact; find the rest with the grid search on centres.
        reach = float(a.half.norm(dim=1).max()) + float(b.half.norm(dim=1).max())
        ia, ib = grid_radius(a.center, b.center, r + reach, a.graph, b.graph,
                             int(na.numel()))
        if symmetric:
            keep = ia <= ib
            ia, ib = ia[keep], ib[keep]
    if r is not None and ia.numel() > 0:
        # Slack for rounding in the box arithmetic; the per-pair test is exact.
        scale = float((a.center.abs() + a.half).max()) + float((b.center.abs() + b.half).max())
        tol = r + 16 * torch.finfo(a.center.dtype).eps * scale
        keep = _box_gap2(a, b, ia, ib) <= tol * tol
        ia, ib = ia[keep], ib[keep]
    if ia.numel() == 0:
        return ia.to(device), ib.to(device)
    return ia, ib
