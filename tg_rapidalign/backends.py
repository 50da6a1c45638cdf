r"""The one place that knows the backends: their names, what each supports, and
the ``auto`` rule.

Every op that has more than one implementation asks :func:`select` which one to
run. An *op* here is a family of computations with one contract:

===============  ====================================================  ==============================
op               what it computes                                      backends (``auto`` order)
===============  ====================================================  ==============================
``kernel_sums``  per-graph kernel sums (MMD, cosine)                   dense, native, tiled
``alignment``    kernel correlation and E-step moments of a pose       native, dense, pairs
``radius``       neighbor pairs within a radius                        dense, native, torch_cluster,
                                                                       pyg_lib, grid
``estep``        the alignment E-step of one band in one pass          native, torch
``polar``        the nearest proper rotation of ``3 x 3`` matrices     native, torch
===============  ====================================================  ==============================

The rule (:func:`select`): **the first backend in the op's order that supports
the problem.** A backend supports a problem when it is installed and built for
the device, takes the dtype, dimension and number of bands, the size limits of
its kind hold, and it can give the gradients asked for. The orders encode
one preference: the fused native kernel, except that a *padded dense* path
goes first where the batch is so small that its few large tensor ops cost less
than the native kernel's set-up (kernel sums and radius search; the padded
sums also keep double backward for small batches), and the pure-torch streaming
path (``tiled``, ``pairs``, ``grid``) last, as it always applies. External
libraries (torch-cluster, pyg-lib) are taken by ``auto`` on CUDA only, where
they beat the pure-torch grid.

A backend asked for by name is checked the same way, except for the size limits
(``"dense"`` on a large batch is allowed: it is the caller's memory), and
refused with a :class:`ValueError` that says why. Capability limits of the
native kernels (bands, dimension, points per graph for the one-pass E-step,
devices) are read from the compiled extension (:data:`.ops.native.LIMITS`).

While ``torch.compile`` traces a call, graph sizes are not read on the host
(largest graphs are bounded by the sides' node counts) and ``auto`` skips the
padded dense paths, whose padding needs those sizes: a compiled loss runs the
native kernels, with no graph break, when the extension is built.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from ._validation import compiling
from .ops import native

# Padded dense sizes (entries of the padded [B, n, m] blocks) under which the
# dense paths are taken by ``auto``. Kernel sums: a small training batch, where
# the padded sums' few large ops beat the native set-up. Alignment: as long as
# the padded batch fits comfortably in memory (the fallback without native).
DENSE_KERNEL_SUMS_ENTRIES = 1 << 21
DENSE_ALIGNMENT_PER_GRAPH = 1 << 16
DENSE_ALIGNMENT_ENTRIES = 1 << 27
# Below this many candidate pairs (N * M) the all-pairs distance matrix is cheapest.
DENSE_RADIUS_PAIRS = 1 << 16


@dataclass
class Problem:
    """What an op is asked to do, as the backends see it.

    ``sizes`` is a callable returning ``(num_graphs, largest_x, largest_y)``
    (the largest graph of each side); it is only called when a size limit is
    consulted, since it needs the graph sizes on the host.
    """
    points: Tensor
    dim: int
    bands: int = 1
    needs_grad: bool = False
    pairs: int = 0
    sizes: Optional[Callable[[], Tuple[int, int, int]]] = None
    _sizes: Optional[Tuple[int, int, int]] = field(default=None, repr=False)

    @classmethod
    def of(cls, points: Tensor, *, bands: int = 1, needs_grad: bool = False, pairs: int = 0,
           batches: Optional[Tuple[Tensor, Tensor, int]] = None) -> "Problem":
        sizes = None
        if batches is not None:
            bx, by, num_graphs = batches
            sizes = lambda: largest_graphs(bx, by, num_graphs)  # noqa: E731
        return cls(points, points.size(-1), bands, needs_grad, pairs, sizes)

    def graph_sizes(self) -> Tuple[int, int, int]:
        if self._sizes is None:
            self._sizes = self.sizes() if self.sizes is not None else (1, 0, 0)
        return self._sizes

    def padded_entries(self) -> Tuple[int, int]:
        """``(largest graph pair n * m, the whole padded batch B * n * m)``."""
        num_graphs, nx, ny = self.graph_sizes()
        return nx * ny, num_graphs * nx * ny


def largest_graphs(batch_x: Tensor, batch_y: Tensor, num_graphs: int) -> Tuple[int, int, int]:
    """``(num_graphs, largest graph of x, largest graph of y)`` (a host sync).
    While compiling, the sides' node counts stand in as upper bounds (no sync)."""
    if num_graphs == 0:
        return 0, 0, 0
    if compiling():
        return num_graphs, batch_x.numel(), batch_y.numel()

    def largest(batch):
        if batch.numel() == 0:
            return 0
        return int(torch.bincount(batch, minlength=num_graphs).max())

    return num_graphs, largest(batch_x), largest(batch_y)


# -- capability checks: None when supported, else the reason --------------------

def _native_kernel(op: str) -> Callable[[Problem, bool], Optional[str]]:
    def check(p: Problem, auto: bool) -> Optional[str]:
        if not native.AVAILABLE:
            return "the native extension is not built (" + native.UNAVAILABLE_REASON + ")"
        if not native.has_kernel(op, p.points.device):
            return f"the native extension has no {p.points.device.type} kernel for {op}"
        if p.points.dtype not in (torch.float32, torch.float64):
            return f"native kernels take float32/float64 points, got {p.points.dtype}"
        if not 1 <= p.dim <= native.LIMITS["MAX_DIM"]:
            return f"native kernels take points of dimension <= {native.LIMITS['MAX_DIM']}, got {p.dim}"
        if p.bands > native.LIMITS["MAX_BANDS"]:
            return f"native kernels take at most {native.LIMITS['MAX_BANDS']} bands, got {p.bands}"
        return None
    return check


def _native_estep(p: Problem, auto: bool) -> Optional[str]:
    reason = _native_kernel("estep_moments")(p, auto)
    if reason is None and (p.bands != 1 or p.dim != 3):
        reason = "the one-pass E-step takes one band and 3-D points"
    if reason is None and p.needs_grad:
        reason = "the one-pass E-step is not differentiable"
    if reason is None:
        _, nx, ny = p.graph_sizes()
        if max(nx, ny) > native.LIMITS["ESTEP_GRAPH_POINTS"]:
            limit = native.LIMITS["ESTEP_GRAPH_POINTS"]
            reason = f"the one-pass E-step takes graphs of at most {limit} points"
    return reason


def _native_polar(p: Problem, auto: bool) -> Optional[str]:
    reason = _native_kernel("special_polar3")(p, auto)
    if reason is None and p.needs_grad:
        reason = "the native polar step is not differentiable"
    return reason


_DENSE_WHILE_COMPILING = "the dense path pads graphs to a size read on the host (a graph break)"


def _dense_kernel_sums(p: Problem, auto: bool) -> Optional[str]:
    if auto and compiling():
        return _DENSE_WHILE_COMPILING
    if auto and p.padded_entries()[1] > DENSE_KERNEL_SUMS_ENTRIES:
        return "the padded batch is too large for the dense path"
    return None


def _dense_alignment(p: Problem, auto: bool) -> Optional[str]:
    if auto and compiling():
        return _DENSE_WHILE_COMPILING
    per_graph, total = p.padded_entries()
    if auto and (per_graph > DENSE_ALIGNMENT_PER_GRAPH or total > DENSE_ALIGNMENT_ENTRIES):
        return "the padded batch is too large for the dense path"
    return None


def _dense_radius(p: Problem, auto: bool) -> Optional[str]:
    if auto and p.pairs > DENSE_RADIUS_PAIRS:
        return "too many candidate pairs for the all-pairs search"
    return None


def has_torch_cluster() -> bool:
    """Whether torch-cluster is installed (the ``torch_cluster`` radius backend)."""
    return importlib.util.find_spec("torch_cluster") is not None


def has_pyg_lib_radius() -> bool:
    """Whether pyg-lib is installed with its radius search (the ``pyg_lib`` backend)."""
    try:
        import torch_geometric.typing as pyg_typing
    except ImportError:  # pragma: no cover - torch_geometric is a dependency
        return False
    return bool(getattr(pyg_typing, "WITH_RADIUS", False))


def _external(installed: Callable[[], bool], package: str) -> Callable[[Problem, bool], Optional[str]]:
    def check(p: Problem, auto: bool) -> Optional[str]:
        if not installed():
            return f"{package} is not installed"
        if auto and not p.points.is_cuda:
            return f"auto takes {package} on CUDA only"
        return None
    return check


def _always(p: Problem, auto: bool) -> Optional[str]:
    return None


@dataclass(frozen=True)
class Backend:
    """One implementation of an op: its name, whether it is pure torch, a line
    for the docs, and its capability check ``(problem, auto) -> reason or None``."""
    name: str
    pure_torch: bool
    summary: str
    check: Callable[[Problem, bool], Optional[str]]


_NATIVE_SUMMARY = "fused C++/CUDA kernel over a grid hash, no pair list, O(N + M) memory"

REGISTRY: Dict[str, Tuple[Backend, ...]] = {
    "kernel_sums": (
        Backend("dense", True, "padded per-graph [B, n, m] matrices", _dense_kernel_sums),
        Backend("native", False, _NATIVE_SUMMARY, _native_kernel("kernel_row_sums")),
        Backend("tiled", True, "block-sparse Morton tiles, O(N) memory", _always),
    ),
    "alignment": (
        Backend("native", False, _NATIVE_SUMMARY, _native_kernel("kernel_row_sums")),
        Backend("dense", True, "padded per-graph matrices, bucketed by size", _dense_alignment),
        Backend("pairs", True, "neighbor pairs streamed in chunks", _always),
    ),
    "radius": (
        Backend("dense", True, "all-pairs distance matrix", _dense_radius),
        Backend("native", False, "C++/CUDA grid search", _native_kernel("radius_pairs")),
        Backend("torch_cluster", False, "torch_cluster.radius",
                _external(lambda: has_torch_cluster(), "torch-cluster")),
        Backend("pyg_lib", False, "pyg-lib's radius", _external(lambda: has_pyg_lib_radius(), "pyg-lib")),
        Backend("grid", True, "pure-torch cell list, streamed", _always),
    ),
    "estep": (
        Backend("native", False, "per-graph moments in one pass (CPU)", _native_estep),
        Backend("torch", True, "row sums of the kernel times [p, p y, p |y|^2]", _always),
    ),
    "polar": (
        Backend("native", False, "Horn's quaternion with Jacobi sweeps", _native_polar),
        Backend("torch", True, "batched SVD with a stable backward", _always),
    ),
}


def names(op: str) -> Tuple[str, ...]:
    """The backend names of ``op``, ``"auto"`` first (the valid ``backend=`` values)."""
    return ("auto",) + tuple(b.name for b in _backends(op))


def _backends(op: str) -> Tuple[Backend, ...]:
    try:
        return REGISTRY[op]
    except KeyError:
        raise ValueError(f"unknown op {op!r}; ops: {sorted(REGISTRY)}") from None


def why_not(op: str, name: str, problem: Problem, auto: bool = False) -> Optional[str]:
    """Why backend ``name`` cannot run ``problem`` (``None`` if it can)."""
    for backend in _backends(op):
        if backend.name == name:
            return backend.check(problem, auto)
    raise ValueError(f"backend must be one of {names(op)}, got {name!r}")


def select(op: str, requested: str, problem: Problem) -> str:
    """The backend to run: ``requested`` if it supports the problem (else a
    :class:`ValueError` naming the reason), or for ``"auto"`` the first backend
    in the op's order that does."""
    if not isinstance(requested, str):
        raise TypeError(f"backend must be a string, got {type(requested).__name__}")
    if requested != "auto":
        reason = why_not(op, requested, problem)
        if reason is not None:
            raise ValueError(f"backend={requested!r} cannot run this {op} call: {reason}")
        return requested
    for backend in _backends(op):
        if backend.check(problem, True) is None:
            return backend.name
    raise RuntimeError(f"no backend of {op} supports this call")  # pragma: no cover - last is _always


def available(op: str, points: Optional[Tensor] = None) -> Tuple[str, ...]:
    """The backends of ``op`` usable in this environment for points like
    ``points`` (default: 3-D float32 points on the CPU), ignoring size limits."""
    if points is None:
        points = torch.zeros(0, 3)
    problem = Problem.of(points)
    return tuple(b.name for b in _backends(op) if b.check(problem, False) is None)


def native_supports(points: Tensor, bands: int = 1, op: str = "kernel_row_sums") -> bool:
    """Whether the native ``op`` takes these points and bands."""
    return _native_kernel(op)(Problem.of(points, bands=bands), False) is None


def describe() -> str:
    """A table of every op's backends in ``auto`` order, with what is usable here."""
    lines = []
    for op, backends in REGISTRY.items():
        usable = available(op)
        for b in backends:
            mark = "yes" if b.name in usable else "no"
            lines.append(f"{op:12s} {b.name:14s} {'torch' if b.pure_torch else 'native/ext':10s} "
                         f"{mark:4s} {b.summary}")
    return "\n".join(lines)
