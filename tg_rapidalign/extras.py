"""Optional dependencies: one place that says which extra provides what.

The core package needs only torch and torch-geometric. Progress bars (tqdm),
figures (matplotlib), the calibration statistics and exact transport (scipy),
the built-in molecules (ase) and RDKit live in extras; a feature whose package
is missing raises an :class:`ImportError` that names the ``pip install`` line.
"""
import importlib
from typing import Any, Iterable, Optional

# module -> the extra of ``pip install "tg_rapidalign[<extra>]"`` that provides it.
EXTRAS = {
    "tqdm": "progress",
    "matplotlib": "plot",
    "scipy": "demo",
    "ase": "demo",
    "rdkit": "molecules",
    "torchmetrics": "metrics",
    "torch_cluster": "cluster",
}


def has(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it twice)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


class MissingExtraError(ImportError):
    """An optional package is missing; the message names the extra that installs it."""


def require(module: str, feature: str) -> Any:
    """Imports ``module`` (a dotted name) or raises a :class:`MissingExtraError`
    (an :class:`ImportError`) saying which ``feature`` needs it and which extra
    installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".", 1)[0]
        extra = EXTRAS.get(top, "all")
        raise MissingExtraError(f"{feature} needs the optional package {top!r}, which is not installed; "
                                f'install it with: pip install "tg_rapidalign[{extra}]"') from err


def progress(iterable: Iterable, enabled: bool = True, desc: Optional[str] = None, **kwargs) -> Iterable:
    """``tqdm(iterable, desc=desc, ...)`` when progress is ``enabled`` and tqdm is
    installed; the plain iterable otherwise (progress bars are an extra)."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, **kwargs)


def set_postfix(bar: Iterable, **values) -> None:
    """``bar.set_postfix(**values)`` on a progress bar of :func:`progress`;
    nothing when it is the plain iterable."""
    update = getattr(bar, "set_postfix", None)
    if update is not None:
        update(**values)
