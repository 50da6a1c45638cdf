"""Where the time of one native kernel-MMD forward+backward goes on a GPU
(torch.profiler, CUDA kernels and host ops sorted by GPU time).

    python benchmarks/profile_cuda.py --n 1000000 --sigma 0.01
"""
from __future__ import annotations

import argparse

import torch

from tg_rapidalign import kernel_mmd


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--sigma", type=float, default=0.01)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, 3, generator=gen).cuda().requires_grad_()
    y = torch.rand(args.n, 3, generator=gen).cuda().requires_grad_()

    def step():
        kernel_mmd(x, y, sigma=args.sigma, cutoff=3.0, backend="native").sum().backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
