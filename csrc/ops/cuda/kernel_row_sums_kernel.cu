// CUDA kernel of kernel_row_sums (schema and checks: ops/kernel_row_sums.cpp):
// one thread per row of a, against a grid of b (see row_sums.cuh). Graph ids are
// not scanned here (that would synchronise with the host): rows with ids
// outside [0, num_graphs) get zero sums, never an out-of-bounds read
// (common/grid.h).
#include <ATen/AccumulateType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops/cuda/row_sums.cuh"
#include "ops/kernel_row_sums.h"

namespace tg_rapidalign {
namespace cuda {
namespace {

template <typename scalar_t, typename acc_t, int NC, int NB>
struct RowSum {
  const scalar_t* cbs;  // [M, C] channels in sorted order
  int64_t channels;
  scalar_t* out;  // the row's output
  DeviceBands<acc_t, NB> bands;
  ChannelAcc<acc_t, NC> acc;
  __device__ void operator()(int64_t j, scalar_t d2) {
    acc_t k = 0;
    for (int q = 0; q < bands.n(); ++q) k += bands.coef[q] * exp(-acc_t(d2) * bands.inv2[q]);
    if constexpr (NC > 0) {
      for (int c = 0; c < NC; ++c) acc.v[c] += k * acc_t(cbs[NC * j + c]);
    } else {
      for (int64_t c = 0; c < channels; ++c) out[c] += static_cast<scalar_t>(k * acc_t(cbs[channels * j + c]));
    }
  }
  __device__ void finish() {
    if constexpr (NC > 0) {
      for (int c = 0; c < NC; ++c) out[c] = static_cast<scalar_t>(acc.v[c]);
    }
  }
};

// as, ga, perm_a: the rows in cell order, their graph ids and input indices.
template <typename scalar_t, int NC, int NB>
__global__ void forward_kernel(const scalar_t* as, const int64_t* ga, const int64_t* perm_a, int64_t n,
                               CellIndex index, const scalar_t* bs, const scalar_t* cbs, int64_t channels,
                               GridParams p, Bands bands, scalar_t r2, scalar_t* out) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t t = thread_index();
  if (t >= n) return;
  RowSum<scalar_t, acc_t, NC, NB> f{cbs, channels, out + channels * perm_a[t], DeviceBands<acc_t, NB>(bands), {}};
  visit_neighbors(as + 3 * t, ga[t], index, bs, p, r2, f);
  f.finish();
}

at::Tensor kernel_row_sums_cuda(const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& cb_,
                                const at::Tensor& batch_a_, const at::Tensor& batch_b_, const at::Tensor& sigmas,
                                const at::Tensor& coefs, double cutoff, int64_t num_graphs) {
  check_kernel_row_sums(a_, b_, cb_, batch_a_, batch_b_, sigmas, coefs, cutoff, num_graphs);
  c10::cuda::CUDAGuard guard(a_.device());
  auto a = a_.contiguous(), b = b_.contiguous();
  auto batch_a = batch_a_.to(at::kLong).contiguous(), batch_b = batch_b_.to(at::kLong).contiguous();
  const int64_t n = a.size(0), channels = cb_.size(1);
  auto out = at::zeros({n, channels}, a.options());
  if (n == 0 || b.size(0) == 0 || channels == 0) return out;
  const Bands bands = make_bands(sigmas, coefs);
  const double r = bands.radius(cutoff);
  GridParams p = make_grid_params(a, batch_a, b, batch_b, r, num_graphs);
  SortedSet rows(a, batch_a, p, num_graphs);
  SortedGrid grid = sort_by_cell(b, batch_b, p, num_graphs);
  auto cbs = cb_.index_select(0, grid.perm).contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "kernel_row_sums_cuda", [&] {
    dispatch_shape(channels, bands.count, [&](auto nc, auto nb) {
      forward_kernel<scalar_t, decltype(nc)::value, decltype(nb)::value><<<blocks_for(n), kThreads, 0, stream>>>(
          rows.grid.pos.data_ptr<scalar_t>(), rows.graph.data_ptr<int64_t>(), rows.grid.perm.data_ptr<int64_t>(),
          n, cell_index(grid), grid.pos.data_ptr<scalar_t>(), cbs.data_ptr<scalar_t>(), channels, p, bands,
          cut2<scalar_t>(r), out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tg_rapidalign, CUDA, m) { m.impl("kernel_row_sums", &kernel_row_sums_cuda); }

}  // namespace cuda
}  // namespace tg_rapidalign
