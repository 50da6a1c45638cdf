// CPU kernel of radius_pairs (schema and checks: ops/radius_pairs.cpp): exact
// radius search, grid hash of y, parallel over x (two passes: count, then write
// at the exclusive prefix sum of the counts).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/neighbors.h"
#include "ops/radius_pairs.h"

namespace tg_rapidalign {
namespace {

at::Tensor radius_pairs_cpu(const at::Tensor& x_, const at::Tensor& y_, double r, const at::Tensor& batch_x_,
                            const at::Tensor& batch_y_, int64_t num_graphs) {
  check_radius_pairs(x_, y_, r, batch_x_, batch_y_, num_graphs);
  auto x = x_.contiguous();
  auto batch_x = batch_x_.to(at::kLong).contiguous();
  const int64_t n = x.size(0);
  if (n == 0 || y_.size(0) == 0) return at::empty({2, 0}, x.options().dtype(at::kLong));
  GridParams p = make_grid_params(x, batch_x, y_, batch_y_, r, num_graphs);
  SortedGrid grid = sort_by_cell(y_.contiguous(), batch_y_, p, num_graphs);
  auto counts = at::zeros({n}, x.options().dtype(at::kLong));
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "radius_pairs_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const int64_t* bx = batch_x.data_ptr<int64_t>();
    const scalar_t r2 = static_cast<scalar_t>(r * r);
    int64_t* cnt = counts.data_ptr<int64_t>();
    at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        int64_t c = 0;
        for_each_neighbor(xp + 3 * i, bx[i], grid, p, r2, [&](int64_t, scalar_t) { ++c; });
        cnt[i] = c;
      }
    });
    auto offsets = at::cumsum(counts, 0) - counts;
    const int64_t total = n ? offsets[n - 1].item<int64_t>() + cnt[n - 1] : 0;
    out = at::empty({2, total}, x.options().dtype(at::kLong));
    int64_t* rows = out.data_ptr<int64_t>();
    int64_t* cols = rows + total;
    const int64_t* off = offsets.data_ptr<int64_t>();
    const int64_t* perm = grid.perm.data_ptr<int64_t>();
    at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        int64_t k = off[i];
        for_each_neighbor(xp + 3 * i, bx[i], grid, p, r2, [&](int64_t j, scalar_t) {
          rows[k] = i;
          cols[k] = perm[j];
          ++k;
        });
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tg_rapidalign, CPU, m) { m.impl("radius_pairs", &radius_pairs_cpu); }

}  // namespace tg_rapidalign
