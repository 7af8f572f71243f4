// CPU kernels of actrack_fast::track_boxes and actrack_fast::advance_targets: boxes split over at::parallel_for
// (OpenMP) tasks, each box through boxes.h's arithmetic, shared with the CUDA kernels.
#include "../boxes.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

namespace actrack_fast {
namespace {

// Enough boxes per parallel task to pay for handing it to another thread.
constexpr int64_t kMinBoxesPerTask = 1 << 14;

at::Tensor track_boxes_cpu(const at::Tensor& pred, const at::Tensor& previous, const at::Tensor& height,
                           const at::Tensor& width, double factor, int64_t size, double margin) {
  const int64_t targets =
      check_track_boxes(pred, previous, height, width, factor, size, margin, c10::DeviceType::CPU);
  at::Tensor out = at::empty({targets, 4}, previous.options());
  const float* p = pred.const_data_ptr<float>();
  const double* prev = previous.const_data_ptr<double>();
  const int64_t* heights = height.const_data_ptr<int64_t>();
  const int64_t* widths = width.const_data_ptr<int64_t>();
  double* o = out.mutable_data_ptr<double>();
  at::parallel_for(0, targets, kMinBoxesPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      boxes::track_box(p + 4 * n, prev + 4 * n, heights[n], widths[n], factor, size, margin, o + 4 * n);
    }
  });
  return out;
}

at::Tensor advance_targets_cpu(const at::Tensor& pred, const at::Tensor& probs, const at::Tensor& boxes,
                               const at::Tensor& frames, const at::Tensor& confidences, const at::Tensor& height,
                               const at::Tensor& width, double factor, int64_t size, double margin, int64_t interval,
                               double threshold) {
  const int64_t targets = check_advance_targets(pred, probs, boxes, frames, confidences, height, width, factor, size,
                                                margin, interval, threshold, c10::DeviceType::CPU);
  at::Tensor due = at::empty({targets}, pred.options().dtype(at::kBool));
  const float* p = pred.const_data_ptr<float>();
  const float* q = probs.const_data_ptr<float>();
  double* b = boxes.mutable_data_ptr<double>();
  int64_t* f = frames.mutable_data_ptr<int64_t>();
  double* c = confidences.mutable_data_ptr<double>();
  const int64_t* heights = height.const_data_ptr<int64_t>();
  const int64_t* widths = width.const_data_ptr<int64_t>();
  bool* d = due.mutable_data_ptr<bool>();
  at::parallel_for(0, targets, kMinBoxesPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      boxes::advance_target(n, p, q, b, f, c, heights, widths, factor, size, margin, interval, threshold, d);
    }
  });
  return due;
}

}  // namespace

TORCH_LIBRARY_IMPL(actrack_fast, CPU, m) {
  m.impl("track_boxes", &track_boxes_cpu);
  m.impl("advance_targets", &advance_targets_cpu);
}

}  // namespace actrack_fast
