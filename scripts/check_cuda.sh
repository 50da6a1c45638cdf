#!/usr/bin/env bash
# Compile check of the CUDA kernels: every csrc/ops/cuda/*.cu to an object file
# with nvcc against the installed torch's headers, with setup.py's nvcc flags
# (nothing CUDA runs). Skips cleanly where nvcc is absent. Run inside the
# project's environment.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-$(command -v nvcc || true)}"
if [ -z "$NVCC" ]; then
    echo "check_cuda: nvcc not found; skipping the CUDA compile check"
    exit 0
fi
includes=$(python - <<'PY'
import sysconfig
import torch.utils.cpp_extension as ext
print(" ".join(f"-I{p}" for p in ext.include_paths() + [sysconfig.get_paths()["include"], "csrc"]))
PY
)
abi=$(python -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# A CPU-only torch ships the c10/cuda headers but not the one CMake generates;
# its whole content in a CUDA build is this define.
if ! python -c "import torch.utils.cpp_extension as e, os, sys; sys.exit(not any(os.path.exists(os.path.join(p, 'c10/cuda/impl/cuda_cmake_macros.h')) for p in e.include_paths()))"; then
    mkdir -p "$out/stub/c10/cuda/impl"
    printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$out/stub/c10/cuda/impl/cuda_cmake_macros.h"
    includes="$includes -I$out/stub"
fi
shopt -s nullglob
sources=(csrc/ops/cuda/*.cu)
if [ ${#sources[@]} -eq 0 ]; then
    echo "check_cuda: no CUDA sources found under csrc/ops/cuda" >&2
    exit 1
fi
for src in "${sources[@]}"; do
    # --fmad=false and WITH_CUDA as in setup.py's CUDA build.
    if ! "$NVCC" -std=c++20 -O2 --fmad=false -DWITH_CUDA -c "$src" -o "$out/$(basename "$src").o" $includes \
            -D_GLIBCXX_USE_CXX11_ABI="$abi" -Xcompiler -fPIC --expt-relaxed-constexpr >"$out/log" 2>&1; then
        cat "$out/log"
        echo "check_cuda: FAILED to compile $src" >&2
        exit 1
    fi
    echo "check_cuda: compiled $src"
done
