// CUDA kernels of actrack_fast::crop_resize, crop_normalize and crop_normalize_into: one thread per output pixel,
// which computes its crop's window and its row and column taps from the box itself (crop.h, the arithmetic the CPU
// kernels run) and blends 4 source pixels, then stores them as bytes or normalised channel planes. One launch
// crops every box: the tracker's step replays it inside a CUDA graph, where the reference's ~120 small kernels per
// crop (and 5 more to normalise it) cost more launch latency than the work. crop_normalize_into reads its mask on
// the device (no host synchronisation, so a graph captures it) and its threads skip the crops it does not select:
// the tracker's new templates cost only the targets whose update is due.
// Headers: c10/cuda only (ATen/cuda/CUDAContext.h would pull in cuBLAS/cuSPARSE headers).
#include "../crop.h"

#include <ATen/Dispatch.h>
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

// crop_resize's output: (N, size, size, 3) bytes.
struct InterleavedBytes {
  uint8_t* out;
  __device__ void operator()(int64_t n, unsigned q, unsigned plane, const uint8_t* rgb) const {
    for (int c = 0; c < 3; ++c) {
      out[(n * plane + q) * 3 + c] = rgb[c];
    }
  }
};

// crop_normalize's and crop_normalize_into's output: (N, 3, size, size) normalised values, crop n's planes at
// n * crop_stride.
template <typename scalar_t>
struct NormalizedPlanes {
  scalar_t* out;
  int64_t crop_stride;
  __device__ void operator()(int64_t n, unsigned q, unsigned plane, const uint8_t* rgb) const {
    for (int c = 0; c < 3; ++c) {
      out[n * crop_stride + c * plane + q] = static_cast<scalar_t>(crop::normalized(rgb[c], c));
    }
  }
};

// Block (bx, by) covers output pixels [bx * kThreads, (bx + 1) * kThreads) of crops by, by + gridDim.y, ...
// that `where` selects (all if null). size * size <= kMaxCropSize^2 = 2^28 fits the 32-bit pixel index.
template <typename Store>
__global__ void __launch_bounds__(kThreads)
    crop_resize_kernel(const uint8_t* __restrict__ pixels, int64_t num_pixels, const int64_t* __restrict__ start,
                       const int64_t* __restrict__ height, const int64_t* __restrict__ width,
                       const double* __restrict__ boxes, double factor, int64_t targets, int size,
                       const bool* __restrict__ where, Store store) {
  const unsigned plane = unsigned(size) * unsigned(size);
  const unsigned q = blockIdx.x * kThreads + threadIdx.x;
  if (q >= plane) {
    return;
  }
  const int oy = int(q / unsigned(size)), ox = int(q % unsigned(size));
  for (int64_t n = blockIdx.y; n < targets; n += gridDim.y) {
    if (where != nullptr && !where[n]) {
      continue;
    }
    const int64_t s = start[n], h = height[n], w = width[n];
    // The reference's indexing would raise here: the layout must place the image inside the pixel table.
    CUDA_KERNEL_ASSERT(h >= 1 && w >= 1 && s >= 0 && s + h * w <= num_pixels);
    uint8_t rgb[3];
    crop::crop_pixel(pixels + s * 3, h, w, boxes + 4 * n, factor, size, oy, ox, rgb);
    store(n, q, plane, rgb);
  }
}

template <typename Store>
void launch(const at::Tensor& pixels, const at::Tensor& start, const at::Tensor& height, const at::Tensor& width,
            const at::Tensor& boxes, double factor, int64_t size, int64_t targets, const bool* where, Store store) {
  const dim3 grid(static_cast<unsigned>((size * size + kThreads - 1) / kThreads),
                  static_cast<unsigned>(std::min(targets, kMaxGridY)));
  crop_resize_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      pixels.const_data_ptr<uint8_t>(), pixels.size(0), start.const_data_ptr<int64_t>(),
      height.const_data_ptr<int64_t>(), width.const_data_ptr<int64_t>(), boxes.const_data_ptr<double>(), factor,
      targets, static_cast<int>(size), where, store);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor crop_resize_cuda(const at::Tensor& pixels, const at::Tensor& start, const at::Tensor& height,
                            const at::Tensor& width, const at::Tensor& boxes, double factor, int64_t size) {
  const int64_t targets = check_crop_resize("crop_resize", pixels, start, height, width, boxes, factor, size,
                                            c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(pixels.device());
  at::Tensor out = at::empty({targets, size, size, 3}, pixels.options());
  if (targets > 0) {
    launch(pixels, start, height, width, boxes, factor, size, targets, /*where=*/nullptr,
           InterleavedBytes{out.mutable_data_ptr<uint8_t>()});
  }
  return out;
}

// Crop n normalised into out[n] (its planes contiguous, at n * out.stride(0)) for every n with where[n] true
// (every n if `where` is null); inputs checked, at least one box.
void normalize_into(const at::Tensor& pixels, const at::Tensor& start, const at::Tensor& height,
                    const at::Tensor& width, const at::Tensor& boxes, double factor, int64_t size, int64_t targets,
                    at::Tensor& out, const bool* where) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "crop_normalize", [&] {
    launch(pixels, start, height, width, boxes, factor, size, targets, where,
           NormalizedPlanes<scalar_t>{out.mutable_data_ptr<scalar_t>(), out.stride(0)});
  });
}

at::Tensor crop_normalize_cuda(const at::Tensor& pixels, const at::Tensor& start, const at::Tensor& height,
                               const at::Tensor& width, const at::Tensor& boxes, double factor, int64_t size,
                               c10::ScalarType dtype) {
  const int64_t targets = check_crop_resize("crop_normalize", pixels, start, height, width, boxes, factor, size,
                                            c10::DeviceType::CUDA);
  check_normalized_dtype(dtype);
  const c10::cuda::CUDAGuard guard(pixels.device());
  at::Tensor out = at::empty({targets, 3, size, size}, pixels.options().dtype(dtype));
  if (targets > 0) {
    normalize_into(pixels, start, height, width, boxes, factor, size, targets, out, /*where=*/nullptr);
  }
  return out;
}

void crop_normalize_into_cuda(const at::Tensor& pixels, const at::Tensor& start, const at::Tensor& height,
                              const at::Tensor& width, const at::Tensor& boxes, double factor, int64_t size,
                              at::Tensor& out, const at::Tensor& where) {
  const int64_t targets = check_crop_resize("crop_normalize_into", pixels, start, height, width, boxes, factor,
                                            size, c10::DeviceType::CUDA);
  check_normalized_into(out, where, pixels, targets, size, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(pixels.device());
  if (targets > 0) {
    normalize_into(pixels, start, height, width, boxes, factor, size, targets, out, where.const_data_ptr<bool>());
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(actrack_fast, CUDA, m) {
  m.impl("crop_resize", &crop_resize_cuda);
  m.impl("crop_normalize", &crop_normalize_cuda);
  m.impl("crop_normalize_into", &crop_normalize_into_cuda);
}

}  // namespace actrack_fast
