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

Numerics
--------
Forward and backward evaluate the same kernel blocks (:func:`_exponent`, one
schedule per call). Each tile pair forms its exponent
:math:`E = -s \lVert a_i - b_j \rVert^2`, :math:`s = 1 / 2\sigma^2`, in one of
two ways (:func:`_schedule`):

* **expanded**: both blocks centred on the midpoint :math:`m` of the two tile
  centres, :math:`2s A \cdot B - s|A|^2 - s|B|^2` from one batched product
  (:func:`.gaussian.exponent_block`), only when
  :math:`s \rho^2 \le \tau = 8` (``_EXPANSION_LIMIT``; :math:`s` of the narrowest
  band), :math:`\rho = \max_i |a_i - m| + \max_j |b_j - m|` bounded from the exact
  (float64) tile boxes. The cancellation of the expansion is then bounded by
  :math:`\tau`, and the scale folded into the product cannot overflow;
* **differences** otherwise: :math:`\sum_k (a_{ik} - b_{jk})^2`
  (:func:`.gaussian.sqdist_block`), scaled afterwards (scale capped at the
  dtype's maximum, so no ``0 * inf``); the position gradients of these pairs come
  from the same differences, :math:`\sum_j w_{ij} (a_i - b_j)`, not from
  :math:`a_i \sum_j w_{ij} - \sum_j w_{ij} b_j`.

A padding slot of a tile holds a copy of one of the tile's points with zero
coefficients (never the origin, which lies far from a tile at an offset);
exponents are clamped to ``[EXP_FLOOR, 0]`` before ``exp``; tile pairs whose
boxes lie so far apart that every kernel value is below ``exp(EXP_FLOOR)`` are
skipped; the tile pairs' partial sums are accumulated per graph in float64.
Finite inputs with bandwidths in the accepted range give finite values and
gradients, whatever the offset of the coordinates.

**Bound.** Relative to the exact sum over the same (already rounded) input
coordinates, with :math:`u` the unit roundoff of the compute dtype
(:math:`2^{-24} = 6.0 \cdot 10^{-8}` in float32, :math:`2^{-53}` in float64),
:math:`D` the dimension, :math:`T = 32` the tile size, :math:`K` the number of
bands (first-order worst cases):

* a kernel value of an expanded pair: :math:`(2D + 5)\, u\, \tau` (float32, D = 3:
  :math:`5.2 \cdot 10^{-6}`);
* a kernel value of a differenced pair with exponent :math:`E`:
  :math:`(D + 4)\, u\, |E|` (:math:`3.4 \cdot 10^{-6}` within the cutoff radius
  4 sigma, where :math:`|E| \le 8`);
* the summation adds :math:`(2T + K + 4)\, u` (:math:`4.1 \cdot 10^{-6}` for one
  band).

So each sum with non-negative weights and coefficients (every kernel sum of
the library) is within :math:`9.3 \cdot 10^{-6}` relative in float32 for
:math:`D \le 3`, one band and a cutoff of at most 4 bandwidths (without a
cutoff, pairs beyond 4 bandwidths carry :math:`(D + 4) u |E|` on their own,
exponentially small, share), and a cosine
:math:`K_{XY} / \sqrt{K_{XX} K_{YY}} \le 1` within twice that, absolute. The
sums of tiny mass (a cross term of sets many bandwidths apart) are exact to the
same relative bound or below :math:`e^{-80}` times their weights.

**Measured** (float32 against the float64 evaluation of the same float32
values, ``python -m pytest -q --full -m full tests/ops/test_tiled_numerics.py -s``,
which prints the sweep, and the fast tier's checks at 1e-5): relative error of
the sums at most 2.9e-7 and cosine error at most 6.5e-8 over bandwidths 1e-8 to
1e3, offsets 0 to 1e6, one and three bands, 1500 to 20000 points, cutoff 4 and
none (before this scheme: NaN at offset 3e3 and sigma 0.01, and at sigma 1e-6
and below; 0.39 at sigma 1e-4; 9e-5 for 20000 uniform points at sigma 0.1;
1.5e-5 and a cosine above 1 at sigma 1e2 without cutoff).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .gaussian import EXP_FLOOR, band_setup, exponent_block, sqdist_block
from .tiles import TileLayout, build_tiles, tile_pairs

TILE_SIZE = 32
# Kernel values held at once (per chunk of tile pairs).
_CHUNK_ELEMENTS = 1 << 20
# A tile pair whose points all lie within ``rho`` of the pair's common centre,
# with ``s * rho^2 <= _EXPANSION_LIMIT`` (``s = 1 / 2 sigma^2`` of the narrowest
# band), takes the expanded exponent (one batched product); every other live
# pair takes exact differences (2 D elementwise passes over the block). See the
# module docstring for the error bound.
_EXPANSION_LIMIT = 8.0


@dataclass
class PairPlan:
    a: TileLayout
    b: TileLayout
    ia: Tensor
    ib: Tensor
    r2: Optional[float]
    num_graphs: int
    symmetric: bool
    chunks: List[Tuple[int, int]]  # ranges of (ia, ib); the sums re-chunk live pairs (_schedule)


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


@dataclass
class _Chunk:
    """A chunk of tile pairs evaluated together: ``expanded`` for the expanded
    exponent (blocks centred on the midpoint of their tile centres, one batched
    product), else exact coordinate differences."""
    ia: Tensor
    ib: Tensor
    expanded: bool


def _schedule(plan: PairPlan, sigmas: Tensor) -> List[_Chunk]:
    """The chunks of live tile pairs, each pair routed to the expanded or the
    difference form of the exponent.

    Per tile pair, in float64 from the exact tile boxes: ``rho`` bounds
    ``|a_i - m| + |b_j - m|`` over the pair's points, ``m`` the midpoint of the
    two centres in the working dtype (the point :func:`_exponent` centres on),
    and ``gap`` is the distance between the boxes. A pair with
    ``gap^2 >= -EXP_FLOOR * 2 sigma_max^2`` has every kernel value of every band
    below ``exp(EXP_FLOOR)`` (the numerical zero of :mod:`.gaussian`) and is
    dropped."""
    if plan.ia.numel() == 0:
        return []
    a, b, ia, ib = plan.a, plan.b, plan.ia, plan.ib
    inv = 0.5 / sigmas.detach().double().pow(2)
    s_max, s_min = float(inv.max()), float(inv.min())
    lo_a, hi_a, lo_b, hi_b = a.lo[ia], a.hi[ia], b.lo[ib], b.hi[ib]
    m = ((a.center[ia] + b.center[ib]) * 0.5).double()
    reach_a = torch.maximum((lo_a - m).abs_(), (hi_a - m).abs_())
    reach_b = torch.maximum((lo_b - m).abs_(), (hi_b - m).abs_())
    rho = torch.linalg.vector_norm(reach_a, dim=1).add_(torch.linalg.vector_norm(reach_b, dim=1))
    expand = rho.square_().mul_(s_max) <= _EXPANSION_LIMIT
    if plan.r2 is not None and plan.r2 * s_min < -EXP_FLOOR:
        live = torch.ones_like(expand)  # every pair within the cutoff lies above the floor
    else:
        gap = torch.maximum(lo_b - hi_a, lo_a - hi_b).clamp_min_(0)
        live = gap.square_().sum(1) * s_min < -EXP_FLOOR
    tile = a.index.size(1)
    step = max(1, _CHUNK_ELEMENTS // (tile * tile))
    out = []
    for mask, expanded in ((live & expand, True), (live & ~expand, False)):
        idx = torch.nonzero(mask).flatten()
        for lo in range(0, idx.numel(), step):
            sel = idx[lo:lo + step]
            out.append(_Chunk(ia[sel], ib[sel], expanded))
    return out


def _padded(values: Tensor, layout: TileLayout, zero: bool) -> Tensor:
    """[n, F] -> [nt, T, F]. A padding slot holds a copy of its tile's first point
    (so a padded position lies inside the tile's box, never far from its
    partners), and zero where ``zero`` (coefficients: padding adds nothing)."""
    out = values[layout.gather]
    return out * layout.valid.unsqueeze(-1).to(out.dtype) if zero else out


def _moments(p: Tensor, c: Tensor, layout: TileLayout) -> Tensor:
    """``[c (x) (p - tile centre) | c]`` per tile slot: ``[nt, T, C * (D + 1)]``."""
    rel = p - layout.center.unsqueeze(1)
    return torch.cat([(c.unsqueeze(-1) * rel.unsqueeze(-2)).flatten(2), c], -1)


def _exponent(plan: PairPlan, chunk: _Chunk, pa: Tensor, pb: Tensor, scale: Tensor,
              threshold: Optional[float], floor: float) -> Tensor:
    """``E = -scale * ||a_i - b_j||^2`` of a chunk's tile pairs ``[P, T, T]``, set
    to ``floor`` beyond the cutoff.

    Expanded chunks centre both blocks on the midpoint of their tile centres and
    use :func:`.gaussian.exponent_block` (``scale`` folded into the product cannot
    overflow: ``scale * rho^2 <= _EXPANSION_LIMIT``); the others form exact
    differences (:func:`.gaussian.sqdist_block`) and apply the scale afterwards,
    capped at the dtype's largest value so that ``0 * scale`` stays 0 and an
    overflow gives the floor, never NaN."""
    ia, ib = chunk.ia, chunk.ib
    if chunk.expanded:
        centre = ((plan.a.center[ia] + plan.b.center[ib]) * 0.5).unsqueeze(1)
        E = exponent_block(pa[ia] - centre, pb[ib] - centre, scale)
    else:
        E = sqdist_block(pa[ia], pb[ib]).mul_(-scale.clamp_max(torch.finfo(scale.dtype).max))
        if threshold is None:
            E.clamp_min_(floor)  # -inf (overflow) would make -inf * 0 in the bandwidth gradient
    if threshold is not None:
        torch.nn.functional.threshold_(E, threshold, floor)
    return E


def _exp(E: Tensor, factor: Optional[Tensor], inplace: bool) -> Tensor:
    """``exp(factor * E)`` with the exponent clamped to ``[EXP_FLOOR, 0]``: below,
    the numerical zero; above, rounding of the expanded form (a kernel value
    never exceeds 1)."""
    if factor is not None:
        E = E * factor
    elif not inplace:
        E = E.clone()
    return E.clamp_(EXP_FLOOR, 0.0).exp_()


def _tiles_of(plan: PairPlan, pos_a, coef_a, pos_b, coef_b):
    """Padded per-tile positions and coefficients of both sides."""
    pa, ca = _padded(pos_a, plan.a, False), _padded(coef_a, plan.a, True)
    if plan.symmetric:
        return pa, ca, pa, ca
    return pa, ca, _padded(pos_b, plan.b, False), _padded(coef_b, plan.b, True)


def _sym(gs: Tensor, offdiag: Tensor) -> Tensor:
    # An off-diagonal tile pair stands for both (a, b) and (b, a): S + S^T.
    return torch.where(offdiag.view(-1, 1, 1), gs + gs.transpose(1, 2), gs)


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    # Per-graph sums gather up to millions of tile-pair partial sums: float64.
    return torch.float64 if dtype in (torch.float32, torch.float64) else dtype


class _TiledPairSum(torch.autograd.Function):
    """Forward: ``S = sum_b c_b * C_a^T exp(-d2 / 2 s_b^2) C_b`` per tile pair.

    Backward never forms the per-pair upstream weight ``G = C_a gS C_b^T`` for
    expanded chunks: it has rank ``C``, so every gradient is a product of the
    kernel block with thin matrices (two batched products per band). Difference
    chunks (points far from their block's centre in units of the bandwidth, where
    ``a_i * sum_j w_ij - sum_j w_ij b_j`` would cancel) form ``G`` and take the
    position gradients from exact differences ``sum_j w_ij (a_i - b_j)``.
    """

    @staticmethod
    def forward(ctx, plan: PairPlan, sigmas: Tensor, coefs: Tensor, pos_a: Tensor, coef_a: Tensor,
                pos_b: Tensor, coef_b: Tensor) -> Tensor:
        pa, ca, pb, cb = _tiles_of(plan, pos_a, coef_a, pos_b, coef_b)
        inv, single, base_scale, cut, floor = band_setup(sigmas, plan.r2)
        chunks = _schedule(plan, sigmas)
        out = pos_a.new_zeros(plan.num_graphs, coef_a.size(1), coef_b.size(1),
                              dtype=_accumulation_dtype(pos_a.dtype))
        for chunk in chunks:
            ia, ib = chunk.ia, chunk.ib
            E = _exponent(plan, chunk, pa, pb, base_scale, cut, floor)
            cbi = cb[ib]
            if single:
                kc = torch.bmm(_exp(E, None, True), cbi) * coefs[0]
            else:
                kc = sum(torch.bmm(_exp(E, inv[b], False), cbi) * coefs[b]
                         for b in range(sigmas.numel()))
            s = torch.bmm(ca[ia].transpose(1, 2), kc)
            if plan.symmetric:
                s = _sym(s, ia != ib)
            out.index_add_(0, plan.a.graph[ia], s.to(out.dtype))
        ctx.plan = plan
        ctx.chunks = chunks
        ctx.save_for_backward(sigmas, coefs, pos_a, coef_a, pos_b, coef_b)
        return out.to(pos_a.dtype)

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
        for chunk in ctx.chunks:
            ia, ib = chunk.ia, chunk.ib
            E = _exponent(plan, chunk, pa, pb, base_scale, cut, floor)
            gs = grad_out[plan.a.graph[ia]]
            if plan.symmetric:
                gs = _sym(gs, ia != ib)
            cai, cbi = ca[ia], cb[ib]
            # G_ij = sum_d U_id cb_jd = sum_c ca_ic V_jc
            U = torch.bmm(cai, gs)
            V = torch.bmm(cbi, gs.transpose(1, 2))
            if chunk.expanded:
                ga, gb = _expanded_grads(chunk, plan, E, U, V, cbi, qa, qb, pa, pb, inv, single,
                                         sigmas, coefs, base_scale, g_sig, g_coef, need_sig,
                                         need_coef, nc_a, nc_b, dim)
            else:
                ga, gb = _difference_grads(chunk, E, U, V, cbi, pa, pb, inv, single, sigmas, coefs,
                                           base_scale, g_sig, g_coef, need_sig, need_coef,
                                           need_pa or need_pb, nc_a, nc_b, dim)
            if need_ca or need_pa:
                acc_a.index_add_(0, ia, ga)
            if need_cb or need_pb:
                acc_b.index_add_(0, ib, gb)

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


def _band_terms(E: Tensor, band: int, U: Tensor, cbi: Tensor, inv: Tensor, single: bool,
                sigmas: Tensor, coefs: Tensor, base_scale: Tensor, g_sig: Tensor, g_coef: Tensor,
                need_sig: bool, need_coef: bool, inplace: bool) -> Tensor:
    """One band's kernel block; adds its terms of the bandwidth and coefficient gradients."""
    e = _exp(E, None, inplace and not need_sig) if single else _exp(E, inv[band], False)
    if need_sig:
        # d/dsigma exp(E_b) = -2 exp(E_b) E_b / sigma, with the band's exponent
        # E_b = E * inv_b / base_scale (no sigma^3: it underflows for tiny sigma).
        w = torch.bmm(e * (E * (inv[band] / base_scale)), cbi)
        g_sig[band] -= (U * w).sum() * (2.0 * coefs[band] / sigmas[band])
    if need_coef:
        g_coef[band] += (U * torch.bmm(e, cbi)).sum()
    return e


def _expanded_grads(chunk, plan, E, U, V, cbi, qa, qb, pa, pb, inv, single, sigmas, coefs,
                    base_scale, g_sig, g_coef, need_sig, need_coef, nc_a, nc_b, dim):
    """Both sides' ``[coefficient | position]`` gradients of an expanded chunk,
    from thin products: positions centred on the other side's tile centre, as the
    per-tile moments ``qa``, ``qb`` are."""
    ia, ib = chunk.ia, chunk.ib
    # Right-hand sides [V | cb (x) B | cb] (B centred on the b tile, as is A)
    # and [U | ca (x) A' | ca] (centred on the a tile, as B').
    rhs_b = torch.cat([V, qb[ib]], -1) if nc_a else qb[ib]
    rhs_a = torch.cat([U, qa[ia]], -1) if nc_b else qa[ia]
    m1 = m2 = None
    for band in range(sigmas.numel()):
        e = _band_terms(E, band, U, cbi, inv, single, sigmas, coefs, base_scale, g_sig, g_coef,
                        need_sig, False, True)
        p1 = torch.bmm(e, rhs_b)
        p2 = torch.bmm(e.transpose(1, 2), rhs_a)
        if need_coef:
            g_coef[band] += (U * p1[..., -U.size(-1):]).sum()
        # Scale for coefficient gradients (c_b) and for positions (c_b / s_b^2).
        w_pos = -2.0 * coefs[band] * inv[band]
        m1 = _accumulate(m1, p1, coefs[band], w_pos, nc_a)
        m2 = _accumulate(m2, p2, coefs[band], w_pos, nc_b)
    A = pa[ia] - plan.b.center[ib].unsqueeze(1)
    B = pb[ib] - plan.a.center[ia].unsqueeze(1)
    return _side_grad(m1, U, A, nc_a, dim), _side_grad(m2, V, B, nc_b, dim)


def _difference_grads(chunk, E, U, V, cbi, pa, pb, inv, single, sigmas, coefs, base_scale, g_sig,
                      g_coef, need_sig, need_coef, need_pos, nc_a, nc_b, dim):
    """Both sides' ``[coefficient | position]`` gradients of a difference chunk:
    with ``W = sum_b (-c_b / sigma_b^2) K_b * G``, the position gradients are
    ``sum_j W_ij (a_i - b_j)`` and ``sum_i W_ij (b_j - a_i)`` from exact differences."""
    ia, ib = chunk.ia, chunk.ib
    k_coef = k_pos = None
    for band in range(sigmas.numel()):
        e = _band_terms(E, band, U, cbi, inv, single, sigmas, coefs, base_scale, g_sig, g_coef,
                        need_sig, need_coef, True)
        if nc_a or nc_b:
            k_coef = e * coefs[band] if k_coef is None else k_coef.add_(e * coefs[band])
        if need_pos:
            w_pos = -2.0 * coefs[band] * inv[band]
            k_pos = e * w_pos if k_pos is None else k_pos.add_(e * w_pos)
    P, T = E.shape[:2]
    g_a = [torch.bmm(k_coef, V)] if nc_a else []
    g_b = [torch.bmm(k_coef.transpose(1, 2), U)] if nc_b else []
    if need_pos:
        W = k_pos.mul_(torch.bmm(U, cbi.transpose(1, 2)))
        # Coordinate-major blocks [P, D, T]: contiguous rows for the differences.
        a = pa[ia].transpose(1, 2).contiguous()
        b = pb[ib].transpose(1, 2).contiguous()
        pos_a = E.new_empty(P, dim, T)
        pos_b = E.new_empty(P, dim, E.size(2))
        d = torch.empty_like(W)
        for k in range(dim):
            torch.sub(a[:, k].unsqueeze(-1), b[:, k].unsqueeze(-2), out=d)
            d.mul_(W)
            torch.sum(d, 2, out=pos_a[:, k])
            torch.sum(d, 1, out=pos_b[:, k])
        g_a.append(pos_a.transpose(1, 2))
        g_b.append(pos_b.transpose(1, 2).neg())
    else:
        g_a.append(E.new_zeros(P, T, dim))
        g_b.append(E.new_zeros(P, E.size(2), dim))
    return torch.cat(g_a, -1), torch.cat(g_b, -1)


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
