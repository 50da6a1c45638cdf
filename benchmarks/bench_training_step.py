"""The loss's share of a training step: the demo's E(3)-equivariant denoiser,
forward + backward, with the SE(3) kernel alignment loss (as ``rapidalign demo``
trains it) against the same step with a plain squared error, one run.

    python benchmarks/bench_training_step.py                    # 32, 128, 512 molecules
    python benchmarks/bench_training_step.py --batches 32 --repeats 3
    python benchmarks/bench_training_step.py --device cuda      # on a GPU

Molecules: ASE's G2 collection (the ``demo`` extra), drawn with replacement;
noise 0.3 Å, one random rigid motion per molecule, float32. Columns: the whole
step with the alignment loss, the step with a squared error instead (the
model's own cost), the alignment loss alone (forward + backward to the model's
output), and its share of the step. ``compiled`` rows run the loss under
``torch.compile(fullgraph=True)``. Figures vary between runs and machines.
"""
import argparse
import time

import torch


def molecules():
    from tg_rapidalign.apps.datasets import g2_molecules

    return g2_molecules()


def make_batch(mols, size, gen, device):
    from torch_geometric.data import Batch

    from tg_rapidalign.apps.denoising import corrupt

    idx = torch.randint(len(mols), (size,), generator=gen).tolist()
    batch = Batch.from_data_list([mols[i] for i in idx])
    batch.pos = batch.pos.float()
    noisy = corrupt(batch, 0.3, gen)
    return batch.to(device), noisy.to(device)


def timed(fn, repeats, device):
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up (and compiles)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def measure(size, mols, repeats, device, compiled):
    from tg_rapidalign import MultiBandGaussianKernel
    from tg_rapidalign.apps.models import EquivariantDenoiser
    from tg_rapidalign.nn import SE3KernelAlignmentLoss

    gen = torch.Generator().manual_seed(size)
    torch.manual_seed(0)
    model = EquivariantDenoiser().to(device)
    loss_fn = SE3KernelAlignmentLoss(MultiBandGaussianKernel([0.2, 0.5], learnable=False), init="paired")
    loss_fn = loss_fn.to(device)
    if compiled:
        loss_fn = torch.compile(loss_fn, fullgraph=True)
    batch, noisy = make_batch(mols, size, gen, device)

    def align(out):
        return loss_fn(out, batch.pos, batch.batch, batch.batch, num_graphs=batch.num_graphs)

    def step(loss):
        model.zero_grad()
        out = model(batch.z, noisy, batch.batch, batch.num_graphs)
        loss(out).backward()

    def loss_only():
        out = batch.pos.detach().clone().add_(0.05).requires_grad_()
        align(out).backward()

    full = timed(lambda: step(align), repeats, device)
    plain = timed(lambda: step(lambda out: (out - batch.pos).pow(2).mean()), repeats, device)
    alone = timed(loss_only, repeats, device)
    return full, plain, alone


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128, 512], help="molecules per batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (best of)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mols = molecules()
    atoms = sum(m.num_nodes for m in mols) / len(mols)
    print(f"denoiser training step (4 layers, width 64), G2 molecules ({len(mols)}, {atoms:.1f} atoms on "
          f"average), {args.device}, {args.threads} threads, best of {args.repeats}")
    print("| molecules | loss | step with the loss, ms | step with MSE, ms | loss alone, ms | loss share |")
    print("|---|---|---|---|---|---|")
    for size in args.batches:
        for compiled in (False,) if args.no_compile else (False, True):
            full, plain, alone = measure(size, mols, args.repeats, args.device, compiled)
            name = "alignment, compiled" if compiled else "alignment"
            print(f"| {size} | {name} | {1e3 * full:.1f} | {1e3 * plain:.1f} | {1e3 * alone:.1f} | "
                  f"{alone / full:.0%} |", flush=True)


if __name__ == "__main__":
    main()
