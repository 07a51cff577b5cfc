// The eager CPU path of gradient_penalty: one C++ autograd node over the CPU kernels, with
// the batch reduction folded into them.
//
// On small inputs (B=64 x 3x32x32 is 0.8 MB) the kernels take ~10 us and a Python
// autograd.Function, a separate `mean` node and the tensors its backward built (the scaled,
// expanded gradient of the mean; a zero gradient for the unused norm output) cost more than
// that. This node has the same derivatives as the torch.library op in
// python/genmodels/ops/gradient_penalty.py: a plain backward pass runs the kernel; under
// create_graph it calls that file's differentiable backward op, so higher orders reuse its
// derivatives instead of writing them again here.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <torch/csrc/autograd/custom_function.h>

#include <string>

#include "gradient_penalty/gradient_penalty.h"
#include "gradient_penalty/gradient_penalty_checks.h"

namespace genmodels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The create_graph backward: genmodels::gradient_penalty_backward (differentiable to any
// order) on materialized [B] gradients, built with differentiable ops.
at::Tensor differentiable_backward(const at::Tensor& grad_out, const at::Tensor& grad_norm,
                                   const at::Tensor& grads, const at::Tensor& norm,
                                   double target, bool one_sided, GpReduction reduction) {
  const int64_t rows = grads.size(0);
  at::Tensor gp;
  if (!grad_out.defined()) {
    gp = at::zeros({rows}, grads.options());
  } else if (reduction == GpReduction::None) {
    gp = grad_out;
  } else {
    const double scale = reduction == GpReduction::Mean && rows ? 1.0 / rows : 1.0;
    gp = (grad_out * scale).expand({rows});
  }
  const at::Tensor gn = grad_norm.defined() ? grad_norm : at::zeros_like(norm);
  static const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow(
      "genmodels::gradient_penalty_backward", "");
  torch::jit::Stack stack{gp, gn, grads, norm, target, one_sided, std::string("native")};
  op.callBoxed(&stack);
  return stack.at(0).toTensor();
}

struct GradientPenaltyCpu : public torch::autograd::Function<GradientPenaltyCpu> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grads, double target,
                               bool one_sided, int64_t reduction) {
    const auto red = static_cast<GpReduction>(reduction);
    auto [out, norm] = gradient_penalty_forward_reduced_cpu(grads, target, one_sided, red);
    // an unused output's gradient stays undefined (zero) instead of a zero-filled tensor
    ctx->set_materialize_grads(false);
    // norm is an output (not only saved) so that, under create_graph, the derivatives with
    // respect to it reach grads through this node
    ctx->save_for_backward({grads, norm});
    ctx->saved_data["target"] = target;
    ctx->saved_data["one_sided"] = one_sided;
    ctx->saved_data["reduction"] = reduction;
    return {out, norm};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& grads = saved[0];
    const at::Tensor& norm = saved[1];
    const double target = ctx->saved_data["target"].toDouble();
    const bool one_sided = ctx->saved_data["one_sided"].toBool();
    const auto red = static_cast<GpReduction>(ctx->saved_data["reduction"].toInt());
    at::Tensor grad_grads =
        at::GradMode::is_enabled()
            ? differentiable_backward(grad_outputs[0], grad_outputs[1], grads, norm, target,
                                      one_sided, red)
            : gradient_penalty_backward_reduced_cpu(grad_outputs[0], grad_outputs[1], grads,
                                                    norm, target, one_sided, red);
    return {grad_grads, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

std::tuple<at::Tensor, at::Tensor> gradient_penalty_autograd_cpu(const at::Tensor& grads,
                                                                 double target, bool one_sided,
                                                                 const std::string& reduction) {
  check_gradient_penalty_inputs(grads);
  check_device_type(grads, at::kCPU, "grads");
  const GpReduction red = parse_gradient_penalty_reduction(reduction);
  variable_list out =
      GradientPenaltyCpu::apply(grads, target, one_sided, static_cast<int64_t>(red));
  return {out[0], out[1]};
}

}  // namespace genmodels
