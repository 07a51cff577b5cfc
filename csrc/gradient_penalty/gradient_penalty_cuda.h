#pragma once
// Torch-free launchers of the gradient_penalty CUDA kernels (raw pointers, sizes, a stream).
// grads and grad_grads are [rows, cols] blocks (each sample one dense run of cols elements);
// penalty and grad_penalty hold `dtype`; norm and grad_norm hold the accumulation type
// (float32, or float64 for float64 grads).
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_dtype.h"

namespace genmodels {

// Bytes of scratch the forward launcher needs (0 when every row fits one block).
int64_t gradient_penalty_forward_workspace_bytes(DType dtype, int64_t rows, int64_t cols);

cudaError_t gradient_penalty_forward_launch(DType dtype, const void* grads, void* penalty,
                                            void* norm, void* workspace, int64_t rows,
                                            int64_t cols, double target, bool one_sided,
                                            cudaStream_t stream);

cudaError_t gradient_penalty_backward_launch(DType dtype, const void* grad_penalty,
                                             const void* grad_norm, const void* grads,
                                             const void* norm, void* grad_grads, int64_t rows,
                                             int64_t cols, double target, bool one_sided,
                                             cudaStream_t stream);

}  // namespace genmodels
