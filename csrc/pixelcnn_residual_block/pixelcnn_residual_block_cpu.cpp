// CPU entry points of the PixelCNN residual block: the shared plan
// (pixelcnn_residual_block_plan.h) over masked_conv2d's CPU kernels and dropout's CPU
// kernel. At the digits' sizes ([64, 64, 8, 8]) a block's arithmetic is a few hundred
// microseconds, so what the fused op saves over the eight-node layer-by-layer block is
// mostly per-op cost: one autograd node, two GEMMs instead of two convolution calls with
// their weight reorders, and no separate ReLU, dropout and add nodes and their saved tensors.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "common/checks.h"
#include "dropout/dropout.h"
#include "masked_conv2d/masked_conv2d.h"
#include "pixelcnn_residual_block/pixelcnn_residual_block.h"
#include "pixelcnn_residual_block/pixelcnn_residual_block_plan.h"

namespace genmodels {
namespace {

at::Tensor relu_dropout_forward_cpu(at::Tensor& t, double p, int64_t seed, int64_t offset) {
  t.relu_();
  if (p == 0.0) return t;
  if (p >= 1.0) return t.mul(0);  // what the dropout op returns for p == 1: x * 0
  return dropout_forward_cpu(t, p, seed, offset);
}

// The ReLU gradient in place, plus g when defined, in one pass (threshold_backward and add_
// allocate and pass again). t, r and g: contiguous rows of the same shape.
void relu_grad_add_cpu(at::Tensor& t, const at::Tensor& r, const at::Tensor& g) {
  const bool add = g.defined();
  TORCH_CHECK(t.is_contiguous() && r.is_contiguous() && (!add || g.is_contiguous()) &&
                  t.sizes() == r.sizes() && (!add || g.sizes() == t.sizes()),
              "relu_grad_add: contiguous rows of one shape expected");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "relu_grad_add", [&] {
    scalar_t* out = t.mutable_data_ptr<scalar_t>();
    const scalar_t* rr = r.const_data_ptr<scalar_t>();
    const scalar_t* gg = add ? g.const_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, t.numel(), 32768, [&](int64_t begin, int64_t end) {
      // As threshold_backward: the gradient passes where r > 0 (not where r is NaN).
      if (add) {
        for (int64_t i = begin; i < end; ++i) {
          out[i] = static_cast<scalar_t>((rr[i] > scalar_t(0) ? out[i] : scalar_t(0)) + gg[i]);
        }
      } else {
        for (int64_t i = begin; i < end; ++i) {
          out[i] = rr[i] > scalar_t(0) ? out[i] : scalar_t(0);  // a select: vectorizes
        }
      }
    });
  });
}

const ResidualBlockDevice kCpu{masked_conv2d_forward_cpu, masked_conv2d_backward_cpu,
                               relu_dropout_forward_cpu, relu_grad_add_cpu,
                               /*side_by_side=*/true};

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> pixelcnn_residual_block_forward_cpu(
    const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1, const at::Tensor& w2,
    const OptTensor& b2, const at::Tensor& w3, const OptTensor& b3,
    const std::vector<int64_t>& taps, const OptTensor& cm1, const OptTensor& cm2,
    const OptTensor& cm3, double p, int64_t seed, int64_t offset) {
  check_device_type(x, at::kCPU, "x");
  return residual_block_forward(kCpu, x, w1, b1, w2, b2, w3, b3, taps, cm1, cm2, cm3, p, seed,
                                offset);
}

std::vector<at::Tensor> pixelcnn_residual_block_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& w3, const at::Tensor& r1, const at::Tensor& r2,
    const std::vector<int64_t>& taps, const OptTensor& cm1, const OptTensor& cm2,
    const OptTensor& cm3, double p, int64_t seed, int64_t offset, const std::vector<bool>& need) {
  check_device_type(x, at::kCPU, "x");
  return residual_block_backward(kCpu, grad_out, x, w1, w2, w3, r1, r2, taps, cm1, cm2, cm3, p,
                                 need);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>
pixelcnn_residual_block_forward_keep_relu_cpu(
    const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1, const at::Tensor& w2,
    const OptTensor& b2, const at::Tensor& w3, const OptTensor& b3,
    const std::vector<int64_t>& taps, const OptTensor& cm1, const OptTensor& cm2,
    const OptTensor& cm3, double p, int64_t seed, int64_t offset) {
  check_device_type(x, at::kCPU, "x");
  at::Tensor relu_x;
  auto [out, r1, r2] = residual_block_forward(kCpu, x, w1, b1, w2, b2, w3, b3, taps, cm1, cm2,
                                              cm3, p, seed, offset, &relu_x);
  return {out, r1, r2, relu_x};
}

std::vector<at::Tensor> pixelcnn_residual_block_backward_from_relu_cpu(
    const at::Tensor& grad_out, const at::Tensor& relu_x, const at::Tensor& w1,
    const at::Tensor& w2, const at::Tensor& w3, const at::Tensor& r1, const at::Tensor& r2,
    const std::vector<int64_t>& taps, const OptTensor& cm1, const OptTensor& cm2,
    const OptTensor& cm3, double p, const std::vector<bool>& need) {
  check_device_type(relu_x, at::kCPU, "relu_x");
  return residual_block_backward(kCpu, grad_out, relu_x, w1, w2, w3, r1, r2, taps, cm1, cm2,
                                 cm3, p, need, /*x_is_relu=*/true);
}

}  // namespace genmodels
