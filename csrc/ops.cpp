// Operator schemas of tg_rapidalign's native kernels. Kernels are registered per
// device in cpu/ and cuda/; fake (meta) kernels and autograd are registered in
// Python (tg_rapidalign/ops/native.py).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// The module only carries the op registrations (static initialisers below);
// importing it from Python is what loads them.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(tg_rapidalign, m) {
  // Every pair (i, j) with ||x_i - y_j|| <= r and batch_x[i] == batch_y[j]: [2, E] int64.
  m.def("radius_pairs(Tensor x, Tensor y, float r, Tensor batch_x, Tensor batch_y, int num_graphs) -> Tensor");
  // T[i, c] = sum_{j in graph(i), ||a_i - b_j|| <= r} k(a_i, b_j) cb[j, c], with
  // k = sum_k coefs[k] exp(-d^2 / (2 sigmas[k]^2)); r < 0 means no cutoff.
  m.def(
      "kernel_row_sums(Tensor a, Tensor b, Tensor cb, Tensor batch_a, Tensor batch_b, Tensor sigmas, "
      "Tensor coefs, float r, int num_graphs) -> Tensor");
  // Gradients of sum(grad * kernel_row_sums(...)) w.r.t. a, b, cb, sigmas, coefs;
  // need_a covers a, sigmas and coefs, need_b covers b and cb (the others come back zero).
  m.def(
      "kernel_row_sums_backward(Tensor grad, Tensor a, Tensor b, Tensor cb, Tensor batch_a, "
      "Tensor batch_b, Tensor sigmas, Tensor coefs, float r, int num_graphs, bool need_a, bool need_b) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The alignment E-step of one band, per graph (sorted batches, every pair of a
  // graph scanned: for molecule-sized graphs): with z_j = R_g y_j + t_g and
  // w_ij = q_i coef exp(-|x_i - z_j|^2 / (2 sigma^2)) p_j over |x_i - z_j| <= r,
  // the [B, 18] columns sum w, sum w x (3), sum w y (3), sum w x y^T (9, row-major),
  // sum w |x|^2, sum w |y|^2. Not differentiable (the pose step is a constant).
  m.def(
      "estep_moments(Tensor x, Tensor y, Tensor q, Tensor p, Tensor batch_x, Tensor batch_y, Tensor R, "
      "Tensor t, Tensor sigmas, Tensor coefs, float r, int num_graphs) -> Tensor");
  // The nearest proper rotation R = argmax tr(R^T S) of each S [B, 3, 3] (the
  // special polar factor), in closed form. Not differentiable (the detached pose).
  m.def("special_polar3(Tensor S) -> Tensor");
}
