"""Gathering samples across ``torch.distributed`` ranks with gradients, so that
a loss over all ranks' samples gives the single-process value and, after DDP's
gradient averaging, the single-process gradients."""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group of more than one rank is initialised."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def all_gather_cat(t: Tensor) -> Tensor:
    """Concatenation of ``t`` from every rank in rank order (rows may differ in
    number between ranks). Differentiable: the backward sums each rank's
    gradient for this rank's rows, which is what DDP's averaging expects when
    every rank evaluates the same loss over the gathered samples."""
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    world = dist.get_world_size()
    size = torch.tensor([t.size(0)], device=t.device)
    sizes: List[Tensor] = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(int(s) for s in sizes))
    padded = torch.nn.functional.pad(t, [0, 0] * (t.dim() - 1) + [0, longest - t.size(0)])
    parts = all_gather(padded) if t.requires_grad else _gather_plain(padded, world)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)])


def _gather_plain(t: Tensor, world: int) -> List[Tensor]:
    parts = [torch.empty_like(t) for _ in range(world)]
    torch.distributed.all_gather(parts, t.contiguous())
    return parts
