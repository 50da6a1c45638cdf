r"""Batched weighted Procrustes (Kabsch) with a stable backward pass."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._validation import check_batch, check_positions, check_same_space, check_weights, resolve_num_graphs
from ..ops import native, small_linalg
from ..segments import graph_sum
from ..weights import normalize_weights


class _SpecialPolar(torch.autograd.Function):
    r"""The rotation :math:`R = U\,\mathrm{diag}(1, 1, \det UV^\top)\,V^\top` closest
    to :math:`S = U \Sigma V^\top` (batched ``3 x 3``).

    Backward differentiates the polar factor instead of the SVD: with
    :math:`U' = U D`, :math:`\sigma' = D\sigma` and :math:`M = U'^\top G V`,
    :math:`\partial L / \partial S = U' Y V^\top` with
    :math:`Y_{ij} = (M_{ij} - M_{ji}) / (\sigma'_i + \sigma'_j)`.
    Only sums of singular values appear, so repeated singular values (symmetric
    structures) are harmless; where a sum vanishes (rank below two: two points,
    collinear points, zero weights) the rotation is not determined by ``S`` and
    that component of the gradient is set to zero, keeping it finite.
    """

    @staticmethod
    def forward(ctx, S: Tensor) -> Tensor:
        U, sig, Vh = small_linalg.svd(S)
        d = torch.sign(torch.linalg.det(U @ Vh))
        d = torch.where(d == 0, torch.ones_like(d), d)
        flip = torch.ones_like(sig)
        flip[:, -1] = d
        U = U * flip.unsqueeze(1)  # U' = U D
        R = U @ Vh
        ctx.save_for_backward(U, sig * flip, Vh)
        return R

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, G: Tensor) -> Tensor:
        U, sig, Vh = ctx.saved_tensors
        V = Vh.transpose(1, 2)
        M = U.transpose(1, 2) @ G @ V
        denom = sig.unsqueeze(2) + sig.unsqueeze(1)
        scale = sig.abs().amax(1, keepdim=True).unsqueeze(2)
        ok = denom > 1e-10 * scale + torch.finfo(sig.dtype).tiny
        Y = torch.where(ok, (M - M.transpose(1, 2)) / torch.where(ok, denom, torch.ones_like(denom)),
                        torch.zeros_like(M))
        return U @ Y @ Vh


def special_polar(S: Tensor) -> Tensor:
    """Nearest proper rotation to each ``3 x 3`` matrix of ``S [B, 3, 3]``.

    Without a gradient to track (the detached pose of the alignment loss), the
    native closed-form op replaces the batched SVD when it is built; ties (rank
    of ``S`` below two) may then resolve to a different, equally near rotation."""
    if not (torch.is_grad_enabled() and S.requires_grad) and native.polar_supported(S):
        return native.special_polar3(S)
    return _SpecialPolar.apply(S)


def weighted_procrustes(x: Tensor, y: Tensor, weight: Optional[Tensor] = None,
                        batch: Optional[Tensor] = None,
                        num_graphs: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    r"""The rigid motion that best maps paired points :obj:`y` onto :obj:`x`, per graph:

    .. math::
        (R, \mathbf{t}) = \operatorname*{arg\,min}_{R \in SO(3),\ \mathbf{t}}
        \sum_{i \in g} w_i \lVert \mathbf{x}_i - (R \mathbf{y}_i + \mathbf{t}) \rVert^2,

    solved in closed form: weighted centroids :math:`\bar{\mathbf{x}}, \bar{\mathbf{y}}`,
    cross-covariance :math:`S = \sum_i w_i (\mathbf{x}_i - \bar{\mathbf{x}})
    (\mathbf{y}_i - \bar{\mathbf{y}})^\top` (weights enter once, not squared),
    :math:`R = U \mathrm{diag}(1, 1, \det UV^\top) V^\top` (never a reflection) and
    :math:`\mathbf{t} = \bar{\mathbf{x}} - R\bar{\mathbf{y}}`.

    The backward pass differentiates the polar factor (see :class:`_SpecialPolar`),
    so gradients stay finite for symmetric structures, two points, collinear
    points and all-zero weights (where the pose is the identity, or the pose
    that aligns the determined directions).

    Args:
        x (torch.Tensor): Target points :math:`[N, 3]`.
        y (torch.Tensor): Source points :math:`[N, 3]`, row :math:`i` paired with row :math:`i` of :obj:`x`.
        weight (torch.Tensor, optional): Non-negative weights :math:`[N]`. (default: uniform)
        batch (torch.Tensor, optional): Sorted graph ids :math:`[N]`. (default: one graph)
        num_graphs (int, optional): :math:`B`, if trailing graphs are empty. (default: :obj:`None`)

    Returns:
        (torch.Tensor, torch.Tensor): :math:`R\ [B, 3, 3]` and :math:`\mathbf{t}\ [B, 3]`.
    """
    check_positions(x, "x", dim=3)
    check_positions(y, "y", dim=3)
    check_same_space(x, y)
    if x.size(0) != y.size(0):
        raise ValueError(f"x and y must be paired (same number of rows), got {x.size(0)} and {y.size(0)}")
    batch = check_batch(batch, x.size(0), "batch", x.device)
    weight = check_weights(weight, x.size(0), "weight", x)
    num_graphs = resolve_num_graphs(batch, batch, num_graphs, "batch", "batch")
    # Normalised weights (zero-mass graphs stay zero): the centroids directly, and
    # S up to a per-graph positive factor, which leaves its polar factor unchanged.
    w = normalize_weights(weight, batch, num_graphs, x.dtype)
    mx = graph_sum(w.unsqueeze(1) * x, batch, num_graphs)
    my = graph_sum(w.unsqueeze(1) * y, batch, num_graphs)
    xc, yc = x - mx[batch], y - my[batch]
    outer = (w.view(-1, 1, 1) * xc.unsqueeze(2) * yc.unsqueeze(1)).view(-1, 9)
    S = graph_sum(outer, batch, num_graphs).view(-1, 3, 3)
    R = special_polar(S)
    t = mx - (R @ my.unsqueeze(2)).squeeze(2)
    return R, t


def kabsch_rmsd(x: Tensor, y: Tensor, weight: Optional[Tensor] = None, batch: Optional[Tensor] = None,
                num_graphs: Optional[int] = None) -> Tensor:
    r"""Root-mean-square deviation of paired points after the optimal rigid
    superposition (Kabsch), per graph:

    .. math::
        \mathrm{RMSD}_g = \Big(\sum_{i \in g} w_i \lVert \mathbf{x}_i -
        (R \mathbf{y}_i + \mathbf{t}) \rVert^2 \Big/ \sum_{i \in g} w_i\Big)^{1/2},

    with :math:`(R, \mathbf{t})` from :func:`weighted_procrustes` (proper
    rotations only: a mirror image does not superpose). Invariant to any rigid
    motion of either set. Differentiable, with a zero gradient where the RMSD is
    0 (the square root's derivative is unbounded there); graphs without nodes or
    weight give 0.

    Args:
        x (torch.Tensor): Points :math:`[N, 3]`.
        y (torch.Tensor): Points :math:`[N, 3]`, row :math:`i` paired with row :math:`i` of :obj:`x`.
        weight (torch.Tensor, optional): Non-negative weights :math:`[N]`. (default: uniform)
        batch (torch.Tensor, optional): Sorted graph ids :math:`[N]`. (default: one graph)
        num_graphs (int, optional): :math:`B`, if trailing graphs are empty. (default: :obj:`None`)

    Returns:
        torch.Tensor: :math:`[B]`.
    """
    R, t = weighted_procrustes(x, y, weight, batch, num_graphs)
    batch = check_batch(batch, x.size(0), "batch", x.device)
    w = normalize_weights(check_weights(weight, x.size(0), "weight", x), batch, R.size(0), x.dtype)
    moved = (R[batch] @ y.unsqueeze(2)).squeeze(2) + t[batch]
    msd = graph_sum(w * (x - moved).pow(2).sum(1), batch, R.size(0))
    positive = msd > 0
    return torch.where(positive, torch.where(positive, msd, 1.0).sqrt(), 0.0)
