"""tg_rapidalign: fast, differentiable kernel losses between graphs embedded in space."""
from .flows import DrMMDFlow, FlowResult, exact_w2
from .functional import (
    AlignmentResult,
    drmmd,
    drmmd_from_gram,
    drmmd_witness_grad,
    group_mmd,
    kabsch_rmsd,
    kernel_cosine,
    kernel_mmd,
    kernel_sums,
    mmd_witness_grad,
    radius_pairs,
    se3_kernel_alignment,
    special_polar,
    weighted_procrustes,
)
from .io import load_kernel, save_kernel
from .kernels import GaussianKernel, MultiBandGaussianKernel
from .nn import DrMMDLoss, KernelMMDLoss, MMDLoss, SE3KernelAlignmentLoss
from .schedules import BandwidthSchedule
from .stats import TwoSampleResult, mmd_two_sample_test
from .version import __version__
from .weights import degree_weights, normalize_weights, uniform_weights

__all__ = [
    "radius_pairs",
    "kernel_mmd",
    "kernel_cosine",
    "kernel_sums",
    "weighted_procrustes",
    "kabsch_rmsd",
    "special_polar",
    "se3_kernel_alignment",
    "AlignmentResult",
    "GaussianKernel",
    "MultiBandGaussianKernel",
    "KernelMMDLoss",
    "SE3KernelAlignmentLoss",
    "BandwidthSchedule",
    "drmmd",
    "drmmd_from_gram",
    "drmmd_witness_grad",
    "mmd_witness_grad",
    "DrMMDLoss",
    "DrMMDFlow",
    "FlowResult",
    "exact_w2",
    "group_mmd",
    "MMDLoss",
    "mmd_two_sample_test",
    "TwoSampleResult",
    "save_kernel",
    "load_kernel",
    "normalize_weights",
    "uniform_weights",
    "degree_weights",
    "__version__",
]
