"""Test tiers.

``pytest`` runs the fast tier: pyproject's addopts deselect the tests marked
``full`` (``-m "not full"``) and hypothesis uses the "fast" profile (a few
examples per property). ``pytest --full`` runs the full tier, as CI does
(``bash scripts/setup.sh test``): every test, with the "thorough" profile (each
property test's own example count). ``pytest -m full --full`` runs only what the
fast tier leaves out; ``-m ""`` selects every test but keeps the fast profile.

Shared helpers are in helpers.py, independent references in reference.py.
"""
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
