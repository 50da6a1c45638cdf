"""Small reference models used by the examples and the demo."""
from .egnn import EquivariantConv, EquivariantDenoiser, GaussianDistances, radius_graph

__all__ = ["EquivariantConv", "EquivariantDenoiser", "GaussianDistances", "radius_graph"]
