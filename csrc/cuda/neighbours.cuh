// CUDA neighbour iteration over a cell-sorted grid (the device twin of
// cpu/neighbours.h): f(j, d2) for every sorted point j of graph g within r.
#pragma once

#include "../grid.h"

namespace tg_rapidalign {

template <typename scalar_t, typename F>
__device__ __forceinline__ void visit_neighbours(const scalar_t* q, int64_t g, const int64_t* keys,
                                                 const scalar_t* pos, int64_t m, const GridParams& p,
                                                 scalar_t r2, F& f) {
  int64_t c0 = cell_coord(q[0], p.lo[0], p.inv_h), c1 = cell_coord(q[1], p.lo[1], p.inv_h),
          c2 = cell_coord(q[2], p.lo[2], p.inv_h);
  for (int64_t o0 = -1; o0 <= 1; ++o0) {
    for (int64_t o1 = -1; o1 <= 1; ++o1) {
      int64_t k_lo = pack_key(g, c0 + o0, c1 + o1, c2 - 1, p);
      int64_t begin = bound(keys, m, k_lo, false), end = bound(keys, m, k_lo + 2, true);
      for (int64_t j = begin; j < end; ++j) {
        scalar_t d2 = sqdist3(q, pos + 3 * j);
        if (d2 <= r2) f(j, d2);
      }
    }
  }
}

constexpr int kThreads = 256;

inline int64_t blocks_for(int64_t n) { return (n + kThreads - 1) / kThreads; }

}  // namespace tg_rapidalign
