#pragma once
// Torch glue of the PixelRNN recurrences on CUDA (row_lstm, diagonal_lstm; built only with
// CUDA). Per step of the plan (common/lstm_layout.h): the sources' h are gathered into
// col [B * n, taps * C] (index_select over the state rows, whose last row is zero for taps
// outside the image), pre = col @ Wt (cuBLAS), then the op's fused cell kernel
// (common/lstm_cell.cuh). Backward recomputes each step's gates from the saved h and c the
// same way, and scatters the state gradients back with index_add.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>
#include <tuple>
#include <vector>

#include "common/cuda_glue.h"
#include "common/lstm_layout.h"
#include "common/lstm_step.h"

namespace genmodels {

using LstmCellForwardLaunch = cudaError_t (*)(DType, const void*, const void*, const void*,
                                              lstm_cuda::StepRows, void*, void*, cudaStream_t);
using LstmCellBackwardLaunch = cudaError_t (*)(DType, const void*, const void*, const void*,
                                               lstm_cuda::StepRows, const void*, const void*,
                                               void*, void*, cudaStream_t);

// The plan on the device and each step's gather rows into the [B * HW + 1, C] states.
struct LstmDevicePlan {
  at::Tensor pos, cell_src;
  std::vector<at::Tensor> index;

  LstmDevicePlan(const LstmPlan& plan, int64_t batch, const at::Device& device) {
    const auto on_device = at::TensorOptions().dtype(at::kLong).device(device);
    pos = at::tensor(plan.pos, at::kLong).to(device);
    cell_src = at::tensor(plan.cell_src, at::kLong).to(device);
    const at::Tensor taps = at::tensor(plan.tap_src, at::kLong).to(device).view({-1, plan.taps});
    const at::Tensor base = at::arange(batch, on_device).mul_(plan.positions).view({batch, 1, 1});
    const int64_t zero_row = batch * plan.positions;
    for (int64_t s = 0; s < plan.steps(); ++s) {
      const int64_t first = plan.step_begin[s], n = plan.step_begin[s + 1] - first;
      const at::Tensor src = taps.narrow(0, first, n).unsqueeze(0);
      index.push_back(at::where(src >= 0, base + src, zero_row).reshape({-1}));
    }
  }
};

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_forward_cuda(
    const LstmPlan& plan, const at::Tensor& gates_x, const at::Tensor& weight,
    const std::optional<at::Tensor>& bias, LstmCellForwardLaunch launch) {
  const c10::cuda::CUDAGuard guard(gates_x.device());
  const at::ScalarType acc = lstm_acc_type(gates_x);
  const int64_t B = gates_x.size(0), G = gates_x.size(1), C = G / 4;
  const int64_t H = gates_x.size(2), W = gates_x.size(3), rows = B * H * W;
  const auto opts = gates_x.options().dtype(acc);
  at::Tensor h = at::zeros({rows + 1, C}, opts);
  at::Tensor c = at::zeros({rows + 1, C}, opts);
  if (rows > 0) {
    const at::Tensor gx = lstm_position_major(gates_x, acc);
    const at::Tensor wt = lstm_weight_rhs(weight, acc);
    const at::Tensor b = bias.has_value() ? bias->to(acc).contiguous() : at::Tensor();
    const LstmDevicePlan dev(plan, B, gates_x.device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    for (int64_t s = 0; s < plan.steps(); ++s) {
      const int64_t first = plan.step_begin[s], n = plan.step_begin[s + 1] - first;
      const at::Tensor col = h.index_select(0, dev.index[s]).view({B * n, plan.taps * C});
      const at::Tensor pre = at::mm(col, wt);
      const lstm_cuda::StepRows step{dev.pos.const_data_ptr<int64_t>(),
                                     dev.cell_src.const_data_ptr<int64_t>(), first, n, B * n,
                                     H * W, C};
      C10_CUDA_CHECK(launch(to_dtype(acc), pre.const_data_ptr(), gx.const_data_ptr(),
                            data_or_null(b), step, h.mutable_data_ptr(), c.mutable_data_ptr(),
                            stream));
    }
  }
  const at::Tensor h_state = h.narrow(0, 0, rows).view({B, H, W, C}).clone();
  const at::Tensor c_state = c.narrow(0, 0, rows).view({B, H, W, C}).clone();
  return {lstm_image_major(h_state, gates_x), h_state, c_state};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_backward_cuda(
    const LstmPlan& plan, const at::Tensor& grad_h, const at::Tensor& gates_x,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias, const at::Tensor& h_state,
    const at::Tensor& c_state, LstmCellBackwardLaunch launch) {
  const c10::cuda::CUDAGuard guard(gates_x.device());
  const at::ScalarType acc = lstm_acc_type(gates_x);
  const int64_t B = gates_x.size(0), G = gates_x.size(1), C = G / 4;
  const int64_t H = gates_x.size(2), W = gates_x.size(3), rows = B * H * W;
  const int64_t taps = weight.size(2);
  const auto opts = gates_x.options().dtype(acc);
  at::Tensor dgx = at::zeros({B, H, W, G}, opts);
  at::Tensor dwt = at::zeros({taps * C, G}, opts);
  at::Tensor db = at::zeros({G}, opts);
  if (rows > 0) {
    const at::Tensor gx = lstm_position_major(gates_x, acc);
    const at::Tensor wt = lstm_weight_rhs(weight, acc);
    const at::Tensor w = wt.t();
    const at::Tensor b = bias.has_value() ? bias->to(acc).contiguous() : at::Tensor();
    const at::Tensor h = at::cat({h_state.to(acc).reshape({rows, C}), at::zeros({1, C}, opts)});
    const at::Tensor c = c_state.to(acc).reshape({rows, C}).contiguous();
    at::Tensor dh = at::zeros({rows + 1, C}, opts);
    dh.narrow(0, 0, rows).view({B, H, W, C}).copy_(grad_h.permute({0, 2, 3, 1}));
    at::Tensor dc = at::zeros({rows, C}, opts);
    at::Tensor dgx_rows = dgx.view({rows, G});
    const LstmDevicePlan dev(plan, B, gates_x.device());
    const at::Tensor batch_base =
        at::arange(B, gates_x.options().dtype(at::kLong)).mul_(H * W).view({B, 1});
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    for (int64_t s = plan.steps() - 1; s >= 0; --s) {
      const int64_t first = plan.step_begin[s], n = plan.step_begin[s + 1] - first;
      const at::Tensor col = h.index_select(0, dev.index[s]).view({B * n, taps * C});
      const at::Tensor pre = at::mm(col, wt);
      at::Tensor dpre = at::empty_like(pre);
      const lstm_cuda::StepRows step{dev.pos.const_data_ptr<int64_t>(),
                                     dev.cell_src.const_data_ptr<int64_t>(), first, n, B * n,
                                     H * W, C};
      C10_CUDA_CHECK(launch(to_dtype(acc), pre.const_data_ptr(), gx.const_data_ptr(),
                            data_or_null(b), step, c.const_data_ptr(), dh.const_data_ptr(),
                            dc.mutable_data_ptr(), dpre.mutable_data_ptr(), stream));
      const at::Tensor here = (batch_base + dev.pos.narrow(0, first, n).view({1, n})).view({-1});
      dgx_rows.index_copy_(0, here, dpre);
      dwt.addmm_(col.t(), dpre);
      db.add_(dpre.sum(0));
      dh.index_add_(0, dev.index[s], at::mm(dpre, w).view({-1, C}));
    }
  }
  at::Tensor grad_w = at::empty(weight.sizes(), weight.options());
  grad_w.copy_(dwt.view({taps, C, G}).permute({2, 1, 0}));
  at::Tensor grad_b = at::empty({G}, weight.options());
  grad_b.copy_(db);
  return {lstm_image_major(dgx, gates_x), grad_w, grad_b};
}

}  // namespace genmodels
