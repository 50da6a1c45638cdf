"""tg_rapidalign: fast, differentiable kernel losses between graphs embedded in space."""
from .functional import (
    AlignmentResult,
    kernel_cosine,
    kernel_mmd,
    kernel_sums,
    radius_pairs,
    se3_kernel_alignment,
    special_polar,
    weighted_procrustes,
)
from .kernels import GaussianKernel, MultiBandGaussianKernel
from .nn import KernelMMDLoss, SE3KernelAlignmentLoss
from .schedules import BandwidthSchedule
from .weights import degree_weights, normalize_weights, uniform_weights

__version__ = "0.1.0"

__all__ = [
    "radius_pairs",
    "kernel_mmd",
    "kernel_cosine",
    "kernel_sums",
    "weighted_procrustes",
    "special_polar",
    "se3_kernel_alignment",
    "AlignmentResult",
    "GaussianKernel",
    "MultiBandGaussianKernel",
    "KernelMMDLoss",
    "SE3KernelAlignmentLoss",
    "BandwidthSchedule",
    "normalize_weights",
    "uniform_weights",
    "degree_weights",
    "__version__",
]
