// The mixture's constants brought to the host once per call.
#include "bands.h"

namespace tg_rapidalign {

Bands make_bands(const at::Tensor& sigmas, const at::Tensor& coefs) {
  TORCH_CHECK(sigmas.dim() == 1 && coefs.dim() == 1 && sigmas.numel() == coefs.numel(),
              "sigmas and coefs must be 1-d of equal length");
  TORCH_CHECK(sigmas.numel() >= 1 && sigmas.numel() <= kMaxBands, "between 1 and ", kMaxBands,
              " kernel bands are supported, got ", sigmas.numel());
  auto s = sigmas.to(at::kDouble).cpu(), c = coefs.to(at::kDouble).cpu();
  Bands b;
  b.count = static_cast<int>(sigmas.numel());
  for (int k = 0; k < b.count; ++k) {
    b.sigma[k] = s[k].item<double>();
    b.inv2[k] = 0.5 / (b.sigma[k] * b.sigma[k]);
    b.coef[k] = c[k].item<double>();
  }
  return b;
}

double Bands::radius(double cutoff) const {
  if (cutoff < 0) return -1.0;
  double widest = 0.0;
  for (int k = 0; k < count; ++k) widest = sigma[k] > widest ? sigma[k] : widest;
  return cutoff * widest;
}

}  // namespace tg_rapidalign
