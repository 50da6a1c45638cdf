"""The ``rapidalign`` command: the molecule denoiser demo, the shapes demo, kernel
calibration and (in a source checkout) the benchmarks.

Every subcommand writes its files into the folder given by ``--out`` (created
if needed) under fixed names, listed in its help.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Dict, List, Optional

from ..extras import MissingExtraError

BENCHMARKS = ("mmd", "alignment", "memory", "calibration")
# The calibration's noise unit on the built-in molecules, Å: levels 0..1 then span
# 0-0.5 Å per coordinate, the range a denoiser is trained on (the demo uses 0.3).
BUILT_IN_LENGTH = 0.5
#: The files each subcommand writes into ``--out``.
OUTPUTS = {"demo": {"plot": "demo_denoiser.png"}, "shapes": {"plot": "demo_mmd.png"},
           "calibrate": {"kernel": "kernel.json", "plot": "calibration.png"}}
VARIES = ("The figures vary between runs and machines (floating-point summation order, thread count, "
          "library versions): compare them roughly, not digit by digit.")


def output_paths(command: str, out: str, primary: str) -> Dict[str, str]:
    """The paths of ``command``'s files in the folder ``out`` (created). A file
    path (``kernel.json``, ``plot.png``), the old meaning of ``--out``, still
    works with a deprecation warning: its folder holds every file and ``primary``
    takes its name."""
    names = dict(OUTPUTS[command])
    if os.path.splitext(out)[1].lower() in (".json", ".pt", ".png"):
        folder, names[primary] = os.path.dirname(out) or ".", os.path.basename(out)
        message = (f"--out takes a folder; a file path ({out}) is deprecated: {primary} goes to {out}, the "
                   f"other files into {folder}")
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        print(f"rapidalign: warning: {message}", file=sys.stderr)
        out = folder
    os.makedirs(out, exist_ok=True)
    return {key: os.path.join(out, name) for key, name in names.items()}


def _write_plot(draw, *args) -> str:
    """``draw(*args)`` (a ``plot_*`` function), or a note when matplotlib is missing."""
    try:
        return f"plot: {draw(*args)}"
    except MissingExtraError as err:
        return f"no plot ({err})"


def _demo(args) -> int:
    """The molecule denoiser on the built-in G2 molecules."""
    import torch

    from .datasets import g2_molecules
    from .denoising import split_molecules, train_denoiser
    from .plotting import plot_denoiser_report

    paths = output_paths("demo", args.out, "plot")
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    molecules = g2_molecules(min_atoms=3)
    train, test = split_molecules(molecules, test_fraction=0.2, seed=0)
    kernel = None
    if args.kernel:
        from ..io import load_kernel
        path = args.kernel
        if os.path.isdir(path):  # the --out folder of `rapidalign calibrate`
            path = os.path.join(path, OUTPUTS["calibrate"]["kernel"])
        kernel = load_kernel(path)
    print(f"{len(molecules)} molecules from ASE's G2 collection (built in): {len(train)} for training, "
          f"{len(test)} held out; noise {args.noise:g} Å per coordinate")
    print(VARIES)
    report = train_denoiser(train, test, noise=args.noise, steps=args.steps, mmd_weight=args.mmd_weight,
                            seed=args.seed, kernel=kernel, progress=not args.quiet)
    print(report.table())
    print(_write_plot(lambda p: plot_denoiser_report(report, p), paths["plot"]))
    return 0


def _shapes(args) -> int:
    from .threads import intra_op_threads

    paths = output_paths("shapes", args.out, "plot")
    with intra_op_threads(args.threads):
        return _shapes_run(args, paths)


def _shapes_run(args, paths) -> int:
    import torch

    from .. import KernelMMDLoss, MultiBandGaussianKernel, extras, kernel_cosine
    from .datasets import SHAPE_NAMES, shape_batch
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
    bar = extras.progress(range(args.steps), enabled=not args.quiet, unit="step",
                          desc=f"fitting particles to {target.num_graphs} shapes (MMD)")
    for _ in bar:
        opt.zero_grad()
        loss = loss_fn(pred, target)
        loss.backward()
        opt.step()
        history.append(loss.item())
        extras.set_postfix(bar, mmd=f"{history[-1]:.2e}")
    with torch.no_grad():
        cos = kernel_cosine(pred.pos, target.pos, pred.batch, target.batch, sigma=kernel)
    print(f"{'shape':<18} {'kernel cosine':>14}")
    for name, c in zip(SHAPE_NAMES, cos.tolist()):
        print(f"{name:<18} {c:>14.4f}")
    print(f"MMD^2: {history[0]:.3e} -> {history[-1]:.3e} after {args.steps} steps")
    moved, aligned, batch = _alignment_demo(target, kernel)
    print(_write_plot(plot_shapes, history, target.pos.numpy(), pred.pos.detach().numpy(), moved, aligned,
                      paths["plot"], target.batch.numpy(), batch.numpy(), SHAPE_NAMES))
    return 0


def _alignment_demo(target, kernel):
    """Each built-in shape against a randomly rotated, translated, noisy copy with
    20% of its nodes dropped: MMD sees the motion, the SE(3) alignment loss (robust
    E-step) does not, and the identity start of the design's literal form fails."""
    import torch

    from .. import kernel_mmd, se3_kernel_alignment
    from ..transforms.rigid import random_rotation
    from .datasets import SHAPE_NAMES

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
    print(f"\n{'shape':<18} {'MMD^2 (moved copy)':>19} {'align loss':>11} {'identity-init loss':>19} "
          f"{'mean NN distance':>17}")
    for g in range(target.num_graphs):
        nn_dist = torch.cdist(aligned[batch == g], target.pos[target.batch == g]).min(1).values.mean()
        print(f"{SHAPE_NAMES[g]:<18} {mmd[g].item():>19.4f} {res.loss[g].item():>11.4f} "
              f"{naive.loss[g].item():>19.4f} {nn_dist.item():>17.4f}")
    return moved.detach().numpy(), aligned.detach().numpy(), batch


def _calibrate(args) -> int:
    from ..io import save_kernel
    from .calibration import DEFAULT_LEVELS, calibrate_kernel
    from .datasets import g2_molecules, read_structures
    from .plotting import plot_calibration

    paths = output_paths("calibrate", args.out, "kernel")
    if args.plot is not None:
        message = f"--plot is deprecated: the plot goes to --out's folder as {OUTPUTS['calibrate']['plot']}"
        warnings.warn(message, DeprecationWarning, stacklevel=1)
        print(f"rapidalign: warning: {message}; writing it to {args.plot} this time", file=sys.stderr)
        paths["plot"] = args.plot
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
                           seed=args.seed, length=length, node_type=node_type, progress=not args.quiet,
                           threads=args.threads)
    print(rep.summary())
    typed = rep.kernel.type_weight() is not None
    meta = {"loss": args.loss, "corruption": {"kind": args.corruption, "levels": list(DEFAULT_LEVELS),
                                              "length": length or "rms_radius"},
            "node_type": node_type if typed else None,
            "data": {"source": source, "structures": len(structures)}, "temperature": rep.temperature,
            "report": {"spearman_before": rep.before.spearman, "spearman_after": rep.after.spearman,
                       "ordered_after": rep.after.ordered_fraction}}
    save_kernel(rep.kernel, paths["kernel"], meta)
    print(f"kernel: {paths['kernel']}")
    print(_write_plot(plot_calibration, rep, args.loss, paths["plot"]))
    return 0


def benchmarks_folder() -> Optional[str]:
    """The source checkout's ``benchmarks/`` folder next to the package, or
    :obj:`None` in an installed package (the benchmarks are not part of it)."""
    here = os.path.abspath(__file__)  # <root>/tg_rapidalign/apps/cli.py
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(here))), "benchmarks")
    return root if os.path.isdir(root) else None


def _bench(args) -> int:
    """Runs a script of the source checkout's ``benchmarks/`` folder."""
    import runpy

    script = os.path.join(benchmarks_folder(), f"bench_{args.which}.py")
    argv = sys.argv
    sys.argv = [script, *args.args]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = argv
    return 0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` after every option's help, unless the help
    already says what the default is."""

    def _get_help_string(self, action):
        if "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _add_out(parser, command: str) -> None:
    files = ", ".join(OUTPUTS[command].values())
    parser.add_argument("--out", default="outputs", metavar="FOLDER",
                        help=f"folder for the files written ({files}); created if needed")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_threads(parser) -> None:
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads: the tensors are small, where a second thread gains "
                        "little and spin-waits on cores shared with other processes")


def _demo_parser(sub) -> None:
    demo = sub.add_parser("demo", formatter_class=HelpFormatter, epilog=VARIES,
                          help="train the molecule denoiser on built-in molecules (the main demo)",
                          description="Trains an E(3)-equivariant denoiser on ASE's G2 molecules with the "
                          "SE(3) kernel alignment loss and reports the held-out Kabsch RMSD of the noisy "
                          "and the denoised structures.")
    demo.add_argument("--steps", type=int, default=2000, help="training steps")
    demo.add_argument("--noise", type=float, default=0.3, help="noise per coordinate, Å")
    demo.add_argument("--mmd-weight", type=float, default=0.0, help="add this times kernel MMD to the loss")
    demo.add_argument("--kernel", metavar="FILE_OR_FOLDER",
                      help="a kernel from `rapidalign calibrate` for the loss: its kernel.json or its --out "
                      "folder (default: none, fixed bands of 0.2 and 0.5 Å)")
    demo.add_argument("--seed", type=int, default=0, help="seeds the model, the batches and the noise")
    _add_out(demo, "demo")


def _shapes_parser(sub) -> None:
    shapes = sub.add_parser("shapes", formatter_class=HelpFormatter,
                            help="fit point clouds to built-in shapes with the kernel MMD loss, then align "
                            "moved copies", description="Moves particles onto three built-in curves by the "
                            "kernel MMD gradient, then solves the pose of moved, cropped, noisy copies with "
                            "the SE(3) alignment loss.")
    shapes.add_argument("--steps", type=int, default=300, help="MMD fitting steps")
    shapes.add_argument("--seed", type=int, default=0, help="seeds the initial particles")
    _add_threads(shapes)
    _add_out(shapes, "shapes")


def _calibrate_parser(sub) -> None:
    cal = sub.add_parser("calibrate", formatter_class=HelpFormatter,
                         help="fit the kernel so the loss tracks corruption levels",
                         description="Fits a multi-band Gaussian kernel (and a cross-type weight) so that "
                         "the loss between a structure and its corrupted copy ranks the corruption levels; "
                         "prints held-out Spearman correlations against baselines.")
    cal.add_argument("--data", help=".xyz/.sdf (read by ASE) or .npz (pos, batch) "
                     "(default: the built-in G2 molecules)")
    cal.add_argument("--corruption", default="noise", choices=["noise", "masking", "rigid"],
                     help="how the copies are corrupted")
    cal.add_argument("--loss", default="cosine", choices=["mmd", "cosine", "alignment"],
                     help="1 - kernel cosine does not scale with the node count, so it ranks structures of "
                     "different sizes together better than MMD")
    cal.add_argument("--length", type=float, help="noise std / rigid shift per unit level, in the data's "
                     f"units (default: {BUILT_IN_LENGTH} Å on the built-in molecules, the scale of a "
                     "denoiser's noise; each structure's RMS radius with --data)")
    cal.add_argument("--node-type", default="z", help="node attribute of integer types fitted with a "
                     "cross-type weight (z: atomic numbers); 'none' ignores types")
    cal.add_argument("--steps", type=int, default=200, help="Adam steps of each of the two fits")
    cal.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    cal.add_argument("--seed", type=int, default=0, help="seeds the corruptions and the held-out split")
    _add_threads(cal)
    cal.add_argument("--plot", help="deprecated: the plot is written into --out (default: none)")
    _add_out(cal, "calibrate")


def build_parser(with_bench: Optional[bool] = None) -> argparse.ArgumentParser:
    """The ``rapidalign`` parser; ``bench`` is there only in a source checkout
    (``with_bench=None``: when :func:`benchmarks_folder` finds it)."""
    parser = argparse.ArgumentParser(
        prog="rapidalign", formatter_class=HelpFormatter,
        description="Kernel losses for point clouds and molecules: demos, kernel calibration and (in a "
        "source checkout) benchmarks. Each subcommand writes its files into the folder --out; "
        "`rapidalign COMMAND --help` lists its options and defaults.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _demo_parser(sub)
    _shapes_parser(sub)
    _calibrate_parser(sub)
    if with_bench if with_bench is not None else benchmarks_folder() is not None:
        bench = sub.add_parser("bench", formatter_class=HelpFormatter,
                               help="run a benchmark script (source checkout only: benchmarks/ is not "
                               "installed)")
        bench.add_argument("which", choices=BENCHMARKS, help="benchmarks/bench_WHICH.py")
        bench.add_argument("args", nargs=argparse.REMAINDER, help="that script's options")
    return parser


COMMANDS = {"demo": _demo, "shapes": _shapes, "calibrate": _calibrate, "bench": _bench}


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"] and benchmarks_folder() is None:
        print("rapidalign: `bench` runs the scripts of a source checkout's benchmarks/ folder, which the "
              "installed package does not include: clone the repository and run "
              "`python benchmarks/bench_<name>.py`", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MissingExtraError as err:
        print(f"rapidalign {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
