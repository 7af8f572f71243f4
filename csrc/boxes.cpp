// Schemas of actrack_fast::track_boxes and actrack_fast::advance_targets and the input checks every kernel runs
// first. The CPU and CUDA kernels register themselves in cpu/boxes_kernel.cpp and cuda/boxes_kernel.cu; the fake
// (meta) implementations are registered from Python (actrack_fast/boxes_op.py). The ops map and clip the
// tracker's boxes (inference geometry): they have no autograd formula.
#include "boxes.h"

#include "checks.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>
#include <string>

namespace actrack_fast {
namespace {

void check_boxes(const char* op, const at::Tensor& t, const char* name, const char* what, at::ScalarType dtype,
                 int64_t targets, const at::Tensor& pred, c10::DeviceType device) {
  TORCH_CHECK(t.dim() == 2 && t.size(1) == 4 && (targets < 0 || t.size(0) == targets), op, ": ", name,
              " must have shape (N, 4) ", what, targets < 0 ? std::string() : " with N = " + std::to_string(targets),
              ", got ", shape_string(t.sizes()));
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ", t.scalar_type());
  check_placement(op, t, name, pred, "pred", device);
}

// The checks both ops run on their shared inputs; returns N.
int64_t check_geometry(const char* op, const at::Tensor& pred, const at::Tensor& previous, const at::Tensor& height,
                       const at::Tensor& width, double factor, int64_t size, double margin, c10::DeviceType device) {
  check_boxes(op, pred, "pred", "(cx, cy, w, h fractions of the search crop)", at::kFloat, -1, pred, device);
  const int64_t targets = pred.size(0);
  check_boxes(op, previous, "previous", "(x, y, w, h)", at::kDouble, targets, pred, device);
  check_per_box_int64(op, height, "height", targets, "one image side per box", pred, "pred", device);
  check_per_box_int64(op, width, "width", targets, "one image side per box", pred, "pred", device);
  TORCH_CHECK(size >= 1, op, ": size must be >= 1, got ", std::to_string(size));
  TORCH_CHECK(std::isfinite(factor) && factor > 0, op, ": factor must be a positive finite number, got ",
              std::to_string(factor));
  TORCH_CHECK(std::isfinite(margin) && margin >= 0, op, ": margin must be a finite number >= 0, got ",
              std::to_string(margin));
  return targets;
}

}  // namespace

int64_t check_track_boxes(const at::Tensor& pred, const at::Tensor& previous, const at::Tensor& height,
                          const at::Tensor& width, double factor, int64_t size, double margin,
                          c10::DeviceType device) {
  return check_geometry("track_boxes", pred, previous, height, width, factor, size, margin, device);
}

int64_t check_advance_targets(const at::Tensor& pred, const at::Tensor& probs, const at::Tensor& boxes,
                              const at::Tensor& frames, const at::Tensor& confidences, const at::Tensor& height,
                              const at::Tensor& width, double factor, int64_t size, double margin, int64_t interval,
                              double threshold, c10::DeviceType device) {
  const char* op = "advance_targets";
  const int64_t targets = check_geometry(op, pred, boxes, height, width, factor, size, margin, device);
  check_boxes(op, probs, "probs", "(the 4 tokens' probabilities)", at::kFloat, targets, pred, device);
  check_per_box_int64(op, frames, "frames", targets, "one frame count per target", pred, "pred", device);
  TORCH_CHECK(confidences.dim() == 1 && confidences.size(0) == targets, op, ": confidences must have shape (N,) ",
              "with N = ", std::to_string(targets), ", got ", shape_string(confidences.sizes()));
  TORCH_CHECK(confidences.scalar_type() == at::kDouble, op, ": confidences must be Double, got ",
              confidences.scalar_type());
  check_placement(op, confidences, "confidences", pred, "pred", device);
  TORCH_CHECK(interval >= 1, op, ": interval must be >= 1, got ", std::to_string(interval));
  TORCH_CHECK(std::isfinite(threshold), op, ": threshold must be finite, got ", std::to_string(threshold));
  return targets;
}

TORCH_LIBRARY_FRAGMENT(actrack_fast, m) {
  // Lets torch point users of the op at the module that registers its fake implementation.
  m.set_python_module("actrack_fast.boxes_op");
  m.def("track_boxes(Tensor pred, Tensor previous, Tensor height, Tensor width, float factor, int size, "
        "float margin) -> Tensor");
  // Writes the next boxes, frame counts and confidences into the state tensors; returns the update decisions.
  m.def("advance_targets(Tensor pred, Tensor probs, Tensor(a!) boxes, Tensor(b!) frames, Tensor(c!) confidences, "
        "Tensor height, Tensor width, float factor, int size, float margin, int interval, float threshold) -> Tensor");
}

}  // namespace actrack_fast
