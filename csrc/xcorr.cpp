// Schema of the actrack_fast ops and the input checks every kernel runs first. The CPU and CUDA kernels
// register themselves in cpu/xcorr_kernel.cpp and cuda/xcorr_kernel.cu; the fake (meta) implementations
// and the autograd formula are registered from Python (actrack_fast/xcorr_op.py).
#include "xcorr.h"

#include "checks.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <vector>

namespace actrack_fast {

namespace {

bool is_supported_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16;
}

void check_operand(const at::Tensor& t, const char* name, c10::DeviceType device) {
  TORCH_CHECK(t.dim() == 4, "xcorr_depthwise: ", name, " must have shape (B, C, H, W), got ",
              shape_string(t.sizes()));
  TORCH_CHECK(t.device().type() == device, "xcorr_depthwise: ", name, " is on ", t.device(),
              " but this kernel runs on ", device, " tensors");
  TORCH_CHECK(is_supported_dtype(t.scalar_type()), "xcorr_depthwise: unsupported dtype ", t.scalar_type(), " of ",
              name, "; expected float32, float64, float16 or bfloat16");
  TORCH_CHECK(t.is_contiguous(), "xcorr_depthwise: ", name, " must be contiguous (call .contiguous())");
}

}  // namespace

XcorrGeometry check_xcorr(const at::Tensor& search, const at::Tensor& kernel, c10::string_view padding,
                          c10::DeviceType device) {
  check_operand(search, "search", device);
  check_operand(kernel, "kernel", device);
  TORCH_CHECK(search.device() == kernel.device(), "xcorr_depthwise: search is on ", search.device(),
              " but kernel is on ", kernel.device());
  TORCH_CHECK(search.scalar_type() == kernel.scalar_type(), "xcorr_depthwise: search is ", search.scalar_type(),
              " but kernel is ", kernel.scalar_type(), "; both must share one dtype");
  TORCH_CHECK(search.size(0) == kernel.size(0), "xcorr_depthwise: search has batch size B = ",
              std::to_string(search.size(0)), " but kernel has B = ", std::to_string(kernel.size(0)));
  TORCH_CHECK(search.size(1) == kernel.size(1), "xcorr_depthwise: search has C = ", std::to_string(search.size(1)),
              " channels but kernel has C = ", std::to_string(kernel.size(1)));
  TORCH_CHECK(search.size(2) > 0 && search.size(3) > 0 && kernel.size(2) > 0 && kernel.size(3) > 0,
              "xcorr_depthwise: empty spatial size, search ", shape_string(search.sizes()), ", kernel ",
              shape_string(kernel.sizes()));
  const bool same = padding == "same";
  TORCH_CHECK(same || padding == "valid", "xcorr_depthwise: padding must be 'same' or 'valid', got '", padding, "'");

  XcorrGeometry g;
  g.batch = search.size(0);
  g.channels = search.size(1);
  g.in_h = search.size(2);
  g.in_w = search.size(3);
  g.k_h = kernel.size(2);
  g.k_w = kernel.size(3);
  if (same) {
    g.pad_top = (g.k_h - 1) / 2;
    g.pad_left = (g.k_w - 1) / 2;
    g.out_h = g.in_h;
    g.out_w = g.in_w;
  } else {
    TORCH_CHECK(g.k_h <= g.in_h && g.k_w <= g.in_w, "xcorr_depthwise: kernel (h, w) = (", std::to_string(g.k_h),
                ", ", std::to_string(g.k_w), ") is larger than search (H, W) = (", std::to_string(g.in_h), ", ",
                std::to_string(g.in_w), ") with padding='valid'");
    g.pad_top = 0;
    g.pad_left = 0;
    g.out_h = g.in_h - g.k_h + 1;
    g.out_w = g.in_w - g.k_w + 1;
  }
  return g;
}

XcorrGeometry check_xcorr_backward(const at::Tensor& grad_output, const at::Tensor& search,
                                   const at::Tensor& kernel, c10::string_view padding, c10::DeviceType device) {
  const XcorrGeometry g = check_xcorr(search, kernel, padding, device);
  check_operand(grad_output, "grad_output", device);
  TORCH_CHECK(grad_output.device() == search.device() && grad_output.scalar_type() == search.scalar_type(),
              "xcorr_depthwise_backward: grad_output (", grad_output.scalar_type(), " on ", grad_output.device(),
              ") must match search (", search.scalar_type(), " on ", search.device(), ")");
  const std::vector<int64_t> expected{g.batch, g.channels, g.out_h, g.out_w};
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(expected), "xcorr_depthwise_backward: grad_output has shape ",
              shape_string(grad_output.sizes()), ", expected ", shape_string(expected));
  return g;
}

TORCH_LIBRARY(actrack_fast, m) {
  // Lets torch point users of the op at the module that registers its fake and autograd implementations.
  m.set_python_module("actrack_fast.xcorr_op");
  m.def("xcorr_depthwise(Tensor search, Tensor kernel, str padding) -> Tensor");
  m.def("xcorr_depthwise_backward(Tensor grad_output, Tensor search, Tensor kernel, str padding) -> (Tensor, Tensor)");
}

}  // namespace actrack_fast
