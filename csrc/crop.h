// Shared declarations of the crop op (schema in crop.cpp, kernels in cpu/ and cuda/): the input checks, and the
// per-pixel arithmetic that the CPU and the CUDA kernels both run.
//
// crop_resize reproduces actrack_fast.preprocessing.crop_pixels bit for bit, and crop_normalize that followed by
// normalize_crops and the cast to a floating dtype: SeqTrack's square crop around each
// box (side ceil(factor * sqrt(w*h)), corner round(centre - side/2), ties to even), zero outside the image,
// resized with OpenCV's INTER_LINEAR fixed-point arithmetic. Every rounding of the reference happens here too,
// and only those: float64 products, sums, square root and true divisions; float32 positions and fractions;
// round-half-to-even. A fused multiply-add rounds once where the reference rounds twice, so the device code
// spells each operation as an explicitly rounded intrinsic (__dmul_rn, ...), which nvcc never contracts. The host
// code uses plain IEEE operators; setup.py compiles it with -ffp-contract=off, so that no compiler contracts them
// either (GCC contracts by default wherever the target has FMA instructions: baseline x86-64 has none, aarch64
// and -march=native builds do). x86-64 evaluates float in SSE registers (FLT_EVAL_METHOD 0), with no excess
// precision.
#pragma once

#include "rounding.h"

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace actrack_fast {

// TORCH_CHECKs every input of crop_resize (or of crop_normalize, crop_normalize_into: `op` names it) for a kernel
// on `device`; returns N, the number of crops.
int64_t check_crop_resize(const char* op, const at::Tensor& pixels, const at::Tensor& start,
                          const at::Tensor& height, const at::Tensor& width, const at::Tensor& boxes, double factor,
                          int64_t size, c10::DeviceType device);

// TORCH_CHECKs crop_normalize's output dtype: float64, float32, float16 or bfloat16.
void check_normalized_dtype(c10::ScalarType dtype);

// TORCH_CHECKs crop_normalize_into's `out` ((N, 3, size, size) floating, each crop's planes contiguous, the crops
// out.stride(0) >= 3 * size * size apart) and `where` ((N,) bool, contiguous), both on pixels' device.
void check_normalized_into(const at::Tensor& out, const at::Tensor& where, const at::Tensor& pixels, int64_t targets,
                           int64_t size, c10::DeviceType device);

// The largest output side: size * size output pixels of one crop are indexed with 32-bit integers on the device.
constexpr int64_t kMaxCropSize = 16384;

namespace crop {

// mul, add, sub, div, sqrt, to_float, round_even, ceil, floor: each rounded once, on the host and the device.
using namespace rounding;

C10_HOST_DEVICE inline int64_t clamp(int64_t v, int64_t lo, int64_t hi) {
  // max first, then min, as the reference's .clamp(min=lo).minimum(hi) (which matters only when hi < lo).
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// OpenCV's 11-bit fixed-point weights (INTER_RESIZE_COEF_BITS).
constexpr float kCoefScale = 2048.0f;

// Where crop n lies in its image (preprocessing.crop_geometry), and OpenCV's source step per output pixel.
struct Window {
  int64_t side;  // crop side c in image pixels
  int64_t x1, y1;  // top-left corner, may be negative
  double scale;  // 1 / (size / c): OpenCV's inverse scale, computed as cv::resize does (two divisions)
};

// box: (x, y, w, h) float64.
C10_HOST_DEVICE inline Window crop_window(const double* box, double factor, int64_t size) {
  const double x = box[0], y = box[1], w = box[2], h = box[3];
  const double side = ceil(mul(sqrt(mul(w, h)), factor));
  const double half_side = mul(side, 0.5);
  Window window;
  window.side = static_cast<int64_t>(side);
  window.x1 = static_cast<int64_t>(round_even(sub(add(x, mul(0.5, w)), half_side)));
  window.y1 = static_cast<int64_t>(round_even(sub(add(y, mul(0.5, h)), half_side)));
  window.scale = div(1.0, div(static_cast<double>(size), static_cast<double>(window.side)));
  return window;
}

// The two source taps of one output pixel along one axis: image indices, already clamped into the image, and
// 11-bit weights, 0 for a tap in the zero border outside the image.
struct Taps {
  int64_t index[2];
  int32_t weight[2];
};

// preprocessing._linear_taps for output pixel d, shifted by the crop's corner `origin` (x1 or y1) into an image
// of `extent` pixels along the axis. OpenCV maps d to (d + 0.5) * scale - 0.5 in float32; past the crop's border
// the columns (clamp_weights) snap to the edge pixel with weight 1, while the rows keep their fractional
// weights on the clamped index.
C10_HOST_DEVICE inline Taps linear_taps(const Window& window, int64_t origin, int64_t extent, int64_t d,
                                        bool clamp_weights) {
  const float position = to_float(sub(mul(add(static_cast<double>(d), 0.5), window.scale), 0.5));
  const float start_f = floor(position);
  const int64_t start = static_cast<int64_t>(start_f);
  const int64_t last = window.side - 1;
  const float fraction = clamp_weights && (start < 0 || start >= last) ? 0.0f : sub(position, start_f);
  const int32_t weights[2] = {static_cast<int32_t>(round_even(mul(sub(1.0f, fraction), kCoefScale))),
                              static_cast<int32_t>(round_even(mul(fraction, kCoefScale)))};
  Taps taps;
  for (int k = 0; k < 2; ++k) {
    const int64_t index = clamp(start + k, 0, last) + origin;
    taps.weight[k] = index >= 0 && index < extent ? weights[k] : 0;
    taps.index[k] = clamp(index, 0, extent - 1);
  }
  return taps;
}

// OpenCV's two fixed-point passes: horizontal sums keep value * 2^11; the vertical pass drops 4 bits before
// multiplying and 16 after, then rounds 2 bits. `image` is the image's first pixel (RGB triplets), `out` the
// output pixel's 3 bytes. The uint8 cast wraps, like the reference's .to(torch.uint8).
C10_HOST_DEVICE inline void blend(const uint8_t* image, int64_t width, const Taps& rows, const Taps& cols,
                                  uint8_t* out) {
  const uint8_t* row_pixels[2] = {image + rows.index[0] * width * 3, image + rows.index[1] * width * 3};
  const int64_t col_offsets[2] = {cols.index[0] * 3, cols.index[1] * 3};
  for (int c = 0; c < 3; ++c) {
    int32_t sum = 0;
    for (int r = 0; r < 2; ++r) {
      const int32_t horizontal = int32_t(row_pixels[r][col_offsets[0] + c]) * cols.weight[0] +
                                 int32_t(row_pixels[r][col_offsets[1] + c]) * cols.weight[1];
      sum += (rows.weight[r] * (horizontal >> 4)) >> 16;
    }
    out[c] = static_cast<uint8_t>((sum + 2) >> 2);
  }
}

// ImageNet normalisation of value v of channel c (0 R, 1 G, 2 B): (v / 255 - mean) / std in float64, rounded once
// to float32, as the table of preprocessing.normalize_crops.
C10_HOST_DEVICE inline float normalized(uint8_t v, int c) {
  const double mean = c == 0 ? 0.485 : c == 1 ? 0.456 : 0.406;
  const double std = c == 0 ? 0.229 : c == 1 ? 0.224 : 0.225;
  return to_float(div(sub(div(static_cast<double>(v), 255.0), mean), std));
}

// Output pixel (oy, ox) of the crop around `box` from the image whose first pixel is `image` (height x width
// RGB triplets): what the CUDA kernel runs per thread. The CPU kernel calls the same three functions, hoisting
// the window and the row taps out of its loop over a row and the column taps out of its loop over rows.
C10_HOST_DEVICE inline void crop_pixel(const uint8_t* image, int64_t height, int64_t width, const double* box,
                                       double factor, int64_t size, int64_t oy, int64_t ox, uint8_t* out) {
  const Window window = crop_window(box, factor, size);
  blend(image, width, linear_taps(window, window.y1, height, oy, /*clamp_weights=*/false),
        linear_taps(window, window.x1, width, ox, /*clamp_weights=*/true), out);
}

}  // namespace crop
}  // namespace actrack_fast
