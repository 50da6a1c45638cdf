r"""The global pose search: a start for the kernel-correlation EM that does not
depend on principal axes, for partial overlap, outliers and any rotation.

For one graph (points centred on their weighted centroids), :func:`global_pose`

1. draws a deterministic random subset of at most ``search_points`` points of
   each side;
2. starts the kernel-correlation EM (:func:`kernel_em`) from every rotation of
   a quasi-uniform SO(3) grid (:func:`rotation_grid`, super-Fibonacci spirals)
   at a wide bandwidth, then a medium one, all candidates as one batch;
3. keeps the ``keep`` candidates of largest correlation, refines them on at
   most ``refine_points`` points while the bandwidth is annealed geometrically
   down to the final one, and returns the candidate of largest correlation at
   the final bandwidth.

The correlation :math:`\kappa(R, t) = \sum_{ij} q_i p_j e^{-\lVert x_i - Ry_j - t\rVert^2 / 2\sigma^2}`
is both the EM's objective and the verifier. Unlike a per-point normalised
(CPD) posterior it is not pulled by points without a partner: a cropped part
or an outlier only adds pairs of negligible weight at a narrow bandwidth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from .pose import special_polar

# Super-Fibonacci spiral constants (Alexa, CVPR 2022): sqrt(2) and the root of x^4 = x + 4.
_PHI = math.sqrt(2.0)
_PSI = 1.533751168755204288118041


@dataclass(frozen=True)
class SearchSettings:
    """The sizes and bandwidths of :func:`global_pose` (bandwidths in units of
    the RMS radius of the x side about its centroid)."""
    rotations: int = 128        # starting rotations of the grid
    search_points: int = 96     # points per side in the grid stage
    refine_points: int = 200    # points per side in the refinement stage
    keep: int = 10              # candidates refined
    final: int = 4              # refined candidates handed to the full-resolution EM
    wide: float = 0.5           # first bandwidth of the grid stage
    medium: float = 0.25        # second bandwidth of the grid stage
    steps: int = 5              # EM steps per bandwidth of the grid stage
    refine_steps: int = 6       # EM steps per bandwidth of the refinement
    levels: int = 3             # bandwidths of the refinement, after the medium one
    relax: float = 1.8          # over-relaxation of the EM steps after the first bandwidth
    min_separation: float = 20.0  # degrees between the candidates kept from the grid stage
    seed: int = 0               # of the subsets


def quaternion_matrix(quat: Tensor) -> Tensor:
    """Rotation matrices ``[K, 3, 3]`` of quaternions ``[K, 4]`` (``w, x, y, z``; normalised here)."""
    w, a, b, c = (quat / quat.norm(dim=-1, keepdim=True)).unbind(-1)
    return torch.stack([1 - 2 * (b * b + c * c), 2 * (a * b - c * w), 2 * (a * c + b * w),
                        2 * (a * b + c * w), 1 - 2 * (a * a + c * c), 2 * (b * c - a * w),
                        2 * (a * c - b * w), 2 * (b * c + a * w), 1 - 2 * (a * a + b * b)],
                       -1).view(-1, 3, 3)


def rotation_grid(count: int, dtype=torch.float64, device=None) -> Tensor:
    """``count`` rotations spread quasi-uniformly over SO(3) (super-Fibonacci
    spirals; deterministic), ``[count, 3, 3]``. 128 rotations leave no rotation
    further than about 45 degrees from the grid (half of them within 25)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    s = torch.arange(count, dtype=torch.float64) + 0.5
    r = torch.sqrt(s / count)
    big = torch.sqrt(1 - s / count)
    alpha, beta = 2 * math.pi * s / _PHI, 2 * math.pi * s / _PSI
    quat = torch.stack([r * torch.sin(alpha), r * torch.cos(alpha), big * torch.sin(beta),
                        big * torch.cos(beta)], -1)
    return quaternion_matrix(quat).to(dtype=dtype, device=device)


def kernel_em(x: Tensor, y: Tensor, q: Tensor, p: Tensor, R: Tensor, t: Tensor, sigma: float,
              steps: int, relax: float = 1.0) -> Tuple[Tensor, Tensor, Tensor]:
    r"""``steps`` EM / MM steps of the kernel correlation from ``K`` poses at
    once, every pair summed (dense). Each step weighs the pairs by
    :math:`w_{ij} = q_i p_j e^{-\lVert x_i - Ry_j - t\rVert^2/2\sigma^2}` and solves the
    weighted Procrustes problem. With ``relax > 1`` the step's motion is
    extrapolated (over-relaxed EM, faster along the slow directions); a pose
    whose :math:`\kappa` fell below the last one is replaced by the plain EM step
    from that one, so :math:`\kappa` never decreases over two steps.

    Args:
        x (torch.Tensor): :math:`[n, 3]`. y (torch.Tensor): :math:`[m, 3]`.
        q (torch.Tensor): Weights of x :math:`[n]`. p (torch.Tensor): Weights of y :math:`[m]`.
        R (torch.Tensor): Rotations :math:`[K, 3, 3]`. t (torch.Tensor): Translations :math:`[K, 3]`.
        sigma (float): The bandwidth.
        steps (int): EM steps.
        relax (float, optional): Extrapolation factor of each step. (default: :obj:`1.0`)

    Returns:
        ``(R [K, 3, 3], t [K, 3], kappa [K])``, kappa at the returned poses.
    """
    inv = -0.5 / (sigma * sigma)
    x2 = x.pow(2).sum(-1)
    qp = q.unsqueeze(-1) * p.unsqueeze(0)  # [n, m]
    best = None  # (R, t, kappa, plain R, plain t) of the last accepted pose
    for step in range(steps + 1):
        z = y @ R.transpose(-1, -2) + t.unsqueeze(-2)  # [K, m, 3]
        d2 = (x2.unsqueeze(-1) + z.pow(2).sum(-1).unsqueeze(-2) - 2 * x @ z.transpose(-1, -2)).clamp_min(0)
        W = torch.exp(d2 * inv) * qp  # [K, n, m]
        mass = W.sum((-1, -2))
        if best is not None:  # reject extrapolated poses that lost correlation: retake the plain step
            worse = mass < best[2]
            if bool(worse.any()):
                R = torch.where(worse.view(-1, 1, 1), best[3], R)
                t = torch.where(worse.view(-1, 1), best[4], t)
                return_after = step == steps
                R, t, mass = kernel_em(x, y, q, p, R, t, sigma, 0) if return_after else (R, t, mass)
                if not return_after:
                    z = y @ R.transpose(-1, -2) + t.unsqueeze(-2)
                    d2 = (x2.unsqueeze(-1) + z.pow(2).sum(-1).unsqueeze(-2)
                          - 2 * x @ z.transpose(-1, -2)).clamp_min(0)
                    W = torch.exp(d2 * inv) * qp
                    mass = W.sum((-1, -2))
        if step == steps:
            return R, t, mass
        ok = mass > torch.finfo(mass.dtype).tiny
        safe = torch.where(ok, mass, torch.ones_like(mass)).view(-1, 1)
        wx, wy = W.sum(-1), W.sum(-2)  # [K, n], [K, m]
        xbar, ybar = wx @ x / safe, wy @ y / safe
        S = x.T @ W @ y / safe.unsqueeze(-1) - xbar.unsqueeze(-1) * ybar.unsqueeze(-2)
        R_new = special_polar(S)
        t_new = xbar - (R_new @ ybar.unsqueeze(-1)).squeeze(-1)
        R_new = torch.where(ok.view(-1, 1, 1), R_new, R)
        t_new = torch.where(ok.view(-1, 1), t_new, t)
        best = (R, t, mass, R_new, t_new)
        if relax != 1.0:
            R_new, t_new = _extrapolate(R, t, R_new, t_new, relax)
        R, t = R_new, t_new
    raise AssertionError("unreachable")


def _extrapolate(R: Tensor, t: Tensor, R_new: Tensor, t_new: Tensor, factor: float) -> Tuple[Tensor, Tensor]:
    """The motion ``(R, t) -> (R_new, t_new)`` applied ``factor`` times (its
    rotation's angle scaled, about the moved set's origin)."""
    delta = R_new @ R.transpose(-1, -2)
    cos = ((delta.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    angle = torch.acos(cos)
    small = angle < 1e-6
    sin = torch.where(small, torch.ones_like(angle), torch.sin(angle))
    w = torch.stack([delta[:, 2, 1] - delta[:, 1, 2], delta[:, 0, 2] - delta[:, 2, 0],
                     delta[:, 1, 0] - delta[:, 0, 1]], -1) / (2 * sin.unsqueeze(-1))
    a = (angle * factor).clamp_max(math.pi / 2).unsqueeze(-1).unsqueeze(-1)
    Kx = torch.zeros_like(delta)
    Kx[:, 0, 1], Kx[:, 0, 2], Kx[:, 1, 2] = -w[:, 2], w[:, 1], -w[:, 0]
    Kx = Kx - Kx.transpose(-1, -2)
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    step = eye + torch.sin(a) * Kx + (1 - torch.cos(a)) * Kx @ Kx
    step = torch.where((small | (angle > math.pi - 1e-3)).view(-1, 1, 1), delta, step)
    dt = t_new - (delta @ t.unsqueeze(-1)).squeeze(-1)
    return step @ R, (step @ t.unsqueeze(-1)).squeeze(-1) + factor * dt


def _subset(n: int, size: int, generator: torch.Generator, device) -> Optional[Tensor]:
    """A random subset of ``size`` of ``n`` indices, or ``None`` for all of them."""
    if n <= size:
        return None
    return torch.randperm(n, generator=generator)[:size].to(device)


def _take(v: Tensor, w: Tensor, idx: Optional[Tensor], dtype) -> Tuple[Tensor, Tensor]:
    if idx is not None:
        v, w = v[idx], w[idx]
    return v.to(dtype), (w / w.sum().clamp_min(torch.finfo(w.dtype).tiny)).to(dtype)


def distinct_best(R: Tensor, score: Tensor, count: int, min_angle: float) -> Tensor:
    """Indices of up to ``count`` poses in decreasing ``score``, each at least
    ``min_angle`` degrees of rotation from every one picked before it
    (greedy non-maximum suppression; fewer if fewer are that far apart)."""
    order = score.argsort(descending=True)
    cos = (R.flatten(1) @ R.flatten(1).T - 1) / 2  # cos of the angle between each two rotations
    limit = math.cos(math.radians(min_angle))
    picked = []
    for i in order.tolist():
        if all(float(cos[i, j]) < limit for j in picked):
            picked.append(i)
            if len(picked) == count:
                break
    return torch.tensor(picked, dtype=torch.long, device=R.device)


def nn_spacing(x: Tensor, sample: int = 256, seed: int = 0) -> float:
    """The median distance from a point of ``x [N, 3]`` to its nearest other point
    (over a deterministic sample of at most ``sample`` points); 0 below two points."""
    if x.size(0) < 2:
        return 0.0
    with torch.no_grad():
        idx = _subset(x.size(0), sample, torch.Generator().manual_seed(seed), x.device)
        a = x if idx is None else x[idx]
        d = torch.cdist(a.detach(), x.detach())
        d = torch.where(d > 0, d, torch.full_like(d, float("inf")))  # the point itself, duplicates
        near = d.min(1).values
        near = near[torch.isfinite(near)]
        return float(near.median()) if near.numel() else 0.0


def global_candidates(x: Tensor, y: Tensor, q: Tensor, p: Tensor, sigma: float,
                      settings: SearchSettings = SearchSettings()) -> Tuple[Tensor, Tensor]:
    r"""The ``final`` best poses ``(R [k, 3, 3], t [k, 3])`` (best first) of the
    search in the module docstring, with :math:`x \approx Ry + t`, for one
    graph: ``x``, ``y`` centred on their weighted centroids, ``q``, ``p`` their
    normalised weights, :obj:`sigma` the final bandwidth. The grid stage runs in
    float32, the refinement in the input dtype; gradients are not tracked.
    Fewer than two points on a side, or a side of zero spread, give the identity
    (``k`` copies)."""
    k = settings.keep
    with torch.no_grad():
        x, y, q, p = x.detach(), y.detach(), q.detach(), p.detach()
        dtype = x.dtype
        R_id = torch.eye(3, dtype=dtype, device=x.device).expand(settings.final, 3, 3).clone()
        t_id = x.new_zeros(settings.final, 3)
        scale = float((q * x.pow(2).sum(-1)).sum().sqrt()) if x.numel() else 0.0
        if x.size(0) < 2 or y.size(0) < 2 or not scale > 0 or not math.isfinite(scale):
            return R_id, t_id
        gen = torch.Generator().manual_seed(settings.seed)
        low = torch.float32
        xs, qs = _take(x, q, _subset(x.size(0), settings.search_points, gen, x.device), low)
        ys, ps = _take(y, p, _subset(y.size(0), settings.search_points, gen, x.device), low)
        R = rotation_grid(settings.rotations, low, x.device)
        t = xs.new_zeros(R.size(0), 3)
        R, t, _ = kernel_em(xs, ys, qs, ps, R, t, settings.wide * scale, settings.steps)
        R, t, kappa = kernel_em(xs, ys, qs, ps, R, t, settings.medium * scale, settings.steps, settings.relax)
        top = distinct_best(R, kappa, k, settings.min_separation)
        R, t = R[top].to(dtype), t[top].to(dtype)
        xr, qr = _take(x, q, _subset(x.size(0), settings.refine_points, gen, x.device), dtype)
        yr, pr = _take(y, p, _subset(y.size(0), settings.refine_points, gen, x.device), dtype)
        start = settings.medium * scale
        end = min(start, max(float(sigma), nn_spacing(xr), nn_spacing(yr)))
        for level in range(1, settings.levels + 1):
            s = start * (end / start) ** (level / settings.levels)
            R, t, kappa = kernel_em(xr, yr, qr, pr, R, t, s, settings.refine_steps, settings.relax)
        order = kappa.argsort(descending=True)[:settings.final]
        R, t = R[order], t[order]
        k = settings.final
        if R.size(0) < k:  # fewer grid rotations than candidates asked for
            R, t = torch.cat([R, R_id[R.size(0):]]), torch.cat([t, t_id[t.size(0):]])
        return R, t
