#pragma once
// Torch-free launcher of the dropout CUDA kernel (raw pointers, sizes, a stream). x and out
// are the same n elements in memory order; threshold = dropout_threshold(p) and
// scale = 1 / (1 - p) come from the host (float kernels round scale to float).
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_dtype.h"

namespace genmodels {

cudaError_t dropout_launch(DType dtype, const void* x, void* out, int64_t n, uint32_t threshold,
                           double scale, uint64_t seed, uint64_t offset, cudaStream_t stream);

}  // namespace genmodels
