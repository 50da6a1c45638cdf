"""Functional interface: every public op of the library."""
from ..neighbors.radius import radius_pairs
from .mmd import kernel_cosine, kernel_mmd, kernel_sums
from .procrustes import special_polar, weighted_procrustes

__all__ = [
    "radius_pairs",
    "kernel_mmd",
    "kernel_cosine",
    "kernel_sums",
    "weighted_procrustes",
    "special_polar",
]
