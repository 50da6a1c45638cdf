r"""Node weights: uniform, degree-based or given, normalised per graph.

A graph's weights are rescaled to sum to one,

.. math::
    \hat{w}_i = \frac{w_i}{\sum_{j \in g(i)} w_j},

and a graph whose weights are all zero (or that has no nodes) is a measure of
zero mass: its normalised weights are all zero, and every kernel sum that
involves it is zero. Normalisation is differentiable in ``w``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch_geometric.utils import degree

from ._validation import check_positive_scalar
from .segments import graph_sizes, graph_sum


def uniform_weights(batch: Tensor, num_graphs: int, dtype=torch.float32) -> Tensor:
    """``1 / n_g`` for every node of graph ``g``.

    Args:
        batch (torch.Tensor): Sorted graph ids :math:`[N]`.
        num_graphs (int): The number of graphs :math:`B`.
        dtype (torch.dtype, optional): The result's dtype. (default: :obj:`torch.float32`)

    Returns:
        torch.Tensor: :math:`[N]`, summing to one per non-empty graph.
    """
    counts = graph_sizes(batch, num_graphs).to(dtype)
    return 1.0 / counts.clamp_min(1)[batch]


def degree_weights(edge_index: Tensor, num_nodes: int, dtype=torch.float32) -> Tensor:
    """Node degree plus one (a self-loop, as in GCN), so isolated nodes keep a weight.

    The result is not normalised: pass it to :func:`normalize_weights` (the
    losses do so themselves when given ``weight="degree"``).

    Args:
        edge_index (torch.Tensor): Edges :math:`[2, E]`; the degree counts
            the edges that end at each node (row 1: for an undirected graph
            stored in both directions, the usual degree).
        num_nodes (int): The number of nodes :math:`N`.
        dtype (torch.dtype, optional): The result's dtype. (default: :obj:`torch.float32`)

    Returns:
        torch.Tensor: :math:`[N]`, at least 1 per node.
    """
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
    return degree(edge_index[1], num_nodes, dtype=dtype) + 1.0


def normalize_weights(weight: Optional[Tensor], batch: Tensor, num_graphs: int,
                      dtype=torch.float32, max_ratio: Optional[float] = None) -> Tensor:
    r"""Normalises non-negative node weights to sum one per graph.

    Args:
        weight (torch.Tensor, optional): :math:`[N]` non-negative weights;
            :obj:`None` means uniform.
        batch (torch.Tensor): :math:`[N]` sorted graph ids.
        num_graphs (int): The number of graphs :math:`B`.
        max_ratio (float, optional): If set (at least 1), no node may weigh more
            than :obj:`max_ratio` times the uniform weight :math:`1/n_g`. The
            excess of the capped nodes is shared among the others in proportion
            to their weights (water-filling), so the result still sums to one and
            keeps the order of the weights. :obj:`None` disables clamping.
            (default: :obj:`None`)

    Returns:
        torch.Tensor: :math:`[N]`; graphs of zero total weight get zeros.
    """
    if weight is None:
        return uniform_weights(batch, num_graphs, dtype)
    weight = _normalise(weight, batch, num_graphs)
    if max_ratio is not None:
        max_ratio = check_positive_scalar(max_ratio, "max_ratio")
        if max_ratio < 1:
            raise ValueError(f"max_ratio must be at least 1, got {max_ratio}")
        weight = _cap(weight, batch, num_graphs, max_ratio)
    return weight


def _cap(w: Tensor, batch: Tensor, num_graphs: int, ratio: float) -> Tensor:
    """Water-filling: the k heaviest nodes of a graph are set to the cap, the rest
    rescaled to fill the remaining mass, with the smallest k for which the rest
    stay under the cap."""
    n = w.numel()
    if n == 0:
        return w
    counts = graph_sizes(batch, num_graphs)
    cap = ratio / counts.clamp_min(1).to(w.dtype)[batch]
    # Order nodes by (graph, weight descending).
    order = torch.sort(w.detach(), descending=True, stable=True).indices
    order = order[torch.sort(batch[order], stable=True).indices]
    ws, bs, cs = w[order], batch[order], cap[order]
    ptr = torch.zeros(num_graphs + 1, dtype=torch.long, device=w.device)
    ptr[1:] = torch.cumsum(counts, 0)
    rank = torch.arange(n, device=w.device) - ptr[bs]
    # Mass of the nodes from this rank on (suffix sum within the graph).
    total = graph_sum(w, batch, num_graphs)
    before = torch.cumsum(ws, 0) - ws  # exclusive prefix sum over all graphs
    suffix = total[bs] - (before - before[ptr[bs]])
    rest = 1 - rank.to(w.dtype) * cs
    ok = ws.detach() * rest.detach() <= cs * suffix.detach() * (1 + 1e-12)
    first_ok = torch.full((num_graphs,), n, dtype=torch.long, device=w.device)
    first_ok = first_ok.scatter_reduce(0, bs, torch.where(ok, rank, torch.full_like(rank, n)), "amin")
    k = first_ok[bs]
    clamped = rank < k
    k_rank = (ptr[bs] + k).clamp_max(n - 1)
    scale = (1 - k.to(w.dtype) * cs) / torch.where(suffix[k_rank] > 0, suffix[k_rank],
                                                   torch.ones_like(suffix))
    out_sorted = torch.where(clamped, cs, ws * scale)
    out = torch.empty_like(out_sorted)
    return out.scatter(0, order, out_sorted)


def _normalise(weight: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    total = graph_sum(weight, batch, num_graphs)
    # A zero-mass graph divides by one instead of zero: its weights stay zero.
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return weight / safe[batch]
