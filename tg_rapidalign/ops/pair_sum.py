r"""Per-graph weighted kernel sums over truncated pairs, in O(N) memory.

For point sets :math:`A`, :math:`B` with per-point coefficient channels
:math:`c^A \in \mathbb{R}^{N \times C}`, :math:`c^B \in \mathbb{R}^{M \times C}`,

.. math::
    S_g[c, d] = \sum_{i \in g} \sum_{j \in g,\ \lVert a_i - b_j \rVert \le r}
    c^A_{ic}\, c^B_{jd}\, k(a_i, b_j),

for a Gaussian mixture kernel ``k`` given by ``(sigmas, coefs)``. The sum is
evaluated over dense blocks of Morton-sorted tiles (see :mod:`.tiles`), a
bounded number of blocks at a time, and the backward pass recomputes the blocks
instead of storing them, so memory is O(N + M) whatever the number of pairs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .gaussian import band_exp, band_setup, exponent_block
from .tiles import TileLayout, build_tiles, tile_pairs

TILE_SIZE = 32
# Kernel values held at once (per chunk of tile pairs).
_CHUNK_ELEMENTS = 1 << 20


@dataclass
class PairPlan:
    a: TileLayout
    b: TileLayout
    ia: Tensor
    ib: Tensor
    r2: Optional[float]
    num_graphs: int
    symmetric: bool
    chunks: List[Tuple[int, int]]


def make_plan(pos_a: Tensor, batch_a: Tensor, pos_b: Optional[Tensor], batch_b: Optional[Tensor],
              num_graphs: int, r: Optional[float], tile_size: int = TILE_SIZE) -> PairPlan:
    """Tiles both sets and lists the interacting tile pairs. ``pos_b=None`` means
    the symmetric sum of ``pos_a`` with itself (each unordered tile pair once)."""
    a = build_tiles(pos_a, batch_a, num_graphs, tile_size)
    symmetric = pos_b is None
    b = a if symmetric else build_tiles(pos_b, batch_b, num_graphs, tile_size)
    ia, ib = tile_pairs(a, b, r, symmetric)
    step = max(1, _CHUNK_ELEMENTS // (tile_size * tile_size))
    chunks = [(s, min(s + step, ia.numel())) for s in range(0, ia.numel(), step)]
    return PairPlan(a, b, ia, ib, None if r is None else r * r, num_graphs, symmetric, chunks)


def _padded(values: Tensor, layout: TileLayout) -> Tensor:
    """[n, F] -> [nt, T, F], padding slots zero."""
    out = values[layout.gather]
    return out * layout.valid.unsqueeze(-1).to(out.dtype)


def _moments(p: Tensor, c: Tensor, layout: TileLayout) -> Tensor:
    """``[c (x) (p - tile centre) | c]`` per tile slot: ``[nt, T, C * (D + 1)]``."""
    rel = p - layout.center.unsqueeze(1)
    return torch.cat([(c.unsqueeze(-1) * rel.unsqueeze(-2)).flatten(2), c], -1)


def _exponent(pa: Tensor, pb: Tensor, center: Tensor, scale: Tensor,
              threshold: Optional[float], floor: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Returns the centred blocks ``A``, ``B`` and ``E = -scale * ||a_i - b_j||^2``,
    set to ``floor`` beyond the cutoff. Both blocks are centred on a tile centre,
    so the expansion in :func:`.gaussian.exponent_block` loses little to cancellation."""
    A = pa - center.unsqueeze(1)
    B = pb - center.unsqueeze(1)
    E = exponent_block(A, B, scale)
    if threshold is not None:
        torch.nn.functional.threshold_(E, threshold, floor)
    return A, B, E


def _tiles_of(plan: PairPlan, pos_a, coef_a, pos_b, coef_b):
    """Padded per-tile positions and coefficients of both sides."""
    pa, ca = _padded(pos_a, plan.a), _padded(coef_a, plan.a)
    if plan.symmetric:
        return pa, ca, pa, ca
    return pa, ca, _padded(pos_b, plan.b), _padded(coef_b, plan.b)


def _sym(gs: Tensor, offdiag: Tensor) -> Tensor:
    # An off-diagonal tile pair stands for both (a, b) and (b, a): S + S^T.
    return torch.where(offdiag.view(-1, 1, 1), gs + gs.transpose(1, 2), gs)


class _TiledPairSum(torch.autograd.Function):
    """Forward: ``S = sum_b c_b * C_a^T exp(-d2 / 2 s_b^2) C_b`` per tile pair.

    Backward never forms the per-pair upstream weight ``G = C_a gS C_b^T``: it
    has rank ``C``, so every gradient is a product of the kernel block with thin
    matrices (two batched products per band).
    """

    @staticmethod
    def forward(ctx, plan: PairPlan, sigmas: Tensor, coefs: Tensor, pos_a: Tensor, coef_a: Tensor,
                pos_b: Tensor, coef_b: Tensor) -> Tensor:
        pa, ca, pb, cb = _tiles_of(plan, pos_a, coef_a, pos_b, coef_b)
        inv, single, base_scale, cut, floor = band_setup(sigmas, plan.r2)
        out = pos_a.new_zeros(plan.num_graphs, coef_a.size(1), coef_b.size(1))
        for lo, hi in plan.chunks:
            ia, ib = plan.ia[lo:hi], plan.ib[lo:hi]
            _, _, E = _exponent(pa[ia], pb[ib], plan.b.center[ib], base_scale, cut, floor)
            cbi = cb[ib]
            if single:
                kc = torch.bmm(band_exp(E, None, True), cbi) * coefs[0]
            else:
                kc = sum(torch.bmm(band_exp(E, inv[b], False), cbi) * coefs[b]
                         for b in range(sigmas.numel()))
            s = torch.bmm(ca[ia].transpose(1, 2), kc)
            if plan.symmetric:
                s = _sym(s, ia != ib)
            out.index_add_(0, plan.a.graph[ia], s)
        ctx.plan = plan
        ctx.save_for_backward(sigmas, coefs, pos_a, coef_a, pos_b, coef_b)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        plan: PairPlan = ctx.plan
        sigmas, coefs, pos_a, coef_a, pos_b, coef_b = ctx.saved_tensors
        need_sig, need_coef, need_pa, need_ca, need_pb, need_cb = ctx.needs_input_grad[1:]
        if plan.symmetric:
            # Both sides are the same tensor: each accumulates into the same tiles.
            need_pa = need_pb = need_pa or need_pb
            need_ca = need_cb = need_ca or need_cb
        pa, ca, pb, cb = _tiles_of(plan, pos_a, coef_a, pos_b, coef_b)
        inv, single, base_scale, cut, floor = band_setup(sigmas, plan.r2)
        dim = pa.size(-1)
        # Widths of the coefficient-gradient columns (0 when not needed).
        nc_a = ca.size(-1) if need_ca else 0
        nc_b = cb.size(-1) if need_cb else 0
        # Per-tile [c (x) (p - centre) | c], shared by every tile pair.
        qa = _moments(pa, ca, plan.a)
        qb = qa if plan.symmetric else _moments(pb, cb, plan.b)
        # Per-tile accumulators: [gradient w.r.t. coefficients | positions].
        acc_a = pa.new_zeros(pa.size(0), pa.size(1), nc_a + dim)
        acc_b = acc_a if plan.symmetric else pb.new_zeros(pb.size(0), pb.size(1), nc_b + dim)
        g_sig = torch.zeros_like(sigmas)
        g_coef = torch.zeros_like(coefs)
        for lo, hi in plan.chunks:
            ia, ib = plan.ia[lo:hi], plan.ib[lo:hi]
            A, B, E = _exponent(pa[ia], pb[ib], plan.b.center[ib], base_scale, cut, floor)
            gs = grad_out[plan.a.graph[ia]]
            if plan.symmetric:
                gs = _sym(gs, ia != ib)
            cai, cbi = ca[ia], cb[ib]
            # G_ij = sum_d U_id cb_jd = sum_c ca_ic V_jc
            U = torch.bmm(cai, gs)
            V = torch.bmm(cbi, gs.transpose(1, 2))
            # Right-hand sides [V | cb (x) B | cb] (B centred on the b tile, as is A)
            # and [U | ca (x) A' | ca] (centred on the a tile, as B' below).
            rhs_b = torch.cat([V, qb[ib]], -1) if nc_a else qb[ib]
            rhs_a = torch.cat([U, qa[ia]], -1) if nc_b else qa[ia]
            m1 = m2 = None
            for band in range(sigmas.numel()):
                e = band_exp(E, None, not need_sig) if single else band_exp(E, inv[band], False)
                if need_sig:
                    # d/dsigma exp(-d2 / 2 s^2) = exp(.) d2 / s^3, with d2 = -E / base_scale
                    w = torch.bmm(e * E, cbi)
                    g_sig[band] -= (U * w).sum() * coefs[band] / (base_scale * sigmas[band] ** 3)
                p1 = torch.bmm(e, rhs_b)
                p2 = torch.bmm(e.transpose(1, 2), rhs_a)
                if need_coef:
                    g_coef[band] += (U * p1[..., -U.size(-1):]).sum()
                # Scale for coefficient gradients (c_b) and for positions (c_b / s_b^2).
                w_pos = -2.0 * coefs[band] * inv[band]
                m1 = _accumulate(m1, p1, coefs[band], w_pos, nc_a)
                m2 = _accumulate(m2, p2, coefs[band], w_pos, nc_b)
            if need_ca or need_pa:
                acc_a.index_add_(0, ia, _side_grad(m1, U, A, nc_a, dim))
            if need_cb or need_pb:
                shift = (plan.a.center[ia] - plan.b.center[ib]).unsqueeze(1)
                acc_b.index_add_(0, ib, _side_grad(m2, V, B - shift, nc_b, dim))

        def unpad(acc, layout, like, sl):
            out = torch.zeros_like(like)
            out.index_add_(0, layout.index[layout.valid], acc[..., sl][layout.valid])
            return out

        ga = (unpad(acc_a, plan.a, pos_a, slice(nc_a, None)) if need_pa else None,
              unpad(acc_a, plan.a, coef_a, slice(0, nc_a)) if need_ca else None)
        gb = (None, None) if plan.symmetric else (
            unpad(acc_b, plan.b, pos_b, slice(nc_b, None)) if need_pb else None,
            unpad(acc_b, plan.b, coef_b, slice(0, nc_b)) if need_cb else None)
        return (None, g_sig if need_sig else None, g_coef if need_coef else None, *ga, *gb)


def _accumulate(m: Optional[Tensor], p: Tensor, w_coef: Tensor, w_pos: Tensor, nc: int) -> Tensor:
    """Weights the columns of one band's product: the first ``nc`` (coefficient
    gradients) by ``w_coef``, the rest (position gradients) by ``w_pos``."""
    scale = torch.cat([w_coef.expand(nc), w_pos.expand(p.size(-1) - nc)])
    p = p * scale
    return p if m is None else m + p


def _side_grad(m: Tensor, U: Tensor, A: Tensor, nc: int, dim: int) -> Tensor:
    """From ``m = K @ [V | c (x) B | c]`` (columns weighted), the gradients of one
    side: coefficients ``K V`` and positions ``sum_d U_d (a * (K c_d) - K (c_d B))``."""
    n_other = U.size(-1)
    kc = m[..., nc + n_other * dim:]
    g_pos = A * (U * kc).sum(-1, keepdim=True)
    for c in range(n_other):
        lo = nc + c * dim
        g_pos = g_pos - U[..., c:c + 1] * m[..., lo:lo + dim]
    return torch.cat([m[..., :nc], g_pos], -1) if nc else g_pos


def tiled_pair_sum(plan: PairPlan, sigmas: Tensor, coefs: Tensor, pos_a: Tensor, coef_a: Tensor,
                   pos_b: Optional[Tensor] = None, coef_b: Optional[Tensor] = None) -> Tensor:
    """Returns ``S [B, C_a, C_b]`` as defined in the module docstring."""
    if plan.symmetric:
        pos_b, coef_b = pos_a, coef_a
    return _TiledPairSum.apply(plan, sigmas, coefs, pos_a, coef_a, pos_b, coef_b)
