r"""MMD between groups of samples of one embedding set (batch effects, domains,
conditions): every sample :math:`z_i` carries a group label :math:`g_i` and an
optional weight :math:`w_i`; with per-group normalised weights
:math:`\tilde w^{(a)}` the squared MMD between groups :math:`a` and :math:`b` is

.. math::
    \mathrm{MMD}^2_{ab} = \tilde w^{(a)\top} K \tilde w^{(a)} + \tilde w^{(b)\top} K \tilde w^{(b)}
    - 2\, \tilde w^{(a)\top} K \tilde w^{(b)},

all pairs from one product :math:`W^\top K W`. ``mode="one_vs_rest"`` compares
each group with all other samples pooled. ``unbiased=True`` drops the
:math:`i = j` terms of the self sums (the U-statistic for uniform weights).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._validation import check_choice, check_index_vector, check_positions, check_weights
from ..kernels import KernelLike, resolve_kernel
from ..numerics import numeric_policy
from ..ops.gaussian import gaussian_gram
from .mmd import unbiased_self_sum

GROUP_MODES = ("pairwise", "one_vs_rest")


def check_groups(groups: Tensor, n: int, device, num_groups: Optional[int]) -> Tuple[Tensor, int]:
    groups = check_index_vector(groups, n, "groups", device, "group ids")
    top = int(groups.max()) + 1 if n else 0
    if num_groups is None:
        num_groups = top
    elif not isinstance(num_groups, int) or num_groups < top:
        raise ValueError(f"num_groups={num_groups!r} but groups name group id {top - 1}")
    return groups, num_groups


def _normalised(W: Tensor) -> Tuple[Tensor, Tensor]:
    mass = W.sum(0)
    return W / torch.where(mass > 0, mass, torch.ones_like(mass)), mass > 0


def _self_terms(W: Tensor, KW: Tensor, k0: Tensor, unbiased: bool, counts: Tensor) -> Tensor:
    s = (W * KW).sum(0)
    if not unbiased:
        return s
    return unbiased_self_sum(s, W.pow(2).sum(0), counts, k0)


@numeric_policy
def group_mmd(z: Tensor, groups: Tensor, weight: Optional[Tensor] = None, sigma: KernelLike = 1.0, *,
              mode: str = "pairwise", unbiased: bool = False, num_groups: Optional[int] = None
              ) -> Tuple[Tensor, Tensor]:
    r"""Squared MMDs between the groups of an embedding set.

    Args:
        z (Tensor): embeddings :math:`[N, d]`, any dimension.
        groups (LongTensor): group label of each row :math:`[N]` (unsorted is fine).
        weight (Tensor, optional): non-negative sample weights :math:`[N]`. (default: :obj:`None`)
        sigma (float, Tensor or kernel module, optional): the Gaussian kernel or a
            :class:`MultiBandGaussianKernel`. (default: :obj:`1.0`)
        mode (str, optional): ``"pairwise"`` (a :math:`[G, G]` matrix) or ``"one_vs_rest"``
            (a :math:`[G]` vector). (default: :obj:`"pairwise"`)
        unbiased (bool, optional): drop the :math:`i = j` terms. (default: :obj:`False`)
        num_groups (int, optional): :math:`G` (default: the largest label plus one).

    Returns:
        ``(values, valid)``: the MMD²s and a mask of the entries whose groups are
        both non-empty (pairwise: off-diagonal pairs only).

    Empty input (:math:`N = 0`) is valid: with :obj:`num_groups` :math:`G` it
    gives zeros of the usual shape and an all-``False`` mask (no group has a
    sample), without it :math:`G = 0` and both are empty (``[0, 0]`` pairwise,
    ``[0]`` one-vs-rest). The values are connected to ``z`` either way.
    """
    check_positions(z, "z")
    mode = check_choice(mode, "mode", GROUP_MODES)
    groups, G = check_groups(groups, z.size(0), z.device, num_groups)
    weight = check_weights(weight, z.size(0), "weight", z)
    w = torch.ones(z.size(0), dtype=z.dtype, device=z.device) if weight is None else weight
    sigmas, coefs = resolve_kernel(sigma, z.dtype, z.device)
    K = gaussian_gram(z, z, sigmas, coefs)
    k0 = coefs.sum()
    onehot = torch.zeros(z.size(0), G, dtype=z.dtype, device=z.device)
    if z.size(0):  # one_hot cannot infer or check a class count from an empty tensor
        onehot = onehot.scatter(1, groups.unsqueeze(1), 1.0)
    counts = onehot.sum(0)
    W, present = _normalised(onehot * w.unsqueeze(1))
    KW = K @ W
    self_a = _self_terms(W, KW, k0, unbiased, counts)
    if mode == "pairwise":
        cross = W.T @ KW
        values = self_a.unsqueeze(1) + self_a.unsqueeze(0) - 2 * cross
        valid = present.unsqueeze(1) & present.unsqueeze(0) & ~torch.eye(G, dtype=torch.bool, device=z.device)
        return values, valid
    R, rest_present = _normalised((1 - onehot) * w.unsqueeze(1))
    KR = K @ R
    self_r = _self_terms(R, KR, k0, unbiased, z.size(0) - counts)
    values = self_a + self_r - 2 * (W * KR).sum(0)
    return values, present & rest_present
