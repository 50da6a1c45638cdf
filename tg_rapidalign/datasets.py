"""Deprecated location of :mod:`tg_rapidalign.apps.datasets` (an application on top of
the core package); importing it from here warns and forwards every name."""
import warnings

from .apps import datasets as _moved

warnings.warn("tg_rapidalign.datasets moved to tg_rapidalign.apps.datasets; the old path will be "
              "removed in a future release", DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_moved, name)
