r"""The (de)-regularised MMD (DrMMD) of Chen et al. (2024, arXiv:2409.14980) and
its witness, in the authors' convention.

With particles :math:`X` (:math:`N`, the source :math:`\mu`), target samples
:math:`Y` (:math:`M`, :math:`\pi`), a kernel :math:`k` and :math:`\lambda > 0`:

.. math::
    \mathrm{MMD}^2 &= \overline{K_{XX}} + \overline{K_{YY}} - 2\,\overline{K_{XY}}, \qquad
    a = K_{YX} \mathbf{1}_N / N - K_{YY} \mathbf{1}_M / M, \\
    \beta &= (K_{YY} + M \lambda I_M)^{-1} a, \qquad
    \mathrm{DrMMD} = \frac{1 + \lambda}{\lambda} \big(\mathrm{MMD}^2 - a^\top \beta\big), \\
    h(z) &= \frac{2 (1 + \lambda)}{\lambda}
    \Big[ k(z, X) \mathbf{1}_N / N - k(z, Y) (\mathbf{1}_M / M + \beta) \Big],

so that DrMMD tends to the MMD² V-statistic as :math:`\lambda \to \infty` and
:math:`N\, \partial\, \mathrm{DrMMD} / \partial x_j = \nabla h(x_j)`. The
ridge system is solved by Cholesky in float64 (a growing jitter is added only
if the factorisation fails), never by an explicit inverse.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .._validation import check_positions, check_positive_scalar, check_same_space
from ..kernels import KernelLike, resolve_kernel
from ..numerics import numeric_policy
from ..ops.gaussian import band_blocks, gaussian_gram, pairwise_sqdist


def gaussian_grad_sum(z: Tensor, w: Tensor, c: Tensor, sigmas: Tensor, coefs: Tensor,
                      blocks: Optional[List[Tensor]] = None) -> Tensor:
    r""":math:`\sum_j c_j \nabla_z k(z_i, w_j)` ``[K, d]`` in closed form:
    :math:`\sum_b \frac{c_b}{\sigma_b^2} (E_b (c \odot w) - (E_b c)\, z)`, with
    :math:`E_b = e^{-\lVert z_i - w_j \rVert^2 / 2\sigma_b^2}`; ``blocks`` passes the
    :math:`E_b` ``[K, P]`` when the caller has them already."""
    if blocks is None:
        blocks = band_blocks(pairwise_sqdist(z, w), sigmas)
    out = torch.zeros_like(z)
    right = torch.cat([c.unsqueeze(1) * w, c.unsqueeze(1)], 1)  # one product gives E (c w) and E c
    for b, e in enumerate(blocks):
        s = e @ right
        out = out + (coefs[b] / sigmas[b] ** 2) * (s[:, :-1] - s[:, -1:] * z)
    return out


def cholesky_jitter(A: Tensor, max_tries: int = 8) -> Tensor:
    """The Cholesky factor of a symmetric positive (semi-)definite ``A``; if the
    factorisation fails, a jitter growing from 1e-12 of the mean diagonal is added."""
    L, info = torch.linalg.cholesky_ex(A)
    jitter = 1e-12 * float(A.detach().diagonal().abs().mean().clamp_min(1e-300))
    eye = torch.eye(A.size(0), dtype=A.dtype, device=A.device)
    tries = 0
    while int(info) != 0:
        if tries == max_tries:
            raise RuntimeError("the kernel system is not positive definite even with jitter")
        L, info = torch.linalg.cholesky_ex(A + jitter * eye)
        jitter *= 100
        tries += 1
    return L


def solve_spd(A: Tensor, B: Tensor, max_tries: int = 8) -> Tensor:
    """``A^{-1} B`` by :func:`cholesky_jitter` (never an explicit inverse)."""
    L = cholesky_jitter(A, max_tries)
    return torch.cholesky_solve(B.unsqueeze(-1) if B.dim() == 1 else B, L).reshape(B.shape)


def _check(x: Tensor, y: Tensor, lam) -> float:
    check_positions(x, "x")
    check_positions(y, "y")
    check_same_space(x, y)
    for name, value in (("x", x), ("y", y)):
        if value.size(0) == 0:  # an empty sample is no distribution: no meaningful value
            raise ValueError(f"{name} is empty: x and y need at least one point each (an empty "
                             f"sample has no mean embedding), got {x.size(0)} and {y.size(0)}")
    return check_positive_scalar(lam, "lam")


@numeric_policy
def drmmd_parts(x: Tensor, y: Tensor, sigma: KernelLike = 1.0, lam: float = 1.0
                ) -> Tuple[Tensor, Tensor, Tensor]:
    """``(drmmd, mmd2, beta)``, all in float64 (differentiable)."""
    lam = _check(x, y, lam)
    sigmas, coefs = resolve_kernel(sigma, torch.float64, x.device)
    x, y = x.double(), y.double()
    kxx, kxy, kyy = (gaussian_gram(a, b, sigmas, coefs) for a, b in ((x, x), (x, y), (y, y)))
    return _from_gram(kxx, kxy, kyy, lam)


@numeric_policy
def drmmd_from_gram(kxx: Tensor, kxy: Tensor, kyy: Tensor, lam: float = 1.0) -> Tensor:
    r"""DrMMD for any positive-definite kernel, from its Gram matrices
    :math:`K_{XX}` :math:`[N, N]`, :math:`K_{XY}` :math:`[N, M]` and :math:`K_{YY}`
    :math:`[M, M]` (differentiable; for example a feature kernel
    :math:`\Phi(x)^\top \Phi(y)` of network neurons, as in the student/teacher setting)."""
    lam = check_positive_scalar(lam, "lam")
    n, m = kxy.shape
    if kxx.shape != (n, n) or kyy.shape != (m, m):
        raise ValueError(f"kxx, kxy, kyy must have shapes [N, N], [N, M], [M, M], got {tuple(kxx.shape)}, "
                         f"{tuple(kxy.shape)}, {tuple(kyy.shape)}")
    if n == 0 or m == 0:
        raise ValueError("kxy must have at least one row and one column")
    return _from_gram(kxx.double(), kxy.double(), kyy.double(), lam)[0].to(kxy.dtype)


def _from_gram(kxx: Tensor, kxy: Tensor, kyy: Tensor, lam: float) -> Tuple[Tensor, Tensor, Tensor]:
    m = kyy.size(0)
    mmd2 = kxx.mean() + kyy.mean() - 2 * kxy.mean()
    a = kxy.mean(0) - kyy.mean(1)
    A = kyy + m * lam * torch.eye(m, dtype=kyy.dtype, device=kyy.device)
    beta = solve_spd(A, a)
    value = (1 + lam) / lam * (mmd2 - a @ beta)
    return value, mmd2, beta


@numeric_policy
def drmmd(x: Tensor, y: Tensor, sigma: KernelLike = 1.0, lam: float = 1.0) -> Tensor:
    r"""The de-regularised MMD between particles ``x`` and target samples ``y``
    (see the module docstring for the formula), a 0-d tensor, differentiable in
    ``x``, ``y`` and the kernel's parameters.

    Args:
        x (Tensor): particles :math:`[N, d]`, any dimension :math:`d`.
        y (Tensor): target samples :math:`[M, d]`.
        sigma (float, Tensor or kernel module, optional): the Gaussian bandwidth, or a
            :class:`GaussianKernel` / :class:`MultiBandGaussianKernel`. (default: :obj:`1.0`)
        lam (float, optional): the regularisation :math:`\lambda > 0`; large values give
            the MMD², small ones approach the :math:`\chi^2` divergence. (default: :obj:`1.0`)

    Both sides need at least one sample: the formula averages over :math:`X` and
    :math:`Y`, and an empty sample has no distribution to compare, so an empty
    ``x`` or ``y`` raises a ``ValueError`` naming it (as do the witness
    gradients, :class:`~tg_rapidalign.DrMMDLoss` and the flows).
    """
    return drmmd_parts(x, y, sigma, lam)[0].to(x.dtype)


def witness_grad(z: Tensor, x: Tensor, y: Tensor, beta: Optional[Tensor], sigmas: Tensor, coefs: Tensor,
                  scale: float, blocks: Optional[List[Tensor]] = None) -> Tensor:
    """``scale * sum_j c_j grad k(z, [x; y]_j)`` with ``c = [1/N, -(1/M + beta)]``
    (``beta`` None: the MMD witness); ``blocks`` as in :func:`gaussian_grad_sum`."""
    n, m = x.size(0), y.size(0)
    c_y = torch.full((m,), 1.0 / m, dtype=z.dtype, device=z.device)
    if beta is not None:
        c_y = c_y + beta
    c = torch.cat([torch.full((n,), 1.0 / n, dtype=z.dtype, device=z.device), -c_y])
    return scale * gaussian_grad_sum(z, torch.cat([x, y]), c, sigmas, coefs, blocks)


@numeric_policy
def drmmd_witness_grad(z: Tensor, x: Tensor, y: Tensor, sigma: KernelLike = 1.0, lam: float = 1.0) -> Tensor:
    r"""The gradient :math:`\nabla_z h(z)` of the DrMMD witness at query points
    ``z`` :math:`[K, d]` (closed form), with :math:`\beta` solved from ``x`` and ``y``.
    Particle descent moves :math:`x \leftarrow x - \gamma \nabla h(x)`; at ``z = x``
    this is :math:`N` times the gradient of :func:`drmmd` w.r.t. ``x``.

    Args:
        z (Tensor): query points :math:`[K, d]`.
        x (Tensor): particles :math:`[N, d]`.
        y (Tensor): target samples :math:`[M, d]`.
        sigma (float, Tensor or kernel module, optional): as in :func:`drmmd`. (default: :obj:`1.0`)
        lam (float, optional): :math:`\lambda > 0`. (default: :obj:`1.0`)
    """
    check_positions(z, "z")
    check_same_space(z, x, "z", "x")
    lam = _check(x, y, lam)
    _, _, beta = drmmd_parts(x, y, sigma, lam)
    sigmas, coefs = resolve_kernel(sigma, torch.float64, x.device)
    g = witness_grad(z.double(), x.double(), y.double(), beta, sigmas, coefs, 2 * (1 + lam) / lam)
    return g.to(z.dtype)


def mmd_witness_grad(z: Tensor, x: Tensor, y: Tensor, sigma: KernelLike = 1.0) -> Tensor:
    r"""The gradient of the MMD witness :math:`h(z) = 2 [k(z, X) \mathbf{1}/N - k(z, Y) \mathbf{1}/M]`
    (the MMD flow of Arbel et al., 2019); :math:`N` times the gradient of the MMD²
    V-statistic w.r.t. ``x`` at ``z = x``."""
    check_positions(z, "z")
    check_same_space(z, x, "z", "x")
    _check(x, y, 1.0)
    sigmas, coefs = resolve_kernel(sigma, torch.float64, x.device)
    return witness_grad(z.double(), x.double(), y.double(), None, sigmas, coefs, 2.0).to(z.dtype)
