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

  // The neighbor radius of a cutoff given in units of the widest band:
  // cutoff * max_k sigma[k], or -1 (no cutoff) for a negative cutoff. The ops
  // take the cutoff rather than a radius so that a learnable bandwidth never has
  // to be read on the host by the caller (a sync that breaks torch.compile).
  double radius(double cutoff) const;
};

// sigmas and coefs [K], 1 <= K <= kMaxBands (checked by the ops' dispatch, and
// again here); brought to the host.
Bands make_bands(const at::Tensor& sigmas, const at::Tensor& coefs);

}  // namespace tg_rapidalign
