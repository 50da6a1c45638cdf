// Fused kernel row sums on CPU; no pair list is ever formed. Sorted points and
// channels are kept transposed (one contiguous array per coordinate / channel),
// so that each of the 9 contiguous cell ranges of a query is processed in
// blocks by vectorised loops (fast_exp, OpenMP simd reductions). Forward and
// the a-side of the backward run over a points against a grid of b; the b-side
// runs over b points against a grid of a, so no two threads write one row.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../grid.h"
#include "fast_exp.h"

namespace tg_rapidalign {
namespace {

constexpr int64_t kBlock = 128;

// A cell-sorted point set with transposed positions and per-point channels.
template <typename scalar_t>
struct SortedSoA {
  SortedGrid grid;
  at::Tensor pos_t, chan_t;
  CellIndex index;
  const scalar_t* pos;   // [3, m]
  const scalar_t* chan;  // [C, m]
  int64_t m;

  SortedSoA(SortedGrid g, const at::Tensor& channels)
      : grid(std::move(g)), pos_t(grid.pos.t().contiguous()),
        chan_t((grid.identity ? channels : channels.index_select(0, grid.perm)).t().contiguous()) {
    index = cell_index(grid);
    pos = pos_t.data_ptr<scalar_t>();
    chan = chan_t.data_ptr<scalar_t>();
    m = grid.keys.numel();
  }
};

// Calls f(begin, end) for blocks of the contiguous ranges of sorted points in
// the cell columns around q that the ball of radius r reaches.
template <typename scalar_t, typename F>
inline void for_each_range(const scalar_t* q, int64_t g, const CellIndex& index, const GridParams& p, F&& f) {
  auto column = [&](int64_t k_lo, int64_t k_hi) {
    int64_t begin, end;
    index.range(k_lo, k_hi, begin, end);
    for (int64_t s = begin; s < end; s += kBlock) f(s, std::min(end, s + kBlock));
  };
  for_each_column(q, g, p, column);
}

// Per block of sorted points [s, s + len): squared distances to q, and the
// kernel value and its slope sum_k c_k e_k 2 inv2_k (0 beyond the cutoff).
template <typename scalar_t>
struct Block {
  scalar_t d2[kBlock], k[kBlock], slope[kBlock];

  void distances(const scalar_t* q, const scalar_t* pos, int64_t m, int64_t s, int64_t len) {
    const scalar_t *x = pos + s, *y = pos + m + s, *z = pos + 2 * m + s;
    const scalar_t qx = q[0], qy = q[1], qz = q[2];
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) {
      scalar_t dx = qx - x[t], dy = qy - y[t], dz = qz - z[t];
      d2[t] = dx * dx + dy * dy + dz * dz;
    }
  }

  // k = sum_q c_q e_q and (if with_slope) slope = sum_q c_q 2 inv2_q e_q, one pass per band.
  void kernel(const Bands& bands, scalar_t r2, int64_t len, bool with_slope) {
    std::fill(k, k + len, scalar_t(0));
    if (with_slope) std::fill(slope, slope + len, scalar_t(0));
    for (int q = 0; q < bands.count; ++q) {
      const scalar_t neg = static_cast<scalar_t>(-bands.inv2[q]);
      const scalar_t c = static_cast<scalar_t>(bands.coef[q]);
      const scalar_t cs = static_cast<scalar_t>(bands.coef[q] * 2 * bands.inv2[q]);
      if (with_slope) {
#pragma omp simd
        for (int64_t t = 0; t < len; ++t) {
          const scalar_t e_t = d2[t] <= r2 ? fast_exp(d2[t] * neg) : scalar_t(0);
          k[t] += c * e_t;
          slope[t] += cs * e_t;
        }
      } else {
#pragma omp simd
        for (int64_t t = 0; t < len; ++t) k[t] += c * (d2[t] <= r2 ? fast_exp(d2[t] * neg) : scalar_t(0));
      }
    }
  }
};

// Reductions over one block (at most kBlock terms) run in the input precision,
// at full vector width; the running totals across blocks are kept in double.
template <typename scalar_t>
inline double dot(const scalar_t* u, const scalar_t* v, int64_t len) {
  scalar_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t t = 0; t < len; ++t) s += u[t] * v[t];
  return double(s);
}

// One band of the a-side backward in one pass: adds the band's slope term to
// blk.slope and returns (sum_j s_j e_j, sum_j s_j e_j d2_j).
template <typename scalar_t>
inline std::pair<double, double> band_sums(Block<scalar_t>& blk, const scalar_t* s, const Bands& bands, int q,
                                           scalar_t r2, int64_t len) {
  const scalar_t neg = static_cast<scalar_t>(-bands.inv2[q]);
  const scalar_t cs = static_cast<scalar_t>(bands.coef[q] * 2 * bands.inv2[q]);
  scalar_t se = 0, sed = 0;
#pragma omp simd reduction(+ : se, sed)
  for (int64_t t = 0; t < len; ++t) {
    const scalar_t d2 = blk.d2[t];
    const scalar_t e = d2 <= r2 ? fast_exp(d2 * neg) : scalar_t(0);
    blk.slope[t] += cs * e;
    const scalar_t se_t = s[t] * e;
    se += se_t;
    sed += se_t * d2;
  }
  return {double(se), double(sed)};
}

// out = (sum_t w_t, sum_t w_t x_t, sum_t w_t y_t, sum_t w_t z_t) with w = s * slope,
// for transposed positions pos (row stride m).
template <typename scalar_t>
inline void moments(const scalar_t* s, const scalar_t* slope, const scalar_t* pos, int64_t m, int64_t len,
                    double* out) {
  const scalar_t *x = pos, *y = pos + m, *z = pos + 2 * m;
  scalar_t w0 = 0, wx = 0, wy = 0, wz = 0;
#pragma omp simd reduction(+ : w0, wx, wy, wz)
  for (int64_t t = 0; t < len; ++t) {
    const scalar_t w = s[t] * slope[t];
    w0 += w;
    wx += w * x[t];
    wy += w * y[t];
    wz += w * z[t];
  }
  out[0] = w0;
  out[1] = wx;
  out[2] = wy;
  out[3] = wz;
}

// y += alpha * x
template <typename scalar_t>
inline void axpy(scalar_t* y, scalar_t alpha, const scalar_t* x, int64_t len) {
#pragma omp simd
  for (int64_t t = 0; t < len; ++t) y[t] += alpha * x[t];
}


// One band, C channels known at compile time: distances, exponentials and the
// channel sums in a single pass over a range (no intermediate arrays), which is
// what molecule-sized graphs spend their time on. The range runs in chunks of a
// fixed vector width; the last, partial chunk is copied into zero-padded arrays
// (padding sits on the query with channel 0, so it adds nothing) rather than
// left to a scalar remainder loop, which dominated for ranges of 10-50 points.
template <typename scalar_t>
constexpr int kLanes = 64 / sizeof(scalar_t);

// n is a whole number of vector widths (the callers pad). Each lane keeps its
// own partial sums and the lanes are added pairwise at the end: an
// "omp simd reduction" ends in one scalar add per lane through the stack,
// which for the two or three vectors of a 10-50 point graph cost as much as the
// kernel evaluations.
template <typename scalar_t, int C>
inline void fused_chunk(const scalar_t* x, const scalar_t* y, const scalar_t* z, const scalar_t* const* ch,
                        int64_t n, scalar_t qx, scalar_t qy, scalar_t qz, scalar_t neg, scalar_t r2,
                        scalar_t* acc) {
  constexpr int W = kLanes<scalar_t>;
  alignas(64) scalar_t a[C][W];
  for (int c = 0; c < C; ++c) std::fill(a[c], a[c] + W, scalar_t(0));
  const scalar_t *c0 = ch[0], *c1 = ch[C > 1 ? 1 : 0], *c2 = ch[C > 2 ? 2 : 0], *c3 = ch[C > 3 ? 3 : 0],
                 *c4 = ch[C > 4 ? 4 : 0];
  for (int64_t t0 = 0; t0 < n; t0 += W) {
#pragma omp simd
    for (int l = 0; l < W; ++l) {
      const int64_t t = t0 + l;
      const scalar_t dx = qx - x[t], dy = qy - y[t], dz = qz - z[t];
      const scalar_t d2 = dx * dx + dy * dy + dz * dz;
      const scalar_t e = d2 <= r2 ? fast_exp(d2 * neg) : scalar_t(0);
      a[0][l] += e * c0[t];
      if (C > 1) a[1][l] += e * c1[t];
      if (C > 2) a[2][l] += e * c2[t];
      if (C > 3) a[3][l] += e * c3[t];
      if (C > 4) a[4][l] += e * c4[t];
    }
  }
  for (int c = 0; c < C; ++c) {
    for (int w = W / 2; w >= 1; w /= 2) {
#pragma omp simd
      for (int l = 0; l < w; ++l) a[c][l] += a[c][l + w];
    }
    acc[c] += a[c][0];
  }
}

template <typename scalar_t, int C>
inline void fused_range(const scalar_t* q, const scalar_t* pos, const scalar_t* chan, int64_t m, int64_t s,
                        int64_t len, scalar_t neg, scalar_t r2, double* acc) {
  constexpr int W = kLanes<scalar_t>;
  const scalar_t qx = q[0], qy = q[1], qz = q[2];
  scalar_t part[5] = {0, 0, 0, 0, 0};
  const int64_t full = len - len % W;
  const scalar_t* ch[5];
  for (int c = 0; c < C; ++c) ch[c] = chan + c * m + s;
  if (full > 0) fused_chunk<scalar_t, C>(pos + s, pos + m + s, pos + 2 * m + s, ch, full, qx, qy, qz, neg, r2, part);
  if (full < len) {
    alignas(64) scalar_t px[W], py[W], pz[W], pc[C][W];
    const int64_t rest = len - full;
    for (int t = 0; t < W; ++t) {
      const bool in = t < rest;
      px[t] = in ? pos[s + full + t] : qx;
      py[t] = in ? pos[m + s + full + t] : qy;
      pz[t] = in ? pos[2 * m + s + full + t] : qz;
      for (int c = 0; c < C; ++c) pc[c][t] = in ? ch[c][full + t] : scalar_t(0);
    }
    const scalar_t* pch[5];
    for (int c = 0; c < C; ++c) pch[c] = pc[c];
    fused_chunk<scalar_t, C>(px, py, pz, pch, W, qx, qy, qz, neg, r2, part);
  }
  for (int c = 0; c < C; ++c) acc[c] += part[c];
}

// The first 64-byte boundary at or after p (buffers hold W extra elements for it).
template <typename scalar_t>
inline scalar_t* aligned64(scalar_t* p) {
  return reinterpret_cast<scalar_t*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}

// Copies one graph's sorted sources [s0, s0 + nb) (3 coordinates, then the channels)
// into cols[0..3+C) inside buf, zero-padded to a whole number of vector widths;
// returns the padded length.
template <typename scalar_t>
inline int64_t load_tile(const SortedSoA<scalar_t>& src, int64_t s0, int64_t nb, int channels, scalar_t* buf,
                         scalar_t** cols) {
  constexpr int W = kLanes<scalar_t>;
  const int64_t nbp = (nb + W - 1) / W * W;
  for (int k = 0; k < 3 + channels; ++k) {
    cols[k] = buf + k * nbp;
    const scalar_t* from = k < 3 ? src.pos + k * src.m + s0 : src.chan + (k - 3) * src.m + s0;
    std::copy(from, from + nb, cols[k]);
    std::fill(cols[k] + nb, cols[k] + nbp, scalar_t(0));
  }
  return nbp;
}

// Molecule-sized graphs (one cell per graph, at most kGraphCellPoints points):
// each graph's sources are copied once into zero-padded arrays of a whole
// number of vector widths (channel 0 on the padding), so every query of the
// graph runs full-width chunks only. Calls f(g, cols, nbp, t_begin, t_end) per
// graph with sources and queries, in parallel over graphs; the graph's queries
// are order[t_begin..t_end) of the query grid.
template <typename scalar_t, typename F>
void for_each_graph_tile(const SortedSoA<scalar_t>& src, const SortedGrid& queries, int channels,
                         int64_t num_graphs, F&& f) {
  constexpr int W = kLanes<scalar_t>;
  const int64_t* qs = queries.start.data_ptr<int64_t>();
  const int64_t* ss = src.grid.start.template data_ptr<int64_t>();
  at::parallel_for(0, num_graphs, 32, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> tile((3 + channels) * (kGraphCellPoints + W) + W);  // per thread chunk
    scalar_t* buf = aligned64(tile.data());
    scalar_t* cols[3 + 5];
    for (int64_t g = begin; g < end; ++g) {
      const int64_t s0 = ss[g], nb = ss[g + 1] - s0;
      if (nb == 0 || qs[g] == qs[g + 1]) continue;  // the graph's outputs stay 0
      const int64_t nbp = load_tile(src, s0, nb, channels, buf, cols);
      f(g, cols, nbp, qs[g], qs[g + 1]);
    }
  });
}

template <typename scalar_t, int C>
void fused_graph_rows(const SortedSoA<scalar_t>& src, const SortedGrid& queries, const scalar_t* ap,
                      const Bands& bands, scalar_t r2, scalar_t* op, int64_t num_graphs) {
  const scalar_t neg = static_cast<scalar_t>(-bands.inv2[0]);
  const double coef = bands.coef[0];
  const int64_t* order = queries.perm.data_ptr<int64_t>();
  for_each_graph_tile(src, queries, C, num_graphs,
                      [&](int64_t, scalar_t** cols, int64_t nbp, int64_t t0, int64_t t1) {
    const scalar_t* ch[5];
    for (int c = 0; c < C; ++c) ch[c] = cols[3 + c];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = order[t];
      const scalar_t* ai = ap + 3 * i;
      scalar_t part[5] = {0, 0, 0, 0, 0};
      fused_chunk<scalar_t, C>(cols[0], cols[1], cols[2], ch, nbp, ai[0], ai[1], ai[2], neg, r2, part);
      for (int c = 0; c < C; ++c) op[C * i + c] = static_cast<scalar_t>(coef * part[c]);
    }
  });
}

template <typename scalar_t, int C>
void fused_rows(const SortedSoA<scalar_t>& src, const int64_t* order, const scalar_t* ap, const int64_t* ba,
                const GridParams& p, const Bands& bands, scalar_t r2, scalar_t* op, int64_t n) {
  const scalar_t neg = static_cast<scalar_t>(-bands.inv2[0]);
  const double coef = bands.coef[0];
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i = order[t];
      double acc[5] = {0, 0, 0, 0, 0};
      const scalar_t* ai = ap + 3 * i;
      for_each_range(ai, ba[i], src.index, p, [&](int64_t s, int64_t e) {
        fused_range<scalar_t, C>(ai, src.pos, src.chan, src.m, s, e - s, neg, r2, acc);
      });
      for (int c = 0; c < C; ++c) op[C * i + c] = static_cast<scalar_t>(coef * acc[c]);
    }
  });
}

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

// The shapes the one-band fused passes handle (the forward also takes the 4
// channels [w, w b] of the first-moment rows), and the graphs the tiles apply to.
inline bool fused_shape(const Bands& bands, int64_t channels) {
  return bands.count == 1 && (channels == 1 || channels == 5);
}

inline bool fused_forward_shape(const Bands& bands, int64_t channels) {
  return fused_shape(bands, channels) || (bands.count == 1 && channels == 4);
}

// Calls f(std::integral_constant<int, C>) for the forward's channel count.
template <typename F>
inline void with_forward_channels(int64_t channels, F&& f) {
  if (channels == 1) f(std::integral_constant<int, 1>());
  else if (channels == 4) f(std::integral_constant<int, 4>());
  else f(std::integral_constant<int, 5>());
}

inline bool graph_tiles(const GridParams& p, int64_t num_graphs) {
  return p.reach == 0 && p.largest <= kGraphCellPoints && num_graphs > 1;
}

at::Tensor kernel_row_sums_cpu(const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& cb_,
                               const at::Tensor& batch_a_, const at::Tensor& batch_b_, const at::Tensor& sigmas,
                               const at::Tensor& coefs, double r, int64_t num_graphs) {
  check_row_sums_inputs(a_, b_, cb_);
  auto a = a_.contiguous();
  auto batch_a = batch_a_.to(at::kLong).contiguous();
  const int64_t n = a.size(0), channels = cb_.size(1);
  auto out = at::zeros({n, channels}, a.options());
  if (n == 0 || b_.size(0) == 0 || channels == 0) return out;
  const Bands bands = make_bands(sigmas, coefs);
  GridParams p = make_grid_params(a, batch_a, b_, batch_b_, r, num_graphs);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "kernel_row_sums_cpu", [&] {
    SortedSoA<scalar_t> src(sort_by_cell(b_.contiguous(), batch_b_, p, num_graphs), cb_);
    // Queries in cell order: consecutive queries read the same cells (cache).
    const SortedGrid queries = sort_by_cell(a, batch_a, p, num_graphs);
    const at::Tensor& order_t = queries.perm;
    const int64_t* order = order_t.data_ptr<int64_t>();
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const int64_t* ba = batch_a.data_ptr<int64_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const scalar_t r2 = cut2<scalar_t>(r);
    if (fused_forward_shape(bands, channels)) {
      const bool tiles = graph_tiles(p, num_graphs);
      with_forward_channels(channels, [&](auto c) {
        if (tiles) fused_graph_rows<scalar_t, decltype(c)::value>(src, queries, ap, bands, r2, op, num_graphs);
        else fused_rows<scalar_t, decltype(c)::value>(src, order, ap, ba, p, bands, r2, op, n);
      });
      return;
    }
    at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
      std::vector<double> acc(channels);
      Block<scalar_t> blk;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t i = order[t];
        std::fill(acc.begin(), acc.end(), 0.0);
        const scalar_t* ai = ap + 3 * i;
        for_each_range(ai, ba[i], src.index, p, [&](int64_t s, int64_t e) {
          const int64_t len = e - s;
          blk.distances(ai, src.pos, src.m, s, len);
          blk.kernel(bands, r2, len, false);
          for (int64_t c = 0; c < channels; ++c) acc[c] += dot(blk.k, src.chan + c * src.m + s, len);
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
    double r, int64_t num_graphs, bool need_a, bool need_b) {
  check_row_sums_inputs(a_, b_, cb_);
  auto a = a_.contiguous(), b = b_.contiguous(), cb = cb_.contiguous(), grad = grad_.contiguous();
  auto batch_a = batch_a_.to(at::kLong).contiguous(), batch_b = batch_b_.to(at::kLong).contiguous();
  const int64_t n = a.size(0), m = b.size(0), channels = cb.size(1);
  auto grad_a = at::zeros_like(a), grad_b = at::zeros_like(b), grad_cb = at::zeros_like(cb);
  auto grad_sigmas = at::zeros_like(sigmas), grad_coefs = at::zeros_like(coefs);
  if (n == 0 || m == 0 || channels == 0) return {grad_a, grad_b, grad_cb, grad_sigmas, grad_coefs};
  const Bands bands = make_bands(sigmas, coefs);
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
      auto fn = channels == 1 ? &fused_graph_backward_a<scalar_t, 1> : &fused_graph_backward_a<scalar_t, 5>;
      fn(src, grid_a, a.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), bands, r2, grad_a.data_ptr<scalar_t>(),
         num_graphs, g_sig[0], g_coef[0]);
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

at::Tensor estep_moments_cpu(const at::Tensor& x_, const at::Tensor& y_, const at::Tensor& q_,
                             const at::Tensor& p_, const at::Tensor& batch_x_, const at::Tensor& batch_y_,
                             const at::Tensor& R_, const at::Tensor& t_, const at::Tensor& sigmas,
                             const at::Tensor& coefs, double r, int64_t num_graphs) {
  TORCH_CHECK(x_.dim() == 2 && x_.size(1) == 3 && y_.dim() == 2 && y_.size(1) == 3, "x and y must be [N, 3]");
  TORCH_CHECK(sigmas.numel() == 1, "estep_moments takes one kernel band");
  TORCH_CHECK(R_.dim() == 3 && R_.size(0) == num_graphs && t_.dim() == 2 && t_.size(0) == num_graphs,
              "R must be [B, 3, 3] and t [B, 3]");
  auto x = x_.contiguous(), y = y_.contiguous(), q = q_.contiguous(), p = p_.contiguous();
  auto R = R_.to(at::kDouble).contiguous(), t = t_.to(at::kDouble).contiguous();
  auto bx = batch_x_.to(at::kLong).contiguous(), by = batch_y_.to(at::kLong).contiguous();
  auto all = at::arange(num_graphs + 1, bx.options());
  auto sx = at::searchsorted(bx, all).contiguous(), sy = at::searchsorted(by, all).contiguous();
  auto out = at::zeros({num_graphs, 18}, x.options().dtype(at::kDouble));
  const Bands bands = make_bands(sigmas, coefs);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "estep_moments_cpu", [&] {
    constexpr int W = kLanes<scalar_t>;
    const scalar_t neg = static_cast<scalar_t>(-bands.inv2[0]);
    const double coef = bands.coef[0];
    const scalar_t r2 = cut2<scalar_t>(r);
    const scalar_t *xp = x.data_ptr<scalar_t>(), *yp = y.data_ptr<scalar_t>();
    const scalar_t *qp = q.data_ptr<scalar_t>(), *pp = p.data_ptr<scalar_t>();
    const double *Rp = R.data_ptr<double>(), *tp = t.data_ptr<double>();
    const int64_t *sxp = sx.data_ptr<int64_t>(), *syp = sy.data_ptr<int64_t>();
    double* op = out.data_ptr<double>();
    at::parallel_for(0, num_graphs, 32, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buf;
      for (int64_t g = begin; g < end; ++g) {
        const int64_t x0 = sxp[g], nx = sxp[g + 1] - x0, y0 = syp[g], ny = syp[g + 1] - y0;
        if (nx == 0 || ny == 0) continue;
        const int64_t nyp = (ny + W - 1) / W * W;
        buf.assign(8 * nyp, scalar_t(0));  // z (3) and channels p, p y (3), p |y|^2; zero padding
        scalar_t* z[3] = {buf.data(), buf.data() + nyp, buf.data() + 2 * nyp};
        scalar_t* ch[5];
        for (int c = 0; c < 5; ++c) ch[c] = buf.data() + (3 + c) * nyp;
        const double* Rg = Rp + 9 * g;
        const double* tg = tp + 3 * g;
        for (int64_t j = 0; j < ny; ++j) {
          const scalar_t* yj = yp + 3 * (y0 + j);
          for (int d = 0; d < 3; ++d) {
            z[d][j] = static_cast<scalar_t>(Rg[3 * d] * yj[0] + Rg[3 * d + 1] * yj[1] + Rg[3 * d + 2] * yj[2] +
                                            tg[d]);
          }
          const scalar_t pj = pp[y0 + j];
          ch[0][j] = pj;
          for (int d = 0; d < 3; ++d) ch[1 + d][j] = pj * yj[d];
          ch[4][j] = pj * (yj[0] * yj[0] + yj[1] * yj[1] + yj[2] * yj[2]);
        }
        const scalar_t* chc[5] = {ch[0], ch[1], ch[2], ch[3], ch[4]};
        double m[18] = {0};
        for (int64_t i = 0; i < nx; ++i) {
          const scalar_t* xi = xp + 3 * (x0 + i);
          scalar_t part[5] = {0, 0, 0, 0, 0};
          fused_chunk<scalar_t, 5>(z[0], z[1], z[2], chc, nyp, xi[0], xi[1], xi[2], neg, r2, part);
          const double qi = coef * double(qp[x0 + i]);
          const double w0 = qi * part[0], wy[3] = {qi * part[1], qi * part[2], qi * part[3]};
          const double xd[3] = {double(xi[0]), double(xi[1]), double(xi[2])};
          m[0] += w0;
          for (int d = 0; d < 3; ++d) {
            m[1 + d] += w0 * xd[d];
            m[4 + d] += wy[d];
            for (int e = 0; e < 3; ++e) m[7 + 3 * d + e] += xd[d] * wy[e];
          }
          m[16] += w0 * (xd[0] * xd[0] + xd[1] * xd[1] + xd[2] * xd[2]);
          m[17] += qi * part[4];
        }
        std::copy(m, m + 18, op + 18 * g);
      }
    });
  });
  return out.to(x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(tg_rapidalign, CPU, m) {
  m.impl("estep_moments", &estep_moments_cpu);
  m.impl("kernel_row_sums", &kernel_row_sums_cpu);
  m.impl("kernel_row_sums_backward", &kernel_row_sums_backward_cpu);
}

}  // namespace tg_rapidalign
