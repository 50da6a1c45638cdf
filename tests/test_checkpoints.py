"""Checkpoints: every stateful module round-trips through ``state_dict()`` /
``load_state_dict()`` and ``torch.save`` / ``torch.load(..., weights_only=True)``,
and a run resumed from a checkpoint equals the uninterrupted run exactly."""
import io
import json

import pytest
import torch
from helpers import chain_batch, graph_index

from tg_rapidalign import (
    BandwidthSchedule,
    DrMMDLoss,
    GaussianKernel,
    KernelMMDLoss,
    MMDLoss,
    MultiBandGaussianKernel,
    SE3KernelAlignmentLoss,
)
from tg_rapidalign.metrics import AlignmentMetric, StreamingMetric, alignment_metric_class


def through_disk(obj):
    """``obj`` saved with torch.save and loaded back without pickle (weights_only)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ---------------------------------------------------------------- training cases

class Case:
    """A tiny training setup: ``modules`` (saved and loaded by name), an
    optimizer over their parameters, ``loss()`` and ``after_step()``."""

    def __init__(self, modules, loss, after_step=lambda: None, lr=0.05):
        self.modules, self.loss, self.after_step = modules, loss, after_step
        params = [p for m in modules.values() for p in m.parameters()]
        self.opt = torch.optim.Adam(params, lr=lr)

    def state(self):
        return {**{name: m.state_dict() for name, m in self.modules.items()}, "opt": self.opt.state_dict()}

    def load(self, state):
        for name, m in self.modules.items():
            m.load_state_dict(state[name])
        self.opt.load_state_dict(state["opt"])


def _offset_model():
    torch.manual_seed(1)  # the same initial model for every build
    return torch.nn.Linear(3, 3).double()


def _pair():
    pred, target = chain_batch([6, 9], 3), chain_batch([7, 8], 4)
    return pred.pos, target.pos, pred.batch, target.batch


def kernel_mmd_case():
    x, y, bx, by = _pair()
    model = _offset_model()
    loss = KernelMMDLoss(MultiBandGaussianKernel([0.3, 1.0], learnable_scale=True), cutoff=None)
    return Case({"model": model, "loss": loss}, lambda: loss(model(x), y, bx, by))


def gaussian_cosine_case():
    x, y, bx, by = _pair()
    model = _offset_model()
    loss = KernelMMDLoss(GaussianKernel(0.5, learnable=True, learnable_scale=True), similarity="cosine",
                         reduction="sum")
    return Case({"model": model, "loss": loss}, lambda: loss(model(x), y, bx, by))


def alignment_kernel_case():
    x, y, bx, by = _pair()
    model = _offset_model()
    loss = SE3KernelAlignmentLoss(MultiBandGaussianKernel([0.5, 1.5], cross_type_weight=0.3))
    return Case({"model": model, "loss": loss}, lambda: loss(model(x), y, bx, by))


def alignment_schedule_case():
    x, y, bx, by = _pair()
    model = _offset_model()
    loss = SE3KernelAlignmentLoss(BandwidthSchedule(2.0, 0.3, num_steps=4))
    return Case({"model": model, "loss": loss}, lambda: loss(model(x), y, bx, by),
                after_step=lambda: loss.schedule.step())


def drmmd_case():
    gen = torch.Generator().manual_seed(5)
    x0 = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(10, 3, generator=gen, dtype=torch.float64) + 1.0
    model = _offset_model()
    loss = DrMMDLoss(GaussianKernel(0.8, learnable=True), lam=0.5)
    return Case({"model": model, "loss": loss}, lambda: loss(model(x0), y))


def group_mmd_case():
    gen = torch.Generator().manual_seed(6)
    z0 = torch.randn(15, 3, generator=gen, dtype=torch.float64)
    groups = graph_index([5, 4, 6])
    model = _offset_model()
    loss = MMDLoss(MultiBandGaussianKernel([0.5, 2.0]), mode="one_vs_rest", unbiased=True)
    return Case({"model": model, "loss": loss}, lambda: loss(model(z0), groups))


CASES = [kernel_mmd_case, gaussian_cosine_case, alignment_kernel_case, alignment_schedule_case,
         drmmd_case, group_mmd_case]


def train(build, steps, resume_at=None):
    """Loss values of ``steps`` optimiser steps; with ``resume_at`` the run is
    saved to bytes there and continued in freshly built modules."""
    case, values = build(), []
    for step in range(steps):
        if step == resume_at:
            saved = through_disk(case.state())
            case = build()
            case.load(saved)
        case.opt.zero_grad()
        loss = case.loss()
        loss.backward()
        case.opt.step()
        case.after_step()
        values.append(loss.detach().clone())
    return torch.stack(values), case


@pytest.mark.parametrize("build", CASES, ids=lambda b: b.__name__)
def test_resumed_training_equals_uninterrupted(build):
    straight, a = train(build, 4)
    resumed, b = train(build, 4, resume_at=2)
    assert torch.equal(straight, resumed)
    for name in a.modules:
        sa, sb = a.modules[name].state_dict(), b.modules[name].state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            same = torch.equal(sa[key], sb[key]) if isinstance(sa[key], torch.Tensor) else sa[key] == sb[key]
            assert same, (name, key)


def test_schedule_step_is_part_of_the_loss_state():
    loss = SE3KernelAlignmentLoss(BandwidthSchedule(4.0, 0.5, num_steps=10))
    for _ in range(5):
        loss.schedule.step()
    state = through_disk(loss.state_dict())
    assert state["schedule._extra_state"]["last_step"] == 5
    fresh = SE3KernelAlignmentLoss(BandwidthSchedule(4.0, 0.5, num_steps=10))
    fresh.load_state_dict(state)
    assert fresh.schedule.last_step == 5 and fresh.schedule.sigma == loss.schedule.sigma
    pred, target = chain_batch([6, 7], 0), chain_batch([6, 7], 1)
    assert torch.equal(fresh(pred, target), loss(pred, target))
    # A kernel-based loss keeps its former state dict (no schedule entry).
    assert set(SE3KernelAlignmentLoss(0.7).state_dict()) == {"kernel.log_sigma", "kernel.log_scale"}


def test_bandwidth_schedule_round_trips():
    sched = BandwidthSchedule(3.0, 0.2, num_steps=7, mode="cosine")
    for _ in range(4):
        sched.step()
    for state in (through_disk(sched.state_dict()), json.loads(json.dumps(sched.state_dict()))):
        again = BandwidthSchedule(1.0, 1.0, 1)
        again.load_state_dict(state)
        fields = (again.start, again.end, again.num_steps, again.mode, again.last_step)
        assert fields == (3.0, 0.2, 7, "cosine", 4)
        reference = BandwidthSchedule(3.0, 0.2, 7, "cosine")
        assert [again.step() for _ in range(4)] == [reference(k) for k in range(5, 9)]
    # As a submodule the same state is stored under "<name>._extra_state".
    holder = torch.nn.Module()
    holder.sched = sched
    nested = through_disk(holder.state_dict())
    assert nested == {"sched._extra_state": sched.state_dict()}
    other = torch.nn.Module()
    other.sched = BandwidthSchedule(1.0, 1.0, 1)
    other.load_state_dict(nested)
    assert other.sched.state_dict() == sched.state_dict()
    with pytest.raises(ValueError, match="last_step"):
        BandwidthSchedule(1.0, 1.0, 1).load_state_dict({**sched.state_dict(), "last_step": -1})
    with pytest.raises(ValueError, match="start"):
        BandwidthSchedule(1.0, 1.0, 1).load_state_dict({**sched.state_dict(), "start": -1.0})


@pytest.mark.parametrize("make", [
    lambda: GaussianKernel(0.4, learnable=True, scale=2.0, learnable_scale=True),
    lambda: GaussianKernel(0.9),
    lambda: MultiBandGaussianKernel([0.2, 0.6, 1.8], weights=[1, 2, 3], learnable_scale=True,
                                    cross_type_weight=0.25),
    lambda: MultiBandGaussianKernel([0.5, 1.0], learnable=False),
], ids=["gaussian-learnable", "gaussian-fixed", "multiband-typed", "multiband-fixed"])
def test_kernel_modules_round_trip(make):
    kern = make()
    with torch.no_grad():
        for t in kern.state_dict(keep_vars=True).values():
            t.add_(torch.linspace(0.01, 0.1, t.numel(), dtype=t.dtype).view_as(t))
    fresh = make()
    fresh.load_state_dict(through_disk(kern.state_dict()))
    for a, b in zip(kern.bands(), fresh.bands()):
        assert torch.equal(a, b)
    assert [n for n, _ in kern.named_parameters()] == [n for n, _ in fresh.named_parameters()]


# ---------------------------------------------------------------- the streaming metric

METRICS = [AlignmentMetric, alignment_metric_class(StreamingMetric)]


def _metric_batches():
    return [(chain_batch([5, 6], 10 + i), chain_batch([5, 6], 20 + i)) for i in range(4)]


@pytest.mark.parametrize("cls", METRICS, ids=["torchmetrics", "fallback"])
def test_metric_resumes_from_a_checkpoint(cls):
    batches = _metric_batches()
    straight = cls(0.8)
    for pred, target in batches:
        straight.update(pred, target)
    first = cls(0.8)
    for pred, target in batches[:2]:
        first.update(pred, target)
    state = first.state_dict()
    assert {"loss_sum", "cosine_sum", "rmsd_sum", "graphs"} <= set(state)
    saved = through_disk(state)
    kept = {k: v.clone() for k, v in saved.items()}
    resumed = cls(0.8)
    resumed.load_state_dict(saved)
    for pred, target in batches[2:]:
        resumed.update(pred, target)
    expected, got = straight.compute(), resumed.compute()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert float(resumed.graphs) == 8
    for key, value in saved.items():  # updates after the load leave the checkpoint as it was
        assert torch.equal(value, kept[key])
    # A state dict without the sums (saved before they were persistent) still loads.
    old = cls(0.8)
    old.load_state_dict({})
    assert float(old.graphs) == 0
