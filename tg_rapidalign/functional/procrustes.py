r"""Batched weighted Procrustes (Kabsch) with a stable backward pass."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._validation import check_batch, check_positions, check_same_space, check_weights, resolve_num_graphs
from ..alignment import pose
from ..numerics import centre, numeric_policy
from ..segments import graph_sum
from ..weights import normalize_weights


def _paired_inputs(x, y, weight, batch, num_graphs):
    """Checked paired point sets: ``(batch, normalised weights, num_graphs)``.
    Normalised weights (zero-mass graphs stay zero) give the centroids directly,
    and S up to a per-graph positive factor, which leaves its polar factor unchanged."""
    check_positions(x, "x", dim=3)
    check_positions(y, "y", dim=3)
    check_same_space(x, y)
    if x.size(0) != y.size(0):
        raise ValueError(f"x and y must be paired (same number of rows), got {x.size(0)} and {y.size(0)}")
    batch = check_batch(batch, x.size(0), "batch", x.device)
    weight = check_weights(weight, x.size(0), "weight", x)
    num_graphs = resolve_num_graphs(batch, batch, num_graphs, "batch", "batch")
    return batch, normalize_weights(weight, batch, num_graphs, x.dtype), num_graphs


@numeric_policy
def special_polar(S: Tensor) -> Tensor:
    r"""The nearest proper rotation to each ``3 x 3`` matrix,

    .. math::
        R = \operatorname*{arg\,max}_{R \in SO(3)} \operatorname{tr}(R^\top S)
          = U \mathrm{diag}(1, 1, \det UV^\top) V^\top, \qquad S = U \Sigma V^\top.

    Differentiable with a backward that stays finite for repeated or vanishing
    singular values (see :class:`tg_rapidalign.alignment.pose.SpecialPolar`);
    without a gradient to track, the native closed form is used when built.

    Args:
        S (torch.Tensor): Matrices :math:`[B, 3, 3]`.

    Returns:
        torch.Tensor: Rotations :math:`[B, 3, 3]`, :math:`\det R = +1`.
    """
    if not isinstance(S, Tensor):
        raise TypeError(f"S must be a tensor, got {type(S).__name__}")
    if S.dim() != 3 or S.shape[1:] != (3, 3):
        raise ValueError(f"S must have shape [B, 3, 3], got {tuple(S.shape)}")
    return pose.special_polar(S)


@numeric_policy
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

    The backward pass differentiates the polar factor (see :func:`special_polar`),
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
    batch, w, num_graphs = _paired_inputs(x, y, weight, batch, num_graphs)
    return pose.kabsch(x, y, w, batch, num_graphs)


@numeric_policy
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
    batch, w, num_graphs = _paired_inputs(x, y, weight, batch, num_graphs)
    # In the centred frames (float64 centroids): x - (R y + t) = xc - R yc, with no
    # cancellation against the distance from the origin.
    xc, _ = centre(x, w, batch, num_graphs)
    yc, _ = centre(y, w, batch, num_graphs)
    R = pose.centred_rotation(xc, yc, w, batch, num_graphs)
    moved = (R[batch] @ yc.unsqueeze(2)).squeeze(2)
    msd = graph_sum(w * (xc - moved).pow(2).sum(1), batch, num_graphs)
    positive = msd > 0
    return torch.where(positive, torch.where(positive, msd, 1.0).sqrt(), 0.0)
