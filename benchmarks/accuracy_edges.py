"""Accuracy at the edges, as quoted in the docs (kernels_mmd.md, alignment.md).

1. Truncation: the relative error of kernel MMD (value and gradient) against
   ``cutoff=None``, float64, uniform points in the unit cube.
2. Degenerate input: value and largest gradient entry of MMD, cosine and the
   alignment loss on degenerate-but-valid graphs (must all be finite).

    python benchmarks/accuracy_edges.py [--points 3000] [--sigma 0.1] [--seed 0]
"""
import argparse
import math

import torch

from tg_rapidalign import kernel_cosine, kernel_mmd, se3_kernel_alignment


def truncation_table(points: int, sigma: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(points, 3, generator=gen, dtype=torch.float64)
    y = 0.9 * torch.rand(points, 3, generator=gen, dtype=torch.float64) + 0.05

    def run(cutoff):
        xr = x.clone().requires_grad_()
        value = kernel_mmd(xr, y, sigma=sigma, cutoff=cutoff)
        grad, = torch.autograd.grad(value.sum(), xr)
        return value.detach(), grad

    exact_v, exact_g = run(None)
    rows = []
    for cutoff in (2.0, 3.0, 4.0, 5.0):
        v, g = run(cutoff)
        bound = math.exp(-cutoff ** 2 / 2)  # a skipped pair's kernel value, at most
        rows.append((cutoff, float(((v - exact_v).abs() / exact_v.abs()).max()),
                     float((g - exact_g).norm() / exact_g.norm()), bound))
    return rows


def degenerate_cases():
    """(name, x, y, batch_x, batch_y, num_graphs) of degenerate-but-valid inputs."""
    one = torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64)
    same = one.repeat(5, 1)
    tetra = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
    line = torch.linspace(0, 1, 6, dtype=torch.float64).unsqueeze(1) * torch.tensor([[1.0, 2.0, -1.0]],
                                                                                       dtype=torch.float64)
    zero = torch.zeros(0, dtype=torch.long)
    return [
        ("single node each", one, one + 0.1, zero[:0].new_zeros(1), zero[:0].new_zeros(1), 1),
        ("coincident points", same, same + 0.05, torch.zeros(5, dtype=torch.long),
         torch.zeros(5, dtype=torch.long), 1),
        ("symmetric (tetrahedron)", tetra, tetra.flip(0), torch.zeros(4, dtype=torch.long),
         torch.zeros(4, dtype=torch.long), 1),
        ("collinear", line, line.flip(0) + 0.01, torch.zeros(6, dtype=torch.long),
         torch.zeros(6, dtype=torch.long), 1),
        ("empty graph in a batch", torch.cat([tetra, one]), tetra, torch.tensor([0, 0, 0, 0, 2]),
         torch.zeros(4, dtype=torch.long), 3),
    ]


def degenerate_table():
    rows = []
    ops = {
        "mmd": lambda x, y, bx, by, b: kernel_mmd(x, y, bx, by, sigma=0.5, num_graphs=b),
        "cosine": lambda x, y, bx, by, b: kernel_cosine(x, y, bx, by, sigma=0.5, num_graphs=b),
        "alignment": lambda x, y, bx, by, b: se3_kernel_alignment(x, y, bx, by, sigma=0.5, num_graphs=b).loss,
    }
    for name, x, y, bx, by, b in degenerate_cases():
        for op, fn in ops.items():
            xr = x.clone().requires_grad_()
            value = fn(xr, y, bx, by, b)
            grad, = torch.autograd.grad(value.sum(), xr)
            rows.append((name, op, value.detach().tolist(), float(grad.abs().max()) if grad.numel() else 0.0,
                         bool(torch.isfinite(value).all() and torch.isfinite(grad).all())))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=3000, help="points per side (default: 3000)")
    parser.add_argument("--sigma", type=float, default=0.1, help="bandwidth (default: 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args()
    print(f"Truncation: kernel_mmd, {args.points} uniform points per side in the unit cube, sigma "
          f"{args.sigma}, float64, relative to cutoff=None")
    print("| cutoff | value, relative | gradient, relative (norm) | exp(-c^2/2) per pair |")
    print("|---|---|---|---|")
    for cutoff, ev, eg, bound in truncation_table(args.points, args.sigma, args.seed):
        print(f"| {cutoff:g} | {ev:.1e} | {eg:.1e} | {bound:.1e} |")
    print("\nDegenerate input (sigma 0.5, float64): value per graph, largest |gradient| entry")
    print("| input | op | value | max abs gradient | finite |")
    print("|---|---|---|---|---|")
    for name, op, value, grad, finite in degenerate_table():
        shown = ", ".join(f"{v + 0.0:.3g}" for v in value)  # (+ 0.0: no "-0")
        print(f"| {name} | {op} | {shown} | {grad:.3g} | {'yes' if finite else 'NO'} |")


if __name__ == "__main__":
    main()
