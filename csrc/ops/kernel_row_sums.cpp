// kernel_row_sums: schema and argument checks. Kernels: cpu/kernel_row_sums_kernel.cpp,
// cuda/kernel_row_sums_kernel.cu; fake kernel and autograd: tg_rapidalign/ops/native_meta.py.
#include "kernel_row_sums.h"

#include <torch/library.h>

#include "common/checks.h"

namespace tg_rapidalign {

void check_row_sums_arguments(const char* op, const at::Tensor& a, const at::Tensor& b, const at::Tensor& cb,
                              const at::Tensor& batch_a, const at::Tensor& batch_b, const at::Tensor& sigmas,
                              const at::Tensor& coefs, double cutoff, int64_t num_graphs) {
  check_points(op, "a", a);
  check_points(op, "b", b);
  check_same_dtype(op, "b", b, "a", a);
  TORCH_CHECK_VALUE(cb.dim() == 2 && cb.size(0) == b.size(0), op, ": cb must have shape [b.size(0) = ",
                    b.size(0), ", C], got ", cb.sizes());
  check_same_dtype(op, "cb", cb, "a", a);
  check_same_device(op, {{"a", &a}, {"b", &b}, {"cb", &cb}, {"batch_a", &batch_a}, {"batch_b", &batch_b},
                         {"sigmas", &sigmas}, {"coefs", &coefs}});
  check_bands(op, sigmas, coefs, a);
  check_cutoff(op, cutoff);
  check_batch(op, "batch_a", batch_a, a.size(0), "a", num_graphs);
  check_batch(op, "batch_b", batch_b, b.size(0), "b", num_graphs);
}

void check_kernel_row_sums(const at::Tensor& a, const at::Tensor& b, const at::Tensor& cb,
                           const at::Tensor& batch_a, const at::Tensor& batch_b, const at::Tensor& sigmas,
                           const at::Tensor& coefs, double cutoff, int64_t num_graphs) {
  check_row_sums_arguments("kernel_row_sums", a, b, cb, batch_a, batch_b, sigmas, coefs, cutoff, num_graphs);
}

TORCH_LIBRARY_FRAGMENT(tg_rapidalign, m) {
  // T[i, c] = sum_{j in graph(i), ||a_i - b_j|| <= r} k(a_i, b_j) cb[j, c], with
  // k = sum_k coefs[k] exp(-d^2 / (2 sigmas[k]^2)) and r = cutoff * max_k sigmas[k]
  // (the cutoff in units of the widest band; negative: no cutoff). a [N, 3],
  // b [M, 3], cb [M, C], sigmas and coefs [K] (1 <= K <= MAX_BANDS) of one dtype
  // (float32 / float64), sorted int64 graph ids in [0, num_graphs): [N, C].
  m.def(
      "kernel_row_sums(Tensor a, Tensor b, Tensor cb, Tensor batch_a, Tensor batch_b, Tensor sigmas, "
      "Tensor coefs, float cutoff, int num_graphs) -> Tensor");
}

}  // namespace tg_rapidalign
