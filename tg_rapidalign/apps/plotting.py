"""The applications' figures (matplotlib, the ``plot`` extra; imported only when plotting).

Each figure is built by a ``*_figure`` function that returns the
:class:`matplotlib.figure.Figure` (every panel titled, every axis labelled) and
written by the matching ``plot_*`` function, which returns the file's path.
Figures are drawn without :mod:`matplotlib.pyplot`: no window, no global state.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..extras import require


def _figure(**kwargs):
    return require("matplotlib.figure", "plotting").Figure(**kwargs)


def _save(fig, path: str, dpi: int) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def _scatter3d(ax, title: str, layers) -> None:
    """``layers``: ``(points [n, 3], style dict)``; labels the three axes."""
    for pts, style in layers:
        ax.scatter(*pts.T, s=3, **style)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("z")
    ax.legend(fontsize=6, loc="upper left")


def shapes_figure(history, target, fitted, moved, aligned, batch_target=None, batch_moved=None,
                  names: Optional[Sequence[str]] = None):
    """The ``shapes`` demo, one column per shape: the fitted particles against the
    target (top) and the moved copy mapped back by the solved pose (bottom);
    the first column holds the MMD curve and each shape's mean nearest-neighbor
    distance after alignment. Positions are ``[N, 3]`` arrays; ``batch_*`` give
    each point's shape (:obj:`None`: one shape)."""
    target, fitted, moved, aligned = (torch.as_tensor(a) for a in (target, fitted, moved, aligned))
    bt = torch.zeros(len(target), dtype=torch.long) if batch_target is None else torch.as_tensor(batch_target)
    bm = torch.zeros(len(moved), dtype=torch.long) if batch_moved is None else torch.as_tensor(batch_moved)
    count = int(bt.max()) + 1 if len(bt) else 1
    names = list(names) if names is not None else [f"shape {g}" for g in range(count)]
    fig = _figure(figsize=(4 * (count + 1), 7.5))
    ax = fig.add_subplot(2, count + 1, 1)
    ax.semilogy(history)
    ax.set_title("MMD fit: loss per step", fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel("mean MMD$^2$ over the shapes")
    nn = []
    for g in range(count):
        t, f = target[bt == g], fitted[bt == g]
        m, a = moved[bm == g], aligned[bm == g]
        nn.append(float(torch.cdist(a.double(), t.double()).min(1).values.mean()) if len(a) else 0.0)
        _scatter3d(fig.add_subplot(2, count + 1, g + 2, projection="3d"), f"{names[g]}: MMD fit",
                   [(t, {"label": "target"}), (f, {"label": "fitted particles"})])
        _scatter3d(fig.add_subplot(2, count + 1, count + g + 3, projection="3d"),
                   f"{names[g]}: pose solved by alignment",
                   [(m, {"c": "0.7", "label": "moved, cropped, noisy copy"}), (t, {"label": "target"}),
                    (a, {"label": "copy mapped back"})])
    ax = fig.add_subplot(2, count + 1, count + 2)
    ax.bar(range(count), nn)
    ax.set_xticks(range(count))
    ax.set_xticklabels(names, rotation=20, fontsize=7)
    ax.set_title("alignment: distance left", fontsize=9)
    ax.set_xlabel("shape")
    ax.set_ylabel("mean nearest-neighbor distance to the target")
    return fig


def plot_shapes(history, t, p, moved, aligned, path: str, batch_target=None, batch_moved=None,
                names: Optional[Sequence[str]] = None) -> str:
    """Writes :func:`shapes_figure` to ``path`` (a PNG)."""
    return _save(shapes_figure(history, t, p, moved, aligned, batch_target, batch_moved, names), path, 100)


def calibration_figure(rep, loss_name: str):
    """Held-out loss against corruption level before and after calibration."""
    fig = _figure(figsize=(5.5, 4))
    ax = fig.add_subplot(1, 1, 1)
    lv = rep.curves["levels"]
    for key, colour in (("before", "tab:gray"), ("after", "tab:blue")):
        v = rep.curves[key] / rep.curves[key].max().clamp_min(1e-300)
        label = f"{key} (Spearman {getattr(rep, key).spearman:.3f})"
        ax.scatter(lv, v, s=8, c=colour, alpha=0.6, label=label)
    ax.set_title(f"Calibration: {loss_name} loss on held-out pairs", fontsize=10)
    ax.set_xlabel("corruption level λ")
    ax.set_ylabel(f"{loss_name} loss (scaled to max 1)")
    ax.legend()
    return fig


def plot_calibration(rep, loss_name: str, path: str) -> str:
    """Writes :func:`calibration_figure` to ``path`` (a PNG)."""
    return _save(calibration_figure(rep, loss_name), path, 120)


def denoiser_figure(report):
    """Training curve, held-out RMSD during training, and per-molecule RMSDs."""
    fig = _figure(figsize=(15, 4.2))
    axes = [fig.add_subplot(1, 3, i) for i in (1, 2, 3)]
    axes[0].plot(report.steps, report.train_loss, lw=0.6, alpha=0.5, label="training loss")
    k = max(1, len(report.train_loss) // 50)
    smooth = torch.tensor(report.train_loss).unfold(0, k, 1).mean(1) if len(report.train_loss) >= k else None
    if smooth is not None:
        axes[0].plot(report.steps[k - 1:], smooth.tolist(), lw=1.5, label=f"running mean ({k})")
    axes[0].set_title("training loss", fontsize=10)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("alignment loss")
    axes[0].set_yscale("log")
    axes[0].legend()
    noisy = float(report.noisy_rmsd.mean())
    axes[1].plot(report.eval_steps, report.eval_rmsd, marker="o", ms=3, label="denoised")
    axes[1].axhline(noisy, color="0.5", ls="--", label="noisy input")
    axes[1].axhline(0.7 * noisy, color="tab:red", ls=":", label="30% below the input")
    axes[1].set_title("held-out molecules during training", fontsize=10)
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
    axes[2].set_title("held-out molecules after training", fontsize=10)
    axes[2].set_xlabel("molecule")
    axes[2].set_ylabel("Kabsch RMSD (Å)")
    axes[2].legend()
    return fig


def plot_denoiser_report(report, path: str) -> str:
    """Writes :func:`denoiser_figure` to ``path`` (a PNG)."""
    return _save(denoiser_figure(report), path, 110)
