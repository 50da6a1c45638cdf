r"""The SE(3)-invariant kernel-correlation alignment loss with a closed-form pose."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .._validation import (
    check_batch,
    check_choice,
    check_positions,
    check_positive_scalar,
    check_same_space,
    check_weights,
    resolve_num_graphs,
)
from ..kernels import KernelLike, resolve_kernel
from ..ops import native, small_linalg
from ..ops.correlation import BucketedDense, DenseCorrelation, Moments, PairCorrelation
from ..segments import graph_sizes, graph_sum
from ..weights import normalize_weights
from .mmd import cosine_from_sums
from .procrustes import special_polar, weighted_procrustes

INITS = ("principal_axes", "octahedral", "paired", "identity")
OBJECTIVES = ("log_cosine", "cosine", "log_kappa", "kappa")
ESTEPS = ("kernel", "robust")
POSE_GRADS = ("detach", "full")
BACKENDS = ("auto", "dense", "pairs", "native")

# The padded dense evaluator is used while the largest graph pair has at most
# this many entries and the whole padded batch at most _DENSE_TOTAL.
_DENSE_PER_GRAPH = 1 << 16
_DENSE_TOTAL = 1 << 27
# Large batches are split into up to _MAX_BUCKETS groups of similar-sized graphs
# (at least _GRAPHS_PER_BUCKET each), each padded only to its own largest graph.
_MAX_BUCKETS = 8
_GRAPHS_PER_BUCKET = 256


class AlignmentResult(NamedTuple):
    """What :func:`se3_kernel_alignment` returns (all per graph)."""
    loss: Tensor        #: [B] the loss
    kappa: Tensor       #: [B] kernel correlation at the final pose
    R: Tensor           #: [B, 3, 3] rotation, x ~ R y + t
    t: Tensor           #: [B, 3] translation
    similarity: Tensor  #: [B] kappa / sqrt(kappa_xx kappa_yy), 1 for identical structures
    kappa_xx: Tensor    #: [B] self-correlation of x (pose-independent)
    kappa_yy: Tensor    #: [B] self-correlation of y
    history: Optional[Tensor]  #: [iterations + 1, B] kappa at each pose visited (kernel E-step)
    sigma: Optional[Tensor]    #: [B] final bandwidth of the robust E-step


def _weighted_cov(p: Tensor, w: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """``sum_i w_i p_i p_i^T`` per graph (points already centred)."""
    outer = (w.view(-1, 1, 1) * p.unsqueeze(-1) * p.unsqueeze(-2)).view(-1, 9)
    return graph_sum(outer, batch, num_graphs).view(-1, 3, 3)


def _axis_candidates(cx: Tensor, cy: Tensor, signs: Tensor) -> Tensor:
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


def _signed_permutations(count: int, dtype, device) -> Tensor:
    """The ``count`` = 4 sign choices of the identity order, or all 24 proper
    signed permutations (the rotations of the cube), as [K, 3, 3] with det +1."""
    mats = []
    perms = [(0, 1, 2)] if count == 4 else list(itertools.permutations(range(3)))
    for perm in perms:
        for s in itertools.product((1.0, -1.0), repeat=2):
            G = torch.zeros(3, 3, dtype=dtype, device=device)
            G[0, perm[0]], G[1, perm[1]], G[2, perm[2]] = s[0], s[1], 1.0
            if torch.linalg.det(G) < 0:
                G[2] = -G[2]
            mats.append(G)
    return torch.stack(mats)


def _pose_from_moments(m: Moments, R_prev: Tensor, t_prev: Tensor, reg: Optional[Tensor],
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


def _soft_floor(u: Tensor, floor: float) -> Tensor:
    """``u`` above ``floor``; below it ``floor * exp(u / floor - 1)``, so that
    ``-log`` continues linearly with slope ``-1 / floor`` (C1 at the floor)."""
    return torch.where(u >= floor, u, floor * torch.exp(torch.clamp(u, max=floor) / floor - 1))


def _objective(name: str, value: Tensor, tau: float, eps: float, floor: Optional[float]) -> Tensor:
    if name in ("cosine", "kappa"):
        return (1 - value) / tau
    if floor is not None:
        value = _soft_floor(value, floor)
    if name == "log_cosine":
        # The ratio is exactly 1 at c == 1, and eps survives at c == 0 in float32.
        return -torch.log((value + eps) / (1 + eps)) / tau
    return -torch.log(value + eps) / tau


def _evaluator(backend, radius_backend, xc, yc, batch_x, batch_y, q, p, num_graphs):
    if backend == "dense":
        buckets = min(_MAX_BUCKETS, num_graphs // _GRAPHS_PER_BUCKET)
        if buckets > 1:
            return BucketedDense(xc, yc, batch_x, batch_y, q, p, num_graphs, buckets)
        return DenseCorrelation(xc, yc, batch_x, batch_y, q, p, num_graphs)
    return PairCorrelation(xc, yc, batch_x, batch_y, q, p, num_graphs, radius_backend,
                           use_native=backend == "native")


@dataclass
class _EM:
    """The EM / MM iterations of the pose from a starting pose, on any evaluator."""
    iterations: int
    estep: str
    sigmas: Tensor
    coefs: Tensor
    r: Optional[float]         # neighbour radius of the kernel E-step
    cutoff: Optional[float]    # in bandwidths, for the robust E-step's own radius
    pose_reg: float
    blend: float
    refresh: bool
    outlier_weight: float
    min_sigma: float
    s_max: float

    def run(self, ev, R: Tensor, t: Tensor, spread: Tensor):
        """Returns ``(R, t, history [iterations, B] or None, sigma^2 [B] or None, fixed neighbours)``."""
        anchor = R.detach()
        reg = self.pose_reg * spread if self.pose_reg > 0 else None
        robust = self.estep == "robust"
        fixed = None if self.refresh or robust else ev.neighbours(R, t, self.r)
        history, sig2 = [], None
        if robust:
            floor = self.min_sigma ** 2
            # CPD's start: the mean squared distance of all pairs, per axis.
            sig2 = ((6 * spread + t.pow(2).sum(-1)) / 3).clamp_min(floor)
            vol = ev.bounding_volume(self.s_max)
            ratio = self.outlier_weight / (1 - self.outlier_weight)
        for _ in range(self.iterations):
            if robust:
                # Uniform outlier density 1 / volume against the Gaussian's normaliser.
                c = ratio * (2 * math.pi * sig2) ** 1.5 / vol
                mom = ev.robust_estep(R, t, sig2, c, self.cutoff)
            else:
                kap, mom = ev.estep(R, t, self.sigmas, self.coefs, self.r, fixed)
                history.append(kap.detach())
            R_new, t_new, var = _pose_from_moments(mom, R, t, reg, anchor)
            if self.blend > 0:
                R_new = special_polar((1 - self.blend) * R_new + self.blend * R)
                t_new = (1 - self.blend) * t_new + self.blend * t
            R, t = R_new, t_new
            if robust:
                sig2 = torch.where(mom.mass > 0, var.clamp_min(floor), sig2)
        hist = None if robust else (torch.stack(history) if history else R.new_zeros(0, R.size(0)))
        return R, t, hist, sig2, fixed


def se3_kernel_alignment(x: Tensor, y: Tensor, batch_x: Optional[Tensor] = None,
                         batch_y: Optional[Tensor] = None, weight_x: Optional[Tensor] = None,
                         weight_y: Optional[Tensor] = None, sigma: KernelLike = 1.0, *,
                         tau: float = 1.0, iterations: int = 1, cutoff: Optional[float] = 3.0,
                         eps: float = 1e-8, init: str = "principal_axes",
                         objective: str = "log_cosine", pose_grad: str = "detach",
                         estep: str = "kernel", outlier_weight: float = 0.1,
                         min_sigma: Optional[float] = None, kappa_floor: Optional[float] = None,
                         max_weight_ratio: Optional[float] = None, pose_blend: float = 0.0,
                         pose_reg: float = 0.0, refresh_neighbors: bool = True,
                         backend: str = "auto", radius_backend: str = "auto",
                         num_graphs: Optional[int] = None) -> AlignmentResult:
    r"""The SE(3)-invariant kernel-correlation alignment loss between weighted
    point sets, one value per graph.

    Both sets are centred on their weighted centroids,
    :math:`\tilde{x}_i = x_i - \sum_k q_k x_k` (likewise :math:`\tilde{y}`), and
    the pose :math:`(R, t)` that maps :math:`\tilde{y}` onto :math:`\tilde{x}` is
    found by maximising the kernel correlation

    .. math::
        \kappa(R, t) = \sum_{i, j:\ \lVert \tilde{x}_i - R\tilde{y}_j - t\rVert \le c\sigma}
        q_i\, p_j\, k(\tilde{x}_i, R\tilde{y}_j + t)

    with :obj:`iterations` EM / MM steps from an initial pose: the normalised
    pair weights :math:`w_{ij} = \hat{w}_{ij} / \kappa` give weighted centroids
    :math:`\bar{x}, \bar{y}` and :math:`S = \sum w_{ij} (\tilde{x}_i - \bar{x})
    (\tilde{y}_j - \bar{y})^\top`, then :math:`R = U \mathrm{diag}(1, 1, \det UV^\top)
    V^\top` and :math:`t = \bar{x} - R\bar{y}`. Each step never decreases
    :math:`\kappa` (for a mixture kernel the pair weights carry
    :math:`\sum_b c_b e^{-d^2/2\sigma_b^2}/\sigma_b^2`, the exact MM bound). The
    default loss is the log of the cosine in the kernel's feature space,

    .. math::
        \mathcal{L} = -\frac{1}{\tau} \log \frac{\hat{\kappa} + \varepsilon}{1 + \varepsilon},
        \qquad \hat{\kappa} = \frac{\kappa(R^\star, t^\star)}{\sqrt{\kappa_{XX}\,\kappa_{YY}}},

    which is 0 for identical structures in any relative pose
    (:math:`\kappa_{XX}, \kappa_{YY}` are the pose-independent self-correlations).
    :obj:`objective` selects :obj:`"log_cosine"` (above), :obj:`"cosine"`
    (:math:`(1 - \hat{\kappa})/\tau`, bounded, for sparse overlap),
    :obj:`"log_kappa"` (the design's raw :math:`-\log(\kappa + \varepsilon)/\tau`,
    which is not 0 for identical spread-out structures) or :obj:`"kappa"`
    (:math:`(1 - \kappa)/\tau`).

    Invariance: translations of either set change nothing (pre-centring). For
    rotations it depends on :obj:`init`: :obj:`"principal_axes"` (default) tries
    the four proper rotations that map y's weighted principal axes onto x's and
    keeps the one of largest :math:`\kappa`, so the loss is invariant to any
    rotation of either set when the principal variances are distinct;
    :obj:`"octahedral"` tries all 24 axis assignments (for near-degenerate
    variances, 6x the cost); :obj:`"paired"` (x and y hold the same nodes, as in
    a denoiser or an autoencoder) starts from weighted Kabsch on the known
    correspondence, exact for any rotation; :obj:`"identity"` is the design's
    literal form, invariant only to small rotations.

    Args:
        x (torch.Tensor): Positions :math:`[N, 3]`.
        y (torch.Tensor): Positions :math:`[M, 3]`.
        batch_x (torch.Tensor, optional): Sorted graph ids :math:`[N]`. (default: :obj:`None`)
        batch_y (torch.Tensor, optional): Sorted graph ids :math:`[M]`. (default: :obj:`None`)
        weight_x (torch.Tensor, optional): Non-negative node weights :math:`q`
            :math:`[N]`, normalised per graph. (default: :obj:`None`, uniform)
        weight_y (torch.Tensor, optional): Node weights :math:`p` :math:`[M]`. (default: uniform)
        sigma (float, Tensor or kernel module): Bandwidth or a
            :class:`GaussianKernel` / :class:`MultiBandGaussianKernel`. (default: :obj:`1.0`)
        tau (float, optional): Temperature :math:`\tau > 0`. (default: :obj:`1.0`)
        iterations (int, optional): EM steps after the initial pose. (default: :obj:`1`)
        cutoff (float, optional): Pairs further apart than :obj:`cutoff` times the
            largest bandwidth are skipped (a skipped pair weighs at most
            :math:`e^{-c^2/2}` = 1.1e-2 of its weight product at 3, 3.4e-4 at 4);
            :obj:`None` sums every pair. (default: :obj:`3.0`)
        eps (float, optional): :math:`\varepsilon > 0` in the log objectives. (default: :obj:`1e-8`)
        init (str, optional): :obj:`"principal_axes"`, :obj:`"octahedral"`,
            :obj:`"paired"` or :obj:`"identity"`. (default: :obj:`"principal_axes"`)
        objective (str, optional): See above. (default: :obj:`"log_cosine"`)
        pose_grad (str, optional): :obj:`"detach"` treats the solved pose as a
            constant (the design's stable default; at a converged pose this
            equals the full gradient, by the envelope theorem); :obj:`"full"`
            differentiates through the EM steps and the polar factor. The initial
            pose is a constant except for :obj:`init="paired"`. (default: :obj:`"detach"`)
        estep (str, optional): :obj:`"kernel"` (the design's E-step with the loss's
            kernel) or :obj:`"robust"`: per-point normalised soft correspondences
            :math:`P(j \mid i) = p_j g_{ij} / (\sum_{j'} p_{j'} g_{ij'} + c)` with a
            uniform outlier term :math:`c` and the bandwidth re-estimated every
            step, as in coherent point drift; for partial overlap and outliers,
            with 20-50 :obj:`iterations`. The loss is then :math:`\kappa` with
            :obj:`sigma` at the robust pose. (default: :obj:`"kernel"`)
        outlier_weight (float, optional): Outlier fraction :math:`w \in [0, 1)`
            of the robust E-step. (default: :obj:`0.1`)
        min_sigma (float, optional): Floor of the robust bandwidth.
            (default: 1e-3 times the largest kernel bandwidth)
        kappa_floor (float, optional): Below this value the quantity in the log
            objectives is continued smoothly so that the log continues linearly:
            the gradient is at most :math:`1/(\tau\,\mathrm{floor})` times that of
            the quantity. (default: :obj:`None`)
        max_weight_ratio (float, optional): Clamp node weights at this multiple
            of the uniform weight (water-filling). (default: :obj:`None`)
        pose_blend (float, optional): :math:`\beta \in [0, 1)`: each new pose is
            blended with the previous one, :math:`R \leftarrow
            \mathrm{polar}_+((1-\beta) R_{new} + \beta R_{old})`, damping jumps
            between symmetric alignments. (default: :obj:`0.0`)
        pose_reg (float, optional): :math:`\lambda \ge 0`: the polar step solves
            :math:`S + \lambda s^2 R_0` instead of :math:`S` (:math:`R_0` the initial
            rotation, the identity for :obj:`init="identity"`; :math:`s^2` the mean
            per-axis variance of both sets), pulling symmetric or ill-conditioned
            cases toward it. (default: :obj:`0.0`)
        refresh_neighbors (bool, optional): Recompute the neighbour pairs at
            every step (the default); if :obj:`False`, keep those of the initial
            pose for every kernel E-step and the final :math:`\kappa` (the robust
            E-step's radius follows its own bandwidth). (default: :obj:`True`)
        backend (str, optional): :obj:`"native"` (the fused C++/CUDA kernel,
            O(N + M) memory), :obj:`"dense"` (padded per-graph matrices, pure
            torch), :obj:`"pairs"` (streamed neighbour pairs, pure torch) or
            :obj:`"auto"` (native when built, else dense for molecule-sized graphs,
            else pairs). (default: :obj:`"auto"`)
        radius_backend (str, optional): Neighbour search of the :obj:`"pairs"`
            backend, see :func:`radius_pairs`. (default: :obj:`"auto"`)
        num_graphs (int, optional): :math:`B`, if trailing graphs are empty. (default: :obj:`None`)

    Returns:
        AlignmentResult: fields :obj:`loss`, :obj:`kappa`, :obj:`R`, :obj:`t`
        (:math:`x \approx Ry + t` in the input frame), :obj:`similarity`,
        :obj:`kappa_xx`, :obj:`kappa_yy`, :obj:`history` and :obj:`sigma`.

    Degenerate input: single nodes, coincident points and symmetric structures
    give finite values and gradients; a graph with zero mass on one side has
    similarity 0 (1 if both sides are empty) and keeps the identity rotation.
    """
    check_positions(x, "x", dim=3)
    check_positions(y, "y", dim=3)
    check_same_space(x, y)
    tau = check_positive_scalar(tau, "tau")
    eps = check_positive_scalar(eps, "eps")
    cutoff = check_positive_scalar(cutoff, "cutoff", allow_none=True)
    kappa_floor = check_positive_scalar(kappa_floor, "kappa_floor", allow_none=True)
    min_sigma = check_positive_scalar(min_sigma, "min_sigma", allow_none=True)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
    for name, value in (("outlier_weight", outlier_weight), ("pose_blend", pose_blend)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    if isinstance(pose_reg, bool) or not isinstance(pose_reg, (int, float)) or not pose_reg >= 0 \
            or not math.isfinite(pose_reg):
        raise ValueError(f"pose_reg must be a finite number >= 0, got {pose_reg!r}")
    check_choice(init, "init", INITS)
    check_choice(objective, "objective", OBJECTIVES)
    check_choice(pose_grad, "pose_grad", POSE_GRADS)
    check_choice(estep, "estep", ESTEPS)
    check_choice(backend, "backend", BACKENDS)
    batch_x = check_batch(batch_x, x.size(0), "batch_x", x.device)
    batch_y = check_batch(batch_y, y.size(0), "batch_y", y.device)
    num_graphs = resolve_num_graphs(batch_x, batch_y, num_graphs)
    weight_x = check_weights(weight_x, x.size(0), "weight_x", x)
    weight_y = check_weights(weight_y, y.size(0), "weight_y", y)
    if init == "paired" and (x.size(0) != y.size(0) or not torch.equal(batch_x, batch_y)):
        raise ValueError("init='paired' needs x and y with the same nodes: equal sizes and equal "
                         "batch vectors (row i of x paired with row i of y)")
    sigmas, coefs = resolve_kernel(sigma, x.dtype, x.device)
    s_max = float(sigmas.detach().max())
    r = None if cutoff is None else cutoff * s_max

    q = normalize_weights(weight_x, batch_x, num_graphs, x.dtype, max_ratio=max_weight_ratio)
    p = normalize_weights(weight_y, batch_y, num_graphs, y.dtype, max_ratio=max_weight_ratio)
    mu_x = graph_sum(q.unsqueeze(-1) * x, batch_x, num_graphs)
    mu_y = graph_sum(p.unsqueeze(-1) * y, batch_y, num_graphs)
    xc, yc = x - mu_x[batch_x], y - mu_y[batch_y]
    if backend == "auto":
        nx = graph_sizes(batch_x, num_graphs)
        ny = graph_sizes(batch_y, num_graphs)
        per_graph = int((nx.max() * ny.max()).item()) if num_graphs else 0
        if native.supports(x):
            backend = "native"
        elif per_graph <= _DENSE_PER_GRAPH and num_graphs * per_graph <= _DENSE_TOTAL:
            backend = "dense"
        else:
            backend = "pairs"
    elif backend == "native" and not native.supports(x):
        raise ValueError("backend='native' needs the built extension and float32/float64 inputs on a "
                         "supported device (tg_rapidalign.ops.native.AVAILABLE is "
                         f"{native.AVAILABLE})")
    ev = _evaluator(backend, radius_backend, xc, yc, batch_x, batch_y, q, p, num_graphs)

    full = pose_grad == "full"
    # The second moments are needed by the principal-axes starts, pose_reg and the
    # robust E-step only (one pass over the points each, skipped otherwise).
    if init in ("principal_axes", "octahedral") or pose_reg > 0 or estep == "robust":
        with torch.set_grad_enabled(full and torch.is_grad_enabled()):
            cx = _weighted_cov(xc, q, batch_x, num_graphs)
            cy = _weighted_cov(yc, p, batch_y, num_graphs)
            # Mean per-axis variance of both sets: the scale of S (pose_reg) and the
            # robust E-step's first bandwidth; part of the gradient with pose_grad="full".
            spread = (cx.diagonal(dim1=-2, dim2=-1).sum(-1) + cy.diagonal(dim1=-2, dim2=-1).sum(-1)) / 6
        cx, cy = cx.detach(), cy.detach()
    else:
        spread = x.new_zeros(num_graphs)
    em = _EM(iterations=iterations, estep=estep, sigmas=sigmas if full else sigmas.detach(),
             coefs=coefs if full else coefs.detach(), r=r, cutoff=cutoff,
             pose_reg=pose_reg, blend=pose_blend,
             refresh=refresh_neighbors, outlier_weight=outlier_weight,
             min_sigma=min_sigma if min_sigma is not None else 1e-3 * s_max, s_max=s_max)
    eye = torch.eye(3, dtype=x.dtype, device=x.device).expand(num_graphs, 3, 3)
    zero_t = x.new_zeros(num_graphs, 3)
    with torch.set_grad_enabled(full and torch.is_grad_enabled()):
        if init in ("paired", "identity"):
            if init == "paired":
                pair_w = q * p
                args = (xc, yc, pair_w) if full else (xc.detach(), yc.detach(), pair_w.detach())
                R, t = weighted_procrustes(*args, batch_x, num_graphs)
            else:
                R, t = eye, zero_t
            R, t, history, sig2, fixed = em.run(ev if full else ev.detached(), R, t, spread)
        else:
            # EM from every candidate (the batch replicated K times), best final kappa wins.
            G = _signed_permutations(4 if init == "principal_axes" else 24, x.dtype, x.device)
            cand = _axis_candidates(cx, cy, G)  # [K, B, 3, 3]
            K = cand.size(0)
            rep = [torch.cat([v] * K) for v in (xc, yc, q, p)]
            if not full:
                rep = [v.detach() for v in rep]
            shift = torch.arange(K, device=x.device) * num_graphs
            bx_rep = (batch_x.unsqueeze(0) + shift.unsqueeze(1)).flatten()
            by_rep = (batch_y.unsqueeze(0) + shift.unsqueeze(1)).flatten()
            ev_rep = _evaluator(backend, radius_backend, rep[0], rep[1], bx_rep, by_rep, rep[2], rep[3],
                                K * num_graphs)
            R, t, history, sig2, fixed = em.run(ev_rep, cand.reshape(-1, 3, 3),
                                                zero_t.repeat(K, 1), spread.repeat(K))
            with torch.no_grad():
                score = ev_rep.detached().correlation(R.detach(), t.detach(), sigmas.detach(),
                                                      coefs.detach(), r, fixed).view(K, num_graphs)
            pick = score.argmax(0) * num_graphs + torch.arange(num_graphs, device=x.device)
            R, t = R[pick], t[pick]
            history = None if history is None else history[:, pick]
            sig2 = None if sig2 is None else sig2[pick]
            if fixed is not None:  # the chosen copy's neighbours: those of its starting pose
                fixed = ev.neighbours(cand.reshape(-1, 3, 3)[pick], zero_t, r)
    if not full:
        R, t = R.detach(), t.detach()

    kappa = ev.correlation(R, t, sigmas, coefs, r, fixed)
    if history is not None:
        history = torch.cat([history, kappa.detach().unsqueeze(0)])
    kxx, kyy = ev.self_sums(sigmas, coefs, r)
    sim = cosine_from_sums(kappa, kxx, kyy)
    value = sim if objective in ("log_cosine", "cosine") else kappa
    loss = _objective(objective, value, tau, eps, kappa_floor)
    t_out = mu_x - (R @ mu_y.unsqueeze(-1)).squeeze(-1) + t
    return AlignmentResult(loss, kappa, R, t_out, sim, kxx, kyy, history,
                           None if sig2 is None else sig2.sqrt())

