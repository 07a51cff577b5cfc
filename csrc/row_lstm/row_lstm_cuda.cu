// CUDA kernels of row_lstm: the fused cell of each step (common/lstm_cell.cuh); the glue
// (row_lstm_cuda.cpp) gathers the step's source states and runs its GEMM. Torch-free.
#include "common/lstm_cell.cuh"
#include "row_lstm/row_lstm_cuda.h"

namespace genmodels {

cudaError_t row_lstm_cell_forward_launch(DType acc, const void* pre, const void* gx,
                                      const void* bias, lstm_cuda::StepRows step, void* h,
                                      void* c, cudaStream_t stream) {
  return lstm_cuda::launch_cell_forward(acc, pre, gx, bias, step, h, c, stream);
}

cudaError_t row_lstm_cell_backward_launch(DType acc, const void* pre, const void* gx,
                                       const void* bias, lstm_cuda::StepRows step,
                                       const void* c, const void* dh, void* dc, void* dpre,
                                       cudaStream_t stream) {
  return lstm_cuda::launch_cell_backward(acc, pre, gx, bias, step, c, dh, dc, dpre, stream);
}

}  // namespace genmodels
