// The eager path of the PixelCNN residual block: one C++ autograd node over the CPU/CUDA
// entry points, in place of the eight nodes (3 ReLUs, 3 convolutions, dropout, add) of the
// layer-by-layer block. It saves x (relu(x) on CPU), the weights, r1 and r2 (what backward
// needs) and the dropout's (p, seed, offset); torch.compile traces the torch.library op of
// python/genmodels/ops/pixelcnn_residual_block.py instead.
#include <torch/autograd.h>

#include "pixelcnn_residual_block/pixelcnn_residual_block.h"

namespace genmodels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

OptTensor opt(const at::Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

bool present(const OptTensor& t) { return t.has_value() && t->defined(); }

class ResidualBlockFunction : public torch::autograd::Function<ResidualBlockFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w1,
                            const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2,
                            const at::Tensor& w3, const OptTensor& b3,
                            const std::vector<int64_t>& taps, const OptTensor& cm1,
                            const OptTensor& cm2, const OptTensor& cm3, double p, int64_t seed,
                            int64_t offset) {
    at::Tensor out, r1, r2, relu_x;
#ifdef WITH_CUDA
    if (x.is_cuda()) {
      std::tie(out, r1, r2) = pixelcnn_residual_block_forward_cuda(x, w1, b1, w2, b2, w3, b3, taps,
                                                                   cm1, cm2, cm3, p, seed, offset);
    }
#endif
    if (!out.defined()) {
      std::tie(out, r1, r2, relu_x) = pixelcnn_residual_block_forward_keep_relu_cpu(
          x, w1, b1, w2, b2, w3, b3, taps, cm1, cm2, cm3, p, seed, offset);
    }
    const at::Tensor none;
    // On CPU relu(x) in place of x (see pixelcnn_residual_block.h).
    ctx->save_for_backward({relu_x.defined() ? relu_x : x, w1, w2, w3, r1, r2,
                            cm1.value_or(none), cm2.value_or(none), cm3.value_or(none)});
    ctx->saved_data["taps"] = taps;
    ctx->saved_data["p"] = p;
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["biases"] = std::vector<bool>{present(b1), present(b2), present(b3)};
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // The backward kernels build no graph: gradients of gradients would silently stop here.
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "pixelcnn_residual_block: the native backend's backward is not differentiable "
                "(create_graph=True); use backend='reference' for higher-order gradients");
    const variable_list s = ctx->get_saved_variables();
    const std::vector<bool> biases = ctx->saved_data["biases"].toBoolList().vec();
    // needs_input_grad counts the tensors given: an absent bias is no edge.
    const bool given[7] = {true, true, biases[0], true, biases[1], true, biases[2]};
    std::vector<bool> need(7, false);
    for (int i = 0, edge = 0; i < 7; ++i) {
      if (given[i]) need[i] = ctx->needs_input_grad(edge++);
    }
    const std::vector<int64_t> taps = ctx->saved_data["taps"].toIntVector();
    const double p = ctx->saved_data["p"].toDouble();
    [[maybe_unused]] const int64_t seed = ctx->saved_data["seed"].toInt();
    [[maybe_unused]] const int64_t offset = ctx->saved_data["offset"].toInt();
    std::vector<at::Tensor> g;
#ifdef WITH_CUDA
    if (s[0].is_cuda()) {
      g = pixelcnn_residual_block_backward_cuda(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], taps,
                                                opt(s[6]), opt(s[7]), opt(s[8]), p, seed, offset,
                                                need);
    }
#endif
    if (g.empty()) {
      g = pixelcnn_residual_block_backward_from_relu_cpu(grads[0], s[0], s[1], s[2], s[3], s[4],
                                                         s[5], taps, opt(s[6]), opt(s[7]),
                                                         opt(s[8]), p, need);
    }
    // One entry per forward argument (absent optionals included).
    variable_list out(14);
    for (int i = 0; i < 7; ++i) out[i] = g[i];
    return out;
  }
};

}  // namespace

at::Tensor pixelcnn_residual_block_autograd(
    const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1, const at::Tensor& w2,
    const OptTensor& b2, const at::Tensor& w3, const OptTensor& b3,
    const std::vector<int64_t>& taps, const OptTensor& cm1, const OptTensor& cm2,
    const OptTensor& cm3, double p, int64_t seed, int64_t offset) {
  return ResidualBlockFunction::apply(x, w1, b1, w2, b2, w3, b3, taps, cm1, cm2, cm3, p, seed,
                                      offset);
}

}  // namespace genmodels
