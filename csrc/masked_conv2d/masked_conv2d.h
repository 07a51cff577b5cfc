#pragma once
// Entry points of the masked convolution (PixelCNN / Gated PixelCNN).
//
// x [N, C_in, H, W] (any layout; channels_last avoids a copy), weight [C_out, C_in, k, k]
// with k odd, bias [C_out] or absent. `taps` lists the kept taps as ky * k + kx (the mask
// itself is built in Python: genmodels/ops/masked_conv2d.py); `center_mask` [C_out, C_in],
// when given, multiplies the center tap (which must be in `taps`). Stride 1, padding k / 2.
// forward returns [N, C_out, H, W] in channels_last layout. backward returns
// (grad_x, grad_weight): grad_x channels_last, grad_weight contiguous and exactly zero on
// every tap not in `taps` (and where center_mask is 0); one not asked for is an empty [0].
#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace genmodels {

at::Tensor masked_conv2d_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias,
                                     const std::vector<int64_t>& taps,
                                     const std::optional<at::Tensor>& center_mask);

std::tuple<at::Tensor, at::Tensor> masked_conv2d_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const std::vector<int64_t>& taps, const std::optional<at::Tensor>& center_mask,
    bool need_input, bool need_weight);

// Whether the CPU kernels for this weight (its dtype and k) and these taps take the
// rectangles path, which reads the bounding box of the kept taps: masked positions of x
// then meet zero weights, so a NaN or Inf there must be kept away (the other CPU paths
// gather the kept taps only).
bool masked_conv2d_reads_box_cpu(const at::Tensor& weight, const std::vector<int64_t>& taps);

// The Gated PixelCNN activation of genmodels.ops.masked_conv2d_gated on CPU: pre
// [N, 2C, H, W] -> [N, C, H, W] (channels_last), and its input gradient.
at::Tensor gated_activation_forward_cpu(const at::Tensor& pre, int64_t groups);
at::Tensor gated_activation_backward_cpu(const at::Tensor& grad_out, const at::Tensor& pre,
                                         int64_t groups);

// The same with a C++ autograd node (CPU tensors).
at::Tensor gated_activation_autograd(const at::Tensor& pre, int64_t groups);

// forward with a C++ autograd node whose backward calls the backward above (CPU or CUDA
// by x's device): the eager path, without a Python autograd.Function.
at::Tensor masked_conv2d_autograd(const at::Tensor& x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias,
                                  const std::vector<int64_t>& taps,
                                  const std::optional<at::Tensor>& center_mask);

#ifdef WITH_CUDA
at::Tensor masked_conv2d_forward_cuda(const at::Tensor& x, const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias,
                                      const std::vector<int64_t>& taps,
                                      const std::optional<at::Tensor>& center_mask);

std::tuple<at::Tensor, at::Tensor> masked_conv2d_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const std::vector<int64_t>& taps, const std::optional<at::Tensor>& center_mask,
    bool need_input, bool need_weight);
#endif

}  // namespace genmodels
