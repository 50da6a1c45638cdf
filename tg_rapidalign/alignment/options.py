"""The alignment loss's choices and finer options, validated when they are made."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from .._validation import check_positive_scalar

INITS = ("principal_axes", "octahedral", "paired", "identity", "global")
OBJECTIVES = ("log_cosine", "cosine", "log_kappa", "kappa")
ESTEPS = ("kernel", "robust")
POSE_GRADS = ("detach", "full")


def _fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class AlignmentOptions:
    r"""The finer options of :func:`tg_rapidalign.se3_kernel_alignment`, grouped by
    the stage that reads them. Each field may also be passed to the function (and
    to :class:`~tg_rapidalign.SE3KernelAlignmentLoss`) as a keyword argument.

    Args:
        eps (float, optional): Score: :math:`\varepsilon > 0` in the log
            objectives. (default: :obj:`1e-8`)
        kappa_floor (float, optional): Score: below this value the quantity in the
            log objectives is continued smoothly so that the log continues
            linearly; the gradient is at most :math:`1/(\tau\,\mathrm{floor})`
            times that of the quantity. (default: :obj:`None`)
        max_weight_ratio (float, optional): Weights: clamp node weights at this
            multiple of the uniform weight, the clipped mass spread over the
            other nodes. (default: :obj:`None`)
        outlier_weight (float, optional): Robust E-step: the outlier fraction
            :math:`w \in [0, 1)`. (default: :obj:`0.1`)
        min_sigma (float, optional): Robust E-step: floor of its bandwidth.
            (default: 1e-3 times the largest kernel bandwidth)
        pose_blend (float, optional): EM: :math:`\beta \in [0, 1)`, each new pose
            blended with the previous one, :math:`R \leftarrow
            \mathrm{polar}_+((1-\beta) R_{new} + \beta R_{old})`. (default: :obj:`0.0`)
        pose_reg (float, optional): EM: :math:`\lambda \ge 0`, the polar step
            solves :math:`S + \lambda s^2 R_0` instead of :math:`S` (:math:`R_0`
            the starting rotation, :math:`s^2` the mean per-axis variance of both
            sets). (default: :obj:`0.0`)
        refresh_neighbors (bool, optional): EM: recompute the neighbor pairs at
            every step; if :obj:`False`, keep those of the starting pose for every
            kernel E-step and the final score. (default: :obj:`True`)
        radius_backend (str, optional): The neighbor search of the
            :obj:`"pairs"` backend, see :func:`tg_rapidalign.radius_pairs`.
            (default: :obj:`"auto"`)
    """
    eps: float = 1e-8
    kappa_floor: Optional[float] = None
    max_weight_ratio: Optional[float] = None
    outlier_weight: float = 0.1
    min_sigma: Optional[float] = None
    pose_blend: float = 0.0
    pose_reg: float = 0.0
    refresh_neighbors: bool = True
    radius_backend: str = "auto"

    def __post_init__(self):
        check = object.__setattr__
        check(self, "eps", check_positive_scalar(self.eps, "eps"))
        check(self, "kappa_floor", check_positive_scalar(self.kappa_floor, "kappa_floor", allow_none=True))
        check(self, "max_weight_ratio", check_positive_scalar(self.max_weight_ratio, "max_weight_ratio",
                                                              allow_none=True))
        check(self, "min_sigma", check_positive_scalar(self.min_sigma, "min_sigma", allow_none=True))
        check(self, "outlier_weight", _fraction(self.outlier_weight, "outlier_weight"))
        check(self, "pose_blend", _fraction(self.pose_blend, "pose_blend"))
        reg = self.pose_reg
        if isinstance(reg, bool) or not isinstance(reg, (int, float)) or not (0 <= reg < math.inf):
            raise ValueError(f"pose_reg must be a finite number >= 0, got {reg!r}")
        if not isinstance(self.refresh_neighbors, bool):
            raise TypeError(f"refresh_neighbors must be a bool, got {type(self.refresh_neighbors).__name__}")
        if not isinstance(self.radius_backend, str):
            raise TypeError(f"radius_backend must be a string, got {type(self.radius_backend).__name__}")

    @classmethod
    def fields(cls) -> tuple:
        return _FIELDS

    @classmethod
    def merge(cls, options: Optional["AlignmentOptions"], overrides: dict) -> "AlignmentOptions":
        """``options`` (default: all defaults) with the keyword ``overrides`` applied."""
        if options is not None and not isinstance(options, AlignmentOptions):
            raise TypeError(f"options must be an AlignmentOptions, got {type(options).__name__}")
        if not overrides and options is not None:
            return options
        unknown = set(overrides) - set(cls.fields())
        if unknown:
            raise TypeError(f"se3_kernel_alignment() got unexpected keyword argument(s) {sorted(unknown)}")
        base = options if options is not None else cls()
        return dataclasses.replace(base, **overrides) if overrides else base


# The option names, read once (torch.compile cannot trace dataclasses.fields).
_FIELDS = tuple(f.name for f in dataclasses.fields(AlignmentOptions))


def check_iterations(iterations) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
    return iterations
