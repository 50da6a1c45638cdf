"""The group MMD loss module between embeddings (batch correction, domain
adaptation, MMD-GANs), gathered across DDP ranks."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._validation import check_choice, check_flag
from ..distributed import all_gather_cat, is_distributed
from ..functional.group_mmd import GROUP_MODES, group_mmd
from ..kernels import KernelLike, as_kernel_module


class MMDLoss(torch.nn.Module):
    r"""MMD between the groups of a set of embeddings (for example the batch or
    domain of each sample), averaged over the compared pairs,

    .. math::
        \mathcal{L} = \operatorname{mean}_{(a, b)} \mathrm{MMD}^2_{ab},

    see :func:`tg_rapidalign.functional.group_mmd.group_mmd`. Graph-level
    embeddings of a PyG model (after global pooling) plug in directly.

    Under ``torch.distributed`` the loss gathers every rank's samples (with
    gradients) before comparing groups, so every rank computes the loss of the
    whole global batch and DDP's averaged gradients equal the single-process ones.

    Args:
        kernel (float or kernel module, optional): bandwidth or a Gaussian kernel module,
            e.g. :class:`MultiBandGaussianKernel`. (default: :obj:`1.0`)
        mode (str, optional): ``"pairwise"`` (all pairs of groups) or ``"one_vs_rest"``.
            (default: :obj:`"pairwise"`)
        unbiased (bool, optional): U-statistic self terms. (default: :obj:`False`)
        num_groups (int, optional): number of groups (default: inferred per call).
        gather (bool, optional): gather samples across ranks; :obj:`None` does so
            whenever a process group of more than one rank is initialised. (default: :obj:`None`)

    Every argument is checked at construction. With nothing to compare, that is
    an empty input (no samples on any rank) or samples of a single group, the
    loss is 0, connected to ``z`` so that ``backward()`` works.
    """

    def __init__(self, kernel: KernelLike = 1.0, mode: str = "pairwise", unbiased: bool = False,
                 num_groups: Optional[int] = None, gather: Optional[bool] = None):
        super().__init__()
        self.kernel = as_kernel_module(kernel, "kernel")
        self.mode = check_choice(mode, "mode", GROUP_MODES)
        self.unbiased = check_flag(unbiased, "unbiased")
        if num_groups is not None and (isinstance(num_groups, bool) or not isinstance(num_groups, int)):
            raise TypeError(f"num_groups must be None or an int, got {type(num_groups).__name__}")
        if num_groups is not None and num_groups < 1:
            raise ValueError(f"num_groups must be at least 1, got {num_groups}")
        self.num_groups = num_groups
        self.gather = None if gather is None else check_flag(gather, "gather")

    def forward(self, z: Tensor, groups: Tensor, weight: Optional[Tensor] = None) -> Tensor:
        """The mean squared MMD over the compared pairs of groups, a 0-d tensor.

        Args:
            z (torch.Tensor): Embeddings :math:`[N, d]` (this rank's samples).
            groups (torch.Tensor): Integer group labels :math:`[N]` (unsorted is fine).
            weight (torch.Tensor, optional): Non-negative sample weights
                :math:`[N]`. (default: :obj:`None`, uniform within each group)
        """
        if self.gather or (self.gather is None and is_distributed()):
            z, groups = all_gather_cat(z), all_gather_cat(groups)
            weight = None if weight is None else all_gather_cat(weight)
        num_groups = self.num_groups
        if num_groups is None and is_distributed() and groups.numel():
            num_groups = int(groups.max()) + 1
        values, valid = group_mmd(z, groups, weight, self.kernel, mode=self.mode, unbiased=self.unbiased,
                                  num_groups=num_groups)
        if self.mode == "pairwise":
            valid = valid.triu(1)
        if not bool(valid.any()):
            return (z * 0).sum()  # empty, or one group only: nothing to compare, zero with a gradient
        return values[valid].mean()

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(kernel={self.kernel}, mode={self.mode!r}, "
                f"unbiased={self.unbiased})")
