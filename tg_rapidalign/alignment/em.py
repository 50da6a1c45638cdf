r"""The pose: starting poses, then EM / MM steps on an evaluator.

:func:`solve_pose` is the stage of the alignment pipeline that turns centred
inputs into a pose per graph: a start (the paired Kabsch pose, the identity,
or the best of 4 / 24 principal-axes candidates or of the global search's
candidates (:mod:`.search`), each refined), then
:class:`EMSteps` (the kernel E-step of the loss's own kernel, or CPD's robust
E-step) with the pose from the moments (:func:`.pose.pose_from_moments`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ..ops.gaussian import radius
from ..weights import normalize_weights
from .evaluators import make_evaluator
from .pose import axis_candidates, kabsch, pose_from_moments, signed_permutations, special_polar
from .search import SearchSettings, global_candidates

# init="global": kernel EM steps at these multiples of the bandwidths before the requested steps.
ANNEAL = (2.5, 1.6)
ANNEAL_STEPS = 10


@dataclass
class EMSteps:
    """The EM / MM iterations of the pose from a starting pose, on any evaluator."""
    iterations: int
    estep: str
    sigmas: Tensor
    coefs: Tensor
    cutoff: Optional[float]    # neighbor radius in widest bandwidths (kernel and robust E-steps)
    pose_reg: float
    blend: float
    refresh: bool
    outlier_weight: float
    min_sigma: Optional[float]  # the robust E-step's floor (None: 1e-3 of the widest band)
    search: Optional[SearchSettings] = None  # init="global": the search's sizes (None: defaults)

    def radius(self) -> Optional[float]:
        """The kernel E-step's neighbor radius on the host (a sync; only the fixed
        neighbor lists and the robust E-step need it, never the default steps)."""
        return radius(self.sigmas, self.cutoff)

    def run(self, ev, R: Tensor, t: Tensor, spread: Tensor):
        """Returns ``(R, t, history [iterations, B] or None, sigma^2 [B] or None, fixed neighbors)``."""
        anchor = R.detach()
        reg = self.pose_reg * spread if self.pose_reg > 0 else None
        robust = self.estep == "robust"
        fixed = None if self.refresh or robust else ev.neighbors(R, t, self.radius())
        history, sig2 = [], None
        if robust:
            s_max = float(self.sigmas.detach().max())
            floor = (self.min_sigma if self.min_sigma is not None else 1e-3 * s_max) ** 2
            # CPD's start: the mean squared distance of all pairs, per axis.
            sig2 = ((6 * spread + t.pow(2).sum(-1)) / 3).clamp_min(floor)
            vol = ev.bounding_volume(s_max)
            ratio = self.outlier_weight / (1 - self.outlier_weight)
        for _ in range(self.iterations):
            if robust:
                # Uniform outlier density 1 / volume against the Gaussian's normaliser.
                c = ratio * (2 * math.pi * sig2) ** 1.5 / vol
                mom = ev.robust_estep(R, t, sig2, c, self.cutoff)
            else:
                kap, mom = ev.estep(R, t, self.sigmas, self.coefs, self.cutoff, fixed)
                history.append(kap.detach())
            R_new, t_new, var = pose_from_moments(mom, R, t, reg, anchor)
            if self.blend > 0:
                R_new = special_polar((1 - self.blend) * R_new + self.blend * R)
                t_new = (1 - self.blend) * t_new + self.blend * t
            R, t = R_new, t_new
            if robust:
                sig2 = torch.where(mom.mass > 0, var.clamp_min(floor), sig2)
        hist = None if robust else (torch.stack(history) if history else R.new_zeros(0, R.size(0)))
        return R, t, hist, sig2, fixed


class Solved(NamedTuple):
    """The pose stage's output, per graph of the batch."""
    R: Tensor                   # [B, 3, 3]
    t: Tensor                   # [B, 3], in the centred frames
    history: Optional[Tensor]   # [iterations, B] kappa of the kernel E-step
    sigma2: Optional[Tensor]    # [B] final robust bandwidth squared
    fixed: Optional[object]     # neighbors kept fixed (refresh_neighbors=False)


class Centred(NamedTuple):
    """The centred batch the pose stage works on."""
    x: Tensor
    y: Tensor
    batch_x: Tensor
    batch_y: Tensor
    q: Tensor
    p: Tensor
    num_graphs: int


def solve_pose(ev, data: Centred, em: EMSteps, init: str, full: bool, spread: Tensor,
               covariances, backend: str, radius_backend: str) -> Solved:
    """Start poses and EM steps (tracked by autograd only when ``full``)."""
    B = data.num_graphs
    zero_t = data.x.new_zeros(B, 3)
    with torch.set_grad_enabled(full and torch.is_grad_enabled()):
        if init in ("paired", "identity"):
            if init == "paired":
                args = (data.x, data.y, data.q * data.p)
                x, y, w = args if full else [v.detach() for v in args]
                R, t = kabsch(x, y, normalize_weights(w, data.batch_x, B, x.dtype), data.batch_x, B)
            else:
                R, t = torch.eye(3, dtype=data.x.dtype, device=data.x.device).expand(B, 3, 3), zero_t
            return Solved(*em.run(ev if full else ev.detached(), R, t, spread))
        if init == "global":
            cand, t0 = _global_starts(data, em)
        else:
            G = signed_permutations(4 if init == "principal_axes" else 24, data.x.dtype, data.x.device)
            cand, t0 = axis_candidates(*covariances, G), None  # [K, B, 3, 3]
        return _best_of_starts(ev, data, em, cand, t0, full, spread, backend, radius_backend,
                               anneal=init == "global")


def _global_starts(data: Centred, em: EMSteps):
    """The global search's candidates per graph (:func:`.search.global_candidates`,
    one graph at a time, final bandwidth the widest band): ``[K, B, 3, 3]`` and ``[K, B, 3]``."""
    settings = em.search if em.search is not None else SearchSettings()
    s_max = float(em.sigmas.detach().max())
    Rs, ts = [], []
    for g in range(data.num_graphs):
        mx, my = data.batch_x == g, data.batch_y == g
        R, t = global_candidates(data.x[mx], data.y[my], data.q[mx], data.p[my], s_max, settings)
        Rs.append(R)
        ts.append(t)
    if not Rs:
        eye = torch.eye(3, dtype=data.x.dtype, device=data.x.device)
        return eye.expand(settings.final, 0, 3, 3), data.x.new_zeros(settings.final, 0, 3)
    return torch.stack(Rs, 1), torch.stack(ts, 1)


def _best_of_starts(ev, data: Centred, em: EMSteps, cand: Tensor, t0: Optional[Tensor], full: bool,
                    spread: Tensor, backend: str, radius_backend: str, anneal: bool = False) -> Solved:
    """EM from every candidate start ``cand [K, B, 3, 3]`` (translations ``t0
    [K, B, 3]``, or zero; the batch replicated K times); the best final kappa
    wins. With ``anneal``, kernel EM steps at :data:`ANNEAL` multiples of the
    bandwidths come first (the pose of the global search is close, but the
    EM at a narrow bandwidth converges slowly from a few degrees away)."""
    B, x = data.num_graphs, data.x
    K = cand.size(0)
    rep = [torch.cat([v] * K) for v in (data.x, data.y, data.q, data.p)]
    if not full:
        rep = [v.detach() for v in rep]
    shift = torch.arange(K, device=x.device) * B
    bx_rep = (data.batch_x.unsqueeze(0) + shift.unsqueeze(1)).flatten()
    by_rep = (data.batch_y.unsqueeze(0) + shift.unsqueeze(1)).flatten()
    ev_rep = make_evaluator(backend, radius_backend, rep[0], rep[1], bx_rep, by_rep, rep[2], rep[3], K * B)
    zero_t = x.new_zeros(B, 3)
    t_start = zero_t.repeat(K, 1) if t0 is None else t0.reshape(-1, 3)
    R, t = cand.reshape(-1, 3, 3), t_start
    if anneal:
        with torch.no_grad():
            for factor in ANNEAL:
                wide = dataclasses.replace(em, estep="kernel", iterations=ANNEAL_STEPS, pose_reg=0.0,
                                           sigmas=em.sigmas.detach() * factor, coefs=em.coefs.detach())
                R, t = wide.run(ev_rep.detached(), R, t, spread.repeat(K))[:2]
        t_start = t
    R, t, history, sig2, fixed = em.run(ev_rep, R, t, spread.repeat(K))
    with torch.no_grad():
        score = ev_rep.detached().correlation(R.detach(), t.detach(), em.sigmas.detach(), em.coefs.detach(),
                                              em.cutoff, fixed).view(K, B)
    pick = score.argmax(0) * B + torch.arange(B, device=x.device)
    if fixed is not None:  # the chosen copy's neighbors: those of its starting pose
        fixed = ev.neighbors(R.detach()[pick] if anneal else cand.reshape(-1, 3, 3)[pick], t_start[pick],
                             em.radius())
    return Solved(R[pick], t[pick], None if history is None else history[:, pick],
                  None if sig2 is None else sig2[pick], fixed)
