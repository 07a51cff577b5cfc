// The genmodels._C module: one line per entry point.
#include <torch/extension.h>

#include "diagonal_lstm/diagonal_lstm.h"
#include "dropout/dropout.h"
#include "gradient_penalty/gradient_penalty.h"
#include "masked_conv2d/masked_conv2d.h"
#include "pixelcnn_residual_block/pixelcnn_residual_block.h"
#include "pixelcnn_sampling/pixelcnn_sampling.h"
#include "reparameterize_kl/reparameterize_kl.h"
#include "row_lstm/row_lstm.h"

namespace gm = genmodels;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
#ifdef WITH_CUDA
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
  m.def("masked_conv2d_forward_cpu", &gm::masked_conv2d_forward_cpu);
  m.def("masked_conv2d_backward_cpu", &gm::masked_conv2d_backward_cpu);
  m.def("masked_conv2d_autograd_cpu", &gm::masked_conv2d_autograd);
  m.def("masked_conv2d_reads_box_cpu", &gm::masked_conv2d_reads_box_cpu);
  m.def("gated_activation_forward_cpu", &gm::gated_activation_forward_cpu);
  m.def("gated_activation_backward_cpu", &gm::gated_activation_backward_cpu);
  m.def("gated_activation_autograd_cpu", &gm::gated_activation_autograd);
  m.def("reparameterize_kl_forward_cpu", &gm::reparameterize_kl_forward_cpu);
  m.def("reparameterize_kl_backward_cpu", &gm::reparameterize_kl_backward_cpu);
  m.def("gradient_penalty_forward_cpu", &gm::gradient_penalty_forward_cpu);
  m.def("gradient_penalty_backward_cpu", &gm::gradient_penalty_backward_cpu);
  m.def("gradient_penalty_autograd_cpu", &gm::gradient_penalty_autograd_cpu);
  m.def("dropout_forward_cpu", &gm::dropout_forward_cpu);
  m.def("dropout_autograd_cpu", &gm::dropout_autograd);
  m.def("pixelcnn_sampling_workspace_cpu", &gm::pixelcnn_sampling_workspace_cpu);
  m.def("pixelcnn_sampling_sample_cpu", &gm::pixelcnn_sampling_sample_cpu,
        py::call_guard<py::gil_scoped_release>());
  m.def("pixelcnn_residual_block_forward_cpu", &gm::pixelcnn_residual_block_forward_cpu);
  m.def("pixelcnn_residual_block_backward_cpu", &gm::pixelcnn_residual_block_backward_cpu);
  m.def("pixelcnn_residual_block_autograd_cpu", &gm::pixelcnn_residual_block_autograd);
  m.def("row_lstm_forward_cpu", &gm::row_lstm_forward_cpu);
  m.def("row_lstm_backward_cpu", &gm::row_lstm_backward_cpu);
  m.def("diagonal_lstm_forward_cpu", &gm::diagonal_lstm_forward_cpu);
  m.def("diagonal_lstm_backward_cpu", &gm::diagonal_lstm_backward_cpu);
#ifdef WITH_CUDA
  m.def("masked_conv2d_forward_cuda", &gm::masked_conv2d_forward_cuda);
  m.def("masked_conv2d_backward_cuda", &gm::masked_conv2d_backward_cuda);
  m.def("masked_conv2d_autograd_cuda", &gm::masked_conv2d_autograd);  // the same node
  m.def("reparameterize_kl_forward_cuda", &gm::reparameterize_kl_forward_cuda);
  m.def("reparameterize_kl_backward_cuda", &gm::reparameterize_kl_backward_cuda);
  m.def("gradient_penalty_forward_cuda", &gm::gradient_penalty_forward_cuda);
  m.def("gradient_penalty_backward_cuda", &gm::gradient_penalty_backward_cuda);
  m.def("dropout_forward_cuda", &gm::dropout_forward_cuda);
  m.def("dropout_autograd_cuda", &gm::dropout_autograd);  // the same node
  m.def("pixelcnn_sampling_conv_at_cuda", &gm::pixelcnn_sampling_conv_at_cuda);
  m.def("pixelcnn_residual_block_forward_cuda", &gm::pixelcnn_residual_block_forward_cuda);
  m.def("pixelcnn_residual_block_backward_cuda", &gm::pixelcnn_residual_block_backward_cuda);
  m.def("pixelcnn_residual_block_autograd_cuda", &gm::pixelcnn_residual_block_autograd);
  m.def("row_lstm_forward_cuda", &gm::row_lstm_forward_cuda);
  m.def("row_lstm_backward_cuda", &gm::row_lstm_backward_cuda);
  m.def("diagonal_lstm_forward_cuda", &gm::diagonal_lstm_forward_cuda);
  m.def("diagonal_lstm_backward_cuda", &gm::diagonal_lstm_backward_cuda);
#endif
}
