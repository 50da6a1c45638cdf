"""The examples run end to end (tiny settings) and write their plots."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.full  # each example runs in a subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("script,args", [
    ("drmmd_three_rings.py", ["--steps", "40", "--no-progress"]),
    ("drmmd_student_teacher.py", ["--steps", "20", "--student", "20"]),
    ("batch_correction.py", ["--samples", "400", "--train", "300", "--steps", "30"]),
    ("molecule_denoiser.py", ["--steps", "6", "--no-progress"]),
    ("gnn_autoencoder.py", ["--steps", "6", "--no-progress"]),
])
def test_example_runs_and_writes_its_plot(tmp_path, script, args):
    out = tmp_path / "plot.png"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.exists() and out.stat().st_size > 1000
    assert "plot written to" in proc.stdout
