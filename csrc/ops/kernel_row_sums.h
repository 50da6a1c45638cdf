// kernel_row_sums: T[i, c] = sum_{j in graph(i), ||a_i - b_j|| <= r} k(a_i, b_j) cb[j, c].
#pragma once

#include <ATen/ATen.h>

namespace tg_rapidalign {

// The op's argument checks (kernel_row_sums.cpp), called first by its kernels on
// every device.
void check_kernel_row_sums(const at::Tensor& a, const at::Tensor& b, const at::Tensor& cb,
                           const at::Tensor& batch_a, const at::Tensor& batch_b, const at::Tensor& sigmas,
                           const at::Tensor& coefs, double cutoff, int64_t num_graphs);

// The same for the backward, plus grad [N, C]; `op` names the op in messages.
void check_row_sums_arguments(const char* op, const at::Tensor& a, const at::Tensor& b, const at::Tensor& cb,
                              const at::Tensor& batch_a, const at::Tensor& batch_b, const at::Tensor& sigmas,
                              const at::Tensor& coefs, double cutoff, int64_t num_graphs);

}  // namespace tg_rapidalign
