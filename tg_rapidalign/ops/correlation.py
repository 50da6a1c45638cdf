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
  :func:`pose_from_moments` solves the next pose.

Two evaluators hold a batch: :class:`DenseCorrelation` (padded per-graph
``[B, n, m]`` matrices; best for molecule-sized graphs) and
:class:`PairCorrelation` (an explicit list of neighbour pairs, O(N + M + E)
memory, for large graphs). Both are differentiable by autograd.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from ..kernels import evaluate_bands
from ..neighbors.radius import radius_pairs

Radius = Union[None, float, Tensor]  # None (no cutoff), one radius, or one per graph [B]


class Moments(NamedTuple):
    """Per-graph sums of a pair weight ``w_ij`` (E-step statistics)."""
    mass: Tensor  # [B]        sum w_ij
    mx: Tensor    # [B, 3]     sum w_ij x_i
    my: Tensor    # [B, 3]     sum w_ij y_j
    sxy: Tensor   # [B, 3, 3]  sum w_ij x_i y_j^T
    vx: Tensor    # [B]        sum w_ij |x_i|^2
    vy: Tensor    # [B]        sum w_ij |y_j|^2


def em_coefs(sigmas: Tensor, coefs: Tensor) -> Tensor:
    """Band coefficients of the MM pair weight. Jensen's inequality on
    :math:`\\log\\kappa` turns the pose step into weighted least squares with
    weights :math:`\\sum_b c_b e^{-d^2/2\\sigma_b^2} / \\sigma_b^2`; for one band the
    factor is a constant and is dropped (only ratios of the weights matter)."""
    return coefs if sigmas.numel() == 1 else coefs / (sigmas * sigmas)


def _r2(r: Radius) -> Union[float, Tensor]:
    """Squared radius, shaped ``[B, 1, 1]`` when given per graph (broadcasts over ``[..., B, n, m]``)."""
    return r * r if not isinstance(r, Tensor) else (r * r).view(-1, 1, 1)


def _outlier_posterior(g: Tensor, row_sum: Tensor, c: Tensor) -> Tensor:
    """``g / (row_sum + c)``, 0 where the denominator vanishes (no neighbour, no outlier term)."""
    den = row_sum + c
    return g / torch.where(den > 0, den, torch.ones_like(den))


class DenseCorrelation:
    """A batch as padded per-graph matrices: ``X [B, n, 3]``, ``Y [B, m, 3]``,
    weights ``Q [B, n]``, ``P [B, m]`` (zero on padding)."""

    def __init__(self, x: Tensor, y: Tensor, batch_x: Tensor, batch_y: Tensor, qx: Tensor, py: Tensor,
                 num_graphs: int):
        from torch_geometric.utils import to_dense_batch

        self.X, _ = to_dense_batch(x, batch_x, batch_size=num_graphs)
        self.Y, _ = to_dense_batch(y, batch_y, batch_size=num_graphs)
        self.Q, _ = to_dense_batch(qx, batch_x, batch_size=num_graphs)
        self.P, _ = to_dense_batch(py, batch_y, batch_size=num_graphs)
        self.x2 = self.X.pow(2).sum(-1)
        self.y2 = self.Y.pow(2).sum(-1)

    def detached(self) -> "DenseCorrelation":
        out = object.__new__(DenseCorrelation)
        for name in ("X", "Y", "Q", "P", "x2", "y2"):
            setattr(out, name, getattr(self, name).detach())
        return out

    def sqdist(self, R: Tensor, t: Tensor) -> Tensor:
        """``|x_i - (R y_j + t)|^2``: ``[..., B, n, m]`` for poses ``[..., B, 3, 3]``."""
        Z = self.Y @ R.transpose(-1, -2) + t.unsqueeze(-2)
        d2 = self.x2.unsqueeze(-1) + Z.pow(2).sum(-1).unsqueeze(-2) - 2 * self.X @ Z.transpose(-1, -2)
        return d2.clamp_min(0)

    def neighbours(self, R: Tensor, t: Tensor, r: Radius) -> Optional[Tensor]:
        """The mask ``[B, n, m]`` of pairs within ``r`` (``None``: every pair)."""
        return None if r is None else self.sqdist(R, t) <= _r2(r)

    @staticmethod
    def _within(d2: Tensor, k: Tensor, r: Radius, nbr: Optional[Tensor]) -> Tensor:
        """Zeroes the kernel outside the neighbour mask (given, or from ``r``)."""
        if nbr is None and r is not None:
            nbr = d2 <= _r2(r)
        return k if nbr is None else k.masked_fill(~nbr, 0.0)

    def _weighted(self, k: Tensor) -> Tensor:
        return self.Q.unsqueeze(-1) * k * self.P.unsqueeze(-2)

    def correlation(self, R: Tensor, t: Tensor, sigmas: Tensor, coefs: Tensor, r: Radius,
                    nbr: Optional[Tensor] = None) -> Tensor:
        """``kappa [..., B]``."""
        d2 = self.sqdist(R, t)
        k = self._within(d2, evaluate_bands(d2, sigmas, coefs), r, nbr)
        return torch.einsum("...bi,...bij,...bj->...b", self.Q, k, self.P)

    def estep(self, R: Tensor, t: Tensor, sigmas: Tensor, coefs: Tensor, r: Radius,
              nbr: Optional[Tensor] = None) -> Tuple[Tensor, Moments]:
        """``kappa [B]`` at this pose and the moments of the MM pair weight."""
        d2 = self.sqdist(R, t)
        k = self._within(d2, evaluate_bands(d2, sigmas, coefs), r, nbr)
        w = self._weighted(k)
        kappa = w.sum((-1, -2))
        if sigmas.numel() > 1:
            w = self._weighted(self._within(d2, evaluate_bands(d2, sigmas, em_coefs(sigmas, coefs)), r, nbr))
        return kappa, self._moments(w)

    def robust_estep(self, R: Tensor, t: Tensor, sigma2: Tensor, c: Tensor, r: Radius) -> Moments:
        """Moments of the CPD posterior ``q_i p_j g_ij / (sum_j' p_j' g_ij' + c)``
        with ``g_ij = exp(-d_ij^2 / 2 sigma^2)`` and a per-graph ``sigma2 [B]``."""
        d2 = self.sqdist(R, t)
        g = torch.exp(d2 * (-0.5 / sigma2).view(-1, 1, 1))
        g = self._within(d2, g, r, None) * self.P.unsqueeze(-2)
        post = _outlier_posterior(g, g.sum(-1, keepdim=True), c.view(-1, 1, 1))
        return self._moments(self.Q.unsqueeze(-1) * post)

    def _moments(self, w: Tensor) -> Moments:
        rx, cy = w.sum(-1), w.sum(-2)
        sxy = self.X.transpose(-1, -2) @ (w @ self.Y)
        return Moments(rx.sum(-1), (rx.unsqueeze(-1) * self.X).sum(-2), (cy.unsqueeze(-1) * self.Y).sum(-2),
                       sxy, (rx * self.x2).sum(-1), (cy * self.y2).sum(-1))

    def self_sums(self, sigmas: Tensor, coefs: Tensor, r: Radius) -> Tuple[Tensor, Tensor]:
        """Pose-independent ``kappa_XX`` and ``kappa_YY`` ``[B]``."""
        def one(A, a2, W):
            d2 = (a2.unsqueeze(-1) + a2.unsqueeze(-2) - 2 * A @ A.transpose(-1, -2)).clamp_min(0)
            k = self._within(d2, evaluate_bands(d2, sigmas, coefs), r, None)
            return torch.einsum("bi,bij,bj->b", W, k, W)
        return one(self.X, self.x2, self.Q), one(self.Y, self.y2, self.P)


class PairCorrelation:
    """A batch as packed points and, per evaluation, the explicit list of
    same-graph pairs within the cutoff of the moved set (``radius_pairs``)."""

    def __init__(self, x: Tensor, y: Tensor, batch_x: Tensor, batch_y: Tensor, qx: Tensor, py: Tensor,
                 num_graphs: int, radius_backend: str = "auto"):
        self.x, self.y, self.bx, self.by, self.q, self.p = x, y, batch_x, batch_y, qx, py
        self.num_graphs = num_graphs
        self.radius_backend = radius_backend

    def detached(self) -> "PairCorrelation":
        return PairCorrelation(self.x.detach(), self.y.detach(), self.bx, self.by, self.q.detach(),
                               self.p.detach(), self.num_graphs, self.radius_backend)

    def _moved(self, R: Tensor, t: Tensor) -> Tensor:
        return (R[self.by] @ self.y.unsqueeze(-1)).squeeze(-1) + t[self.by]

    def neighbours(self, R: Tensor, t: Tensor, r: Radius) -> Tensor:
        """``[2, E]`` pairs (row 0 indexes x, row 1 y) within ``r`` (per graph if a tensor)."""
        z = self._moved(R, t).detach()
        if r is None:
            # Every same-graph pair: a radius beyond the largest distance in the batch.
            both = torch.cat([self.x.detach(), z], 0)
            span = float((both.max(0).values - both.min(0).values).norm()) if both.numel() else 0.0
            return radius_pairs(self.x.detach(), z, 2 * span + 1.0, self.bx, self.by,
                                backend=self.radius_backend, num_graphs=self.num_graphs)
        if isinstance(r, Tensor):
            pairs = radius_pairs(self.x.detach(), z, float(r.max()), self.bx, self.by,
                                 backend=self.radius_backend, num_graphs=self.num_graphs)
            i, j = pairs
            keep = (self.x[i].detach() - z[j]).pow(2).sum(-1) <= (r * r)[self.bx[i]]
            return pairs[:, keep]
        return radius_pairs(self.x.detach(), z, r, self.bx, self.by, backend=self.radius_backend,
                            num_graphs=self.num_graphs)

    def _pair_d2(self, R: Tensor, t: Tensor, pairs: Tensor) -> Tensor:
        i, j = pairs
        g = self.by[j]
        z = (R[g] @ self.y[j].unsqueeze(-1)).squeeze(-1) + t[g]
        return (self.x[i] - z).pow(2).sum(-1)

    def _graph_sum(self, values: Tensor, pairs: Tensor) -> Tensor:
        out = values.new_zeros((self.num_graphs,) + values.shape[1:])
        return out.index_add_(0, self.bx[pairs[0]], values)

    def correlation(self, R: Tensor, t: Tensor, sigmas: Tensor, coefs: Tensor, r: Radius,
                    nbr: Optional[Tensor] = None) -> Tensor:
        pairs = self.neighbours(R, t, r) if nbr is None else nbr
        d2 = self._pair_d2(R, t, pairs)
        i, j = pairs
        return self._graph_sum(self.q[i] * self.p[j] * evaluate_bands(d2, sigmas, coefs), pairs)

    def estep(self, R: Tensor, t: Tensor, sigmas: Tensor, coefs: Tensor, r: Radius,
              nbr: Optional[Tensor] = None) -> Tuple[Tensor, Moments]:
        pairs = self.neighbours(R, t, r) if nbr is None else nbr
        d2 = self._pair_d2(R, t, pairs)
        i, j = pairs
        qp = self.q[i] * self.p[j]
        w = qp * evaluate_bands(d2, sigmas, coefs)
        kappa = self._graph_sum(w, pairs)
        if sigmas.numel() > 1:
            w = qp * evaluate_bands(d2, sigmas, em_coefs(sigmas, coefs))
        return kappa, self._moments(w, pairs)

    def robust_estep(self, R: Tensor, t: Tensor, sigma2: Tensor, c: Tensor, r: Radius) -> Moments:
        pairs = self.neighbours(R, t, r)
        i, j = pairs
        g = self.p[j] * torch.exp(self._pair_d2(R, t, pairs) * (-0.5 / sigma2)[self.bx[i]])
        row = g.new_zeros(self.x.size(0)).index_add_(0, i, g)
        post = _outlier_posterior(g, row[i], c[self.bx[i]])
        return self._moments(self.q[i] * post, pairs)

    def _moments(self, w: Tensor, pairs: Tensor) -> Moments:
        i, j = pairs
        xi, yj = self.x[i], self.y[j]
        first = self._graph_sum(torch.cat([w.unsqueeze(-1), w.unsqueeze(-1) * xi, w.unsqueeze(-1) * yj,
                                           (w * xi.pow(2).sum(-1)).unsqueeze(-1),
                                           (w * yj.pow(2).sum(-1)).unsqueeze(-1)], -1), pairs)
        sxy = self._graph_sum((w.view(-1, 1, 1) * xi.unsqueeze(-1) * yj.unsqueeze(-2)), pairs)
        return Moments(first[:, 0], first[:, 1:4], first[:, 4:7], sxy, first[:, 7], first[:, 8])

    def self_sums(self, sigmas: Tensor, coefs: Tensor, r: Radius) -> Tuple[Tensor, Tensor]:
        def one(a, b, w):
            if r is None:
                span = float((a.max(0).values - a.min(0).values).norm()) if a.numel() else 0.0
                radius = 2 * span + 1.0
            else:
                radius = r
            i, j = radius_pairs(a.detach(), a.detach(), radius, b, b, backend=self.radius_backend,
                                num_graphs=self.num_graphs)
            d2 = (a[i] - a[j]).pow(2).sum(-1)
            vals = w[i] * w[j] * evaluate_bands(d2, sigmas, coefs)
            return vals.new_zeros(self.num_graphs).index_add_(0, b[i], vals)
        return one(self.x, self.bx, self.q), one(self.y, self.by, self.p)
