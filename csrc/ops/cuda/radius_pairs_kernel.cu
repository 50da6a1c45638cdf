// CUDA kernel of radius_pairs (schema and checks: ops/radius_pairs.cpp): exact
// radius search, grids by sorting cell ids, one thread per query point (in cell
// order); a counting pass and a writing pass at the exclusive prefix sum, so rows
// come out grouped by query in input order. Graph ids are not scanned here (that
// would synchronise with the host): points with ids outside [0, num_graphs) get
// no pairs, never an out-of-bounds read (common/grid.h).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/cuda_launch.cuh"
#include "common/neighbors.cuh"
#include "ops/radius_pairs.h"

namespace tg_rapidalign {
namespace {

template <typename scalar_t>
struct CountPairs {
  int64_t count = 0;
  __device__ void operator()(int64_t, scalar_t) { ++count; }
};

struct WritePairs {
  int64_t i, k;
  int64_t *rows, *cols;
  const int64_t* perm;
  template <typename scalar_t>
  __device__ void operator()(int64_t j, scalar_t) {
    rows[k] = i;
    cols[k] = perm[j];
    ++k;
  }
};

// xs, gx, perm_x: the query set in cell order, its graph ids and input indices.
template <typename scalar_t>
__global__ void count_kernel(const scalar_t* xs, const int64_t* gx, const int64_t* perm_x, int64_t n,
                             CellIndex index, const scalar_t* ys, GridParams p, scalar_t r2, int64_t* counts) {
  const int64_t t = thread_index();
  if (t >= n) return;
  CountPairs<scalar_t> f;
  visit_neighbors(xs + 3 * t, gx[t], index, ys, p, r2, f);
  counts[perm_x[t]] = f.count;
}

template <typename scalar_t>
__global__ void write_kernel(const scalar_t* xs, const int64_t* gx, const int64_t* perm_x, int64_t n,
                             CellIndex index, const scalar_t* ys, const int64_t* perm_y, GridParams p, scalar_t r2,
                             const int64_t* offsets, int64_t* rows, int64_t* cols) {
  const int64_t t = thread_index();
  if (t >= n) return;
  const int64_t i = perm_x[t];
  WritePairs f{i, offsets[i], rows, cols, perm_y};
  visit_neighbors(xs + 3 * t, gx[t], index, ys, p, r2, f);
}

at::Tensor radius_pairs_cuda(const at::Tensor& x_, const at::Tensor& y_, double r, const at::Tensor& batch_x_,
                             const at::Tensor& batch_y_, int64_t num_graphs) {
  check_radius_pairs(x_, y_, r, batch_x_, batch_y_, num_graphs);
  c10::cuda::CUDAGuard guard(x_.device());
  auto x = x_.contiguous();
  auto batch_x = batch_x_.to(at::kLong).contiguous();
  const int64_t n = x.size(0);
  if (n == 0 || y_.size(0) == 0) return at::empty({2, 0}, x.options().dtype(at::kLong));
  GridParams p = make_grid_params(x, batch_x, y_, batch_y_, r, num_graphs);
  SortedGrid grid = sort_by_cell(y_.contiguous(), batch_y_, p, num_graphs);
  SortedSet queries(x, batch_x, p, num_graphs);
  auto counts = at::zeros({n}, x.options().dtype(at::kLong));
  auto stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "radius_pairs_cuda", [&] {
    const scalar_t r2 = static_cast<scalar_t>(r * r);
    count_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        queries.grid.pos.data_ptr<scalar_t>(), queries.graph.data_ptr<int64_t>(),
        queries.grid.perm.data_ptr<int64_t>(), n, cell_index(grid), grid.pos.data_ptr<scalar_t>(), p, r2,
        counts.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto offsets = at::cumsum(counts, 0) - counts;
    const int64_t total = (offsets[n - 1] + counts[n - 1]).item<int64_t>();
    out = at::empty({2, total}, x.options().dtype(at::kLong));
    if (total > 0) {
      write_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
          queries.grid.pos.data_ptr<scalar_t>(), queries.graph.data_ptr<int64_t>(),
          queries.grid.perm.data_ptr<int64_t>(), n, cell_index(grid), grid.pos.data_ptr<scalar_t>(),
          grid.perm.data_ptr<int64_t>(), p, r2, offsets.data_ptr<int64_t>(), out.data_ptr<int64_t>(),
          out.data_ptr<int64_t>() + total);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tg_rapidalign, CUDA, m) { m.impl("radius_pairs", &radius_pairs_cuda); }

}  // namespace tg_rapidalign
