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
