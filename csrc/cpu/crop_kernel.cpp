// CPU kernels of actrack_fast::crop_resize, crop_normalize and crop_normalize_into: output rows split over
// at::parallel_for (OpenMP) tasks. The arithmetic is crop.h's, shared with the CUDA kernels; a task computes each
// crop's column taps once, and each row's window and row taps once, then blends the row's pixels.
#include "../crop.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <vector>

namespace actrack_fast {
namespace {

// Enough output pixels per parallel task to pay for handing it to another thread.
constexpr int64_t kMinPixelsPerTask = 1 << 14;

// The GPU kernel cannot check the layout against the pixel table without a host synchronisation (it asserts on
// the device instead); here it costs nothing.
void check_layout_values(const char* op, const int64_t* start, const int64_t* height, const int64_t* width,
                         int64_t targets, int64_t num_pixels) {
  for (int64_t n = 0; n < targets; ++n) {
    TORCH_CHECK(height[n] >= 1 && width[n] >= 1, op, ": image of box ", std::to_string(n), " is empty: height ",
                std::to_string(height[n]), ", width ", std::to_string(width[n]));
    TORCH_CHECK(start[n] >= 0 && height[n] <= (num_pixels - start[n]) / width[n], op, ": image of box ",
                std::to_string(n), " (start ", std::to_string(start[n]), ", ", std::to_string(height[n]), "x",
                std::to_string(width[n]), ") does not fit in the ", std::to_string(num_pixels), " pixels of pixels");
  }
}

// Calls store(n, oy, ox, rgb) with the 3 bytes of output pixel (oy, ox) of every crop n with where[n] true (every
// crop if `where` is null; inputs checked).
template <typename Store>
void crop_pixels(const char* op, const at::Tensor& pixels, const at::Tensor& start, const at::Tensor& height,
                 const at::Tensor& width, const at::Tensor& boxes, double factor, int64_t size, int64_t targets,
                 const bool* where, const Store& store) {
  const uint8_t* px = pixels.const_data_ptr<uint8_t>();
  const int64_t* starts = start.const_data_ptr<int64_t>();
  const int64_t* heights = height.const_data_ptr<int64_t>();
  const int64_t* widths = width.const_data_ptr<int64_t>();
  const double* box = boxes.const_data_ptr<double>();
  check_layout_values(op, starts, heights, widths, targets, pixels.size(0));

  at::parallel_for(0, targets * size, std::max<int64_t>(1, kMinPixelsPerTask / size), [&](int64_t begin, int64_t end) {
    std::vector<crop::Taps> cols(size);
    int64_t cols_of = -1;  // the crop whose column taps `cols` holds
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / size, oy = row % size;
      if (where != nullptr && !where[n]) {
        continue;
      }
      const crop::Window window = crop::crop_window(box + 4 * n, factor, size);
      if (cols_of != n) {
        for (int64_t ox = 0; ox < size; ++ox) {
          cols[ox] = crop::linear_taps(window, window.x1, widths[n], ox, /*clamp_weights=*/true);
        }
        cols_of = n;
      }
      const crop::Taps rows = crop::linear_taps(window, window.y1, heights[n], oy, /*clamp_weights=*/false);
      const uint8_t* image = px + starts[n] * 3;
      for (int64_t ox = 0; ox < size; ++ox) {
        uint8_t rgb[3];
        crop::blend(image, widths[n], rows, cols[ox], rgb);
        store(n, oy, ox, rgb);
      }
    }
  });
}

at::Tensor crop_resize_cpu(const at::Tensor& pixels, const at::Tensor& start, const at::Tensor& height,
                           const at::Tensor& width, const at::Tensor& boxes, double factor, int64_t size) {
  const char* op = "crop_resize";
  const int64_t targets = check_crop_resize(op, pixels, start, height, width, boxes, factor, size,
                                            c10::DeviceType::CPU);
  at::Tensor out = at::empty({targets, size, size, 3}, pixels.options());
  uint8_t* o = out.mutable_data_ptr<uint8_t>();
  crop_pixels(op, pixels, start, height, width, boxes, factor, size, targets, /*where=*/nullptr,
              [&](int64_t n, int64_t oy, int64_t ox, const uint8_t* rgb) {
                std::copy(rgb, rgb + 3, o + ((n * size + oy) * size + ox) * 3);
              });
  return out;
}

// Crop n normalised into out[n] (its planes contiguous, at n * out.stride(0)) for every n with where[n] true
// (every n if `where` is null); inputs checked.
void normalize_into(const char* op, const at::Tensor& pixels, const at::Tensor& start, const at::Tensor& height,
                    const at::Tensor& width, const at::Tensor& boxes, double factor, int64_t size, int64_t targets,
                    at::Tensor& out, const bool* where) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "crop_normalize", [&] {
    scalar_t table[3][256];  // every value a channel can take, normalised and cast once
    for (int c = 0; c < 3; ++c) {
      for (int v = 0; v < 256; ++v) {
        table[c][v] = static_cast<scalar_t>(crop::normalized(static_cast<uint8_t>(v), c));
      }
    }
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const int64_t plane = size * size, crop_stride = out.stride(0);
    crop_pixels(op, pixels, start, height, width, boxes, factor, size, targets, where,
                [&](int64_t n, int64_t oy, int64_t ox, const uint8_t* rgb) {
                  for (int c = 0; c < 3; ++c) {
                    o[n * crop_stride + c * plane + oy * size + ox] = table[c][rgb[c]];
                  }
                });
  });
}

at::Tensor crop_normalize_cpu(const at::Tensor& pixels, const at::Tensor& start, const at::Tensor& height,
                              const at::Tensor& width, const at::Tensor& boxes, double factor, int64_t size,
                              c10::ScalarType dtype) {
  const char* op = "crop_normalize";
  const int64_t targets = check_crop_resize(op, pixels, start, height, width, boxes, factor, size,
                                            c10::DeviceType::CPU);
  check_normalized_dtype(dtype);
  at::Tensor out = at::empty({targets, 3, size, size}, pixels.options().dtype(dtype));
  normalize_into(op, pixels, start, height, width, boxes, factor, size, targets, out, /*where=*/nullptr);
  return out;
}

void crop_normalize_into_cpu(const at::Tensor& pixels, const at::Tensor& start, const at::Tensor& height,
                             const at::Tensor& width, const at::Tensor& boxes, double factor, int64_t size,
                             at::Tensor& out, const at::Tensor& where) {
  const char* op = "crop_normalize_into";
  const int64_t targets = check_crop_resize(op, pixels, start, height, width, boxes, factor, size,
                                            c10::DeviceType::CPU);
  check_normalized_into(out, where, pixels, targets, size, c10::DeviceType::CPU);
  normalize_into(op, pixels, start, height, width, boxes, factor, size, targets, out, where.const_data_ptr<bool>());
}

}  // namespace

TORCH_LIBRARY_IMPL(actrack_fast, CPU, m) {
  m.impl("crop_resize", &crop_resize_cpu);
  m.impl("crop_normalize", &crop_normalize_cpu);
  m.impl("crop_normalize_into", &crop_normalize_into_cpu);
}

}  // namespace actrack_fast
