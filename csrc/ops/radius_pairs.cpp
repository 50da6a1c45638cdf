// radius_pairs: schema and argument checks. Kernels: cpu/radius_pairs_kernel.cpp,
// cuda/radius_pairs_kernel.cu; fake kernel: tg_rapidalign/ops/native_meta.py.
#include "radius_pairs.h"

#include <torch/library.h>

#include "common/checks.h"

namespace tg_rapidalign {

void check_radius_pairs(const at::Tensor& x, const at::Tensor& y, double r, const at::Tensor& batch_x,
                        const at::Tensor& batch_y, int64_t num_graphs) {
  constexpr const char* op = "radius_pairs";
  check_points(op, "x", x);
  check_points(op, "y", y);
  check_same_dtype(op, "y", y, "x", x);
  check_same_device(op, {{"x", &x}, {"y", &y}, {"batch_x", &batch_x}, {"batch_y", &batch_y}});
  check_radius(op, r, /*negative_means_no_cutoff=*/false);
  check_batch(op, "batch_x", batch_x, x.size(0), "x", num_graphs);
  check_batch(op, "batch_y", batch_y, y.size(0), "y", num_graphs);
}

TORCH_LIBRARY_FRAGMENT(tg_rapidalign, m) {
  // Every pair (i, j) with ||x_i - y_j|| <= r and batch_x[i] == batch_y[j]: [2, E] int64,
  // rows grouped by i. x [N, 3], y [M, 3] (float32 / float64), sorted int64 graph ids
  // in [0, num_graphs).
  m.def("radius_pairs(Tensor x, Tensor y, float r, Tensor batch_x, Tensor batch_y, int num_graphs) -> Tensor");
}

}  // namespace tg_rapidalign
