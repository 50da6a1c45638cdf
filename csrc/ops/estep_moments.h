// estep_moments: the alignment E-step of one band, per graph (CPU only).
#pragma once

#include <ATen/ATen.h>

namespace tg_rapidalign {

// The op's argument checks (estep_moments.cpp), called first by its kernel.
void check_estep_moments(const at::Tensor& x, const at::Tensor& y, const at::Tensor& q, const at::Tensor& p,
                         const at::Tensor& batch_x, const at::Tensor& batch_y, const at::Tensor& R,
                         const at::Tensor& t, const at::Tensor& sigmas, const at::Tensor& coefs, double cutoff,
                         int64_t num_graphs);

}  // namespace tg_rapidalign
