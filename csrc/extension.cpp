// The extension module tg_rapidalign._C. Importing it loads the library, whose
// static initialisers register the ops: each op's schema and argument checks in
// ops/<op>.cpp (TORCH_LIBRARY_FRAGMENT), its kernels in ops/cpu/<op>_kernel.cpp
// and ops/cuda/<op>_kernel.cu (TORCH_LIBRARY_IMPL). Fake (meta) kernels and
// autograd are registered from Python (tg_rapidalign/ops/native_meta.py).
//
// The module also carries the ops' capability limits as integer constants
// (common/limits.h), which the Python side reads instead of repeating them.
#include <Python.h>
#include <torch/library.h>

#include "common/limits.h"

namespace {

// 0 on success, -1 with a Python error set.
int add_constants(PyObject* module) {
  struct Constant {
    const char* name;
    long value;
  };
  const Constant constants[] = {
      {"MAX_BANDS", tg_rapidalign::kMaxBands},           // bands of a mixture: 1..MAX_BANDS
      {"MAX_DIM", tg_rapidalign::kMaxDim},               // point dimension of the ops' inputs
      {"GRAPH_SCAN_POINTS", tg_rapidalign::kGraphScanPoints},  // graphs up to this size are scanned whole
      {"ESTEP_GRAPH_POINTS", tg_rapidalign::kEstepGraphPoints},  // graphs estep_moments is meant for
#ifdef WITH_CUDA
      {"WITH_CUDA", 1},  // the CUDA kernels were compiled in
#else
      {"WITH_CUDA", 0},
#endif
      {"ESTEP_CUDA", 0},  // estep_moments has no CUDA kernel (CPU only)
  };
  for (const Constant& c : constants) {
    if (PyModule_AddIntConstant(module, c.name, c.value) != 0) return -1;
  }
  return 0;
}

}  // namespace

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr && add_constants(module) != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}

// Declares the library; the ops add their schemas as fragments (ops/<op>.cpp).
TORCH_LIBRARY(tg_rapidalign, m) {}
