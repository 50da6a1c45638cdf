// Fused kernel row sums on CPU: no pair list is ever formed. Forward and the
// a-side of the backward run over a points against a grid of b; the b-side of
// the backward runs over b points against a grid of a, so no two threads write
// the same row.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <mutex>
#include <tuple>
#include <vector>

#include "neighbours.h"

namespace tg_rapidalign {
namespace {

void check_inputs(const at::Tensor& a, const at::Tensor& b, const at::Tensor& cb) {
  TORCH_CHECK(a.dim() == 2 && a.size(1) == 3 && b.dim() == 2 && b.size(1) == 3,
              "kernel_row_sums: a and b must have shape [N, 3]");
  TORCH_CHECK(cb.dim() == 2 && cb.size(0) == b.size(0), "kernel_row_sums: cb must have shape [M, C]");
  TORCH_CHECK(a.scalar_type() == b.scalar_type() && a.scalar_type() == cb.scalar_type(),
              "kernel_row_sums: a, b and cb must share a dtype");
}

template <typename scalar_t>
scalar_t cut2(double r) {
  return r > 0 ? static_cast<scalar_t>(r * r) : std::numeric_limits<scalar_t>::infinity();
}

at::Tensor kernel_row_sums_cpu(const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& cb_,
                               const at::Tensor& batch_a_, const at::Tensor& batch_b_, const at::Tensor& sigmas,
                               const at::Tensor& coefs, double r, int64_t num_graphs) {
  check_inputs(a_, b_, cb_);
  auto a = a_.contiguous();
  auto batch_a = batch_a_.to(at::kLong).contiguous();
  const int64_t n = a.size(0), channels = cb_.size(1);
  auto out = at::zeros({n, channels}, a.options());
  if (n == 0 || b_.size(0) == 0 || channels == 0) return out;
  const Bands bands = make_bands(sigmas, coefs);
  GridParams p = make_grid_params(a, b_, r, num_graphs);
  SortedGrid grid = sort_by_cell(b_.contiguous(), batch_b_, p);
  auto cbs = cb_.index_select(0, grid.perm).contiguous();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "kernel_row_sums_cpu", [&] {
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const scalar_t* cp = cbs.data_ptr<scalar_t>();
    const int64_t* ba = batch_a.data_ptr<int64_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const scalar_t r2 = cut2<scalar_t>(r);
    at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
      std::vector<double> acc(channels);
      for (int64_t i = begin; i < end; ++i) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for_each_neighbour(ap + 3 * i, ba[i], grid, p, r2, [&](int64_t j, scalar_t d2) {
          double k = 0.0;
          for (int q = 0; q < bands.count; ++q) k += bands.coef[q] * std::exp(-double(d2) * bands.inv2[q]);
          const scalar_t* cj = cp + channels * j;
          for (int64_t c = 0; c < channels; ++c) acc[c] += k * double(cj[c]);
        });
        for (int64_t c = 0; c < channels; ++c) op[channels * i + c] = static_cast<scalar_t>(acc[c]);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> kernel_row_sums_backward_cpu(
    const at::Tensor& grad_, const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& cb_,
    const at::Tensor& batch_a_, const at::Tensor& batch_b_, const at::Tensor& sigmas, const at::Tensor& coefs,
    double r, int64_t num_graphs) {
  check_inputs(a_, b_, cb_);
  auto a = a_.contiguous(), b = b_.contiguous(), cb = cb_.contiguous(), grad = grad_.contiguous();
  auto batch_a = batch_a_.to(at::kLong).contiguous(), batch_b = batch_b_.to(at::kLong).contiguous();
  const int64_t n = a.size(0), m = b.size(0), channels = cb.size(1);
  auto grad_a = at::zeros_like(a), grad_b = at::zeros_like(b), grad_cb = at::zeros_like(cb);
  auto grad_sigmas = at::zeros_like(sigmas), grad_coefs = at::zeros_like(coefs);
  if (n == 0 || m == 0 || channels == 0) return {grad_a, grad_b, grad_cb, grad_sigmas, grad_coefs};
  const Bands bands = make_bands(sigmas, coefs);
  GridParams p = make_grid_params(a, b, r, num_graphs);
  std::vector<double> g_sig(bands.count, 0.0), g_coef(bands.count, 0.0);
  std::mutex merge;
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "kernel_row_sums_backward_cpu", [&] {
    const scalar_t r2 = cut2<scalar_t>(r);
    // a side: rows i against the grid of b.
    {
      SortedGrid grid = sort_by_cell(b, batch_b, p);
      auto cbs = cb.index_select(0, grid.perm).contiguous();
      const scalar_t* ap = a.data_ptr<scalar_t>();
      const scalar_t* bs = grid.pos.data_ptr<scalar_t>();
      const scalar_t* cp = cbs.data_ptr<scalar_t>();
      const scalar_t* gp = grad.data_ptr<scalar_t>();
      const int64_t* ba = batch_a.data_ptr<int64_t>();
      scalar_t* gap = grad_a.data_ptr<scalar_t>();
      at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
        double ls[kMaxBands] = {0}, lc[kMaxBands] = {0};
        for (int64_t i = begin; i < end; ++i) {
          const scalar_t* ai = ap + 3 * i;
          const scalar_t* gi = gp + channels * i;
          double ga[3] = {0, 0, 0};
          for_each_neighbour(ai, ba[i], grid, p, r2, [&](int64_t j, scalar_t d2) {
            const scalar_t* cj = cp + channels * j;
            double s = 0.0;
            for (int64_t c = 0; c < channels; ++c) s += double(gi[c]) * double(cj[c]);
            double slope = 0.0;  // sum_k coef_k e_k 2 inv2_k
            for (int q = 0; q < bands.count; ++q) {
              double e = std::exp(-double(d2) * bands.inv2[q]);
              slope += bands.coef[q] * e * 2.0 * bands.inv2[q];
              lc[q] += s * e;
              ls[q] += s * bands.coef[q] * e * double(d2) / (bands.sigma[q] * bands.sigma[q] * bands.sigma[q]);
            }
            const scalar_t* bj = bs + 3 * j;
            for (int d = 0; d < 3; ++d) ga[d] -= s * slope * (double(ai[d]) - double(bj[d]));
          });
          for (int d = 0; d < 3; ++d) gap[3 * i + d] = static_cast<scalar_t>(ga[d]);
        }
        std::lock_guard<std::mutex> lock(merge);
        for (int q = 0; q < bands.count; ++q) {
          g_sig[q] += ls[q];
          g_coef[q] += lc[q];
        }
      });
    }
    // b side: rows j against the grid of a.
    {
      SortedGrid grid = sort_by_cell(a, batch_a, p);
      auto gs = grad.index_select(0, grid.perm).contiguous();
      const scalar_t* bp = b.data_ptr<scalar_t>();
      const scalar_t* as = grid.pos.data_ptr<scalar_t>();
      const scalar_t* gsp = gs.data_ptr<scalar_t>();
      const scalar_t* cp = cb.data_ptr<scalar_t>();
      const int64_t* bb = batch_b.data_ptr<int64_t>();
      scalar_t* gbp = grad_b.data_ptr<scalar_t>();
      scalar_t* gcp = grad_cb.data_ptr<scalar_t>();
      at::parallel_for(0, m, 64, [&](int64_t begin, int64_t end) {
        std::vector<double> gc(channels);
        for (int64_t j = begin; j < end; ++j) {
          const scalar_t* bj = bp + 3 * j;
          const scalar_t* cj = cp + channels * j;
          std::fill(gc.begin(), gc.end(), 0.0);
          double gb[3] = {0, 0, 0};
          for_each_neighbour(bj, bb[j], grid, p, r2, [&](int64_t i, scalar_t d2) {
            const scalar_t* gi = gsp + channels * i;
            double k = 0.0, slope = 0.0, s = 0.0;
            for (int q = 0; q < bands.count; ++q) {
              double e = std::exp(-double(d2) * bands.inv2[q]);
              k += bands.coef[q] * e;
              slope += bands.coef[q] * e * 2.0 * bands.inv2[q];
            }
            for (int64_t c = 0; c < channels; ++c) {
              gc[c] += k * double(gi[c]);
              s += double(gi[c]) * double(cj[c]);
            }
            const scalar_t* ai = as + 3 * i;
            for (int d = 0; d < 3; ++d) gb[d] += s * slope * (double(ai[d]) - double(bj[d]));
          });
          for (int d = 0; d < 3; ++d) gbp[3 * j + d] = static_cast<scalar_t>(gb[d]);
          for (int64_t c = 0; c < channels; ++c) gcp[channels * j + c] = static_cast<scalar_t>(gc[c]);
        }
      });
    }
  });
  auto opts = at::TensorOptions().dtype(at::kDouble);
  grad_sigmas.copy_(at::tensor(g_sig, opts));
  grad_coefs.copy_(at::tensor(g_coef, opts));
  return {grad_a, grad_b, grad_cb, grad_sigmas, grad_coefs};
}

}  // namespace

TORCH_LIBRARY_IMPL(tg_rapidalign, CPU, m) {
  m.impl("kernel_row_sums", &kernel_row_sums_cpu);
  m.impl("kernel_row_sums_backward", &kernel_row_sums_backward_cpu);
}

}  // namespace tg_rapidalign
