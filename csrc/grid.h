// Uniform-grid hashing shared by the CPU and CUDA kernels.
//
// Points of the "source" set are sorted by a packed (graph, cell) key; a query
// point looks up its own and the 26 neighbouring cells by binary search in the
// sorted keys. The grid is built with ATen ops, so the same code serves both
// devices; the per-point loops live in cpu/ and cuda/.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <limits>

namespace tg_rapidalign {

// Grid parameters, plain values so that kernels on either device can use them.
struct GridParams {
  double lo[3];
  double inv_h;
  double h;
  double r;       // the search radius (the cutoff)
  int64_t reach;  // cells to visit on each side of a query's cell: ceil(r / h)
  int64_t size[3];
  int64_t largest;  // the most points of one graph on either side (host only)
};

// Cells per search radius: h = r / kCellsPerRadius, so that the visited cells
// hug the ball of radius r more closely than 27 cells of side r would.
constexpr double kCellsPerRadius = 2.0;

// Graphs of at most this many points are scanned whole (one cell per graph).
constexpr int64_t kGraphCellPoints = 256;

// A source set sorted by cell: keys [M] (int64, ascending), perm [M] (original
// index of each sorted point), pos [M, 3] (positions in sorted order).
struct SortedGrid {
  at::Tensor keys;
  at::Tensor perm;
  at::Tensor pos;
  at::Tensor start;  // [num_keys + 1] first sorted point of each cell key, when small enough
  bool identity = false;  // perm is 0..M-1 (a sorted batch, one cell per graph)
};

// Cells of side h = r / kCellsPerRadius over the bounding box of both sets,
// `reach` cells of margin on each side so that neighbour offsets never leave
// the grid; h grows only when the packed key could overflow int64. One cell
// per graph (reach 0; no bounding box or cell coordinates then) when there is no
// cutoff (r <= 0), when r spans the whole cloud, or when no graph has more than
// kGraphCellPoints points.
GridParams make_grid_params(const at::Tensor& a, const at::Tensor& batch_a, const at::Tensor& b,
                            const at::Tensor& batch_b, double r, int64_t num_graphs);

// Sorts `pos` (with graph ids `batch`) by packed cell key.
SortedGrid sort_by_cell(const at::Tensor& pos, const at::Tensor& batch, const GridParams& p, int64_t num_graphs);

#if defined(__CUDACC__)
#define TGRA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TGRA_HOST_DEVICE inline
#endif

// Cell index along axis d, shifted by `reach` so that neighbours are never negative.
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
// relative 1e-6 of the cell size, so rounding never drops a neighbour (the
// exact distance test comes after).
template <typename scalar_t, typename F>
TGRA_HOST_DEVICE void for_each_column(const scalar_t* q, int64_t g, const GridParams& p, F& f) {
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

  TGRA_HOST_DEVICE void range(int64_t k_lo, int64_t k_hi, int64_t& begin, int64_t& end) const {
    if (start != nullptr) {
      begin = start[k_lo];
      end = start[k_hi + 1];
    } else {
      begin = bound(keys, m, k_lo, false);
      end = bound(keys, m, k_hi, true);
    }
  }
};

inline CellIndex cell_index(const SortedGrid& g) {
  return {g.keys.data_ptr<int64_t>(), g.keys.numel(), g.start.defined() ? g.start.data_ptr<int64_t>() : nullptr};
}

// Squared distance accumulated in the input dtype, in the order the pure-torch
// path uses, so that "d2 <= r2" agrees exactly at the boundary.
template <typename scalar_t>
TGRA_HOST_DEVICE scalar_t sqdist3(const scalar_t* a, const scalar_t* b) {
  scalar_t d0 = a[0] - b[0], d1 = a[1] - b[1], d2 = a[2] - b[2];
  return d0 * d0 + d1 * d1 + d2 * d2;
}

// Upper bound on the number of bands of a kernel mixture handled natively.
constexpr int kMaxBands = 16;

// A Gaussian mixture as plain values: k(d2) = sum_k coef[k] exp(-d2 * inv2[k]),
// inv2 = 1 / (2 sigma^2).
struct Bands {
  int count;
  double inv2[kMaxBands];
  double coef[kMaxBands];
  double sigma[kMaxBands];
};

Bands make_bands(const at::Tensor& sigmas, const at::Tensor& coefs);

// Argument checks shared by the CPU and CUDA kernels (the Python wrappers
// validate user input; these guard direct calls of the ops).
inline void check_radius_inputs(const at::Tensor& x, const at::Tensor& y) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3 && y.dim() == 2 && y.size(1) == 3,
              "radius_pairs: x and y must have shape [N, 3]");
}

inline void check_row_sums_inputs(const at::Tensor& a, const at::Tensor& b, const at::Tensor& cb) {
  TORCH_CHECK(a.dim() == 2 && a.size(1) == 3 && b.dim() == 2 && b.size(1) == 3,
              "kernel_row_sums: a and b must have shape [N, 3]");
  TORCH_CHECK(cb.dim() == 2 && cb.size(0) == b.size(0), "kernel_row_sums: cb must have shape [M, C]");
  TORCH_CHECK(a.scalar_type() == b.scalar_type() && a.scalar_type() == cb.scalar_type(),
              "kernel_row_sums: a, b and cb must share a dtype");
}

// The squared cutoff in the input dtype; r <= 0 (no cutoff) gives infinity.
template <typename scalar_t>
inline scalar_t cut2(double r) {
  return r > 0 ? static_cast<scalar_t>(r * r) : std::numeric_limits<scalar_t>::infinity();
}

}  // namespace tg_rapidalign
