"""The applications' figures (matplotlib, written to files; imported only when plotting)."""
from __future__ import annotations

import torch


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_shapes(history, t, p, moved, aligned, path: str) -> str:
    """The ``shapes`` demo: MMD curve, fitted particles, and the pose-solved copy."""
    plt = _pyplot()
    fig = plt.figure(figsize=(15, 4.5))
    ax = fig.add_subplot(1, 3, 1)
    ax.semilogy(history)
    ax.set_xlabel("step")
    ax.set_ylabel("mean MMD$^2$")
    ax3 = fig.add_subplot(1, 3, 2, projection="3d")
    ax3.scatter(*t.T, s=3, label="target")
    ax3.scatter(*p.T, s=3, label="fitted (MMD)")
    ax3.legend()
    ax4 = fig.add_subplot(1, 3, 3, projection="3d")
    ax4.scatter(*moved.T, s=3, c="0.7", label="moved, cropped, noisy copy")
    ax4.scatter(*t.T, s=3, label="target")
    ax4.scatter(*aligned.T, s=3, label="copy mapped back by the solved pose")
    ax4.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_calibration(rep, loss_name: str, path: str) -> str:
    """Held-out loss against corruption level before and after calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    lv = rep.curves["levels"]
    for key, colour in (("before", "tab:gray"), ("after", "tab:blue")):
        v = rep.curves[key] / rep.curves[key].max().clamp_min(1e-300)
        label = f"{key} (Spearman {getattr(rep, key).spearman:.3f})"
        ax.scatter(lv, v, s=8, c=colour, alpha=0.6, label=label)
    ax.set_xlabel("corruption level λ")
    ax.set_ylabel(f"{loss_name} loss (held out, scaled to max 1)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_denoiser_report(report, path: str) -> str:
    """Training curve, held-out RMSD during training, and per-molecule RMSDs, as a PNG."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(report.steps, report.train_loss, lw=0.6, alpha=0.5, label="training loss")
    k = max(1, len(report.train_loss) // 50)
    smooth = torch.tensor(report.train_loss).unfold(0, k, 1).mean(1) if len(report.train_loss) >= k else None
    if smooth is not None:
        axes[0].plot(report.steps[k - 1:], smooth.tolist(), lw=1.5, label=f"running mean ({k})")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("alignment loss")
    axes[0].set_yscale("log")
    axes[0].legend()
    noisy = float(report.noisy_rmsd.mean())
    axes[1].plot(report.eval_steps, report.eval_rmsd, marker="o", ms=3, label="denoised")
    axes[1].axhline(noisy, color="0.5", ls="--", label="noisy input")
    axes[1].axhline(0.7 * noisy, color="tab:red", ls=":", label="30% below the input")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("held-out Kabsch RMSD (Å)")
    axes[1].legend()
    order = torch.argsort(report.noisy_rmsd)
    xs = range(len(order))
    axes[2].bar([x - 0.2 for x in xs], report.noisy_rmsd[order].tolist(), width=0.4, label="noisy",
                color="0.6")
    axes[2].bar([x + 0.2 for x in xs], report.denoised_rmsd[order].tolist(), width=0.4, label="denoised")
    axes[2].set_xticks(list(xs))
    axes[2].set_xticklabels([report.names[i] for i in order.tolist()], rotation=90, fontsize=6)
    axes[2].set_ylabel("Kabsch RMSD (Å)")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
