"""Deprecated location of :mod:`tg_rapidalign.apps.models` (the reference models of
the demo and the examples); importing it from here warns and forwards every name."""
import warnings

from ..apps import models as _moved
from ..apps.models import EquivariantConv, EquivariantDenoiser, GaussianDistances, radius_graph

warnings.warn("tg_rapidalign.models moved to tg_rapidalign.apps.models; the old path will be removed in a "
              "future release", DeprecationWarning, stacklevel=2)

__all__ = ["EquivariantConv", "EquivariantDenoiser", "GaussianDistances", "radius_graph"]


def __getattr__(name):
    return getattr(_moved, name)
