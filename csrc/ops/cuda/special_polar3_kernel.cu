// CUDA kernel of special_polar3 (schema and checks: ops/special_polar3.cpp): one
// thread per 3 x 3 matrix (no cuSOLVER call, whose batched routines fail on very
// large batches).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/polar3.h"
#include "ops/special_polar3.h"

namespace tg_rapidalign {
namespace {

__global__ void special_polar3_kernel(const double* S, double* R, int64_t count) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b < count) special_polar3(S + 9 * b, R + 9 * b);
}

at::Tensor special_polar3_cuda(const at::Tensor& S_) {
  check_special_polar3(S_);
  const c10::cuda::CUDAGuard guard(S_.device());
  auto S = S_.to(at::kDouble).contiguous();
  auto R = at::empty_like(S);
  const int64_t count = S.size(0);
  if (count > 0) {
    const int threads = 128;
    const int64_t blocks = (count + threads - 1) / threads;
    special_polar3_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        S.data_ptr<double>(), R.data_ptr<double>(), count);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return R.to(S_.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(tg_rapidalign, CUDA, m) { m.impl("special_polar3", &special_polar3_cuda); }

}  // namespace tg_rapidalign
