"""Kernel MMD forward+backward: tg_rapidalign vs dense torch vs GeomLoss, one run.

    python benchmarks/bench_mmd.py                  # N = M in 1k, 5k, 20k, 100k
    python benchmarks/bench_mmd.py --sizes 1000 5000 --repeats 3

Points uniform in the unit cube, sigma = 0.1, cutoff 3 (GeomLoss: truncate=3),
float32. Each (method, N) runs in a fresh subprocess so that its peak resident
memory is its own. Methods whose estimated memory exceeds --max-gb are skipped.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time

SIGMA, CUTOFF = 0.1, 3.0


def run_case(method: str, n: int, repeats: int, threads: int) -> dict:
    import resource

    import torch

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, generator=gen).requires_grad_(True)
    y = torch.rand(n, 3, generator=gen).requires_grad_(True)
    if method == "tg_rapidalign":
        from tg_rapidalign import kernel_mmd

        def step():
            return kernel_mmd(x, y, sigma=SIGMA, cutoff=CUTOFF, backend="tiled").sum()
    elif method == "dense_torch":
        def k(a, b):
            d2 = (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None] - 2 * a @ b.T).clamp_min(0)
            return torch.exp(d2 * (-0.5 / SIGMA**2)).masked_fill(d2 > (CUTOFF * SIGMA) ** 2, 0).mean()

        def step():
            return k(x, x) + k(y, y) - 2 * k(x, y)
    else:
        from geomloss import SamplesLoss
        backend = method.split(":")[1]
        kwargs = dict(truncate=CUTOFF) if backend == "multiscale" else {}
        loss = SamplesLoss("gaussian", blur=SIGMA, backend=backend, **kwargs)

        def step():
            return loss(x, y)

    def once():
        x.grad = y.grad = None
        t0 = time.perf_counter()
        v = step()
        t1 = time.perf_counter()
        v.backward()
        return t1 - t0, time.perf_counter() - t0, float(v)

    once()  # warm-up (KeOps compiles here)
    runs = [once() for _ in range(repeats)]
    fwd = min(r[0] for r in runs)
    total = min(r[1] for r in runs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB
    return dict(method=method, n=n, fwd=fwd, total=total, peak_mb=peak, value=runs[0][2])


def estimated_gb(method: str, n: int) -> float:
    if method in ("dense_torch", "geomloss:tensorized"):
        return 4 * 4 * n * n / 1e9  # a few float32 n x n matrices alive at once
    return 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000, 100000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-gb", type=float, default=16.0)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        method, n = args.case.rsplit("@", 1)
        print(json.dumps(run_case(method, int(n), args.repeats, args.threads)))
        return

    methods = ["tg_rapidalign", "dense_torch"]
    if importlib.util.find_spec("geomloss") and importlib.util.find_spec("pykeops"):
        methods += ["geomloss:tensorized", "geomloss:online", "geomloss:multiscale"]
    else:
        print("geomloss/pykeops not installed: pip install -e '.[benchmarks]' to compare with them")
    results = {}
    for n in args.sizes:
        for m in methods:
            if estimated_gb(m, n) > args.max_gb:
                results[m, n] = None
                continue
            if m == "geomloss:online" and n > 20000:
                results[m, n] = None  # O(N^2) time: minutes per call
                continue
            proc = subprocess.run([sys.executable, __file__, "--case", f"{m}@{n}", "--repeats",
                                   str(args.repeats), "--threads", str(args.threads)],
                                  capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            results[m, n] = json.loads(lines[-1]) if proc.returncode == 0 and lines else "failed"
            print(f"  {m:<22} N={n:<7} {'ok' if isinstance(results[m, n], dict) else 'failed'}",
                  file=sys.stderr, flush=True)

    print(f"\nkernel MMD, sigma={SIGMA}, cutoff={CUTOFF}, float32, {args.threads} threads; "
          "time = forward+backward (best of repeats); ratio = method time / tg_rapidalign time")
    header = f"{'N':>7} | {'method':<22} | {'fwd s':>8} | {'fwd+bwd s':>9} | {'peak MiB':>8} | {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        ours = results.get(("tg_rapidalign", n))
        for m in methods:
            r = results[m, n]
            if not isinstance(r, dict):
                reason = "skipped (memory or time)" if r is None else "failed (out of memory?)"
                print(f"{n:>7} | {m:<22} | {reason}")
                continue
            ratio = r["total"] / ours["total"] if isinstance(ours, dict) else float("nan")
            print(f"{n:>7} | {m:<22} | {r['fwd']:>8.3f} | {r['total']:>9.3f} | {r['peak_mb']:>8.0f} | "
                  f"{ratio:>6.2f}")


if __name__ == "__main__":
    main()
