// CPU neighbour iteration over a cell-sorted grid.
#pragma once

#include "../grid.h"

namespace tg_rapidalign {

// Calls f(j, d2) for every point j of `grid` (sorted index) of graph g with
// d2 = ||q - pos_j||^2 <= r2. Cells along the last axis are consecutive keys,
// so the 27 neighbouring cells take 9 binary-searched ranges.
template <typename scalar_t, typename F>
void for_each_neighbour(const scalar_t* xi, int64_t g, const SortedGrid& grid, const GridParams& p,
                        scalar_t r2, F&& f) {
  const int64_t* keys = grid.keys.data_ptr<int64_t>();
  const scalar_t* ys = grid.pos.data_ptr<scalar_t>();
  const int64_t m = grid.keys.numel();
  int64_t c0 = cell_coord(xi[0], p.lo[0], p.inv_h), c1 = cell_coord(xi[1], p.lo[1], p.inv_h),
          c2 = cell_coord(xi[2], p.lo[2], p.inv_h);
  for (int64_t o0 = -1; o0 <= 1; ++o0) {
    for (int64_t o1 = -1; o1 <= 1; ++o1) {
      // Cells along the last axis are consecutive keys: one range per (o0, o1).
      int64_t k_lo = pack_key(g, c0 + o0, c1 + o1, c2 - 1, p);
      int64_t begin = bound(keys, m, k_lo, false), end = bound(keys, m, k_lo + 2, true);
      for (int64_t j = begin; j < end; ++j) {
        scalar_t d2 = sqdist3(xi, ys + 3 * j);
        if (d2 <= r2) f(j, d2);
      }
    }
  }
}

}  // namespace tg_rapidalign
