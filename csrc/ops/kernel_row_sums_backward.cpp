// kernel_row_sums_backward: schema and argument checks. Kernels:
// cpu/kernel_row_sums_backward_kernel.cpp, cuda/kernel_row_sums_backward_kernel.cu;
// fake kernel: tg_rapidalign/ops/native_meta.py.
#include "kernel_row_sums_backward.h"

#include <torch/library.h>

#include "common/checks.h"
#include "kernel_row_sums.h"

namespace tg_rapidalign {

void check_kernel_row_sums_backward(const at::Tensor& grad, const at::Tensor& a, const at::Tensor& b,
                                    const at::Tensor& cb, const at::Tensor& batch_a, const at::Tensor& batch_b,
                                    const at::Tensor& sigmas, const at::Tensor& coefs, double cutoff,
                                    int64_t num_graphs) {
  constexpr const char* op = "kernel_row_sums_backward";
  check_row_sums_arguments(op, a, b, cb, batch_a, batch_b, sigmas, coefs, cutoff, num_graphs);
  TORCH_CHECK_VALUE(grad.dim() == 2 && grad.size(0) == a.size(0) && grad.size(1) == cb.size(1), op,
                    ": grad must have shape [a.size(0), cb.size(1)] = [", a.size(0), ", ", cb.size(1), "], got ",
                    grad.sizes());
  check_same_dtype(op, "grad", grad, "a", a);
  check_same_device(op, {{"a", &a}, {"grad", &grad}});
}

TORCH_LIBRARY_FRAGMENT(tg_rapidalign, m) {
  // Gradients of sum(grad * kernel_row_sums(...)) w.r.t. a, b, cb, sigmas, coefs;
  // need_a covers a, sigmas and coefs, need_b covers b and cb (the others come back zero).
  m.def(
      "kernel_row_sums_backward(Tensor grad, Tensor a, Tensor b, Tensor cb, Tensor batch_a, "
      "Tensor batch_b, Tensor sigmas, Tensor coefs, float cutoff, int num_graphs, bool need_a, bool need_b) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

}  // namespace tg_rapidalign
