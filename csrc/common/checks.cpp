#include "checks.h"

#include <cmath>

#include "limits.h"

namespace tg_rapidalign {

void check_points(const char* op, const char* name, const at::Tensor& points) {
  TORCH_CHECK_VALUE(points.dim() == 2 && points.size(1) == kMaxDim, op, ": ", name, " must have shape [N, ",
                    kMaxDim, "], got ", points.sizes());
  TORCH_CHECK(points.scalar_type() == at::kFloat || points.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", points.scalar_type());
}

void check_same_dtype(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                      const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have the dtype of ", ref_name, " (",
              ref.scalar_type(), "), got ", t.scalar_type());
}

void check_same_device(const char* op, std::initializer_list<NamedTensor> tensors) {
  const NamedTensor& first = *tensors.begin();
  for (const NamedTensor& t : tensors) {
    TORCH_CHECK(t.second->device() == first.second->device(), op, ": ", t.first, " must be on the device of ",
                first.first, " (", first.second->device(), "), got ", t.second->device());
  }
}

void check_vector(const char* op, const char* name, const at::Tensor& t, int64_t size, const char* of) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == size, op, ": ", name, " must be 1-D with ", of,
                    ".size(0) = ", size, " entries, got shape ", t.sizes());
}

void check_batch(const char* op, const char* name, const at::Tensor& batch, int64_t size, const char* of,
                 int64_t num_graphs) {
  TORCH_CHECK_VALUE(num_graphs >= 0, op, ": num_graphs must be >= 0, got ", num_graphs);
  TORCH_CHECK(batch.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ", batch.scalar_type());
  TORCH_CHECK_VALUE(batch.dim() == 1 && batch.size(0) == size, op, ": ", name, " must have ", of,
                    ".size(0) = ", size, " entries, got shape ", batch.sizes());
  TORCH_CHECK_VALUE(num_graphs > 0 || size == 0, op, ": num_graphs is 0 but ", name, " holds ", size,
                    " graph ids (each must be below num_graphs)");
  if (!batch.is_cpu() || size == 0) return;  // CUDA: see the file comment
  const at::Tensor ids = batch.contiguous();
  const int64_t* b = ids.data_ptr<int64_t>();
  // One pass that only finds out whether anything is wrong; the slow search
  // for what and where runs on failure only.
  bool ok = b[0] >= 0;
  for (int64_t i = 1; i < size; ++i) ok &= b[i] >= b[i - 1];
  ok &= b[size - 1] < num_graphs;
  if (ok) return;
  for (int64_t i = 0; i < size; ++i) {
    TORCH_CHECK_VALUE(b[i] >= 0 && b[i] < num_graphs, op, ": ", name, " must hold graph ids in [0, num_graphs = ",
                      num_graphs, "), got ", b[i], " at index ", i);
    TORCH_CHECK_VALUE(i == 0 || b[i] >= b[i - 1], op, ": ", name,
                      " must be sorted (non-decreasing graph ids, as in a PyG Batch), got ", b[i], " after ",
                      b[i - 1], " at index ", i);
  }
}

void check_bands(const char* op, const at::Tensor& sigmas, const at::Tensor& coefs, const at::Tensor& ref,
                 int64_t exact) {
  TORCH_CHECK_VALUE(sigmas.dim() == 1, op, ": sigmas must be 1-D, got shape ", sigmas.sizes());
  TORCH_CHECK_VALUE(coefs.dim() == 1 && coefs.size(0) == sigmas.size(0), op,
                    ": coefs must be 1-D with one entry per band (sigmas.size(0) = ", sigmas.size(0),
                    "), got shape ", coefs.sizes());
  if (exact > 0) {
    TORCH_CHECK_VALUE(sigmas.size(0) == exact, op, ": sigmas must hold exactly ", exact, " band(s), got ",
                      sigmas.size(0));
  } else {
    TORCH_CHECK_VALUE(sigmas.size(0) >= 1 && sigmas.size(0) <= kMaxBands, op, ": sigmas must hold between 1 and ",
                      kMaxBands, " (MAX_BANDS) bands, got ", sigmas.size(0));
  }
  TORCH_CHECK(sigmas.scalar_type() == ref.scalar_type() && coefs.scalar_type() == ref.scalar_type(), op,
              ": sigmas and coefs must have the dtype of the points (", ref.scalar_type(), "), got ",
              sigmas.scalar_type(), " and ", coefs.scalar_type());
}

void check_radius(const char* op, double r, bool negative_means_no_cutoff) {
  TORCH_CHECK_VALUE(!std::isnan(r) && (negative_means_no_cutoff || r >= 0), op, ": r must be ",
                    negative_means_no_cutoff ? "a number (negative: no cutoff)" : "non-negative", ", got ", r);
}

void check_cutoff(const char* op, double cutoff) {
  TORCH_CHECK_VALUE(!std::isnan(cutoff), op, ": cutoff must be a number (negative: no cutoff), got ", cutoff);
}

}  // namespace tg_rapidalign
