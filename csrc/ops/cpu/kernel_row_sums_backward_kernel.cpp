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

// Per-query rows [n, C] (upstream gradients, channels) in the queries' sorted
// order: one gather up front instead of a cache miss per query in the loops.
inline at::Tensor rows_by_cell(const at::Tensor& rows, const SortedGrid& queries) {
  return queries.identity ? rows.contiguous() : rows.index_select(0, queries.perm).contiguous();
}

// The a side of the one-band backward for queries order[t0..t1) against a tile
// of sources (cols: x, y, z, then C channels, nbp points zero-padded): with
// s_j = grad_i . cb_j and e_j the kernel, five sums per query, sum s e,
// sum s e d2 and sum s e b_j, give grad_a; the first two are added to lc and ls
// (the coefficient and bandwidth gradients before their constant factors).
// qp, gq: the queries' positions and upstream gradients in sorted order
// (indexed by t: read contiguously, not gathered query by query).
template <typename scalar_t, int C>
inline void fused_tile_backward_a(scalar_t* const* cols, int64_t nbp, const int64_t* order, int64_t t0, int64_t t1,
                                  const scalar_t* qp, const scalar_t* gq, scalar_t neg, scalar_t r2, double cs,
                                  scalar_t* gap, double& lc, double& ls) {
  const scalar_t *x = cols[0], *y = cols[1], *z = cols[2];
  const scalar_t *c0 = cols[3], *c1 = cols[3 + (C > 1 ? 1 : 0)], *c2 = cols[3 + (C > 2 ? 2 : 0)],
                 *c3 = cols[3 + (C > 3 ? 3 : 0)], *c4 = cols[3 + (C > 4 ? 4 : 0)];
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t i = order[t];
    const scalar_t* ai = qp + 3 * t;
    const scalar_t* gi = gq + C * t;
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
}

// The b side of the one-band backward for queries order[t0..t1) (b points)
// against a tile of a points (channels: the upstream gradient g_i): per query
// j, grad_cb_j = coef sum_i e_i g_i and, with s_i = cb_j . g_i,
// grad_b_j = cs sum_i s_i e_i (a_i - b_j). qp, cq: the b positions and channels
// in sorted order.
template <typename scalar_t, int C>
inline void fused_tile_backward_b(scalar_t* const* cols, int64_t nbp, const int64_t* order, int64_t t0, int64_t t1,
                                  const scalar_t* qp, const scalar_t* cq, scalar_t neg, scalar_t r2, double coef,
                                  double cs, scalar_t* gbp, scalar_t* gcp) {
  const scalar_t *x = cols[0], *y = cols[1], *z = cols[2];
  const scalar_t *c0 = cols[3], *c1 = cols[3 + (C > 1 ? 1 : 0)], *c2 = cols[3 + (C > 2 ? 2 : 0)],
                 *c3 = cols[3 + (C > 3 ? 3 : 0)], *c4 = cols[3 + (C > 4 ? 4 : 0)];
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t j = order[t];
    const scalar_t* bj = qp + 3 * t;
    const scalar_t* cj = cq + C * t;
    const scalar_t qx = bj[0], qy = bj[1], qz = bj[2];
    const scalar_t w0 = cj[0], w1 = C > 1 ? cj[1] : 0, w2 = C > 2 ? cj[2] : 0, w3 = C > 3 ? cj[3] : 0,
                   w4 = C > 4 ? cj[4] : 0;
    scalar_t k0 = 0, k1 = 0, k2 = 0, k3 = 0, k4 = 0, a0 = 0, ax = 0, ay = 0, az = 0;
#pragma omp simd reduction(+ : k0, k1, k2, k3, k4, a0, ax, ay, az)
    for (int64_t i = 0; i < nbp; ++i) {
      const scalar_t dx = qx - x[i], dy = qy - y[i], dz = qz - z[i];
      const scalar_t d2 = dx * dx + dy * dy + dz * dz;
      const scalar_t e = d2 <= r2 ? fast_exp(d2 * neg) : scalar_t(0);
      k0 += e * c0[i];
      scalar_t si = w0 * c0[i];
      if (C > 1) { k1 += e * c1[i]; si += w1 * c1[i]; }
      if (C > 2) { k2 += e * c2[i]; si += w2 * c2[i]; }
      if (C > 3) { k3 += e * c3[i]; si += w3 * c3[i]; }
      if (C > 4) { k4 += e * c4[i]; si += w4 * c4[i]; }
      const scalar_t se = si * e;
      a0 += se;
      ax += se * x[i];
      ay += se * y[i];
      az += se * z[i];
    }
    const scalar_t ks[5] = {k0, k1, k2, k3, k4};
    for (int c = 0; c < C; ++c) gcp[C * j + c] = static_cast<scalar_t>(coef * double(ks[c]));
    gbp[3 * j + 0] = static_cast<scalar_t>(cs * (double(ax) - double(a0) * double(qx)));
    gbp[3 * j + 1] = static_cast<scalar_t>(cs * (double(ay) - double(a0) * double(qy)));
    gbp[3 * j + 2] = static_cast<scalar_t>(cs * (double(az) - double(a0) * double(qz)));
  }
}

// The a side of the one-band backward on per-graph tiles (see for_each_graph_tile);
// the coefficient and bandwidth sums are kept per graph and summed at the end.
template <typename scalar_t, int C>
void fused_graph_backward_a(const SortedSoA<scalar_t>& src, const SortedGrid& queries, const at::Tensor& rows,
                            const Bands& bands, scalar_t r2, scalar_t* gap, int64_t num_graphs, double& g_sigma, double& g_coef) {
  const scalar_t neg = static_cast<scalar_t>(-bands.inv2[0]);
  const double coef = bands.coef[0], sg = bands.sigma[0], cs = coef * 2 * bands.inv2[0];
  const int64_t* order = queries.perm.data_ptr<int64_t>();
  const scalar_t* qp = queries.pos.data_ptr<scalar_t>();  // sorted positions
  const at::Tensor sorted_rows = rows_by_cell(rows, queries);
  const scalar_t* rq = sorted_rows.data_ptr<scalar_t>();
  std::vector<double> per_graph(2 * num_graphs, 0.0);  // (sum s e, sum s e d2) per graph
  for_each_graph_tile(src, queries, C, num_graphs,
                      [&](int64_t g, scalar_t** cols, int64_t nbp, int64_t t0, int64_t t1) {
    fused_tile_backward_a<scalar_t, C>(cols, nbp, order, t0, t1, qp, rq, neg, r2, cs, gap, per_graph[2 * g],
                                       per_graph[2 * g + 1]);
  });
  for (int64_t g = 0; g < num_graphs; ++g) {
    g_coef += per_graph[2 * g];
    g_sigma += coef / (sg * sg * sg) * per_graph[2 * g + 1];
  }
}

// The a side for one query i by visiting its cell columns, any bands and
// channels: writes grad_a_i and adds the band sums to ls and lc.
template <typename scalar_t>
void a_side_query(const SortedSoA<scalar_t>& src, const scalar_t* ai, const scalar_t* gi, int64_t g,
                  const GridParams& p, const Bands& bands, scalar_t r2, int64_t channels, double* ls, double* lc,
                  scalar_t* gai) {
  Block<scalar_t> blk;
  scalar_t s[kBlock];
  double ga[3] = {0, 0, 0};
  for_each_range(ai, g, src.index, p, [&](int64_t s0, int64_t e0) {
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
  for (int d = 0; d < 3; ++d) gai[d] = static_cast<scalar_t>(ga[d]);
}

// The b side for one query j by visiting its cell columns, any bands and
// channels: writes grad_b_j and grad_cb_j.
template <typename scalar_t>
void b_side_query(const SortedSoA<scalar_t>& src, const scalar_t* bj, const scalar_t* cj, int64_t g,
                  const GridParams& p, const Bands& bands, scalar_t r2, int64_t channels, double* gc,
                  scalar_t* gbj, scalar_t* gcj) {
  Block<scalar_t> blk;
  scalar_t s[kBlock];
  std::fill(gc, gc + channels, 0.0);
  double gb[3] = {0, 0, 0};
  for_each_range(bj, g, src.index, p, [&](int64_t s0, int64_t e0) {
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
  for (int d = 0; d < 3; ++d) gbj[d] = static_cast<scalar_t>(gb[d]);
  for (int64_t c = 0; c < channels; ++c) gcj[c] = static_cast<scalar_t>(gc[c]);
}

// The one-band backward's two sides on cell tiles (sparse neighbourhoods, see
// for_each_cell_tile); cells too dense for a tile visit per query. The a-side
// band sums are kept per cell and summed in cell order at the end.
template <typename scalar_t, int C>
void cell_backward_a(const SortedSoA<scalar_t>& src, const SortedGrid& queries, const at::Tensor& rows,
                     const scalar_t* ap, const scalar_t* gp, const int64_t* ba, const GridParams& p, const Bands& bands, scalar_t r2,
                     scalar_t* gap, double& g_sigma, double& g_coef) {
  const scalar_t neg = static_cast<scalar_t>(-bands.inv2[0]);
  const double coef = bands.coef[0], sg = bands.sigma[0], cs = coef * 2 * bands.inv2[0];
  const int64_t* order = queries.perm.data_ptr<int64_t>();
  const scalar_t* qp = queries.pos.data_ptr<scalar_t>();  // sorted positions
  const at::Tensor sorted_rows = rows_by_cell(rows, queries);
  const scalar_t* rq = sorted_rows.data_ptr<scalar_t>();
  std::vector<double> per_cell(2 * (queries.keys.numel() + 1), 0.0);  // (sum s e, sum s e d2 coef / sg^3)
  auto tile = [&](int64_t c, scalar_t** cols, int64_t nbp, int64_t t0, int64_t t1) {
    double lc = 0, ls = 0;
    fused_tile_backward_a<scalar_t, C>(cols, nbp, order, t0, t1, qp, rq, neg, r2, cs, gap, lc, ls);
    per_cell[2 * c] += lc;
    per_cell[2 * c + 1] += coef / (sg * sg * sg) * ls;
  };
  auto query = [&](int64_t c, int64_t t) {
    const int64_t i = order[t];
    a_side_query(src, ap + 3 * i, gp + C * i, ba[i], p, bands, r2, C, &per_cell[2 * c + 1], &per_cell[2 * c],
                 gap + 3 * i);
  };
  for_each_cell_tile<C>(src, queries, p, tile, query);
  for (size_t c = 0; c + 1 < per_cell.size() / 2; ++c) {
    g_coef += per_cell[2 * c];
    g_sigma += per_cell[2 * c + 1];
  }
}

template <typename scalar_t, int C>
void cell_backward_b(const SortedSoA<scalar_t>& src, const SortedGrid& queries, const at::Tensor& rows,
                     const scalar_t* bp, const scalar_t* cp, const int64_t* bb, const GridParams& p, const Bands& bands, scalar_t r2,
                     scalar_t* gbp, scalar_t* gcp) {
  const scalar_t neg = static_cast<scalar_t>(-bands.inv2[0]);
  const double coef = bands.coef[0], cs = coef * 2 * bands.inv2[0];
  const int64_t* order = queries.perm.data_ptr<int64_t>();
  const scalar_t* qp = queries.pos.data_ptr<scalar_t>();  // sorted positions
  const at::Tensor sorted_rows = rows_by_cell(rows, queries);
  const scalar_t* rq = sorted_rows.data_ptr<scalar_t>();
  auto tile = [&](int64_t, scalar_t** cols, int64_t nbp, int64_t t0, int64_t t1) {
    fused_tile_backward_b<scalar_t, C>(cols, nbp, order, t0, t1, qp, rq, neg, r2, coef, cs, gbp, gcp);
  };
  auto query = [&](int64_t, int64_t t) {
    const int64_t j = order[t];
    double gc[5];
    b_side_query(src, bp + 3 * j, cp + C * j, bb[j], p, bands, r2, C, gc, gbp + 3 * j, gcp + C * j);
  };
  for_each_cell_tile<C>(src, queries, p, tile, query);
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
          fused_graph_backward_a<scalar_t, C>(src, grid_a, grad, bands, r2, grad_a.data_ptr<scalar_t>(), num_graphs,
                                              g_sig[0], g_coef[0]);
        }
      });
    } else if (need_a && fused_shape(bands, channels) && cell_tiles(p)) {
      SortedSoA<scalar_t> src(grid_b, cb);
      dispatch_channels(channels, [&](auto c) {
        constexpr int C = decltype(c)::value;
        if constexpr (C > 0) {
          cell_backward_a<scalar_t, C>(src, grid_a, grad, a.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                                       batch_a.data_ptr<int64_t>(), p, bands, r2, grad_a.data_ptr<scalar_t>(),
                                       g_sig[0], g_coef[0]);
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
        for (int64_t t = begin; t < end; ++t) {
          const int64_t i = order[t];
          a_side_query(src, ap + 3 * i, gp + channels * i, ba[i], p, bands, r2, channels, ls, lc, gap + 3 * i);
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
      bool done = false;
      if (fused_shape(bands, channels) && cell_tiles(p)) {
        dispatch_channels(channels, [&](auto c) {
          constexpr int C = decltype(c)::value;
          if constexpr (C > 0) {
            cell_backward_b<scalar_t, C>(src, grid_b, cb, bp, cp, bb, p, bands, r2, gbp, gcp);
            done = true;
          }
        });
      }
      if (!done) {
        at::parallel_for(0, m, 16, [&](int64_t begin, int64_t end) {
          std::vector<double> gc(channels);
          for (int64_t t = begin; t < end; ++t) {
            const int64_t j = order[t];
            b_side_query(src, bp + 3 * j, cp + channels * j, bb[j], p, bands, r2, channels, gc.data(),
                         gbp + 3 * j, gcp + channels * j);
          }
        });
      }
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
