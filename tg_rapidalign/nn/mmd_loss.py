"""``torch.nn.Module`` wrappers of the kernel MMD / cosine ops for PyG data."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import backends
from .._validation import check_choice, check_flag, check_positive_scalar
from ..functional.mmd import kernel_cosine, kernel_mmd
from ..kernels import KernelLike, as_kernel_module
from ..weights import normalize_weights
from .inputs import (
    REDUCTIONS,
    WeightSpec,
    check_optional_name,
    check_weight_spec,
    pair_inputs,
    reduce_loss,
    resolve_types,
    resolve_weight,
)


class KernelMMDLoss(torch.nn.Module):
    r"""Kernel MMD (or ``1 - cosine``) between predicted and target graphs,

    .. math::
        \mathcal{L} = \operatorname{reduce}_g \left( K_{XX} + K_{YY} - 2 K_{XY} \right)_g,

    see :func:`tg_rapidalign.kernel_mmd`. Takes two ``Data``/``Batch`` objects
    with ``pos`` (node counts may differ per graph), or two position tensors
    with their batch vectors.

    Args:
        kernel (float or kernel module): The bandwidth or a
            :class:`GaussianKernel` / :class:`MultiBandGaussianKernel`; a module's
            parameters are trained with the model. (default: :obj:`1.0`)
        weight (str, Tensor or callable, optional): Node weights of both sides:
            :obj:`"uniform"`, :obj:`"degree"`, a node attribute name or a callable
            on the data. (default: :obj:`None`, uniform)
        max_weight_ratio (float, optional): Clamp any node's normalised weight
            to this multiple of the uniform weight. (default: :obj:`None`)
        unbiased (bool, optional): U-statistic. (default: :obj:`False`)
        cutoff (float, optional): Truncation in units of the largest bandwidth.
            (default: :obj:`4.0`)
        similarity (str, optional): :obj:`"mmd"` or :obj:`"cosine"` (the loss is
            then :math:`1 - \cos`). (default: :obj:`"mmd"`)
        reduction (str, optional): :obj:`"mean"`, :obj:`"sum"` or :obj:`"none"`.
            (default: :obj:`"mean"`)
        backend (str, optional): See :func:`kernel_mmd`. (default: :obj:`"auto"`)
        node_type (str, optional): A node attribute holding integer node types
            (:obj:`"z"` for atomic numbers): nodes of different types then
            interact with the kernel's ``cross_type_weight`` (see
            :func:`kernel_mmd`'s :obj:`type_x`). (default: :obj:`None`)

    Every argument is checked here, at construction: a bad value raises a
    ``TypeError`` or ``ValueError`` naming it (the backend names come from
    ``tg_rapidalign.backends.names("kernel_sums")``).
    """

    def __init__(self, kernel: KernelLike = 1.0, weight: WeightSpec = None,
                 max_weight_ratio: Optional[float] = None, unbiased: bool = False,
                 cutoff: Optional[float] = 4.0, similarity: str = "mmd",
                 reduction: str = "mean", backend: str = "auto", node_type: Optional[str] = None):
        super().__init__()
        self.kernel = as_kernel_module(kernel, "kernel")
        self.weight = check_weight_spec(weight, "weight")
        self.max_weight_ratio = check_positive_scalar(max_weight_ratio, "max_weight_ratio", allow_none=True)
        if self.max_weight_ratio is not None and self.max_weight_ratio < 1:
            raise ValueError(f"max_weight_ratio must be at least 1, got {self.max_weight_ratio}")
        self.unbiased = check_flag(unbiased, "unbiased")
        self.cutoff = check_positive_scalar(cutoff, "cutoff", allow_none=True)
        self.similarity = check_choice(similarity, "similarity", ("mmd", "cosine"))
        self.reduction = check_choice(reduction, "reduction", REDUCTIONS)
        self.backend = check_choice(backend, "backend", backends.names("kernel_sums"))
        self.node_type = check_optional_name(node_type, "node_type")
        if unbiased and similarity == "cosine":
            raise ValueError("unbiased applies to similarity='mmd' only")

    def forward(self, pred, target, batch_pred: Optional[Tensor] = None,
                batch_target: Optional[Tensor] = None, num_graphs: Optional[int] = None) -> Tensor:
        r"""The MMD (or :math:`1 - \cos`) of each graph pair, reduced by :obj:`reduction`.

        Args:
            pred (Data, Batch or Tensor): The prediction: a ``Data``/``Batch``
                with ``pos`` :math:`[N, 3]`, or the positions themselves.
            target (Data, Batch or Tensor): The target, likewise (:math:`[M, 3]`;
                node counts may differ per graph).
            batch_pred (torch.Tensor, optional): Sorted graph ids :math:`[N]`
                when :obj:`pred` is a tensor. (default: :obj:`None`, one graph)
            batch_target (torch.Tensor, optional): Sorted graph ids :math:`[M]`
                when :obj:`target` is a tensor. (default: :obj:`None`)
            num_graphs (int, optional): :math:`B`. A ``Batch`` supplies it;
                otherwise it is read from the batch vectors (a host sync): pass
                it inside a ``torch.compile``-d step. (default: :obj:`None`)

        Returns:
            torch.Tensor: A 0-d tensor (``"mean"``, ``"sum"``) or :math:`[B]` (``"none"``).
        """
        x, y, bx, by, num_graphs = pair_inputs(pred, target, batch_pred, batch_target, num_graphs)
        wx = resolve_weight(self.weight, pred, x.size(0), x, "weight")
        wy = resolve_weight(self.weight, target, y.size(0), y, "weight")
        if self.max_weight_ratio is not None:
            wx, wy = (self._clamp(w, b, n, t, num_graphs) for w, b, n, t in
                      ((wx, bx, x.size(0), x), (wy, by, y.size(0), y)))
        kwargs = dict(cutoff=self.cutoff, backend=self.backend, num_graphs=num_graphs,
                      type_x=resolve_types(self.node_type, pred, "node_type"),
                      type_y=resolve_types(self.node_type, target, "node_type"))
        if self.similarity == "mmd":
            out = kernel_mmd(x, y, bx, by, wx, wy, self.kernel, unbiased=self.unbiased, **kwargs)
        else:
            out = 1.0 - kernel_cosine(x, y, bx, by, wx, wy, self.kernel, **kwargs)
        return reduce_loss(out, self.reduction)

    def _clamp(self, w, batch, n, like, num_graphs):
        if batch is None:
            batch = torch.zeros(n, dtype=torch.long, device=like.device)
            num_graphs = 1 if num_graphs is None else num_graphs
        b = num_graphs if num_graphs is not None else (int(batch.max()) + 1 if n else 1)
        return normalize_weights(w, batch, b, like.dtype, max_ratio=self.max_weight_ratio)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(kernel={self.kernel}, similarity={self.similarity!r}, "
                f"unbiased={self.unbiased}, cutoff={self.cutoff}, reduction={self.reduction!r}"
                + (f", node_type={self.node_type!r})" if self.node_type is not None else ")"))
