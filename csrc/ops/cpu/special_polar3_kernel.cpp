// CPU kernel of special_polar3 (schema and checks: ops/special_polar3.cpp): one
// closed-form 3 x 3 polar step per matrix.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/polar3.h"
#include "ops/special_polar3.h"

namespace tg_rapidalign {
namespace {

at::Tensor special_polar3_cpu(const at::Tensor& S_) {
  check_special_polar3(S_);
  auto S = S_.to(at::kDouble).contiguous();
  auto R = at::empty_like(S);
  const double* sp = S.data_ptr<double>();
  double* rp = R.data_ptr<double>();
  at::parallel_for(0, S.size(0), 256, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) special_polar3(sp + 9 * b, rp + 9 * b);
  });
  return R.to(S_.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(tg_rapidalign, CPU, m) { m.impl("special_polar3", &special_polar3_cpu); }

}  // namespace tg_rapidalign
