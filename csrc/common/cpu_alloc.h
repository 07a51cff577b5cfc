#pragma once
// Outputs of the CPU kernels. A large fresh tensor costs more in first-touch page faults
// than the kernel spends writing it (4 KiB pages; about 4 GB/s on small VMs), so large
// outputs ask Linux for transparent huge pages before they are touched. This is what
// PyTorch's own allocator does under THP_MEM_ALLOC_ENABLE=1, limited to our outputs.
#include <ATen/ATen.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace genmodels {

inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const size_t bytes = t.nbytes();
  if (bytes < 4 * kHuge) return;
  const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + bytes) & ~(kHuge - 1);
  // Advice only: failure leaves ordinary pages, which is still correct.
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
  advise_huge_pages(out);
  return out;
}

// Same sizes, dtype and strides (memory format) as `like`.
inline at::Tensor empty_output_like(const at::Tensor& like) {
  at::Tensor out = at::empty_like(like);
  advise_huge_pages(out);
  return out;
}

}  // namespace genmodels
