"""``torch.nn.Module`` wrapper of the SE(3) kernel alignment loss for PyG data."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from .._validation import check_choice
from ..functional.alignment import AlignmentResult, check_alignment_keywords, se3_kernel_alignment
from ..kernels import KernelLike, as_kernel_module
from ..schedules import BandwidthSchedule
from .inputs import REDUCTIONS, WeightSpec, check_weight_spec, pair_inputs, reduce_loss, resolve_weight


class SE3KernelAlignmentLoss(torch.nn.Module):
    r"""The SE(3)-invariant kernel alignment loss between predicted and target
    graphs (see :func:`tg_rapidalign.se3_kernel_alignment`),

    .. math::
        \mathcal{L} = \operatorname{reduce}_g\, -\frac{1}{\tau}
        \log \frac{\hat{\kappa}_g(R^\star_g, t^\star_g) + \varepsilon}{1 + \varepsilon},

    with the pose :math:`(R^\star, t^\star)` that maps the target onto the
    prediction solved per graph. Takes two ``Data``/``Batch`` objects with
    ``pos`` (node counts may differ per graph) or two position tensors with
    their batch vectors.

    Args:
        kernel (float, kernel module or BandwidthSchedule): The bandwidth, a
            :class:`GaussianKernel` / :class:`MultiBandGaussianKernel` (trained
            with the model if learnable), or a :class:`BandwidthSchedule` whose
            current value is used (call its :meth:`step`). (default: :obj:`1.0`)
        tau (float, optional): Temperature. (default: :obj:`1.0`)
        iterations (int, optional): EM steps. (default: :obj:`1`)
        cutoff (float, optional): Truncation in units of the largest bandwidth.
            (default: :obj:`3.0`)
        init (str, optional): :obj:`"principal_axes"`, :obj:`"octahedral"`,
            :obj:`"paired"` (prediction and target hold the same nodes) or
            :obj:`"identity"`. (default: :obj:`"principal_axes"`)
        weight (str, Tensor or callable, optional): Node weights of both sides:
            :obj:`"uniform"`, :obj:`"degree"`, a node attribute name or a callable
            on the data. (default: :obj:`None`, uniform)
        reduction (str, optional): :obj:`"mean"`, :obj:`"sum"` or :obj:`"none"`.
            (default: :obj:`"mean"`)
        **kwargs (optional): Any other option of :func:`se3_kernel_alignment`
            (:obj:`objective`, :obj:`pose_grad`, :obj:`estep`, :obj:`eps`,
            :obj:`kappa_floor`, :obj:`max_weight_ratio`, :obj:`pose_blend`, ...).

    Every argument is checked at construction. The module's ``state_dict()``
    holds the kernel's parameters and buffers or, with a schedule, the
    schedule's state (``"schedule._extra_state"``: its bandwidths, mode and step
    count), so loading a checkpoint resumes the annealing where it was saved.
    """

    def __init__(self, kernel: Union[KernelLike, BandwidthSchedule] = 1.0, tau: float = 1.0,
                 iterations: int = 1, cutoff: Optional[float] = 3.0, init: str = "principal_axes",
                 weight: WeightSpec = None, reduction: str = "mean", **kwargs):
        super().__init__()
        # A schedule is a submodule: its step count is part of this module's state_dict.
        self.schedule = kernel if isinstance(kernel, BandwidthSchedule) else None
        self.kernel = as_kernel_module(kernel, "kernel") if self.schedule is None else None
        self.weight = check_weight_spec(weight, "weight")
        self.reduction = check_choice(reduction, "reduction", REDUCTIONS)
        self.options = dict(tau=tau, iterations=iterations, cutoff=cutoff, init=init, **kwargs)
        check_alignment_keywords(self.options)

    def align(self, pred, target, batch_pred: Optional[Tensor] = None,
              batch_target: Optional[Tensor] = None, num_graphs: Optional[int] = None) -> AlignmentResult:
        r"""The full per-graph :class:`~tg_rapidalign.AlignmentResult` (loss,
        kappa, pose :math:`x \approx R y + t` mapping the target onto the
        prediction, ...), unreduced; arguments as in :meth:`forward`."""
        x, y, bx, by, num_graphs = pair_inputs(pred, target, batch_pred, batch_target, num_graphs)
        wx = resolve_weight(self.weight, pred, x.size(0), x, "weight")
        wy = resolve_weight(self.weight, target, y.size(0), y, "weight")
        sigma = self.schedule.sigma if self.schedule is not None else self.kernel
        return se3_kernel_alignment(x, y, bx, by, wx, wy, sigma, num_graphs=num_graphs, **self.options)

    def forward(self, pred, target, batch_pred: Optional[Tensor] = None,
                batch_target: Optional[Tensor] = None, num_graphs: Optional[int] = None) -> Tensor:
        """The loss of each graph pair, reduced by :obj:`reduction`.

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
        return reduce_loss(self.align(pred, target, batch_pred, batch_target, num_graphs).loss,
                           self.reduction)

    def __repr__(self) -> str:
        kernel = self.schedule if self.schedule is not None else self.kernel
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.__class__.__name__}(kernel={kernel}, {opts}, reduction={self.reduction!r})"
