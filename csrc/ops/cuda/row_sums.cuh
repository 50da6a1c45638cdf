// Shared by the CUDA kernels of kernel_row_sums and kernel_row_sums_backward:
// one thread per row, threads in cell order (the row set is sorted into the same
// grid as the scanned set), so rows need no atomics and a warp reads the same
// cells. Channel sums stay in registers for the specialised channel counts
// (common/channels.h, the same set the CPU kernels specialise); the
// single-band kernels keep their constants in registers too.
#pragma once

#include <ATen/AccumulateType.h>

#include <cstdint>
#include <type_traits>

#include "common/bands.h"
#include "common/channels.h"
#include "common/cuda_launch.cuh"
#include "common/distance.h"
#include "common/limits.h"
#include "common/neighbors.cuh"

namespace tg_rapidalign {
namespace cuda {
namespace {  // internal linkage, as when these lived in one file's anonymous namespace

// The mixture's constants in the accumulation type: NB > 0 bands known at
// compile time (registers), NB == 0 up to kMaxBands read at run time.
template <typename acc_t, int NB>
struct DeviceBands {
  static constexpr int kCap = NB > 0 ? NB : kMaxBands;
  int count;
  acc_t inv2[kCap], coef[kCap], inv_s3[kCap];

  __device__ explicit DeviceBands(const Bands& b) : count(NB > 0 ? NB : b.count) {
    for (int q = 0; q < count; ++q) {
      inv2[q] = acc_t(b.inv2[q]);
      coef[q] = acc_t(b.coef[q]);
      inv_s3[q] = acc_t(1.0 / (b.sigma[q] * b.sigma[q] * b.sigma[q]));
    }
  }
  __device__ __forceinline__ int n() const { return NB > 0 ? NB : count; }
};

// Register accumulators for NC > 0 channels; NC == 0 adds straight to memory.
template <typename acc_t, int NC>
struct ChannelAcc {
  acc_t v[NC > 0 ? NC : 1];
  __device__ ChannelAcc() {
    for (int c = 0; c < (NC > 0 ? NC : 1); ++c) v[c] = acc_t(0);
  }
};

// Calls f(std::integral_constant<int, NC>{}, std::integral_constant<int, NB>{})
// with the compile-time channel count (0: run-time) and band count (0: run-time).
template <typename F>
void dispatch_shape(int64_t channels, int bands, F&& f) {
  dispatch_channels(channels, [&](auto nc) {
    if (bands == 1) f(nc, std::integral_constant<int, 1>{});
    else f(nc, std::integral_constant<int, 0>{});
  });
}

}  // namespace
}  // namespace cuda
}  // namespace tg_rapidalign
