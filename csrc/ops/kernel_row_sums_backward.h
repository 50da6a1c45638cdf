// kernel_row_sums_backward: the gradients of sum(grad * kernel_row_sums(...)).
#pragma once

#include <ATen/ATen.h>

namespace tg_rapidalign {

// The op's argument checks (kernel_row_sums_backward.cpp), called first by its
// kernels on every device.
void check_kernel_row_sums_backward(const at::Tensor& grad, const at::Tensor& a, const at::Tensor& b,
                                    const at::Tensor& cb, const at::Tensor& batch_a, const at::Tensor& batch_b,
                                    const at::Tensor& sigmas, const at::Tensor& coefs, double cutoff,
                                    int64_t num_graphs);

}  // namespace tg_rapidalign
