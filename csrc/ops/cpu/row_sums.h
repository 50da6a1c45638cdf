// Shared by the CPU kernels of kernel_row_sums, kernel_row_sums_backward and
// estep_moments. No pair list is ever formed: sorted points and channels are
// kept transposed (one contiguous array per coordinate / channel), so that each
// contiguous cell range of a query is processed in blocks by vectorised loops
// (fast_exp, OpenMP simd reductions), and molecule-sized graphs run one fused
// pass per query over per-graph tiles.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "common/bands.h"
#include "common/channels.h"
#include "common/distance.h"
#include "common/fast_exp.h"
#include "common/grid.h"
#include "common/limits.h"

namespace tg_rapidalign {
namespace cpu {
// Internal linkage, as when these helpers lived in one file's anonymous
// namespace: each kernel file gets its own copies, which keeps GCC's inlining
// of them (and so the kernels' speed) as it was.
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
  static_assert(C >= 1 && C <= 5, "the fused passes take 1 to 5 channels");
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

// Molecule-sized graphs (one cell per graph, at most kGraphScanPoints points):
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
    std::vector<scalar_t> tile((3 + channels) * (kGraphScanPoints + W) + W);  // per thread chunk
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

// The shapes the one-band fused passes take: the specialised channel counts
// (common/channels.h; the same set the CUDA kernels specialise).
inline bool fused_shape(const Bands& bands, int64_t channels) {
  return bands.count == 1 && is_specialised_channels(channels);
}

// Whether the per-graph tiles apply: one cell per graph and every graph small.
inline bool graph_tiles(const GridParams& p, int64_t num_graphs) {
  return p.reach == 0 && p.largest <= kGraphScanPoints && num_graphs > 1;
}

// Sparse neighbourhoods (a few dozen neighbours per point): per query, the
// cell columns hold a handful of points each, and visiting them one by one
// (column geometry, range look-ups, one padded vector chunk per column) costs
// more than the kernel evaluations. Instead the queries run cell by cell: the
// sources of the (2 reach + 1)^3 cells around a query cell are copied once into
// a contiguous zero-padded tile (channel 0 on the padding, as for the graph
// tiles), and every query of the cell runs full-width chunks over the whole
// tile. The exact test d2 <= r2 selects the neighbours, so the results are
// those of the per-query visit (a superset of its candidates is scanned).
// Cells whose tile would exceed kCellTileMax points (dense neighbourhoods,
// where the per-query column clipping scans fewer candidates) keep the
// per-query visit.
constexpr int64_t kCellTileMax = 2048;

// Whether the cell tiles apply: a real grid (not one cell per graph).
inline bool cell_tiles(const GridParams& p) {
  return p.reach > 0 && p.reach <= static_cast<int64_t>(kCellsPerRadius);
}

// The first sorted query of each distinct cell key, and the end: [cells + 1].
inline std::vector<int64_t> query_cells(const SortedGrid& queries) {
  const int64_t* k = queries.keys.data_ptr<int64_t>();
  const int64_t n = queries.keys.numel();
  std::vector<int64_t> starts;
  for (int64_t t = 0; t < n; ++t) {
    if (t == 0 || k[t] != k[t - 1]) starts.push_back(t);
  }
  starts.push_back(n);
  return starts;
}

// Calls tile(cell, cols, nbp, t_begin, t_end) per query cell whose candidate
// sources fit a tile (cols: 3 coordinates then the channels, nbp points, zero
// padded to whole vector widths), else query(cell, t) for each of its queries;
// the cell's queries are [t_begin, t_end) of the sorted query order. Cells
// whose key lies outside the grid (bad graph ids, non-finite coordinates) take
// the per-query path, which clips its look-ups. In parallel over cells.
template <int channels, typename scalar_t, typename T, typename Q>
void for_each_cell_tile(const SortedSoA<scalar_t>& src, const SortedGrid& queries, const GridParams& p, T&& tile,
                        Q&& query) {
  constexpr int W = kLanes<scalar_t>;
  constexpr int kMaxColumns = (2 * int(kCellsPerRadius) + 1) * (2 * int(kCellsPerRadius) + 1);
  const std::vector<int64_t> cells = query_cells(queries);
  const int64_t* keys = queries.keys.data_ptr<int64_t>();
  const int64_t num_cells = static_cast<int64_t>(cells.size()) - 1;
  const int64_t per_graph = p.size[0] * p.size[1] * p.size[2];
  const int64_t R = p.reach;
  at::parallel_for(0, num_cells, 4, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> store((3 + channels) * (kCellTileMax + W) + W);
    scalar_t* buf = aligned64(store.data());
    scalar_t* cols[3 + 5];
    for (int64_t c = begin; c < end; ++c) {
      const int64_t t0 = cells[c], t1 = cells[c + 1], key = keys[t0];
      const int64_t g = key >= 0 ? key / per_graph : -1;
      int64_t rest = key >= 0 ? key % per_graph : 0;
      const int64_t c2 = rest % p.size[2];
      rest /= p.size[2];
      const int64_t c1 = rest % p.size[1], c0 = rest / p.size[1];
      bool fits = g >= 0 && g < p.num_graphs && c0 >= R && c0 < p.size[0] - R && c1 >= R &&
                  c1 < p.size[1] - R && c2 >= R && c2 < p.size[2] - R;
      int64_t rb[kMaxColumns], re[kMaxColumns], total = 0;
      int nr = 0;
      for (int64_t o0 = -R; fits && o0 <= R; ++o0) {
        for (int64_t o1 = -R; o1 <= R; ++o1) {
          int64_t b, e;
          src.index.range(pack_key(g, c0 + o0, c1 + o1, c2 - R, p), pack_key(g, c0 + o0, c1 + o1, c2 + R, p), b, e);
          if (e > b) {
            rb[nr] = b;
            re[nr++] = e;
            total += e - b;
          }
        }
      }
      if (!fits || total > kCellTileMax) {
        for (int64_t t = t0; t < t1; ++t) query(c, t);
        continue;
      }
      const int64_t nbp = (total + W - 1) / W * W;
      // One loop writes every column (the ranges are short: a per-column copy
      // would be a library call per few points).
      const scalar_t* from[3 + channels];
      for (int k = 0; k < 3 + channels; ++k) {
        cols[k] = buf + k * nbp;
        from[k] = k < 3 ? src.pos + k * src.m : src.chan + (k - 3) * src.m;
      }
      int64_t o = 0;
      for (int r = 0; r < nr; ++r) {
        for (int64_t j = rb[r]; j < re[r]; ++j, ++o) {
          for (int k = 0; k < 3 + channels; ++k) cols[k][o] = from[k][j];
        }
      }
      for (int k = 0; k < 3 + channels; ++k) std::fill(cols[k] + total, cols[k] + nbp, scalar_t(0));
      tile(c, cols, nbp, t0, t1);
    }
  });
}

}  // namespace
}  // namespace cpu
}  // namespace tg_rapidalign
