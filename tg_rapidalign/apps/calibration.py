r"""Calibrating a kernel loss on synthetic corruptions.

Pairs :math:`(X, Y_\lambda)` are made by corrupting structures at levels
:math:`\lambda` (a transform from :mod:`tg_rapidalign.transforms`). The loss
:math:`L` (kernel MMD, ``1 - cosine`` or the alignment loss) with a learnable
:class:`MultiBandGaussianKernel` and a temperature :math:`t` is fitted by Adam so
that :math:`t L(X, Y_\lambda)` regresses onto :math:`\lambda`:

.. math::
    \mathcal{J} = \operatorname{mean}_i (t L_i - \lambda_i)^2
    + w_{\mathrm{rank}} \big(1 - \tilde\rho(L, \lambda)\big),

the second term rewarding the right ordering: :math:`\tilde\rho` is a
differentiable Spearman correlation (soft ranks of the losses against the
ranks of the levels, pooled over structures as in the report). It does not
depend on the loss's scale, so the temperature is fitted by the MSE alone. The
fit starts from the given kernel (default: four bands around the median
distance) and from three bands around the best single bandwidth; of these fits
and that single bandwidth itself, the kernel with the highest training Spearman
is kept. With node types (``node_type``, atomic
numbers by default) the kernel's cross-type weight is fitted too (see
:mod:`tg_rapidalign.kernels`).
Held-out pairs give the report: Spearman correlation of loss and level, the
fraction of correctly ordered pairs (same structure, different levels), the loss
on identical pairs, before and after, against two baselines (the
median-distance bandwidth and the best single bandwidth of a grid).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from .._validation import check_choice
from ..extras import progress as progress_bar
from ..functional.alignment import se3_kernel_alignment
from ..kernels import GaussianKernel, MultiBandGaussianKernel
from ..transforms import GaussianNoise, NodeMasking, RigidSubpartDisplacement
from .pair_table import PairKernelTable
from .threads import intra_op_threads

LOSSES = ("mmd", "cosine", "alignment")
DEFAULT_LEVELS = tuple(i / 10 for i in range(11))
CORRUPTIONS = {"noise": GaussianNoise, "masking": NodeMasking, "rigid": RigidSubpartDisplacement}


@dataclass
class CalibrationMetrics:
    spearman: float          #: Spearman correlation of loss and level (held-out pairs)
    ordered_fraction: float  #: share of same-structure pairs at different levels in the right order
    identical_loss: float    #: largest loss on identical pairs (X, X)


@dataclass
class CalibrationReport:
    kernel: MultiBandGaussianKernel
    temperature: float
    before: CalibrationMetrics
    after: CalibrationMetrics
    baselines: Dict[str, CalibrationMetrics]
    median_sigma: float
    best_single_sigma: float
    history: List[float] = field(default_factory=list)
    curves: Dict[str, Tensor] = field(default_factory=dict)  #: held-out levels and losses (before/after)

    def summary(self) -> str:
        rows = [("initial kernel", self.before), ("calibrated", self.after)] + \
            [(name, m) for name, m in self.baselines.items()]
        lines = [f"{'kernel':<34} | {'Spearman':>8} | {'ordered':>7} | {'identical loss':>14}"]
        for name, m in rows:
            lines.append(f"{name:<34} | {m.spearman:>8.4f} | {m.ordered_fraction:>7.3f} | "
                         f"{m.identical_loss:>14.2e}")
        return "\n".join(lines)


def median_distance(structures: Sequence[Data]) -> float:
    """Median pairwise distance within the structures (the median heuristic bandwidth)."""
    ds = []
    for d in structures:
        p = d.pos.detach().double()
        i, j = torch.triu_indices(len(p), len(p), 1)
        ds.append((p[i] - p[j]).norm(dim=1))
    return float(torch.cat(ds).median()) if ds else 1.0


def _pairs(structures, make, levels, repeats, generator):
    xs, ys, lv, owner = [], [], [], []
    for s, data in enumerate(structures):
        for level in levels:
            for _ in range(repeats):
                ys.append(make(float(level), generator)(data))
                xs.append(data)
                lv.append(float(level))
                owner.append(s)
    return xs, ys, torch.tensor(lv, dtype=torch.float64), torch.tensor(owner)


def corruption_maker(corruption: Union[str, Callable], length: Optional[float] = None) -> Callable:
    """``f(level, generator) -> transform`` for a corruption name (with ``length``
    as the unit of the noise and rigid levels), or ``corruption`` itself if callable."""
    if isinstance(corruption, str):
        kind = CORRUPTIONS[check_choice(corruption, "corruption", tuple(CORRUPTIONS))]
        extra = {"length": length} if length is not None and kind is not NodeMasking else {}
        return lambda level, gen: kind(level, generator=gen, **extra)
    if callable(corruption):
        return corruption
    raise TypeError(f"corruption must be a name or a callable, got {type(corruption).__name__}")


def calibration_pairs(structures: Sequence[Data], make: Callable, levels: Sequence[float], repeats: int,
                      holdout: float, seed: int):
    """The seeded split of :func:`calibrate_kernel` and its corrupted pairs:
    ``(train, test, train_pairs, test_pairs)``, each pair set ``(xs, ys, levels, owner)``."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(structures), generator=gen).tolist()
    n_test = min(max(1, int(round(holdout * len(structures)))), len(structures) - 1)
    test = [structures[i] for i in order[:n_test]]
    train = [structures[i] for i in order[n_test:]]
    return train, test, _pairs(train, make, levels, repeats, gen), _pairs(test, make, levels, repeats, gen)


def _loss_fn(loss: str, xs, ys, node_type: Optional[str] = None):
    """``f(kernel) -> [pairs]`` losses of the pairs ``(xs[g], ys[g])``. MMD and
    cosine read a :class:`PairKernelTable` (distances computed once: each call
    costs one exponential per band and entry); the alignment loss solves the
    pose each call."""
    if loss == "mmd":
        return PairKernelTable(xs, ys, node_type).mmd
    if loss == "cosine":
        table = PairKernelTable(xs, ys, node_type)
        return lambda kernel: 1 - table.cosine(kernel)
    bx, by = Batch.from_data_list(xs), Batch.from_data_list(ys)
    x, y, n = bx.pos.double(), by.pos.double(), len(xs)
    return lambda kernel: se3_kernel_alignment(x, y, bx.batch, by.batch, sigma=kernel, num_graphs=n,
                                               backend="dense").loss


def average_ranks(values: Tensor) -> Tensor:
    """Ranks ``0 .. n-1`` of ``values`` ``[n]``, ties sharing their mean rank."""
    ordered, order = torch.sort(values)
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = torch.empty(len(values), dtype=torch.float64)
    ranks[order] = ((ends - counts + ends - 1) / 2)[inverse]
    return ranks


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` ``[n]`` (average ranks for
    ties); NaN when either is constant."""
    ra, rb = average_ranks(a.detach().cpu().double()), average_ranks(b.detach().cpu().double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float(ra @ rb) / denom if denom > 0 else float("nan")


def _metrics(values: Tensor, levels: Tensor, owner: Tensor, identical: Tensor) -> CalibrationMetrics:
    v, lv = values.detach().cpu().double(), levels.cpu()
    rho = spearman(v, lv)
    same = (owner[:, None] == owner[None]) & (lv[:, None] < lv[None])
    ordered = float((v[:, None] < v[None])[same].double().mean()) if bool(same.any()) else float("nan")
    rho = rho if rho == rho else 0.0  # constant losses: no correlation
    return CalibrationMetrics(rho, ordered, float(identical.detach().abs().max()))


def _standard_ranks(values: Tensor) -> Tensor:
    """Average ranks (ties share their mean rank), standardised."""
    r = (values[:, None] > values[None]).double().sum(1) + \
        0.5 * ((values[:, None] == values[None]).double().sum(1) - 1)
    return (r - r.mean()) / r.std().clamp_min(1e-12)


def soft_spearman(values: Tensor, level_ranks: Tensor, tau: float = 0.05) -> Tensor:
    r"""A differentiable Spearman correlation: the soft rank of each value,
    :math:`\sum_j \operatorname{sigmoid}((z_i - z_j) / \tau)` on the standardised
    values :math:`z`, correlated with the (standardised) ranks of the levels.
    Scale-free, so it shapes the kernel and leaves the temperature to the MSE."""
    z = (values - values.mean()) / values.std().clamp_min(1e-12)
    r = torch.sigmoid((z[:, None] - z[None]) / tau).sum(1)
    r = (r - r.mean()) / r.std().clamp_min(1e-12)
    return (r * level_ranks).mean() * len(r) / max(len(r) - 1, 1)


def stage_label(stage: int, stages: int, what: str) -> str:
    """The progress label ``"stage k of n: what"``."""
    return f"stage {stage} of {stages}: {what}"


def _fit(kernel, f_train, lv, top, steps, lr, rank_weight, progress, label):
    """Adam on the regression + ordering objective; returns (kernel, temperature, history)."""
    # The temperature starts where the initial losses span the levels.
    with torch.no_grad():
        span = float(f_train(kernel).abs().max())
    log_t = torch.tensor(math.log(top / span) if span > 0 else 0.0, dtype=torch.float64,
                         requires_grad=True)
    opt = torch.optim.Adam(list(kernel.parameters()) + [log_t], lr=lr)
    level_ranks = _standard_ranks(lv)
    history = []
    for _ in progress_bar(range(steps), enabled=progress, desc=label, unit="step"):
        opt.zero_grad()
        values = f_train(kernel)
        objective = (log_t.exp() * values - lv).pow(2).mean()
        if rank_weight > 0 and len(lv) > 1:
            objective = objective + rank_weight * (1 - soft_spearman(values, level_ranks))
        objective.backward()
        opt.step()
        history.append(float(objective.detach()))
    return kernel, float(log_t.detach().exp()), history


def calibrate_kernel(structures: Sequence[Data], corruption: Union[str, Callable] = "noise",
                     loss: str = "mmd", kernel: Optional[MultiBandGaussianKernel] = None,
                     levels: Sequence[float] = DEFAULT_LEVELS, repeats: int = 2,
                     steps: int = 200, lr: float = 0.05, rank_weight: float = 10.0, holdout: float = 0.3,
                     seed: int = 0, length: Optional[float] = None, node_type: Optional[str] = "z",
                     progress: bool = True, threads: Optional[int] = 1) -> CalibrationReport:
    r"""Fits ``kernel`` (default: four learnable bands at the median distance times
    0.25, 0.5, 1, 2) and a temperature so that the loss tracks the corruption level.

    Args:
        structures (list of Data): the clean structures (``pos``, optional ``edge_index``).
        corruption (str or callable, optional): ``"noise"``, ``"masking"``, ``"rigid"``, or
            ``f(level, generator) -> transform``. (default: :obj:`"noise"`)
        loss (str, optional): ``"mmd"``, ``"cosine"`` or ``"alignment"``. (default: :obj:`"mmd"`)
        levels (sequence of float, optional): corruption levels. (default: 0, 0.1, ..., 1)
        repeats (int, optional): corrupted copies per structure and level. (default: :obj:`2`)
        steps (int, optional): Adam steps. (default: :obj:`200`)
        lr (float, optional): learning rate. (default: :obj:`0.05`)
        rank_weight (float, optional): weight of the ordering term. (default: :obj:`10.0`)
        holdout (float, optional): share of the structures held out for the report. (default: :obj:`0.3`)
        seed (int, optional): seeds the corruptions and the split. (default: :obj:`0`)
        length (float, optional): the length unit of ``"noise"`` and ``"rigid"``
            levels, in the data's units. (default: :obj:`None`, each structure's RMS radius)
        node_type (str, optional): a node attribute of integer types (atomic
            numbers): when every structure has it and the loss is ``"mmd"`` or
            ``"cosine"`` and it holds two types or more, the kernel gets a learnable ``cross_type_weight``
            :math:`\beta` (pairs of different types count with weight
            :math:`\beta`) fitted with the bands; :obj:`None` ignores types.
            (default: :obj:`"z"`)
        progress (bool, optional): show labelled progress bars (``stage k of n:
            ...``) when tqdm is installed (the ``progress`` extra). (default: :obj:`True`)
        threads (int, optional): torch's intra-op threads while calibrating
            (restored afterwards); :obj:`None` keeps the current setting. The
            sums are small (about :math:`10^6` elements per step for the
            built-in molecules), where a second thread gains little and, on
            cores shared with other processes, spin-waits. (default: :obj:`1`)

    The baselines are plain Gaussian kernels (no types), as a user who does not
    calibrate would use them; with types the report adds the best single
    bandwidth with the type kernel at :math:`\beta = 0`, which shows how much of
    the gain the types bring on their own.
    """
    with intra_op_threads(threads):
        return _calibrate(structures, corruption, loss, kernel, levels, repeats, steps, lr, rank_weight,
                          holdout, seed, length, node_type, progress)


def _calibrate(structures, corruption, loss, kernel, levels, repeats, steps, lr, rank_weight, holdout,
               seed, length, node_type, progress) -> CalibrationReport:
    loss = check_choice(loss, "loss", LOSSES)
    structures = list(structures)
    if len(structures) < 2:
        raise ValueError(f"structures must hold at least two graphs (train and held out), got "
                         f"{len(structures)}")
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    make = corruption_maker(corruption, length)
    levels = sorted(float(v) for v in levels)
    if len(levels) < 2 or levels[0] < 0:
        raise ValueError("levels must hold at least two non-negative values")
    train, test, tr, te = calibration_pairs(structures, make, levels, repeats, holdout, seed)
    med = median_distance(train)
    typed = (node_type is not None and loss != "alignment"
             and all(getattr(d, node_type, None) is not None for d in structures)
             and len(set().union(*(d[node_type].view(-1).tolist() for d in structures))) > 1)
    beta0 = 0.5 if typed else None
    user_kernel = kernel
    if kernel is None:
        kernel = MultiBandGaussianKernel([med * f for f in (0.25, 0.5, 1.0, 2.0)], learnable=True,
                                         cross_type_weight=beta0)
    kernel = kernel.double()
    types = node_type if typed else None
    ev = _Evaluators(loss, tr, te, test, types)
    stages = 2 if user_kernel is not None else 3

    # Baselines (plain kernels, no types): the median-distance bandwidth, and the
    # best single bandwidth of a grid (chosen on training pairs).
    grid = [med * 2.0 ** e for e in torch.linspace(-4, 3, 15).tolist()]
    best, best_typed = ev.best_single(grid, progress, stage_label(1, stages, f"scoring {len(grid)} single "
                                                                  "bandwidths"))
    before, before_values = ev.report(kernel)
    # Two starts: the given (or default) kernel, and three bands around the best
    # single bandwidth; the kernel with the highest training Spearman (the
    # report's measure) is kept.
    starts = [(kernel, "fitting the " + ("given kernel" if user_kernel is not None else
                                         "4 bands around the median distance"))]
    if user_kernel is None:
        starts.append((MultiBandGaussianKernel([best_typed * 0.5, best_typed, best_typed * 2.0],
                                               weights=[0.2, 0.6, 0.2], learnable=True,
                                               cross_type_weight=beta0).double(),
                       f"fitting 3 bands around the best single σ={best_typed:.3g}"))
    fits = [_fit(k, ev.train, tr[2], levels[-1], steps, lr, rank_weight, progress,
                 stage_label(s + 2, stages, f"{what} ({loss})")) for s, (k, what) in enumerate(starts)]
    if user_kernel is None:
        # The best single bandwidth itself (with the type kernel at beta = 0) is a
        # candidate too: near the ceiling a fit can move off it for the worse.
        fits.append(ev.single_fit(best_typed, typed))

    kernel, temperature, history = max(fits, key=lambda fit: ev.train_rho(ev.train, fit[0]))
    after, after_values = ev.report(kernel, temperature)
    baselines = {f"median heuristic (σ={med:.3g})": ev.report(GaussianKernel(med).double(), plain=True)[0],
                 f"best single σ={best:.3g}": ev.report(GaussianKernel(best).double(), plain=True)[0]}
    if typed:
        baselines[f"best single σ={best_typed:.3g}, types (β=0)"] = ev.report(GaussianKernel(best_typed)
                                                                               .double())[0]
    curves = {"levels": te[2], "before": before_values, "after": after_values}
    return CalibrationReport(kernel, temperature, before, after, baselines, med, best, history, curves)


class _Evaluators:
    """The losses of the training pairs, the held-out pairs and the identical
    held-out pairs, with and without node types, and the scores built on them."""

    def __init__(self, loss, tr, te, test, types):
        self.train = _loss_fn(loss, tr[0], tr[1], types)
        self.test, self.same = _loss_fn(loss, te[0], te[1], types), _loss_fn(loss, test, test, types)
        typed = types is not None
        self.plain_train = _loss_fn(loss, tr[0], tr[1]) if typed else self.train
        self.plain = (_loss_fn(loss, te[0], te[1]), _loss_fn(loss, test, test)) if typed else \
            (self.test, self.same)
        self.levels, self.test_levels, self.owner, self.typed = tr[2], te[2], te[3], typed

    def report(self, kernel, temperature=1.0, plain=False):
        """Held-out metrics and losses of ``kernel``."""
        test, same = self.plain if plain else (self.test, self.same)
        with torch.no_grad():
            values, ident = test(kernel) * temperature, same(kernel) * temperature
        return _metrics(values, self.test_levels, self.owner, ident), values

    def train_rho(self, f, kernel):
        """Training Spearman of loss ``f`` with ``kernel`` (-2 for constant losses)."""
        with torch.no_grad():
            rho = spearman(f(kernel), self.levels)
        return rho if rho == rho else -2.0

    def best_single(self, grid, progress, label):
        """The grid's bandwidth of highest training Spearman, plain and with types."""
        scores = []
        for s in progress_bar(grid, enabled=progress, desc=label, unit="σ"):
            k = GaussianKernel(s).double()
            scores.append((self.train_rho(self.plain_train, k),
                           self.train_rho(self.train, k) if self.typed else None))
        best = grid[max(range(len(grid)), key=lambda i: scores[i][0])]
        best_typed = grid[max(range(len(grid)), key=lambda i: scores[i][1])] if self.typed else best
        return best, best_typed

    def single_fit(self, sigma, typed):
        """The single bandwidth as a fit: its kernel (type kernel at beta = 0), the
        least-squares temperature and that objective."""
        single = MultiBandGaussianKernel([sigma], learnable=True, cross_type_weight=0.0 if typed else None
                                         ).double()
        with torch.no_grad():
            values = self.train(single)
            t = float((values * self.levels).sum() / values.pow(2).sum().clamp_min(1e-300))
        return single, t, [float((t * values - self.levels).pow(2).mean())]
