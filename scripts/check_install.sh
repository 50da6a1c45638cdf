#!/usr/bin/env bash
# Install-route check (run by `bash scripts/setup.sh test`; alone:
# `bash scripts/check_install.sh` inside the project's environment):
#  1. builds the sdist and, from it, the wheel as pip does by default
#     (`python -m build`: isolated, no torch, so a pure wheel that ships the C++
#     sources) and checks what they hold;
#  2. installs the wheel into a fresh virtual environment WITHOUT the system's
#     packages, holding only the core dependencies (torch==2.13.0 pinned);
#  3. imports it: the first import compiles the native extension into an empty
#     cache (TG_RAPIDALIGN_REQUIRE_EXT=1: it must), a second one loads it from
#     there; runs the quick start (examples/quick_start.py);
#  4. runs the fast test tier against the installed package with only the core
#     dependencies (tests needing an extra skip). CHECK_INSTALL_TESTS=0 skips it.
# Takes a few minutes (most of it compiling the extension once).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="${PYTHON:-python}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say() { echo "check_install: $*"; }
SECONDS=0

"$PY" -m pip install -q build
"$PY" -m build --sdist --wheel --outdir "$tmp/dist" . >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
sdist=$(ls "$tmp"/dist/*.tar.gz)
wheel=$(ls "$tmp"/dist/*.whl)
say "built $(basename "$sdist") and $(basename "$wheel") (${SECONDS}s)"
"$PY" - "$sdist" "$wheel" <<'PY'
import sys, tarfile, zipfile
sdist = tarfile.open(sys.argv[1]).getnames()
wheel = zipfile.ZipFile(sys.argv[2]).namelist()
need_sdist = ["csrc/extension.cpp", "csrc/ops/cpu/kernel_row_sums_kernel.cpp", "LICENSE", "CHANGELOG.md",
              "tg_rapidalign/py.typed", "tg_rapidalign/ops/native_build.py", "setup.py", "pyproject.toml"]
need_wheel = ["tg_rapidalign/csrc/extension.cpp", "tg_rapidalign/csrc/common/fast_exp.h",
              "tg_rapidalign/csrc/ops/cuda/kernel_row_sums_kernel.cu", "tg_rapidalign/py.typed",
              "tg_rapidalign/version.py"]
missing = [f for f in need_sdist if not any(n.endswith("/" + f) for n in sdist)]
missing += [f for f in need_wheel if f not in wheel]
missing += ["LICENSE in the wheel's metadata"] * (not any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel))
stray = [n for n in sdist + wheel if n.endswith((".so", ".pyd", ".o"))]
assert not missing and not stray, (missing, stray)
print("check_install: the sdist and the wheel hold the sources, licence and type marker, no binaries")
PY

"$PY" -m venv "$tmp/venv"  # no --system-site-packages: only what is installed below
V="$tmp/venv/bin/python"
"$V" -m pip install -q "$wheel" "torch==2.13.0"
"$V" -m pip list --format=freeze | grep -iE "^(scipy|ase|matplotlib|rdkit|torchmetrics|torch.cluster)==" \
    && { say "an optional package was installed with the core"; exit 1; }
say "fresh venv with the wheel and its core dependencies (${SECONDS}s)"

cd "$tmp"  # away from the checkout: the installed package is imported
export TG_RAPIDALIGN_CACHE_DIR="$tmp/cache" TG_RAPIDALIGN_REQUIRE_EXT=1
unset TG_RAPIDALIGN_NO_EXT
check='import tg_rapidalign, sys; from tg_rapidalign.ops import native
assert tg_rapidalign.__file__.startswith(sys.argv[1]), tg_rapidalign.__file__
assert native.AVAILABLE and native.ORIGIN.startswith(sys.argv[2]), native.ORIGIN
print("check_install:", tg_rapidalign.__version__, "native extension", native.ORIGIN)'
site=$("$V" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$V" -c "$check" "$site" "compiled on first import"
say "first import compiled the extension (${SECONDS}s)"
"$V" -c "$check" "$site" "compiled on first import" 2>"$tmp/err"
if grep -q "compiling" "$tmp/err"; then cat "$tmp/err"; say "the second import compiled again"; exit 1; fi
"$V" "$ROOT/examples/quick_start.py"
say "quick start ran (${SECONDS}s)"

if [ "${CHECK_INSTALL_TESTS:-1}" = "1" ]; then
    "$V" -m pip install -q "pytest>=7" "hypothesis>=6"
    # pytest, not python -m pytest: the checkout must not shadow the installed package.
    "$tmp/venv/bin/pytest" -q -p no:cacheprovider "$ROOT/tests" -x
    say "fast tier passed with the core dependencies only (${SECONDS}s)"
fi
say "ok (${SECONDS}s)"
