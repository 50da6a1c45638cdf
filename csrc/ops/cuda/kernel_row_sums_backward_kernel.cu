// CUDA kernel of kernel_row_sums_backward (schema and checks:
// ops/kernel_row_sums_backward.cpp): the a side (grad_a, band gradients) one
// thread per a point against a grid of b, the b side (grad_b, grad_cb) one
// thread per b point against a grid of a (see row_sums.cuh). The bandwidth and
// mixture gradients are reduced per warp by shuffles, then added atomically.
// Points with graph ids outside [0, num_graphs) (not scanned on CUDA) get zero
// gradients, never an out-of-bounds read (common/grid.h).
#include <ATen/AccumulateType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "ops/cuda/row_sums.cuh"
#include "ops/kernel_row_sums_backward.h"

namespace tg_rapidalign {
namespace cuda {
namespace {

// a side of the backward: grad_a[i] and the per-thread bandwidth / mixture sums.
template <typename scalar_t, typename acc_t, int NC, int NB>
struct ASide {
  const scalar_t *ai, *bs, *cbs;
  int64_t channels;
  DeviceBands<acc_t, NB> bands;
  ChannelAcc<acc_t, NC> gi;  // the row's incoming gradient (NC > 0)
  const scalar_t* gi_mem;    // ... or in memory (NC == 0)
  acc_t ga[3] = {0, 0, 0};
  acc_t gsig[DeviceBands<acc_t, NB>::kCap];
  acc_t gcoef[DeviceBands<acc_t, NB>::kCap];

  __device__ void operator()(int64_t j, scalar_t d2) {
    acc_t s = 0;
    if constexpr (NC > 0) {
      for (int c = 0; c < NC; ++c) s += gi.v[c] * acc_t(cbs[NC * j + c]);
    } else {
      for (int64_t c = 0; c < channels; ++c) s += acc_t(gi_mem[c]) * acc_t(cbs[channels * j + c]);
    }
    acc_t slope = 0;
    for (int q = 0; q < bands.n(); ++q) {
      const acc_t e = exp(-acc_t(d2) * bands.inv2[q]);
      const acc_t ce = bands.coef[q] * e;
      slope += ce * (2 * bands.inv2[q]);
      gcoef[q] += s * e;
      gsig[q] += s * ce * acc_t(d2) * bands.inv_s3[q];
    }
    for (int d = 0; d < 3; ++d) ga[d] -= s * slope * (acc_t(ai[d]) - acc_t(bs[3 * j + d]));
  }
};

template <typename scalar_t, int NC, int NB>
__global__ void backward_a_kernel(const scalar_t* as, const int64_t* ga_ids, const int64_t* perm_a,
                                  const scalar_t* grad, int64_t n, CellIndex index, const scalar_t* bs,
                                  const scalar_t* cbs, int64_t channels, GridParams p, Bands bands, scalar_t r2,
                                  scalar_t* grad_a, double* band_grads) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t t = thread_index();
  const bool active = t < n;  // every lane takes part in the warp reductions below
  const int64_t i = active ? perm_a[t] : 0;
  ASide<scalar_t, acc_t, NC, NB> f{as + 3 * (active ? t : 0), bs, cbs, channels, DeviceBands<acc_t, NB>(bands),
                                   {}, grad + channels * i};
  for (int q = 0; q < f.bands.n(); ++q) f.gsig[q] = f.gcoef[q] = acc_t(0);
  if (active) {
    if constexpr (NC > 0) {
      for (int c = 0; c < NC; ++c) f.gi.v[c] = acc_t(grad[NC * i + c]);
    }
    visit_neighbors(f.ai, ga_ids[t], index, bs, p, r2, f);
    for (int d = 0; d < 3; ++d) grad_a[3 * i + d] = static_cast<scalar_t>(f.ga[d]);
  }
  const bool lead = (threadIdx.x & 31) == 0;
  for (int q = 0; q < f.bands.n(); ++q) {
    const double gs = warp_sum(static_cast<double>(f.gsig[q]));
    const double gc = warp_sum(static_cast<double>(f.gcoef[q]));
    if (lead) {
      atomicAdd(band_grads + q, gs);
      atomicAdd(band_grads + kMaxBands + q, gc);
    }
  }
}

// b side of the backward: grad_b[j] and grad_cb[j] against the grid of a.
template <typename scalar_t, typename acc_t, int NC, int NB>
struct BSide {
  const scalar_t *bj, *cj, *as, *gs;  // gs: the incoming gradient rows in a's cell order
  int64_t channels;
  DeviceBands<acc_t, NB> bands;
  scalar_t* gcb_mem;
  ChannelAcc<acc_t, NC> gcb, cjv;
  acc_t gb[3] = {0, 0, 0};

  __device__ void operator()(int64_t i, scalar_t d2) {
    acc_t k = 0, slope = 0, s = 0;
    for (int q = 0; q < bands.n(); ++q) {
      const acc_t ce = bands.coef[q] * exp(-acc_t(d2) * bands.inv2[q]);
      k += ce;
      slope += ce * (2 * bands.inv2[q]);
    }
    if constexpr (NC > 0) {
      for (int c = 0; c < NC; ++c) {
        const acc_t g = acc_t(gs[NC * i + c]);
        gcb.v[c] += k * g;
        s += g * cjv.v[c];
      }
    } else {
      for (int64_t c = 0; c < channels; ++c) {
        const acc_t g = acc_t(gs[channels * i + c]);
        gcb_mem[c] += static_cast<scalar_t>(k * g);
        s += g * acc_t(cj[c]);
      }
    }
    for (int d = 0; d < 3; ++d) gb[d] += s * slope * (acc_t(as[3 * i + d]) - acc_t(bj[d]));
  }
};

// bs, gb_ids, perm_b: the b points in cell order, their graph ids and input indices.
template <typename scalar_t, int NC, int NB>
__global__ void backward_b_kernel(const scalar_t* bs, const int64_t* gb_ids, const int64_t* perm_b,
                                  const scalar_t* cb, int64_t m, CellIndex index, const scalar_t* as,
                                  const scalar_t* gs, int64_t channels, GridParams p, Bands bands, scalar_t r2,
                                  scalar_t* grad_b, scalar_t* grad_cb) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t t = thread_index();
  if (t >= m) return;
  const int64_t j = perm_b[t];
  BSide<scalar_t, acc_t, NC, NB> f{bs + 3 * t, cb + channels * j, as, gs, channels,
                                   DeviceBands<acc_t, NB>(bands), grad_cb + channels * j, {}, {}};
  if constexpr (NC > 0) {
    for (int c = 0; c < NC; ++c) f.cjv.v[c] = acc_t(cb[NC * j + c]);
  }
  visit_neighbors(f.bj, gb_ids[t], index, as, p, r2, f);
  for (int d = 0; d < 3; ++d) grad_b[3 * j + d] = static_cast<scalar_t>(f.gb[d]);
  if constexpr (NC > 0) {
    for (int c = 0; c < NC; ++c) grad_cb[NC * j + c] = static_cast<scalar_t>(f.gcb.v[c]);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> kernel_row_sums_backward_cuda(
    const at::Tensor& grad_, const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& cb_,
    const at::Tensor& batch_a_, const at::Tensor& batch_b_, const at::Tensor& sigmas, const at::Tensor& coefs,
    double cutoff, int64_t num_graphs, bool need_a, bool need_b) {
  check_kernel_row_sums_backward(grad_, a_, b_, cb_, batch_a_, batch_b_, sigmas, coefs, cutoff, num_graphs);
  c10::cuda::CUDAGuard guard(a_.device());
  auto a = a_.contiguous(), b = b_.contiguous(), cb = cb_.contiguous(), grad = grad_.contiguous();
  auto batch_a = batch_a_.to(at::kLong).contiguous(), batch_b = batch_b_.to(at::kLong).contiguous();
  const int64_t n = a.size(0), m = b.size(0), channels = cb.size(1);
  auto grad_a = at::zeros_like(a), grad_b = at::zeros_like(b), grad_cb = at::zeros_like(cb);
  auto band_grads = at::zeros({2 * kMaxBands}, a.options().dtype(at::kDouble));
  if (n > 0 && m > 0 && channels > 0 && (need_a || need_b)) {
    const Bands bands = make_bands(sigmas, coefs);
    const double r = bands.radius(cutoff);
    GridParams p = make_grid_params(a, batch_a, b, batch_b, r, num_graphs);
    SortedSet sa(a, batch_a, p, num_graphs), sb(b, batch_b, p, num_graphs);
    auto cbs = cb.index_select(0, sb.grid.perm).contiguous();
    auto gs = grad.index_select(0, sa.grid.perm).contiguous();
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "kernel_row_sums_backward_cuda", [&] {
      const scalar_t r2 = cut2<scalar_t>(r);
      dispatch_shape(channels, bands.count, [&](auto nc, auto nb) {
        constexpr int NC = decltype(nc)::value, NB = decltype(nb)::value;
        if (need_a) {
          backward_a_kernel<scalar_t, NC, NB><<<blocks_for(n), kThreads, 0, stream>>>(
              sa.grid.pos.data_ptr<scalar_t>(), sa.graph.data_ptr<int64_t>(), sa.grid.perm.data_ptr<int64_t>(),
              grad.data_ptr<scalar_t>(), n, cell_index(sb.grid), sb.grid.pos.data_ptr<scalar_t>(),
              cbs.data_ptr<scalar_t>(), channels, p, bands, r2, grad_a.data_ptr<scalar_t>(),
              band_grads.data_ptr<double>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
        if (need_b) {
          backward_b_kernel<scalar_t, NC, NB><<<blocks_for(m), kThreads, 0, stream>>>(
              sb.grid.pos.data_ptr<scalar_t>(), sb.graph.data_ptr<int64_t>(), sb.grid.perm.data_ptr<int64_t>(),
              cb.data_ptr<scalar_t>(), m, cell_index(sa.grid), sa.grid.pos.data_ptr<scalar_t>(),
              gs.data_ptr<scalar_t>(), channels, p, bands, r2, grad_b.data_ptr<scalar_t>(),
              grad_cb.data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      });
    });
  }
  const int64_t k = sigmas.numel();
  auto grad_sigmas = band_grads.narrow(0, 0, k).to(sigmas.options(), false, /*copy=*/true);
  auto grad_coefs = band_grads.narrow(0, kMaxBands, k).to(coefs.options(), false, /*copy=*/true);
  return {grad_a, grad_b, grad_cb, grad_sigmas, grad_coefs};
}

}  // namespace

TORCH_LIBRARY_IMPL(tg_rapidalign, CUDA, m) {
  m.impl("kernel_row_sums_backward", &kernel_row_sums_backward_cuda);
}

}  // namespace cuda
}  // namespace tg_rapidalign
