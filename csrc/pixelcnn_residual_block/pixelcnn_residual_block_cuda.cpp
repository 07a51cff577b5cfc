// Torch glue of the residual block on CUDA: the shared plan
// (pixelcnn_residual_block_plan.h) over masked_conv2d's CUDA kernels, cuBLAS GEMMs for the
// 1x1 convolutions, and the fused ReLU + dropout kernel of pixelcnn_residual_block_cuda.cu
// (backward reads both masks off the saved dropout output: ATen ops only).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/cuda_glue.h"
#include "common/philox.h"
#include "masked_conv2d/masked_conv2d.h"
#include "pixelcnn_residual_block/pixelcnn_residual_block.h"
#include "pixelcnn_residual_block/pixelcnn_residual_block_cuda.h"
#include "pixelcnn_residual_block/pixelcnn_residual_block_plan.h"

namespace genmodels {
namespace {

// relu(t) -> r, dropout(r) -> d, all channels_last, so element i is the same pixel and
// channel in each.
void launch(const at::Tensor& t, const at::Tensor& r, const at::Tensor& d, double p,
            int64_t seed, int64_t offset) {
  const bool with_dropout = p > 0.0;
  const double scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
  C10_CUDA_CHECK(relu_dropout_launch(
      to_dtype(t.scalar_type()), t.const_data_ptr(),
      const_cast<void*>(r.const_data_ptr()), d.mutable_data_ptr(), t.numel(), with_dropout,
      dropout_threshold(std::min(p, 1.0)), scale, static_cast<uint64_t>(seed),
      static_cast<uint64_t>(offset), c10::cuda::getCurrentCUDAStream()));
}

at::Tensor relu_dropout_forward_cuda(at::Tensor& t, double p, int64_t seed, int64_t offset) {
  at::Tensor d = p > 0.0 ? at::empty_like(t) : t;
  launch(t, t, d, p, seed, offset);
  return d;
}

const ResidualBlockDevice kCuda{masked_conv2d_forward_cuda, masked_conv2d_backward_cuda,
                                relu_dropout_forward_cuda, /*relu_grad_add=*/nullptr,
                                /*side_by_side=*/false};

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> pixelcnn_residual_block_forward_cuda(
    const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1, const at::Tensor& w2,
    const OptTensor& b2, const at::Tensor& w3, const OptTensor& b3,
    const std::vector<int64_t>& taps, const OptTensor& cm1, const OptTensor& cm2,
    const OptTensor& cm3, double p, int64_t seed, int64_t offset) {
  check_device_type(x, at::kCUDA, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  return residual_block_forward(kCuda, x, w1, b1, w2, b2, w3, b3, taps, cm1, cm2, cm3, p, seed,
                                offset);
}

std::vector<at::Tensor> pixelcnn_residual_block_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& w3, const at::Tensor& r1, const at::Tensor& r2,
    const std::vector<int64_t>& taps, const OptTensor& cm1, const OptTensor& cm2,
    const OptTensor& cm3, double p, int64_t seed, int64_t offset, const std::vector<bool>& need) {
  check_device_type(x, at::kCUDA, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  return residual_block_backward(kCuda, grad_out, x, w1, w2, w3, r1, r2, taps, cm1, cm2, cm3, p,
                                 need);
}

}  // namespace genmodels
