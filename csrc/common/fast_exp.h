// exp(x) for x <= 0 for the CPU kernels, as branch-free arithmetic that
// compilers vectorise (the libm call does not): Cody-Waite reduction
// x = n ln2 + r, |r| <= ln2 / 2, a Taylor polynomial for e^r (degree 13 in
// double: relative error below 2e-16; degree 7 in float: below 1 ulp), and 2^n
// assembled in the exponent bits.
// Arguments below the smallest normal exponent are clamped there: the result
// is then a denormal-free ~1e-308 (double) / ~1e-38 (float) instead of 0.
#pragma once

#include <cstdint>
#include <cstring>

#include "host_device.h"  // TGRA_ALWAYS_INLINE

namespace tg_rapidalign {

// Always inlined: an out-of-line call inside a simd loop stops its vectorisation.
template <typename T>
TGRA_ALWAYS_INLINE T fast_exp(T x);

template <>
TGRA_ALWAYS_INLINE double fast_exp<double>(double x) {
  x = x < -708.0 ? -708.0 : x;
  const double shift = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  const double z = x * 1.4426950408889634 + shift;
  const double n = z - shift;
  double r = x - n * 0.693145751953125;  // ln2 split in a short head and a tail
  r = r - n * 1.4286068203094173e-06;
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  int64_t zi, si;
  std::memcpy(&zi, &z, sizeof zi);
  std::memcpy(&si, &shift, sizeof si);
  const int64_t bits = (zi - si + 1023) << 52;  // 2^n
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

template <>
TGRA_ALWAYS_INLINE float fast_exp<float>(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float shift = 12582912.0f;  // 1.5 * 2^23
  const float z = x * 1.44269504f + shift;
  const float n = z - shift;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t zi, si;
  std::memcpy(&zi, &z, sizeof zi);
  std::memcpy(&si, &shift, sizeof si);
  const int32_t bits = (zi - si + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

}  // namespace tg_rapidalign
