#pragma once
// Input checks shared by the torch glue of every op. Python checks first with friendlier
// messages; these keep the C++ entry points safe when called directly.
#include <ATen/ATen.h>

namespace genmodels {

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), name,
              " must be a floating-point tensor (float16, bfloat16, float32 or float64), got ",
              t.scalar_type());
}

inline void check_same_dtype(const at::Tensor& t, const at::Tensor& ref, const char* name,
                             const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, " has dtype ", t.scalar_type(),
              " but ", ref_name, " has dtype ", ref.scalar_type());
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* name,
                              const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), name, " is on ", t.device(), " but ", ref_name,
              " is on ", ref.device());
}

inline void check_same_shape(const at::Tensor& t, const at::Tensor& ref, const char* name,
                             const char* ref_name) {
  TORCH_CHECK(t.sizes() == ref.sizes(), name, " has shape ", t.sizes(), " but ", ref_name,
              " has shape ", ref.sizes());
}

inline void check_device_type(const at::Tensor& t, at::DeviceType type, const char* name) {
  TORCH_CHECK(t.device().type() == type, name, " must be on ", type, ", got ", t.device());
}

}  // namespace genmodels
