r"""Calibrating a kernel loss on synthetic corruptions.

Pairs :math:`(X, Y_\lambda)` are made by corrupting structures at levels
:math:`\lambda` (a transform from :mod:`tg_rapidalign.transforms`). The loss
:math:`L` (kernel MMD, ``1 - cosine`` or the alignment loss) with a learnable
:class:`MultiBandGaussianKernel` and a temperature :math:`t` is fitted by Adam so
that :math:`t L(X, Y_\lambda)` regresses onto :math:`\lambda`:

.. math::
    \mathcal{J} = \operatorname{mean}_i (t L_i - \lambda_i)^2 + w_{\mathrm{rank}}\,
    \operatorname{mean}_{\lambda_i < \lambda_j} \operatorname{softplus}\big((t L_i - t L_j) / \delta\big),

the second term rewarding the right ordering of every pair of levels, across
structures too (:math:`\delta` = the level spacing).
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
from tqdm.auto import tqdm

from ._validation import check_choice
from .functional.alignment import se3_kernel_alignment
from .functional.mmd import kernel_cosine, kernel_mmd
from .kernels import GaussianKernel, MultiBandGaussianKernel
from .transforms import GaussianNoise, NodeMasking, RigidSubpartDisplacement

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
        lines = [f"{'kernel':<28} | {'Spearman':>8} | {'ordered':>7} | {'identical loss':>14}"]
        for name, m in rows:
            lines.append(f"{name:<28} | {m.spearman:>8.4f} | {m.ordered_fraction:>7.3f} | "
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


def _loss_fn(loss: str, xs, ys):
    bx, by = Batch.from_data_list(xs), Batch.from_data_list(ys)
    x, y = bx.pos.double(), by.pos.double()
    n = len(xs)

    def evaluate(kernel):
        if loss == "mmd":
            return kernel_mmd(x, y, bx.batch, by.batch, sigma=kernel, num_graphs=n, backend="dense")
        if loss == "cosine":
            return 1 - kernel_cosine(x, y, bx.batch, by.batch, sigma=kernel, num_graphs=n, backend="dense")
        return se3_kernel_alignment(x, y, bx.batch, by.batch, sigma=kernel, num_graphs=n,
                                    backend="dense").loss
    return evaluate


def _metrics(values: Tensor, levels: Tensor, owner: Tensor, identical: Tensor) -> CalibrationMetrics:
    from scipy.stats import spearmanr

    v, lv = values.detach().cpu().double(), levels.cpu()
    rho = spearmanr(v.numpy(), lv.numpy()).statistic
    same = (owner[:, None] == owner[None]) & (lv[:, None] < lv[None])
    ordered = float((v[:, None] < v[None])[same].double().mean()) if bool(same.any()) else float("nan")
    rho = float(rho) if rho == rho else 0.0  # constant losses: no correlation
    return CalibrationMetrics(rho, ordered, float(identical.detach().abs().max()))


def _fit(kernel, f_train, lv, ranked, spacing, top, steps, lr, rank_weight, progress, loss):
    """Adam on the regression + ordering objective; returns (kernel, temperature, history)."""
    # The temperature starts where the initial losses span the levels.
    with torch.no_grad():
        span = float(f_train(kernel).abs().max())
    log_t = torch.tensor(math.log(top / span) if span > 0 else 0.0, dtype=torch.float64,
                         requires_grad=True)
    opt = torch.optim.Adam(list(kernel.parameters()) + [log_t], lr=lr)
    history = []
    for _ in tqdm(range(steps), desc=f"calibrating ({loss})", disable=not progress, leave=False):
        opt.zero_grad()
        pred = log_t.exp() * f_train(kernel)
        objective = (pred - lv).pow(2).mean()
        if rank_weight > 0 and bool(ranked.any()):
            gap = (pred[:, None] - pred[None])[ranked] / spacing
            objective = objective + rank_weight * torch.nn.functional.softplus(gap).mean()
        objective.backward()
        opt.step()
        history.append(float(objective.detach()))
    return kernel, float(log_t.detach().exp()), history


def calibrate_kernel(structures: Sequence[Data], corruption: Union[str, Callable] = "noise",
                     loss: str = "mmd", kernel: Optional[MultiBandGaussianKernel] = None,
                     levels: Sequence[float] = DEFAULT_LEVELS, repeats: int = 2,
                     steps: int = 200, lr: float = 0.05, rank_weight: float = 1.0, holdout: float = 0.3,
                     seed: int = 0, length: Optional[float] = None,
                     progress: bool = True) -> CalibrationReport:
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
        rank_weight (float, optional): weight of the ordering term. (default: :obj:`1.0`)
        holdout (float, optional): share of the structures held out for the report. (default: :obj:`0.3`)
        seed (int, optional): seeds the corruptions and the split. (default: :obj:`0`)
        length (float, optional): the length unit of ``"noise"`` and ``"rigid"``
            levels, in the data's units. (default: :obj:`None`, each structure's RMS radius)
        progress (bool, optional): show a progress bar. (default: :obj:`True`)
    """
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
    user_kernel = kernel
    if kernel is None:
        kernel = MultiBandGaussianKernel([med * f for f in (0.25, 0.5, 1.0, 2.0)], learnable=True)
    kernel = kernel.double()

    f_train, f_test = _loss_fn(loss, tr[0], tr[1]), _loss_fn(loss, te[0], te[1])
    f_same = _loss_fn(loss, test, test)
    spacing = max(levels[-1] - levels[0], 1e-12) / (len(levels) - 1)
    lv = tr[2]
    ranked = lv[:, None] < lv[None]  # every pair of levels: the report's Spearman pools structures

    def evaluate(k, f, same, temperature=1.0):
        with torch.no_grad():
            return f(k) * temperature, same(k) * temperature

    def report(k, temperature=1.0):
        values, ident = evaluate(k, f_test, f_same, temperature)
        return _metrics(values, te[2], te[3], ident), values

    # Baselines: the median-distance bandwidth, and the best single bandwidth of a grid (on training pairs).
    from scipy.stats import spearmanr
    grid = [med * 2.0 ** e for e in torch.linspace(-4, 3, 15).tolist()]
    scores = [spearmanr(f_train(GaussianKernel(s).double()).detach().numpy(), lv.numpy()).statistic
              for s in grid]
    best = grid[max(range(len(grid)), key=lambda i: scores[i] if scores[i] == scores[i] else -2)]

    before, before_values = report(kernel)
    # Two starts: the given (or default) kernel, and three bands around the best
    # single bandwidth, so the fit starts no worse than that baseline. The start
    # with the lower final training objective is kept.
    starts = [kernel]
    if user_kernel is None:
        starts.append(MultiBandGaussianKernel([best * 0.5, best, best * 2.0], weights=[0.2, 0.6, 0.2],
                                              learnable=True).double())
    fits = [_fit(k, f_train, lv, ranked, spacing, levels[-1], steps, lr, rank_weight, progress, loss)
            for k in starts]
    kernel, temperature, history = min(fits, key=lambda fit: fit[2][-1] if fit[2] else 0.0)
    after, after_values = report(kernel, temperature)
    baselines = {f"median heuristic (σ={med:.3g})": report(GaussianKernel(med).double())[0],
                 f"best single σ={best:.3g}": report(GaussianKernel(best).double())[0]}
    curves = {"levels": te[2], "before": before_values, "after": after_values}
    return CalibrationReport(kernel, temperature, before, after, baselines, med, best, history, curves)
