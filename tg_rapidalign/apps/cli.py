"""The ``rapidalign`` command."""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional


def _demo(args) -> int:
    """The molecule denoiser on the built-in G2 molecules."""
    import torch

    from .datasets import g2_molecules
    from .denoising import plot_report, split_molecules, train_denoiser

    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    molecules = g2_molecules(min_atoms=3)
    train, test = split_molecules(molecules, test_fraction=0.2, seed=0)
    kernel = None
    if args.kernel:
        from ..io import load_kernel
        kernel = load_kernel(args.kernel)
    print(f"{len(molecules)} molecules from ASE's G2 collection (built in): {len(train)} for training, "
          f"{len(test)} held out; noise {args.noise:g} Å per coordinate")
    report = train_denoiser(train, test, noise=args.noise, steps=args.steps, mmd_weight=args.mmd_weight,
                            seed=args.seed, kernel=kernel, progress=not args.quiet)
    print(report.table())
    os.makedirs(args.out, exist_ok=True)
    path = plot_report(report, os.path.join(args.out, "demo_denoiser.png"))
    print(f"plot: {path}")
    return 0


def _shapes(args) -> int:
    import torch
    from tqdm import tqdm

    from .. import KernelMMDLoss, MultiBandGaussianKernel, kernel_cosine
    from .datasets import shape_batch
    from .plotting import plot_shapes

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
    moved, aligned = _alignment_demo(target, kernel)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "demo_mmd.png")
    plot_shapes(history, target.pos.numpy(), pred.pos.detach().numpy(), moved, aligned, path)
    print(f"plot: {path}")
    return 0


def _alignment_demo(target, kernel):
    """Each built-in shape against a randomly rotated, translated, noisy copy with
    20% of its nodes dropped: MMD sees the motion, the SE(3) alignment loss (robust
    E-step) does not, and the identity start of the design's literal form fails."""
    import torch

    from .. import kernel_mmd, se3_kernel_alignment
    from ..transforms.rigid import random_rotation

    gen = torch.Generator().manual_seed(1)
    R = random_rotation(target.num_graphs, gen, target.pos.dtype)
    shift = torch.randn(target.num_graphs, 3, generator=gen) * 3
    keep = torch.rand(target.num_nodes, generator=gen) > 0.2
    pos, batch = target.pos[keep], target.batch[keep]
    noisy = pos + 0.01 * torch.randn(pos.shape, generator=gen)
    moved = (R[batch] @ noisy.unsqueeze(-1)).squeeze(-1) + shift[batch]
    mmd = kernel_mmd(target.pos, moved, target.batch, batch, sigma=kernel)
    res = se3_kernel_alignment(target.pos, moved, target.batch, batch, sigma=0.1, estep="robust",
                               iterations=30)
    naive = se3_kernel_alignment(target.pos, moved, target.batch, batch, sigma=0.1, init="identity")
    # The shapes are symmetric (helices, a 3-fold knot): several poses overlay them
    # equally well, so report how far each aligned point lies from the target.
    aligned = (res.R[batch] @ moved.unsqueeze(-1)).squeeze(-1) + res.t[batch]
    print(f"\n{'graph':>5} {'MMD^2 (moved copy)':>19} {'align loss':>11} {'identity-init loss':>19} "
          f"{'mean NN distance':>17}")
    for g in range(target.num_graphs):
        nn_dist = torch.cdist(aligned[batch == g], target.pos[target.batch == g]).min(1).values.mean()
        print(f"{g:>5} {mmd[g].item():>19.4f} {res.loss[g].item():>11.4f} {naive.loss[g].item():>19.4f} "
              f"{nn_dist.item():>17.4f}")
    return moved.detach().numpy(), aligned.detach().numpy()


def _calibrate(args) -> int:
    from ..io import save_kernel
    from .calibration import DEFAULT_LEVELS, calibrate_kernel
    from .datasets import g2_molecules, read_structures
    from .plotting import plot_calibration

    structures = read_structures(args.data) if args.data else g2_molecules()
    source = args.data or "ASE G2 molecules (built in)"
    length = args.length
    if length is None and not args.data and args.corruption != "masking":
        length = BUILT_IN_LENGTH
    unit = "level = share of nodes dropped" if args.corruption == "masking" else \
        (f"level unit {length:g} (data units; Å for molecules)" if length else "level unit = RMS radius")
    print(f"{len(structures)} structures from {source}; corruption {args.corruption} ({unit}), "
          f"loss {args.loss}")
    node_type = None if args.node_type == "none" else args.node_type
    rep = calibrate_kernel(structures, args.corruption, args.loss, steps=args.steps, lr=args.lr,
                           seed=args.seed, length=length, node_type=node_type, progress=not args.quiet)
    print(rep.summary())
    typed = rep.kernel.type_weight() is not None
    meta = {"loss": args.loss, "corruption": {"kind": args.corruption, "levels": list(DEFAULT_LEVELS),
                                              "length": length or "rms_radius"},
            "node_type": node_type if typed else None,
            "data": {"source": source, "structures": len(structures)}, "temperature": rep.temperature,
            "report": {"spearman_before": rep.before.spearman, "spearman_after": rep.after.spearman,
                       "ordered_after": rep.after.ordered_fraction}}
    save_kernel(rep.kernel, args.out, meta)
    plot_calibration(rep, args.loss, args.plot)
    print(f"kernel written to {args.out}; plot written to {args.plot}")
    return 0


BENCHMARKS = ("mmd", "alignment", "memory", "calibration")
# The calibration's noise unit on the built-in molecules, Å: levels 0..1 then span
# 0-0.5 Å per coordinate, the range a denoiser is trained on (the demo uses 0.3).
BUILT_IN_LENGTH = 0.5


def _bench(args) -> int:
    """Runs a script of the source checkout's ``benchmarks/`` folder."""
    import runpy

    here = os.path.abspath(__file__)  # <root>/tg_rapidalign/apps/cli.py
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(here))), "benchmarks")
    script = os.path.join(root, f"bench_{args.which}.py")
    if not os.path.exists(script):
        print(f"rapidalign bench needs the source checkout's benchmarks/ folder (looked for {script}); "
              "install with `pip install -e .` from a clone", file=sys.stderr)
        return 2
    argv = sys.argv
    sys.argv = [script, *args.args]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = argv
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="rapidalign", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train the molecule denoiser on built-in molecules (the main demo)")
    demo.add_argument("--steps", type=int, default=2000)
    demo.add_argument("--noise", type=float, default=0.3, help="noise per coordinate, Å")
    demo.add_argument("--mmd-weight", type=float, default=0.0, help="add this times kernel MMD to the loss")
    demo.add_argument("--kernel", help="a kernel file from `rapidalign calibrate` to use in the loss")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="outputs")
    demo.add_argument("--quiet", action="store_true")
    shapes = sub.add_parser("shapes", help="fit point clouds to built-in shapes with the kernel MMD loss, "
                            "then align moved copies")
    shapes.add_argument("--steps", type=int, default=300)
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--out", default="outputs")
    shapes.add_argument("--quiet", action="store_true")
    cal = sub.add_parser("calibrate", help="fit the kernel so the loss tracks corruption levels")
    cal.add_argument("--data", help=".xyz/.sdf (read by ASE) or .npz (pos, batch); "
                     "default: built-in molecules")
    cal.add_argument("--corruption", default="noise", choices=["noise", "masking", "rigid"])
    cal.add_argument("--loss", default="cosine", choices=["mmd", "cosine", "alignment"],
                     help="1 - kernel cosine (default) does not scale with the node count, so it ranks "
                     "structures of different sizes together better than MMD")
    cal.add_argument("--length", type=float, help="noise std / rigid shift per unit level, in the "
                     f"data's units (default: {BUILT_IN_LENGTH} Å on the built-in molecules, the scale "
                     "of a denoiser's noise; each structure's RMS radius with --data)")
    cal.add_argument("--node-type", default="z", help="node attribute of integer types fitted with a "
                     "cross-type weight (default: z, atomic numbers); 'none' ignores types")
    cal.add_argument("--steps", type=int, default=200)
    cal.add_argument("--lr", type=float, default=0.05)
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--out", default="kernel.json")
    cal.add_argument("--plot", default="calibration.png")
    cal.add_argument("--quiet", action="store_true")
    bench = sub.add_parser("bench", help="run a benchmark of the source checkout (prints a ratio table)")
    bench.add_argument("which", choices=BENCHMARKS)
    bench.add_argument("args", nargs=argparse.REMAINDER, help="options of benchmarks/bench_WHICH.py")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "shapes":
        return _shapes(args)
    if args.command == "bench":
        return _bench(args)
    if args.command == "calibrate":
        return _calibrate(args)
    return 1  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
