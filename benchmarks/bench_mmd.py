"""Kernel MMD forward+backward: tg_rapidalign (native and pure-torch) vs dense
torch vs radius pairs + scatter vs GeomLoss, one run.

    python benchmarks/bench_mmd.py                  # N = M in 1k, 5k, 20k, 100k
    python benchmarks/bench_mmd.py --sizes 1000 5000 --repeats 3
    python benchmarks/bench_mmd.py --device cuda --sigma 0.01 --sizes 100000 1000000   # on a GPU

Points uniform in the unit cube, sigma = 0.1 (--sigma), cutoff 3 (GeomLoss: truncate=3),
float32. Methods: ``native`` (the fused C++/CUDA kernel), ``tiled`` (the pure-torch
block-sparse path), ``dense_torch`` (all pairs), ``radius+scatter`` (the same sums
from an explicit pair list: torch-cluster's radius when installed, else the
library's own native radius search (else its pure-torch grid), then per-pair
kernels and ``scatter``), and GeomLoss
``tensorized`` / ``online`` / ``multiscale`` when installed; on a GPU also
``triton_online`` (benchmarks/triton_online.py: a KeOps-online-style brute-force
sum in Triton, forward only, compared on forward time). Each (method, N) runs
in a fresh subprocess so that its peak memory is its own; methods whose estimated
memory exceeds --max-gb are skipped. ratio = method time / native time; Mpairs/s
counts the pairs within the cutoff (both self terms and the cross term).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time

SIGMA, CUTOFF = 0.1, 3.0


def radius_peer() -> str:
    """The fastest radius search installed for the pair-list peer."""
    if importlib.util.find_spec("torch_cluster"):
        return "torch_cluster"
    from tg_rapidalign.ops import native
    return "native" if native.AVAILABLE else "grid"


def radius_scatter_mmd(x, y):
    """MMD from explicit radius pairs and scatter sums (the usual PyG recipe)."""

    import torch
    from torch_geometric.utils import scatter

    from tg_rapidalign import radius_pairs

    backend = radius_peer()
    r = CUTOFF * SIGMA

    def term(a, b):
        i, j = radius_pairs(a, b, r, backend=backend)
        k = torch.exp((a[i] - b[j]).pow(2).sum(-1) * (-0.5 / SIGMA**2))
        return scatter(k, i, 0, dim_size=a.size(0), reduce="sum").sum() / (a.size(0) * b.size(0))

    return term(x, x) + term(y, y) - 2 * term(x, y)


def count_pairs(x, y) -> int:
    """Pairs within the cutoff in the three sums, counted in O(N) memory (row sums
    of a flat kernel) after the peak memory is read."""
    import torch

    from tg_rapidalign.ops import native
    if not native.AVAILABLE:
        return 0
    total = 0.0
    flat = torch.tensor([1e6], dtype=torch.float64, device=x.device)
    for a, b in ((x, x), (y, y), (x, y)):
        a, b = a.double(), b.double()
        zeros_a = torch.zeros(len(a), dtype=torch.long, device=a.device)
        zeros_b = torch.zeros(len(b), dtype=torch.long, device=b.device)
        ones = torch.ones(len(b), 1, dtype=torch.float64, device=b.device)
        total += float(native.kernel_row_sums(a, b, ones, zeros_a, zeros_b, flat, flat.new_ones(1),
                                              CUTOFF * SIGMA / 1e6, 1).sum())  # cutoff: in bands
    return int(round(total))


def run_case(method: str, n: int, repeats: int, threads: int, device: str, sigma: float) -> dict:
    import resource

    import torch

    global SIGMA
    SIGMA = sigma

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, generator=gen).to(device).requires_grad_(True)
    y = torch.rand(n, 3, generator=gen).to(device).requires_grad_(True)
    if method.startswith("tg_rapidalign"):
        from tg_rapidalign import kernel_mmd
        backend = method.split(":")[1]

        def step():
            return kernel_mmd(x, y, sigma=SIGMA, cutoff=CUTOFF, backend=backend).sum()
    elif method == "radius+scatter":
        def step():
            return radius_scatter_mmd(x, y)
    elif method == "dense_torch":
        def k(a, b):
            d2 = (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None] - 2 * a @ b.T).clamp_min(0)
            return torch.exp(d2 * (-0.5 / SIGMA**2)).masked_fill(d2 > (CUTOFF * SIGMA) ** 2, 0).mean()

        def step():
            return k(x, x) + k(y, y) - 2 * k(x, y)
    elif method == "triton_online":
        sys.path.insert(0, __file__.rsplit("/", 1)[0])
        from triton_online import mmd

        def step():
            return mmd(x, y, SIGMA)
    else:
        from geomloss import SamplesLoss
        backend = method.split(":")[1]
        kwargs = dict(truncate=CUTOFF) if backend == "multiscale" else {}
        loss = SamplesLoss("gaussian", blur=SIGMA, backend=backend, **kwargs)

        def step():
            return loss(x, y)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def once():
        x.grad = y.grad = None
        sync()
        t0 = time.perf_counter()
        v = step()
        sync()
        t1 = time.perf_counter()
        if not v.requires_grad:  # a forward-only peer
            return t1 - t0, float("nan"), float(v)
        v.backward()
        sync()
        return t1 - t0, time.perf_counter() - t0, float(v)

    once()  # warm-up (KeOps compiles here)
    runs = [once() for _ in range(repeats)]
    fwd = min(r[0] for r in runs)
    total = min(r[1] for r in runs)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB
    pairs = count_pairs(x.detach(), y.detach()) if method.startswith("tg_rapidalign") else 0
    return dict(method=method, n=n, fwd=fwd, total=total, peak_mb=peak, value=runs[0][2], pairs=pairs)


def estimated_gb(method: str, n: int) -> float:
    if method in ("dense_torch", "geomloss:tensorized"):
        return 4 * 4 * n * n / 1e9  # a few float32 n x n matrices alive at once
    if method == "radius+scatter":
        return 3 * 3.8 * n * n * (CUTOFF * SIGMA) ** 3 * 40 / 1e9  # ~40 bytes per pair, 3 pair lists
    return 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000, 100000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-gb", type=float, default=16.0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--methods", nargs="+", help="run only these methods (default: all available)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global SIGMA
    SIGMA = args.sigma
    if args.case:
        method, n = args.case.rsplit("@", 1)
        print(json.dumps(run_case(method, int(n), args.repeats, args.threads, args.device, args.sigma)))
        return

    from tg_rapidalign.ops import native
    methods = (["tg_rapidalign:native"] if native.AVAILABLE else []) + \
        ["tg_rapidalign:tiled", "dense_torch", "radius+scatter"]
    if args.device == "cuda" and importlib.util.find_spec("triton"):
        methods.append("triton_online")
    if importlib.util.find_spec("geomloss") and importlib.util.find_spec("pykeops"):
        methods += ["geomloss:tensorized", "geomloss:online", "geomloss:multiscale"]
    else:
        print("geomloss/pykeops not installed: pip install -e '.[bench]' to compare with them")
    if args.methods:
        methods = [m for m in methods if m in args.methods]
    results = {}
    for n in args.sizes:
        for m in methods:
            if estimated_gb(m, n) > args.max_gb:
                results[m, n] = None
                continue
            brute_force_limit = 20000 if args.device == "cpu" else 1_000_000
            if m in ("geomloss:online", "triton_online") and n > brute_force_limit:
                results[m, n] = None  # O(N^2) time: minutes per call
                continue
            cmd = [sys.executable, __file__, "--case", f"{m}@{n}", "--repeats", str(args.repeats),
                   "--threads", str(args.threads), "--device", args.device, "--sigma", str(args.sigma)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            results[m, n] = json.loads(lines[-1]) if proc.returncode == 0 and lines else "failed"
            err = (proc.stderr or proc.stdout)[-600:]  # KeOps reports on stdout
            status = "ok" if isinstance(results[m, n], dict) else "failed: " + err
            print(f"  {m:<22} N={n:<7} {status}", file=sys.stderr, flush=True)

    base = methods[0]
    where = f"{args.threads} threads" if args.device == "cpu" else "cuda"
    print(f"\nkernel MMD, sigma={args.sigma}, cutoff={CUTOFF}, float32, {where}; best of {args.repeats}; "
          f"ratio = method fwd+bwd time / {base} fwd+bwd time (forward-only peers: fwd time); "
          f"radius+scatter uses the "
          f"{radius_peer()} radius search")
    header = (f"{'N':>7} | {'method':<22} | {'fwd s':>8} | {'fwd+bwd s':>9} | {'peak MiB':>8} | "
              f"{'Mpairs/s':>8} | {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        ours = results.get((base, n))
        for m in methods:
            r = results[m, n]
            if not isinstance(r, dict):
                reason = "skipped (memory or time)" if r is None else "failed (error above)"
                print(f"{n:>7} | {m:<22} | {reason}")
                continue
            # Forward-only peers are compared on forward time.
            key = "fwd" if r["total"] != r["total"] else "total"
            ratio = r[key] / ours[key] if isinstance(ours, dict) else float("nan")
            rate = f"{r['pairs'] / r['fwd'] / 1e6:>8.0f}" if r.get("pairs") else f"{'':>8}"
            print(f"{n:>7} | {m:<22} | {r['fwd']:>8.3f} | {r['total']:>9.3f} | {r['peak_mb']:>8.0f} | "
                  f"{rate} | {ratio:>6.2f}")


if __name__ == "__main__":
    main()
