import pytest

from tg_rapidalign.apps.cli import main

pytestmark = pytest.mark.full  # whole CLI runs: training, calibration, benchmarks


def test_demo_smoke(tmp_path, capsys):
    assert main(["demo", "--steps", "4", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "RMSD reduction on held-out molecules" in out and (tmp_path / "demo_denoiser.png").exists()


def test_demo_with_a_calibrated_kernel_file(tmp_path, capsys):
    from tg_rapidalign import MultiBandGaussianKernel, save_kernel

    path = tmp_path / "k.json"
    save_kernel(MultiBandGaussianKernel([0.25, 0.6]), path, {"loss": "alignment"})
    assert main(["demo", "--steps", "2", "--kernel", str(path), "--mmd-weight", "0.5",
                 "--out", str(tmp_path), "--quiet"]) == 0
    assert "held-out" in capsys.readouterr().out


def test_shapes_smoke(tmp_path, capsys):
    assert main(["shapes", "--steps", "5", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "MMD^2" in out and (tmp_path / "demo_mmd.png").exists()


def test_bench_runs_a_benchmark_script(capsys):
    assert main(["bench", "memory", "--n", "2000", "--neighbors", "20"]) == 0
    assert "MiB" in capsys.readouterr().out


def test_calibrate_command_on_built_in_molecules_and_npz(tmp_path, capsys):
    import json

    import numpy as np
    import torch

    from tg_rapidalign.apps.datasets import g2_molecules
    from tg_rapidalign.io import load_kernel

    mols = g2_molecules(min_atoms=8)
    assert len(mols) > 20 and all(m.edge_index.size(1) > 0 for m in mols)
    out, plot = tmp_path / "k.json", tmp_path / "cal.png"
    assert main(["calibrate", "--steps", "3", "--quiet", "--out", str(out), "--plot", str(plot)]) == 0
    assert "calibrated" in capsys.readouterr().out and plot.exists()
    kernel, meta = load_kernel(out, return_metadata=True)
    assert meta["loss"] == "cosine" and meta["data"]["structures"] == len(g2_molecules())
    assert meta["corruption"]["length"] == 0.5 and meta["node_type"] == "z"  # Å on the built-in molecules
    json.loads(out.read_text())
    pos = torch.cat([m.pos for m in mols[:4]]).numpy()
    batch = np.concatenate([np.full(len(m.pos), i) for i, m in enumerate(mols[:4])])
    np.savez(tmp_path / "mols.npz", pos=pos, batch=batch)
    assert main(["calibrate", "--data", str(tmp_path / "mols.npz"), "--steps", "2", "--quiet",
                 "--corruption", "masking", "--out", str(out), "--plot", str(plot)]) == 0
    meta = load_kernel(out, return_metadata=True)[1]
    assert meta["data"]["structures"] == 4 and meta["node_type"] is None  # one type (no z): no type kernel
