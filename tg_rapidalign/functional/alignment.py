r"""The SE(3)-invariant kernel-correlation alignment loss with a closed-form pose.

The loss is a pipeline of named stages, each in :mod:`tg_rapidalign.alignment`:

1. **inputs** (:func:`.alignment.inputs.prepare`): checks, per-graph normalised
   weights, centring on the weighted centroids;
2. **backend** (:func:`tg_rapidalign.backends.select`): the evaluator of kernel
   correlations and E-step moments (:mod:`.alignment.evaluators`);
3. **start poses and EM steps** (:func:`.alignment.em.solve_pose`): the paired,
   identity or principal-axes starts, then E-step moments -> pose
   (:mod:`.alignment.pose`);
4. **score** (:func:`.alignment.score.score`): the correlation at the pose, its
   cosine, and the loss.
"""
from __future__ import annotations

import inspect
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import backends
from .._validation import check_choice, check_positive_scalar
from ..alignment.em import EMSteps, solve_pose
from ..alignment.evaluators import make_evaluator
from ..alignment.inputs import prepare, second_moments
from ..alignment.options import ESTEPS, INITS, OBJECTIVES, POSE_GRADS, AlignmentOptions, check_iterations
from ..alignment.score import score
from ..kernels import KernelLike, resolve_kernel
from ..numerics import numeric_policy

BACKENDS = backends.names("alignment")


def _check_choices(tau, cutoff, iterations, init, objective, pose_grad, estep, backend):
    for value, name, choices in ((init, "init", INITS), (objective, "objective", OBJECTIVES),
                                 (pose_grad, "pose_grad", POSE_GRADS), (estep, "estep", ESTEPS),
                                 (backend, "backend", BACKENDS)):
        check_choice(value, name, choices)
    return (check_positive_scalar(tau, "tau"), check_positive_scalar(cutoff, "cutoff", allow_none=True),
            check_iterations(iterations))


def check_alignment_keywords(kwargs: dict) -> None:
    """Validates keyword arguments meant for :func:`se3_kernel_alignment` (as the
    loss module and the metric hold them), so that a bad value fails where it
    is given rather than at the first call."""
    own = {name: p.default for name, p in inspect.signature(se3_kernel_alignment).parameters.items()
           if p.kind is inspect.Parameter.KEYWORD_ONLY}
    fields = AlignmentOptions.fields()
    unknown = set(kwargs) - set(own) - set(fields)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)} for se3_kernel_alignment")
    AlignmentOptions.merge(kwargs.get("options"), {k: v for k, v in kwargs.items() if k in fields})
    merged = {**own, **{k: v for k, v in kwargs.items() if k in own}}
    _check_choices(*(merged[k] for k in ("tau", "cutoff", "iterations", "init", "objective", "pose_grad",
                                         "estep", "backend")))


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


@numeric_policy
def se3_kernel_alignment(x: Tensor, y: Tensor, batch_x: Optional[Tensor] = None,
                         batch_y: Optional[Tensor] = None, weight_x: Optional[Tensor] = None,
                         weight_y: Optional[Tensor] = None, sigma: KernelLike = 1.0, *,
                         tau: float = 1.0, iterations: int = 1, cutoff: Optional[float] = 3.0,
                         init: str = "principal_axes", objective: str = "log_cosine",
                         pose_grad: str = "detach", estep: str = "kernel", backend: str = "auto",
                         num_graphs: Optional[int] = None, options: Optional[AlignmentOptions] = None,
                         **option_kwargs) -> AlignmentResult:
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
    :obj:`"log_kappa"` (the plain log-correlation :math:`-\log(\kappa + \varepsilon)/\tau`,
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
    correspondence, exact for any rotation; :obj:`"identity"` starts
    from the unrotated pose (one EM run), invariant only to small rotations;
    :obj:`"global"` (partial overlap, outliers, any rotation) searches a
    128-rotation grid of SO(3) with the kernel-correlation EM on point subsets,
    refines the best distinct candidates while annealing the bandwidth, then
    runs the requested EM steps on all points from each of the best 4 and keeps
    the largest :math:`\kappa` (:mod:`tg_rapidalign.alignment.search`; one graph
    at a time, use it with :obj:`estep="kernel"`).

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
        init (str, optional): :obj:`"principal_axes"`, :obj:`"octahedral"`,
            :obj:`"paired"`, :obj:`"identity"` or :obj:`"global"`. (default: :obj:`"principal_axes"`)
        objective (str, optional): See above. (default: :obj:`"log_cosine"`)
        pose_grad (str, optional): :obj:`"detach"` treats the solved pose as a
            constant (the stable default; at a converged pose this
            equals the full gradient, by the envelope theorem); :obj:`"full"`
            differentiates through the EM steps and the polar factor. The initial
            pose is a constant except for :obj:`init="paired"`. (default: :obj:`"detach"`)
        estep (str, optional): :obj:`"kernel"` (the EM step of :math:`\kappa` itself, with the loss's
            kernel) or :obj:`"robust"`: per-point normalised soft correspondences
            :math:`P(j \mid i) = p_j g_{ij} / (\sum_{j'} p_{j'} g_{ij'} + c)` with a
            uniform outlier term :math:`c` and the bandwidth re-estimated every
            step, as in coherent point drift; for partial overlap and outliers,
            with 20-50 :obj:`iterations`. The loss is then :math:`\kappa` with
            :obj:`sigma` at the robust pose. (default: :obj:`"kernel"`)
        backend (str, optional): :obj:`"native"` (the fused C++/CUDA kernel,
            O(N + M) memory), :obj:`"dense"` (padded per-graph matrices, pure
            torch), :obj:`"pairs"` (streamed neighbor pairs, pure torch) or
            :obj:`"auto"` (native when built, else dense for molecule-sized graphs,
            else pairs; see :mod:`tg_rapidalign.backends`). (default: :obj:`"auto"`)
        num_graphs (int, optional): :math:`B`, if trailing graphs are empty. (default: :obj:`None`)
        options (AlignmentOptions, optional): The finer options (:obj:`eps`,
            :obj:`kappa_floor`, :obj:`max_weight_ratio`, :obj:`outlier_weight`,
            :obj:`min_sigma`, :obj:`pose_blend`, :obj:`pose_reg`,
            :obj:`refresh_neighbors`, :obj:`radius_backend`), see
            :class:`~tg_rapidalign.alignment.AlignmentOptions`. (default: :obj:`None`)
        **option_kwargs: Any field of :class:`~tg_rapidalign.alignment.AlignmentOptions`
            as a keyword (overrides :obj:`options`), e.g. :obj:`pose_blend=0.5`.

    Returns:
        AlignmentResult: fields :obj:`loss`, :obj:`kappa`, :obj:`R`, :obj:`t`
        (:math:`x \approx Ry + t` in the input frame), :obj:`similarity`,
        :obj:`kappa_xx`, :obj:`kappa_yy`, :obj:`history` and :obj:`sigma`.

    Degenerate input: single nodes, coincident points and symmetric structures
    give finite values and gradients; a graph with zero mass on one side has
    similarity 0 (1 if both sides are empty) and keeps the identity rotation.
    """
    opts = AlignmentOptions.merge(options, option_kwargs)
    tau, cutoff, iterations = _check_choices(tau, cutoff, iterations, init, objective, pose_grad, estep,
                                             backend)
    prep = prepare(x, y, batch_x, batch_y, weight_x, weight_y, num_graphs, init == "paired",
                   opts.max_weight_ratio)
    data = prep.data
    sigmas, coefs = resolve_kernel(sigma, x.dtype, x.device)

    problem = backends.Problem.of(x, bands=sigmas.numel(),
                                  batches=(data.batch_x, data.batch_y, data.num_graphs))
    backend = backends.select("alignment", backend, problem)
    ev = make_evaluator(backend, opts.radius_backend, *data)
    full = pose_grad == "full"
    needs_moments = init in ("principal_axes", "octahedral") or opts.pose_reg > 0 or estep == "robust"
    spread, covariances = second_moments(data, needs_moments, full)
    em = EMSteps(iterations=iterations, estep=estep, sigmas=sigmas if full else sigmas.detach(),
                 coefs=coefs if full else coefs.detach(), cutoff=cutoff, pose_reg=opts.pose_reg,
                 blend=opts.pose_blend, refresh=opts.refresh_neighbors, outlier_weight=opts.outlier_weight,
                 min_sigma=opts.min_sigma)
    R, t, history, sig2, fixed = solve_pose(ev, data, em, init, full, spread, covariances, backend,
                                            opts.radius_backend)
    if not full:
        R, t = R.detach(), t.detach()

    out = score(ev, R, t, sigmas, coefs, cutoff, fixed, objective, tau, opts.eps, opts.kappa_floor)
    if history is not None:
        history = torch.cat([history, out.kappa.detach().unsqueeze(0)])
    t_out = prep.mu_x - (R @ prep.mu_y.unsqueeze(-1)).squeeze(-1) + t
    return AlignmentResult(out.loss, out.kappa, R, t_out, out.similarity, out.kappa_xx, out.kappa_yy, history,
                           None if sig2 is None else sig2.sqrt())
