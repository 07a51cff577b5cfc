#pragma once
// Torch-free description of one step of a PixelRNN recurrence for its CUDA cell kernels
// (common/lstm_cell.cuh): which positions the step's rows are, in device memory.
#include <cstdint>

namespace genmodels {
namespace lstm_cuda {

struct StepRows {
  const int64_t* pos;       // the plan's positions (device); this step's start at `first`
  const int64_t* cell_src;  // cell predecessors (-1: none), device
  int64_t first;            // index of the step's first position in pos
  int64_t n;                // positions in the step; row q is batch q / n, position q % n
  int64_t rows;             // B * n
  int64_t positions;        // H * W
  int64_t channels;         // C
};

}  // namespace lstm_cuda
}  // namespace genmodels
