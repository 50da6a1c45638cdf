// Fused kernel row sums on CUDA: one thread per row (a point for the forward
// and the a-side of the backward, b point for the b-side), so rows need no
// atomics; the bandwidth and mixture gradients are reduced per thread, then
// added atomically once per thread.
#include <ATen/AccumulateType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "neighbours.cuh"

namespace tg_rapidalign {
namespace {

template <typename scalar_t, typename acc_t>
struct RowSum {
  const scalar_t* cb;
  int64_t channels;
  scalar_t* out;
  Bands bands;
  __device__ void operator()(int64_t j, scalar_t d2) {
    acc_t k = 0;
    for (int q = 0; q < bands.count; ++q) k += acc_t(bands.coef[q]) * exp(-acc_t(d2) * acc_t(bands.inv2[q]));
    for (int64_t c = 0; c < channels; ++c) out[c] += static_cast<scalar_t>(k * acc_t(cb[channels * j + c]));
  }
};

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* a, const int64_t* ba, int64_t n, CellIndex index, const scalar_t* bs,
                               const scalar_t* cbs, int64_t channels, GridParams p, Bands bands, scalar_t r2,
                               scalar_t* out) {
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  RowSum<scalar_t, acc_t> f{cbs, channels, out + channels * i, bands};
  visit_neighbours(a + 3 * i, ba[i], index, bs, p, r2, f);
}

// a side of the backward: grad_a[i] and the per-thread bandwidth / mixture sums.
template <typename scalar_t, typename acc_t>
struct ASide {
  const scalar_t *ai, *gi, *bs, *cbs;
  int64_t channels;
  Bands bands;
  acc_t ga[3];
  acc_t gsig[kMaxBands];
  acc_t gcoef[kMaxBands];
  __device__ void operator()(int64_t j, scalar_t d2) {
    acc_t s = 0;
    for (int64_t c = 0; c < channels; ++c) s += acc_t(gi[c]) * acc_t(cbs[channels * j + c]);
    acc_t slope = 0;
    for (int q = 0; q < bands.count; ++q) {
      acc_t e = exp(-acc_t(d2) * acc_t(bands.inv2[q]));
      acc_t sg = acc_t(bands.sigma[q]);
      slope += acc_t(bands.coef[q]) * e * acc_t(2 * bands.inv2[q]);
      gcoef[q] += s * e;
      gsig[q] += s * acc_t(bands.coef[q]) * e * acc_t(d2) / (sg * sg * sg);
    }
    for (int d = 0; d < 3; ++d) ga[d] -= s * slope * (acc_t(ai[d]) - acc_t(bs[3 * j + d]));
  }
};

template <typename scalar_t, typename acc_t>
__global__ void backward_a_kernel(const scalar_t* a, const scalar_t* grad, const int64_t* ba, int64_t n,
                                  CellIndex index, const scalar_t* bs, const scalar_t* cbs, int64_t channels,
                                  GridParams p, Bands bands, scalar_t r2, scalar_t* grad_a, double* band_grads) {
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  ASide<scalar_t, acc_t> f{a + 3 * i, grad + channels * i, bs, cbs, channels, bands, {0, 0, 0}, {0}, {0}};
  visit_neighbours(a + 3 * i, ba[i], index, bs, p, r2, f);
  for (int d = 0; d < 3; ++d) grad_a[3 * i + d] = static_cast<scalar_t>(f.ga[d]);
  for (int q = 0; q < bands.count; ++q) {
    atomicAdd(band_grads + q, static_cast<double>(f.gsig[q]));
    atomicAdd(band_grads + kMaxBands + q, static_cast<double>(f.gcoef[q]));
  }
}

// b side of the backward: grad_b[j] and grad_cb[j] against the grid of a.
template <typename scalar_t, typename acc_t>
struct BSide {
  const scalar_t *bj, *cj, *as, *gs;
  int64_t channels;
  Bands bands;
  scalar_t* gcb;
  acc_t gb[3];
  __device__ void operator()(int64_t i, scalar_t d2) {
    acc_t k = 0, slope = 0, s = 0;
    for (int q = 0; q < bands.count; ++q) {
      acc_t e = exp(-acc_t(d2) * acc_t(bands.inv2[q]));
      k += acc_t(bands.coef[q]) * e;
      slope += acc_t(bands.coef[q]) * e * acc_t(2 * bands.inv2[q]);
    }
    for (int64_t c = 0; c < channels; ++c) {
      acc_t g = acc_t(gs[channels * i + c]);
      gcb[c] += static_cast<scalar_t>(k * g);
      s += g * acc_t(cj[c]);
    }
    for (int d = 0; d < 3; ++d) gb[d] += s * slope * (acc_t(as[3 * i + d]) - acc_t(bj[d]));
  }
};

template <typename scalar_t, typename acc_t>
__global__ void backward_b_kernel(const scalar_t* b, const scalar_t* cb, const int64_t* bb, int64_t m,
                                  CellIndex index, const scalar_t* as, const scalar_t* gs, int64_t channels,
                                  GridParams p, Bands bands, scalar_t r2, scalar_t* grad_b, scalar_t* grad_cb) {
  int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= m) return;
  BSide<scalar_t, acc_t> f{b + 3 * j, cb + channels * j, as, gs, channels, bands, grad_cb + channels * j,
                           {0, 0, 0}};
  visit_neighbours(b + 3 * j, bb[j], index, as, p, r2, f);
  for (int d = 0; d < 3; ++d) grad_b[3 * j + d] = static_cast<scalar_t>(f.gb[d]);
}

at::Tensor kernel_row_sums_cuda(const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& cb_,
                                const at::Tensor& batch_a_, const at::Tensor& batch_b_, const at::Tensor& sigmas,
                                const at::Tensor& coefs, double r, int64_t num_graphs) {
  check_row_sums_inputs(a_, b_, cb_);
  c10::cuda::CUDAGuard guard(a_.device());
  auto a = a_.contiguous();
  auto batch_a = batch_a_.to(at::kLong).contiguous();
  const int64_t n = a.size(0), channels = cb_.size(1);
  auto out = at::zeros({n, channels}, a.options());
  if (n == 0 || b_.size(0) == 0 || channels == 0) return out;
  const Bands bands = make_bands(sigmas, coefs);
  GridParams p = make_grid_params(a, batch_a, b_, batch_b_, r, num_graphs);
  SortedGrid grid = sort_by_cell(b_.contiguous(), batch_b_, p, num_graphs);
  auto cbs = cb_.index_select(0, grid.perm).contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "kernel_row_sums_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    forward_kernel<scalar_t, acc_t><<<blocks_for(n), kThreads, 0, stream>>>(
        a.data_ptr<scalar_t>(), batch_a.data_ptr<int64_t>(), n, cell_index(grid), grid.pos.data_ptr<scalar_t>(),
        cbs.data_ptr<scalar_t>(), channels, p, bands, cut2<scalar_t>(r), out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> kernel_row_sums_backward_cuda(
    const at::Tensor& grad_, const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& cb_,
    const at::Tensor& batch_a_, const at::Tensor& batch_b_, const at::Tensor& sigmas, const at::Tensor& coefs,
    double r, int64_t num_graphs, bool need_a, bool need_b) {
  check_row_sums_inputs(a_, b_, cb_);
  c10::cuda::CUDAGuard guard(a_.device());
  auto a = a_.contiguous(), b = b_.contiguous(), cb = cb_.contiguous(), grad = grad_.contiguous();
  auto batch_a = batch_a_.to(at::kLong).contiguous(), batch_b = batch_b_.to(at::kLong).contiguous();
  const int64_t n = a.size(0), m = b.size(0), channels = cb.size(1);
  auto grad_a = at::zeros_like(a), grad_b = at::zeros_like(b), grad_cb = at::zeros_like(cb);
  auto band_grads = at::zeros({2 * kMaxBands}, a.options().dtype(at::kDouble));
  if (n > 0 && m > 0 && channels > 0) {
    const Bands bands = make_bands(sigmas, coefs);
    GridParams p = make_grid_params(a, batch_a, b, batch_b, r, num_graphs);
    SortedGrid grid_b = sort_by_cell(b, batch_b, p, num_graphs);
    SortedGrid grid_a = sort_by_cell(a, batch_a, p, num_graphs);
    auto cbs = cb.index_select(0, grid_b.perm).contiguous();
    auto gs = grad.index_select(0, grid_a.perm).contiguous();
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "kernel_row_sums_backward_cuda", [&] {
      using acc_t = at::acc_type<scalar_t, true>;
      const scalar_t r2 = cut2<scalar_t>(r);
      if (need_a) backward_a_kernel<scalar_t, acc_t><<<blocks_for(n), kThreads, 0, stream>>>(
          a.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), batch_a.data_ptr<int64_t>(), n, cell_index(grid_b),
          grid_b.pos.data_ptr<scalar_t>(), cbs.data_ptr<scalar_t>(), channels, p, bands, r2,
          grad_a.data_ptr<scalar_t>(), band_grads.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (need_b) backward_b_kernel<scalar_t, acc_t><<<blocks_for(m), kThreads, 0, stream>>>(
          b.data_ptr<scalar_t>(), cb.data_ptr<scalar_t>(), batch_b.data_ptr<int64_t>(), m, cell_index(grid_a),
          grid_a.pos.data_ptr<scalar_t>(), gs.data_ptr<scalar_t>(), channels, p, bands, r2,
          grad_b.data_ptr<scalar_t>(), grad_cb.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const int64_t k = sigmas.numel();
  auto grad_sigmas = band_grads.narrow(0, 0, k).to(sigmas.options());
  auto grad_coefs = band_grads.narrow(0, kMaxBands, k).to(coefs.options());
  return {grad_a, grad_b, grad_cb, grad_sigmas, grad_coefs};
}

}  // namespace

TORCH_LIBRARY_IMPL(tg_rapidalign, CUDA, m) {
  m.impl("kernel_row_sums", &kernel_row_sums_cuda);
  m.impl("kernel_row_sums_backward", &kernel_row_sums_backward_cuda);
}

}  // namespace tg_rapidalign
