// special_polar3: schema and argument checks. Kernels: cpu/special_polar3_kernel.cpp,
// cuda/special_polar3_kernel.cu (both run common/polar3.h); fake kernel:
// tg_rapidalign/ops/native_meta.py.
#include "special_polar3.h"

#include <torch/library.h>

namespace tg_rapidalign {

void check_special_polar3(const at::Tensor& S) {
  TORCH_CHECK_VALUE(S.dim() == 3 && S.size(1) == 3 && S.size(2) == 3,
                    "special_polar3: S must have shape [B, 3, 3], got ", S.sizes());
  TORCH_CHECK(S.scalar_type() == at::kFloat || S.scalar_type() == at::kDouble,
              "special_polar3: S must be float32 or float64, got ", S.scalar_type());
}

TORCH_LIBRARY_FRAGMENT(tg_rapidalign, m) {
  // The nearest proper rotation R = argmax tr(R^T S) of each S [B, 3, 3] (the
  // special polar factor), in closed form. Not differentiable (the detached pose).
  m.def("special_polar3(Tensor S) -> Tensor");
}

}  // namespace tg_rapidalign
