"""Built-in point-cloud data (generated, no download)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch_geometric.data import Batch, Data


def helix(num_points: int = 200, turns: float = 3.0, radius: float = 1.0, pitch: float = 0.5,
          generator: Optional[torch.Generator] = None) -> Data:
    """A helix curve in 3-D, as a chain graph with ``pos``."""
    t = torch.linspace(0, 2 * math.pi * turns, num_points, dtype=torch.float64)
    pos = torch.stack([radius * torch.cos(t), radius * torch.sin(t), pitch * t / (2 * math.pi)], 1)
    src = torch.arange(num_points - 1)
    edge_index = torch.stack([torch.cat([src, src + 1]), torch.cat([src + 1, src])])
    return Data(pos=pos.float(), edge_index=edge_index)


def torus_knot(num_points: int = 200, p: int = 2, q: int = 3) -> Data:
    """A (p, q) torus knot, as a closed chain graph with ``pos``."""
    t = torch.linspace(0, 2 * math.pi, num_points + 1, dtype=torch.float64)[:-1]
    r = torch.cos(q * t) + 2
    pos = torch.stack([r * torch.cos(p * t), r * torch.sin(p * t), -torch.sin(q * t)], 1) / 3
    src = torch.arange(num_points)
    dst = (src + 1) % num_points
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    return Data(pos=pos.float(), edge_index=edge_index)


def shape_batch() -> Batch:
    """A small batch of the built-in shapes."""
    return Batch.from_data_list([helix(150), torus_knot(180), helix(120, turns=2.0, radius=0.6)])
