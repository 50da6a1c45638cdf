r"""A small E(3)-equivariant message-passing network (EGNN-style, Satorras et
al. 2021) that maps node types and positions to new positions, used by the
molecule denoiser."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.nn import Embedding, Linear, Sequential, SiLU
from torch_geometric.nn import MessagePassing

from ...neighbors.radius import radius_pairs


def radius_graph(pos: Tensor, r: float, batch: Optional[Tensor] = None, num_graphs: Optional[int] = None,
                 backend: str = "auto") -> Tensor:
    """Directed edges ``[2, E]`` (source, target) between distinct nodes of the
    same graph within distance :obj:`r`, from :func:`~tg_rapidalign.radius_pairs`
    (no torch-cluster or pyg-lib needed)."""
    pairs = radius_pairs(pos, pos, r, batch, batch, backend=backend, num_graphs=num_graphs)
    return pairs[:, pairs[0] != pairs[1]]


class GaussianDistances(torch.nn.Module):
    """Distances expanded on ``num`` Gaussians evenly spaced on ``[0, cutoff]``."""

    def __init__(self, num: int, cutoff: float):
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, cutoff, num))
        self.gamma = 0.5 / (cutoff / max(num - 1, 1)) ** 2

    def forward(self, d: Tensor) -> Tensor:
        return torch.exp(-self.gamma * (d - self.centers.to(d.dtype)) ** 2)


class EquivariantConv(MessagePassing):
    r"""One E(3)-equivariant layer on (invariant features, positions):

    .. math::
        \mathbf{m}_{ij} &= \phi_e(\mathbf{h}_i, \mathbf{h}_j,
            \rho(\lVert \mathbf{x}_i - \mathbf{x}_j \rVert)),\\
        \mathbf{x}_i' &= \mathbf{x}_i + \frac{1}{|\mathcal{N}(i)|} \sum_{j \in \mathcal{N}(i)}
            \frac{\mathbf{x}_i - \mathbf{x}_j}{1 + \lVert \mathbf{x}_i - \mathbf{x}_j \rVert}\,
            \phi_x(\mathbf{m}_{ij}),\\
        \mathbf{h}_i' &= \mathbf{h}_i + \phi_h\Big(\mathbf{h}_i, \frac{1}{|\mathcal{N}(i)|}
            \sum_{j \in \mathcal{N}(i)} \mathbf{m}_{ij}\Big),

    with :math:`\rho` a Gaussian distance expansion. Rotating, reflecting or
    translating the input positions does the same to the output positions and
    leaves :math:`\mathbf{h}'` unchanged.

    Args:
        hidden (int): Feature width.
        num_distances (int, optional): Gaussians in the distance expansion. (default: :obj:`16`)
        cutoff (float, optional): Largest expanded distance. (default: :obj:`5.0`)
    """

    def __init__(self, hidden: int, num_distances: int = 16, cutoff: float = 5.0):
        super().__init__(aggr="mean")
        self.hidden = hidden
        self.distances = GaussianDistances(num_distances, cutoff)
        self.edge_mlp = Sequential(Linear(2 * hidden + num_distances, hidden), SiLU(),
                                   Linear(hidden, hidden), SiLU())
        self.coord_mlp = Sequential(Linear(hidden, hidden), SiLU(), Linear(hidden, 1))
        self.node_mlp = Sequential(Linear(2 * hidden, hidden), SiLU(), Linear(hidden, hidden))
        # Start close to the identity map on positions: small steps early in training.
        torch.nn.init.normal_(self.coord_mlp[-1].weight, std=1e-3)
        torch.nn.init.zeros_(self.coord_mlp[-1].bias)

    def forward(self, h: Tensor, pos: Tensor, edge_index: Tensor):
        out = self.propagate(edge_index, h=h, pos=pos, size=None)
        m, dx = out[:, :-3], out[:, -3:]
        return h + self.node_mlp(torch.cat([h, m], dim=-1)), pos + dx

    def message(self, h_i: Tensor, h_j: Tensor, pos_i: Tensor, pos_j: Tensor) -> Tensor:
        diff = pos_i - pos_j
        d = diff.norm(dim=-1, keepdim=True)
        m = self.edge_mlp(torch.cat([h_i, h_j, self.distances(d)], dim=-1))
        return torch.cat([m, diff / (1 + d) * self.coord_mlp(m)], dim=-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.hidden})"


class EquivariantDenoiser(torch.nn.Module):
    r"""Predicts clean positions from noisy ones and atom types: embeds the
    atomic numbers, builds the radius graph of the noisy positions and applies
    :obj:`num_layers` :class:`EquivariantConv` layers,
    :math:`\hat{X} = f(X + \varepsilon, z)`, E(3)-equivariant in the positions.

    Args:
        hidden (int, optional): Feature width. (default: :obj:`64`)
        num_layers (int, optional): Message-passing layers. (default: :obj:`4`)
        cutoff (float, optional): Radius of the graph, in the positions' units. (default: :obj:`5.0`)
        num_types (int, optional): Largest atomic number plus one. (default: :obj:`100`)
    """

    def __init__(self, hidden: int = 64, num_layers: int = 4, cutoff: float = 5.0, num_types: int = 100):
        super().__init__()
        self.cutoff = float(cutoff)
        self.embedding = Embedding(num_types, hidden)
        self.convs = torch.nn.ModuleList(EquivariantConv(hidden, cutoff=cutoff) for _ in range(num_layers))

    def forward(self, z: Tensor, pos: Tensor, batch: Optional[Tensor] = None,
                num_graphs: Optional[int] = None) -> Tensor:
        edge_index = radius_graph(pos.detach(), self.cutoff, batch, num_graphs)
        h = self.embedding(z)
        for conv in self.convs:
            h, pos = conv(h, pos, edge_index)
        return pos

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(hidden={self.embedding.embedding_dim}, "
                f"num_layers={len(self.convs)}, cutoff={self.cutoff:g})")
