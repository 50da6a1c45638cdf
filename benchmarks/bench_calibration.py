"""How much room is there above the best single bandwidth? Held-out Spearman
correlation of the kernel-cosine loss with the corruption level on the built-in
G2 molecules, for

* the oracle: the realised corruption (mean squared displacement for noise, the
  share of dropped nodes for masking), which a kernel cannot see since it does
  not know which node went where;
* the best single bandwidth of a fine grid (29 values, chosen on training pairs);
* the best two-band mixture of that grid (every pair of bands, 7 weights each,
  chosen on training pairs), an exhaustive search of what a fit of a plain
  Gaussian mixture could reach;
* the best single bandwidth with the atom-type kernel at cross-type weight 0
  (only atoms of the same element interact);
* ``calibrate_kernel`` (same split, same pairs; bands, mixture weights and the
  cross-type weight fitted).

The +- column is a bootstrap standard error over held-out molecules; the last
column is the paired difference to the best single bandwidth with its error.

    python benchmarks/bench_calibration.py --corruption noise --length 0.5
    python benchmarks/bench_calibration.py --corruption masking
"""
from __future__ import annotations

import argparse
import itertools

import torch
from scipy.stats import spearmanr
from torch_geometric.data import Batch

from tg_rapidalign.apps.calibration import (
    CORRUPTIONS,
    DEFAULT_LEVELS,
    calibrate_kernel,
    calibration_pairs,
    corruption_maker,
    median_distance,
)
from tg_rapidalign.apps.datasets import g2_molecules
from tg_rapidalign.functional.mmd import cosine_from_sums, kernel_sums
from tg_rapidalign.kernels import GaussianKernel
from tg_rapidalign.transforms.corruptions import rms_radius


def band_sums(pairs, sigmas, typed=False):
    """[bands, 3, pairs]: kxy, kxx, kyy of every pair for each bandwidth (the
    sums are linear in the mixture weights, so mixtures need no new pass); with
    ``typed``, only atoms of the same element interact."""
    bx, by = Batch.from_data_list(pairs[0]), Batch.from_data_list(pairs[1])
    types = dict(type_x=bx.z, type_y=by.z) if typed else {}
    out = []
    for s in sigmas:
        k = kernel_sums(bx.pos.double(), by.pos.double(), bx.batch, by.batch,
                        sigma=GaussianKernel(s).double(), num_graphs=len(pairs[0]), backend="dense", **types)
        out.append(torch.stack([k.kxy, k.kxx, k.kyy]))
    return torch.stack(out)


def cosine_loss(sums, weights):
    s = (weights[:, None, None] * sums).sum(0)
    return 1 - cosine_from_sums(s[0], s[1], s[2])


def oracle(pairs, relative):
    """Realised corruption: mean squared displacement (over the squared RMS radius
    if that is the level's unit) or the share of dropped nodes."""
    out = []
    for x, y in zip(pairs[0], pairs[1]):
        if x.pos.shape != y.pos.shape:
            out.append(1 - len(y.pos) / len(x.pos))
            continue
        msd = float((x.pos - y.pos).pow(2).sum(1).mean())
        out.append(msd / rms_radius(x.pos) ** 2 if relative else msd)
    return torch.tensor(out, dtype=torch.float64)


def bootstrap(values, levels, owner, reference, draws=300, seed=0):
    """Spearman, its standard error and the paired difference to ``reference``
    (with its error), resampling held-out molecules."""
    gen = torch.Generator().manual_seed(seed)
    groups = [torch.nonzero(owner == m).flatten() for m in owner.unique()]
    rho = lambda v, idx: spearmanr(v[idx].numpy(), levels[idx].numpy()).statistic  # noqa: E731
    full = torch.arange(len(values))
    stats, diffs = [], []
    for _ in range(draws):
        pick = torch.randint(len(groups), (len(groups),), generator=gen)
        idx = torch.cat([groups[int(i)] for i in pick])
        stats.append(rho(values, idx))
        diffs.append(rho(values, idx) - rho(reference, idx))
    stats, diffs = torch.tensor(stats), torch.tensor(diffs)
    return rho(values, full), float(stats.std()), rho(values, full) - rho(reference, full), float(diffs.std())


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corruption", default="noise", choices=sorted(CORRUPTIONS))
    parser.add_argument("--length", type=float, default=None, help="noise unit (default: RMS radius)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    structures = g2_molecules()
    # The same split and pairs as calibrate_kernel's defaults (holdout 0.3, 2 repeats).
    make = corruption_maker(args.corruption, args.length)
    train, test, tr, te = calibration_pairs(structures, make, DEFAULT_LEVELS, 2, 0.3, args.seed)

    med = median_distance(train)
    grid = [med * 2.0 ** e for e in torch.linspace(-4, 3, 29).tolist()]
    a, b = band_sums(tr, grid), band_sums(te, grid)
    eye = torch.eye(len(grid), dtype=torch.float64)
    train_rho = lambda w, sums=a: spearmanr(cosine_loss(sums, w).numpy(), tr[2].numpy()).statistic  # noqa: E731
    single = max(range(len(grid)), key=lambda i: train_rho(eye[i]))
    mixes = [(w * eye[i] + (1 - w) * eye[j], (grid[i], grid[j], w))
             for i, j in itertools.combinations(range(len(grid)), 2)
             for w in (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)]
    pair_w, pair = max(mixes, key=lambda m: train_rho(m[0]))
    at, bt = band_sums(tr, grid, typed=True), band_sums(te, grid, typed=True)
    typed = max(range(len(grid)), key=lambda i: train_rho(eye[i], at))

    rep = calibrate_kernel(structures, args.corruption, "cosine", seed=args.seed, length=args.length,
                           progress=False)
    reference = cosine_loss(b, eye[single])
    rows = [("oracle (realised corruption)", oracle(te, args.length is None)),
            (f"best single σ={grid[single]:.3g}", reference),
            (f"best 2-band mix σ=({pair[0]:.3g}, {pair[1]:.3g}) w={pair[2]:.2f}", cosine_loss(b, pair_w)),
            (f"best single σ={grid[typed]:.3g}, atom types (β=0)", cosine_loss(bt, eye[typed])),
            ("calibrate_kernel", rep.curves["after"])]
    if args.corruption == "masking":
        unit = "level = share of nodes dropped"
    else:
        unit = f"level unit {args.length} Å" if args.length is not None else "level unit = RMS radius"
    print(f"{args.corruption} ({unit}); {len(test)} held-out molecules, {len(te[2])} pairs; cosine loss; "
          f"calibrated: {rep.kernel}")
    print(f"{'loss':<46} | {'Spearman':>8} | {'±':>6} | {'vs single':>9} | {'±':>6}")
    for name, values in rows:
        rho, err, diff, derr = bootstrap(values, te[2], te[3], reference)
        print(f"{name:<46} | {rho:>8.4f} | {err:>6.4f} | {diff:>+9.4f} | {derr:>6.4f}")


if __name__ == "__main__":
    main()
