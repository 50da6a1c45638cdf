"""Test tiers.

``pytest`` runs the fast tier: pyproject's addopts deselect the tests marked
``full`` (``-m "not full"``) and hypothesis uses the "fast" profile (a few
examples per property). ``pytest --full`` runs the full tier, as CI does
(``bash scripts/setup.sh test``): every test, with the "thorough" profile (each
property test's own example count). ``pytest -m full --full`` runs only what the
fast tier leaves out; ``-m ""`` selects every test but keeps the fast profile.

Test modules that need an optional package (an extra, see
tg_rapidalign/extras.py) are skipped at collection where it is not installed,
so that the core's tests pass with only the core dependencies.

Shared helpers are in helpers.py, independent references in reference.py.
"""
import importlib.util
import os
import sys

import pytest
import torch
from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))

FAST_TIER = "not full"  # the -m expression pyproject's addopts set

# Property tests take @helpers.property_settings(n): n examples under "thorough"
# (the full tier), at most 5 under "fast" (the default tier).
settings.register_profile("fast", max_examples=5, deadline=None)
settings.register_profile("thorough", max_examples=100, deadline=None)


# Test module (relative to tests/) -> the optional packages it needs.
DEMO = ("scipy", "ase", "matplotlib", "tqdm")
NEEDS = {
    "test_cli.py": DEMO,
    "test_calibration.py": DEMO,
    "test_denoising.py": DEMO,
    "test_examples.py": DEMO,
}


class _SkippedModule(pytest.Module):
    """A test module whose optional packages are missing: reported as skipped."""

    missing = ()

    def collect(self):
        pytest.skip(f"needs the optional packages {', '.join(self.missing)} (tg_rapidalign[demo])",
                    allow_module_level=True)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    rel = os.path.relpath(str(module_path), os.path.dirname(__file__)).replace(os.sep, "/")
    missing = [m for m in NEEDS.get(rel, ()) if importlib.util.find_spec(m) is None]
    if missing:
        module = _SkippedModule.from_parent(parent, path=module_path)
        module.missing = tuple(missing)
        return module
    return None


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", default=False,
                     help="run the full tier: the tests marked 'full' as well (drops the default "
                          f"-m '{FAST_TIER}') and hypothesis' thorough profile")


def pytest_configure(config):
    full = config.getoption("--full")
    if full and config.option.markexpr == FAST_TIER:
        config.option.markexpr = ""  # an -m given on the command line is kept
    if not config.getoption("hypothesis_profile", None):  # --hypothesis-profile wins
        settings.load_profile("thorough" if full else "fast")


def pytest_report_header(config):
    tier = "full" if config.getoption("--full") else "fast (pytest --full runs every tier)"
    return f"tg_rapidalign test tier: {tier}; hypothesis max_examples cap {settings.default.max_examples}"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
