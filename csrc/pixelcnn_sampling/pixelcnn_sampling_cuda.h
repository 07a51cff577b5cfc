#pragma once
// Torch-free launcher of the cached samplers' convolution at one position (CUDA).
//
// out[b, o] = bias[o] + sum over packed rows r of w[r * ldw + o] * x[b, ci, i + ky, j + kx + t]
// for run (ky, kx, rows) and row r = t * c_in + ci of that run (the layout of
// genmodels.ops.pixelcnn_sampling.pack_dense); x is addressed by element strides, so any
// layout works. runs is a device array [3][n_runs] (ky, kx, rows). float32 and float64.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_dtype.h"

namespace genmodels {

cudaError_t pixelcnn_sampling_conv_at_launch(DType dtype, const void* x, int64_t s_b,
                                             int64_t s_c, int64_t s_h, int64_t s_w,
                                             const void* w, int64_t ldw, const void* bias,
                                             void* out, const int64_t* runs, int64_t n_runs,
                                             int64_t n, int64_t c_in, int64_t c_out, int64_t i,
                                             int64_t j, cudaStream_t stream);

}  // namespace genmodels
