// special_polar3: the nearest proper rotation to each S [B, 3, 3].
#pragma once

#include <ATen/ATen.h>

namespace tg_rapidalign {

// The op's argument checks (special_polar3.cpp), called first by its kernels on
// every device.
void check_special_polar3(const at::Tensor& S);

}  // namespace tg_rapidalign
