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

namespace tg_rapidalign {

// Grid parameters, plain values so that kernels on either device can use them.
struct GridParams {
  double lo[3];
  double inv_h;
  int64_t size[3];
};

// A source set sorted by cell: keys [M] (int64, ascending), perm [M] (original
// index of each sorted point), pos [M, 3] (positions in sorted order).
struct SortedGrid {
  at::Tensor keys;
  at::Tensor perm;
  at::Tensor pos;
};

// Cells of side h >= r over the bounding box of both sets, one cell of margin
// on each side so that neighbour offsets never leave the grid; h grows past r
// only when the packed key could overflow int64. r <= 0: one cell for all.
GridParams make_grid_params(const at::Tensor& a, const at::Tensor& b, double r, int64_t num_graphs);

// Sorts `pos` (with graph ids `batch`) by packed cell key.
SortedGrid sort_by_cell(const at::Tensor& pos, const at::Tensor& batch, const GridParams& p);

#if defined(__CUDACC__)
#define TGRA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TGRA_HOST_DEVICE inline
#endif

TGRA_HOST_DEVICE int64_t cell_coord(double v, double lo, double inv_h) {
  return static_cast<int64_t>(floor((v - lo) * inv_h)) + 1;
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

}  // namespace tg_rapidalign
