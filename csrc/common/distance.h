// The exact distance test shared by every kernel.
#pragma once

#include <limits>

#include "host_device.h"

namespace tg_rapidalign {

// Squared distance accumulated in the input dtype, in the order the pure-torch
// path uses, so that "d2 <= r2" agrees exactly at the boundary. This needs the
// compilers not to contract it into fused multiply-adds: setup.py passes
// -ffp-contract=off to the C++ compiler and --fmad=false to nvcc.
template <typename scalar_t>
TGRA_HOST_DEVICE scalar_t sqdist3(const scalar_t* a, const scalar_t* b) {
  scalar_t d0 = a[0] - b[0], d1 = a[1] - b[1], d2 = a[2] - b[2];
  return d0 * d0 + d1 * d1 + d2 * d2;
}

// The squared cutoff in the input dtype; r <= 0 (no cutoff) gives infinity.
template <typename scalar_t>
inline scalar_t cut2(double r) {
  return r > 0 ? static_cast<scalar_t>(r * r) : std::numeric_limits<scalar_t>::infinity();
}

}  // namespace tg_rapidalign
