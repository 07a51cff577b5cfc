#pragma once
// Entry points of the cached PixelCNN samplers (inference only: no autograd).
//
// Each samples a whole batch of images in one call: for every sub-pixel in raster then
// colour order it evaluates the network at that one position from caches of each layer's
// recent input (the Gated PixelCNN's vertical stack once per row), then draws the sub-pixel
// with at::multinomial(softmax(float(logits)), 1, generator): the same calls, in the same
// order, as the naive sampler of genmodels.models, so one generator gives the same images.
//
// The convolutions come packed by genmodels.ops.pixelcnn_sampling.pack_conv: `weights[l]`
// [G, K, Np] (rows: the kept taps of each kernel row, tap-major then input channel, then
// the center tap's input-channel prefix of output group g; columns: group g's outputs,
// zero-padded to Np), `biases[l]` [G, Np], and `metas[l]` int64
// [k, C_in, C_out, G, C_out / G, Np, K, R, (ky, kx_first, kx_last) * R, prefix_g * G].
// Layer order: PixelCNN [input, (1x1, kxk, 1x1) per block, head 1x1, head 1x1];
// Gated PixelCNN [(conv_v, v_to_h, conv_h, h_out, skip) per layer, head 1x1, head 1x1].
// `workspace` (zeroed, the dtype of the weights) holds every cache; its size in elements
// comes from pixelcnn_sampling_workspace_cpu. `x` int64 [N, C, H, W] receives the images;
// `logits` (optional, [N, levels, C, H, W]) the logits each sub-pixel was drawn from.
// `cond`: PixelCNN's class bias rows [N, hidden], Gated PixelCNN's [L, 2, N, 2 * hidden]
// (vertical, horizontal), or none.
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

namespace genmodels {

int64_t pixelcnn_sampling_workspace_cpu(const std::string& model,
                                        const std::vector<at::Tensor>& metas, int64_t n,
                                        int64_t channels, int64_t size, int64_t levels);

void pixelcnn_sampling_sample_cpu(const std::string& model, at::Tensor x,
                                  std::optional<at::Tensor> logits, at::Tensor workspace,
                                  const std::vector<at::Tensor>& weights,
                                  const std::vector<at::Tensor>& biases,
                                  const std::vector<at::Tensor>& metas,
                                  std::optional<at::Tensor> cond, int64_t levels,
                                  std::optional<at::Generator> generator);

#ifdef WITH_CUDA
// The per-layer path on CUDA tensors: a convolution's output [N, C_out] at padded position
// (i, j) of x [N, C_in, H + 2c, W + 2c] from pack_dense weights [K, C_out] and runs [3, R]
// (see pixelcnn_sampling_cuda.h).
at::Tensor pixelcnn_sampling_conv_at_cuda(const at::Tensor& x, const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias,
                                          const at::Tensor& runs, int64_t i, int64_t j);
#endif

}  // namespace genmodels
