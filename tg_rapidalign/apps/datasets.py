"""Built-in point-cloud data (generated, no download)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch_geometric.data import Batch, Data

from ..extras import require


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


#: Names of the graphs of :func:`shape_batch`, in order.
SHAPE_NAMES = ("helix, 3 turns", "(2, 3) torus knot", "helix, 2 turns")


def shape_batch() -> Batch:
    """A small batch of the built-in shapes (named in :data:`SHAPE_NAMES`)."""
    return Batch.from_data_list([helix(150), torus_knot(180), helix(120, turns=2.0, radius=0.6)])


def _bonds(pos: torch.Tensor, numbers: torch.Tensor, tolerance: float = 1.2) -> torch.Tensor:
    """Undirected bonds where the distance is below ``tolerance`` times the sum of covalent radii."""
    covalent_radii = require("ase.data", "bonds from covalent radii").covalent_radii
    radii = torch.as_tensor(covalent_radii, dtype=torch.float64)[numbers]
    d = (pos[:, None] - pos[None]).norm(dim=-1)
    adj = (d < tolerance * (radii[:, None] + radii[None])) & ~torch.eye(len(pos), dtype=torch.bool)
    return adj.nonzero().t().contiguous()


def molecule_data(positions, numbers, name: str = "") -> Data:
    """A molecule as ``Data(pos [N, 3], z [N], edge_index)`` (bonds from covalent radii)."""
    pos = torch.as_tensor(positions, dtype=torch.float64)
    z = torch.as_tensor(numbers, dtype=torch.long)
    return Data(pos=pos, z=z, edge_index=_bonds(pos, z), name=name)


def g2_molecules(min_atoms: int = 5) -> list:
    """The G2 molecules shipped with ASE (3-D structures, no download), with at
    least ``min_atoms`` atoms, as :func:`molecule_data` graphs."""
    g2 = require("ase.collections", "the built-in G2 molecules").g2
    out = []
    for name in g2.names:
        atoms = g2[name]
        if len(atoms) >= min_atoms:
            out.append(molecule_data(atoms.get_positions(), atoms.get_atomic_numbers(), name))
    return out


def read_structures(path: str) -> list:
    """Structures from ``.xyz`` / ``.sdf`` (any file ASE reads; every frame) or
    ``.npz`` (arrays ``pos [N, 3]`` and ``batch [N]``, optional ``z [N]``)."""
    import numpy as np

    if path.endswith(".npz"):
        arrays = np.load(path, allow_pickle=False)
        if "pos" not in arrays or "batch" not in arrays:
            raise ValueError(f"{path}: an .npz file needs the arrays 'pos' [N, 3] and 'batch' [N]")
        pos, batch = torch.as_tensor(arrays["pos"], dtype=torch.float64), torch.as_tensor(arrays["batch"])
        z = torch.as_tensor(arrays["z"]) if "z" in arrays else torch.full((len(pos),), 6)
        if pos.dim() != 2 or pos.size(1) != 3 or batch.shape != (len(pos),):
            raise ValueError(f"{path}: pos must be [N, 3] and batch [N]")
        return [molecule_data(pos[batch == g], z[batch == g], f"graph {int(g)}") for g in batch.unique()]
    read = require("ase.io", f"reading {path} (.xyz, .sdf, ...)").read
    frames = read(path, index=":")
    return [molecule_data(a.get_positions(), a.get_atomic_numbers(), f"{path}:{i}")
            for i, a in enumerate(frames)]
