r"""A kernel two-sample test: the unbiased MMD² at several bandwidths, with a
permutation p-value aggregated over the bandwidths (the smallest per-bandwidth
p-value, calibrated by the same permutations, so the test keeps its level)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from ._validation import check_positions, check_positive_scalar, check_same_space
from .ops.gaussian import band_blocks, pairwise_sqdist


@dataclass
class TwoSampleResult:
    r"""What :func:`mmd_two_sample_test` returns; ``B`` is the number of bandwidths.

    Attributes:
        p_value (float): the permutation p-value of the smallest per-bandwidth
            p-value (reject :math:`H_0` at level :math:`\alpha` when below it).
        statistics (Tensor): the unbiased MMD² per bandwidth, :math:`[B]`.
        band_p_values (Tensor): the permutation p-value per bandwidth, :math:`[B]`.
        sigmas (Tensor): the bandwidths used, :math:`[B]`.
    """
    p_value: float          #: aggregated permutation p-value
    statistics: Tensor      #: [B] unbiased MMD² per bandwidth
    band_p_values: Tensor   #: [B] permutation p-value per bandwidth
    sigmas: Tensor          #: [B] bandwidths used


def median_heuristic(x: Tensor, y: Tensor) -> float:
    """Median pairwise distance of the pooled sample (a common default bandwidth)."""
    z = torch.cat([x, y]).detach().double()
    d = pairwise_sqdist(z, z).sqrt()
    off = d[~torch.eye(len(z), dtype=torch.bool, device=z.device)]
    med = float(off.median()) if off.numel() else 1.0
    return med if med > 0 else 1.0


def mmd_two_sample_test(x: Tensor, y: Tensor, sigmas: Optional[Sequence[float]] = None,
                        num_permutations: int = 500, generator: Optional[torch.Generator] = None
                        ) -> TwoSampleResult:
    r"""Tests :math:`H_0: P_X = P_Y` from samples ``x [N, d]`` and ``y [M, d]``.

    Args:
        x (Tensor): the first sample :math:`[N, d]` (at least two points).
        y (Tensor): the second sample :math:`[M, d]` (at least two points).
        sigmas (list of float, optional): bandwidths; default: the median heuristic
            times :math:`2^{-2}, \dots, 2^{2}`.
        num_permutations (int, optional): random relabellings. (default: :obj:`500`)
        generator (torch.Generator, optional): for reproducible permutations.

    Returns:
        TwoSampleResult: the aggregated p-value, and per bandwidth the statistic,
        the p-value and the bandwidth.
    """
    check_positions(x, "x")
    check_positions(y, "y")
    check_same_space(x, y)
    n, m = x.size(0), y.size(0)
    if n < 2 or m < 2:
        raise ValueError(f"x and y need at least two points each, got {n} and {m}")
    if not isinstance(num_permutations, int) or num_permutations < 1:
        raise ValueError(f"num_permutations must be a positive int, got {num_permutations!r}")
    if sigmas is None:
        med = median_heuristic(x, y)
        sigmas = [med * 2.0**e for e in (-2, -1, 0, 1, 2)]
    sig = torch.tensor([check_positive_scalar(s, "sigmas") for s in sigmas], dtype=torch.float64)
    z = torch.cat([x, y]).detach().double().cpu()
    d2 = pairwise_sqdist(z, z)
    # Labellings: column 0 the observed one, then random permutations.
    labels = torch.zeros(n + m, num_permutations + 1, dtype=torch.float64)
    labels[:n, 0] = 1
    for p in range(1, num_permutations + 1):
        labels[torch.randperm(n + m, generator=generator)[:n], p] = 1
    ex, ey = labels, 1 - labels
    stats = []
    for s in sig:
        K = band_blocks(d2, [s])[0]
        K.fill_diagonal_(0)  # U-statistic: no i = j terms
        kx, ky = K @ ex, K @ ey
        stats.append((ex * kx).sum(0) / (n * (n - 1)) + (ey * ky).sum(0) / (m * (m - 1))
                     - 2 * (ex * ky).sum(0) / (n * m))
    T = torch.stack(stats, 1)  # [P + 1, B]
    # p-value of every labelling at every bandwidth, against the whole set of labellings.
    pv = (T.unsqueeze(0) >= T.unsqueeze(1)).double().mean(1)  # [P + 1, B]
    min_p = pv.min(1).values
    p_value = float((min_p <= min_p[0]).double().mean())
    return TwoSampleResult(p_value, T[0], pv[0], sig)
