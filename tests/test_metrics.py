import pytest
import torch
import torch_geometric.transforms as T
from helpers import property_settings, run_gloo
from hypothesis import given
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data

from tg_rapidalign import kabsch_rmsd, se3_kernel_alignment
from tg_rapidalign.metrics import AlignmentMetric, StreamingMetric, alignment_metric_class
from tg_rapidalign.transforms import RandomRigidMotion

METRICS = [AlignmentMetric, alignment_metric_class(StreamingMetric)]


def _pairs(sizes, seed=0, noise=0.1):
    """Chiral random structures (distinct principal variances) and noisy predictions."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    target = [Data(pos=torch.randn(n, 3, dtype=torch.float64, generator=gen) * scale) for n in sizes]
    pred = [Data(pos=d.pos + noise * torch.randn(d.pos.shape, dtype=torch.float64, generator=gen))
            for d in target]
    return Batch.from_data_list(pred), Batch.from_data_list(target)


def _scores(metric):
    return {k: float(v) for k, v in metric.compute().items()}


@pytest.mark.parametrize("cls", METRICS)
def test_streaming_means_equal_the_functional_scores(cls):
    pred, target = _pairs([7, 12, 9, 5])
    metric = cls(kernel=0.7)
    first = Batch.from_data_list(pred.to_data_list()[:3]), Batch.from_data_list(target.to_data_list()[:3])
    metric.update(*first)
    metric.update(pred.to_data_list()[3], target.to_data_list()[3])  # a single Data counts as one graph
    res = se3_kernel_alignment(pred.pos, target.pos, pred.batch, target.batch, sigma=0.7)
    rmsd = kabsch_rmsd(pred.pos, target.pos, batch=pred.batch)
    got = _scores(metric)
    assert got["alignment_loss"] == pytest.approx(float(res.loss.mean()), rel=1e-10)
    assert got["kernel_cosine"] == pytest.approx(float(res.similarity.mean()), rel=1e-10)
    assert got["rmsd"] == pytest.approx(float(rmsd.mean()), rel=1e-10)
    metric.reset()
    assert _scores(metric) == {"alignment_loss": 0.0, "kernel_cosine": 0.0, "rmsd": 0.0}
    assert "AlignmentMetric(kernel=0.7" in repr(metric)


@pytest.mark.parametrize("cls", METRICS)
def test_identical_structures_score_perfectly(cls):
    _, target = _pairs([6, 1, 10])
    metric = cls(kernel=0.5)
    metric.update(target, target.clone())
    got = _scores(metric)
    assert abs(got["alignment_loss"]) < 1e-7 and abs(got["kernel_cosine"] - 1) < 1e-7 and got["rmsd"] < 1e-7


def _rigid():
    return T.Compose([RandomRigidMotion(translate=4.0), T.RandomRotate(180, axis=0), T.Center()])


@property_settings(12)
@given(seed=st.integers(0, 10_000), noise=st.floats(0.0, 0.3),
       transform=st.sampled_from(["center", "rotate", "rigid"]))
def test_invariant_to_rigid_transforms(seed, noise, transform):
    torch.manual_seed(seed)
    pred, target = _pairs([8, 15], seed=seed, noise=noise)
    transforms = {"center": T.Center(), "rotate": T.Compose([T.RandomRotate(180, axis=a) for a in range(3)]),
                  "rigid": _rigid()}
    plain, moved = AlignmentMetric(kernel=0.8), AlignmentMetric(kernel=0.8, transform=transforms[transform])
    plain.update(pred, target)
    moved.update(pred, target)
    a, b = _scores(plain), _scores(moved)
    # abs 1e-6: T.RandomRotate builds its matrix in float32 (orthogonal to about 1e-7).
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-6), key


@pytest.mark.filterwarnings("ignore:.*RandomTranslate.*deprecated")
@pytest.mark.parametrize("name", ["flip", "normalize_scale", "random_translate"])
def test_changed_by_reflections_rescaling_and_per_node_jitter(name):
    pred, target = _pairs([14, 11], noise=0.15)
    transform = {"flip": T.RandomFlip(axis=0, p=1.0), "normalize_scale": T.NormalizeScale(),
                 "random_translate": T.RandomTranslate(0.3)}[name]
    plain = AlignmentMetric(kernel=0.8)
    plain.update(pred, target)
    changed = AlignmentMetric(kernel=0.8, transform=transform)
    if name == "flip":  # mirror only the prediction: a chiral structure against its mirror image
        changed.update(transform(pred.clone()), target)
    else:
        changed.update(pred, target)
    a, b = _scores(plain), _scores(changed)
    assert abs(b["rmsd"] - a["rmsd"]) > 1e-3
    assert abs(b["kernel_cosine"] - a["kernel_cosine"]) > 1e-4


def test_transform_applies_per_graph_not_to_the_whole_batch():
    # T.Center on a Batch would subtract one batch-wide mean; per graph, each graph is centred.
    seen = []

    def spy(data):
        seen.append(data.num_nodes)
        return T.Center()(data)

    pred, target = _pairs([3, 5])
    AlignmentMetric(kernel=1.0, transform=spy).update(pred, target)
    assert seen == [3, 5, 3, 5]


def test_bad_input():
    pred, target = _pairs([4, 6])
    refused = AlignmentMetric()
    with pytest.raises(ValueError, match="rmsd=True"):
        refused.update(pred, Batch.from_data_list([target.to_data_list()[0]] * 2))
    assert float(refused.graphs) == 0 and float(refused.loss_sum) == 0  # nothing counted
    with pytest.raises(ValueError, match="graphs"):
        AlignmentMetric(rmsd=False).update(pred, target.to_data_list()[0])
    with pytest.raises(TypeError, match="pred"):
        AlignmentMetric().update(pred.pos, target)
    with pytest.raises(TypeError, match="unknown option"):
        AlignmentMetric(iteration=3)
    with pytest.raises(TypeError, match="transform"):
        AlignmentMetric(transform=3)
    metric = AlignmentMetric(rmsd=False)
    metric.update(pred, Batch.from_data_list([target.to_data_list()[1], target.to_data_list()[0]]))
    assert "rmsd" not in metric.compute()


def _rank_scores(rank, fallback):
    pred, target = _pairs([5, 8, 6, 9, 7])
    share = slice(0, 2) if rank == 0 else slice(2, 5)  # unequal shares
    cls = alignment_metric_class(StreamingMetric) if fallback else AlignmentMetric
    metric = cls(kernel=0.6)
    metric.update(Batch.from_data_list(pred.to_data_list()[share]),
                  Batch.from_data_list(target.to_data_list()[share]))
    scores = _scores(metric)
    local_graphs = float(metric.graphs)  # compute leaves the local states as they were
    return {"scores": scores, "local": local_graphs}


@pytest.mark.full
@pytest.mark.parametrize("fallback", [False, True])
def test_ddp_ranks_agree_with_one_process(fallback):
    pred, target = _pairs([5, 8, 6, 9, 7])
    single = AlignmentMetric(kernel=0.6)
    single.update(pred, target)
    want = _scores(single)
    for rank, res in enumerate(run_gloo(_rank_scores, fallback)):
        for key in want:
            assert res["scores"][key] == pytest.approx(want[key], rel=1e-10)
        assert res["local"] == (2 if rank == 0 else 3)
