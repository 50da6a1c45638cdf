import pytest
import torch
from torch_geometric.data import Batch

from tg_rapidalign import kabsch_rmsd
from tg_rapidalign.apps.datasets import g2_molecules
from tg_rapidalign.apps.denoising import corrupt, evaluate, plot_report, split_molecules, train_denoiser


def test_split_is_seeded_and_disjoint():
    mols = g2_molecules(min_atoms=3)
    a, b = split_molecules(mols, 0.2, seed=0)
    c, d = split_molecules(mols, 0.2, seed=0)
    assert [m.name for m in a] == [m.name for m in c] and [m.name for m in b] == [m.name for m in d]
    assert not {m.name for m in a} & {m.name for m in b} and len(a) + len(b) == len(mols)
    with pytest.raises(ValueError, match="test_fraction"):
        split_molecules(mols, 1.5)


def test_corrupt_is_a_rigid_motion_plus_noise_of_the_given_size():
    mols = g2_molecules(min_atoms=8)[:40]
    batch = Batch.from_data_list(mols)
    moved = corrupt(batch, 0.0, torch.Generator().manual_seed(0))
    assert kabsch_rmsd(batch.pos, moved, batch=batch.batch).max() < 1e-9
    noisy = corrupt(batch, 0.2, torch.Generator().manual_seed(0))
    # Per-coordinate std 0.2: mean squared displacement 3 * 0.04 before the fit removes 6 of 3n dof.
    msd = kabsch_rmsd(batch.pos, noisy, batch=batch.batch).pow(2).mean()
    assert 0.06 < float(msd) < 0.13


@pytest.mark.full
def test_training_lowers_the_heldout_rmsd_and_plots(tmp_path):
    train, test = split_molecules(g2_molecules(min_atoms=3), 0.2, seed=0)
    report = train_denoiser(train, test, noise=0.3, steps=120, eval_every=60, eval_draws=2, progress=False)
    assert report.reduction > 0.1  # the full demo (2000 steps) reaches about 50%
    assert len(report.train_loss) == 120 and report.eval_steps == [60, 120]
    assert "RMSD reduction" in report.table()
    noisy, denoised = evaluate(report.model, test, 0.3, draws=2, seed=5)
    assert noisy.shape == denoised.shape == (len(test),)
    path = plot_report(report, str(tmp_path / "d.png"))
    assert (tmp_path / "d.png").stat().st_size > 1000 and path.endswith("d.png")
    with pytest.raises(ValueError, match="noise"):
        train_denoiser(train, test, noise=0.0, steps=1)


def test_symmetric_rmsd_ignores_swaps_of_equivalent_atoms():
    pytest.importorskip("rdkit")
    from tg_rapidalign.apps.denoising import symmetric_rmsd

    ch4 = next(m for m in g2_molecules() if m.name == "CH4")
    swapped = ch4.pos[torch.tensor([0, 2, 1, 3, 4])]  # two hydrogens exchanged: a mirror image
    noisy = ch4.pos + 0.1 * torch.randn(ch4.pos.shape, dtype=ch4.pos.dtype)
    sym = symmetric_rmsd(ch4.z, ch4.pos, [swapped, noisy])
    assert sym[0] < 1e-6 < float(kabsch_rmsd(ch4.pos, swapped))
    # Otherwise it is the plain superposition RMSD, never above it.
    assert sym[1] <= float(kabsch_rmsd(ch4.pos, noisy)) + 1e-9
    assert abs(sym[1] - float(kabsch_rmsd(ch4.pos, noisy))) < 0.05


@pytest.mark.parametrize("beta", [None, 0.2])
def test_a_kernel_with_a_cross_type_weight_scores_the_mmd_term_with_atom_types(monkeypatch, beta):
    from tg_rapidalign import MultiBandGaussianKernel
    from tg_rapidalign.apps import denoising

    seen = []
    real = denoising.kernel_mmd

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(denoising, "kernel_mmd", spy)
    train, test = split_molecules(g2_molecules(min_atoms=5)[:12], 0.25, seed=0)
    kernel = MultiBandGaussianKernel([0.3, 0.8], cross_type_weight=beta)
    report = train_denoiser(train, test, noise=0.3, steps=2, eval_every=2, eval_draws=1, mmd_weight=0.5,
                            kernel=kernel, progress=False)
    assert len(seen) == 2 and all(torch.isfinite(torch.tensor(report.train_loss)))
    for kwargs in seen:
        assert ("type_x" in kwargs) == (beta is not None)
        if beta is not None:
            assert torch.equal(kwargs["type_x"], kwargs["type_y"]) and kwargs["type_x"].dtype == torch.long
