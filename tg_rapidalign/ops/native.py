r"""The native kernels (``csrc/``) as ``torch.ops.tg_rapidalign`` operators.

The C++/CUDA extension registers one schema per op with ``TORCH_LIBRARY`` and a
kernel per device; this module adds their fake (meta) kernels and autograd, so
that they work under ``torch.compile(fullgraph=True)`` and pass
``torch.library.opcheck``. Where the install did not build the extension
(pip's default isolated build has no torch), the first import compiles it into
a per-user cache (:mod:`.native_jit`); where it cannot be had (no C++ compiler),
importing the package warns once, saying why and what fixes it, and every op
falls back to its pure-torch path.

* ``radius_pairs(x, y, r, batch_x, batch_y, num_graphs) -> [2, E]``
* ``kernel_row_sums(a, b, cb, batch_a, batch_b, sigmas, coefs, cutoff, num_graphs) -> [N, C]``:

  .. math::
      T_{ic} = \sum_{j \in g(i),\ \lVert a_i - b_j \rVert \le r}
      \Big(\sum_k c_k e^{-\lVert a_i - b_j \rVert^2 / 2\sigma_k^2}\Big)\, c^b_{jc},

  evaluated over a grid hash of ``b`` without forming a pair list, with the
  radius :math:`r = \mathrm{cutoff} \cdot \max_k \sigma_k` (a negative
  ``cutoff``: no cutoff). The ops take the cutoff in units of the widest band,
  not a radius, so a learnable bandwidth is never read on the host by the
  caller (a sync, and a graph break under ``torch.compile``). Kernel sums
  (MMD, cosine) and every moment of the alignment E-step are per-graph sums of
  these rows.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor

from ..segments import graph_sum
from . import native_build, native_jit

_LIMIT_NAMES = ("MAX_BANDS", "MAX_DIM", "GRAPH_SCAN_POINTS", "ESTEP_GRAPH_POINTS", "WITH_CUDA", "ESTEP_CUDA")


def _stale(module) -> str:
    """Why a loaded extension is unusable (``""`` if it is current)."""
    missing = [name for name in _LIMIT_NAMES if not hasattr(module, name)]
    return f"built from older sources: it lacks {', '.join(missing)}" if missing else ""


def _load() -> native_jit.Outcome:
    """The extension installed with the package, else one compiled into the
    per-user cache (on first import, see :mod:`.native_jit`); one warning says
    why it is unavailable and what fixes it (an error with
    ``TG_RAPIDALIGN_REQUIRE_EXT=1``)."""
    outcome = native_jit.find_or_build(_stale)
    if outcome.module is None:  # pragma: no cover - depends on the install
        message = (f"tg_rapidalign: the native extension is not available: {outcome.reason}. Using the "
                   f"pure-torch paths, which are slower. To fix: {outcome.fix}")
        if native_build.switch(native_build.REQUIRE_EXT):
            raise ImportError(message + f" ({native_build.REQUIRE_EXT}=1 makes this an error)")
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return outcome


_OUTCOME = _load()
_C = _OUTCOME.module
AVAILABLE = _C is not None
#: Why the extension is unavailable (``""`` when it is available).
UNAVAILABLE_REASON = _OUTCOME.reason
#: Where the loaded extension came from: installed with the package, or
#: compiled on first import into the per-user cache (``""`` when unavailable).
ORIGIN = _OUTCOME.origin

#: The native kernels' capability limits, as compiled into the extension
#: (``csrc/common/limits.h``): ``MAX_BANDS``, ``MAX_DIM``, ``GRAPH_SCAN_POINTS``
#: (graphs up to this size are scanned whole), ``ESTEP_GRAPH_POINTS`` (the
#: one-pass E-step's largest graph), ``WITH_CUDA``, ``ESTEP_CUDA``. Empty
#: without the extension.
LIMITS = {name: int(getattr(_C, name)) for name in _LIMIT_NAMES} if AVAILABLE else {}


_OPS = ("radius_pairs", "kernel_row_sums", "kernel_row_sums_backward", "estep_moments", "special_polar3")
# (op, device type) -> whether the extension registered a kernel, read once from
# the dispatcher (a plain dict lookup is all torch.compile has to trace).
_KERNELS = {(op, device): torch._C._dispatch_has_kernel_for_dispatch_key(f"tg_rapidalign::{op}", key)
            for op in _OPS for device, key in (("cpu", "CPU"), ("cuda", "CUDA"))} if AVAILABLE else {}


def has_kernel(op: str, device: torch.device) -> bool:
    """Whether the extension registered a kernel of ``tg_rapidalign::op`` for this device."""
    return _KERNELS.get((op, device.type), False)


def _cutoff(cutoff: Optional[float]) -> float:
    return -1.0 if cutoff is None else float(cutoff)


def _as_3d(p: Tensor) -> Tensor:
    """Points of dimension below 3 padded with zero coordinates (same distances)."""
    return p if p.size(1) == 3 else torch.nn.functional.pad(p, (0, 3 - p.size(1)))


def radius_pairs(x: Tensor, y: Tensor, r: float, batch_x: Tensor, batch_y: Tensor,
                 num_graphs: int) -> Tensor:
    return torch.ops.tg_rapidalign.radius_pairs(_as_3d(x), _as_3d(y), float(r), batch_x, batch_y,
                                                num_graphs)


def kernel_row_sums(a: Tensor, b: Tensor, cb: Tensor, batch_a: Tensor, batch_b: Tensor, sigmas: Tensor,
                    coefs: Tensor, cutoff: Optional[float], num_graphs: int) -> Tensor:
    """``T [N, C]`` (see the module docstring); differentiable in ``a``, ``b``,
    ``cb``, ``sigmas`` and ``coefs``."""
    return torch.ops.tg_rapidalign.kernel_row_sums(_as_3d(a), _as_3d(b), cb, batch_a, batch_b,
                                                   sigmas.to(a.dtype), coefs.to(a.dtype), _cutoff(cutoff),
                                                   num_graphs)


class _RowSumsFirstMoment(torch.autograd.Function):
    r"""One band, ``T_i = \sum_j k(a_i, b_j) w_j`` with the gradient in ``a`` from
    the same pass: the rows also carry :math:`\sum_j k_{ij} w_j b_j`, and
    :math:`\partial T_i / \partial a_i = -(a_i T_i - \sum_j k_{ij} w_j b_j) / \sigma^2`,
    so the backward needs no second sweep over the pairs. The rows are computed
    outside (without autograd) and passed in: only ``a``, the rows and the band
    enter ``apply`` (torch.compile refuses an ``apply`` whose inputs repeat a
    tensor, as ``batch_a is batch_b`` would)."""

    @staticmethod
    def forward(ctx, a, rows, sigmas):
        ctx.save_for_backward(a, rows, sigmas)
        return rows[:, 0].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        a, rows, sigmas = ctx.saved_tensors
        inv = (1.0 / sigmas.to(a.dtype).pow(2)).reshape(())
        ga = (grad * -inv).unsqueeze(1) * (a * rows[:, :1] - rows[:, 1:4])
        return ga, None, None


def row_sums_first_moment_applies(a: Tensor, b: Tensor, w: Tensor, sigmas: Tensor, coefs: Tensor) -> bool:
    """Whether :func:`row_sums_first_moment` computes the gradient: one fixed band,
    ``b`` and ``w`` constants, 3-D points. The gradient subtracts two first
    moments, so its rounding grows with the coordinates' size over the bandwidth,
    as float32 positions far from the origin limit the two-pass backward too
    (measured, float32, one graph of radius 20-40 with bandwidth 0.1-0.5: 1e-5 to
    8e-5 of the largest gradient against 8e-6 to 3e-5 for the two-pass one; 1.6e-6
    for a molecule). The alignment loss calls it on centred points."""
    return (sigmas.numel() == 1 and a.size(1) == 3 and not any(
        v.requires_grad for v in (b, w, sigmas, coefs)))


def row_sums_first_moment(a: Tensor, b: Tensor, w: Tensor, batch_a: Tensor, batch_b: Tensor,
                          sigmas: Tensor, coefs: Tensor, cutoff: Optional[float], num_graphs: int) -> Tensor:
    """``T [N]`` of one band and weights ``w [M]``, differentiable in ``a`` only
    (see :class:`_RowSumsFirstMoment`); callers check
    :func:`row_sums_first_moment_applies`."""
    with torch.no_grad():
        cb = torch.cat([w.unsqueeze(1), w.unsqueeze(1) * b], 1)
        rows = kernel_row_sums(a.detach(), b, cb, batch_a, batch_b, sigmas, coefs, cutoff, num_graphs)
    return _RowSumsFirstMoment.apply(a, rows, sigmas)


def self_sum(x: Tensor, batch: Tensor, w: Tensor, sigmas: Tensor, coefs: Tensor, cutoff: Optional[float],
             num_graphs: int, centred: bool = False) -> Tensor:
    """``sum_ij w_i k(x_i, x_j) w_j`` per graph ``[num_graphs]``. With fixed
    bandwidths the gradient is symmetric in the two slots, so only the first slot
    is differentiated (one backward pass instead of two) and the result doubled;
    learnable bandwidths differentiate both (their gradient must not double).
    ``centred`` points (the alignment loss's) take the slot's gradient in ``x``
    from the forward sweep when it applies (see :func:`row_sums_first_moment`)."""
    if sigmas.requires_grad or coefs.requires_grad:
        rows = kernel_row_sums(x, x, w.unsqueeze(1), batch, batch, sigmas, coefs, cutoff, num_graphs)
        return graph_sum(w * rows[:, 0], batch, num_graphs)
    xd, wd = x.detach(), w.detach()
    if centred and torch.is_grad_enabled() and x.requires_grad and \
            row_sums_first_moment_applies(x, xd, wd, sigmas, coefs):
        rows = row_sums_first_moment(x, xd, wd, batch, batch, sigmas, coefs, cutoff, num_graphs)
    else:
        rows = kernel_row_sums(x, xd, wd.unsqueeze(1), batch, batch, sigmas, coefs, cutoff, num_graphs)[:, 0]
    half = graph_sum(w * rows, batch, num_graphs)  # the gradient of one slot
    return 2 * half - half.detach()


def estep_moments(x: Tensor, y: Tensor, q: Tensor, p: Tensor, batch_x: Tensor, batch_y: Tensor, R: Tensor,
                  t: Tensor, sigmas: Tensor, coefs: Tensor, cutoff: Optional[float],
                  num_graphs: int) -> Tensor:
    r"""The alignment E-step's moments per graph in one pass, ``[B, 18]``: with
    :math:`z_j = R_g y_j + t_g` and :math:`w_{ij} = q_i\, k(x_i, z_j)\, p_j` over the
    pairs of graph :math:`g` within ``cutoff`` bandwidths, the columns are :math:`\sum w`,
    :math:`\sum w x` (3), :math:`\sum w y` (3), :math:`\sum w x y^\top` (9,
    row-major), :math:`\sum w |x|^2` and :math:`\sum w |y|^2`. One band; sorted
    batches; not differentiable (the pose step is a constant of the gradient)."""
    return torch.ops.tg_rapidalign.estep_moments(x, y, q, p, batch_x, batch_y, R, t, sigmas.to(x.dtype),
                                                 coefs.to(x.dtype), _cutoff(cutoff),
                                                 num_graphs)


def special_polar3(S: Tensor) -> Tensor:
    """The nearest proper rotation to each ``S [B, 3, 3]`` in closed form (Horn's
    quaternion, Jacobi sweeps in float64); not differentiable."""
    return torch.ops.tg_rapidalign.special_polar3(S)


if AVAILABLE:
    from . import native_meta  # noqa: F401,E402  (fake kernels and autograd of the ops)
