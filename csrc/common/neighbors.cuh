// CUDA neighbor iteration over a cell-sorted grid (the device twin of
// neighbors.h): f(j, d2) for every sorted point j of graph g within r.
#pragma once

#include "distance.h"
#include "grid.h"

namespace tg_rapidalign {

template <typename scalar_t, typename F>
struct ColumnVisitor {
  const scalar_t* q;
  CellIndex index;
  const scalar_t* pos;
  scalar_t r2;
  F* f;
  __device__ void operator()(int64_t k_lo, int64_t k_hi) {
    int64_t begin, end;
    index.range(k_lo, k_hi, begin, end);
    for (int64_t j = begin; j < end; ++j) {
      scalar_t d2 = sqdist3(q, pos + 3 * j);
      if (d2 <= r2) (*f)(j, d2);
    }
  }
};

template <typename scalar_t, typename F>
__device__ __forceinline__ void visit_neighbors(const scalar_t* q, int64_t g, const CellIndex& index,
                                                 const scalar_t* pos, const GridParams& p, scalar_t r2, F& f) {
  ColumnVisitor<scalar_t, F> column{q, index, pos, r2, &f};
  for_each_column(q, g, p, column);
}

// A point set sorted into the grid, with the graph id of each sorted point.
// Threads run over queries in this cell order, so the 32 threads of a warp scan
// the same cells: coalesced, cached loads and little divergence.
struct SortedSet {
  SortedGrid grid;
  at::Tensor graph;
  SortedSet(const at::Tensor& pos, const at::Tensor& batch, const GridParams& p, int64_t num_graphs)
      : grid(sort_by_cell(pos, batch, p, num_graphs)), graph(batch.index_select(0, grid.perm).contiguous()) {}
};

}  // namespace tg_rapidalign
