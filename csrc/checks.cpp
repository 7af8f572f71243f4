#include "checks.h"

#include <c10/util/Exception.h>

namespace actrack_fast {

std::string shape_string(at::IntArrayRef sizes) {
  std::string text = "[";
  for (size_t i = 0; i < sizes.size(); ++i) {
    text += (i ? ", " : "") + std::to_string(sizes[i]);
  }
  return text + "]";
}

void check_placement(const char* op, const at::Tensor& t, const char* name, const at::Tensor& anchor,
                     const char* anchor_name, c10::DeviceType device) {
  TORCH_CHECK(t.device().type() == device, op, ": ", name, " is on ", t.device(), " but this kernel runs on ",
              device, " tensors");
  TORCH_CHECK(t.device() == anchor.device(), op, ": ", name, " is on ", t.device(), " but ", anchor_name,
              " is on ", anchor.device());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous (call .contiguous())");
}

void check_per_box_int64(const char* op, const at::Tensor& t, const char* name, int64_t targets, const char* what,
                         const at::Tensor& anchor, const char* anchor_name, c10::DeviceType device) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == targets, op, ": ", name, " must have shape (N,) with N = ",
              std::to_string(targets), " (", what, "), got ", shape_string(t.sizes()));
  TORCH_CHECK(t.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ", t.scalar_type());
  check_placement(op, t, name, anchor, anchor_name, device);
}

}  // namespace actrack_fast
