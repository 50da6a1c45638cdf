// CPU neighbor iteration over a cell-sorted grid (the CUDA twin: neighbors.cuh).
#pragma once

#include "distance.h"
#include "grid.h"

namespace tg_rapidalign {

// Calls f(j, d2) for every point j of `grid` (sorted index) of graph g with
// d2 = ||q - pos_j||^2 <= r2, visiting the cell columns the ball reaches.
template <typename scalar_t, typename F>
void for_each_neighbor(const scalar_t* xi, int64_t g, const SortedGrid& grid, const GridParams& p,
                        scalar_t r2, F&& f) {
  const CellIndex index = cell_index(grid);
  const scalar_t* ys = grid.pos.data_ptr<scalar_t>();
  auto column = [&](int64_t k_lo, int64_t k_hi) {
    int64_t begin, end;
    index.range(k_lo, k_hi, begin, end);
    for (int64_t j = begin; j < end; ++j) {
      scalar_t d2 = sqdist3(xi, ys + 3 * j);
      if (d2 <= r2) f(j, d2);
    }
  };
  for_each_column(xi, g, p, column);
}

}  // namespace tg_rapidalign
