// CUDA kernel of actrack_fast::crop_resize: one thread per output pixel, which computes its crop's window and its
// row and column taps from the box itself (crop.h, the arithmetic the CPU kernel runs) and blends 4 source pixels.
// One launch crops every box: the tracker's step replays it inside a CUDA graph, where the reference's ~120 small
// kernels per crop cost more launch latency than the work.
// Headers: c10/cuda only (ATen/cuda/CUDAContext.h would pull in cuBLAS/cuSPARSE headers).
#include "../crop.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <algorithm>

namespace actrack_fast {
namespace {

constexpr int kThreads = 256;
// gridDim.y limit; more boxes loop over it.
constexpr int64_t kMaxGridY = 65535;

// Block (bx, by) covers output pixels [bx * kThreads, (bx + 1) * kThreads) of crops by, by + gridDim.y, ...
// size * size <= kMaxCropSize^2 = 2^28 fits the 32-bit pixel index.
__global__ void __launch_bounds__(kThreads)
    crop_resize_kernel(const uint8_t* __restrict__ pixels, int64_t num_pixels, const int64_t* __restrict__ start,
                       const int64_t* __restrict__ height, const int64_t* __restrict__ width,
                       const double* __restrict__ boxes, double factor, int64_t targets, int size,
                       uint8_t* __restrict__ out) {
  const unsigned plane = unsigned(size) * unsigned(size);
  const unsigned q = blockIdx.x * kThreads + threadIdx.x;
  if (q >= plane) {
    return;
  }
  const int oy = int(q / unsigned(size)), ox = int(q % unsigned(size));
  for (int64_t n = blockIdx.y; n < targets; n += gridDim.y) {
    const int64_t s = start[n], h = height[n], w = width[n];
    // The reference's indexing would raise here: the layout must place the image inside the pixel table.
    CUDA_KERNEL_ASSERT(h >= 1 && w >= 1 && s >= 0 && s + h * w <= num_pixels);
    crop::crop_pixel(pixels + s * 3, h, w, boxes + 4 * n, factor, size, oy, ox, out + (n * plane + q) * 3);
  }
}

at::Tensor crop_resize_cuda(const at::Tensor& pixels, const at::Tensor& start, const at::Tensor& height,
                            const at::Tensor& width, const at::Tensor& boxes, double factor, int64_t size) {
  const int64_t targets = check_crop_resize(pixels, start, height, width, boxes, factor, size, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(pixels.device());
  at::Tensor out = at::empty({targets, size, size, 3}, pixels.options());
  if (targets == 0) {
    return out;
  }
  const dim3 grid(static_cast<unsigned>((size * size + kThreads - 1) / kThreads),
                  static_cast<unsigned>(std::min(targets, kMaxGridY)));
  crop_resize_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      pixels.const_data_ptr<uint8_t>(), pixels.size(0), start.const_data_ptr<int64_t>(),
      height.const_data_ptr<int64_t>(), width.const_data_ptr<int64_t>(), boxes.const_data_ptr<double>(), factor,
      targets, static_cast<int>(size), out.mutable_data_ptr<uint8_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(actrack_fast, CUDA, m) { m.impl("crop_resize", &crop_resize_cuda); }

}  // namespace actrack_fast
