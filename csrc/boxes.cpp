// Schema of actrack_fast::track_boxes and the input checks every kernel runs first. The CPU and CUDA kernels
// register themselves in cpu/boxes_kernel.cpp and cuda/boxes_kernel.cu; the fake (meta) implementation is
// registered from Python (actrack_fast/boxes_op.py). The op maps and clips the tracker's boxes (inference
// geometry): it has no autograd formula.
#include "boxes.h"

#include "checks.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>
#include <string>

namespace actrack_fast {
namespace {

constexpr const char* kOp = "track_boxes";

void check_boxes(const at::Tensor& t, const char* name, const char* what, at::ScalarType dtype, int64_t targets,
                 const at::Tensor& pred, c10::DeviceType device) {
  TORCH_CHECK(t.dim() == 2 && t.size(1) == 4 && (targets < 0 || t.size(0) == targets), "track_boxes: ", name,
              " must have shape (N, 4) ", what, targets < 0 ? std::string() : " with N = " + std::to_string(targets),
              ", got ", shape_string(t.sizes()));
  TORCH_CHECK(t.scalar_type() == dtype, "track_boxes: ", name, " must be ", dtype, ", got ", t.scalar_type());
  check_placement(kOp, t, name, pred, "pred", device);
}

}  // namespace

int64_t check_track_boxes(const at::Tensor& pred, const at::Tensor& previous, const at::Tensor& height,
                          const at::Tensor& width, double factor, int64_t size, double margin,
                          c10::DeviceType device) {
  check_boxes(pred, "pred", "(cx, cy, w, h fractions of the search crop)", at::kFloat, -1, pred, device);
  const int64_t targets = pred.size(0);
  check_boxes(previous, "previous", "(x, y, w, h)", at::kDouble, targets, pred, device);
  check_per_box_int64(kOp, height, "height", targets, "one image side per box", pred, "pred", device);
  check_per_box_int64(kOp, width, "width", targets, "one image side per box", pred, "pred", device);
  TORCH_CHECK(size >= 1, "track_boxes: size must be >= 1, got ", std::to_string(size));
  TORCH_CHECK(std::isfinite(factor) && factor > 0, "track_boxes: factor must be a positive finite number, got ",
              std::to_string(factor));
  TORCH_CHECK(std::isfinite(margin) && margin >= 0, "track_boxes: margin must be a finite number >= 0, got ",
              std::to_string(margin));
  return targets;
}

TORCH_LIBRARY_FRAGMENT(actrack_fast, m) {
  // Lets torch point users of the op at the module that registers its fake implementation.
  m.set_python_module("actrack_fast.boxes_op");
  m.def("track_boxes(Tensor pred, Tensor previous, Tensor height, Tensor width, float factor, int size, "
        "float margin) -> Tensor");
}

}  // namespace actrack_fast
