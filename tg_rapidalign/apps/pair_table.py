r"""Kernel sums of a fixed set of structure pairs under a kernel that changes.

Calibration evaluates the same pairs :math:`(X_g, Y_g)` hundreds of times with
different bandwidths, mixture weights and cross-type weights; the distances
never change. :class:`PairKernelTable` computes every within-graph squared
distance of the blocks :math:`XX`, :math:`YY` and :math:`XY` once, with its
weight product and whether the two nodes share a type, and then each
evaluation is one exponential per band and one scatter-sum: the same sums as
:func:`~tg_rapidalign.functional.mmd.kernel_sums` with the ``"dense"`` backend
(uniform node weights, the cutoff in units of the largest bandwidth), without
rebuilding padded blocks, per-type batches and their autograd graphs each step.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Batch
from torch_geometric.utils import to_dense_batch

from ..kernels import KernelLike, resolve_kernel, resolve_type_weight
from ..ops.gaussian import cosine_from_sums, gaussian


def _block(a: Tensor, ma: Tensor, ta: Optional[Tensor], b: Tensor, mb: Tensor, tb: Optional[Tensor]):
    """Entries of the padded per-graph blocks ``a [B, n, D]``, ``b [B, m, D]``
    (masks ``ma``, ``mb``): squared distance, weight product, graph, same type."""
    d2 = (a.unsqueeze(2) - b.unsqueeze(1)).pow(2).sum(-1)
    wa = ma.to(a.dtype) / ma.sum(1, keepdim=True).clamp_min(1)  # uniform weights, in the working dtype
    wb = mb.to(b.dtype) / mb.sum(1, keepdim=True).clamp_min(1)
    keep = ma.unsqueeze(2) & mb.unsqueeze(1)
    graph = torch.arange(a.size(0)).view(-1, 1, 1).expand_as(d2)
    same = None if ta is None else (ta.unsqueeze(2) == tb.unsqueeze(1))[keep]
    return d2[keep], (wa.unsqueeze(2) * wb.unsqueeze(1))[keep], graph[keep], same


class PairKernelTable:
    r"""The within-graph distances of the pairs ``(xs[g], ys[g])``, for repeated
    kernel sums.

    Args:
        xs (sequence of Data): First structures (``pos [N_g, D]``).
        ys (sequence of Data): Second structures, as many as :obj:`xs`.
        node_type (str, optional): Node attribute of integer types; the kernel
            is then multiplied by :math:`\beta + (1 - \beta)[t_i = t_j]`, as
            ``kernel_sums(..., type_x, type_y)``. (default: :obj:`None`)
        cutoff (float, optional): Pairs further apart than this times the
            largest bandwidth are left out; :obj:`None` keeps every pair.
            (default: :obj:`4.0`, as ``kernel_sums``)
        dtype (torch.dtype, optional): Working dtype. (default: :obj:`torch.float64`)
    """

    def __init__(self, xs: Sequence, ys: Sequence, node_type: Optional[str] = None,
                 cutoff: Optional[float] = 4.0, dtype: torch.dtype = torch.float64):
        if len(xs) != len(ys) or len(xs) == 0:
            raise ValueError(f"xs and ys must hold the same positive number of structures, got {len(xs)} "
                             f"and {len(ys)}")
        if cutoff is not None and not cutoff > 0:
            raise ValueError(f"cutoff must be positive or None, got {cutoff}")
        bx, by = Batch.from_data_list(list(xs)), Batch.from_data_list(list(ys))
        n = self.num_graphs = len(xs)
        X, mx = to_dense_batch(bx.pos.to(dtype), bx.batch, batch_size=n)
        Y, my = to_dense_batch(by.pos.to(dtype), by.batch, batch_size=n)
        tx = ty = None
        if node_type is not None:
            tx = to_dense_batch(bx[node_type].view(-1), bx.batch, batch_size=n)[0]
            ty = to_dense_batch(by[node_type].view(-1), by.batch, batch_size=n)[0]
        parts = [_block(X, mx, tx, X, mx, tx), _block(Y, my, ty, Y, my, ty), _block(X, mx, tx, Y, my, ty)]
        self.d2 = torch.cat([p[0] for p in parts])
        self.weight = torch.cat([p[1] for p in parts])
        # Slot of each entry in the [3 * B] result: block k, graph g -> k * B + g.
        self.slot = torch.cat([p[2] + k * n for k, p in enumerate(parts)])
        self.same = None if node_type is None else torch.cat([p[3] for p in parts]).to(dtype)
        self.cutoff = cutoff

    def __len__(self) -> int:
        return self.d2.numel()

    def sums(self, kernel: KernelLike) -> Tuple[Tensor, Tensor, Tensor]:
        """``(K_XX, K_YY, K_XY)``, each ``[B]``, differentiable in the kernel's parameters."""
        sigmas, coefs = resolve_kernel(kernel, self.d2.dtype, self.d2.device)
        k = gaussian(self.d2, sigmas, coefs)
        if self.cutoff is not None:
            r = self.cutoff * float(sigmas.detach().max())
            k = k.masked_fill(self.d2 > r * r, 0.0)
        if self.same is not None:
            beta = resolve_type_weight(kernel, self.d2.dtype, self.d2.device)
            k = k * (beta + (1 - beta) * self.same)
        out = k.new_zeros(3 * self.num_graphs).index_add(0, self.slot, k * self.weight)
        kxx, kyy, kxy = out.view(3, self.num_graphs)
        return kxx, kyy, kxy

    def mmd(self, kernel: KernelLike) -> Tensor:
        """Biased MMD² per pair ``[B]``, as :func:`~tg_rapidalign.functional.mmd.kernel_mmd`."""
        kxx, kyy, kxy = self.sums(kernel)
        return kxx + kyy - 2 * kxy

    def cosine(self, kernel: KernelLike) -> Tensor:
        """Kernel cosine per pair ``[B]``, as :func:`~tg_rapidalign.functional.mmd.kernel_cosine`."""
        kxx, kyy, kxy = self.sums(kernel)
        return cosine_from_sums(kxy, kxx, kyy)
