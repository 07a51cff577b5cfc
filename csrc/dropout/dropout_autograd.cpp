// The eager autograd path of dropout: a C++ autograd node over the CPU/CUDA entry points.
// At PixelCNN sizes on CPU ([64, 32, 8, 8]) the kernel takes tens of microseconds, about
// what a Python autograd.Function's forward wrapper and Python backward would add.
// torch.compile traces the torch.library op of python/genmodels/ops/dropout.py instead.
//
// The node saves only (p, seed, offset) and the output's strides. Its backward applies the
// same mask to grad_out laid out like the output; under create_graph it does so through
// this node again, so gradients of any order are exact (dropout is linear).
#include <torch/autograd.h>

#include <vector>

#include "dropout/dropout.h"
#include "dropout/dropout_checks.h"

namespace genmodels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor forward_on_device(const at::Tensor& x, double p, int64_t seed, int64_t offset) {
#ifdef WITH_CUDA
  if (x.is_cuda()) return dropout_forward_cuda(x, p, seed, offset);
#endif
  return dropout_forward_cpu(x, p, seed, offset);
}

// Strides agree on every dimension of size > 1 (the others do not move an element).
bool same_memory_order(const at::Tensor& t, at::IntArrayRef strides) {
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.size(d) > 1 && t.stride(d) != strides[d]) return false;
  return true;
}

// The mask follows the output's memory order, so a gradient in any other layout is
// copied into that one first.
at::Tensor in_memory_order(const at::Tensor& grad, at::IntArrayRef strides) {
  if (same_memory_order(grad, strides)) return grad;
  return at::empty_strided(grad.sizes(), strides, grad.options()).copy_(grad);
}

class DropoutFunction : public torch::autograd::Function<DropoutFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, double p, int64_t seed,
                            int64_t offset) {
    at::Tensor out = forward_on_device(x, p, seed, offset);
    ctx->saved_data["p"] = p;
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["strides"] = out.strides().vec();
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const double p = ctx->saved_data["p"].toDouble();
    const int64_t seed = ctx->saved_data["seed"].toInt();
    const int64_t offset = ctx->saved_data["offset"].toInt();
    const std::vector<int64_t> strides = ctx->saved_data["strides"].toIntVector();
    const at::Tensor grad = in_memory_order(grads[0], strides);
    const at::Tensor grad_x = at::GradMode::is_enabled()
                                  ? DropoutFunction::apply(grad, p, seed, offset)
                                  : forward_on_device(grad, p, seed, offset);
    return {grad_x, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor dropout_autograd(const at::Tensor& x, double p, int64_t seed, int64_t offset) {
  check_dropout_inputs(x, p);
  return DropoutFunction::apply(x, p, seed, offset);
}

}  // namespace genmodels
