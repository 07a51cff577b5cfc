// The eager autograd paths of masked_conv2d and of the Gated PixelCNN activation: C++
// autograd nodes over the CPU/CUDA entry points. At digits sizes (8x8, B=64) a PixelCNN
// layer's kernels take a few hundred microseconds, and a Python autograd.Function added
// about 60 us a layer (the forward's wrapper, the Python backward and its argument
// handling), which these nodes do not pay.
// torch.compile traces the torch.library op of python/genmodels/ops/masked_conv2d.py.
#include <torch/autograd.h>

#include "masked_conv2d/masked_conv2d.h"

namespace genmodels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The backward kernels build no graph: a double backward (create_graph=True) would get
// gradients that silently stop here, so it is refused.
void check_once_differentiable(const char* op) {
  TORCH_CHECK(!at::GradMode::is_enabled(), op,
              ": the native backend's backward is not differentiable (create_graph=True); "
              "use backend='reference' for higher-order gradients");
}

at::Tensor forward_on_device(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias,
                             const std::vector<int64_t>& taps,
                             const std::optional<at::Tensor>& center_mask) {
#ifdef WITH_CUDA
  if (x.is_cuda()) return masked_conv2d_forward_cuda(x, weight, bias, taps, center_mask);
#endif
  return masked_conv2d_forward_cpu(x, weight, bias, taps, center_mask);
}

std::tuple<at::Tensor, at::Tensor> backward_on_device(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const std::vector<int64_t>& taps, const std::optional<at::Tensor>& center_mask,
    bool need_input, bool need_weight) {
#ifdef WITH_CUDA
  if (x.is_cuda()) {
    return masked_conv2d_backward_cuda(grad_out, x, weight, taps, center_mask, need_input,
                                       need_weight);
  }
#endif
  return masked_conv2d_backward_cpu(grad_out, x, weight, taps, center_mask, need_input,
                                    need_weight);
}

class MaskedConv2dFunction : public torch::autograd::Function<MaskedConv2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias,
                            const std::vector<int64_t>& taps,
                            const std::optional<at::Tensor>& center_mask) {
    ctx->save_for_backward({x, weight, center_mask.value_or(at::Tensor())});
    ctx->saved_data["taps"] = taps;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return forward_on_device(x, weight, bias, taps, center_mask);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_once_differentiable("masked_conv2d");
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1];
    const std::optional<at::Tensor> center_mask =
        saved[2].defined() ? std::optional<at::Tensor>(saved[2]) : std::nullopt;
    const std::vector<int64_t> taps = ctx->saved_data["taps"].toIntVector();
    const at::Tensor& grad_out = grads[0];
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    at::Tensor grad_x, grad_w, grad_b;
    if (need_x || need_w) {
      std::tie(grad_x, grad_w) =
          backward_on_device(grad_out, x, weight, taps, center_mask, need_x, need_w);
    }
    // needs_input_grad counts tensor inputs only: the bias is edge 2 when it is given.
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) {
      grad_b = grad_out.sum({0, 2, 3});
    }
    return {need_x ? grad_x : at::Tensor(), need_w ? grad_w : at::Tensor(), grad_b, at::Tensor(),
            at::Tensor()};
  }
};

class GatedActivationFunction : public torch::autograd::Function<GatedActivationFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& pre, int64_t groups) {
    ctx->save_for_backward({pre});
    ctx->saved_data["groups"] = groups;
    return gated_activation_forward_cpu(pre, groups);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    check_once_differentiable("gate");
    const at::Tensor pre = ctx->get_saved_variables()[0];
    return {gated_activation_backward_cpu(grads[0], pre, ctx->saved_data["groups"].toInt()),
            at::Tensor()};
  }
};

}  // namespace

at::Tensor gated_activation_autograd(const at::Tensor& pre, int64_t groups) {
  return GatedActivationFunction::apply(pre, groups);
}

at::Tensor masked_conv2d_autograd(const at::Tensor& x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias,
                                  const std::vector<int64_t>& taps,
                                  const std::optional<at::Tensor>& center_mask) {
  return MaskedConv2dFunction::apply(x, weight, bias, taps, center_mask);
}

}  // namespace genmodels
