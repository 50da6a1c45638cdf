// Capability limits of the native ops, defined once here. The Python side reads
// them from the extension module (tg_rapidalign._C.MAX_BANDS, ...; see
// csrc/extension.cpp) instead of repeating the numbers.
#pragma once

#include <cstdint>

namespace tg_rapidalign {

// Most bands of a Gaussian mixture the kernels take (sigmas / coefs of length
// 1..kMaxBands); the per-band constants live in fixed-size arrays (Bands).
constexpr int kMaxBands = 16;

// Point dimension of the ops' inputs: [N, 3]; the Python wrappers zero-pad 1-D
// and 2-D points (same distances).
constexpr int kMaxDim = 3;

// Graphs of at most this many points (per side) are scanned whole: one grid cell
// per graph, and on CPU per-graph tiles of zero-padded source arrays.
constexpr int64_t kGraphScanPoints = 256;

// Graphs up to this many points per side are what estep_moments is meant for
// (it scans every pair of a graph, as the row sums do for graphs of that size);
// larger graphs are correct but quadratic per graph, so the Python side takes
// the row-sums path for them.
constexpr int64_t kEstepGraphPoints = kGraphScanPoints;

}  // namespace tg_rapidalign
