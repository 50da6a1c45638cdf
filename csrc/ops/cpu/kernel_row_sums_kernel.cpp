// CPU kernel of kernel_row_sums (schema and checks: ops/kernel_row_sums.cpp):
// fused kernel row sums, no pair list is ever formed (see row_sums.h). Rows run
// over the a points against a grid of b; one band with a specialised channel
// count (common/channels.h) takes the fused single-pass loops.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ops/cpu/row_sums.h"
#include "ops/kernel_row_sums.h"

namespace tg_rapidalign {
namespace cpu {
namespace {

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

// One query row by visiting its cell columns (the dense-neighbourhood path).
template <typename scalar_t, int C>
inline void fused_query_row(const SortedSoA<scalar_t>& src, const scalar_t* ai, int64_t g, const GridParams& p,
                            scalar_t neg, scalar_t r2, double coef, scalar_t* oi) {
  double acc[5] = {0, 0, 0, 0, 0};
  for_each_range(ai, g, src.index, p, [&](int64_t s, int64_t e) {
    fused_range<scalar_t, C>(ai, src.pos, src.chan, src.m, s, e - s, neg, r2, acc);
  });
  for (int c = 0; c < C; ++c) oi[c] = static_cast<scalar_t>(coef * acc[c]);
}

template <typename scalar_t, int C>
void fused_rows(const SortedSoA<scalar_t>& src, const SortedGrid& queries, const scalar_t* ap, const int64_t* ba,
                const GridParams& p, const Bands& bands, scalar_t r2, scalar_t* op, int64_t n) {
  const scalar_t neg = static_cast<scalar_t>(-bands.inv2[0]);
  const double coef = bands.coef[0];
  const int64_t* order = queries.perm.data_ptr<int64_t>();
  if (cell_tiles(p)) {  // sparse neighbourhoods: cell by cell (see for_each_cell_tile)
    const scalar_t* qpos = queries.pos.data_ptr<scalar_t>();
    auto tile = [&](int64_t, scalar_t** cols, int64_t nbp, int64_t t0, int64_t t1) {
      const scalar_t* ch[5];
      for (int c = 0; c < C; ++c) ch[c] = cols[3 + c];
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t i = order[t];
        const scalar_t* ai = qpos + 3 * t;  // sorted positions: no scattered read
        scalar_t part[5] = {0, 0, 0, 0, 0};
        fused_chunk<scalar_t, C>(cols[0], cols[1], cols[2], ch, nbp, ai[0], ai[1], ai[2], neg, r2, part);
        for (int c = 0; c < C; ++c) op[C * i + c] = static_cast<scalar_t>(coef * part[c]);
      }
    };
    auto query = [&](int64_t, int64_t t) {
      const int64_t i = order[t];
      fused_query_row<scalar_t, C>(src, ap + 3 * i, ba[i], p, neg, r2, coef, op + C * i);
    };
    for_each_cell_tile<C>(src, queries, p, tile, query);
    return;
  }
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i = order[t];
      fused_query_row<scalar_t, C>(src, ap + 3 * i, ba[i], p, neg, r2, coef, op + C * i);
    }
  });
}

at::Tensor kernel_row_sums_cpu(const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& cb_,
                               const at::Tensor& batch_a_, const at::Tensor& batch_b_, const at::Tensor& sigmas,
                               const at::Tensor& coefs, double cutoff, int64_t num_graphs) {
  check_kernel_row_sums(a_, b_, cb_, batch_a_, batch_b_, sigmas, coefs, cutoff, num_graphs);
  auto a = a_.contiguous();
  auto batch_a = batch_a_.to(at::kLong).contiguous();
  const int64_t n = a.size(0), channels = cb_.size(1);
  auto out = at::zeros({n, channels}, a.options());
  if (n == 0 || b_.size(0) == 0 || channels == 0) return out;
  const Bands bands = make_bands(sigmas, coefs);
  const double r = bands.radius(cutoff);
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
    if (fused_shape(bands, channels)) {
      const bool tiles = graph_tiles(p, num_graphs);
      dispatch_channels(channels, [&](auto c) {
        constexpr int C = decltype(c)::value;
        if constexpr (C > 0) {
          if (tiles) fused_graph_rows<scalar_t, C>(src, queries, ap, bands, r2, op, num_graphs);
          else fused_rows<scalar_t, C>(src, queries, ap, ba, p, bands, r2, op, n);
        }
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

}  // namespace

TORCH_LIBRARY_IMPL(tg_rapidalign, CPU, m) { m.impl("kernel_row_sums", &kernel_row_sums_cpu); }

}  // namespace cpu
}  // namespace tg_rapidalign
