// Uniform-grid hashing shared by the CPU and CUDA kernels.
//
// Points of the "source" set are sorted by a packed (graph, cell) key; a query
// point looks up its own and the neighboring cells, by a table of cell starts
// or by binary search in the sorted keys. The grid is built with ATen ops, so
// the same code serves both devices; the per-point loops live in ops/cpu/ and
// ops/cuda/.
//
// Memory safety for bad graph ids: the CPU ops reject batches with ids outside
// [0, num_graphs) (checks.h), but the CUDA ops do not scan their batches (that
// would synchronise with the host). So the lookups here never leave their
// tables instead: a query whose graph id is outside [0, num_graphs) visits no
// cell (for_each_column), and key ranges are clipped to the table of cell
// starts (CellIndex::range), which also covers keys made from non-finite
// coordinates. Such points then simply have no neighbors.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>

#include "host_device.h"
#include "limits.h"

namespace tg_rapidalign {

// Grid parameters, plain values so that kernels on either device can use them.
struct GridParams {
  double lo[3];
  double inv_h;
  double h;
  double r;       // the search radius (the cutoff)
  int64_t reach;  // cells to visit on each side of a query's cell: ceil(r / h)
  int64_t size[3];
  int64_t num_graphs;  // queries of graph ids outside [0, num_graphs) visit nothing
  int64_t largest;     // the most points of one graph on either side (host only)
};

// Cells per search radius: h = r / kCellsPerRadius, so that the visited cells
// hug the ball of radius r more closely than 27 cells of side r would.
constexpr double kCellsPerRadius = 2.0;

// A source set sorted by cell: keys [M] (int64, ascending), perm [M] (original
// index of each sorted point), pos [M, 3] (positions in sorted order).
struct SortedGrid {
  at::Tensor keys;
  at::Tensor perm;
  at::Tensor pos;
  at::Tensor start;       // [num_keys + 1] first sorted point of each cell key, when small enough
  int64_t num_keys = 0;   // the keys the table `start` covers: [0, num_keys)
  bool identity = false;  // perm is 0..M-1 (a sorted batch, one cell per graph)
};

// Cells of side h = r / kCellsPerRadius over the bounding box of both sets,
// `reach` cells of margin on each side so that neighbor offsets never leave
// the grid; h grows only when the packed key could overflow int64. One cell
// per graph (reach 0; no bounding box or cell coordinates then) when there is no
// cutoff (r <= 0), when r spans the whole cloud, or when no graph has more than
// kGraphScanPoints points.
GridParams make_grid_params(const at::Tensor& a, const at::Tensor& batch_a, const at::Tensor& b,
                            const at::Tensor& batch_b, double r, int64_t num_graphs);

// Sorts `pos` (with graph ids `batch`) by packed cell key.
SortedGrid sort_by_cell(const at::Tensor& pos, const at::Tensor& batch, const GridParams& p, int64_t num_graphs);

// Cell index along axis d, shifted by `reach` so that neighbors are never negative.
TGRA_HOST_DEVICE int64_t cell_coord(double v, const GridParams& p, int d) {
  return static_cast<int64_t>(floor((v - p.lo[d]) * p.inv_h)) + p.reach;
}

TGRA_HOST_DEVICE int64_t pack_key(int64_t g, int64_t c0, int64_t c1, int64_t c2, const GridParams& p) {
  return ((g * p.size[0] + c0) * p.size[1] + c1) * p.size[2] + c2;
}

// First index in keys[0, n) whose key is >= k (or > k when `upper`).
TGRA_HOST_DEVICE int64_t bound(const int64_t* keys, int64_t n, int64_t k, bool upper) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    bool go_right = upper ? keys[mid] <= k : keys[mid] < k;
    if (go_right) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Calls f(key_begin, key_end) (inclusive key range, consecutive cells along the
// last axis) for every column of cells around q that can hold a point within r:
// columns further than r from q in the first two axes are skipped and each
// column is clipped to the cells the ball reaches. The tests are padded by a
// relative 1e-6 of the cell size, so rounding never drops a neighbor (the
// exact distance test comes after). A graph id g outside [0, num_graphs)
// visits nothing.
template <typename scalar_t, typename F>
TGRA_HOST_DEVICE void for_each_column(const scalar_t* q, int64_t g, const GridParams& p, F& f) {
  if (g < 0 || g >= p.num_graphs) return;
  if (p.reach == 0) {  // one cell per graph: the key is the graph id
    f(g, g);
    return;
  }
  const double pad = 1e-6 * p.h;
  const double r = p.r + pad;
  int64_t c[3];
  for (int d = 0; d < 3; ++d) c[d] = cell_coord(double(q[d]), p, d);
  for (int64_t o0 = -p.reach; o0 <= p.reach; ++o0) {
    // Gap from q to the slab of cells c0 + o0 along axis 0 (0 inside it).
    const double lo0 = p.lo[0] + (c[0] + o0 - p.reach) * p.h, hi0 = lo0 + p.h;
    const double g0 = fmax(0.0, fmax(lo0 - double(q[0]), double(q[0]) - hi0)) - pad;
    for (int64_t o1 = -p.reach; o1 <= p.reach; ++o1) {
      const double lo1 = p.lo[1] + (c[1] + o1 - p.reach) * p.h, hi1 = lo1 + p.h;
      const double g1 = fmax(0.0, fmax(lo1 - double(q[1]), double(q[1]) - hi1)) - pad;
      const double gap2 = fmax(g0, 0.0) * fmax(g0, 0.0) + fmax(g1, 0.0) * fmax(g1, 0.0);
      if (gap2 > r * r) continue;
      const double dz = sqrt(r * r - gap2);
      int64_t z0 = cell_coord(double(q[2]) - dz, p, 2);
      int64_t z1 = cell_coord(double(q[2]) + dz, p, 2);
      z0 = z0 < c[2] - p.reach ? c[2] - p.reach : z0;
      z1 = z1 > c[2] + p.reach ? c[2] + p.reach : z1;
      f(pack_key(g, c[0] + o0, c[1] + o1, z0, p), pack_key(g, c[0] + o0, c[1] + o1, z1, p));
    }
  }
}

// Where the points of a range of cell keys lie in the sorted order: a direct
// table lookup when the grid has one, else binary search in the sorted keys.
struct CellIndex {
  const int64_t* keys;
  int64_t m;
  const int64_t* start;  // nullptr: no table
  int64_t num_keys;      // the table covers keys [0, num_keys)

  TGRA_HOST_DEVICE void range(int64_t k_lo, int64_t k_hi, int64_t& begin, int64_t& end) const {
    if (start != nullptr) {
      // Valid queries only form keys inside the table; clipping keeps the
      // others (bad graph ids, non-finite coordinates) inside it too.
      k_lo = k_lo < 0 ? 0 : k_lo;
      k_hi = k_hi >= num_keys ? num_keys - 1 : k_hi;
      if (k_lo > k_hi) {
        begin = end = 0;
        return;
      }
      begin = start[k_lo];
      end = start[k_hi + 1];
    } else {
      begin = bound(keys, m, k_lo, false);
      end = bound(keys, m, k_hi, true);
    }
  }
};

inline CellIndex cell_index(const SortedGrid& g) {
  return {g.keys.data_ptr<int64_t>(), g.keys.numel(), g.start.defined() ? g.start.data_ptr<int64_t>() : nullptr,
          g.num_keys};
}

}  // namespace tg_rapidalign
