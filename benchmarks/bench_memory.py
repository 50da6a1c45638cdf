"""Memory of the native kernel MMD at scale: N = M = 1M points uniform in the unit
cube, about 50 neighbors each within the cutoff, forward+backward, float32.

    python benchmarks/bench_memory.py            # 1M points
    python benchmarks/bench_memory.py --n 200000

Prints the time and the peak resident memory of the process.
"""
import argparse
import math
import resource
import time

import torch

from tg_rapidalign import kernel_mmd


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--neighbors", type=float, default=50.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, 3, generator=gen).requires_grad_(True)
    y = torch.rand(args.n, 3, generator=gen).requires_grad_(True)
    cutoff = 3.0
    r = (args.neighbors / args.n * 3 / (4 * math.pi)) ** (1 / 3)  # ball holding ~neighbors points
    sigma = r / cutoff
    t0 = time.perf_counter()
    value = kernel_mmd(x, y, sigma=sigma, cutoff=cutoff).sum()
    t1 = time.perf_counter()
    value.backward()
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"N = M = {args.n}, sigma = {sigma:.5f} (~{args.neighbors:.0f} neighbors within {cutoff} sigma), "
          f"float32, {args.threads} threads: fwd {t1 - t0:.2f} s, fwd+bwd {t2 - t0:.2f} s, "
          f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
