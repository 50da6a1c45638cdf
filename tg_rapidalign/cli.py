"""The ``rapidalign`` command."""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional


def _demo(args) -> int:
    import torch
    from tqdm import tqdm

    from . import KernelMMDLoss, MultiBandGaussianKernel, kernel_cosine
    from .datasets import shape_batch

    torch.manual_seed(args.seed)
    target = shape_batch()
    # Particles start as a noisy blob per graph and are moved by the MMD gradient.
    pred = target.clone()
    pred.pos = (torch.randn_like(target.pos) * 0.3).requires_grad_(True)
    kernel = MultiBandGaussianKernel([0.1, 0.3, 1.0], learnable=False)
    loss_fn = KernelMMDLoss(kernel, weight="degree", cutoff=4.0)
    opt = torch.optim.Adam([pred.pos], lr=0.02)
    history = []
    for _ in (bar := tqdm(range(args.steps), desc="fitting", disable=args.quiet)):
        opt.zero_grad()
        loss = loss_fn(pred, target)
        loss.backward()
        opt.step()
        history.append(loss.item())
        bar.set_postfix(mmd=f"{history[-1]:.2e}")
    with torch.no_grad():
        cos = kernel_cosine(pred.pos, target.pos, pred.batch, target.batch, sigma=kernel)
    print(f"{'graph':>5} {'kernel cosine':>14}")
    for g, c in enumerate(cos.tolist()):
        print(f"{g:>5} {c:>14.4f}")
    print(f"MMD^2: {history[0]:.3e} -> {history[-1]:.3e} after {args.steps} steps")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "demo_mmd.png")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(10, 4))
    ax = fig.add_subplot(1, 2, 1)
    ax.semilogy(history)
    ax.set_xlabel("step")
    ax.set_ylabel("mean MMD$^2$")
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    t, p = target.pos.numpy(), pred.pos.detach().numpy()
    ax3.scatter(*t.T, s=3, label="target")
    ax3.scatter(*p.T, s=3, label="fitted")
    ax3.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="rapidalign", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit point clouds to built-in shapes with the kernel MMD loss")
    demo.add_argument("--steps", type=int, default=300)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="outputs")
    demo.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    return 1  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
