"""Argument checks shared by every public op.

Each check raises a ``TypeError`` or ``ValueError`` whose message starts with
the argument's name, so a user sees at once which input is wrong.

Checks of shapes, dtypes and devices are free. Checks of values (finite
positions, sorted batch vectors, non-negative weights) read a tensor on the
host; inside a region traced by ``torch.compile`` they run as asynchronous
asserts instead (:func:`check_values`): same message, raised as a
``RuntimeError`` when the compiled code runs, and no graph break or host sync.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Optional, Tuple

import torch
from torch import Tensor


def compiling() -> bool:
    """Whether ``torch.compile`` (dynamo) is tracing the caller."""
    return torch.compiler.is_compiling()


def check_values(ok: Tensor, message: str, error: type = ValueError) -> None:
    """Raises ``error(message)`` unless the boolean tensor ``ok`` is true; while
    compiling, an asynchronous assert (no host sync, no graph break)."""
    if compiling():
        torch._assert_async(ok, message)
    elif not bool(ok):
        raise error(message)


def check_positions(pos: Tensor, name: str, dim: Optional[int] = None) -> Tensor:
    if not isinstance(pos, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(pos).__name__}")
    if not pos.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {pos.dtype}")
    if pos.dim() != 2:
        raise ValueError(f"{name} must have shape [N, D], got shape {tuple(pos.shape)}")
    if dim is not None and pos.size(1) != dim:
        raise ValueError(f"{name} must have {dim} columns, got shape {tuple(pos.shape)}")
    if pos.numel() > 0:
        check_values(torch.isfinite(pos).all(), f"{name} contains NaN or infinite values")
    return pos


def check_same_space(x: Tensor, y: Tensor, name_x: str = "x", name_y: str = "y") -> None:
    if x.size(1) != y.size(1):
        raise ValueError(
            f"{name_x} and {name_y} must have the same number of columns, got "
            f"{x.size(1)} and {y.size(1)}")
    if x.dtype != y.dtype:
        raise TypeError(f"{name_x} and {name_y} must have the same dtype, got {x.dtype} and {y.dtype}")
    if x.device != y.device:
        raise ValueError(f"{name_x} and {name_y} must be on the same device, got {x.device} and {y.device}")


def check_index_vector(index: Tensor, num_nodes: int, name: str, device, what: str,
                       or_none: bool = False) -> Tensor:
    """An int64 copy of a per-node id vector ``[num_nodes]`` of non-negative ``what``
    (graph ids, group ids) on ``device``."""
    if not isinstance(index, Tensor):
        expected = "a torch.Tensor or None" if or_none else "a torch.Tensor"
        raise TypeError(f"{name} must be {expected}, got {type(index).__name__}")
    if index.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must be an integer tensor, got dtype {index.dtype}")
    if index.dim() != 1 or index.numel() != num_nodes:
        raise ValueError(f"{name} must have shape [{num_nodes}], got shape {tuple(index.shape)}")
    if index.device != device:
        raise ValueError(f"{name} must be on device {device}, got {index.device}")
    index = index.long()
    if num_nodes > 0:
        check_values((index >= 0).all(), f"{name} must hold non-negative {what}")
    return index


def check_batch(batch: Optional[Tensor], num_nodes: int, name: str, device) -> Tensor:
    """Returns a sorted int64 batch vector (zeros when ``batch`` is None)."""
    if batch is None:
        return torch.zeros(num_nodes, dtype=torch.long, device=device)
    batch = check_index_vector(batch, num_nodes, name, device, "graph ids", or_none=True)
    if num_nodes > 1:
        check_values((batch[1:] >= batch[:-1]).all(),
                     f"{name} must be sorted (non-decreasing graph ids), as in a PyG Batch")
    return batch


def resolve_num_graphs(batch_x: Tensor, batch_y: Tensor, num_graphs: Optional[int],
                       name_x: str = "batch_x", name_y: str = "batch_y") -> int:
    """The number of graphs B shared by both sides.

    Without ``num_graphs``, both batch vectors must name the same last graph;
    trailing empty graphs can only be expressed through ``num_graphs``. Reading
    the last graph id is a host sync: a caller under ``torch.compile`` passes
    ``num_graphs`` (checked against the batch vectors by asynchronous asserts).
    """
    if num_graphs is not None:
        if isinstance(num_graphs, bool) or not isinstance(num_graphs, int) or num_graphs < 0:
            raise ValueError(f"num_graphs must be a non-negative int, got {num_graphs!r}")
        for batch, name in ((batch_x, name_x), (batch_y, name_y)):
            if batch.numel():
                # (no num_graphs in the message: it is symbolic while compiling)
                check_values(batch[-1] < num_graphs, f"{name} names a graph id >= num_graphs")
        return num_graphs
    bx = int(batch_x[-1]) + 1 if batch_x.numel() else 0
    by = int(batch_y[-1]) + 1 if batch_y.numel() else 0
    if bx != by and bx > 0 and by > 0:
        raise ValueError(
            f"{name_x} describes {bx} graphs but {name_y} describes {by}; "
            "pass num_graphs= if the trailing graphs of one side are empty")
    return max(bx, by, 1)


def check_weights(weight: Optional[Tensor], num_nodes: int, name: str, like: Tensor) -> Optional[Tensor]:
    if weight is None:
        return None
    if not isinstance(weight, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(weight).__name__}")
    if not weight.is_floating_point():
        weight = weight.to(like.dtype)
    if weight.dim() == 2 and weight.size(1) == 1:
        weight = weight.view(-1)
    if weight.dim() != 1 or weight.numel() != num_nodes:
        raise ValueError(f"{name} must have shape [{num_nodes}], got shape {tuple(weight.shape)}")
    if weight.numel() > 0:
        check_values(torch.isfinite(weight).all(), f"{name} contains NaN or infinite values")
        check_values((weight >= 0).all(), f"{name} must be non-negative")
    return weight.to(like.dtype)


def check_positive_scalar(value, name: str, allow_none: bool = False) -> Optional[float]:
    if value is None and allow_none:
        return None
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        value = float(value.detach())
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    value = float(value)
    if not -math.inf < value < math.inf or value <= 0:  # (NaN fails; no math.isfinite: compile-safe)
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return value


def check_choice(value: str, name: str, choices: Tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def check_flag(value, name: str) -> bool:
    """A ``bool`` argument (``TypeError`` naming ``name`` for anything else)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value
