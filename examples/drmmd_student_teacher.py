"""Student/teacher training by particle flows (the MMD-flow paper's setting,
scaled down to a CPU): the neurons of a one-hidden-layer student network are the
particles, the teacher's neurons the target.

A network with neurons x_i = (w_i, b_i) outputs f(z) = mean_i relu(w_i . z + b_i).
The regression loss E_z (f_student(z) - f_teacher(z))^2 is the MMD^2 between the
two sets of neurons under the feature kernel k(x, x') = E_z relu(w.z+b) relu(w'.z+b'),
estimated on a fresh batch of inputs each step. The MMD flow moves each neuron
down N * grad of that loss; the DrMMD flow down N * grad of the DrMMD of the same
kernel (tg_rapidalign.drmmd_from_gram). Both are scored by the validation MMD^2
(the regression loss on held-out inputs); writes a PNG of the curves.

    python examples/drmmd_student_teacher.py                  # ~1-2 minutes on CPU
    python examples/drmmd_student_teacher.py --steps 500 --out st.png
"""
from __future__ import annotations

import argparse

import torch
from tqdm.auto import tqdm

from tg_rapidalign import drmmd_from_gram


def features(z: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
    """relu(w . z + b) ``[S, N]`` for inputs ``z [S, d]`` and neurons ``[N, d + 1]``."""
    return torch.relu(z @ neurons[:, :-1].T + neurons[:, -1])


def validation_mmd2(student, teacher, z_val) -> float:
    return float((features(z_val, student).mean(1) - features(z_val, teacher).mean(1)).pow(2).mean())


def train(method, teacher, student0, args, gen):
    x = student0.clone().requires_grad_(True)
    z_val = torch.randn(4000, args.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    curve = [(0, validation_mmd2(x.detach(), teacher, z_val))]
    n = x.size(0)
    for step in tqdm(range(1, args.steps + 1), desc=method, leave=False):
        z = torch.randn(args.batch, args.dim, dtype=torch.float64, generator=gen)
        fx, fy = features(z, x), features(z, teacher)
        kxx, kxy, kyy = fx.T @ fx / len(z), fx.T @ fy / len(z), fy.T @ fy / len(z)
        if method == "mmd":
            loss, lr = kxx.mean() + kyy.mean() - 2 * kxy.mean(), args.lr
        else:
            loss, lr = drmmd_from_gram(kxx, kxy, kyy, args.lam), args.drmmd_step * args.lam
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x -= lr * n * grad  # particle descent: N * d loss / d x_i is the witness gradient
        if step % max(args.steps // 50, 1) == 0:
            curve.append((step, validation_mmd2(x.detach(), teacher, z_val)))
    return curve


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--teacher", type=int, default=3, help="teacher neurons (target particles)")
    parser.add_argument("--student", type=int, default=100, help="student neurons (particles)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1.0, help="MMD flow step")
    parser.add_argument("--drmmd-step", type=float, default=5.0, help="DrMMD flow step = lambda * this")
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="student_teacher.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(args.seed)
    teacher = torch.randn(args.teacher, args.dim + 1, dtype=torch.float64, generator=gen)
    student0 = torch.randn(args.student, args.dim + 1, dtype=torch.float64, generator=gen)
    curves = {m: train(m, teacher, student0, args, torch.Generator().manual_seed(args.seed + 1))
              for m in ("mmd", "drmmd")}

    print(f"\nstudent/teacher: d={args.dim}, {args.student} student / {args.teacher} teacher neurons, "
          f"{args.steps} steps, MMD step {args.lr}, DrMMD step {args.drmmd_step} x lambda, lambda={args.lam}")
    print(f"{'training':<8} | {'val MMD^2 start':>15} | {'val MMD^2 end':>13}")
    for m, c in curves.items():
        print(f"{m:<8} | {c[0][1]:>15.3e} | {c[-1][1]:>13.3e}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m, c in curves.items():
        ax.plot([s for s, _ in c], [v for _, v in c], label=f"{m.upper()} flow")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("validation MMD² (regression loss)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"plot written to {args.out}")


if __name__ == "__main__":
    main()
