#pragma once
// Torch-free launchers of the diagonal_lstm CUDA cell kernels (common/lstm_cell.cuh): raw
// pointers to float (acc kFloat32) or double (kFloat64) buffers, a step, a stream.
#include <cuda_runtime.h>

#include "common/cuda_dtype.h"
#include "common/lstm_step.h"

namespace genmodels {

cudaError_t diagonal_lstm_cell_forward_launch(DType acc, const void* pre, const void* gx,
                                      const void* bias, lstm_cuda::StepRows step, void* h,
                                      void* c, cudaStream_t stream);

cudaError_t diagonal_lstm_cell_backward_launch(DType acc, const void* pre, const void* gx,
                                       const void* bias, lstm_cuda::StepRows step,
                                       const void* c, const void* dh, void* dc, void* dpre,
                                       cudaStream_t stream);

}  // namespace genmodels
