r"""The pose mathematics: every rigid motion the library solves comes from here.

* :func:`special_polar`: the nearest proper rotation to a ``3 x 3`` matrix
  (the native closed form when no gradient is tracked, else the SVD with a
  backward that stays finite for degenerate inputs, :class:`SpecialPolar`);
* :func:`kabsch`: the weighted least-squares motion of paired points;
* :func:`pose_from_moments`: the same from the E-step's pair moments
  (:class:`Moments`), with the residual variance CPD's bandwidth update needs;
* :func:`weighted_covariance`, :func:`axis_candidates` and
  :func:`signed_permutations`: the principal-axes starting poses.
"""
from __future__ import annotations

import itertools
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .. import backends
from ..numerics import centre
from ..ops import native, small_linalg
from ..segments import graph_sum


class Moments(NamedTuple):
    """Per-graph sums of a pair weight ``w_ij`` (E-step statistics)."""
    mass: Tensor  # [B]        sum w_ij
    mx: Tensor    # [B, 3]     sum w_ij x_i
    my: Tensor    # [B, 3]     sum w_ij y_j
    sxy: Tensor   # [B, 3, 3]  sum w_ij x_i y_j^T
    vx: Tensor    # [B]        sum w_ij |x_i|^2
    vy: Tensor    # [B]        sum w_ij |y_j|^2


class SpecialPolar(torch.autograd.Function):
    r"""The rotation :math:`R = U\,\mathrm{diag}(1, 1, \det UV^\top)\,V^\top` closest
    to :math:`S = U \Sigma V^\top` (batched ``3 x 3``).

    Backward differentiates the polar factor instead of the SVD: with
    :math:`U' = U D`, :math:`\sigma' = D\sigma` and :math:`M = U'^\top G V`,
    :math:`\partial L / \partial S = U' Y V^\top` with
    :math:`Y_{ij} = (M_{ij} - M_{ji}) / (\sigma'_i + \sigma'_j)`.
    Only sums of singular values appear, so repeated singular values (symmetric
    structures) are harmless; where a sum vanishes (rank below two: two points,
    collinear points, zero weights) the rotation is not determined by ``S`` and
    that component of the gradient is set to zero, keeping it finite.
    """

    @staticmethod
    def forward(ctx, S: Tensor) -> Tensor:
        U, sig, Vh = small_linalg.svd(S)
        d = torch.sign(torch.linalg.det(U @ Vh))
        d = torch.where(d == 0, torch.ones_like(d), d)
        flip = torch.ones_like(sig)
        flip[:, -1] = d
        U = U * flip.unsqueeze(1)  # U' = U D
        R = U @ Vh
        ctx.save_for_backward(U, sig * flip, Vh)
        return R

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, G: Tensor) -> Tensor:
        U, sig, Vh = ctx.saved_tensors
        V = Vh.transpose(1, 2)
        M = U.transpose(1, 2) @ G @ V
        denom = sig.unsqueeze(2) + sig.unsqueeze(1)
        scale = sig.abs().amax(1, keepdim=True).unsqueeze(2)
        ok = denom > 1e-10 * scale + torch.finfo(sig.dtype).tiny
        Y = torch.where(ok, (M - M.transpose(1, 2)) / torch.where(ok, denom, torch.ones_like(denom)),
                        torch.zeros_like(M))
        return U @ Y @ Vh


def special_polar(S: Tensor) -> Tensor:
    """Nearest proper rotation to each ``3 x 3`` matrix of ``S [B, 3, 3]``.

    The registry's ``polar`` op: without a gradient to track (the detached pose
    of the alignment loss) the native closed form replaces the batched SVD when
    it is built; ties (rank of ``S`` below two) may then resolve to a different,
    equally near rotation."""
    needs_grad = torch.is_grad_enabled() and S.requires_grad
    if backends.select("polar", "auto", backends.Problem.of(S, needs_grad=needs_grad)) == "native":
        return native.special_polar3(S)
    return SpecialPolar.apply(S)


def kabsch(x: Tensor, y: Tensor, w: Tensor, batch: Tensor, num_graphs: int) -> Tuple[Tensor, Tensor]:
    r"""``(R, t)`` minimising :math:`\sum_i w_i \lVert x_i - (R y_i + t)\rVert^2` per
    graph, for weights ``w`` normalised per graph (zero-mass graphs stay zero and
    get the identity): weighted centroids, the cross-covariance ``S`` (weights
    enter once), its special polar factor and :math:`t = \bar{x} - R\bar{y}`.
    Centroids are taken in float64 (:func:`~tg_rapidalign.numerics.centre`)."""
    xc, mx = centre(x, w, batch, num_graphs)
    yc, my = centre(y, w, batch, num_graphs)
    R = centred_rotation(xc, yc, w, batch, num_graphs)
    return R, mx - (R @ my.unsqueeze(2)).squeeze(2)


def centred_rotation(xc: Tensor, yc: Tensor, w: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """The rotation of :func:`kabsch` for points already centred on their
    weighted centroids: the polar factor of ``S = sum_i w_i xc_i yc_i^T``."""
    outer = (w.view(-1, 1, 1) * xc.unsqueeze(2) * yc.unsqueeze(1)).view(-1, 9)
    return special_polar(graph_sum(outer, batch, num_graphs).view(-1, 3, 3))


def pose_from_moments(m: Moments, R_prev: Tensor, t_prev: Tensor, reg: Optional[Tensor],
                      anchor: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The weighted least-squares pose of the E-step's pair weights ``w_ij``:
    :math:`S = \sum w x y^\top / \sum w - \bar{x}\bar{y}^\top`,
    :math:`R = \mathrm{polar}_+(S + \lambda R_0)`, :math:`t = \bar{x} - R\bar{y}`,
    and the residual variance per axis :math:`\sum w \lVert x - Ry - t\rVert^2 / 3\sum w`
    (CPD's bandwidth update). Graphs with no pair weight keep their pose."""
    ok = m.mass > torch.finfo(m.mass.dtype).tiny
    mass = torch.where(ok, m.mass, torch.ones_like(m.mass))
    xbar, ybar = m.mx / mass.unsqueeze(-1), m.my / mass.unsqueeze(-1)
    S = m.sxy / mass.view(-1, 1, 1) - xbar.unsqueeze(-1) * ybar.unsqueeze(-2)
    R = special_polar(S if reg is None else S + reg.view(-1, 1, 1) * anchor)
    t = xbar - (R @ ybar.unsqueeze(-1)).squeeze(-1)
    spread = m.vx / mass - xbar.pow(2).sum(-1) + m.vy / mass - ybar.pow(2).sum(-1)
    var = (spread - 2 * (R * S).sum((-1, -2))) / 3
    return (torch.where(ok.view(-1, 1, 1), R, R_prev), torch.where(ok.view(-1, 1), t, t_prev),
            torch.where(ok, var, torch.zeros_like(var)))


def weighted_covariance(p: Tensor, w: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """``sum_i w_i p_i p_i^T`` per graph ``[B, 3, 3]`` (points already centred)."""
    outer = (w.view(-1, 1, 1) * p.unsqueeze(-1) * p.unsqueeze(-2)).view(-1, 9)
    return graph_sum(outer, batch, num_graphs).view(-1, 3, 3)


def axis_candidates(cx: Tensor, cy: Tensor, signs: Tensor) -> Tensor:
    """Rotations ``E_x G E_y^T`` taking y's principal axes onto x's, for each
    signed permutation ``G`` [K, 3, 3] whose determinant makes them proper."""
    _, ex = small_linalg.eigh(cx)
    _, ey = small_linalg.eigh(cy)
    parity = torch.linalg.det(ex) * torch.linalg.det(ey)  # [B], +-1
    # A signed permutation of the wrong determinant is fixed by flipping its last row's sign.
    G = signs.unsqueeze(1).expand(-1, cx.size(0), -1, -1).clone()  # [K, B, 3, 3]
    wrong = torch.linalg.det(G) * parity < 0
    G[..., 2, :] = torch.where(wrong.unsqueeze(-1), -G[..., 2, :], G[..., 2, :])
    return ex @ G @ ey.transpose(-1, -2)


def signed_permutations(count: int, dtype, device) -> Tensor:
    """The ``count`` = 4 sign choices of the identity order, or all 24 proper
    signed permutations (the rotations of the cube), as [K, 3, 3] with det +1.
    Built from Python numbers (the last row's sign makes the determinant +1), so
    torch.compile sees a constant."""
    mats = []
    perms = [(0, 1, 2)] if count == 4 else list(itertools.permutations(range(3)))
    for perm in perms:
        parity = -1.0 if sum(perm[i] > perm[j] for i in range(3) for j in range(i + 1, 3)) % 2 else 1.0
        for s0, s1 in itertools.product((1.0, -1.0), repeat=2):
            rows = [[0.0] * 3 for _ in range(3)]
            # det = parity * s0 * s1 * s2, so s2 = parity * s0 * s1 makes it +1.
            rows[0][perm[0]], rows[1][perm[1]], rows[2][perm[2]] = s0, s1, parity * s0 * s1
            mats.append(rows)
    return torch.tensor(mats, dtype=dtype, device=device)
