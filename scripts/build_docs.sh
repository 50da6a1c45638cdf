#!/usr/bin/env bash
# Builds the documentation site into docs/_build/html with the project's python.
# Warnings are errors (-W, with --keep-going to report all of them), and every
# `exec-code` example of the guides runs during the build: a failing example
# fails the build. Assumes the package is installed (or on PYTHONPATH); installs
# docs/requirements.txt unless TG_RAPIDALIGN_DOCS_NO_INSTALL=1.
# Usage: bash scripts/build_docs.sh [extra sphinx-build options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if [ "${TG_RAPIDALIGN_DOCS_NO_INSTALL:-0}" != "1" ]; then
    "$PY" -m pip install -q -r docs/requirements.txt
fi
"$PY" -c "import tg_rapidalign" || { echo "build_docs.sh: tg_rapidalign is not importable" >&2; exit 1; }
rm -rf docs/_build/html docs/_build/doctrees
exec "$PY" -m sphinx -W --keep-going -b html "$@" docs docs/_build/html
