"""Batched linear algebra on many small (3 x 3) matrices.

cuSOLVER's batched eigen/SVD routines fail on very large batches (an H100 with
torch 2.11/CUDA 13 raised a cusolver error for ``eigh`` over 400k 3 x 3
matrices: 100k graphs times 4 candidate starts), so CUDA batches are split
into chunks; results are the same as one call.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

CUDA_CHUNK = 32768


def split_apply(fn, A: Tensor, size: int):
    """``fn`` (returning a tuple of batched tensors) over chunks of ``size`` matrices."""
    if A.size(0) <= size:
        return fn(A)
    parts = [fn(chunk) for chunk in A.split(size)]
    return tuple(torch.cat(p) for p in zip(*parts))


def _chunked(fn, A: Tensor):
    return split_apply(fn, A, CUDA_CHUNK) if A.is_cuda else fn(A)


def eigh(A: Tensor) -> Tuple[Tensor, Tensor]:
    """``torch.linalg.eigh`` over a batch ``[B, n, n]``."""
    return _chunked(torch.linalg.eigh, A)


def svd(A: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``torch.linalg.svd`` over a batch ``[B, n, n]``."""
    return _chunked(torch.linalg.svd, A)
