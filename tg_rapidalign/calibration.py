"""Deprecated location of :mod:`tg_rapidalign.apps.calibration` (an application on top of
the core package); importing it from here warns and forwards every name."""
import warnings

from .apps import calibration as _moved

warnings.warn("tg_rapidalign.calibration moved to tg_rapidalign.apps.calibration; the old path will be "
              "removed in a future release", DeprecationWarning, stacklevel=2)


def __getattr__(name):
    return getattr(_moved, name)
