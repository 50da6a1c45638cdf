// The nearest proper rotation to a 3 x 3 matrix (the pose step of the alignment
// loss), in closed form, shared by the CPU and CUDA kernels.
//
// R = argmax_{R in SO(3)} tr(R^T S) is the rotation of the unit quaternion that
// is the top eigenvector of Horn's symmetric 4 x 4 matrix N(S); cyclic Jacobi
// sweeps find it in double precision. This replaces a batched LAPACK/cuSOLVER
// SVD (one library call per 3 x 3 matrix) by a few hundred flops per matrix.
#pragma once

#include <cmath>

#include "host_device.h"

namespace tg_rapidalign {

// S and R row-major [9]. Ties (rank of S below two, S = 0) resolve to the first
// eigenvector of largest eigenvalue, e.g. the identity for S = 0.
TGRA_HOST_DEVICE void special_polar3(const double* S_in, double* R) {
  double scale = 0.0;
  for (int k = 0; k < 9; ++k) scale = fmax(scale, fabs(S_in[k]));
  double S[9];
  const double inv = scale > 0 ? 1.0 / scale : 0.0;  // scale-free, no under/overflow
  for (int k = 0; k < 9; ++k) S[k] = S_in[k] * inv;
  // Horn's N for M = S^T (M_ab = sum y_a x_b maps y onto x).
  const double m00 = S[0], m01 = S[3], m02 = S[6], m10 = S[1], m11 = S[4], m12 = S[7], m20 = S[2],
               m21 = S[5], m22 = S[8];
  double A[4][4] = {{m00 + m11 + m22, m12 - m21, m20 - m02, m01 - m10},
                    {m12 - m21, m00 - m11 - m22, m01 + m10, m20 + m02},
                    {m20 - m02, m01 + m10, -m00 + m11 - m22, m12 + m21},
                    {m01 - m10, m20 + m02, m12 + m21, -m00 - m11 + m22}};
  double V[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
  for (int sweep = 0; sweep < 32; ++sweep) {
    double off = 0.0, diag = 0.0;
    for (int p = 0; p < 4; ++p) {
      diag += A[p][p] * A[p][p];
      for (int q = p + 1; q < 4; ++q) off += A[p][q] * A[p][q];
    }
    if (off <= 1e-32 * diag || off < 1e-300) break;
    for (int p = 0; p < 3; ++p) {
      for (int q = p + 1; q < 4; ++q) {
        const double apq = A[p][q];
        if (fabs(apq) < 1e-300) continue;
        const double theta = (A[q][q] - A[p][p]) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
        const double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
        for (int k = 0; k < 4; ++k) {  // A <- A J (columns p, q)
          const double akp = A[k][p], akq = A[k][q];
          A[k][p] = c * akp - s * akq;
          A[k][q] = s * akp + c * akq;
        }
        for (int k = 0; k < 4; ++k) {  // A <- J^T A (rows p, q)
          const double apk = A[p][k], aqk = A[q][k];
          A[p][k] = c * apk - s * aqk;
          A[q][k] = s * apk + c * aqk;
        }
        for (int k = 0; k < 4; ++k) {
          const double vkp = V[k][p], vkq = V[k][q];
          V[k][p] = c * vkp - s * vkq;
          V[k][q] = s * vkp + c * vkq;
        }
      }
    }
  }
  int top = 0;
  for (int k = 1; k < 4; ++k) {
    if (A[k][k] > A[top][top]) top = k;
  }
  double w = V[0][top], x = V[1][top], y = V[2][top], z = V[3][top];
  const double n = sqrt(w * w + x * x + y * y + z * z);
  w /= n, x /= n, y /= n, z /= n;
  R[0] = w * w + x * x - y * y - z * z;
  R[1] = 2 * (x * y - w * z);
  R[2] = 2 * (x * z + w * y);
  R[3] = 2 * (x * y + w * z);
  R[4] = w * w - x * x + y * y - z * z;
  R[5] = 2 * (y * z - w * x);
  R[6] = 2 * (x * z - w * y);
  R[7] = 2 * (y * z + w * x);
  R[8] = w * w - x * x - y * y + z * z;
}

}  // namespace tg_rapidalign
