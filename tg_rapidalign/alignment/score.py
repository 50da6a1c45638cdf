"""The score: the kernel correlation at the solved pose, its cosine, and the loss."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ..ops.gaussian import cosine_from_sums


class Score(NamedTuple):
    loss: Tensor        # [B]
    kappa: Tensor       # [B] correlation at the pose
    similarity: Tensor  # [B] kappa / sqrt(kappa_xx kappa_yy)
    kappa_xx: Tensor    # [B]
    kappa_yy: Tensor    # [B]


def soft_floor(u: Tensor, floor: float) -> Tensor:
    """``u`` above ``floor``; below it ``floor * exp(u / floor - 1)``, so that
    ``-log`` continues linearly with slope ``-1 / floor`` (C1 at the floor)."""
    return torch.where(u >= floor, u, floor * torch.exp(torch.clamp(u, max=floor) / floor - 1))


def objective(name: str, value: Tensor, tau: float, eps: float, floor: Optional[float]) -> Tensor:
    """The loss of a cosine or correlation ``value`` under objective ``name``."""
    if name in ("cosine", "kappa"):
        return (1 - value) / tau
    if floor is not None:
        value = soft_floor(value, floor)
    if name == "log_cosine":
        # The ratio is exactly 1 at c == 1, and eps survives at c == 0 in float32.
        return -torch.log((value + eps) / (1 + eps)) / tau
    return -torch.log(value + eps) / tau


def score(ev, R: Tensor, t: Tensor, sigmas: Tensor, coefs: Tensor, cutoff: Optional[float], fixed,
          name: str, tau: float, eps: float, floor: Optional[float]) -> Score:
    """Evaluates the loss at the pose ``(R, t)`` (differentiable in the inputs,
    and in the pose when it is tracked)."""
    kappa = ev.correlation(R, t, sigmas, coefs, cutoff, fixed)
    kxx, kyy = ev.self_sums(sigmas, coefs, cutoff)
    sim = cosine_from_sums(kappa, kxx, kyy)
    value = sim if name in ("log_cosine", "cosine") else kappa
    return Score(objective(name, value, tau, eps, floor), kappa, sim, kxx, kyy)
