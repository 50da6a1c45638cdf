"""A KeOps-``online``-style brute-force Gaussian kernel sum in Triton (GPU
benchmark peer where KeOps itself does not run): every pair is evaluated, tiles
of points stay in registers, memory is O(N). Forward only."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _row_sums(x_ptr, y_ptr, out_ptr, n, m, inv2, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < n
    x0 = tl.load(x_ptr + rows * 3, mask=rmask, other=0.0)
    x1 = tl.load(x_ptr + rows * 3 + 1, mask=rmask, other=0.0)
    x2 = tl.load(x_ptr + rows * 3 + 2, mask=rmask, other=0.0)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for start in range(0, m, BLOCK_M):
        cols = start + tl.arange(0, BLOCK_M)
        cmask = cols < m
        y0 = tl.load(y_ptr + cols * 3, mask=cmask, other=0.0)
        y1 = tl.load(y_ptr + cols * 3 + 1, mask=cmask, other=0.0)
        y2 = tl.load(y_ptr + cols * 3 + 2, mask=cmask, other=0.0)
        d0 = x0[:, None] - y0[None, :]
        d1 = x1[:, None] - y1[None, :]
        d2 = x2[:, None] - y2[None, :]
        k = tl.exp(-(d0 * d0 + d1 * d1 + d2 * d2) * inv2)
        acc += tl.sum(tl.where(cmask[None, :], k, 0.0), axis=1)
    tl.store(out_ptr + rows, acc, mask=rmask)


def gaussian_sum(x: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """``sum_ij exp(-|x_i - y_j|^2 / 2 sigma^2)`` over all pairs (float32, CUDA)."""
    x, y = x.detach().float().contiguous(), y.detach().float().contiguous()
    out = torch.empty(len(x), device=x.device)
    grid = (triton.cdiv(len(x), 128),)
    _row_sums[grid](x, y, out, len(x), len(y), 0.5 / sigma**2, BLOCK_N=128, BLOCK_M=64)
    return out.sum()


def mmd(x: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    n, m = len(x), len(y)
    return (gaussian_sum(x, x, sigma) / n**2 + gaussian_sum(y, y, sigma) / m**2
            - 2 * gaussian_sum(x, y, sigma) / (n * m))
