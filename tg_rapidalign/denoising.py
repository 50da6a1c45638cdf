"""Deprecated location of :mod:`tg_rapidalign.apps.denoising` (an application on top of
the core package); importing it from here warns and forwards every name."""
import warnings

from .apps import denoising as _moved

warnings.warn("tg_rapidalign.denoising moved to tg_rapidalign.apps.denoising; the old path will be "
              "removed in a future release", DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_moved, name)
