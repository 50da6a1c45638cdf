r"""Corruptions of a graph embedded in space, as PyG transforms, each at a level
:math:`\lambda` that it records on the output (``data.corruption`` and
``data.corruption_level``), for calibrating a kernel so that the loss grows
with :math:`\lambda`: a kernel loss fitted on such pairs should rank two
corrupted copies of a structure by their levels (see
:func:`tg_rapidalign.apps.calibration.calibrate_kernel`).

Randomness comes from a ``torch.Generator``: pass one (``generator=``), or an
integer ``seed`` (a private generator seeded once, so a sequence of calls is
reproducible), or neither (the global RNG). The input is never modified.
"""
from __future__ import annotations

import copy
import math
from typing import Optional, Union

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from .._validation import check_positions


def _check_level(level, name: str, upper: Optional[float] = None) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(level).__name__}")
    level = float(level)
    if not math.isfinite(level) or level < 0 or (upper is not None and level > upper):
        bound = f"[0, {upper:g}]" if upper is not None else "non-negative and finite"
        raise ValueError(f"{name} must be {bound}, got {level}")
    return level


def resolve_generator(seed: Optional[int], generator: Optional[torch.Generator]) -> Optional[torch.Generator]:
    """The random source of a transform: ``generator``, or a private generator
    seeded once with ``seed``, or ``None`` (the global RNG); not both."""
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        return torch.Generator().manual_seed(seed)
    return generator


def rms_radius(pos: Tensor) -> float:
    """Root-mean-square distance of the points to their centroid (1 for fewer than two points or 0)."""
    if pos.size(0) < 2:
        return 1.0
    r = float((pos - pos.mean(0)).pow(2).sum(1).mean().sqrt())
    return r if r > 0 else 1.0


class _Corruption(BaseTransform):
    kind = "corruption"

    def __init__(self, level: float, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None):
        self.generator = resolve_generator(seed, generator)

    def _randn(self, *shape, like: Tensor) -> Tensor:
        return torch.randn(*shape, generator=self.generator, dtype=like.dtype).to(like.device)

    def _rand(self, *shape) -> Tensor:
        return torch.rand(*shape, generator=self.generator, dtype=torch.float64)

    def forward(self, data: Data) -> Data:
        if getattr(data, "pos", None) is None:
            raise ValueError(f"{self.__class__.__name__} needs data.pos")
        check_positions(data.pos, "data.pos")
        out = copy.copy(data)
        out = self._corrupt(out)
        out.corruption = self.kind
        out.corruption_level = self.level
        return out


class GaussianNoise(_Corruption):
    r"""Adds :math:`\lambda L\, \varepsilon_i`, :math:`\varepsilon_i \sim N(0, I)`, to every
    position; :math:`L` is ``length`` or, by default, the graph's RMS radius.

    Args:
        level (float): :math:`\lambda \ge 0`.
        length (float, optional): the unit of the noise (default: the RMS radius).
        seed (int, optional): Seeds a private generator once. (default: :obj:`None`)
        generator (torch.Generator, optional): The random source (not together
            with :obj:`seed`). (default: :obj:`None`, the global RNG)
    """
    kind = "noise"

    def __init__(self, level: float, length: Optional[float] = None, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None):
        super().__init__(level, seed, generator)
        self.level = _check_level(level, "level")
        self.length = None if length is None else _check_level(length, "length")

    def _corrupt(self, data: Data) -> Data:
        unit = rms_radius(data.pos) if self.length is None else self.length
        data.pos = data.pos + (self.level * unit) * self._randn(*data.pos.shape, like=data.pos)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(level={self.level:g}, length={self.length})"


class NodeMasking(_Corruption):
    r"""Drops a random fraction :math:`\lambda` of the nodes (rounded; at least one
    node is kept), with their edges; node-level attributes are subset, edges relabelled.

    Args:
        level (float): the fraction :math:`\lambda \in [0, 1]` of nodes to drop.
        seed (int, optional): Seeds a private generator once. (default: :obj:`None`)
        generator (torch.Generator, optional): The random source (not together
            with :obj:`seed`). (default: :obj:`None`, the global RNG)
    """
    kind = "masking"

    def __init__(self, level: float, seed: Optional[int] = None, generator: Optional[torch.Generator] = None):
        super().__init__(level, seed, generator)
        self.level = _check_level(level, "level", upper=1.0)

    def _corrupt(self, data: Data) -> Data:
        n = data.num_nodes
        drop = min(int(round(self.level * n)), max(n - 1, 0))
        keep = torch.randperm(n, generator=self.generator)[: n - drop].sort().values.to(data.pos.device)
        mask = torch.zeros(n, dtype=torch.bool, device=data.pos.device)
        mask[keep] = True
        out = data.subgraph(mask) if data.edge_index is not None else _subset_nodes(data, mask)
        return out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(level={self.level:g})"


def _subset_nodes(data: Data, mask: Tensor) -> Data:
    n = data.num_nodes
    out = copy.copy(data)
    for key, value in data.items():
        if isinstance(value, Tensor) and value.dim() > 0 and value.size(0) == n and data.is_node_attr(key):
            out[key] = value[mask]
    return out


class RigidSubpartDisplacement(_Corruption):
    r"""Moves a connected sub-part rigidly: a breadth-first region of about half
    the nodes (grown over ``edge_index``; over the nearest neighbors when the
    graph has no edges) from a random seed node is rotated by the angle
    :math:`\lambda \pi / 2` about a random axis through its centroid and shifted by
    :math:`\lambda L / 2` in a random direction (:math:`L` as in :class:`GaussianNoise`).
    The part keeps its internal distances; the other nodes do not move.

    Args:
        level (float): :math:`\lambda \ge 0`.
        fraction (float, optional): share of the nodes in the moved part. (default: :obj:`0.5`)
        length (float, optional): the unit of the shift (default: the RMS radius).
        seed (int, optional): Seeds a private generator once. (default: :obj:`None`)
        generator (torch.Generator, optional): The random source (not together
            with :obj:`seed`). (default: :obj:`None`, the global RNG)
    """
    kind = "rigid_subpart"

    def __init__(self, level: float, fraction: float = 0.5, length: Optional[float] = None,
                 seed: Optional[int] = None, generator: Optional[torch.Generator] = None):
        super().__init__(level, seed, generator)
        self.level = _check_level(level, "level")
        self.fraction = _check_level(fraction, "fraction", upper=1.0)
        self.length = None if length is None else _check_level(length, "length")

    def part(self, data: Data) -> Tensor:
        """A boolean mask of the nodes to move (breadth-first from a random node)."""
        n = data.num_nodes
        size = max(1, int(round(self.fraction * n)))
        start = int(torch.randint(n, (1,), generator=self.generator))
        if data.edge_index is not None and data.edge_index.numel() > 0:
            neighbors = [[] for _ in range(n)]
            for i, j in data.edge_index.t().tolist():
                neighbors[i].append(j)
                neighbors[j].append(i)
            order, seen = [start], {start}
            head = 0
            while head < len(order) and len(order) < size:
                for j in neighbors[order[head]]:
                    if j not in seen:
                        seen.add(j)
                        order.append(j)
                head += 1
            chosen = torch.tensor(order[:size], device=data.pos.device)
        else:
            d = (data.pos - data.pos[start]).pow(2).sum(1)
            chosen = d.argsort()[:size]
        mask = torch.zeros(n, dtype=torch.bool, device=data.pos.device)
        mask[chosen] = True
        return mask

    def _corrupt(self, data: Data) -> Data:
        pos = data.pos
        if pos.size(0) == 0:
            return data
        mask = self.part(data)
        unit = rms_radius(pos) if self.length is None else self.length
        dim = pos.size(1)
        axis = self._randn(dim, like=pos)
        shift = self._randn(dim, like=pos)
        angle = self.level * math.pi / 2
        R = _rotation(axis, angle) if dim == 3 else _rotation_2d(angle, pos)
        moved = pos[mask]
        centre = moved.mean(0)
        offset = (self.level * unit / 2) * shift / shift.norm().clamp_min(1e-12)
        moved = (moved - centre) @ R.T + centre + offset
        data.pos = pos.clone()
        data.pos[mask] = moved
        data.moved_mask = mask
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(level={self.level:g}, fraction={self.fraction:g})"


def _rotation(axis: Tensor, angle: float) -> Tensor:
    a = axis / axis.norm().clamp_min(1e-12)
    K = torch.zeros(3, 3, dtype=axis.dtype, device=axis.device)
    K[0, 1], K[0, 2], K[1, 0], K[1, 2], K[2, 0], K[2, 1] = -a[2], a[1], a[2], -a[0], -a[1], a[0]
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    return eye + math.sin(angle) * K + (1 - math.cos(angle)) * (K @ K)


def _rotation_2d(angle: float, like: Tensor) -> Tensor:
    if like.size(1) != 2:  # 1-D or > 3-D: no rotation, only the shift
        return torch.eye(like.size(1), dtype=like.dtype, device=like.device)
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]], dtype=like.dtype, device=like.device)


Corruption = Union[GaussianNoise, NodeMasking, RigidSubpartDisplacement]
