// CPU kernel of estep_moments (schema and checks: ops/estep_moments.cpp; there is
// no CUDA kernel): per graph, the transformed sources z_j = R_g y_j + t_g and
// the channels [p, p y, p |y|^2] go into zero-padded arrays once, then every x
// point of the graph runs one fused pass over them (row_sums.h's fused_chunk).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ops/cpu/row_sums.h"
#include "ops/estep_moments.h"

namespace tg_rapidalign {
namespace cpu {
namespace {

at::Tensor estep_moments_cpu(const at::Tensor& x_, const at::Tensor& y_, const at::Tensor& q_,
                             const at::Tensor& p_, const at::Tensor& batch_x_, const at::Tensor& batch_y_,
                             const at::Tensor& R_, const at::Tensor& t_, const at::Tensor& sigmas,
                             const at::Tensor& coefs, double cutoff, int64_t num_graphs) {
  check_estep_moments(x_, y_, q_, p_, batch_x_, batch_y_, R_, t_, sigmas, coefs, cutoff, num_graphs);
  auto x = x_.contiguous(), y = y_.contiguous(), q = q_.contiguous(), p = p_.contiguous();
  auto R = R_.to(at::kDouble).contiguous(), t = t_.to(at::kDouble).contiguous();
  auto bx = batch_x_.to(at::kLong).contiguous(), by = batch_y_.to(at::kLong).contiguous();
  auto all = at::arange(num_graphs + 1, bx.options());
  auto sx = at::searchsorted(bx, all).contiguous(), sy = at::searchsorted(by, all).contiguous();
  auto out = at::zeros({num_graphs, 18}, x.options().dtype(at::kDouble));
  const Bands bands = make_bands(sigmas, coefs);
  const double r = bands.radius(cutoff);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "estep_moments_cpu", [&] {
    constexpr int W = kLanes<scalar_t>;
    const scalar_t neg = static_cast<scalar_t>(-bands.inv2[0]);
    const double coef = bands.coef[0];
    const scalar_t r2 = cut2<scalar_t>(r);
    const scalar_t *xp = x.data_ptr<scalar_t>(), *yp = y.data_ptr<scalar_t>();
    const scalar_t *qp = q.data_ptr<scalar_t>(), *pp = p.data_ptr<scalar_t>();
    const double *Rp = R.data_ptr<double>(), *tp = t.data_ptr<double>();
    const int64_t *sxp = sx.data_ptr<int64_t>(), *syp = sy.data_ptr<int64_t>();
    double* op = out.data_ptr<double>();
    at::parallel_for(0, num_graphs, 32, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buf;
      for (int64_t g = begin; g < end; ++g) {
        const int64_t x0 = sxp[g], nx = sxp[g + 1] - x0, y0 = syp[g], ny = syp[g + 1] - y0;
        if (nx == 0 || ny == 0) continue;
        const int64_t nyp = (ny + W - 1) / W * W;
        buf.assign(8 * nyp, scalar_t(0));  // z (3) and channels p, p y (3), p |y|^2; zero padding
        scalar_t* z[3] = {buf.data(), buf.data() + nyp, buf.data() + 2 * nyp};
        scalar_t* ch[5];
        for (int c = 0; c < 5; ++c) ch[c] = buf.data() + (3 + c) * nyp;
        const double* Rg = Rp + 9 * g;
        const double* tg = tp + 3 * g;
        for (int64_t j = 0; j < ny; ++j) {
          const scalar_t* yj = yp + 3 * (y0 + j);
          for (int d = 0; d < 3; ++d) {
            z[d][j] = static_cast<scalar_t>(Rg[3 * d] * yj[0] + Rg[3 * d + 1] * yj[1] + Rg[3 * d + 2] * yj[2] +
                                            tg[d]);
          }
          const scalar_t pj = pp[y0 + j];
          ch[0][j] = pj;
          for (int d = 0; d < 3; ++d) ch[1 + d][j] = pj * yj[d];
          ch[4][j] = pj * (yj[0] * yj[0] + yj[1] * yj[1] + yj[2] * yj[2]);
        }
        const scalar_t* chc[5] = {ch[0], ch[1], ch[2], ch[3], ch[4]};
        double m[18] = {0};
        for (int64_t i = 0; i < nx; ++i) {
          const scalar_t* xi = xp + 3 * (x0 + i);
          scalar_t part[5] = {0, 0, 0, 0, 0};
          fused_chunk<scalar_t, 5>(z[0], z[1], z[2], chc, nyp, xi[0], xi[1], xi[2], neg, r2, part);
          const double qi = coef * double(qp[x0 + i]);
          const double w0 = qi * part[0], wy[3] = {qi * part[1], qi * part[2], qi * part[3]};
          const double xd[3] = {double(xi[0]), double(xi[1]), double(xi[2])};
          m[0] += w0;
          for (int d = 0; d < 3; ++d) {
            m[1 + d] += w0 * xd[d];
            m[4 + d] += wy[d];
            for (int e = 0; e < 3; ++e) m[7 + 3 * d + e] += xd[d] * wy[e];
          }
          m[16] += w0 * (xd[0] * xd[0] + xd[1] * xd[1] + xd[2] * xd[2]);
          m[17] += qi * part[4];
        }
        std::copy(m, m + 18, op + 18 * g);
      }
    });
  });
  return out.to(x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(tg_rapidalign, CPU, m) { m.impl("estep_moments", &estep_moments_cpu); }

}  // namespace cpu
}  // namespace tg_rapidalign
