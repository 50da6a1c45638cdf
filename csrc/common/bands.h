// A Gaussian mixture's constants as plain values, passed by value to kernels on
// either device.
#pragma once

#include <ATen/ATen.h>

#include "limits.h"

namespace tg_rapidalign {

// k(d2) = sum_k coef[k] exp(-d2 * inv2[k]), inv2 = 1 / (2 sigma^2).
struct Bands {
  int count;
  double inv2[kMaxBands];
  double coef[kMaxBands];
  double sigma[kMaxBands];
};

// sigmas and coefs [K], 1 <= K <= kMaxBands (checked by the ops' dispatch, and
// again here); brought to the host.
Bands make_bands(const at::Tensor& sigmas, const at::Tensor& coefs);

}  // namespace tg_rapidalign
