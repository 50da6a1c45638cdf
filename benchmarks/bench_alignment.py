"""SE(3) kernel alignment loss on many molecule-sized graphs: tg_rapidalign vs a
padded dense torch implementation, forward and forward+backward, one run.

    python benchmarks/bench_alignment.py                   # 10k graphs of 10-50 nodes
    python benchmarks/bench_alignment.py --graphs 2000 --repeats 3
    python benchmarks/bench_alignment.py --device cuda --graphs 100000

Each graph: y ~ N(0, 1.5^2 I), x = y + N(0, 0.1^2 I) (paired nodes), sigma = 1,
cutoff 3, one EM step, pose detached, float32, loss -log(cosine). Every
(method) runs in a fresh subprocess so that its peak resident memory is its own.
tg_rapidalign runs with its native kernels (when built) and its pure-torch dense
path (run with the extension blocked, as without a compiler); ratio = method
time / time of the first row (same identity start).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SIGMA, CUTOFF = 1.0, 3.0


def make_data(num_graphs: int, device: str = "cpu"):
    import torch

    gen = torch.Generator().manual_seed(0)
    sizes = torch.randint(10, 51, (num_graphs,), generator=gen)
    batch = torch.repeat_interleave(torch.arange(num_graphs), sizes)
    y = torch.randn(int(sizes.sum()), 3, generator=gen) * 1.5
    x = y + 0.1 * torch.randn(y.shape, generator=gen)
    return x.to(device).requires_grad_(True), y.to(device), batch.to(device)


def dense_torch_loss(x, y, batch, num_graphs):
    """What a user would write: pad, centre, one EM step from the identity
    (no_grad, torch.linalg.svd), then the cosine of the kernel correlation."""
    import torch
    from torch_geometric.utils import to_dense_batch

    X, mask = to_dense_batch(x, batch, batch_size=num_graphs)
    Y, _ = to_dense_batch(y, batch, batch_size=num_graphs)
    w = mask.to(x.dtype)
    w = w / w.sum(1, keepdim=True)
    X = X - (w.unsqueeze(-1) * X).sum(1, keepdim=True)
    Y = Y - (w.unsqueeze(-1) * Y).sum(1, keepdim=True)

    def kernel(A, B):
        d2 = torch.cdist(A, B).pow(2)
        return torch.exp(-d2 / (2 * SIGMA**2)) * (d2 <= (CUTOFF * SIGMA) ** 2)

    with torch.no_grad():
        Wm = w.unsqueeze(2) * kernel(X.detach(), Y) * w.unsqueeze(1)
        Wm = Wm / Wm.sum((1, 2), keepdim=True)
        xbar = (Wm.sum(2).unsqueeze(-1) * X).sum(1)
        ybar = (Wm.sum(1).unsqueeze(-1) * Y).sum(1)
        S = X.detach().transpose(1, 2) @ Wm @ Y - xbar.unsqueeze(2) * ybar.unsqueeze(1)
        U, _, Vh = torch.linalg.svd(S)
        d = torch.linalg.det(U @ Vh)
        D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], 1))
        R = U @ D @ Vh
        t = xbar - (R @ ybar.unsqueeze(2)).squeeze(2)
    Z = Y @ R.transpose(1, 2) + t.unsqueeze(1)
    kxy = torch.einsum("bi,bij,bj->b", w, kernel(X, Z), w)
    kxx = torch.einsum("bi,bij,bj->b", w, kernel(X, X), w)
    kyy = torch.einsum("bi,bij,bj->b", w, kernel(Y, Y), w)
    return -torch.log(kxy / torch.sqrt(kxx * kyy) + 1e-8)


def run_case(method: str, num_graphs: int, repeats: int, threads: int, device: str) -> dict:
    import resource

    import torch

    torch.set_num_threads(threads)
    x, y, batch = make_data(num_graphs, device)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()
    if method == "dense_torch":
        def step():
            return dense_torch_loss(x, y, batch, num_graphs).sum()
    else:
        _, backend, init = method.split(":")
        if backend == "dense":
            # The pure-torch path as a user without the extension runs it (the
            # dense backend would otherwise borrow the native 3 x 3 polar step).
            sys.modules["tg_rapidalign._C"] = None
        from tg_rapidalign import se3_kernel_alignment

        def step():
            return se3_kernel_alignment(x, y, batch, batch, sigma=SIGMA, cutoff=CUTOFF, init=init,
                                        backend=backend).loss.sum()

    def once():
        x.grad = None
        sync()
        t0 = time.perf_counter()
        v = step()
        sync()
        t1 = time.perf_counter()
        v.backward()
        sync()
        return t1 - t0, time.perf_counter() - t0, float(v)

    once()
    runs = [once() for _ in range(repeats)]
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(method=method, fwd=min(r[0] for r in runs), total=min(r[1] for r in runs), peak_mb=peak,
                value=runs[0][2] / num_graphs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--graphs", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.graphs, args.repeats, args.threads, args.device)))
        return
    from tg_rapidalign.ops import native
    backends = (["native"] if native.AVAILABLE else []) + ["dense"]
    methods = [f"tg_rapidalign:{b}:identity" for b in backends] + ["dense_torch"] + \
        [f"tg_rapidalign:{b}:{init}" for init in ("paired", "principal_axes") for b in backends]
    results = {}
    for m in methods:
        proc = subprocess.run([sys.executable, __file__, "--case", m, "--graphs", str(args.graphs),
                               "--repeats", str(args.repeats), "--threads", str(args.threads),
                               "--device", args.device],
                              capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        results[m] = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
        print(f"  {m:<36} {'ok' if results[m] else 'failed: ' + proc.stderr[-300:]}", file=sys.stderr,
              flush=True)
    base = methods[0]
    ours = results[base]
    where = f"{args.threads} threads" if args.device == "cpu" else "cuda"
    print(f"\nSE(3) kernel alignment loss, {args.graphs} graphs of 10-50 nodes, sigma={SIGMA}, "
          f"cutoff={CUTOFF}, 1 EM step, float32, {where}; best of {args.repeats}; "
          f"ratio = method time / {base} time")
    header = (f"{'method':<36} | {'fwd s':>7} | {'fwd+bwd s':>9} | {'peak MiB':>8} | {'mean loss':>9} | "
              f"{'ratio fwd':>9} | {'ratio f+b':>9}")
    print(header)
    print("-" * len(header))
    for m in methods:
        r = results[m]
        if r is None:
            print(f"{m:<36} | failed")
            continue
        print(f"{m:<36} | {r['fwd']:>7.3f} | {r['total']:>9.3f} | {r['peak_mb']:>8.0f} | "
              f"{r['value']:>9.4f} | {r['fwd'] / ours['fwd']:>9.2f} | {r['total'] / ours['total']:>9.2f}")


if __name__ == "__main__":
    main()
