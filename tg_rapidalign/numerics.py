r"""The numeric policy every public op applies (see ``docs/numerics.md``).

* **Compute dtype.** float64 inputs compute in float64; float32, float16 and
  bfloat16 inputs compute in float32 (:func:`compute_dtype`). Half inputs are
  accepted and never reach a kernel (LAPACK, the native ops) that lacks a half
  implementation.
* **Autocast.** Inside an op, autocast is switched off for the inputs' device:
  the kernel sums, centroids, moments and the ``3 x 3`` pose are computed in the
  compute dtype whatever autocast region the caller is in, so autocast never
  moves a result beyond float32 rounding.
* **Output dtype.** Results come out in the compute dtype (float32 for half
  inputs, like the losses of ``torch.nn`` under autocast); gradients flow back
  to the inputs in their own dtype.
* **Translation.** Centroids are accumulated in float64 and coordinates centred
  in float64 before they are rounded back (:func:`centre`), so float32
  structures far from the origin (proteins, crystal and MD frames at
  :math:`10^2`--:math:`10^6`) keep float32 accuracy relative to their own size.
"""
from __future__ import annotations

import functools
from typing import Callable, Tuple

import torch
from torch import Tensor

from .segments import graph_sum


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, float32 for every other floating dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


_HALF = (torch.float16, torch.bfloat16)


def _cast(value):
    """Half-precision tensors to float32; everything else as it is (so that a
    float32/float64 mix is still refused by the op's own checks)."""
    if isinstance(value, Tensor) and value.dtype in _HALF:
        return value.float()
    return value


def numeric_policy(fn: Callable) -> Callable:
    """Applies the policy to a public op whose first argument is a floating
    point tensor: autocast off on its device, every float16/bfloat16 tensor
    argument cast to float32 (index tensors, modules and numbers are passed
    through; mixing float32 and float64 is left to the op's own checks)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        first = args[0] if args else None
        if not (isinstance(first, Tensor) and first.is_floating_point()):
            return fn(*args, **kwargs)
        args = tuple(_cast(a) for a in args)
        kwargs = {k: _cast(v) for k, v in kwargs.items()}
        device_type = first.device.type
        if device_type in ("cpu", "cuda"):
            with torch.autocast(device_type=device_type, enabled=False):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def centre(x: Tensor, w: Tensor, batch: Tensor, num_graphs: int) -> Tuple[Tensor, Tensor]:
    """``(x - mu[batch], mu)`` with ``mu = sum_i w_i x_i / sum_i w_i`` per graph
    (0 for a graph without weight), accumulated and subtracted in float64 and
    returned in ``x``'s dtype: centring then loses nothing to the distance from
    the origin. Dividing by the float64 sum of the weights matters: float32
    weights normalised to one sum to one only within rounding, which would move
    the centroid of a structure at 1e6 by a few hundredths. Differentiable in
    ``x`` and ``w``."""
    x64, w64 = x.double(), w.double()
    mass = graph_sum(w64, batch, num_graphs)
    mu = graph_sum(w64.unsqueeze(-1) * x64, batch, num_graphs)
    mu = mu / torch.where(mass > 0, mass, torch.ones_like(mass)).unsqueeze(-1)
    return (x64 - mu[batch]).to(x.dtype), mu.to(x.dtype)
