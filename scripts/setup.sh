#!/usr/bin/env bash
# One-command set-up and run: `bash scripts/setup.sh demo` or `bash scripts/setup.sh test`
# (`test`: ruff, the CUDA build check, the docs site, the install-route check
# and the full test tier; extra arguments go to pytest).
# Creates .venv (seeing the system's packages, so a torch you already have is
# kept), installs torch==2.13.0 only if no torch is importable, then the package
# with its native extension (built against that torch: --no-build-isolation, so
# no other torch is ever fetched; without a C++ compiler it installs without it
# and warns once at import).
set -euo pipefail
cd "$(dirname "$0")/.."
task="${1:-test}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv --system-site-packages .venv
fi
. .venv/bin/activate
if ! python -c "import torch" >/dev/null 2>&1; then
    python -m pip install -q "torch==2.13.0"
fi
python -m pip install -q "setuptools>=77" wheel ninja
# The in-place build of this checkout runs on this machine only: compile it for
# this processor (wheels are portable by default; docs/backends_build.md).
# TG_RAPIDALIGN_NATIVE_ARCH=0 or TG_RAPIDALIGN_PORTABLE=1 builds it portable.
export TG_RAPIDALIGN_NATIVE_ARCH="${TG_RAPIDALIGN_NATIVE_ARCH:-1}"
case "$task" in
    demo)
        # The demo extra (ASE's molecules, scipy, tqdm, matplotlib); RDKit adds
        # the symmetry-aware RMSD column to the demo's table (optional).
        python -m pip install -q --no-build-isolation -e ".[demo,molecules]" \
            || python -m pip install -q --no-build-isolation -e ".[demo]"
        rapidalign demo "${@:2}"
        ;;
    test)
        python -m pip install -q --no-build-isolation -e ".[test,docs]"
        ruff check tg_rapidalign tests benchmarks examples setup.py docs
        bash scripts/check_cuda.sh
        # The documentation site, warnings as errors, its examples executed.
        TG_RAPIDALIGN_DOCS_NO_INSTALL=1 bash scripts/build_docs.sh -q
        # sdist + wheel, installed into a fresh core-only venv: the extension
        # compiles on first import, the quick start and the fast tier run there.
        bash scripts/check_install.sh
        # --full: every tier (a plain `python -m pytest -q` runs only the fast one;
        # see tests/conftest.py).
        python -m pytest -q --full "${@:2}"
        ;;
    *)
        echo "usage: bash scripts/setup.sh {demo|test} [args...]" >&2
        exit 2
        ;;
esac
