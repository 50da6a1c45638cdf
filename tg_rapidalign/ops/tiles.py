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

from .grid import grid_radius

# Tile pairs enumerated exhaustively below this count; above it, candidate
# tiles are found with a grid search on the tile centres.
_ENUMERATE_LIMIT = 1 << 22
# Relative slack on the radius for float64 rounding in box distances.
_REL_SLACK = 1e-12


@dataclass
class TileLayout:
    index: Tensor   # [nt, T] original point index; -1 marks a padding slot
    gather: Tensor  # [nt, T] index with padding replaced by the tile's first point
    valid: Tensor   # [nt, T] bool
    graph: Tensor   # [nt] graph id of each tile
    tile_ptr: Tensor  # [B + 1] first tile of each graph
    center: Tensor  # [nt, D] bounding-box centre (input dtype, rounded)
    half: Tensor    # [nt, D] bounding-box half extent (input dtype, rounded)
    lo: Tensor      # [nt, D] bounding-box corners, float64: exact (the extreme
    hi: Tensor      #         coordinates themselves), whatever the offset

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
        box64 = box.to(torch.float64)
        return TileLayout(empty, empty, empty.bool(), graph, tile_ptr, box, box, box64, box64)

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
    return TileLayout(index, gather, valid, graph, tile_ptr, (bmin + bmax) / 2, (bmax - bmin) / 2,
                      bmin.to(torch.float64), bmax.to(torch.float64))


def _centre_half(layout: TileLayout) -> Tuple[Tensor, Tensor]:
    """Float64 box centres and half extents (exact for float32 and half inputs)."""
    return (layout.lo + layout.hi) * 0.5, (layout.hi - layout.lo) * 0.5


def _graph_partners(a: TileLayout, b: TileLayout, rows: Tensor) -> Tuple[Tensor, Tensor]:
    """``(i, j)`` for each tile ``i`` in ``rows`` of ``a`` and every tile ``j`` of
    its graph in ``b``, row by row."""
    g = a.graph[rows]
    counts = b.tile_ptr[g + 1] - b.tile_ptr[g]
    ia = torch.repeat_interleave(rows, counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(ia.numel(), device=ia.device) - torch.repeat_interleave(first, counts)
    return ia, b.tile_ptr[a.graph[ia]] + local


def _enumerate_pairs(a: TileLayout, b: TileLayout, symmetric: bool) -> Tuple[Tensor, Tensor]:
    ia, ib = _graph_partners(a, b, torch.arange(a.num_tiles, device=a.index.device))
    if symmetric:
        keep = ia <= ib
        ia, ib = ia[keep], ib[keep]
    return ia, ib


def _box_gap2(a: TileLayout, b: TileLayout, ia: Tensor, ib: Tensor) -> Tensor:
    """Squared distance between the boxes of tiles ``ia`` of ``a`` and ``ib`` of
    ``b``, in float64 from the exact corners: each coordinate's gap is one
    correctly rounded subtraction, so the result is within a relative 1e-15 of
    the true box distance however far the tiles lie from the origin. One
    coordinate at a time, to bound the transient memory of long candidate lists."""
    out = torch.zeros(ia.numel(), dtype=torch.float64, device=ia.device)
    for k in range(a.lo.size(1)):
        gap = b.lo[:, k][ib] - a.hi[:, k][ia]
        torch.maximum(gap, a.lo[:, k][ia] - b.hi[:, k][ib], out=gap).clamp_min_(0)
        out.addcmul_(gap, gap)
    return out


def _searched_pairs(a: TileLayout, b: TileLayout, tol: float) -> Tuple[Tensor, Tensor]:
    """Candidate tile pairs for large layouts, in both orders when ``a is b``.

    Tiles whose centres are further apart than ``tol`` plus both half diagonals
    cannot interact. A few tiles straddle a jump of the Morton curve and span
    much of their graph, so a search radius padded by the widest tile would make
    nearly every tile a candidate (488M pairs for 1M uniform points). The compact
    tiles (half diagonal up to the 90th percentile) are paired by the grid search
    on centres; each wider tile is scanned against its graph's tiles in chunks,
    keeping only boxes within ``tol``."""
    ca, ha = _centre_half(a)
    cb, hb = (ca, ha) if b is a else _centre_half(b)
    ha, hb = ha.norm(dim=1), hb.norm(dim=1)
    # The grid search runs in the input dtype (its candidate lists dominate the
    # memory) on centres relative to a common origin, so that their rounding is
    # relative to the extent of the boxes, not to their distance from the origin;
    # the slack covers that rounding and the search's own.
    origin = torch.minimum(a.lo.amin(0), b.lo.amin(0))
    ca, cb = (ca - origin).to(a.center.dtype), (cb - origin).to(a.center.dtype)
    extent = max(float(ca.abs().max()), float(cb.abs().max()), float(ha.max()), float(hb.max()))
    slack = 8 * torch.finfo(a.center.dtype).eps * extent
    cap_a, cap_b = _quantile(ha, 0.9), _quantile(hb, 0.9)
    wide_a, wide_b = ha > cap_a, hb > cap_b
    num_graphs = a.tile_ptr.numel() - 1
    compact_a = torch.nonzero(~wide_a).flatten()
    compact_b = torch.nonzero(~wide_b).flatten()
    ia, ib = grid_radius(ca[compact_a], cb[compact_b], tol + cap_a + cap_b + slack,
                         a.graph[compact_a], b.graph[compact_b], num_graphs)
    parts_a, parts_b = [compact_a[ia]], [compact_b[ib]]
    # Wide a-tiles against every b-tile, then compact a-tiles against wide b-tiles.
    for ja, jb in _scan(a, b, torch.nonzero(wide_a).flatten(), None, tol):
        parts_a.append(ja)
        parts_b.append(jb)
    for jb, ja in _scan(b, a, torch.nonzero(wide_b).flatten(), ~wide_a, tol):
        parts_a.append(ja)
        parts_b.append(jb)
    return torch.cat(parts_a), torch.cat(parts_b)


def _quantile(values: Tensor, q: float) -> float:
    if values.numel() == 0:
        return 0.0
    k = min(values.numel(), max(1, int(round(q * values.numel()))))
    return float(values.kthvalue(k).values)


def _scan(a: TileLayout, b: TileLayout, rows: Tensor, keep_b: Optional[Tensor], tol: float):
    """``(i, j)`` for each tile ``i`` in ``rows`` of ``a`` and every tile ``j`` of
    its graph in ``b`` (those with ``keep_b``) whose boxes lie within ``tol``; in
    chunks of about ``_ENUMERATE_LIMIT`` candidates."""
    if rows.numel() == 0:
        return
    g = a.graph[rows]
    ends = torch.cumsum(b.tile_ptr[g + 1] - b.tile_ptr[g], 0)
    start = 0
    while start < rows.numel():
        done = int(ends[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(ends, done + _ENUMERATE_LIMIT, right=True))
        stop = max(stop, start + 1)
        ia, ib = _graph_partners(a, b, rows[start:stop])
        keep = _box_gap2(a, b, ia, ib) <= tol * tol
        if keep_b is not None:
            keep &= keep_b[ib]
        yield ia[keep], ib[keep]
        start = stop


def tile_pairs(a: TileLayout, b: TileLayout, r: Optional[float],
               symmetric: bool) -> Tuple[Tensor, Tensor]:
    """Tile pairs ``(ia, ib)`` of the same graph whose boxes lie within ``r``
    (all same-graph pairs when ``r`` is None); ``ia <= ib`` when symmetric."""
    device = a.index.device
    na = a.tile_ptr[1:] - a.tile_ptr[:-1]
    nb = b.tile_ptr[1:] - b.tile_ptr[:-1]
    total = int((na * nb).sum())
    # Slack for the float64 rounding of box distances (relative: the boxes are
    # exact, so no slack grows with the distance from the origin).
    tol = None if r is None else r * (1 + _REL_SLACK)
    if r is None or total <= _ENUMERATE_LIMIT:
        ia, ib = _enumerate_pairs(a, b, symmetric)
    else:
        ia, ib = _searched_pairs(a, b, tol)
        if symmetric:
            keep = ia <= ib
            ia, ib = ia[keep], ib[keep]
    if r is not None and ia.numel() > 0:
        keep = _box_gap2(a, b, ia, ib) <= tol * tol
        ia, ib = ia[keep], ib[keep]
    if ia.numel() == 0:
        return ia.to(device), ib.to(device)
    return ia, ib
