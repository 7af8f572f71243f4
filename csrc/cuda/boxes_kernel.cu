// CUDA kernels of actrack_fast::track_boxes and actrack_fast::advance_targets: one thread per box, through
// boxes.h's arithmetic (the CPU kernels'). One launch replaces the reference's ~45 small kernels (crop_geometry,
// map_boxes_back, clip_boxes), and ~15 for advance_targets, whose launch latency, not their work, is what they
// cost inside the tracker's CUDA graph.
// Headers: c10/cuda only (ATen/cuda/CUDAContext.h would pull in cuBLAS/cuSPARSE headers).
#include "../boxes.h"

#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace actrack_fast {
namespace {

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads)
    track_boxes_kernel(const float* __restrict__ pred, const double* __restrict__ previous,
                       const int64_t* __restrict__ height, const int64_t* __restrict__ width, double factor,
                       int64_t size, double margin, int64_t targets, double* __restrict__ out) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (n < targets) {
    boxes::track_box(pred + 4 * n, previous + 4 * n, height[n], width[n], factor, size, margin, out + 4 * n);
  }
}

at::Tensor track_boxes_cuda(const at::Tensor& pred, const at::Tensor& previous, const at::Tensor& height,
                            const at::Tensor& width, double factor, int64_t size, double margin) {
  const int64_t targets =
      check_track_boxes(pred, previous, height, width, factor, size, margin, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(pred.device());
  at::Tensor out = at::empty({targets, 4}, previous.options());
  if (targets == 0) {
    return out;
  }
  const auto blocks = static_cast<unsigned>((targets + kThreads - 1) / kThreads);
  track_boxes_kernel<<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      pred.const_data_ptr<float>(), previous.const_data_ptr<double>(), height.const_data_ptr<int64_t>(),
      width.const_data_ptr<int64_t>(), factor, size, margin, targets, out.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

__global__ void __launch_bounds__(kThreads)
    advance_targets_kernel(const float* __restrict__ pred, const float* __restrict__ probs, double* __restrict__ boxes,
                           int64_t* __restrict__ frames, double* __restrict__ confidences,
                           const int64_t* __restrict__ height, const int64_t* __restrict__ width, double factor,
                           int64_t size, double margin, int64_t interval, double threshold, int64_t targets,
                           bool* __restrict__ due) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (n < targets) {
    boxes::advance_target(n, pred, probs, boxes, frames, confidences, height, width, factor, size, margin, interval,
                          threshold, due);
  }
}

at::Tensor advance_targets_cuda(const at::Tensor& pred, const at::Tensor& probs, const at::Tensor& boxes,
                                const at::Tensor& frames, const at::Tensor& confidences, const at::Tensor& height,
                                const at::Tensor& width, double factor, int64_t size, double margin,
                                int64_t interval, double threshold) {
  const int64_t targets = check_advance_targets(pred, probs, boxes, frames, confidences, height, width, factor, size,
                                                margin, interval, threshold, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(pred.device());
  at::Tensor due = at::empty({targets}, pred.options().dtype(at::kBool));
  if (targets == 0) {
    return due;
  }
  const auto blocks = static_cast<unsigned>((targets + kThreads - 1) / kThreads);
  advance_targets_kernel<<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      pred.const_data_ptr<float>(), probs.const_data_ptr<float>(), boxes.mutable_data_ptr<double>(),
      frames.mutable_data_ptr<int64_t>(), confidences.mutable_data_ptr<double>(), height.const_data_ptr<int64_t>(),
      width.const_data_ptr<int64_t>(), factor, size, margin, interval, threshold, targets,
      due.mutable_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return due;
}

}  // namespace

TORCH_LIBRARY_IMPL(actrack_fast, CUDA, m) {
  m.impl("track_boxes", &track_boxes_cuda);
  m.impl("advance_targets", &advance_targets_cuda);
}

}  // namespace actrack_fast
