"""tg_rapidalign.extras: optional packages fail with the install line that fixes them."""
import pytest

from tg_rapidalign import extras


def test_require_imports_a_present_module():
    assert extras.require("math", "arithmetic").sqrt(4.0) == 2.0


def test_require_names_the_feature_and_the_extra():
    extras.EXTRAS["surely_not_installed_pkg"] = "plot"
    try:
        pattern = r"plotting needs .*surely_not_installed_pkg.*tg_rapidalign\[plot\]"
        with pytest.raises(ImportError, match=pattern):
            extras.require("surely_not_installed_pkg.sub", "plotting")
    finally:
        del extras.EXTRAS["surely_not_installed_pkg"]


def test_has():
    assert extras.has("math") and not extras.has("surely_not_installed_pkg")


def test_progress_disabled_returns_the_iterable_itself():
    items = [1, 2, 3]
    assert extras.progress(items, enabled=False) is items
    assert list(extras.progress(items, enabled=True, disable=True)) == items


def test_set_postfix_is_a_no_op_on_a_plain_iterable():
    items = [1, 2]
    extras.set_postfix(items, loss="1.0")  # no bar: nothing to update
    bar = extras.progress(items, enabled=True, disable=True)
    extras.set_postfix(bar, loss="1.0")
    assert list(bar) == items


LIGHT_CORE = r"""
import sys, torch_geometric  # a core dependency, which needs tqdm itself
BLOCKED = ("tqdm", "matplotlib", "scipy", "ase", "rdkit")
for name in BLOCKED:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]
    sys.modules[name] = None  # import name -> ImportError

import torch
import tg_rapidalign as tra
from tg_rapidalign import extras
from tg_rapidalign.apps.calibration import calibrate_kernel
from torch_geometric.data import Data

g = torch.Generator().manual_seed(0)
x = torch.randn(30, 3, generator=g, dtype=torch.float64)
y = x + 0.1 * torch.randn(30, 3, generator=g, dtype=torch.float64)
batch = torch.arange(30) // 10
assert tra.kernel_mmd(x, y, batch, batch, sigma=0.5).shape == (3,)
assert tra.kernel_cosine(x, y, batch, batch, sigma=0.5).shape == (3,)
assert tra.se3_kernel_alignment(x, y, batch, batch, sigma=0.5).loss.shape == (3,)
assert float(tra.drmmd(x, y, 0.5, 0.1)) >= 0
res = tra.DrMMDFlow(y, sigma=0.5, lam=0.1, record_every=2).run(x, 4, progress=True)
assert "w2" not in res.history and len(res.history["mmd2"]) == 3  # W2 needs scipy: not recorded
try:
    tra.exact_w2(x, y)
    raise SystemExit("exact_w2 ran without scipy")
except extras.MissingExtraError as err:
    assert 'tg_rapidalign[demo]' in str(err), err
chains = [Data(pos=torch.cumsum(torch.randn(12, 3, generator=g, dtype=torch.float64), 0)) for _ in range(4)]
rep = calibrate_kernel(chains, levels=[0, 0.5, 1.0], steps=2, progress=True)
assert rep.after.spearman == rep.after.spearman
for name in BLOCKED:
    assert sys.modules[name] is None, name  # nothing got around the block
print("light core ok")
"""


def test_the_core_works_without_the_optional_packages(tmp_path):
    """A fresh interpreter where tqdm, matplotlib, scipy, ase and RDKit cannot be
    imported: the package imports and its core ops, the flows (progress on) and
    the calibration (progress on) run; what needs an extra names it."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-c", LIGHT_CORE], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "light core ok" in res.stdout
