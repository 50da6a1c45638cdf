r"""Streaming evaluation metrics over (prediction, target) ``Batch`` pairs.

:class:`AlignmentMetric` is a ``torchmetrics.Metric`` when torchmetrics is
installed (``update`` / ``compute`` / ``reset``, DDP syncing, use in Lightning)
and otherwise a ``torch.nn.Module`` with the same methods whose ``compute``
sums its states over ``torch.distributed`` ranks itself.

Its running sums are *persistent* states in both cases: they are part of the
metric's ``state_dict()`` (plain tensors, loadable with
``torch.load(..., weights_only=True)``), so an evaluation saved half-way and
loaded into a fresh metric continues where it stopped.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, Optional, Union

import torch
from torch import Tensor

from ._validation import check_flag
from .functional.alignment import check_alignment_keywords, se3_kernel_alignment
from .functional.procrustes import kabsch_rmsd
from .kernels import BaseGaussianKernel, KernelLike, as_kernel_module
from .nn.inputs import WeightSpec, check_weight_spec, resolve_weight
from .segments import graph_sizes

try:  # pragma: no cover - exercised by whichever is installed
    from torchmetrics import Metric as _TorchMetric
except ImportError:  # pragma: no cover
    _TorchMetric = None


class StreamingMetric(torch.nn.Module):
    """The part of ``torchmetrics.Metric`` this library needs, for when
    torchmetrics is absent: sum states registered by :meth:`add_state`,
    :meth:`reset`, and a :meth:`compute` that sees the states summed over
    ``torch.distributed`` ranks (the local states are left as they were).

    As in torchmetrics, a state added with ``persistent=True`` is saved in
    ``state_dict()`` and restored by ``load_state_dict()``; a state dict that
    lacks it (saved before it was persistent) leaves it as it is."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self._defaults: Dict[str, Tensor] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        compute = getattr(cls, "compute", None)
        if compute is not None and not getattr(compute, "synced", False):
            cls.compute = _synced(compute)

    def add_state(self, name: str, default: Tensor, dist_reduce_fx: str = "sum",
                  persistent: bool = False) -> None:
        """Registers a sum state ``name`` starting at ``default`` (only
        ``dist_reduce_fx="sum"``); ``persistent=True`` keeps it in ``state_dict()``."""
        if dist_reduce_fx != "sum":
            raise ValueError(f"dist_reduce_fx must be 'sum' here, got {dist_reduce_fx!r}")
        self._defaults[name] = default.clone()
        self.register_buffer(name, default.clone(), persistent=bool(persistent))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        before = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        states = {prefix + name for name in self._defaults}
        missing_keys[before:] = [k for k in missing_keys[before:] if k not in states]

    def reset(self) -> None:
        """Sets every state back to its default."""
        for name, default in self._defaults.items():
            setattr(self, name, default.clone().to(getattr(self, name).device))

    def forward(self, *args, **kwargs):
        self.update(*args, **kwargs)


def _synced(compute: Callable) -> Callable:
    def wrapper(self, *args, **kwargs):
        from .distributed import is_distributed

        if not is_distributed():
            return compute(self, *args, **kwargs)
        local = {name: getattr(self, name) for name in self._defaults}
        try:
            for name, value in local.items():
                total = value.clone()
                torch.distributed.all_reduce(total)
                setattr(self, name, total)
            return compute(self, *args, **kwargs)
        finally:
            for name, value in local.items():
                setattr(self, name, value)
    wrapper.__doc__, wrapper.__name__, wrapper.synced = compute.__doc__, compute.__name__, True
    return wrapper


def _apply_per_graph(transform: Callable, data):
    """The transform applied to each graph of a ``Batch`` on its own (PyG
    transforms see one graph: ``T.Center`` on a whole batch would centre the
    batch, not each graph), re-batched."""
    from torch_geometric.data import Batch

    if isinstance(data, Batch):
        return Batch.from_data_list([transform(copy.copy(d)) for d in data.to_data_list()])
    return transform(copy.copy(data))


_STATES = ("loss_sum", "cosine_sum", "rmsd_sum", "graphs")


class _AlignmentScores:
    r"""Mean scores over every graph seen by :meth:`update` since :meth:`reset`:

    * ``alignment_loss``: the SE(3)-invariant kernel alignment loss of
      :func:`~tg_rapidalign.se3_kernel_alignment` (0 for identical structures);
    * ``kernel_cosine``: the kernel cosine at the solved pose,
      :math:`\kappa(R^\star, t^\star) / \sqrt{\kappa_{XX}\kappa_{YY}}` in (0, 1];
    * ``rmsd``: Kabsch-aligned RMSD (:func:`~tg_rapidalign.kabsch_rmsd`), for
      predictions that keep the target's nodes in order (``rmsd=True``).

    The running sums (``loss_sum``, ``cosine_sum``, ``rmsd_sum``, ``graphs``)
    are persistent states: ``state_dict()`` holds them and ``load_state_dict()``
    restores them, so an evaluation resumed from a checkpoint gives the same
    means as one run without interruption.

    An optional PyG :obj:`transform` is applied to each prediction and target
    graph before scoring. All three scores are invariant to rigid motions of
    either side, so ``T.Center``, ``T.RandomRotate`` and
    :class:`~tg_rapidalign.transforms.RandomRigidMotion` (any proper rotation
    plus translation) leave them unchanged. They change under:

    * ``T.RandomFlip`` — a reflection; the pose is a proper rotation, so a
      chiral structure and its mirror image do not superpose (a molecule and its
      enantiomer are different structures);
    * ``T.NormalizeScale`` — a scaling to the unit ball; the kernel bandwidth
      and the RMSD are lengths, so rescaling changes both;
    * ``T.RandomTranslate`` — despite its name, it jitters every node by its own
      random offset (noise, not a rigid translation).

    Args:
        kernel (float or kernel module, optional): Bandwidth of the alignment
            loss and cosine, in the positions' units. (default: :obj:`1.0`)
        transform (callable, optional): A PyG transform applied to each graph
            of both sides before scoring. (default: :obj:`None`)
        rmsd (bool, optional): Also report the Kabsch RMSD; needs the same node
            count per graph on both sides. (default: :obj:`True`)
        weight (str, Tensor or callable, optional): Node weights, as in
            :class:`~tg_rapidalign.SE3KernelAlignmentLoss`. (default: uniform)
        **options (optional): Options of :func:`se3_kernel_alignment` (:obj:`tau`,
            :obj:`iterations`, :obj:`cutoff`, :obj:`init`, :obj:`estep`, ...).
    """

    def __init__(self, kernel: KernelLike = 1.0, transform: Optional[Callable] = None, rmsd: bool = True,
                 weight: WeightSpec = None, **options):
        super().__init__()
        check_alignment_keywords(options)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        if not isinstance(kernel, BaseGaussianKernel):
            as_kernel_module(kernel, "kernel")  # checks a bandwidth; the number itself is kept
        self.kernel = kernel
        self.transform = transform
        self.rmsd = check_flag(rmsd, "rmsd")
        self.weight = check_weight_spec(weight, "weight")
        self.options = options
        # Persistent: the running sums are in state_dict(), so a saved evaluation resumes.
        for name in _STATES:
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum",
                           persistent=True)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        devices = {name: getattr(self, name).device for name in _STATES}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        for name in _STATES:
            # update() adds in place: own the tensors (torchmetrics keeps the loaded
            # objects, which would alias the caller's state dict), on the metric's device.
            setattr(self, name, getattr(self, name).detach().to(devices[name]).clone())
        if getattr(self, "_computed", None) is not None:
            self._computed = None  # torchmetrics' cached compute() predates the load

    def update(self, pred, target) -> None:
        """Scores one batch of (prediction, target) graphs (``Data``/``Batch`` with ``pos``)."""
        from torch_geometric.data import Batch, Data

        for value, name in ((pred, "pred"), (target, "target")):
            if not isinstance(value, Data):
                raise TypeError(f"{name} must be a PyG Data or Batch with 'pos', got {type(value).__name__}")
        with torch.no_grad():
            pred, target = pred.detach(), target.detach()
            if self.transform is not None:
                pred = _apply_per_graph(self.transform, pred)
                target = _apply_per_graph(self.transform, target)
            num_graphs = pred.num_graphs if isinstance(pred, Batch) else 1
            other = target.num_graphs if isinstance(target, Batch) else 1
            if num_graphs != other:
                raise ValueError(f"pred has {num_graphs} graphs but target has {other}")
            x, y = pred.pos, target.pos
            bx, by = getattr(pred, "batch", None), getattr(target, "batch", None)
            # Checked before any state changes, so a refused batch leaves the metric as it was.
            if self.rmsd:
                sizes = [graph_sizes(b, num_graphs) if b is not None else torch.tensor([p.size(0)])
                         for b, p in ((bx, x), (by, y))]
                if not torch.equal(sizes[0].cpu(), sizes[1].cpu()):
                    raise ValueError("rmsd=True needs the same node count per graph in pred and target "
                                     "(row i of each graph paired); pass rmsd=False for unpaired graphs")
            wx = resolve_weight(self.weight, pred, x.size(0), x, "weight")
            wy = resolve_weight(self.weight, target, y.size(0), y, "weight")
            res = se3_kernel_alignment(x, y, bx, by, wx, wy, self.kernel, num_graphs=num_graphs,
                                       **self.options)
            device = self.graphs.device
            self.loss_sum += res.loss.sum().to(device, torch.float64)
            self.cosine_sum += res.similarity.sum().to(device, torch.float64)
            self.graphs += num_graphs
            if self.rmsd:
                rmsd = kabsch_rmsd(x, y, wx, bx, num_graphs)
                self.rmsd_sum += rmsd.sum().to(device, torch.float64)

    def compute(self) -> Dict[str, Tensor]:
        """Means over the graphs seen (0 before any update)."""
        n = self.graphs.clamp_min(1)
        out = {"alignment_loss": self.loss_sum / n, "kernel_cosine": self.cosine_sum / n}
        if self.rmsd:
            out["rmsd"] = self.rmsd_sum / n
        return out

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        transform = f", transform={self.transform!r}" if self.transform is not None else ""
        return f"{self.__class__.__name__}(kernel={self.kernel!r}{transform}, rmsd={self.rmsd}{opts})"


_Base = _TorchMetric if _TorchMetric is not None else StreamingMetric


class AlignmentMetric(_AlignmentScores, _Base):
    __doc__ = _AlignmentScores.__doc__
    full_state_update = False
    is_differentiable = False
    higher_is_better = False


def alignment_metric_class(base: Union[type, None] = None) -> type:
    """:class:`AlignmentMetric` on another base class (``StreamingMetric`` to use
    the built-in fallback even when torchmetrics is installed)."""
    base = base or _Base
    return type("AlignmentMetric", (_AlignmentScores, base),
                {"__doc__": _AlignmentScores.__doc__, "full_state_update": False})
