"""Functional interface: every public op of the library."""
from ..neighbors.radius import radius_pairs
from .alignment import AlignmentResult, se3_kernel_alignment
from .drmmd import drmmd, drmmd_from_gram, drmmd_witness_grad, mmd_witness_grad
from .group_mmd import group_mmd
from .mmd import kernel_cosine, kernel_mmd, kernel_sums
from .procrustes import kabsch_rmsd, special_polar, weighted_procrustes

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
    "drmmd",
    "drmmd_from_gram",
    "drmmd_witness_grad",
    "mmd_witness_grad",
    "group_mmd",
]
