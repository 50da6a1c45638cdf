import json
from functools import partial

import pytest
import torch
from helpers import chain_batch

from tg_rapidalign import (
    BandwidthSchedule,
    MultiBandGaussianKernel,
    SE3KernelAlignmentLoss,
    se3_kernel_alignment,
)
from tg_rapidalign.transforms import random_rotation
from tg_rapidalign.weights import degree_weights

make_batch = partial(chain_batch, anisotropic=True)  # distinct principal spreads: well-defined axes


def test_module_matches_functional_on_batches_with_different_sizes():
    pred, target = make_batch([10, 20, 5], 0), make_batch([12, 15, 9], 1)
    loss = SE3KernelAlignmentLoss(0.8, iterations=2, reduction="none")
    ref = se3_kernel_alignment(pred.pos, target.pos, pred.batch, target.batch, sigma=0.8, iterations=2)
    assert torch.allclose(loss(pred, target), ref.loss)
    assert torch.allclose(SE3KernelAlignmentLoss(0.8, iterations=2)(pred, target), ref.loss.mean())
    assert torch.allclose(SE3KernelAlignmentLoss(0.8, iterations=2, reduction="sum")(pred, target),
                          ref.loss.sum())
    res = loss.align(pred, target)
    assert torch.allclose(res.R, ref.R) and res.t.shape == (3, 3)
    assert torch.allclose(loss(pred.pos, target.pos, pred.batch, target.batch), ref.loss)


def test_paired_denoiser_loss_is_zero_for_rotated_copies_and_trains():
    clean = make_batch([12, 30], 2)
    rotated = clean.clone()
    gen = torch.Generator().manual_seed(0)
    R = random_rotation(2, generator=gen)
    rotated.pos = (R[clean.batch] @ clean.pos.unsqueeze(-1)).squeeze(-1) + 3.0
    loss = SE3KernelAlignmentLoss(1.0, init="paired", weight="degree")
    assert loss(rotated, clean).item() == pytest.approx(0, abs=1e-12)
    noisy = clean.clone()
    noisy.pos = (clean.pos + 0.3 * torch.randn(clean.pos.shape, dtype=torch.float64,
                                               generator=gen)).requires_grad_(True)
    opt = torch.optim.Adam([noisy.pos], lr=0.05)
    first = None
    for _ in range(30):
        opt.zero_grad()
        value = loss(noisy, clean)
        value.backward()
        opt.step()
        first = value.item() if first is None else first
    assert value.item() < 0.2 * first


def test_weight_specs_and_learnable_kernel():
    pred, target = make_batch([10, 20], 0), make_batch([12, 15], 1)
    deg = SE3KernelAlignmentLoss(0.8, weight="degree", reduction="none")(pred, target)
    ref = se3_kernel_alignment(pred.pos, target.pos, pred.batch, target.batch,
                               degree_weights(pred.edge_index, pred.num_nodes, torch.float64),
                               degree_weights(target.edge_index, target.num_nodes, torch.float64), 0.8)
    assert torch.allclose(deg, ref.loss)
    mass = SE3KernelAlignmentLoss(0.8, weight="mass", max_weight_ratio=3.0, reduction="none")(pred, target)
    ref = se3_kernel_alignment(pred.pos, target.pos, pred.batch, target.batch, pred.mass, target.mass, 0.8,
                               max_weight_ratio=3.0)
    assert torch.allclose(mass, ref.loss)
    k = MultiBandGaussianKernel([0.5, 1.5]).double()
    loss = SE3KernelAlignmentLoss(k, objective="cosine")
    loss(pred, target).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loss.parameters())
    assert "MultiBandGaussianKernel" in repr(loss) and "objective='cosine'" in repr(loss)


def test_bandwidth_schedule():
    sched = BandwidthSchedule(4.0, 0.5, num_steps=3)
    assert [round(sched(k), 10) for k in range(5)] == [4.0, 2.0, 1.0, 0.5, 0.5]
    lin = BandwidthSchedule(4.0, 1.0, 3, mode="linear")
    assert [lin(k) for k in range(4)] == [4.0, 3.0, 2.0, 1.0]
    cos = BandwidthSchedule(4.0, 1.0, 2, mode="cosine")
    assert cos(0) == 4.0 and cos(1) == pytest.approx(2.5) and cos(2) == pytest.approx(1.0)
    loss = SE3KernelAlignmentLoss(sched, reduction="none")
    pred, target = make_batch([10, 20], 0), make_batch([12, 15], 1)
    for _ in range(4):
        expected = se3_kernel_alignment(pred.pos, target.pos, pred.batch, target.batch, sigma=sched.sigma)
        assert torch.allclose(loss(pred, target), expected.loss)
        sched.step()
    state = json.loads(json.dumps(sched.state_dict()))  # plain numbers, no pickle
    again = BandwidthSchedule(1.0, 1.0, 1)
    again.load_state_dict(state)
    assert again.sigma == sched.sigma and again.last_step == 4
    with pytest.raises(ValueError, match="start must be positive"):
        BandwidthSchedule(0.0, 1.0, 3)
    with pytest.raises(ValueError, match="unknown mode"):
        BandwidthSchedule(1.0, 2.0, 3, mode="step")


def test_module_errors():
    with pytest.raises(TypeError, match="unknown option"):
        SE3KernelAlignmentLoss(1.0, itrations=3)
    with pytest.raises(ValueError, match="pred has 2 graphs but target has 3"):
        SE3KernelAlignmentLoss(1.0)(make_batch([3, 4], 0), make_batch([3, 4, 5], 1))
    with pytest.raises(ValueError, match="init='paired' needs"):
        SE3KernelAlignmentLoss(1.0, init="paired")(make_batch([3, 4], 0), make_batch([3, 5], 1))
