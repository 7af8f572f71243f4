// Input checks shared by the ops' schemas: TORCH_CHECKs whose messages name the op and the argument.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace actrack_fast {

// Error messages format numbers with std::to_string instead of streaming them into TORCH_CHECK: on the GPU
// machine's stack (torch 2.11, Ubuntu 24.04) an integer streamed from this library crashed the process while
// strings did not (csrc/README.md). "[2, 4, 8, 8]" for sizes {2, 4, 8, 8}.
std::string shape_string(at::IntArrayRef sizes);

// `t` (argument `name` of `op`) is on a `device`-type device, the same one as `anchor` (argument
// `anchor_name`), and contiguous.
void check_placement(const char* op, const at::Tensor& t, const char* name, const at::Tensor& anchor,
                     const char* anchor_name, c10::DeviceType device);

// `t` is (N,) int64 with N = `targets`, one entry per box (`what` says which), placed as check_placement.
void check_per_box_int64(const char* op, const at::Tensor& t, const char* name, int64_t targets, const char* what,
                         const at::Tensor& anchor, const char* anchor_name, c10::DeviceType device);

}  // namespace actrack_fast
