r"""GNN autoencoder on 3-D molecules: graph -> latent -> node positions.

The encoder sees only atom types and interatomic distances (an E(3)-invariant
message-passing network), squeezes each atom into a small latent vector next to
a pooled per-molecule latent, and an MLP decodes node positions from them. The
inputs come in random orientations, so the decoder cannot know the input's frame:

* trained with plain coordinate MSE against the rotated input, the best it can
  do is shrink towards the centre (the average over orientations);
* trained with the SE(3) kernel alignment loss, which does not care about the
  frame, it learns the shape.

Both are scored by Kabsch-aligned RMSD on held-out molecules (ASE's G2 collection).

    python examples/gnn_autoencoder.py             # about a minute on 2 CPU cores
"""
import argparse
import time

import torch
from torch.nn import Linear, Sequential, SiLU
from torch_geometric.data import Batch
from torch_geometric.utils import scatter
from tqdm import tqdm

from tg_rapidalign import MultiBandGaussianKernel, SE3KernelAlignmentLoss, kabsch_rmsd
from tg_rapidalign.apps.datasets import g2_molecules
from tg_rapidalign.apps.denoising import split_molecules
from tg_rapidalign.apps.models import EquivariantConv, radius_graph
from tg_rapidalign.transforms import random_rotation


class MoleculeAutoencoder(torch.nn.Module):
    """Invariant encoder; the decoder places every atom from the latents (an MLP)
    and refines the placement with equivariant message passing between all atoms
    of the molecule, so its output lives in a frame of its own. Atoms in
    symmetric positions (the hydrogens of CH4) have equal invariant latents, so
    the decoder also sees each atom's index in its molecule, which breaks the tie."""

    def __init__(self, hidden=64, node_latent=8, graph_latent=16, layers=3, cutoff=5.0):
        super().__init__()
        self.cutoff = cutoff
        self.embedding = torch.nn.Embedding(100, hidden)
        self.convs = torch.nn.ModuleList(EquivariantConv(hidden, cutoff=cutoff) for _ in range(layers))
        self.to_node = Linear(hidden, node_latent)
        self.to_graph = Linear(hidden, graph_latent)
        self.index = torch.nn.Embedding(64, 16)
        width = node_latent + graph_latent + 16
        self.decode_h = Sequential(Linear(width, hidden), SiLU(), Linear(hidden, hidden))
        self.decode_x = Sequential(Linear(width, hidden), SiLU(), Linear(hidden, 3))
        self.refine = torch.nn.ModuleList(EquivariantConv(hidden, cutoff=2 * cutoff) for _ in range(layers))

    def encode(self, z, pos, batch, num_graphs):
        edge_index = radius_graph(pos, self.cutoff, batch, num_graphs)
        h = self.embedding(z)
        for conv in self.convs:
            h, _ = conv(h, pos, edge_index)  # invariant features only: the positions are not passed on
        return self.to_node(h), scatter(self.to_graph(h), batch, 0, num_graphs, reduce="mean")

    def forward(self, z, pos, batch, num_graphs):
        node, graph = self.encode(z, pos, batch, num_graphs)
        index = torch.arange(len(z), device=z.device) - torch.searchsorted(batch, batch)  # rank in graph
        latent = torch.cat([node, graph[batch], self.index(index.clamp_max(63))], dim=-1)
        h, x = self.decode_h(latent), self.decode_x(latent)
        edge_index = radius_graph(x.detach(), 1e4, batch, num_graphs)  # all atom pairs of a molecule
        for conv in self.refine:
            h, x = conv(h, x, edge_index)
        return x


def rotated(batch, gen):
    R = random_rotation(batch.num_graphs, gen, batch.pos.dtype)
    return (R[batch.batch] @ batch.pos.unsqueeze(-1)).squeeze(-1)


def train(loss_name, train_set, steps, seed, progress):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MoleculeAutoencoder()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    align = SE3KernelAlignmentLoss(MultiBandGaussianKernel([0.3, 1.0, 3.0], learnable=False), init="paired")
    curve = []
    for _ in tqdm(range(steps), desc=f"autoencoder ({loss_name})", disable=not progress):
        idx = torch.randint(len(train_set), (32,), generator=gen).tolist()
        batch = Batch.from_data_list([train_set[i] for i in idx])
        pos = rotated(batch, gen)
        out = model(batch.z, pos, batch.batch, batch.num_graphs)
        if loss_name == "alignment":
            loss = align(out, pos, batch.batch, batch.batch)
        else:
            loss = (out - pos).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(loss.item())
    return model, curve


@torch.no_grad()
def heldout_rmsd(model, test_set, seed=99):
    batch = Batch.from_data_list(test_set)
    pos = rotated(batch, torch.Generator().manual_seed(seed))
    out = model(batch.z, pos, batch.batch, batch.num_graphs)
    return kabsch_rmsd(pos, out, batch=batch.batch, num_graphs=batch.num_graphs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", default="gnn_autoencoder.png")
    args = parser.parse_args()
    torch.set_num_threads(2)
    molecules = g2_molecules(min_atoms=3)
    for m in molecules:
        m.pos = m.pos.float()
    train_set, test_set = split_molecules(molecules, test_fraction=0.2, seed=0)
    rows, curves = [], {}
    for loss_name in ("alignment", "mse"):
        start = time.perf_counter()
        model, curves[loss_name] = train(loss_name, train_set, args.steps, args.seed, not args.no_progress)
        rmsd = heldout_rmsd(model, test_set)
        rows.append((loss_name, float(rmsd.mean()), float(rmsd.median()), time.perf_counter() - start))
    print(f"{'trained with':<22} {'held-out RMSD mean':>18} {'median':>8} {'s':>6}")
    labels = {"alignment": "SE(3) alignment loss", "mse": "coordinate MSE"}
    for name, mean, median, seconds in rows:
        print(f"{labels[name]:<22} {mean:>18.3f} {median:>8.3f} {seconds:>6.0f}")
    print(f"Kabsch RMSD in Å over {len(test_set)} held-out molecules, inputs in random orientations")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, name in zip(axes, ("alignment", "mse")):
        ax.plot(curves[name], lw=0.7)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"trained with {labels[name]}")
    axes[0].set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"plot written to {args.out}")


if __name__ == "__main__":
    main()
