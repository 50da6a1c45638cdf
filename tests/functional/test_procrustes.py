import pytest
import torch
from helpers import axis_rotation, graph_index
from reference import horn_rotation

from tg_rapidalign import special_polar, weighted_procrustes
from tg_rapidalign.transforms import random_rotation


def horn_reference(x, y, w):
    """Horn's quaternion method: an independent solution of the weighted problem."""
    w = w / w.sum()
    mx, my = (w[:, None] * x).sum(0), (w[:, None] * y).sum(0)
    R = horn_rotation((w[:, None, None] * (y - my)[:, :, None] * (x - mx)[:, None, :]).sum(0))
    return R, mx - R @ my


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_recovers_known_rotations_including_near_180(dtype):
    gen = torch.Generator().manual_seed(0)
    sizes = [4, 10, 50, 7]
    batch = graph_index(sizes)
    y = torch.randn(sum(sizes), 3, dtype=dtype, generator=gen)
    R = random_rotation(4, generator=gen, dtype=dtype)
    # near-180-degree rotation about a random axis
    R[3] = axis_rotation(torch.randn(3, dtype=dtype, generator=gen), torch.pi - 1e-3, dtype)
    t = torch.randn(4, 3, dtype=dtype, generator=gen) * 10
    x = (R[batch] @ y.unsqueeze(2)).squeeze(2) + t[batch]
    w = torch.rand(len(y), dtype=dtype, generator=gen) + 0.1
    R_hat, t_hat = weighted_procrustes(x, y, w, batch)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert torch.allclose(R_hat, R, atol=tol) and torch.allclose(t_hat, t, atol=tol * 10)
    assert torch.allclose(torch.linalg.det(R_hat), torch.ones(4, dtype=dtype), atol=tol)


def test_noisy_weighted_matches_independent_optimum_and_batch():
    gen = torch.Generator().manual_seed(1)
    sizes = [12, 30, 5]
    batch = graph_index(sizes)
    y = torch.randn(sum(sizes), 3, dtype=torch.float64, generator=gen)
    x = (random_rotation(3, generator=gen)[batch] @ y.unsqueeze(2)).squeeze(2)
    x = x + 0.3 * torch.randn_like(x)
    w = torch.rand(len(y), dtype=torch.float64, generator=gen) ** 2
    R, t = weighted_procrustes(x, y, w, batch)
    for g in range(3):
        m = batch == g
        R_ref, t_ref = horn_reference(x[m], y[m], w[m])
        assert torch.allclose(R[g], R_ref, atol=1e-9) and torch.allclose(t[g], t_ref, atol=1e-9)
        R_one, t_one = weighted_procrustes(x[m], y[m], w[m])
        assert torch.allclose(R[g], R_one[0], atol=1e-12) and torch.allclose(t[g], t_one[0], atol=1e-12)


def test_mirrored_target_still_gives_proper_rotation():
    y = torch.randn(20, 3, dtype=torch.float64)
    x = y * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # a reflection
    R, _ = weighted_procrustes(x, y)
    assert torch.allclose(torch.linalg.det(R), torch.ones(1, dtype=torch.float64))
    assert torch.allclose(R[0] @ R[0].T, torch.eye(3, dtype=torch.float64), atol=1e-12)


def test_gradcheck():
    x = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(9, dtype=torch.float64) + 0.1).requires_grad_(True)
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    assert torch.autograd.gradcheck(lambda a, b, c: weighted_procrustes(a, b, c, batch), (x, y, w))
    S = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(special_polar, (S,))


@pytest.mark.parametrize("case", ["two_points", "collinear", "symmetric", "zero_weights",
                                  "single", "coincident"])
def test_degenerate_inputs_finite(case):
    y = {
        "two_points": torch.tensor([[0.0, 0, 0], [1, 0, 0]]),
        "collinear": torch.tensor([[0.0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]]),
        "symmetric": torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]),
        "zero_weights": torch.randn(5, 3),
        "single": torch.randn(1, 3),
        "coincident": torch.ones(4, 3),
    }[case].double()
    x = (y @ random_rotation(1)[0].T + 1.0).requires_grad_(True)
    y = y.clone().requires_grad_(True)
    w = (torch.zeros(len(y)) if case == "zero_weights" else torch.ones(len(y))).double()
    w.requires_grad_(True)
    R, t = weighted_procrustes(x, y, w)
    ((R * torch.randn(3, 3, dtype=torch.float64)).sum() + t.sum()).backward()
    for v in (R, t, x.grad, y.grad, w.grad):
        assert torch.isfinite(v).all()
    assert torch.allclose(torch.linalg.det(R), torch.ones(1, dtype=torch.float64))
    # paired points are still mapped exactly where the pose is determined
    if case in ("two_points", "collinear", "symmetric", "single", "coincident"):
        assert torch.allclose((y @ R[0].T + t[0]).detach(), x.detach(), atol=1e-9)


def test_bad_input():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="x must have 3 columns"):
        weighted_procrustes(torch.randn(5, 2), x)
    with pytest.raises(ValueError, match="paired"):
        weighted_procrustes(x, torch.randn(4, 3))
    with pytest.raises(ValueError, match="weight must be non-negative"):
        weighted_procrustes(x, x, -torch.ones(5))


def _ref_rmsd(x, y, w):
    """RMSD after superposing y on x with Horn's independent rotation."""
    w = w / w.sum()
    mx, my = w @ x, w @ y
    S = ((y - my) * w[:, None]).T @ (x - mx)
    R = horn_rotation(S)
    return float((w * ((x - mx) - (y - my) @ R.T).pow(2).sum(1)).sum().sqrt())


def test_kabsch_rmsd_matches_independent_reference_and_is_rigid_invariant():
    from tg_rapidalign import kabsch_rmsd

    sizes = [6, 1, 11]
    x = torch.randn(sum(sizes), 3, dtype=torch.float64)
    batch = graph_index(sizes)
    y = x + 0.2 * torch.randn_like(x)
    w = torch.rand(len(x), dtype=torch.float64)
    got = kabsch_rmsd(x, y, w, batch)
    for g in range(3):
        m = batch == g
        ref = _ref_rmsd(x[m], y[m], w[m]) if m.sum() > 1 else 0.0
        assert abs(float(got[g]) - ref) < 1e-10
    R = random_rotation(3)
    moved = (R[batch] @ y.unsqueeze(-1)).squeeze(-1) + torch.randn(3, 3, dtype=torch.float64)[batch]
    assert torch.allclose(kabsch_rmsd(x, moved, w, batch), got, atol=1e-10)
    # A mirror image of a chiral structure does not superpose.
    mirror = x * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert float(kabsch_rmsd(x[:6], mirror[:6])) > 1e-3


def test_kabsch_rmsd_gradcheck_and_zero_is_finite():
    from tg_rapidalign import kabsch_rmsd

    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    y = (x.detach() + 0.3 * torch.randn(7, 3, dtype=torch.float64)).requires_grad_()
    w = torch.rand(7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: kabsch_rmsd(a, b, c), (x, y, w))
    same = x.detach().clone().requires_grad_()
    value = kabsch_rmsd(same, same.detach().clone())
    value.sum().backward()
    assert float(value.detach()) < 1e-7 and torch.isfinite(same.grad).all()
    empty = torch.zeros(0, 3, dtype=torch.float64)
    assert kabsch_rmsd(empty, empty, batch=torch.zeros(0, dtype=torch.long), num_graphs=2).tolist() == [0, 0]
