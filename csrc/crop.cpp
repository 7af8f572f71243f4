// Schemas of actrack_fast::crop_resize, actrack_fast::crop_normalize and actrack_fast::crop_normalize_into (the
// normalised crops written into `out` where `where` is true) and the input checks every kernel runs first. The CPU
// and CUDA kernels register themselves in cpu/crop_kernel.cpp and cuda/crop_kernel.cu; the fake (meta)
// implementations are registered from Python (actrack_fast/crop_op.py). No op has an autograd formula: their input
// is uint8 pixels.
#include "crop.h"

#include "checks.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>
#include <string>

namespace actrack_fast {
int64_t check_crop_resize(const char* op, const at::Tensor& pixels, const at::Tensor& start,
                          const at::Tensor& height, const at::Tensor& width, const at::Tensor& boxes, double factor,
                          int64_t size, c10::DeviceType device) {
  TORCH_CHECK(pixels.dim() == 2 && pixels.size(1) == 3, op, ": pixels must have shape (P, 3) (RGB pixels of ",
              "the images, one after the other), got ", shape_string(pixels.sizes()));
  TORCH_CHECK(pixels.scalar_type() == at::kByte, op, ": pixels must be uint8, got ", pixels.scalar_type());
  check_placement(op, pixels, "pixels", pixels, "pixels", device);
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, op, ": boxes must have shape (N, 4) (x, y, w, h), got ",
              shape_string(boxes.sizes()));
  TORCH_CHECK(boxes.scalar_type() == at::kDouble, op, ": boxes must be float64, got ", boxes.scalar_type());
  check_placement(op, boxes, "boxes", pixels, "pixels", device);
  const int64_t targets = boxes.size(0);
  check_per_box_int64(op, start, "start", targets, "one entry per box", pixels, "pixels", device);
  check_per_box_int64(op, height, "height", targets, "one entry per box", pixels, "pixels", device);
  check_per_box_int64(op, width, "width", targets, "one entry per box", pixels, "pixels", device);
  TORCH_CHECK(size >= 1 && size <= kMaxCropSize, op, ": size must be in [1, ", std::to_string(kMaxCropSize),
              "], got ", std::to_string(size));
  TORCH_CHECK(std::isfinite(factor) && factor > 0, op, ": factor must be a positive finite number, got ",
              std::to_string(factor));
  TORCH_CHECK(targets == 0 || pixels.size(0) > 0, op, ": pixels is empty but there are ", std::to_string(targets),
              " boxes to crop");
  return targets;
}

void check_normalized_dtype(c10::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kDouble || dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "crop_normalize: dtype must be float64, float32, float16 or bfloat16, got ", dtype);
}

void check_normalized_into(const at::Tensor& out, const at::Tensor& where, const at::Tensor& pixels, int64_t targets,
                           int64_t size, c10::DeviceType device) {
  const char* op = "crop_normalize_into";
  TORCH_CHECK(out.dim() == 4 && out.size(0) == targets && out.size(1) == 3 && out.size(2) == size &&
                  out.size(3) == size,
              op, ": out must have shape (N, 3, size, size) with N = ", std::to_string(targets), " (one crop per box) ",
              "and size = ", std::to_string(size), ", got ", shape_string(out.sizes()));
  const c10::ScalarType dtype = out.scalar_type();
  TORCH_CHECK(dtype == at::kDouble || dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": out must be float64, float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(out.device().type() == device, op, ": out is on ", out.device(), " but this kernel runs on ", device,
              " tensors");
  TORCH_CHECK(out.device() == pixels.device(), op, ": out is on ", out.device(), " but pixels is on ",
              pixels.device());
  // Crop n's block starts at n * out.stride(0), so that a slot of a larger tensor (templates[:, -1]) is written in
  // place; the strides of size-1 dimensions address nothing and may be anything.
  const int64_t plane = size * size;
  const bool block_contiguous = out.stride(1) == plane && (size == 1 || (out.stride(2) == size && out.stride(3) == 1));
  TORCH_CHECK(block_contiguous && (targets <= 1 || out.stride(0) >= 3 * plane), op,
              ": out must hold each crop's (3, size, size) block contiguous, the crops apart (strides [>= 3 * size * ",
              "size, size * size, size, 1]), got strides ", shape_string(out.strides()));
  TORCH_CHECK(where.dim() == 1 && where.size(0) == targets, op, ": where must have shape (N,) with N = ",
              std::to_string(targets), " (one entry per box), got ", shape_string(where.sizes()));
  TORCH_CHECK(where.scalar_type() == at::kBool, op, ": where must be bool, got ", where.scalar_type());
  check_placement(op, where, "where", pixels, "pixels", device);
}

TORCH_LIBRARY_FRAGMENT(actrack_fast, m) {
  // Lets torch point users of the op at the module that registers its fake implementation.
  m.set_python_module("actrack_fast.crop_op");
  m.def("crop_resize(Tensor pixels, Tensor start, Tensor height, Tensor width, Tensor boxes, float factor, "
        "int size) -> Tensor");
  m.def("crop_normalize(Tensor pixels, Tensor start, Tensor height, Tensor width, Tensor boxes, float factor, "
        "int size, ScalarType dtype) -> Tensor");
  m.def("crop_normalize_into(Tensor pixels, Tensor start, Tensor height, Tensor width, Tensor boxes, float factor, "
        "int size, Tensor(a!) out, Tensor where) -> ()");
}

}  // namespace actrack_fast
