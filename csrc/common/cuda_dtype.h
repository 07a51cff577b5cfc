#pragma once
// Torch-free description of a tensor's element type, so the .cu launchers take raw
// pointers plus a DType and the torch glue maps at::ScalarType onto it.
namespace genmodels {

enum class DType { kFloat16, kBFloat16, kFloat32, kFloat64 };

}  // namespace genmodels
