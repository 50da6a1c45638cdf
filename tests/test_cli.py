"""The ``rapidalign`` command. Parser, output paths and figures are checked in
the fast tier; whole subcommand runs (training, calibration, benchmarks) are in
the full tier, with few steps."""
import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

from tg_rapidalign.apps import cli
from tg_rapidalign.apps.cli import OUTPUTS, build_parser, main, output_paths

full = pytest.mark.full


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_help_shows_help_and_default_of_every_option_of_every_subcommand():
    subs = _subparsers(build_parser(with_bench=True))
    assert set(subs) == {"demo", "shapes", "calibrate", "bench"}
    for name, sub in subs.items():
        text = "".join(sub.format_help().split())  # unwrapped (argparse also wraps at hyphens)
        for action in sub._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings[0]} has no help"
            shown = sub._get_formatter()._get_help_string(action) % vars(action)
            assert "default:" in shown, f"{name} {action.option_strings[0]} shows no default"
            assert "".join(shown.split()) in text
            if action.default is not None and "%(default)" in sub._get_formatter()._get_help_string(action):
                assert f"(default:{action.default})" in text


def test_help_exits_cleanly_for_every_subcommand(capsys):
    for name in _subparsers(build_parser(with_bench=True)):
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert "default:" in capsys.readouterr().out or name == "bench"


def test_demo_help_says_its_figures_vary(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "vary between runs and machines" in capsys.readouterr().out


def test_out_is_a_folder_with_named_files_for_every_subcommand(tmp_path):
    for command, names in OUTPUTS.items():
        folder = tmp_path / command / "nested"
        paths = output_paths(command, str(folder), next(iter(names)))
        assert folder.is_dir()
        assert paths == {key: str(folder / name) for key, name in names.items()}
    for sub in _subparsers(build_parser(with_bench=False)).values():
        assert sub.get_default("out") == "outputs"


def test_a_file_path_as_out_still_works_with_a_deprecation_warning(tmp_path, capsys):
    with pytest.warns(DeprecationWarning, match="--out takes a folder"):
        paths = output_paths("calibrate", str(tmp_path / "sub" / "k.json"), "kernel")
    assert paths == {"kernel": str(tmp_path / "sub" / "k.json"),
                     "plot": str(tmp_path / "sub" / "calibration.png")}
    assert (tmp_path / "sub").is_dir() and "deprecated" in capsys.readouterr().err


def test_bench_is_absent_without_a_source_checkout(monkeypatch, capsys):
    assert "bench" not in _subparsers(build_parser(with_bench=False))
    monkeypatch.setattr(cli, "benchmarks_folder", lambda: None)
    assert "bench" not in _subparsers(build_parser())
    assert main(["bench", "memory"]) == 2
    assert "source checkout" in capsys.readouterr().err


def _check_axes(fig, panels):
    axes = fig.get_axes()
    assert len(axes) == panels
    for ax in axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), ax
        if hasattr(ax, "get_zlabel"):
            assert ax.get_zlabel()


def test_shapes_figure_has_one_labelled_panel_per_shape():
    pytest.importorskip("matplotlib")
    from tg_rapidalign.apps.datasets import SHAPE_NAMES, shape_batch
    from tg_rapidalign.apps.plotting import shapes_figure

    b = shape_batch()
    keep = torch.arange(b.num_nodes) % 5 != 0
    fig = shapes_figure([1.0, 0.5, 0.2], b.pos, b.pos + 0.01, b.pos[keep], b.pos[keep], b.batch,
                        b.batch[keep], SHAPE_NAMES)
    _check_axes(fig, 2 * (b.num_graphs + 1))  # the MMD curve + 3 fits, the distances + 3 alignments
    titles = [ax.get_title() for ax in fig.get_axes()]
    for name in SHAPE_NAMES:
        assert sum(name in t for t in titles) == 2
    # Each shape's panel shows that shape's points only.
    fit_panel = next(ax for ax in fig.get_axes() if ax.get_title() == f"{SHAPE_NAMES[1]}: MMD fit")
    sizes = {len(c.get_offsets()) for c in fit_panel.collections}
    assert sizes == {int((b.batch == 1).sum())}


def test_calibration_and_denoiser_figures_are_labelled():
    pytest.importorskip("matplotlib")
    from test_calibration import chains

    from tg_rapidalign.apps.calibration import calibrate_kernel
    from tg_rapidalign.apps.denoising import DenoiserReport
    from tg_rapidalign.apps.plotting import calibration_figure, denoiser_figure

    rep = calibrate_kernel(chains(4), levels=[0, 0.5, 1.0], steps=2, progress=False)
    fig = calibration_figure(rep, "cosine")
    _check_axes(fig, 1)
    assert "cosine" in fig.get_axes()[0].get_title()
    report = DenoiserReport(model=None, noise=0.3, steps=[1, 2, 3], train_loss=[1.0, 0.8, 0.7],
                            eval_steps=[3], eval_rmsd=[0.2], names=["a", "b"], atoms=[3, 4],
                            noisy_rmsd=torch.tensor([0.3, 0.4]), denoised_rmsd=torch.tensor([0.2, 0.25]))
    _check_axes(denoiser_figure(report), 3)


def _run_blocked(code, blocked, tmp_path):
    """Runs ``code`` in a fresh interpreter where the ``blocked`` packages (and
    their submodules) cannot be imported, after torch_geometric is loaded (it
    needs tqdm itself)."""
    prelude = ("import sys, torch_geometric\n"
               f"for name in {blocked!r}:\n"
               "    for key in [k for k in sys.modules if k == name or k.startswith(name + '.')]:\n"
               "        del sys.modules[key]\n"
               "    sys.modules[name] = None\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


@full
def test_missing_extras_are_named_with_their_pip_line(tmp_path):
    code = ("from tg_rapidalign.apps.cli import main\n"
            "assert main(['calibrate', '--steps', '1', '--quiet', '--out', 'o']) == 2\n")
    res = _run_blocked(code, ["ase"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "built-in G2 molecules needs the optional package 'ase'" in res.stderr
    assert 'pip install "tg_rapidalign[demo]"' in res.stderr
    # Without matplotlib the kernel is still written, and the plot says what is missing.
    code = ("from tg_rapidalign.apps.cli import main\n"
            "assert main(['calibrate', '--steps', '1', '--quiet', '--out', 'o']) == 0\n")
    res = _run_blocked(code, ["matplotlib"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert 'no plot (plotting needs the optional package \'matplotlib\'' in res.stdout
    assert 'tg_rapidalign[plot]' in res.stdout
    assert (tmp_path / "o" / "kernel.json").exists() and not (tmp_path / "o" / "calibration.png").exists()


@full
def test_demo_smoke(tmp_path, capsys):
    assert main(["demo", "--steps", "4", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "RMSD reduction on held-out molecules" in out and (tmp_path / "demo_denoiser.png").exists()
    assert "vary between runs and machines" in out


@full
def test_demo_with_a_calibrated_kernel_file_or_folder(tmp_path, capsys):
    from tg_rapidalign import MultiBandGaussianKernel, save_kernel

    save_kernel(MultiBandGaussianKernel([0.25, 0.6]), tmp_path / "kernel.json", {"loss": "alignment"})
    for kernel in (tmp_path / "kernel.json", tmp_path):
        assert main(["demo", "--steps", "2", "--kernel", str(kernel), "--mmd-weight", "0.5",
                     "--out", str(tmp_path / "o"), "--quiet"]) == 0
        assert "held-out" in capsys.readouterr().out


@full
def test_shapes_smoke(tmp_path, capsys):
    assert main(["shapes", "--steps", "5", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "MMD^2" in out and (tmp_path / "demo_mmd.png").exists()


@full
def test_bench_runs_a_benchmark_script(capsys):
    assert main(["bench", "memory", "--n", "2000", "--neighbors", "20"]) == 0
    assert "MiB" in capsys.readouterr().out


@full
def test_calibrate_writes_into_the_out_folder_with_labelled_stages(tmp_path, capsys):
    pytest.importorskip("tqdm")
    from tg_rapidalign.apps.datasets import g2_molecules
    from tg_rapidalign.io import load_kernel

    assert main(["calibrate", "--steps", "2", "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert "calibrated" in captured.out
    for label in ("stage 1 of 3: scoring 15 single bandwidths", "stage 2 of 3: fitting the 4 bands",
                  "stage 3 of 3: fitting 3 bands around the best single"):
        assert label in captured.err
    assert sorted(os.listdir(tmp_path / "o")) == ["calibration.png", "kernel.json"]
    kernel, meta = load_kernel(tmp_path / "o" / "kernel.json", return_metadata=True)
    assert meta["loss"] == "cosine" and meta["data"]["structures"] == len(g2_molecules())
    assert meta["corruption"]["length"] == 0.5 and meta["node_type"] == "z"  # Å on the built-in molecules


@full
def test_calibrate_old_file_paths_and_npz_data(tmp_path, capsys):
    import numpy as np

    from tg_rapidalign.apps.datasets import g2_molecules
    from tg_rapidalign.io import load_kernel

    mols = g2_molecules(min_atoms=8)
    assert len(mols) > 20 and all(m.edge_index.size(1) > 0 for m in mols)
    pos = torch.cat([m.pos for m in mols[:4]]).numpy()
    batch = np.concatenate([np.full(len(m.pos), i) for i, m in enumerate(mols[:4])])
    np.savez(tmp_path / "mols.npz", pos=pos, batch=batch)
    out, plot = tmp_path / "k.json", tmp_path / "cal.png"
    with pytest.warns(DeprecationWarning):
        assert main(["calibrate", "--data", str(tmp_path / "mols.npz"), "--steps", "2", "--quiet",
                     "--corruption", "masking", "--out", str(out), "--plot", str(plot)]) == 0
    assert plot.exists() and "deprecated" in capsys.readouterr().err
    meta = load_kernel(out, return_metadata=True)[1]
    json.loads(out.read_text())
    assert meta["data"]["structures"] == 4 and meta["node_type"] is None  # one type (no z): no type kernel
