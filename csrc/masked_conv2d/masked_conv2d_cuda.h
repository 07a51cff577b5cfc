#pragma once
// Torch-free launchers of the masked_conv2d CUDA kernels (raw pointers, sizes, a stream).
// Tensors are NHWC and contiguous; `taps` holds the offsets (dy, dx) of the kept taps from
// the output pixel (see masked_conv2d_checks.h for the GEMM formulation).
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_dtype.h"

namespace genmodels {

constexpr int kMaskedConvMaxTaps = 512;
constexpr int kMaskedConvMaxOffset = 127;

struct TapTable {
  int count;
  int8_t dy[kMaskedConvMaxTaps];
  int8_t dx[kMaskedConvMaxTaps];
};

// cols [N * H * W, T * C]: cols[p, t * C + c] = src[p + (dy_t, dx_t), c], zero outside.
cudaError_t masked_conv2d_im2col_launch(DType dtype, const void* src, void* cols, int64_t n,
                                        int64_t h, int64_t w, int64_t c, const TapTable& taps,
                                        cudaStream_t stream);

// Direct forward for thin inputs (a few input channels, e.g. the RGB or grey input layer):
// out [N * H * W, C_out] = sum_t src[p + d_t, :] @ wp[t] (+ bias), wp [T * C_in, C_out].
cudaError_t masked_conv2d_direct_forward_launch(DType dtype, const void* x, const void* wp,
                                                const void* bias, void* out, int64_t n,
                                                int64_t h, int64_t w, int64_t c_in,
                                                int64_t c_out, const TapTable& taps,
                                                cudaStream_t stream);

}  // namespace genmodels
