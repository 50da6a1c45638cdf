"""The loss modules inside ``torch.compile(fullgraph=True)``: no graph break, no
host sync, the same values and gradients as eager (aot_eager in the fast tier,
inductor in the full one), batch vectors with a caller-given graph count, and
value checks that still fire (as asynchronous asserts) in compiled code."""
import pytest
import torch
import torch._dynamo
from helpers import graph_index

from tg_rapidalign import MultiBandGaussianKernel
from tg_rapidalign.nn import KernelMMDLoss, SE3KernelAlignmentLoss
from tg_rapidalign.ops import native

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason="compiled losses run the native kernels")

LOSSES = {
    "mmd": lambda: KernelMMDLoss(MultiBandGaussianKernel([0.4, 0.9]), cutoff=3.0),
    "cosine": lambda: KernelMMDLoss(MultiBandGaussianKernel([0.4, 0.9]), similarity="cosine"),
    "alignment_principal_axes": lambda: SE3KernelAlignmentLoss(0.7, iterations=2),
    "alignment_paired": lambda: SE3KernelAlignmentLoss(0.7, init="paired", iterations=2),
}


def _pair(sizes, seed):
    """float32 positions of graphs of ``sizes`` nodes and a perturbed copy."""
    gen = torch.Generator().manual_seed(seed)
    x = 2 * torch.rand(sum(sizes), 3, generator=gen)
    return x, x + 0.1 * torch.randn(x.shape, generator=gen), graph_index(sizes)


def _run(loss, x, y, batch, num_graphs):
    x = x.clone().requires_grad_()
    value = loss(x, y, batch, batch, num_graphs=num_graphs)
    value.backward()
    params = [p.grad.clone() for p in loss.parameters() if p.grad is not None]
    loss.zero_grad()
    return value.detach(), x.grad, params


def _compare(name, backend):
    torch._dynamo.reset()
    loss = LOSSES[name]()
    compiled = torch.compile(loss, fullgraph=True, backend=backend)
    # Two batch compositions: the second call runs with symbolic sizes.
    for seed, sizes in enumerate(([5, 7, 1, 8], [9, 3, 4, 12, 2])):
        x, y, batch = _pair(sizes, seed)
        want = _run(loss, x, y, batch, len(sizes))
        got = _run(compiled, x, y, batch, len(sizes))
        assert torch.allclose(got[0], want[0], rtol=1e-5, atol=1e-7)
        assert torch.allclose(got[1], want[1], rtol=1e-4, atol=1e-7)
        assert len(got[2]) == len(want[2])
        for g, w in zip(got[2], want[2]):
            assert torch.allclose(g, w, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fullgraph_aot_eager_matches_eager(name):
    _compare(name, "aot_eager")


@pytest.mark.full  # inductor compiles C++ (tens of seconds per loss on 2 cores)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fullgraph_inductor_matches_eager(name):
    _compare(name, "inductor")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_no_graph_break(name):
    torch._dynamo.reset()
    loss = LOSSES[name]()
    x, y, batch = _pair([6, 4, 9], 3)
    explained = torch._dynamo.explain(lambda a, b, c: loss(a, b, c, c, num_graphs=3))(x, y, batch)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1


def test_pyg_batch_gives_the_graph_count():
    from torch_geometric.data import Batch, Data

    torch._dynamo.reset()
    x, y, batch = _pair([5, 8, 3], 7)
    sizes = torch.bincount(batch).tolist()
    pred = Batch.from_data_list([Data(pos=p) for p in x.split(sizes)])
    target = Batch.from_data_list([Data(pos=p) for p in y.split(sizes)])
    loss = KernelMMDLoss(0.6)
    want = loss(pred, target)
    got = torch.compile(loss, fullgraph=True, backend="aot_eager")(pred, target)
    assert torch.allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="num_graphs=4 but the inputs hold 3 graphs"):
        loss(pred, target, num_graphs=4)


@pytest.mark.parametrize("bad,message", [("nan", "x contains NaN"), ("unsorted", "must be sorted"),
                                         ("graph_id", "names a graph id >= num_graphs")])
def test_value_checks_fire_inside_compiled_code(bad, message):
    torch._dynamo.reset()
    loss = torch.compile(KernelMMDLoss(0.5), fullgraph=True, backend="aot_eager")
    x, y, batch = _pair([4, 5], 11)
    loss(x, y, batch, batch, num_graphs=2)  # compiled once on good input
    if bad == "nan":
        x = x.clone()
        x[3, 1] = float("nan")
    elif bad == "unsorted":
        batch = batch.flip(0)
    else:
        batch = batch + 1
    with pytest.raises(RuntimeError, match=message):
        loss(x, y, batch, batch, num_graphs=2)


def test_eager_checks_keep_their_error_types():
    x, y, batch = _pair([4, 5], 12)
    with pytest.raises(ValueError, match="names a graph id >= num_graphs"):
        KernelMMDLoss(0.5)(x, y, batch + 1, batch + 1, num_graphs=2)
    with pytest.raises(ValueError, match="num_graphs must be a non-negative int"):
        KernelMMDLoss(0.5)(x, y, batch, batch, num_graphs=True)
