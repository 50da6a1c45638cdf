// CPU kernel of kernel_row_sums_backward (schema and checks:
// ops/kernel_row_sums_backward.cpp). The a side (grad_a and the band gradients)
// runs over the a points against a grid of b, the b side (grad_b, grad_cb) over
// the b points against a grid of a, so no two threads write one row. One band
// with a specialised channel count (common/channels.h) on small graphs takes the
// fused per-graph tiles for the a side.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "ops/cpu/row_sums.h"
#include "ops/kernel_row_sums_backward.h"

namespace tg_rapidalign {
namespace cpu {
namespace {

// The a side of the one-band backward on per-graph tiles (see for_each_graph_tile):
// with s_j = grad_i . cb_j and e_j the kernel, five sums per query,
// sum s e, sum s e d2 and sum s e b_j, give grad_a, the bandwidth and the
// coefficient gradients. The last two are kept per graph and summed at the end.
template <typename scalar_t, int C>
void fused_graph_backward_a(const SortedSoA<scalar_t>& src, const SortedGrid& queries, const scalar_t* ap,
                            const scalar_t* gp, const Bands& bands, scalar_t r2, scalar_t* gap,
                            int64_t num_graphs, double& g_sigma, double& g_coef) {
  const scalar_t neg = static_cast<scalar_t>(-bands.inv2[0]);
  const double coef = bands.coef[0], sg = bands.sigma[0], cs = coef * 2 * bands.inv2[0];
  const int64_t* order = queries.perm.data_ptr<int64_t>();
  std::vector<double> per_graph(2 * num_graphs, 0.0);  // (sum s e, sum s e d2) per graph
  for_each_graph_tile(src, queries, C, num_graphs,
                      [&](int64_t g, scalar_t** cols, int64_t nbp, int64_t t0, int64_t t1) {
    const scalar_t *x = cols[0], *y = cols[1], *z = cols[2];
    const scalar_t *c0 = cols[3], *c1 = cols[3 + (C > 1 ? 1 : 0)], *c2 = cols[3 + (C > 2 ? 2 : 0)],
                   *c3 = cols[3 + (C > 3 ? 3 : 0)], *c4 = cols[3 + (C > 4 ? 4 : 0)];
    double lc = 0, ls = 0;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = order[t];
      const scalar_t* ai = ap + 3 * i;
      const scalar_t* gi = gp + C * i;
      const scalar_t qx = ai[0], qy = ai[1], qz = ai[2];
      const scalar_t g0 = gi[0], g1 = C > 1 ? gi[1] : 0, g2 = C > 2 ? gi[2] : 0, g3 = C > 3 ? gi[3] : 0,
                     g4 = C > 4 ? gi[4] : 0;
      scalar_t a0 = 0, a1 = 0, ax = 0, ay = 0, az = 0;
#pragma omp simd reduction(+ : a0, a1, ax, ay, az)
      for (int64_t j = 0; j < nbp; ++j) {
        const scalar_t dx = qx - x[j], dy = qy - y[j], dz = qz - z[j];
        const scalar_t d2 = dx * dx + dy * dy + dz * dz;
        const scalar_t e = d2 <= r2 ? fast_exp(d2 * neg) : scalar_t(0);
        scalar_t sj = g0 * c0[j];
        if (C > 1) sj += g1 * c1[j];
        if (C > 2) sj += g2 * c2[j];
        if (C > 3) sj += g3 * c3[j];
        if (C > 4) sj += g4 * c4[j];
        const scalar_t se = sj * e;
        a0 += se;
        a1 += se * d2;
        ax += se * x[j];
        ay += se * y[j];
        az += se * z[j];
      }
      lc += a0;
      ls += a1;
      gap[3 * i + 0] = static_cast<scalar_t>(cs * (double(ax) - double(a0) * double(qx)));
      gap[3 * i + 1] = static_cast<scalar_t>(cs * (double(ay) - double(a0) * double(qy)));
      gap[3 * i + 2] = static_cast<scalar_t>(cs * (double(az) - double(a0) * double(qz)));
    }
    per_graph[2 * g] = lc;
    per_graph[2 * g + 1] = ls;
  });
  for (int64_t g = 0; g < num_graphs; ++g) {
    g_coef += per_graph[2 * g];
    g_sigma += coef / (sg * sg * sg) * per_graph[2 * g + 1];
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> kernel_row_sums_backward_cpu(
    const at::Tensor& grad_, const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& cb_,
    const at::Tensor& batch_a_, const at::Tensor& batch_b_, const at::Tensor& sigmas, const at::Tensor& coefs,
    double cutoff, int64_t num_graphs, bool need_a, bool need_b) {
  check_kernel_row_sums_backward(grad_, a_, b_, cb_, batch_a_, batch_b_, sigmas, coefs, cutoff, num_graphs);
  auto a = a_.contiguous(), b = b_.contiguous(), cb = cb_.contiguous(), grad = grad_.contiguous();
  auto batch_a = batch_a_.to(at::kLong).contiguous(), batch_b = batch_b_.to(at::kLong).contiguous();
  const int64_t n = a.size(0), m = b.size(0), channels = cb.size(1);
  auto grad_a = at::zeros_like(a), grad_b = at::zeros_like(b), grad_cb = at::zeros_like(cb);
  auto grad_sigmas = at::zeros_like(sigmas), grad_coefs = at::zeros_like(coefs);
  if (n == 0 || m == 0 || channels == 0) return {grad_a, grad_b, grad_cb, grad_sigmas, grad_coefs};
  const Bands bands = make_bands(sigmas, coefs);
  const double r = bands.radius(cutoff);
  GridParams p = make_grid_params(a, batch_a, b, batch_b, r, num_graphs);
  std::vector<double> g_sig(bands.count, 0.0), g_coef(bands.count, 0.0);
  std::mutex merge;
  // Each side is a query set for one pass and the source grid of the other;
  // queries run in their own cell order (cache locality).
  SortedGrid grid_a = sort_by_cell(a, batch_a, p, num_graphs), grid_b = sort_by_cell(b, batch_b, p, num_graphs);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "kernel_row_sums_backward_cpu", [&] {
    const scalar_t r2 = cut2<scalar_t>(r);
    // a side: rows i against the grid of b (channels cb).
    if (need_a && fused_shape(bands, channels) && graph_tiles(p, num_graphs)) {
      SortedSoA<scalar_t> src(grid_b, cb);
      dispatch_channels(channels, [&](auto c) {
        constexpr int C = decltype(c)::value;
        if constexpr (C > 0) {
          fused_graph_backward_a<scalar_t, C>(src, grid_a, a.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                                              bands, r2, grad_a.data_ptr<scalar_t>(), num_graphs, g_sig[0],
                                              g_coef[0]);
        }
      });
    } else if (need_a) {
      SortedSoA<scalar_t> src(grid_b, cb);
      const int64_t* order = grid_a.perm.data_ptr<int64_t>();
      const scalar_t* ap = a.data_ptr<scalar_t>();
      const scalar_t* gp = grad.data_ptr<scalar_t>();
      const int64_t* ba = batch_a.data_ptr<int64_t>();
      scalar_t* gap = grad_a.data_ptr<scalar_t>();
      at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
        double ls[kMaxBands] = {0}, lc[kMaxBands] = {0};
        Block<scalar_t> blk;
        scalar_t s[kBlock];
        for (int64_t t = begin; t < end; ++t) {
          const int64_t i = order[t];
          const scalar_t* ai = ap + 3 * i;
          const scalar_t* gi = gp + channels * i;
          double ga[3] = {0, 0, 0};
          for_each_range(ai, ba[i], src.index, p, [&](int64_t s0, int64_t e0) {
            const int64_t len = e0 - s0;
            blk.distances(ai, src.pos, src.m, s0, len);
            // s_j = grad_i . cb_j
            std::fill(s, s + len, scalar_t(0));
            for (int64_t c = 0; c < channels; ++c) axpy(s, gi[c], src.chan + c * src.m + s0, len);
            std::fill(blk.slope, blk.slope + len, scalar_t(0));
            for (int q = 0; q < bands.count; ++q) {
              const double sg = bands.sigma[q];
              const auto sums = band_sums(blk, s, bands, q, r2, len);
              lc[q] += sums.first;
              ls[q] += bands.coef[q] / (sg * sg * sg) * sums.second;
            }
            // grad_a -= sum_j w_j (a_i - b_j), w = s * slope
            double m4[4];
            moments(s, blk.slope, src.pos + s0, src.m, len, m4);
            for (int d = 0; d < 3; ++d) ga[d] += m4[d + 1] - m4[0] * double(ai[d]);
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
    // b side: rows j against the grid of a (channels: the upstream gradient).
    if (need_b) {
      SortedSoA<scalar_t> src(grid_a, grad);
      const int64_t* order = grid_b.perm.data_ptr<int64_t>();
      const scalar_t* bp = b.data_ptr<scalar_t>();
      const scalar_t* cp = cb.data_ptr<scalar_t>();
      const int64_t* bb = batch_b.data_ptr<int64_t>();
      scalar_t* gbp = grad_b.data_ptr<scalar_t>();
      scalar_t* gcp = grad_cb.data_ptr<scalar_t>();
      at::parallel_for(0, m, 16, [&](int64_t begin, int64_t end) {
        std::vector<double> gc(channels);
        Block<scalar_t> blk;
        scalar_t s[kBlock];
        for (int64_t t = begin; t < end; ++t) {
          const int64_t j = order[t];
          const scalar_t* bj = bp + 3 * j;
          const scalar_t* cj = cp + channels * j;
          std::fill(gc.begin(), gc.end(), 0.0);
          double gb[3] = {0, 0, 0};
          for_each_range(bj, bb[j], src.index, p, [&](int64_t s0, int64_t e0) {
            const int64_t len = e0 - s0;
            blk.distances(bj, src.pos, src.m, s0, len);
            blk.kernel(bands, r2, len, true);
            std::fill(s, s + len, scalar_t(0));
            for (int64_t c = 0; c < channels; ++c) {
              const scalar_t* gg = src.chan + c * src.m + s0;
              gc[c] += dot(blk.k, gg, len);
              axpy(s, cj[c], gg, len);
            }
            // grad_b += sum_i w_i (a_i - b_j), w = s * slope
            double m4[4];
            moments(s, blk.slope, src.pos + s0, src.m, len, m4);
            for (int d = 0; d < 3; ++d) gb[d] += m4[d + 1] - m4[0] * double(bj[d]);
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

TORCH_LIBRARY_IMPL(tg_rapidalign, CPU, m) { m.impl("kernel_row_sums_backward", &kernel_row_sums_backward_cpu); }

}  // namespace cpu
}  // namespace tg_rapidalign
