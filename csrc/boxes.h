// Shared declarations of the box ops (schemas in boxes.cpp, kernels in cpu/ and cuda/): the input checks, and the
// per-box arithmetic that the CPU and the CUDA kernels both run.
//
// track_boxes reproduces, bit for bit, the tracker's step from the predicted box to the next box:
//   clip_boxes(map_boxes_back(pred, previous, crop_geometry(previous, factor, size), size), height, width, margin)
// of actrack_fast.preprocessing: the same operations in the same order and precision (float64 crop side and
// resize factor, the float32 scaling of the prediction, float64 offsets and clipping), each rounded once
// (rounding.h). advance_targets is the whole per-target end of a tracking step (actrack_fast.frame_step
// .advance_targets): that next box, the confidence 10 * ((p0 + p1) + p2) + p3 (float32 sum, then float64), the
// frame count + 1 and the template-update decision, written into the state in place. Both ops are inference
// geometry and have no autograd formula.
#pragma once

#include "rounding.h"

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cstdint>

namespace actrack_fast {

// TORCH_CHECKs every input of track_boxes for a kernel on `device`; returns N, the number of boxes.
int64_t check_track_boxes(const at::Tensor& pred, const at::Tensor& previous, const at::Tensor& height,
                          const at::Tensor& width, double factor, int64_t size, double margin,
                          c10::DeviceType device);

// TORCH_CHECKs every input of advance_targets for a kernel on `device`; returns N, the number of targets.
int64_t check_advance_targets(const at::Tensor& pred, const at::Tensor& probs, const at::Tensor& boxes,
                              const at::Tensor& frames, const at::Tensor& confidences, const at::Tensor& height,
                              const at::Tensor& width, double factor, int64_t size, double margin, int64_t interval,
                              double threshold, c10::DeviceType device);

namespace boxes {

using namespace rounding;

// torch.clamp(v, min=lo) (clamp_min): NaN stays NaN, a tie keeps v (and its sign of zero).
C10_HOST_DEVICE inline double clamp_min(double v, double lo) { return v < lo ? lo : v; }

// torch.minimum: NaN if either is NaN. Between +0 and -0 it returns b, as torch's vectorised CPU loop does
// (_mm256_min_pd); torch's scalar loop (the tail of a tensor, strided inputs) returns a. The two differ only when
// clip_boxes compares zeros of opposite signs, i.e. for an image side equal to the margin and a box at -0.
C10_HOST_DEVICE inline double minimum(double a, double b) {
  if (a != a) {
    return a;
  }
  if (b != b) {
    return b;
  }
  return a < b ? a : b;
}

// The next box of one target: pred (cx, cy, w, h) float32 fractions of the search crop placed around `previous`
// (x, y, w, h) float64, in an image of height x width pixels; writes (x, y, w, h) float64 to `out`.
C10_HOST_DEVICE inline void track_box(const float* pred, const double* previous, int64_t height, int64_t width,
                                      double factor, int64_t size, double margin, double* out) {
  const double px = previous[0], py = previous[1], pw = previous[2], ph = previous[3];
  // crop_geometry: side ceil(sqrt(w * h) * factor), resize_factor = size / side as a true division.
  const double side = ceil(mul(sqrt(mul(pw, ph)), factor));
  const double resize_factor = div(static_cast<double>(size), side);
  // map_boxes_back: (pred * size) / float32(resize_factor) in float32, the crop's origin in float64.
  const float size_f = static_cast<float>(size);
  const float resize_factor_f = to_float(resize_factor);
  double scaled[4];
  for (int k = 0; k < 4; ++k) {
    scaled[k] = static_cast<double>(div(mul(pred[k], size_f), resize_factor_f));
  }
  const double half = div(mul(0.5, static_cast<double>(size)), resize_factor);
  const double cx = add(scaled[0], sub(add(px, mul(0.5, pw)), half));
  const double cy = add(scaled[1], sub(add(py, mul(0.5, ph)), half));
  const double w = scaled[2], h = scaled[3];
  const double x1 = sub(cx, mul(0.5, w)), y1 = sub(cy, mul(0.5, h));
  // clip_boxes, with the image sides and the margin in float64.
  const double image_w = static_cast<double>(width), image_h = static_cast<double>(height);
  const double x2 = minimum(clamp_min(add(x1, w), margin), image_w);
  const double y2 = minimum(clamp_min(add(y1, h), margin), image_h);
  const double left = minimum(clamp_min(x1, 0.0), sub(image_w, margin));
  const double top = minimum(clamp_min(y1, 0.0), sub(image_h, margin));
  out[0] = left;
  out[1] = top;
  out[2] = clamp_min(sub(x2, left), margin);
  out[3] = clamp_min(sub(y2, top), margin);
}

// Target n of advance_targets: its next box into boxes[4n..], confidence, frame count, and whether its template
// is due for an update (torch's floor modulo: the same result for negative counts too).
C10_HOST_DEVICE inline void advance_target(int64_t n, const float* pred, const float* probs, double* boxes,
                                           int64_t* frames, double* confidences, const int64_t* height,
                                           const int64_t* width, double factor, int64_t size, double margin,
                                           int64_t interval, double threshold, bool* due) {
  const double previous[4] = {boxes[4 * n], boxes[4 * n + 1], boxes[4 * n + 2], boxes[4 * n + 3]};
  track_box(pred + 4 * n, previous, height[n], width[n], factor, size, margin, boxes + 4 * n);
  const float* p = probs + 4 * n;
  const double confidence = mul(static_cast<double>(add(add(add(p[0], p[1]), p[2]), p[3])), 10.0);
  const int64_t count = frames[n] + 1;
  int64_t remainder = count % interval;
  remainder += remainder < 0 ? interval : 0;
  frames[n] = count;
  confidences[n] = confidence;
  due[n] = remainder == 0 && confidence > threshold;
}

}  // namespace boxes
}  // namespace actrack_fast
