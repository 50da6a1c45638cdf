import pytest
import torch
from torch_geometric.data import Batch, Data

from tg_rapidalign import kabsch_rmsd
from tg_rapidalign.transforms import AlignToReference, RandomRigidMotion, random_rotation


def _chiral(n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, dtype=torch.float64, generator=gen) * torch.tensor([3.0, 1.5, 0.7],
                                                                                dtype=torch.float64)


def test_random_rotation_is_proper_and_uniformish():
    R = random_rotation(4000, torch.Generator().manual_seed(0))
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(R @ R.transpose(1, 2), eye.expand_as(R), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(4000, dtype=torch.float64), atol=1e-12)
    # Haar measure: E[R] = 0 and E[trace R] = 0.
    assert R.mean(0).abs().max() < 0.05
    assert abs(float(R.diagonal(dim1=1, dim2=2).sum(1).mean())) < 0.05


def test_random_rigid_motion_is_rigid_seeded_and_turns_normals():
    pos = _chiral()
    normal = torch.nn.functional.normalize(torch.randn(12, 3, dtype=torch.float64), dim=1)
    data = Data(pos=pos, normal=normal)
    a = RandomRigidMotion(translate=5.0, seed=3)(data)
    b = RandomRigidMotion(translate=5.0, seed=3)(data)
    assert torch.equal(a.pos, b.pos) and data.pos is pos  # reproducible, input untouched
    assert torch.allclose(torch.cdist(a.pos, a.pos), torch.cdist(pos, pos), atol=1e-10)
    assert float(kabsch_rmsd(a.pos, pos)) < 1e-7
    assert not torch.allclose(a.pos.mean(0), pos.mean(0), atol=1e-3)
    # Normals turn with the graph and are not shifted.
    R = torch.linalg.lstsq(pos - pos.mean(0), a.pos - a.pos.mean(0)).solution.T
    assert torch.allclose(a.normal, normal @ R.T, atol=1e-8)
    with pytest.raises(ValueError, match="translate"):
        RandomRigidMotion(translate=-1)
    with pytest.raises(ValueError, match="data.pos"):
        RandomRigidMotion()(Data(pos=torch.zeros(3, 2)))


@pytest.mark.parametrize("paired", [None, False])
def test_align_to_reference_recovers_the_motion(paired):
    ref = _chiral(20)
    R = random_rotation(1, generator=torch.Generator().manual_seed(1))[0]
    moved = ref @ R.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    out = AlignToReference(ref, paired=paired)(Data(pos=moved))
    assert torch.allclose(out.pos, ref, atol=1e-6)
    assert torch.allclose(out.align_R[0] @ R, torch.eye(3, dtype=torch.float64), atol=1e-6)
    assert out.align_R.shape == (1, 3, 3) and out.align_t.shape == (1, 3)


def test_align_to_reference_unpaired_on_a_cropped_noisy_copy_and_in_a_batch():
    ref = _chiral(30)
    R = random_rotation(1, generator=torch.Generator().manual_seed(2))[0]
    keep = torch.arange(30) % 5 != 0  # 24 of 30 nodes: no correspondence
    moved = (ref[keep] + 0.02 * torch.randn(24, 3, dtype=torch.float64)) @ R.T + 3.0
    t = AlignToReference(Data(pos=ref))
    out = t(Data(pos=moved))
    # Each aligned node lands next to the node it came from.
    assert (out.pos - ref[keep]).norm(dim=1).max() < 0.15
    batch = Batch.from_data_list([t(Data(pos=moved)), t(Data(pos=moved))])
    assert batch.align_R.shape == (2, 3, 3)


def test_align_to_reference_degenerate_and_bad_input():
    ref = _chiral(5)
    one = AlignToReference(ref[:1])(Data(pos=torch.ones(1, 3, dtype=torch.float64)))
    assert torch.allclose(one.pos, ref[:1])
    empty = AlignToReference(ref, paired=False)(Data(pos=torch.zeros(0, 3, dtype=torch.float64)))
    assert empty.pos.shape == (0, 3)
    sym = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=torch.float64)
    out = AlignToReference(sym, paired=False)(Data(pos=sym @ random_rotation(1)[0].T))
    assert torch.isfinite(out.pos).all()
    with pytest.raises(ValueError, match="reference"):
        AlignToReference(torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="paired=True"):
        AlignToReference(ref, paired=True)(Data(pos=ref[:3]))
    with pytest.raises(ValueError, match="sigma"):
        AlignToReference(ref, sigma=0.0)
