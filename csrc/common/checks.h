// Argument checks of the ops' dispatch (csrc/ops/<op>.cpp). Each op's kernels
// call its check function first, on either device, so that direct calls of
// torch.ops.tg_rapidalign.* with inconsistent arguments raise (RuntimeError or
// ValueError, naming the op and the argument) instead of reading out of bounds.
//
// What is checked without reading tensor data (all devices): ranks, sizes,
// dtypes, devices, band counts, num_graphs. Graph ids themselves (in
// [0, num_graphs) and sorted) are scanned on CPU only; on CUDA that scan would
// synchronise with the host, so the CUDA kernels are written to stay in bounds
// for any ids instead (see common/grid.h): points with ids outside the range
// get no neighbors, and unsorted batches are sorted by the grid.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <initializer_list>
#include <utility>

namespace tg_rapidalign {

// A named tensor argument of an op, for messages.
using NamedTensor = std::pair<const char*, const at::Tensor*>;

// points: [N, kMaxDim] float32 or float64.
void check_points(const char* op, const char* name, const at::Tensor& points);

// t has the dtype of `ref` (named ref_name).
void check_same_dtype(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                      const at::Tensor& ref);

// Every tensor on the device of the first one.
void check_same_device(const char* op, std::initializer_list<NamedTensor> tensors);

// t is 1-D with `size` entries (the rows of `of`).
void check_vector(const char* op, const char* name, const at::Tensor& t, int64_t size, const char* of);

// batch: a 1-D int64 vector of `size` graph ids (one per row of `of`); num_graphs >= 0,
// and no ids at all when num_graphs is 0. On CPU also that the ids lie in
// [0, num_graphs) and are sorted (one scan).
void check_batch(const char* op, const char* name, const at::Tensor& batch, int64_t size, const char* of,
                 int64_t num_graphs);

// sigmas and coefs: 1-D of equal length in 1..kMaxBands (exactly `exact` when
// it is positive), with the dtype of the points `ref`.
void check_bands(const char* op, const at::Tensor& sigmas, const at::Tensor& coefs, const at::Tensor& ref,
                 int64_t exact = 0);

// r is not NaN (and, unless negative radii mean "no cutoff", not negative).
void check_radius(const char* op, double r, bool negative_means_no_cutoff);
// A cutoff in units of the widest band: any number but NaN (negative: no cutoff).
void check_cutoff(const char* op, double cutoff);

}  // namespace tg_rapidalign
