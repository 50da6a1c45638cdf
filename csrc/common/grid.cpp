// Building the grid (host code, ATen ops: the same on both devices).
#include "grid.h"

#include <algorithm>
#include <limits>
#include <vector>

namespace tg_rapidalign {

GridParams make_grid_params(const at::Tensor& a, const at::Tensor& batch_a, const at::Tensor& b,
                            const at::Tensor& batch_b, double r, int64_t num_graphs) {
  GridParams p{};
  p.num_graphs = num_graphs;
  // One cell per graph when there is no cutoff or every graph is small: each
  // query then scans its own graph's points (no bounding box needed).
  const bool no_cutoff = r <= 0;
  int64_t largest = 0;
  for (const at::Tensor* batch : {&batch_a, &batch_b}) {
    if (batch->numel() > kGraphScanPoints && num_graphs > 1) {
      // Ids clamped into [0, num_graphs] (a no-op for valid batches; see grid.h
      // on CUDA batches, which are not checked): bincount neither fails on
      // negative ids nor allocates for huge ones.
      auto ids = batch->to(at::kLong).flatten().clamp(0, num_graphs);
      largest = std::max(largest, at::bincount(ids).max().item<int64_t>());
    } else {
      largest = std::max(largest, batch->numel());  // exact for one graph, a bound otherwise
    }
  }
  auto one_cell_per_graph = [&p]() {
    p.h = p.inv_h = 1.0;
    p.reach = 0;
    for (int d = 0; d < 3; ++d) p.size[d] = 1;
    return p;
  };
  p.largest = largest;
  if (no_cutoff || largest <= kGraphScanPoints) {
    p.r = r;
    return one_cell_per_graph();
  }
  // Bounding box of both sets (each reduced in its own dtype, no copies of the
  // points), brought to the host in one transfer.
  std::vector<at::Tensor> ends;
  for (const at::Tensor* t : {&a, &b}) {
    if (t->size(0) > 0) {
      ends.push_back(t->amin(0).to(at::kDouble));
      ends.push_back(t->amax(0).to(at::kDouble));
    }
  }
  auto box = at::stack(ends).cpu().view({-1, 2, 3});
  auto lo = std::get<0>(box.select(1, 0).min(0)), hi = std::get<0>(box.select(1, 1).max(0));
  double extent = 0.0;
  for (int d = 0; d < 3; ++d) {
    p.lo[d] = lo[d].item<double>();
    extent = std::max(extent, hi[d].item<double>() - p.lo[d]);
  }
  p.r = r;
  if (r >= extent) return one_cell_per_graph();  // the radius spans the whole cloud
  // Keep num_graphs * (cells per axis)^3 below 2^62.
  double max_cells = std::pow(std::ldexp(1.0, 62) / std::max<int64_t>(num_graphs, 1), 1.0 / 3.0) - 3.0;
  max_cells = std::max(1.0, std::min(max_cells, std::ldexp(1.0, 20)));
  double h = r / kCellsPerRadius;
  p.reach = static_cast<int64_t>(kCellsPerRadius);
  if (extent > 0 && extent / h > max_cells - 2.0 * p.reach) {
    h = std::max(r, extent / (max_cells - 2.0));  // coarse grid: cells of at least r
    p.reach = 1;
  }
  p.h = h;
  p.inv_h = 1.0 / h;
  for (int d = 0; d < 3; ++d) {
    p.size[d] = cell_coord(hi[d].item<double>(), p, d) + 1 + p.reach;
  }
  return p;
}

namespace {

// The CPU fast path of sort_by_cell: keys computed in one loop (the same
// double arithmetic as cell_coord) and a counting sort over the table of cell
// starts, which it yields as well: O(n), no comparison sort, no searchsorted.
// Returns false (nothing set) when a point's cell lies outside the table (a bad
// graph id or a non-finite coordinate), which the ATen path then handles.
template <typename scalar_t>
bool counting_sort_cpu(const at::Tensor& pos, const at::Tensor& batch, const GridParams& p, int64_t num_keys,
                       SortedGrid& g) {
  const int64_t n = pos.size(0);
  const scalar_t* x = pos.data_ptr<scalar_t>();
  const int64_t* b = batch.data_ptr<int64_t>();
  auto keys = at::empty({n}, batch.options());
  int64_t* k = keys.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    int64_t key = b[i];
    if (key < 0 || key >= p.num_graphs) return false;
    for (int d = 0; d < 3; ++d) {
      const double c = std::floor((double(x[3 * i + d]) - p.lo[d]) * p.inv_h) + double(p.reach);
      if (!(c >= 0.0 && c < double(p.size[d]))) return false;
      key = key * p.size[d] + static_cast<int64_t>(c);
    }
    k[i] = key;
  }
  auto start = at::zeros({num_keys + 1}, batch.options());
  int64_t* st = start.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) ++st[k[i] + 1];
  for (int64_t c = 0; c < num_keys; ++c) st[c + 1] += st[c];
  auto perm = at::empty({n}, batch.options());
  auto sorted_keys = at::empty({n}, batch.options());
  int64_t* pm = perm.data_ptr<int64_t>();
  int64_t* sk = sorted_keys.data_ptr<int64_t>();
  std::vector<int64_t> next(st, st + num_keys);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t at = next[k[i]]++;
    pm[at] = i;
    sk[at] = k[i];
  }
  auto sorted_pos = at::empty({n, 3}, pos.options());
  scalar_t* sp = sorted_pos.data_ptr<scalar_t>();
  for (int64_t t = 0; t < n; ++t) {
    for (int d = 0; d < 3; ++d) sp[3 * t + d] = x[3 * pm[t] + d];
  }
  g.keys = sorted_keys;
  g.perm = perm;
  g.pos = sorted_pos;
  g.start = start;
  g.num_keys = num_keys;
  return true;
}

}  // namespace

SortedGrid sort_by_cell(const at::Tensor& pos, const at::Tensor& batch, const GridParams& p,
                        int64_t num_graphs) {
  SortedGrid g;
  if (p.reach == 0) {
    // One cell per graph: the key is the graph id, and a sorted batch (as in
    // a PyG Batch) needs no sorting at all.
    g.keys = batch.to(at::kLong).contiguous();
    const int64_t n = g.keys.numel();
    bool sorted = n < 2 || (g.keys.narrow(0, 1, n - 1) >= g.keys.narrow(0, 0, n - 1)).all().item<bool>();
    if (sorted) {
      g.perm = at::arange(n, g.keys.options());
      g.pos = pos.contiguous();
      g.identity = true;
    } else {
      auto sorted_keys = at::sort(g.keys, /*stable=*/true, 0, false);
      g.keys = std::get<0>(sorted_keys).contiguous();
      g.perm = std::get<1>(sorted_keys).contiguous();
      g.pos = pos.index_select(0, g.perm).contiguous();
    }
    auto all = at::arange(num_graphs + 1, g.keys.options());
    g.start = at::searchsorted(g.keys, all).contiguous();
    g.num_keys = num_graphs;
    return g;
  }
  const double table_keys = double(num_graphs) * p.size[0] * p.size[1] * p.size[2];
  const bool table = table_keys <= std::max(8.0 * pos.size(0), double(1 << 22));
  if (table && pos.device().is_cpu() && pos.dim() == 2 && pos.size(1) == 3 &&
      (pos.scalar_type() == at::kFloat || pos.scalar_type() == at::kDouble)) {
    const at::Tensor pc = pos.contiguous(), bc = batch.to(at::kLong).contiguous();
    const bool done = pos.scalar_type() == at::kFloat
                          ? counting_sort_cpu<float>(pc, bc, p, static_cast<int64_t>(table_keys), g)
                          : counting_sort_cpu<double>(pc, bc, p, static_cast<int64_t>(table_keys), g);
    if (done) return g;
  }
  auto q = pos.to(at::kDouble);
  at::Tensor key = batch.to(at::kLong);
  for (int d = 0; d < 3; ++d) {
    auto c = at::floor((q.select(1, d) - p.lo[d]) * p.inv_h).to(at::kLong) + p.reach;
    key = key * p.size[d] + c;
  }
  auto sorted = at::sort(key);
  g.keys = std::get<0>(sorted).contiguous();
  g.perm = std::get<1>(sorted).contiguous();
  g.pos = pos.index_select(0, g.perm).contiguous();
  // A table of cell starts replaces two binary searches per visited column
  // when the key space is at most a few entries per point.
  const double num_keys = double(num_graphs) * p.size[0] * p.size[1] * p.size[2];
  if (num_keys <= std::max(8.0 * pos.size(0), double(1 << 22))) {
    auto all = at::arange(static_cast<int64_t>(num_keys) + 1, g.keys.options());
    g.start = at::searchsorted(g.keys, all).contiguous();
    g.num_keys = static_cast<int64_t>(num_keys);
  }
  return g;
}

}  // namespace tg_rapidalign
