r"""The Gaussian (mixture) kernel, evaluated in one place for every pure-torch path.

A kernel is the pair ``(sigmas [K], coefs [K])``:

.. math::
    k(\mathbf{a}, \mathbf{b}) = \sum_{b=1}^{K} c_b
    \exp\left(-\frac{\lVert \mathbf{a} - \mathbf{b} \rVert^2}{2\sigma_b^2}\right).

Two ways in: from squared distances (:func:`gaussian`, :func:`band_blocks`; the
dense references, DrMMD, the two-sample test, the flows), or from the exponent
block :math:`E = -s \lVert a_i - b_j \rVert^2` of two point blocks computed by one
batched product (:func:`exponent_block`; the tiled sums and the alignment's
dense evaluator), cut at a radius and exponentiated per band (:func:`band_exp`).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

#: Exponent given to pairs beyond the cutoff: exp(-80) < 2e-35 is a numerical zero
#: for any kernel sum and (unlike -inf or an underflowing value) keeps exp on its
#: fast vectorised path.
EXP_FLOOR = -80.0


def pairwise_sqdist(a: Tensor, b: Tensor) -> Tensor:
    """Squared distances ``[N, M]``: exact differences, one coordinate at a time,
    in low dimension (no cancellation); the Gram expansion above 8 dimensions."""
    if a.size(1) <= 8:
        d2 = a.new_zeros(a.size(0), b.size(0))
        for k in range(a.size(1)):
            d2 = d2 + (a[:, k, None] - b[None, :, k]).pow(2)
        return d2
    d2 = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1).unsqueeze(0) - 2 * a @ b.T
    return d2.clamp_min(0)


def band_blocks(sqdist: Tensor, sigmas) -> List[Tensor]:
    """``exp(-sqdist / 2 sigma_b^2)`` for each band (``sigmas`` a tensor or floats)."""
    return [torch.exp(sqdist * (-0.5 / s ** 2)) for s in sigmas]


def gaussian(sqdist: Tensor, sigmas: Tensor, coefs: Tensor) -> Tensor:
    """``sum_b coefs[b] exp(-sqdist / 2 sigmas[b]^2)`` elementwise, any shape."""
    out = None
    for c, e in zip(coefs, band_blocks(sqdist, sigmas)):
        out = c * e if out is None else out + c * e
    return out


def gaussian_gram(a: Tensor, b: Tensor, sigmas: Tensor, coefs: Tensor) -> Tensor:
    """``K[i, j] = k(a_i, b_j)`` ``[N, M]``."""
    return gaussian(pairwise_sqdist(a, b), sigmas, coefs)


def exponent_block(A: Tensor, B: Tensor, scale: Tensor) -> Tensor:
    """``E = -scale * |a_i - b_j|^2`` ``[P, n, m]`` of blocks ``A [P, n, D]``,
    ``B [P, m, D]`` from one batched product of augmented ``[P, ., D + 2]`` blocks
    (``|a|^2 + |b|^2 - 2 a.b``; callers centre both blocks near each other, so
    the expansion loses little to cancellation). ``scale`` is a scalar or one
    value per block ``[P]``."""
    s = scale.view(-1, 1, 1) if scale.dim() else scale
    ones = torch.ones_like(A[..., :1])
    a_aug = torch.cat([A, A.pow(2).sum(-1, keepdim=True), ones], -1)
    b_aug = torch.cat([B * (2 * s), -s * torch.ones_like(B[..., :1]), -s * B.pow(2).sum(-1, keepdim=True)],
                      -1)
    return torch.matmul(a_aug, b_aug.transpose(-1, -2))


def radius(sigmas: Tensor, cutoff: Optional[float]) -> Optional[float]:
    """The neighbor radius of a ``cutoff`` in units of the widest band,
    ``cutoff * max(sigmas)`` as a host float (``None``: no cutoff), computed in
    double precision exactly as the native ops compute it from the same cutoff,
    so that every backend keeps the same pairs. Reading the bandwidth is the
    pure-torch paths' host sync; the native ops take ``cutoff`` itself."""
    return None if cutoff is None else cutoff * float(sigmas.detach().max())


def cut_threshold(scale: Tensor, r2: Optional[float]) -> Optional[float]:
    """The largest exponent to drop: just below ``-scale * r2`` in the working
    dtype, so that ``threshold`` (which replaces ``x <= t``) keeps ``d2 == r2``."""
    if r2 is None:
        return None
    t = (-scale.detach() * r2).cpu()
    return float(torch.nextafter(t, torch.tensor(-float("inf"), dtype=t.dtype)))


def cut(E: Tensor, threshold: Optional[float], floor: float) -> Tensor:
    """Exponents at or below ``threshold`` (pairs beyond the cutoff) set to
    ``floor``; in place unless autograd tracks ``E``."""
    if threshold is None:
        return E
    if E.requires_grad:
        return torch.nn.functional.threshold(E, threshold, floor)
    return torch.nn.functional.threshold_(E, threshold, floor)


def band_setup(sigmas: Tensor, r2: Optional[float]) -> Tuple[Tensor, bool, Tensor, Optional[float], float]:
    """``1 / 2 sigma_b^2``, whether single-band, the scale folded into the block
    exponent (``1 / 2 sigma^2`` for one band, else 1), the cutoff threshold of
    that exponent, and the value given to it beyond the cutoff: low enough that
    every band's exponent is at most :data:`EXP_FLOOR` (for several bands the
    block exponent is ``-d^2``, which band ``b`` multiplies by ``1 / 2 sigma_b^2``)."""
    inv = 0.5 / (sigmas * sigmas)
    single = sigmas.numel() == 1
    base_scale = inv[0] if single else torch.ones_like(inv[0])
    floor = EXP_FLOOR if single else EXP_FLOOR / float(inv.detach().min())
    return inv, single, base_scale, cut_threshold(base_scale, r2), floor


def band_exp(E: Tensor, factor: Optional[Tensor], inplace: bool) -> Tensor:
    """``exp(factor * E)`` (``factor=None``: ``exp(E)``), exponents floored at
    :data:`EXP_FLOOR`; in place on ``E`` only when ``inplace`` and no factor."""
    if factor is None:
        return E.clamp_min_(EXP_FLOOR).exp_() if inplace else E.clamp_min(EXP_FLOOR).exp_()
    return (E * factor).clamp_min_(EXP_FLOOR).exp_()


def cosine_from_sums(kxy: Tensor, kxx: Tensor, kyy: Tensor) -> Tensor:
    """The cosine of two kernel mean embeddings from their sums,
    ``kxy / sqrt(kxx * kyy)``; 0 where one side has zero mass, 1 where both do."""
    prod = kxx * kyy
    ok = prod > 0
    denom = torch.sqrt(torch.where(ok, prod, torch.ones_like(prod)))
    both_empty = (kxx <= 0) & (kyy <= 0)
    out = torch.where(ok, kxy / denom, torch.zeros_like(prod))
    return torch.where(both_empty, torch.ones_like(out), out)


def sqdist_block(a: Tensor, b: Tensor) -> Tensor:
    """``|a_i - b_j|^2`` ``[P, n, m]`` of blocks ``a [P, n, D]``, ``b [P, m, D]`` from
    exact coordinate differences, one coordinate at a time: no cancellation (two
    nearby float coordinates subtract exactly), so the relative error is at most
    ``(D + 1) u`` whatever the distance from the origin, at the cost of ``2 D``
    elementwise passes over the block (on CPU, for ``D = 3``, about the time of
    the one batched product of :func:`exponent_block`; more in higher dimension)."""
    # Coordinate-major copies: each broadcast difference then reads contiguous rows.
    at, bt = a.transpose(-1, -2).contiguous(), b.transpose(-1, -2).contiguous()
    d = at[..., 0, :].unsqueeze(-1) - bt[..., 0, :].unsqueeze(-2)
    d2 = d * d
    for k in range(1, at.size(-2)):
        torch.sub(at[..., k, :].unsqueeze(-1), bt[..., k, :].unsqueeze(-2), out=d)
        d2.addcmul_(d, d)
    return d2
