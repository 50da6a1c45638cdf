"""Exact radius search on a uniform cell grid, in plain torch.

Points of ``y`` are hashed into cubic cells of side ``h >= r`` and sorted by
(graph, cell) key; each query point of ``x`` looks up the ranges of its own
and its 3^D - 1 neighboring cells with ``searchsorted``. Candidate pairs are
generated and distance-filtered in chunks, so memory stays O(N + M + E).
"""
from __future__ import annotations

import itertools
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

# Candidate pairs held at once while filtering; bounds the transient memory.
_CHUNK_CANDIDATES = 1 << 23


def _cell_coords(x: Tensor, y: Tensor, r: float, num_graphs: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Integer cell coordinates (shifted by one, so neighbors never go negative)
    and the per-axis grid size. The cell side grows past ``r`` only when the
    packed (graph, cell) key would overflow int64."""
    both = torch.cat([x, y], 0)
    lo = both.min(0).values
    extent = float((both.max(0).values - lo).max())
    dim = x.size(1)
    # Keep num_graphs * (cells per axis)^dim below 2^62.
    max_cells = int((2.0 ** 62 / max(num_graphs, 1)) ** (1.0 / dim)) - 3
    max_cells = max(1, min(max_cells, 1 << 20))
    h = max(r, extent / max_cells) if extent > 0 else max(r, 1.0)
    cx = torch.floor((x - lo) / h).long() + 1
    cy = torch.floor((y - lo) / h).long() + 1
    size = torch.maximum(cx.max(0).values if cx.numel() else torch.ones_like(lo, dtype=torch.long),
                         cy.max(0).values if cy.numel() else torch.ones_like(lo, dtype=torch.long)) + 2
    return cx, cy, size


def _pack(batch: Tensor, cells: Tensor, size: Tensor) -> Tensor:
    key = batch.clone()
    for d in range(cells.size(1)):
        key = key * size[d] + cells[:, d]
    return key


def grid_radius(x: Tensor, y: Tensor, r: float, batch_x: Tensor, batch_y: Tensor,
                num_graphs: int) -> Tensor:
    """All pairs ``(i, j)`` with ``||x_i - y_j|| <= r`` in the same graph."""
    chunks = list(grid_radius_chunks(x, y, r, batch_x, batch_y, num_graphs))
    if not chunks:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    return torch.stack([torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])], 0)


def grid_radius_chunks(x: Tensor, y: Tensor, r: float, batch_x: Tensor, batch_y: Tensor,
                       num_graphs: int, chunk: Optional[int] = None) -> Iterator[Tuple[Tensor, Tensor]]:
    """The pairs of :func:`grid_radius` as ``(i, j)`` chunks of whole rows of
    ``x`` (all pairs of a row in one chunk; about ``chunk`` candidates each), so
    that a consumer that reduces them never holds every pair at once."""
    device = x.device
    chunk = chunk or _CHUNK_CANDIDATES
    if x.size(0) == 0 or y.size(0) == 0:
        return
    dim = x.size(1)
    cx, cy, size = _cell_coords(x, y, r, num_graphs)
    key_y, perm = torch.sort(_pack(batch_y, cy, size))

    offsets = torch.tensor(list(itertools.product((-1, 0, 1), repeat=dim)),
                           dtype=torch.long, device=device)
    # Query keys of every (point, neighbor cell): [N, 3^dim]
    query = _pack(batch_x[:, None].expand(-1, offsets.size(0)).reshape(-1),
                  (cx[:, None, :] + offsets[None]).reshape(-1, dim), size)
    start = torch.searchsorted(key_y, query, right=False)
    count = torch.searchsorted(key_y, query, right=True) - start
    count = count.view(x.size(0), -1)
    start = start.view(x.size(0), -1)

    per_point = count.sum(1)
    r2 = r * r
    # Split the queries so that each chunk generates a bounded number of candidates.
    cum = torch.cumsum(per_point, 0)
    total = int(cum[-1])
    if total == 0:
        return
    marks = torch.arange(chunk, max(total, chunk), chunk, device=device)
    bounds = torch.searchsorted(cum, marks)
    edges = [0] + [int(b) + 1 for b in bounds.tolist()] + [x.size(0)]
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi <= lo:
            continue
        c = count[lo:hi].reshape(-1)
        s = start[lo:hi].reshape(-1)
        n_cand = int(c.sum())
        if n_cand == 0:
            continue
        # Expand each (point, cell) range into candidate pairs.
        seg = torch.repeat_interleave(torch.arange(c.numel(), device=device), c)
        first = torch.cumsum(c, 0) - c
        j = perm[s[seg] + (torch.arange(n_cand, device=device) - first[seg])]
        i = seg // offsets.size(0) + lo
        keep = (x[i] - y[j]).pow(2).sum(1) <= r2
        yield i[keep], j[keep]
