// estep_moments: schema and argument checks. Kernel: cpu/estep_moments_kernel.cpp;
// fake kernel: tg_rapidalign/ops/native_meta.py.
//
// There is no CUDA kernel (tg_rapidalign._C.ESTEP_CUDA is 0), and deliberately
// no CUDA registration either: the Python side asks the dispatcher whether a
// CUDA kernel exists (torch._C._dispatch_has_kernel_for_dispatch_key), so an
// "always raise" kernel would read as support. CUDA arguments (any one of them)
// therefore end in the dispatcher's NotImplementedError "Could not run
// 'tg_rapidalign::estep_moments' with arguments from the 'CUDA' backend", before
// any kernel code runs.
#include "estep_moments.h"

#include <torch/library.h>

#include "common/checks.h"

namespace tg_rapidalign {

void check_estep_moments(const at::Tensor& x, const at::Tensor& y, const at::Tensor& q, const at::Tensor& p,
                         const at::Tensor& batch_x, const at::Tensor& batch_y, const at::Tensor& R,
                         const at::Tensor& t, const at::Tensor& sigmas, const at::Tensor& coefs, double cutoff,
                         int64_t num_graphs) {
  constexpr const char* op = "estep_moments";
  check_points(op, "x", x);
  check_points(op, "y", y);
  check_same_dtype(op, "y", y, "x", x);
  check_vector(op, "q", q, x.size(0), "x");
  check_vector(op, "p", p, y.size(0), "y");
  check_same_dtype(op, "q", q, "x", x);
  check_same_dtype(op, "p", p, "x", x);
  check_same_device(op, {{"x", &x}, {"y", &y}, {"q", &q}, {"p", &p}, {"batch_x", &batch_x}, {"batch_y", &batch_y},
                         {"R", &R}, {"t", &t}, {"sigmas", &sigmas}, {"coefs", &coefs}});
  TORCH_CHECK_VALUE(num_graphs >= 0, op, ": num_graphs must be >= 0, got ", num_graphs);
  TORCH_CHECK_VALUE(R.dim() == 3 && R.size(0) == num_graphs && R.size(1) == 3 && R.size(2) == 3, op,
                    ": R must have shape [num_graphs = ", num_graphs, ", 3, 3], got ", R.sizes());
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(0) == num_graphs && t.size(1) == 3, op,
                    ": t must have shape [num_graphs = ", num_graphs, ", 3], got ", t.sizes());
  check_same_dtype(op, "R", R, "x", x);
  check_same_dtype(op, "t", t, "x", x);
  check_bands(op, sigmas, coefs, x, /*exact=*/1);
  check_cutoff(op, cutoff);
  check_batch(op, "batch_x", batch_x, x.size(0), "x", num_graphs);
  check_batch(op, "batch_y", batch_y, y.size(0), "y", num_graphs);
}

TORCH_LIBRARY_FRAGMENT(tg_rapidalign, m) {
  // The alignment E-step of one band, per graph (sorted batches, every pair of a
  // graph scanned: for graphs of up to ESTEP_GRAPH_POINTS points): with
  // z_j = R_g y_j + t_g and w_ij = q_i coef exp(-|x_i - z_j|^2 / (2 sigma^2)) p_j
  // over |x_i - z_j| <= r = cutoff * sigma (negative cutoff: every pair), the [B, 18] columns sum w, sum w x (3), sum w y (3),
  // sum w x y^T (9, row-major), sum w |x|^2, sum w |y|^2. Not differentiable (the
  // pose step is a constant). CPU only.
  m.def(
      "estep_moments(Tensor x, Tensor y, Tensor q, Tensor p, Tensor batch_x, Tensor batch_y, Tensor R, "
      "Tensor t, Tensor sigmas, Tensor coefs, float cutoff, int num_graphs) -> Tensor");
}

}  // namespace tg_rapidalign
