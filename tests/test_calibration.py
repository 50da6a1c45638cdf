import pytest
import torch
from torch_geometric.data import Data

from tg_rapidalign import MultiBandGaussianKernel
from tg_rapidalign.apps.calibration import calibrate_kernel, median_distance


def chains(count=6, n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        pos = torch.cumsum(torch.randn(n, 3, generator=gen, dtype=torch.float64), 0) * 0.5
        i = torch.arange(n - 1)
        out.append(Data(pos=pos, edge_index=torch.cat([torch.stack([i, i + 1]), torch.stack([i + 1, i])], 1)))
    return out


@pytest.mark.full  # a calibration training run
def test_fitting_improves_spearman_from_a_bad_kernel():
    bad = MultiBandGaussianKernel([0.02, 0.04], learnable=True)
    rep = calibrate_kernel(chains(), "noise", kernel=bad, levels=[0, 0.25, 0.5, 0.75, 1.0], steps=80,
                           progress=False)
    assert rep.after.spearman > rep.before.spearman + 0.2
    assert rep.after.spearman > 0.85 and rep.after.ordered_fraction > 0.85
    assert rep.after.identical_loss <= 1e-6
    assert rep.history[-1] < rep.history[0]
    assert len(rep.baselines) == 2 and rep.temperature > 0
    assert "calibrated" in rep.summary()
    assert rep.curves["after"].shape == rep.curves["levels"].shape


def test_is_reproducible_and_validates():
    kw = dict(levels=[0, 0.5, 1.0], steps=5, progress=False)
    a = calibrate_kernel(chains(4), "masking", **kw)
    b = calibrate_kernel(chains(4), "masking", **kw)
    assert torch.equal(a.kernel.log_sigma, b.kernel.log_sigma)
    assert median_distance(chains(2)) > 0
    with pytest.raises(ValueError, match="at least two graphs"):
        calibrate_kernel(chains(1), **kw)
    with pytest.raises(ValueError, match="corruption"):
        calibrate_kernel(chains(3), "blur", **kw)
    with pytest.raises(ValueError, match="loss"):
        calibrate_kernel(chains(3), loss="l2", **kw)


def test_length_sets_the_noise_unit():
    import pytest

    from tg_rapidalign.apps.calibration import calibrate_kernel
    from tg_rapidalign.apps.datasets import g2_molecules

    with pytest.raises(ValueError, match="length"):
        calibrate_kernel(g2_molecules(min_atoms=8)[:4], "noise", "cosine", steps=1, length=-1.0,
                         progress=False)


def test_node_types_are_fitted_and_reported(tmp_path):
    from tg_rapidalign.apps.datasets import g2_molecules
    from tg_rapidalign.io import load_kernel, save_kernel

    mols = g2_molecules(min_atoms=8)[:8]
    kw = dict(levels=[0, 0.5, 1.0], steps=4, progress=False, repeats=1)
    rep = calibrate_kernel(mols, "noise", "cosine", **kw)
    beta = rep.kernel.type_weight()
    assert beta is not None and 0 < float(beta) < 1
    assert len(rep.baselines) == 3 and any("types" in name for name in rep.baselines)
    assert rep.after.identical_loss <= 1e-6
    save_kernel(rep.kernel, tmp_path / "typed.json")
    assert torch.equal(load_kernel(tmp_path / "typed.json").type_weight(), beta.detach())
    plain = calibrate_kernel(mols, "noise", "cosine", node_type=None, **kw)
    assert plain.kernel.type_weight() is None and len(plain.baselines) == 2
    # The plain baselines do not depend on whether types are fitted.
    assert list(plain.baselines.values()) == list(rep.baselines.values())[:2]


def test_soft_spearman_tends_to_spearman_and_is_differentiable():
    from scipy.stats import spearmanr

    from tg_rapidalign.apps.calibration import _standard_ranks, soft_spearman

    gen = torch.Generator().manual_seed(0)
    levels = torch.arange(6, dtype=torch.float64).repeat_interleave(4) / 5  # tied levels, as in calibration
    values = levels + 0.3 * torch.randn(len(levels), generator=gen, dtype=torch.float64)
    exact = spearmanr(values.numpy(), levels.numpy()).statistic
    ranks = _standard_ranks(levels)
    assert abs(float(soft_spearman(values, ranks, tau=1e-5)) - exact) < 1e-6
    assert float(soft_spearman(-values, ranks, tau=1e-5)) == pytest.approx(-exact, abs=1e-6)
    assert float(soft_spearman(values * 7.5 + 3, ranks)) == pytest.approx(float(soft_spearman(values, ranks)))
    v = values.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: soft_spearman(t, ranks, tau=0.3), (v,))


@pytest.mark.parametrize("typed", [False, True])
@pytest.mark.parametrize("cutoff", [None, 4.0, 1.5])
def test_pair_table_sums_equal_kernel_sums(typed, cutoff):
    """The precomputed table gives the dense backend's sums and their gradients."""
    from torch_geometric.data import Batch

    from tg_rapidalign import kernel_cosine, kernel_mmd
    from tg_rapidalign.apps.pair_table import PairKernelTable

    gen = torch.Generator().manual_seed(3)
    xs = chains(5, 9, seed=1)
    ys = [Data(pos=d.pos[: 9 - i] + 0.3 * torch.randn(9 - i, 3, generator=gen, dtype=torch.float64))
          for i, d in enumerate(xs)]  # different sizes per pair
    for d in xs + ys:
        d.z = torch.randint(0, 3, (d.num_nodes,), generator=gen)
    bx, by = Batch.from_data_list(xs), Batch.from_data_list(ys)
    kernel = MultiBandGaussianKernel([0.4, 1.1, 2.5], learnable=True,
                                     cross_type_weight=0.3 if typed else None).double()
    table = PairKernelTable(xs, ys, "z" if typed else None, cutoff=cutoff)
    types = dict(type_x=bx.z, type_y=by.z) if typed else {}
    kw = dict(sigma=kernel, cutoff=cutoff, backend="dense", **types)
    for mine, ref in ((table.mmd, kernel_mmd), (table.cosine, kernel_cosine)):
        got = mine(kernel)
        want = ref(bx.pos, by.pos, bx.batch, by.batch, **kw)
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-14), (got - want).abs().max()
        g1 = torch.autograd.grad(got.sum(), list(kernel.parameters()))
        g2 = torch.autograd.grad(want.sum(), list(kernel.parameters()))
        assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-13) for a, b in zip(g1, g2))
    with pytest.raises(ValueError, match="xs and ys"):
        PairKernelTable(xs, ys[:2])


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    from tg_rapidalign.apps.calibration import average_ranks, spearman

    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 6, (200,), generator=gen).double()  # many ties
    b = a + torch.randn(200, generator=gen, dtype=torch.float64)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-12)
    assert torch.equal(average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])), torch.tensor([2.5, 0.0, 2.5, 1.0],
                                                                                        dtype=torch.float64))
    assert spearman(torch.ones(5), torch.arange(5.0)) != spearman(torch.ones(5), torch.arange(5.0))  # NaN


def test_calibration_restores_the_thread_count_and_labels_its_stages(capsys):
    pytest.importorskip("tqdm")
    before = torch.get_num_threads()
    calibrate_kernel(chains(4), "noise", "cosine", levels=[0, 0.5, 1.0], steps=2, threads=1)
    assert torch.get_num_threads() == before
    err = capsys.readouterr().err
    for label in ("stage 1 of 3: scoring 15 single bandwidths", "stage 2 of 3: fitting the 4 bands",
                  "stage 3 of 3: fitting 3 bands around the best single"):
        assert label in err
    with pytest.raises(ValueError, match="threads"):
        calibrate_kernel(chains(4), steps=1, threads=0, progress=False)
