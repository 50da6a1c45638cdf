// radius_pairs: every pair (i, j) with ||x_i - y_j|| <= r and batch_x[i] == batch_y[j].
#pragma once

#include <ATen/ATen.h>

namespace tg_rapidalign {

// The op's argument checks (radius_pairs.cpp), called first by its kernels on
// every device.
void check_radius_pairs(const at::Tensor& x, const at::Tensor& y, double r, const at::Tensor& batch_x,
                        const at::Tensor& batch_y, int64_t num_graphs);

}  // namespace tg_rapidalign
