"""Exact neighbor search (pure torch, with optional torch-cluster / pyg-lib backends)."""
from .radius import available_backends, radius_pairs

__all__ = ["radius_pairs", "available_backends"]
