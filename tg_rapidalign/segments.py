"""Per-graph reductions over a packed batch.

``index_add`` over one output row per graph serialises its atomic adds when a
batch holds few large graphs (one 1M-point cloud: 1M adds to one address, about
2 ms on an H100); a single graph is a plain (tree) reduction instead.
"""
from __future__ import annotations

import torch
from torch import Tensor


def graph_sum(values: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """``out[g] = sum_{i: batch[i] = g} values[i]``, shape ``[num_graphs, ...]``."""
    if num_graphs == 1:
        return values.sum(0, keepdim=True)
    return values.new_zeros((num_graphs,) + values.shape[1:]).index_add(0, batch, values)


def graph_sizes(batch: Tensor, num_graphs: int) -> Tensor:
    """Nodes per graph ``[num_graphs]`` (int64)."""
    if num_graphs == 1:
        return torch.full((1,), batch.numel(), dtype=torch.long, device=batch.device)
    # A scatter into [num_graphs] rather than bincount, whose output size depends
    # on the largest id (a data-dependent shape under torch.compile).
    ones = torch.ones_like(batch)
    return torch.zeros(num_graphs, dtype=torch.long, device=batch.device).index_add_(0, batch, ones)
