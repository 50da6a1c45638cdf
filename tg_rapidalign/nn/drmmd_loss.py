"""The DrMMD loss module between particle sets (:class:`MMDLoss`, the group MMD,
moved to :mod:`.group_mmd_loss` and is still importable from here)."""
from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_positive_scalar
from ..functional.drmmd import drmmd
from ..kernels import KernelLike, as_kernel_module


class DrMMDLoss(torch.nn.Module):
    r"""The de-regularised MMD between generated samples ``x`` and target
    samples ``y`` (see :func:`tg_rapidalign.drmmd`),

    .. math::
        \mathcal{L} = \frac{1 + \lambda}{\lambda}
        \big(\mathrm{MMD}^2 - a^\top (K_{YY} + M\lambda I)^{-1} a\big).

    Args:
        kernel (float or kernel module, optional): the bandwidth or a Gaussian kernel
            module (trained with the model when learnable). (default: :obj:`1.0`)
        lam (float, optional): :math:`\lambda > 0`. (default: :obj:`1.0`)

    Both arguments are checked at construction. Both sides of a call need at
    least one sample (an empty side raises a ``ValueError``, see
    :func:`tg_rapidalign.drmmd`).
    """

    def __init__(self, kernel: KernelLike = 1.0, lam: float = 1.0):
        super().__init__()
        self.kernel = as_kernel_module(kernel, "kernel")
        self.lam = check_positive_scalar(lam, "lam")

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """DrMMD between generated samples ``x`` :math:`[N, d]` and target
        samples ``y`` :math:`[M, d]` (one set each, not per graph); a 0-d tensor."""
        return drmmd(x, y, self.kernel, self.lam)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(kernel={self.kernel}, lam={self.lam:g})"


from .group_mmd_loss import MMDLoss  # noqa: E402,F401  (its former home)
