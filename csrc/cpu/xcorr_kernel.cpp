// CPU kernels of actrack_fast::xcorr_depthwise and its backward: one (sample, channel) plane per task of
// at::parallel_for (OpenMP), copied into a zero-bordered buffer so the loops over rows vectorise. float16 and
// bfloat16 run through float32, the accumulation precision of the CUDA kernels.
#include "../xcorr.h"

#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace actrack_fast {
namespace {

// Enough multiply-adds per parallel task to pay for handing it to another thread.
constexpr int64_t kMinWorkPerTask = 1 << 15;

int64_t grain_size(int64_t work_per_plane) {
  return std::max<int64_t>(1, kMinWorkPerTask / std::max<int64_t>(1, work_per_plane));
}

// The input plane with the zero border that output (out_h, out_w) reads: pad_top rows above, pad_left columns
// left; afterwards every tap of every output is an in-bounds read, so the loops below have no clipping.
template <typename T>
void pad_plane(const T* in, int64_t in_h, int64_t in_w, int64_t pad_top, int64_t pad_left, int64_t padded_h,
               int64_t padded_w, T* padded) {
  std::fill(padded, padded + padded_h * padded_w, T(0));
  const int64_t rows = std::min(in_h, padded_h - pad_top), cols = std::min(in_w, padded_w - pad_left);
  for (int64_t y = 0; y < rows; ++y) {
    std::copy(in + y * in_w, in + y * in_w + cols, padded + (y + pad_top) * padded_w + pad_left);
  }
}

// out[y, x] = sum_ij padded[y + i, x + j] * w[i, j]. With `flip` the kernel is rotated by 180 degrees: the
// correlation of the output gradient with the rotated kernel is the gradient wrt the search map. Each tap is
// an axpy over an output row, which the compiler vectorises.
template <typename T>
void correlate_plane(const T* __restrict__ padded, int64_t padded_w, const T* __restrict__ w, int64_t k_h,
                     int64_t k_w, bool flip, T* __restrict__ out, int64_t out_h, int64_t out_w) {
  const int64_t taps = k_h * k_w;
  for (int64_t y = 0; y < out_h; ++y) {
    T* __restrict__ dst = out + y * out_w;
    std::fill(dst, dst + out_w, T(0));
    for (int64_t i = 0; i < k_h; ++i) {
      for (int64_t j = 0; j < k_w; ++j) {
        const T weight = w[flip ? taps - 1 - (i * k_w + j) : i * k_w + j];
        const T* __restrict__ src = padded + (y + i) * padded_w + j;
        for (int64_t x = 0; x < out_w; ++x) {
          dst[x] += weight * src[x];
        }
      }
    }
  }
}

// grad_w[i, j] = sum_yx grad[y, x] * padded[y + i, x + j]. Products are summed column-wise into `column_sums`
// (an axpy the compiler vectorises; a dot product would stay scalar without fast-math), in the accumulation
// type (double for float), then the columns are added up.
template <typename T>
void kernel_grad_plane(const T* __restrict__ grad, const T* __restrict__ padded, int64_t padded_w, int64_t k_h,
                       int64_t k_w, int64_t out_h, int64_t out_w, T* __restrict__ grad_w,
                       at::acc_type<T, false>* __restrict__ column_sums) {
  using acc_t = at::acc_type<T, false>;
  for (int64_t i = 0; i < k_h; ++i) {
    for (int64_t j = 0; j < k_w; ++j) {
      std::fill(column_sums, column_sums + out_w, acc_t(0));
      for (int64_t y = 0; y < out_h; ++y) {
        const T* __restrict__ grad_row = grad + y * out_w;
        const T* __restrict__ src = padded + (y + i) * padded_w + j;
        for (int64_t x = 0; x < out_w; ++x) {
          column_sums[x] += acc_t(grad_row[x]) * acc_t(src[x]);
        }
      }
      acc_t total = 0;
      for (int64_t x = 0; x < out_w; ++x) {
        total += column_sums[x];
      }
      grad_w[i * k_w + j] = T(total);
    }
  }
}

bool is_reduced_precision(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

at::Tensor xcorr_depthwise_cpu(const at::Tensor& search, const at::Tensor& kernel, c10::string_view padding) {
  const XcorrGeometry g = check_xcorr(search, kernel, padding, c10::DeviceType::CPU);
  if (is_reduced_precision(search)) {
    return xcorr_depthwise_cpu(search.to(at::kFloat), kernel.to(at::kFloat), padding).to(search.scalar_type());
  }
  at::Tensor out = at::empty({g.batch, g.channels, g.out_h, g.out_w}, search.options());
  AT_DISPATCH_FLOATING_TYPES(search.scalar_type(), "xcorr_depthwise_cpu", [&] {
    const scalar_t* s = search.const_data_ptr<scalar_t>();
    const scalar_t* k = kernel.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const int64_t in_size = g.in_h * g.in_w, taps = g.k_h * g.k_w, out_size = g.out_h * g.out_w;
    const int64_t padded_h = g.out_h + g.k_h - 1, padded_w = g.out_w + g.k_w - 1;
    at::parallel_for(0, g.planes(), grain_size(out_size * taps), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> padded(padded_h * padded_w);
      for (int64_t p = begin; p < end; ++p) {
        pad_plane(s + p * in_size, g.in_h, g.in_w, g.pad_top, g.pad_left, padded_h, padded_w, padded.data());
        correlate_plane(padded.data(), padded_w, k + p * taps, g.k_h, g.k_w, /*flip=*/false, o + p * out_size,
                        g.out_h, g.out_w);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> xcorr_depthwise_backward_cpu(const at::Tensor& grad_output,
                                                                 const at::Tensor& search, const at::Tensor& kernel,
                                                                 c10::string_view padding) {
  const XcorrGeometry g = check_xcorr_backward(grad_output, search, kernel, padding, c10::DeviceType::CPU);
  if (is_reduced_precision(search)) {
    auto [grad_search, grad_kernel] = xcorr_depthwise_backward_cpu(
        grad_output.to(at::kFloat), search.to(at::kFloat), kernel.to(at::kFloat), padding);
    return {grad_search.to(search.scalar_type()), grad_kernel.to(search.scalar_type())};
  }
  at::Tensor grad_search = at::empty_like(search);
  at::Tensor grad_kernel = at::empty_like(kernel);
  AT_DISPATCH_FLOATING_TYPES(search.scalar_type(), "xcorr_depthwise_backward_cpu", [&] {
    const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
    const scalar_t* s = search.const_data_ptr<scalar_t>();
    const scalar_t* k = kernel.const_data_ptr<scalar_t>();
    scalar_t* gs = grad_search.mutable_data_ptr<scalar_t>();
    scalar_t* gk = grad_kernel.mutable_data_ptr<scalar_t>();
    const int64_t in_size = g.in_h * g.in_w, taps = g.k_h * g.k_w, out_size = g.out_h * g.out_w;
    const int64_t padded_h = g.out_h + g.k_h - 1, padded_w = g.out_w + g.k_w - 1;
    // The search gradient correlates grad_output with the rotated kernel, padded so it lands on the search grid.
    const int64_t grad_padded_h = g.in_h + g.k_h - 1, grad_padded_w = g.in_w + g.k_w - 1;
    at::parallel_for(0, g.planes(), grain_size(2 * out_size * taps), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> padded(padded_h * padded_w), grad_padded(grad_padded_h * grad_padded_w);
      std::vector<at::acc_type<scalar_t, false>> column_sums(g.out_w);
      for (int64_t p = begin; p < end; ++p) {
        pad_plane(go + p * out_size, g.out_h, g.out_w, g.k_h - 1 - g.pad_top, g.k_w - 1 - g.pad_left, grad_padded_h,
                  grad_padded_w, grad_padded.data());
        correlate_plane(grad_padded.data(), grad_padded_w, k + p * taps, g.k_h, g.k_w, /*flip=*/true,
                        gs + p * in_size, g.in_h, g.in_w);
        pad_plane(s + p * in_size, g.in_h, g.in_w, g.pad_top, g.pad_left, padded_h, padded_w, padded.data());
        kernel_grad_plane(go + p * out_size, padded.data(), padded_w, g.k_h, g.k_w, g.out_h, g.out_w, gk + p * taps,
                          column_sums.data());
      }
    });
  });
  return {grad_search, grad_kernel};
}

}  // namespace

TORCH_LIBRARY_IMPL(actrack_fast, CPU, m) {
  m.impl("xcorr_depthwise", &xcorr_depthwise_cpu);
  m.impl("xcorr_depthwise_backward", &xcorr_depthwise_backward_cpu);
}

}  // namespace actrack_fast
