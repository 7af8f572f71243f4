// Shared declarations of the depthwise cross-correlation op (schema in xcorr.cpp, kernels in cpu/ and cuda/).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <string>
#include <tuple>

namespace actrack_fast {

// The correlation of one (sample, channel) plane, read off validated inputs. The response at (y, x) is
//   out[y, x] = sum_ij search[y + i - pad_top, x + j - pad_left] * kernel[i, j]
// with zeros outside the search map. "same" pads (k - 1) / 2 before and k / 2 after, as
// F.conv2d(padding="same") does, so the response keeps the search grid; "valid" pads nothing.
struct XcorrGeometry {
  int64_t batch, channels;
  int64_t in_h, in_w;
  int64_t k_h, k_w;
  int64_t pad_top, pad_left;
  int64_t out_h, out_w;

  int64_t planes() const { return batch * channels; }
};

// TORCH_CHECKs every input of xcorr_depthwise for a kernel on `device` and returns its geometry.
XcorrGeometry check_xcorr(const at::Tensor& search, const at::Tensor& kernel, c10::string_view padding,
                          c10::DeviceType device);

// As check_xcorr, plus grad_output: (B, C, out_h, out_w), contiguous, same dtype and device.
XcorrGeometry check_xcorr_backward(const at::Tensor& grad_output, const at::Tensor& search,
                                   const at::Tensor& kernel, c10::string_view padding, c10::DeviceType device);

}  // namespace actrack_fast
