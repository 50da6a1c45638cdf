// The channel counts of kernel_row_sums that both devices' kernels specialise
// at compile time (the library's callers in tg_rapidalign/ops):
//   1  the self sums and cross sums of MMD / cosine and the alignment's correlation
//      (native.self_sum, native.kernel_row_sums with w.unsqueeze(1)),
//   4  the first-moment rows [w, w b] (native.row_sums_first_moment),
//   5  the E-step rows [p, p y, p |y|^2] (correlation._thin).
// Every other count runs the generic code (run-time channel loop).
#pragma once

#include <cstdint>
#include <type_traits>

namespace tg_rapidalign {

constexpr bool is_specialised_channels(int64_t channels) {
  return channels == 1 || channels == 4 || channels == 5;
}

// Calls f(std::integral_constant<int, C>{}) with C the channel count when it is
// specialised, else C = 0 (generic).
template <typename F>
inline void dispatch_channels(int64_t channels, F&& f) {
  switch (channels) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    default: f(std::integral_constant<int, 0>{});
  }
}

}  // namespace tg_rapidalign
