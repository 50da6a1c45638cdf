#!/usr/bin/env bash
# On a CUDA machine (used through the device tool, where python3 holds a CUDA
# torch): build the extension with its CUDA kernels in place, then run the given
# stages. Logs go to $OUT (or ./outputs). Stages: tests (the CUDA test files),
# suite (the whole test suite), bench (GPU benchmarks).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-outputs}"; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"
export MAX_JOBS="${MAX_JOBS:-16}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" TG_RAPIDALIGN_REQUIRE_EXT=1
start=$(date +%s)
python3 setup.py -q build_ext --inplace >"$OUT/build.log" 2>&1 || { tail -60 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
python3 -c "from tg_rapidalign.ops import native; import torch; print('cuda kernels:', native.has_kernel('kernel_row_sums', torch.device('cuda')))"
for stage in "$@"; do
    case "$stage" in
        tests) python3 -m pytest -q -p no:cacheprovider tests/ops/test_native_cuda.py tests/test_distributions_cuda.py \
                   2>&1 | tee "$OUT/tests.log" | tail -40 ;;
        suite) OMP_NUM_THREADS=1 python3 -m pytest -q -p no:cacheprovider -x -n 12 2>&1 | tee "$OUT/suite.log" | tail -30 ;;
        bench) python3 benchmarks/bench_mmd.py --device cuda --sigma 0.01 --sizes 100000 1000000 2>&1 | tee "$OUT/bench_mmd.log"
               python3 benchmarks/bench_alignment.py --device cuda --graphs 100000 2>&1 | tee "$OUT/bench_alignment.log" ;;
        *) echo "unknown stage $stage"; exit 2 ;;
    esac
done
