r"""Kernel correlation between a point set and a rigidly moved one: the sums
behind the SE(3) alignment loss.

For centred points :math:`\tilde{x}_i` (weights :math:`q_i`), :math:`\tilde{y}_j`
(weights :math:`p_j`) and a pose :math:`(R, t)` per graph, every quantity here is
a sum over same-graph pairs within the cutoff radius of the moved set
:math:`z_j = R\tilde{y}_j + t` of a pair weight :math:`\omega_{ij}`:

* the correlation :math:`\kappa = \sum_{ij} q_i p_j k(\tilde{x}_i, z_j)`;
* the moments of the E-step: :math:`\sum \omega_{ij}`, :math:`\sum \omega_{ij}
  \tilde{x}_i`, :math:`\sum \omega_{ij} \tilde{y}_j`, :math:`\sum \omega_{ij}
  \tilde{x}_i \tilde{y}_j^\top` and the second moments, from which
  :func:`.pose.pose_from_moments` solves the next pose.

Evaluators hold a batch: :class:`DenseCorrelation` (padded per-graph
``[B, n, m]`` matrices; :class:`BucketedDense` splits large batches by graph
size) and :class:`PairCorrelation` (per-row reductions over the neighbor pairs:
the fused native kernel, or pure-torch pairs streamed in chunks; O(N + M)
memory). All are differentiable by autograd.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import backends
from ..neighbors.radius import radius_pair_chunks
from ..ops import native
from ..ops.gaussian import EXP_FLOOR, band_setup, cut, exponent_block, gaussian, radius
from ..segments import graph_sum
from .pose import Moments


def em_coefs(sigmas: Tensor, coefs: Tensor) -> Tensor:
    """Band coefficients of the MM pair weight. Jensen's inequality on
    :math:`\\log\\kappa` turns the pose step into weighted least squares with
    weights :math:`\\sum_b c_b e^{-d^2/2\\sigma_b^2} / \\sigma_b^2`; for one band the
    factor is a constant and is dropped (only ratios of the weights matter)."""
    return coefs if sigmas.numel() == 1 else coefs / (sigmas * sigmas)


def _thin(p: Tensor, y: Tensor) -> Tensor:
    """``[p | p y | p |y|^2]`` per y point (``[..., m, 5]``): one product of a
    kernel block with it gives every E-step moment per x row."""
    p = p.unsqueeze(-1)
    return torch.cat([p, p * y, p * y.pow(2).sum(-1, keepdim=True)], -1)


def _sum_rows(v: Tensor) -> Tensor:
    """Per-graph sum over the padded rows of ``[B, n, ...]``."""
    return v.sum(1)


def _box_volume(lo: Tensor, hi: Tensor, floor: float) -> Tensor:
    """Volume of boxes ``[lo, hi]`` (empty ones: 0 per side), each side at least ``floor``."""
    return torch.where(hi >= lo, hi - lo, torch.zeros_like(hi)).clamp_min(floor).prod(-1)


class DenseCorrelation:
    """A batch as padded per-graph matrices: ``X [B, n, 3]``, ``Y [B, m, 3]``,
    weights ``Q [B, n]``, ``P [B, m]`` (zero on padding).

    Kernel blocks come out of one batched product of augmented ``[B, n, 5]``
    blocks (as in the tiled sums), and every E-step moment from one thin
    product ``K @ [P | P y | P |y|^2]``, so no weighted ``[B, n, m]`` matrix is
    formed; without autograd the exponent is built in place.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_x: Tensor, batch_y: Tensor, qx: Tensor, py: Tensor,
                 num_graphs: int):
        from torch_geometric.utils import to_dense_batch

        self.X, _ = to_dense_batch(x, batch_x, batch_size=num_graphs)
        self.Y, _ = to_dense_batch(y, batch_y, batch_size=num_graphs)
        self.Q, _ = to_dense_batch(qx, batch_x, batch_size=num_graphs)
        self.P, _ = to_dense_batch(py, batch_y, batch_size=num_graphs)

    def detached(self) -> "DenseCorrelation":
        out = object.__new__(DenseCorrelation)
        for name in ("X", "Y", "Q", "P"):
            setattr(out, name, getattr(self, name).detach())
        return out

    def _moved(self, R: Tensor, t: Tensor) -> Tensor:
        return self.Y @ R.transpose(-1, -2) + t.unsqueeze(-2)

    @staticmethod
    def _exponent(A: Tensor, Z: Tensor, scale: Tensor) -> Tensor:
        """``-scale * |a_i - z_j|^2``, at most 0 (see :func:`.exponent_block`)."""
        E = exponent_block(A, Z, scale)
        return E.clamp_max_(0) if not E.requires_grad else E.clamp_max(0)

    @staticmethod
    def _cut(E: Tensor, threshold: Optional[float], floor: float, nbr: Optional[Tensor]) -> Tensor:
        """Exponents beyond the cutoff (or outside a fixed mask) set to ``floor``."""
        if nbr is not None:
            return E.masked_fill_(~nbr, floor) if not E.requires_grad else E.masked_fill(~nbr, floor)
        return cut(E, threshold, floor)

    def _kernels(self, A: Tensor, Z: Tensor, sigmas: Tensor, coefs: Tensor, cutoff: Optional[float],
                 nbr: Optional[Tensor], with_em: bool) -> Tuple[Tensor, Tensor, Tensor]:
        """``(K, M, c)``: the kernel block is ``c * K`` ``[B, n, m]`` and ``M`` is
        proportional to the MM pair weight block (if ``with_em``). For one band
        ``c`` is its coefficient, applied to thin products instead of the block."""
        r = radius(sigmas, cutoff)
        inv, single, scale, threshold, floor = band_setup(sigmas, None if r is None else r * r)
        E = self._cut(self._exponent(A, Z, scale), threshold, floor, nbr)
        if single:
            K = E.exp_() if not E.requires_grad else E.exp()
            return K, K, coefs[0]
        bands = [(E * inv[b]).clamp_min_(EXP_FLOOR).exp_() for b in range(sigmas.numel())]
        K = sum(c * e for c, e in zip(coefs, bands))
        mm = sum(c * e for c, e in zip(em_coefs(sigmas, coefs), bands)) if with_em else K
        return K, mm, torch.ones_like(coefs[0])

    def neighbors(self, R: Tensor, t: Tensor, r: Optional[float]) -> Optional[Tensor]:
        """The mask ``[B, n, m]`` of pairs within ``r`` (``None``: every pair)."""
        if r is None:
            return None
        with torch.no_grad():
            return self._exponent(self.X, self._moved(R, t), torch.ones((), dtype=R.dtype,
                                                                         device=R.device)) >= -r * r

    def correlation(self, R: Tensor, t: Tensor, sigmas: Tensor, coefs: Tensor, cutoff: Optional[float],
                    nbr: Optional[Tensor] = None) -> Tensor:
        """``kappa [B]`` over the pairs within ``cutoff`` widest bandwidths (or the mask ``nbr``)."""
        K, _, c = self._kernels(self.X, self._moved(R, t), sigmas, coefs, cutoff, nbr, False)
        return (torch.bmm(K, self.P.unsqueeze(-1)).squeeze(-1) * self.Q).sum(-1) * c

    def estep(self, R: Tensor, t: Tensor, sigmas: Tensor, coefs: Tensor, cutoff: Optional[float],
              nbr: Optional[Tensor] = None) -> Tuple[Tensor, Moments]:
        """``kappa [B]`` at this pose and the moments of the MM pair weight."""
        K, mm, c = self._kernels(self.X, self._moved(R, t), sigmas, coefs, cutoff, nbr, True)
        mom = _row_moments(self.X, torch.bmm(mm, _thin(self.P, self.Y)), self.Q, _sum_rows)
        kappa = mom.mass * c if mm is K else (torch.bmm(K, self.P.unsqueeze(-1)).squeeze(-1) * self.Q).sum(-1)
        return kappa, mom

    def robust_estep(self, R: Tensor, t: Tensor, sigma2: Tensor, c: Tensor,
                     cutoff: Optional[float]) -> Moments:
        """Moments of the CPD posterior ``q_i p_j g_ij / (sum_j' p_j' g_ij' + c)``
        with ``g_ij = exp(-d_ij^2 / 2 sigma^2)``, a per-graph ``sigma2 [B]`` and
        pairs within ``cutoff`` bandwidths of their graph."""
        E = self._exponent(self.X, self._moved(R, t), 0.5 / sigma2)
        if cutoff is not None:  # the same exponent cut, -cutoff^2 / 2, for every graph
            half_c2 = torch.tensor(-0.5 * cutoff * cutoff, dtype=torch.float64)
            E = self._cut(E, float(torch.nextafter(half_c2, half_c2 - 1)), EXP_FLOOR, None)
        g = E.exp_() if not E.requires_grad else E.exp()
        KP = torch.bmm(g, _thin(self.P, self.Y))
        den = KP[..., 0] + c.unsqueeze(-1)
        return _row_moments(self.X, KP, self.Q / torch.where(den > 0, den, torch.ones_like(den)), _sum_rows)

    def bounding_volume(self, floor: float) -> Tensor:
        """Per-graph bounding-box volume of the x side, each side at least ``floor``."""
        occupied = (self.Q > 0).unsqueeze(-1)
        big = torch.finfo(self.X.dtype).max
        lo = torch.where(occupied, self.X, big).amin(1)
        hi = torch.where(occupied, self.X, -big).amax(1)
        return _box_volume(lo, hi, floor)

    def self_sums(self, sigmas: Tensor, coefs: Tensor, cutoff: Optional[float]) -> Tuple[Tensor, Tensor]:
        """Pose-independent ``kappa_XX`` and ``kappa_YY`` ``[B]``."""
        def one(A, W):
            K, _, c = self._kernels(A, A, sigmas, coefs, cutoff, None, False)
            return (torch.bmm(K, W.unsqueeze(-1)).squeeze(-1) * W).sum(-1) * c
        return one(self.X, self.Q), one(self.Y, self.P)


def _cat_graphs(parts, inverse: Tensor):
    """Concatenates per-bucket results (tensors or Moments) and restores graph order."""
    if isinstance(parts[0], Moments):
        return Moments(*(_cat_graphs([p[k] for p in parts], inverse) for k in range(len(Moments._fields))))
    return torch.cat(parts)[inverse]


class BucketedDense:
    """:class:`DenseCorrelation` on groups of similar-sized graphs, so that a
    batch of mixed sizes is not padded to its largest graph throughout. Same
    interface; per-graph arguments and results are split and merged here."""

    def __init__(self, x: Tensor, y: Tensor, batch_x: Tensor, batch_y: Tensor, qx: Tensor, py: Tensor,
                 num_graphs: int, buckets: int):
        size = torch.maximum(torch.bincount(batch_x, minlength=num_graphs),
                             torch.bincount(batch_y, minlength=num_graphs))
        groups = [g.sort().values for g in torch.sort(size, stable=True).indices.tensor_split(buckets)]
        self.groups = [g for g in groups if g.numel()]
        self.inverse = torch.argsort(torch.cat(self.groups))
        self.num_graphs = num_graphs
        self.parts = []
        for g in self.groups:
            rank = torch.full((num_graphs,), -1, dtype=torch.long, device=x.device)
            rank[g] = torch.arange(g.numel(), device=x.device)
            mx, my = rank[batch_x] >= 0, rank[batch_y] >= 0
            self.parts.append(DenseCorrelation(x[mx], y[my], rank[batch_x[mx]], rank[batch_y[my]], qx[mx],
                                               py[my], g.numel()))

    def detached(self) -> "BucketedDense":
        out = object.__new__(BucketedDense)
        out.__dict__.update(self.__dict__)
        out.parts = [part.detached() for part in self.parts]
        return out

    def _each(self, method: str, R: Tensor, t: Tensor, *args, per_graph=(), nbr=None):
        """Calls ``method`` on every bucket with its graphs' slice of ``R``, ``t``
        and of the arguments at the positions ``per_graph``."""
        out = []
        for k, (g, part) in enumerate(zip(self.groups, self.parts)):
            a = [v[g] if i in per_graph and isinstance(v, Tensor) else v for i, v in enumerate(args)]
            if nbr is not None:
                a.append(nbr[k])
            out.append(getattr(part, method)(R[g], t[g], *a))
        return out

    def neighbors(self, R, t, r):
        return None if r is None else self._each("neighbors", R, t, r)

    def correlation(self, R, t, sigmas, coefs, cutoff, nbr=None):
        return _cat_graphs(self._each("correlation", R, t, sigmas, coefs, cutoff, nbr=nbr), self.inverse)

    def estep(self, R, t, sigmas, coefs, cutoff, nbr=None):
        parts = self._each("estep", R, t, sigmas, coefs, cutoff, nbr=nbr)
        return (_cat_graphs([p[0] for p in parts], self.inverse),
                _cat_graphs([p[1] for p in parts], self.inverse))

    def robust_estep(self, R, t, sigma2, c, cutoff):
        return _cat_graphs(self._each("robust_estep", R, t, sigma2, c, cutoff, per_graph=(0, 1)),
                           self.inverse)

    def self_sums(self, sigmas, coefs, cutoff):
        parts = [part.self_sums(sigmas, coefs, cutoff) for part in self.parts]
        return tuple(_cat_graphs([p[k] for p in parts], self.inverse) for k in range(2))

    def bounding_volume(self, floor: float) -> Tensor:
        return _cat_graphs([part.bounding_volume(floor) for part in self.parts], self.inverse)


class PairCorrelation:
    """A batch as packed points. Every evaluation reduces the same-graph pairs
    within the cutoff of the moved set per x point: with the native extension in
    one fused pass (``kernel_row_sums``, no pair list), otherwise by streaming
    the pairs of a grid search in chunks; memory is O(N + M) (plus one chunk)."""

    def __init__(self, x: Tensor, y: Tensor, batch_x: Tensor, batch_y: Tensor, qx: Tensor, py: Tensor,
                 num_graphs: int, radius_backend: str = "auto", use_native: bool = True):
        self.x, self.y, self.bx, self.by, self.q, self.p = x, y, batch_x, batch_y, qx, py
        self.num_graphs = num_graphs
        self.radius_backend = radius_backend
        self.use_native = use_native  # chosen by the backend registry
        self._estep_native = None

    def detached(self) -> "PairCorrelation":
        return PairCorrelation(self.x.detach(), self.y.detach(), self.bx, self.by, self.q.detach(),
                               self.p.detach(), self.num_graphs, self.radius_backend, self.use_native)

    def _moved(self, R: Tensor, t: Tensor) -> Tensor:
        return (R[self.by] @ self.y.unsqueeze(-1)).squeeze(-1) + t[self.by]

    def _chunks(self, a: Tensor, ba: Tensor, b: Tensor, bb: Tensor, r: Optional[float]):
        """``(i, j)`` chunks of the pairs within ``r`` (``None``: every same-graph pair)."""
        if r is None:  # a radius beyond every distance in the batch
            both = torch.cat([a, b], 0).detach()
            span = float((both.max(0).values - both.min(0).values).norm()) if both.numel() else 0.0
            r = 2 * span + 1.0
        yield from radius_pair_chunks(a.detach(), b.detach(), r, ba, bb, self.num_graphs,
                                      self.radius_backend)

    def neighbors(self, R: Tensor, t: Tensor, r: Optional[float]) -> Tensor:
        """``[2, E]`` pairs (row 0 indexes x, row 1 y) within ``r`` at this pose."""
        chunks = list(self._chunks(self.x, self.bx, self._moved(R, t), self.by, r))
        if not chunks:
            return torch.empty(2, 0, dtype=torch.long, device=self.x.device)
        return torch.stack([torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])])

    def _row_sums(self, a: Tensor, ba: Tensor, b: Tensor, bb: Tensor, cutoff: Optional[float],
                  nbr: Optional[Tensor], sigmas: Tensor, coefs: Tensor, right: Tensor) -> Tensor:
        """``sum_j k(a_i, b_j) right_j`` per row ``i`` of ``a`` ``[N, F]``, over the
        pairs within ``cutoff`` widest bandwidths (or the fixed list ``nbr``)."""
        if nbr is None and self.use_native:
            return native.kernel_row_sums(a, b, right, ba, bb, sigmas, coefs, cutoff, self.num_graphs)
        out = right.new_zeros(a.size(0), right.size(1))
        pairs = [tuple(nbr)] if nbr is not None else self._chunks(a, ba, b, bb, radius(sigmas, cutoff))
        for i, j in pairs:
            d2 = (a[i] - b[j]).pow(2).sum(-1)
            out = out.index_add(0, i, gaussian(d2, sigmas, coefs).unsqueeze(-1) * right[j])
        return out

    def _graph_sum(self, values: Tensor) -> Tensor:
        return graph_sum(values, self.bx, self.num_graphs)

    def correlation(self, R: Tensor, t: Tensor, sigmas: Tensor, coefs: Tensor, cutoff: Optional[float],
                    nbr: Optional[Tensor] = None) -> Tensor:
        z = self._moved(R, t)
        # x the only input that needs a gradient (the usual loss: a prediction against
        # a detached pose and target): one sweep gives it, see row_sums_first_moment.
        if nbr is None and self.use_native and torch.is_grad_enabled() and self.x.requires_grad and \
                native.row_sums_first_moment_applies(self.x, z, self.p, sigmas, coefs):
            rows = native.row_sums_first_moment(self.x, z, self.p, self.bx, self.by, sigmas, coefs, cutoff,
                                                self.num_graphs)
            return self._graph_sum(self.q * rows)
        rows = self._row_sums(self.x, self.bx, z, self.by, cutoff, nbr, sigmas, coefs, self.p.unsqueeze(-1))
        return self._graph_sum(self.q * rows[:, 0])

    def _per_graph_estep(self, sigmas: Tensor, R: Tensor, t: Tensor) -> bool:
        """Whether the registry gives the E-step to the one-pass native op (one
        band, small graphs, nothing to differentiate: the default detached pose)."""
        if not self.use_native:
            return False
        needs_grad = torch.is_grad_enabled() and any(
            v.requires_grad for v in (self.x, self.y, self.q, self.p, R, t, sigmas))
        if needs_grad:
            return False
        if self._estep_native is None:  # graph sizes are fixed: decide once per batch
            problem = backends.Problem.of(self.x, bands=sigmas.numel(),
                                          batches=(self.bx, self.by, self.num_graphs))
            self._estep_native = backends.select("estep", "auto", problem) == "native"
        return self._estep_native

    def estep(self, R: Tensor, t: Tensor, sigmas: Tensor, coefs: Tensor, cutoff: Optional[float],
              nbr: Optional[Tensor] = None) -> Tuple[Tensor, Moments]:
        if nbr is None and self._per_graph_estep(sigmas, R, t):
            out = native.estep_moments(self.x, self.y, self.q, self.p, self.bx, self.by, R, t, sigmas,
                                       em_coefs(sigmas, coefs), cutoff, self.num_graphs)
            mom = Moments(out[:, 0], out[:, 1:4], out[:, 4:7], out[:, 7:16].view(-1, 3, 3), out[:, 16],
                          out[:, 17])
            return mom.mass, mom  # one band: em_coefs is the coefficient itself
        rows = self._row_sums(self.x, self.bx, self._moved(R, t), self.by, cutoff, nbr, sigmas,
                              em_coefs(sigmas, coefs), _thin(self.p, self.y))
        mom = _row_moments(self.x, rows, self.q, self._graph_sum)
        if sigmas.numel() == 1:  # the rows carry the band's coefficient (em_coefs keeps it)
            return mom.mass, mom
        return self.correlation(R, t, sigmas, coefs, cutoff, nbr), mom

    def robust_estep(self, R: Tensor, t: Tensor, sigma2: Tensor, c: Tensor,
                     cutoff: Optional[float]) -> Moments:
        # A per-graph bandwidth as a unit bandwidth on coordinates divided by it.
        scale = sigma2.sqrt()
        one = torch.ones(1, dtype=self.x.dtype, device=self.x.device)
        x, z = self.x / scale[self.bx, None], self._moved(R, t) / scale[self.by, None]
        rows = self._row_sums(x, self.bx, z, self.by, cutoff, None, one, one, _thin(self.p, self.y))
        den = rows[:, 0] + c[self.bx]
        return _row_moments(self.x, rows, self.q / torch.where(den > 0, den, torch.ones_like(den)),
                            self._graph_sum)

    def bounding_volume(self, floor: float) -> Tensor:
        idx = self.bx.unsqueeze(-1).expand(-1, 3)
        lo = self.x.new_full((self.num_graphs, 3), float("inf")).scatter_reduce(0, idx, self.x, "amin")
        hi = self.x.new_full((self.num_graphs, 3), float("-inf")).scatter_reduce(0, idx, self.x, "amax")
        return _box_volume(lo, hi, floor)

    def self_sums(self, sigmas: Tensor, coefs: Tensor, cutoff: Optional[float]) -> Tuple[Tensor, Tensor]:
        def one(a, b, w):
            if self.use_native:  # the points are centred
                return native.self_sum(a, b, w, sigmas, coefs, cutoff, self.num_graphs, centred=True)
            rows = self._row_sums(a, b, a, b, cutoff, None, sigmas, coefs, w.unsqueeze(-1))
            return graph_sum(w * rows[:, 0], b, self.num_graphs)
        return one(self.x, self.bx, self.q), one(self.y, self.by, self.p)


def _row_moments(X: Tensor, rows: Tensor, row_scale: Tensor, reduce) -> Moments:
    """Moments of ``w_ij = row_scale_i K_ij p_j`` from the per-row sums
    ``rows = K @ [p | p y | p |y|^2]`` ``[..., n, 5]``; ``reduce`` sums rows per
    graph, once, over all 18 moment columns side by side."""
    W = row_scale.unsqueeze(-1) * rows
    w0 = W[..., :1]
    Wy = W[..., 1:4]
    cols = torch.cat([w0, w0 * X, Wy, (X.unsqueeze(-1) * Wy.unsqueeze(-2)).flatten(-2),
                      w0 * X.pow(2).sum(-1, keepdim=True), W[..., 4:5]], -1)
    out = reduce(cols)
    return Moments(out[..., 0], out[..., 1:4], out[..., 4:7], out[..., 7:16].unflatten(-1, (3, 3)),
                   out[..., 16], out[..., 17])


# Large batches on the dense path are split into up to MAX_BUCKETS groups of
# similar-sized graphs (at least GRAPHS_PER_BUCKET each), each padded only to its
# own largest graph.
MAX_BUCKETS = 8
GRAPHS_PER_BUCKET = 256


def make_evaluator(backend: str, radius_backend: str, x: Tensor, y: Tensor, batch_x: Tensor, batch_y: Tensor,
                   q: Tensor, p: Tensor, num_graphs: int):
    """The evaluator of the alignment backend ``backend`` (``"dense"``,
    ``"pairs"`` or ``"native"``, as chosen by :func:`tg_rapidalign.backends.select`)."""
    if backend == "dense":
        buckets = min(MAX_BUCKETS, num_graphs // GRAPHS_PER_BUCKET)
        if buckets > 1:
            return BucketedDense(x, y, batch_x, batch_y, q, p, num_graphs, buckets)
        return DenseCorrelation(x, y, batch_x, batch_y, q, p, num_graphs)
    return PairCorrelation(x, y, batch_x, batch_y, q, p, num_graphs, radius_backend,
                           use_native=backend == "native")
