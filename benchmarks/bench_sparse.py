"""Cost per interacting pair of the native kernel MMD, dense vs sparse neighbourhoods.

    python benchmarks/bench_sparse.py                          # 20k dense, 200k and 1M sparse
    python benchmarks/bench_sparse.py --sparse 200000 --repeats 5 --threads 2

kernel_mmd forward+backward (both point sets require grad), float32, cutoff 3,
points uniform in the unit cube (x and y: N points each). The dense regime is
N = 20k at sigma = 0.1 (a few thousand neighbours per point); the sparse regime
picks sigma for ``--neighbours`` (default 50) expected neighbours within
3 sigma: N (4/3) pi (3 sigma)^3 = neighbours. The pair count is exact: the pairs
within the cutoff of the three sums (xx, yy, xy), counted with the library's
native row sums of a flat kernel. ns/pair = best time / pairs; ``vs dense`` is
that cost over the dense regime's in the same run; ``cpu ns/pair`` counts the
process's CPU time instead (all threads: less sensitive to a busy machine, but
it also counts threads spinning). Needs the native extension.
"""
from __future__ import annotations

import argparse
import math
import time

CUTOFF = 3.0


def sparse_sigma(n: int, neighbours: float) -> float:
    """The bandwidth that gives ``neighbours`` expected points within 3 sigma."""
    return (neighbours / (n * 4.0 / 3.0 * math.pi * CUTOFF**3)) ** (1.0 / 3.0)


def count_pairs(x, y, sigma: float) -> int:
    """Ordered pairs within CUTOFF * sigma in the sums xx, yy and xy."""
    import torch

    from tg_rapidalign.ops import native
    flat = torch.tensor([1e6], dtype=torch.float64)
    total = 0.0
    for a, b in ((x, x), (y, y), (x, y)):
        a, b = a.detach().double(), b.detach().double()
        za = torch.zeros(len(a), dtype=torch.long)
        zb = torch.zeros(len(b), dtype=torch.long)
        ones = torch.ones(len(b), 1, dtype=torch.float64)
        total += float(native.kernel_row_sums(a, b, ones, za, zb, flat, flat.new_ones(1),
                                              CUTOFF * sigma / 1e6, 1).sum())
    return int(round(total))


def time_case(n: int, sigma: float, repeats: int) -> tuple:
    """(best wall seconds, best CPU seconds of forward+backward, pairs) for N = M = n."""
    import torch

    from tg_rapidalign import kernel_mmd
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, generator=gen).requires_grad_(True)
    y = torch.rand(n, 3, generator=gen).requires_grad_(True)
    walls, cpus = [], []
    for run in range(repeats + 1):  # run 0 warms up
        x.grad = y.grad = None
        t0, c0 = time.perf_counter(), time.process_time()
        kernel_mmd(x, y, sigma=sigma, cutoff=CUTOFF, backend="native").sum().backward()
        if run > 0:
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), count_pairs(x, y, sigma)


def main(argv=None) -> None:
    import torch

    from tg_rapidalign.ops import native
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dense", type=int, default=20000, help="N of the dense regime (sigma 0.1)")
    ap.add_argument("--sparse", type=int, nargs="+", default=[200000, 1000000],
                    help="N of the sparse regimes")
    ap.add_argument("--neighbours", type=float, default=50.0, help="expected neighbours within 3 sigma")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per case (best is kept)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if not native.AVAILABLE:
        raise SystemExit("bench_sparse.py needs the native extension")
    torch.set_num_threads(args.threads)
    cases = [("dense", args.dense, 0.1)]
    cases += [("sparse", n, sparse_sigma(n, args.neighbours)) for n in args.sparse]
    print(f"kernel_mmd fwd+bwd, float32, cutoff {CUTOFF}, {args.threads} threads, best of {args.repeats}")
    print(f"{'regime':>7} {'N':>9} {'sigma':>9} {'pairs/pt':>9} {'time s':>8} {'ns/pair':>8} "
          f"{'vs dense':>8} {'cpu ns/pair':>11}")
    dense_cost = None
    for name, n, sigma in cases:
        sec, cpu, pairs = time_case(n, sigma, args.repeats)
        cost = 1e9 * sec / max(pairs, 1)
        dense_cost = cost if dense_cost is None else dense_cost
        print(f"{name:>7} {n:>9} {sigma:>9.5f} {pairs / (3 * n):>9.1f} {sec:>8.3f} {cost:>8.2f} "
              f"{cost / dense_cost:>8.2f} {1e9 * cpu / max(pairs, 1):>11.2f}", flush=True)


if __name__ == "__main__":
    main()
