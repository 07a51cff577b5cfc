#pragma once
// Shared shape of the CPU kernels that reduce or scale each row of a [rows, cols] view.
//
// Work is split into (row, chunk) tasks of at most `chunk` columns, so that a batch of few
// long rows still uses every core; per-task partials are summed in a fixed order after
// the parallel loop, so results do not depend on the number of threads. Hot loops are
// cloned for AVX-512 and AVX2 (GM_CPU_CLONES) and the clone is chosen at load time.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GM_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GM_CPU_CLONES
#endif

namespace genmodels {

struct RowChunks {
  int64_t rows, cols, chunk, chunks_per_row;
  int64_t tasks() const { return rows * chunks_per_row; }
};

inline RowChunks make_row_chunks(int64_t rows, int64_t numel, int64_t chunk) {
  const int64_t cols = rows == 0 ? 0 : numel / rows;
  const int64_t chunks = std::max<int64_t>(1, (cols + chunk - 1) / chunk);
  return {rows, cols, chunk, chunks};
}

// Runs body(row, col_begin, col_end, task) over every (row, chunk) task in parallel.
template <typename Body>
void for_each_row_chunk(const RowChunks& rc, const Body& body) {
  const int64_t task_elems = std::max<int64_t>(1, std::min(rc.cols, rc.chunk));
  const int64_t grain = std::max<int64_t>(1, 32768 / task_elems);
  at::parallel_for(0, rc.tasks(), grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / rc.chunks_per_row;
      const int64_t c0 = (task % rc.chunks_per_row) * rc.chunk;
      body(row, c0, std::min(rc.cols, c0 + rc.chunk), task);
    }
  });
}

// Per-row sums of per-task partials, in a fixed order.
template <typename A>
std::vector<A> sum_row_partials(const std::vector<A>& partial, const RowChunks& rc) {
  std::vector<A> out(rc.rows, A(0));
  for (int64_t r = 0; r < rc.rows; ++r)
    for (int64_t c = 0; c < rc.chunks_per_row; ++c) out[r] += partial[r * rc.chunks_per_row + c];
  return out;
}

}  // namespace genmodels
