// Torch glue of the dropout CUDA kernel: checks, allocation, stream, launch.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/cuda_glue.h"
#include "common/philox.h"
#include "dropout/dropout.h"
#include "dropout/dropout_checks.h"
#include "dropout/dropout_cuda.h"

namespace genmodels {

at::Tensor dropout_forward_cuda(const at::Tensor& x_in, double p, int64_t seed, int64_t offset) {
  check_dropout_inputs(x_in, p);
  check_device_type(x_in, at::kCUDA, "x");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = dropout_memory_order(x_in);
  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;
  C10_CUDA_CHECK(dropout_launch(to_dtype(x.scalar_type()), x.const_data_ptr(),
                                out.mutable_data_ptr(), x.numel(), dropout_threshold(p),
                                dropout_scale(p), static_cast<uint64_t>(seed),
                                static_cast<uint64_t>(offset),
                                c10::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace genmodels
