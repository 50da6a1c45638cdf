"""``radius_pairs``: exact, batched radius search with several backends."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import backends
from .._validation import (
    check_batch,
    check_choice,
    check_positions,
    check_positive_scalar,
    check_same_space,
    resolve_num_graphs,
)
from ..numerics import numeric_policy
from ..ops import native
from ..ops.grid import grid_radius, grid_radius_chunks

BACKENDS = backends.names("radius")
# Kept importable from here (the registry owns them).
has_torch_cluster = backends.has_torch_cluster
has_pyg_lib_radius = backends.has_pyg_lib_radius


def available_backends() -> tuple:
    """The radius-search backends usable in this environment (CPU, 3-D points)."""
    return backends.available("radius")


def _dense_radius(x, y, r, batch_x, batch_y):
    d2 = (x[:, None, :] - y[None, :, :]).pow(2).sum(-1)
    mask = (d2 <= r * r) & (batch_x[:, None] == batch_y[None, :])
    return mask.nonzero().t()


def _external_radius(fn, x, y, r, batch_x, batch_y, num_graphs):
    """torch_cluster / pyg-lib: query with a slightly larger radius, since their
    comparison may be strict, then filter exactly, so pairs at ``r`` are kept."""
    if x.size(0) == 0 or y.size(0) == 0:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    cap = max(x.size(0), 1)
    r_query = r * (1.0 + 1e-6) + 1e-30
    # Both libraries return [2, E] with row 0 indexing y and row 1 indexing x.
    out = fn(x, y, r_query, batch_x, batch_y, cap, num_graphs)
    j, i = out[0], out[1]
    d2 = (x[i] - y[j]).pow(2).sum(1)
    keep = d2 <= r * r
    return torch.stack([i[keep], j[keep]], 0)


def _torch_cluster(x, y, r, batch_x, batch_y, cap, num_graphs):
    import torch_cluster
    return torch_cluster.radius(x, y, r, batch_x, batch_y, max_num_neighbors=cap)


def _pyg_lib(x, y, r, batch_x, batch_y, cap, num_graphs):
    from torch_geometric.nn.pool import radius
    return radius(x, y, r, batch_x, batch_y, max_num_neighbors=cap, batch_size=num_graphs)


@numeric_policy
def radius_pairs(x: Tensor, y: Tensor, r: float, batch_x: Optional[Tensor] = None,
                 batch_y: Optional[Tensor] = None, *, backend: str = "auto",
                 num_graphs: Optional[int] = None) -> Tensor:
    r"""Finds every pair of points within distance :obj:`r` of each other that
    belong to the same graph:

    .. math::
        \mathcal{E} = \{(i, j) : \lVert \mathbf{x}_i - \mathbf{y}_j \rVert \le r,\;
        b^x_i = b^y_j\}.

    The search is exact: no neighbor is ever dropped (there is no
    ``max_num_neighbors`` cap), and distances exactly equal to :obj:`r` are
    included (the test is ``||x_i - y_j||^2 <= r^2`` in the input dtype).

    Args:
        x (torch.Tensor): Points :math:`[N, D]`.
        y (torch.Tensor): Points :math:`[M, D]`.
        r (float): The radius, positive.
        batch_x (torch.Tensor, optional): Sorted graph ids of :obj:`x`, :math:`[N]`.
            (default: :obj:`None`, one graph)
        batch_y (torch.Tensor, optional): Sorted graph ids of :obj:`y`, :math:`[M]`.
            (default: :obj:`None`)
        backend (str, optional): :obj:`"dense"` (all pairs, for small inputs),
            :obj:`"grid"` (pure-torch cell list, O(N + M + E) memory),
            :obj:`"native"` (the C++/CUDA grid kernel, 3-D points),
            :obj:`"torch_cluster"` or :obj:`"pyg_lib"` (when installed), or
            :obj:`"auto"` for the fastest available. (default: :obj:`"auto"`)
        num_graphs (int, optional): The number of graphs, when trailing graphs
            of one side are empty. (default: :obj:`None`)

    Returns:
        torch.LongTensor: :math:`[2, E]`, row 0 indexing :obj:`x` and row 1
        indexing :obj:`y`. Pair order is unspecified.
    """
    check_positions(x, "x")
    check_positions(y, "y")
    check_same_space(x, y)
    r = check_positive_scalar(r, "r")
    check_choice(backend, "backend", BACKENDS)
    batch_x = check_batch(batch_x, x.size(0), "batch_x", x.device)
    batch_y = check_batch(batch_y, y.size(0), "batch_y", y.device)
    num_graphs = resolve_num_graphs(batch_x, batch_y, num_graphs)
    backend = backends.select("radius", backend, backends.Problem.of(x, pairs=x.size(0) * y.size(0)))
    x, y = x.detach(), y.detach()
    if backend == "dense":
        return _dense_radius(x, y, r, batch_x, batch_y)
    if backend == "grid":
        return grid_radius(x, y, r, batch_x, batch_y, num_graphs)
    if backend == "native":
        return native.radius_pairs(x, y, r, batch_x, batch_y, num_graphs)
    fn = _torch_cluster if backend == "torch_cluster" else _pyg_lib
    return _external_radius(fn, x, y, r, batch_x, batch_y, num_graphs)


def radius_pair_chunks(x: Tensor, y: Tensor, r: float, batch_x: Tensor, batch_y: Tensor,
                       num_graphs: int, backend: str = "auto"):
    """The pairs of :func:`radius_pairs` as ``(i, j)`` chunks of whole rows of ``x``
    (the grid backend streams them; the others give one chunk), for
    consumers that reduce pairs as they come. ``"auto"`` is the streaming grid:
    a consumer of chunks wants bounded memory. Inputs are assumed valid."""
    if backend == "auto":
        backend = "grid"
    if backend == "grid":
        yield from grid_radius_chunks(x.detach(), y.detach(), r, batch_x, batch_y, num_graphs)
        return
    i, j = radius_pairs(x, y, r, batch_x, batch_y, backend=backend, num_graphs=num_graphs)
    yield i, j
