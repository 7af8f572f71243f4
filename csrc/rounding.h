// Correctly rounded IEEE operations, each rounded once, on the host and on the device alike: what the ops that
// reproduce a torch reference bit for bit (crop.h, boxes.h) compute with.
//
// A fused multiply-add rounds once where the reference rounds twice, so the device code spells each operation as
// an explicitly rounded intrinsic (__dmul_rn, ...), which nvcc and ptxas never contract. The host code uses plain
// IEEE operators; setup.py compiles it with -ffp-contract=off, so that no compiler contracts them either (GCC
// contracts by default wherever the target has FMA instructions: baseline x86-64 has none, aarch64 and
// -march=native builds do). x86-64 evaluates float in SSE registers (FLT_EVAL_METHOD 0), with no excess precision.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>

namespace actrack_fast {
namespace rounding {

C10_HOST_DEVICE inline double mul(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

C10_HOST_DEVICE inline double add(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

C10_HOST_DEVICE inline double sub(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}

C10_HOST_DEVICE inline double div(double a, double b) {
#ifdef __CUDA_ARCH__
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}

C10_HOST_DEVICE inline double sqrt(double a) {
#ifdef __CUDA_ARCH__
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

C10_HOST_DEVICE inline float mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

C10_HOST_DEVICE inline float add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

C10_HOST_DEVICE inline float sub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

C10_HOST_DEVICE inline float div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

C10_HOST_DEVICE inline float to_float(double a) {
#ifdef __CUDA_ARCH__
  return __double2float_rn(a);
#else
  return static_cast<float>(a);
#endif
}

// Round half to even (torch.round); the host's rounding mode is the default, to nearest.
C10_HOST_DEVICE inline double round_even(double a) {
#ifdef __CUDA_ARCH__
  return ::rint(a);
#else
  return std::nearbyint(a);
#endif
}

C10_HOST_DEVICE inline float round_even(float a) {
#ifdef __CUDA_ARCH__
  return ::rintf(a);
#else
  return std::nearbyint(a);
#endif
}

C10_HOST_DEVICE inline double ceil(double a) {
#ifdef __CUDA_ARCH__
  return ::ceil(a);
#else
  return std::ceil(a);
#endif
}

C10_HOST_DEVICE inline float floor(float a) {
#ifdef __CUDA_ARCH__
  return ::floorf(a);
#else
  return std::floor(a);
#endif
}

}  // namespace rounding
}  // namespace actrack_fast
