// The Gated PixelCNN activation tanh(a) * sigmoid(b) on CPU, forward and backward, one
// pass each over channels-last memory. PyTorch's composition (two slices, tanh, sigmoid,
// a product, and their derivatives) makes about ten passes, and at::tanh ran at about
// 0.5 G elements/s on the 2-core EPYC (one thread, an ad-hoc timing): the forward +
// backward of one [64, 128, 8, 8] gate took about 8x as long that way as fused, which is
// much of what a Gated PixelCNN step on the digits gains (benchmarks/results/cpu-models.md).
//
// pre is [N, 2C, H, W]; per pixel its 2C channels are [G groups][2 halves][C / G] and
// output channel g * C / G + r is tanh(pre[g, 0, r]) * sigmoid(pre[g, 1, r]).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/cpu_chunks.h"
#include "common/cpu_math.h"
#include "masked_conv2d/masked_conv2d.h"

namespace genmodels {
namespace {

// The float rows are cloned for AVX-512 and AVX2 (the polynomials vectorize); float64 uses
// libm, for gradcheck's accuracy.
GM_CPU_CLONES void forward_row(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t r = 0; r < n; ++r) out[r] = cpu_math::tanh_any(a[r]) * cpu_math::sigmoid_any(b[r]);
}

GM_CPU_CLONES void backward_row(const float* a, const float* b, const float* go, float* ga,
                                float* gb, int64_t n) {
  for (int64_t r = 0; r < n; ++r) {
    const float t = cpu_math::tanh_any(a[r]), s = cpu_math::sigmoid_any(b[r]);
    ga[r] = go[r] * s * (1.0f - t * t);
    gb[r] = go[r] * t * s * (1.0f - s);
  }
}

void forward_row(const double* a, const double* b, double* out, int64_t n) {
  for (int64_t r = 0; r < n; ++r) out[r] = std::tanh(a[r]) / (1.0 + std::exp(-b[r]));
}

void backward_row(const double* a, const double* b, const double* go, double* ga, double* gb,
                  int64_t n) {
  for (int64_t r = 0; r < n; ++r) {
    const double t = std::tanh(a[r]), s = 1.0 / (1.0 + std::exp(-b[r]));
    ga[r] = go[r] * s * (1.0 - t * t);
    gb[r] = go[r] * t * s * (1.0 - s);
  }
}

// Runs body(pixel_begin, pixel_end) in parallel over the pixels of an NHWC tensor.
template <typename Body>
void for_pixels(int64_t pixels, int64_t per_pixel, const Body& body) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, per_pixel));
  at::parallel_for(0, pixels, grain, body);
}

void check_gate_inputs(const at::Tensor& pre, int64_t groups) {
  check_floating(pre, "pre");
  TORCH_CHECK(pre.dim() == 4, "pre must be a 4-D [N, 2C, H, W] tensor, got ", pre.dim(), " dims");
  TORCH_CHECK(groups >= 1 && pre.size(1) % (2 * groups) == 0, "pre's ", pre.size(1),
              " channels must be divisible by 2 * color_groups (", 2 * groups, ")");
  check_device_type(pre, at::kCPU, "pre");
}

at::Tensor nhwc(const at::Tensor& t) { return t.contiguous(at::MemoryFormat::ChannelsLast); }

}  // namespace

at::Tensor gated_activation_forward_cpu(const at::Tensor& pre_in, int64_t groups) {
  check_gate_inputs(pre_in, groups);
  const at::Tensor pre = nhwc(pre_in);
  const int64_t n = pre.size(0), c2 = pre.size(1), h = pre.size(2), w = pre.size(3);
  const int64_t per = c2 / (2 * groups), pixels = n * h * w;
  at::Tensor out = at::empty({n, c2 / 2, h, w}, pre.options(), at::MemoryFormat::ChannelsLast);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pre.scalar_type(), "gate_fwd", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* src = pre.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    for_pixels(pixels, c2, [&](int64_t p0, int64_t p1) {
      std::vector<acc_t> a(per), b(per), o(per);
      for (int64_t p = p0; p < p1; ++p) {
        for (int64_t g = 0; g < groups; ++g) {
          const scalar_t* row = src + p * c2 + g * 2 * per;
          for (int64_t r = 0; r < per; ++r) {
            a[r] = static_cast<acc_t>(row[r]);
            b[r] = static_cast<acc_t>(row[per + r]);
          }
          forward_row(a.data(), b.data(), o.data(), per);
          scalar_t* orow = dst + p * (c2 / 2) + g * per;
          for (int64_t r = 0; r < per; ++r) orow[r] = static_cast<scalar_t>(o[r]);
        }
      }
    });
  });
  return out;
}

at::Tensor gated_activation_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& pre_in,
                                         int64_t groups) {
  check_gate_inputs(pre_in, groups);
  check_same_dtype(grad_out_in, pre_in, "grad_out", "pre");
  TORCH_CHECK(grad_out_in.dim() == 4 && grad_out_in.size(0) == pre_in.size(0) &&
                  grad_out_in.size(1) * 2 == pre_in.size(1) &&
                  grad_out_in.size(2) == pre_in.size(2) && grad_out_in.size(3) == pre_in.size(3),
              "grad_out must have shape [", pre_in.size(0), ", ", pre_in.size(1) / 2, ", ",
              pre_in.size(2), ", ", pre_in.size(3), "], got ", grad_out_in.sizes());
  const at::Tensor pre = nhwc(pre_in), grad_out = nhwc(grad_out_in);
  const int64_t c2 = pre.size(1), per = c2 / (2 * groups);
  const int64_t pixels = pre.size(0) * pre.size(2) * pre.size(3);
  at::Tensor grad_pre = at::empty_like(pre, at::MemoryFormat::ChannelsLast);
  if (grad_pre.numel() == 0) return grad_pre;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pre.scalar_type(), "gate_bwd", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* src = pre.const_data_ptr<scalar_t>();
    const scalar_t* gsrc = grad_out.const_data_ptr<scalar_t>();
    scalar_t* dst = grad_pre.mutable_data_ptr<scalar_t>();
    for_pixels(pixels, c2, [&](int64_t p0, int64_t p1) {
      std::vector<acc_t> a(per), b(per), go(per), ga(per), gb(per);
      for (int64_t p = p0; p < p1; ++p) {
        for (int64_t g = 0; g < groups; ++g) {
          const scalar_t* row = src + p * c2 + g * 2 * per;
          const scalar_t* grow = gsrc + p * (c2 / 2) + g * per;
          for (int64_t r = 0; r < per; ++r) {
            a[r] = static_cast<acc_t>(row[r]);
            b[r] = static_cast<acc_t>(row[per + r]);
            go[r] = static_cast<acc_t>(grow[r]);
          }
          backward_row(a.data(), b.data(), go.data(), ga.data(), gb.data(), per);
          scalar_t* drow = dst + p * c2 + g * 2 * per;
          for (int64_t r = 0; r < per; ++r) {
            drow[r] = static_cast<scalar_t>(ga[r]);
            drow[per + r] = static_cast<scalar_t>(gb[r]);
          }
        }
      }
    });
  });
  return grad_pre;
}

}  // namespace genmodels
