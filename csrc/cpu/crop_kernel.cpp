// CPU kernel of actrack_fast::crop_resize: output rows split over at::parallel_for (OpenMP) tasks. The arithmetic
// is crop.h's, shared with the CUDA kernel; a task computes each crop's column taps once, and each row's window
// and row taps once, then blends the row's pixels.
#include "../crop.h"

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
void check_layout_values(const int64_t* start, const int64_t* height, const int64_t* width, int64_t targets,
                         int64_t num_pixels) {
  for (int64_t n = 0; n < targets; ++n) {
    TORCH_CHECK(height[n] >= 1 && width[n] >= 1, "crop_resize: image of box ", std::to_string(n), " is empty: height ",
                std::to_string(height[n]), ", width ", std::to_string(width[n]));
    TORCH_CHECK(start[n] >= 0 && height[n] <= (num_pixels - start[n]) / width[n], "crop_resize: image of box ",
                std::to_string(n), " (start ", std::to_string(start[n]), ", ", std::to_string(height[n]), "x",
                std::to_string(width[n]), ") does not fit in the ", std::to_string(num_pixels), " pixels of pixels");
  }
}

at::Tensor crop_resize_cpu(const at::Tensor& pixels, const at::Tensor& start, const at::Tensor& height,
                           const at::Tensor& width, const at::Tensor& boxes, double factor, int64_t size) {
  const int64_t targets = check_crop_resize(pixels, start, height, width, boxes, factor, size, c10::DeviceType::CPU);
  at::Tensor out = at::empty({targets, size, size, 3}, pixels.options());
  const uint8_t* px = pixels.const_data_ptr<uint8_t>();
  const int64_t* starts = start.const_data_ptr<int64_t>();
  const int64_t* heights = height.const_data_ptr<int64_t>();
  const int64_t* widths = width.const_data_ptr<int64_t>();
  const double* box = boxes.const_data_ptr<double>();
  uint8_t* o = out.mutable_data_ptr<uint8_t>();
  check_layout_values(starts, heights, widths, targets, pixels.size(0));

  at::parallel_for(0, targets * size, std::max<int64_t>(1, kMinPixelsPerTask / size), [&](int64_t begin, int64_t end) {
    std::vector<crop::Taps> cols(size);
    int64_t cols_of = -1;  // the crop whose column taps `cols` holds
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / size, oy = row % size;
      const crop::Window window = crop::crop_window(box + 4 * n, factor, size);
      if (cols_of != n) {
        for (int64_t ox = 0; ox < size; ++ox) {
          cols[ox] = crop::linear_taps(window, window.x1, widths[n], ox, /*clamp_weights=*/true);
        }
        cols_of = n;
      }
      const crop::Taps rows = crop::linear_taps(window, window.y1, heights[n], oy, /*clamp_weights=*/false);
      const uint8_t* image = px + starts[n] * 3;
      uint8_t* dst = o + row * size * 3;
      for (int64_t ox = 0; ox < size; ++ox) {
        crop::blend(image, widths[n], rows, cols[ox], dst + ox * 3);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(actrack_fast, CPU, m) { m.impl("crop_resize", &crop_resize_cpu); }

}  // namespace actrack_fast
