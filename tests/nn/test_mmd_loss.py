import pytest
import torch
from helpers import chain_batch

from tg_rapidalign import KernelMMDLoss, MultiBandGaussianKernel, kernel_cosine, kernel_mmd
from tg_rapidalign.weights import degree_weights


def test_loss_on_batches_matches_functional():
    pred, target = chain_batch([10, 20, 5], 0), chain_batch([12, 15, 9], 1)
    loss = KernelMMDLoss(0.3, reduction="none")
    ref = kernel_mmd(pred.pos, target.pos, pred.batch, target.batch, sigma=0.3)
    assert torch.allclose(loss(pred, target), ref)
    assert torch.allclose(KernelMMDLoss(0.3)(pred, target), ref.mean())
    assert torch.allclose(KernelMMDLoss(0.3, reduction="sum")(pred, target), ref.sum())
    cos = KernelMMDLoss(0.3, similarity="cosine", reduction="none")(pred, target)
    assert torch.allclose(cos, 1 - kernel_cosine(pred.pos, target.pos, pred.batch, target.batch,
                                                 sigma=0.3))
    # tensors + batch vectors work too
    assert torch.allclose(loss(pred.pos, target.pos, pred.batch, target.batch), ref)


def test_weight_specs():
    pred, target = chain_batch([10, 20], 0), chain_batch([12, 15], 1)
    deg = KernelMMDLoss(0.3, weight="degree", reduction="none")(pred, target)
    ref = kernel_mmd(pred.pos, target.pos, pred.batch, target.batch,
                     degree_weights(pred.edge_index, pred.num_nodes, torch.float64),
                     degree_weights(target.edge_index, target.num_nodes, torch.float64), 0.3)
    assert torch.allclose(deg, ref)
    attr = KernelMMDLoss(0.3, weight="mass", reduction="none")(pred, target)
    ref = kernel_mmd(pred.pos, target.pos, pred.batch, target.batch, pred.mass, target.mass, 0.3)
    assert torch.allclose(attr, ref)
    learned = torch.nn.Linear(3, 1).double()
    loss = KernelMMDLoss(0.3, weight=lambda d: torch.nn.functional.softplus(learned(d.pos)))
    loss(pred, target).backward()
    assert learned.weight.grad is not None and torch.isfinite(learned.weight.grad).all()
    with pytest.raises(ValueError, match="no such node attribute"):
        KernelMMDLoss(0.3, weight="charge")(pred, target)


def test_learnable_kernel_trains():
    pred, target = chain_batch([10, 20], 0), chain_batch([12, 15], 1)
    k = MultiBandGaussianKernel([0.1, 0.4], learnable_scale=True).double()
    loss = KernelMMDLoss(k)
    loss(pred, target).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loss.parameters())
    assert "MultiBandGaussianKernel" in repr(loss)


def test_mismatched_graph_counts():
    with pytest.raises(ValueError, match="pred has 2 graphs but target has 3"):
        KernelMMDLoss(0.3)(chain_batch([3, 4], 0), chain_batch([3, 4, 5], 1))
    with pytest.raises(ValueError, match="unknown reduction"):
        KernelMMDLoss(0.3, reduction="avg")
