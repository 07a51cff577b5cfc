#pragma once
// Torch-free launcher of the residual block's fused ReLU + dropout CUDA kernel (raw
// pointers, sizes, a stream): r = relu(t), d = dropout(r) over the same n elements in
// channels_last memory order (t may alias r). Dropout drops element i iff dropout_drops(word i of the (seed, offset) Philox stream,
// threshold) (common/philox.h), as the dropout kernel; with_dropout == false skips it.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_dtype.h"

namespace genmodels {

cudaError_t relu_dropout_launch(DType dtype, const void* t, void* r, void* d,
                                int64_t n, bool with_dropout, uint32_t threshold, double scale,
                                uint64_t seed, uint64_t offset, cudaStream_t stream);

}  // namespace genmodels
