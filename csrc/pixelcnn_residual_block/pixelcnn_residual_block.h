#pragma once
// Entry points of the PixelCNN residual block (genmodels/ops/pixelcnn_residual_block.py):
//
//   out = x + conv1x1(w3, b3)(dropout(relu(maskedconv_B(w2, b2)(relu(conv1x1(w1, b1)(relu(x)))))))
//
// x [N, C, H, W] (any layout; channels_last avoids a copy), w1 [C2, C, 1, 1], w2
// [C2, C2, k, k], w3 [C, C2, 1, 1], biases [C2], [C2], [C] or absent. Every convolution is
// mask B with the same colour groups: `taps` are the middle convolution's kept taps,
// cm1 / cm2 / cm3 the [C_out, C_in] centre masks of the three (absent: every pair kept).
// Dropout (p in (0, 1); p == 0 is none, p == 1 drops everything) acts on relu(middle) in
// channels_last memory order with dropout's Philox stream of (seed, offset), the mask the
// separate dropout op draws for that tensor.
//
// forward returns (out channels_last, r1, r2): r1 = relu(first conv) and r2 =
// dropout(relu(middle conv)), channels_last, the only intermediates backward needs: relu(x)
// is recomputed, and the middle ReLU's and the dropout's masks are both read off r2 (r2 is
// 0 exactly where either zeroes an element, and (1 - p) * r2 where both keep it), so
// backward draws no dropout words (seed and offset are unused there; p gives the scale).
// backward returns the gradients of (x, w1, b1, w2, b2, w3, b3); the ones `need` does not
// ask for are undefined (None).
#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace genmodels {

using OptTensor = std::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor, at::Tensor> pixelcnn_residual_block_forward_cpu(
    const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1, const at::Tensor& w2,
    const OptTensor& b2, const at::Tensor& w3, const OptTensor& b3,
    const std::vector<int64_t>& taps, const OptTensor& cm1, const OptTensor& cm2,
    const OptTensor& cm3, double p, int64_t seed, int64_t offset);

std::vector<at::Tensor> pixelcnn_residual_block_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& w3, const at::Tensor& r1, const at::Tensor& r2,
    const std::vector<int64_t>& taps, const OptTensor& cm1, const OptTensor& cm2,
    const OptTensor& cm3, double p, int64_t seed, int64_t offset, const std::vector<bool>& need);

// The CPU autograd node's pair: the forward also returns relu(x) (channels_last), which the
// backward takes in place of x, so the node keeps relu(x) instead of x (the same memory)
// and the backward does not recompute it (x > 0 exactly where relu(x) > 0).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>
pixelcnn_residual_block_forward_keep_relu_cpu(
    const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1, const at::Tensor& w2,
    const OptTensor& b2, const at::Tensor& w3, const OptTensor& b3,
    const std::vector<int64_t>& taps, const OptTensor& cm1, const OptTensor& cm2,
    const OptTensor& cm3, double p, int64_t seed, int64_t offset);

std::vector<at::Tensor> pixelcnn_residual_block_backward_from_relu_cpu(
    const at::Tensor& grad_out, const at::Tensor& relu_x, const at::Tensor& w1,
    const at::Tensor& w2, const at::Tensor& w3, const at::Tensor& r1, const at::Tensor& r2,
    const std::vector<int64_t>& taps, const OptTensor& cm1, const OptTensor& cm2,
    const OptTensor& cm3, double p, const std::vector<bool>& need);

// forward with one C++ autograd node whose backward calls the backward above (CPU or CUDA
// by x's device); its backward refuses create_graph=True.
at::Tensor pixelcnn_residual_block_autograd(
    const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1, const at::Tensor& w2,
    const OptTensor& b2, const at::Tensor& w3, const OptTensor& b3,
    const std::vector<int64_t>& taps, const OptTensor& cm1, const OptTensor& cm2,
    const OptTensor& cm3, double p, int64_t seed, int64_t offset);

#ifdef WITH_CUDA
std::tuple<at::Tensor, at::Tensor, at::Tensor> pixelcnn_residual_block_forward_cuda(
    const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1, const at::Tensor& w2,
    const OptTensor& b2, const at::Tensor& w3, const OptTensor& b3,
    const std::vector<int64_t>& taps, const OptTensor& cm1, const OptTensor& cm2,
    const OptTensor& cm3, double p, int64_t seed, int64_t offset);

std::vector<at::Tensor> pixelcnn_residual_block_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& w3, const at::Tensor& r1, const at::Tensor& r2,
    const std::vector<int64_t>& taps, const OptTensor& cm1, const OptTensor& cm2,
    const OptTensor& cm3, double p, int64_t seed, int64_t offset, const std::vector<bool>& need);
#endif

}  // namespace genmodels
