// CUDA kernels of actrack_fast::xcorr_depthwise and its backward, for float32/float64/float16/bfloat16 with
// float32 accumulation (float64 for float64).
//
// ACTrack correlates small planes (a 16x16 search map with a 4x4 kernel, B * T * C ~ 10^4 planes), so the
// work is one pass over memory: each block copies whole planes plus their zero halo, and their kernels, into
// shared memory once, then every thread reads its taps from there. Small planes are grouped several to a
// block so each thread keeps several loads in flight; larger planes are cut into output tiles.
// Headers: c10/cuda only (ATen/cuda/CUDAContext.h would pull in cuBLAS/cuSPARSE headers).
#include "../xcorr.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/detail/IntegerDivider.cuh>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <string>

namespace actrack_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Planes grouped into one block, at most: enough loads in flight per thread for the small ACTrack planes.
constexpr int kMaxPlanesPerBlock = 4;
// Static shared-memory limit per block without opting in to more.
constexpr size_t kMaxSharedBytes = 48 * 1024;

// One correlation problem in kernel terms: `in` (in_h x in_w) correlated with a k_h x k_w kernel, padded by
// pad_top/pad_left, gives out_h x out_w. The search gradient is the same problem on other operands.
struct Problem {
  int64_t planes;
  int in_h, in_w, k_h, k_w, pad_top, pad_left, out_h, out_w;
};

// Division by a runtime constant as a multiply and a shift: a plain integer division costs ~20 instructions, and
// the kernels split every flat index into (plane, row, column).
using Divider = at::cuda::detail::IntDivider<unsigned int>;

// How blocks cut the work: a block covers planes_per_block planes times one tile_h x tile_w output tile, and
// holds for each plane the in_tile_h x in_tile_w input region that tile reads.
struct Tiling {
  int tile_h, tile_w, tiles_x, tiles_per_plane, planes_per_block;
  int in_tile_h, in_tile_w;
  Divider tile_size_div, tile_w_div, region_size_div, region_w_div;
};

int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

// Shared memory of one block: input regions, one tap array per plane (weights or kernel-gradient sums), and
// for the kernel gradient the output-gradient tiles.
size_t shared_bytes(const Problem& p, const Tiling& t, size_t acc_bytes, bool with_grad_tile) {
  const size_t per_plane = size_t(t.in_tile_h) * t.in_tile_w + size_t(p.k_h) * p.k_w +
                           (with_grad_tile ? size_t(t.tile_h) * t.tile_w : 0);
  return acc_bytes * per_plane * t.planes_per_block;
}

Tiling make_tiling(const Problem& p, size_t acc_bytes, bool with_grad_tile) {
  Tiling t;
  if (int64_t(p.out_h) * p.out_w <= kThreads) {
    t.tile_h = p.out_h;
    t.tile_w = p.out_w;
  } else {
    t.tile_w = std::min(p.out_w, 32);
    t.tile_h = std::min(p.out_h, kThreads / t.tile_w);
  }
  int device = 0, sm_count = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  const bool whole_plane = t.tile_h == p.out_h && t.tile_w == p.out_w;
  // Group planes only while at least two blocks per multiprocessor remain.
  t.planes_per_block = whole_plane ? int(std::clamp<int64_t>(p.planes / (2 * sm_count), 1, kMaxPlanesPerBlock)) : 1;
  auto fit = [&] {
    t.in_tile_h = t.tile_h + p.k_h - 1;
    t.in_tile_w = t.tile_w + p.k_w - 1;
    return shared_bytes(p, t, acc_bytes, with_grad_tile) <= kMaxSharedBytes;
  };
  while (!fit()) {
    if (t.planes_per_block > 1) {
      t.planes_per_block /= 2;
    } else if (t.tile_h > 1 && t.tile_h >= t.tile_w) {
      t.tile_h /= 2;
    } else if (t.tile_w > 1) {
      t.tile_w /= 2;
    } else {
      TORCH_CHECK(false, "xcorr_depthwise: a ", std::to_string(p.k_h), "x", std::to_string(p.k_w),
                  " kernel is too large for the CUDA kernels, which keep it in ",
                  std::to_string(kMaxSharedBytes / 1024), " KB of shared memory per block");
    }
  }
  t.tiles_x = ceil_div(p.out_w, t.tile_w);
  t.tiles_per_plane = t.tiles_x * ceil_div(p.out_h, t.tile_h);
  t.tile_size_div = Divider(t.tile_h * t.tile_w);
  t.tile_w_div = Divider(t.tile_w);
  t.region_size_div = Divider(t.in_tile_h * t.in_tile_w);
  t.region_w_div = Divider(t.in_tile_w);
  return t;
}

// The last block may hold fewer planes than planes_per_block.
__device__ int planes_in_block(const Problem& p, const Tiling& t, int64_t plane0) {
  const int64_t remaining = p.planes - plane0;
  return remaining < t.planes_per_block ? int(remaining) : t.planes_per_block;
}

// Copies the input region that output tile (y0, x0) reads, for planes [plane0, plane0 + planes), into `region`
// as acc_t, with zeros where it falls outside the input.
template <typename scalar_t, typename acc_t>
__device__ void load_regions(const scalar_t* __restrict__ in, const Problem& p, const Tiling& t, int64_t plane0,
                             int planes, int y0, int x0, acc_t* region) {
  const unsigned region_size = t.region_size_div.divisor;
  for (unsigned idx = threadIdx.x; idx < planes * region_size; idx += blockDim.x) {
    const auto [plane, r] = t.region_size_div.divmod(idx);
    const auto [row, col] = t.region_w_div.divmod(r);
    const int y = y0 - p.pad_top + int(row), x = x0 - p.pad_left + int(col);
    acc_t v = 0;
    if (y >= 0 && y < p.in_h && x >= 0 && x < p.in_w) {
      v = static_cast<acc_t>(in[(plane0 + plane) * p.in_h * p.in_w + y * p.in_w + x]);
    }
    region[idx] = v;
  }
}

// out = correlation of `in` with `weight` (rotated by 180 degrees when `flip`), see Problem.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    correlate_kernel(const scalar_t* __restrict__ in, const scalar_t* __restrict__ weight,
                     scalar_t* __restrict__ out, Problem p, Tiling t, bool flip) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ __align__(16) unsigned char shared[];
  acc_t* region = reinterpret_cast<acc_t*>(shared);
  acc_t* taps = region + t.planes_per_block * t.in_tile_h * t.in_tile_w;

  const int tile = blockIdx.x % t.tiles_per_plane;
  const int64_t plane0 = int64_t(blockIdx.x / t.tiles_per_plane) * t.planes_per_block;
  const int planes = planes_in_block(p, t, plane0);
  const int y0 = tile / t.tiles_x * t.tile_h, x0 = tile % t.tiles_x * t.tile_w;
  const int k_size = p.k_h * p.k_w;

  load_regions(in, p, t, plane0, planes, y0, x0, region);
  for (int idx = threadIdx.x; idx < planes * k_size; idx += blockDim.x) {
    const int k = idx % k_size;
    taps[idx] = static_cast<acc_t>(weight[plane0 * k_size + idx - k + (flip ? k_size - 1 - k : k)]);
  }
  __syncthreads();

  const unsigned tile_size = t.tile_size_div.divisor, region_size = t.region_size_div.divisor;
  for (unsigned idx = threadIdx.x; idx < planes * tile_size; idx += blockDim.x) {
    const auto [plane, q] = t.tile_size_div.divmod(idx);
    const auto [ty, tx] = t.tile_w_div.divmod(q);
    const int y = y0 + int(ty), x = x0 + int(tx);
    if (y >= p.out_h || x >= p.out_w) {
      continue;
    }
    const acc_t* src = region + plane * region_size + ty * t.in_tile_w + tx;
    const acc_t* w = taps + plane * k_size;
    acc_t acc = 0;
    for (int i = 0; i < p.k_h; ++i, src += t.in_tile_w, w += p.k_w) {
#pragma unroll 4
      for (int j = 0; j < p.k_w; ++j) {
        acc += src[j] * w[j];
      }
    }
    out[(plane0 + plane) * p.out_h * p.out_w + y * p.out_w + x] = static_cast<scalar_t>(acc);
  }
}

// grad_w[i, j] = sum_yx grad[y, x] * in[y + i - pad_top, x + j - pad_left]: a block owns whole planes and walks
// their output tiles; each (plane, tap) pair belongs to one warp, which sums it over a tile with a shuffle
// reduction and adds the result to the pair's running sum in shared memory (no atomics: deterministic).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    kernel_grad_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ in,
                       scalar_t* __restrict__ grad_w, Problem p, Tiling t) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ __align__(16) unsigned char shared[];
  const unsigned region_size = t.region_size_div.divisor, tile_size = t.tile_size_div.divisor;
  const int k_size = p.k_h * p.k_w;
  acc_t* region = reinterpret_cast<acc_t*>(shared);
  acc_t* sums = region + t.planes_per_block * region_size;
  acc_t* grad_tile = sums + t.planes_per_block * k_size;

  const int64_t plane0 = int64_t(blockIdx.x) * t.planes_per_block;
  const int planes = planes_in_block(p, t, plane0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  for (int idx = threadIdx.x; idx < planes * k_size; idx += blockDim.x) {
    sums[idx] = 0;
  }
  for (int tile = 0; tile < t.tiles_per_plane; ++tile) {
    const int y0 = tile / t.tiles_x * t.tile_h, x0 = tile % t.tiles_x * t.tile_w;
    __syncthreads();  // the previous tile has been consumed (and `sums` zeroed)
    load_regions(in, p, t, plane0, planes, y0, x0, region);
    for (unsigned idx = threadIdx.x; idx < planes * tile_size; idx += blockDim.x) {
      const auto [plane, q] = t.tile_size_div.divmod(idx);
      const auto [ty, tx] = t.tile_w_div.divmod(q);
      const int y = y0 + int(ty), x = x0 + int(tx);
      grad_tile[idx] = (y < p.out_h && x < p.out_w)
                           ? static_cast<acc_t>(grad[(plane0 + plane) * p.out_h * p.out_w + y * p.out_w + x])
                           : acc_t(0);
    }
    __syncthreads();
    for (int pair = warp; pair < planes * k_size; pair += kWarps) {
      const int plane = pair / k_size, k = pair % k_size;
      const acc_t* src = region + plane * region_size + (k / p.k_w) * t.in_tile_w + k % p.k_w;
      const acc_t* g = grad_tile + plane * tile_size;
      acc_t partial = 0;
      for (unsigned q = lane; q < tile_size; q += 32) {
        const auto [ty, tx] = t.tile_w_div.divmod(q);
        partial += g[q] * src[ty * t.in_tile_w + tx];
      }
      for (int offset = 16; offset > 0; offset /= 2) {
        partial += __shfl_down_sync(0xffffffffu, partial, offset);
      }
      if (lane == 0) {
        sums[pair] += partial;
      }
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < planes * k_size; idx += blockDim.x) {
    grad_w[plane0 * k_size + idx] = static_cast<scalar_t>(sums[idx]);
  }
}

Problem forward_problem(const XcorrGeometry& g) {
  return {g.planes(), int(g.in_h), int(g.in_w), int(g.k_h), int(g.k_w),
          int(g.pad_top), int(g.pad_left), int(g.out_h), int(g.out_w)};
}

// The search gradient correlates grad_output with the rotated kernel, padded so it lands on the search grid.
Problem search_grad_problem(const XcorrGeometry& g) {
  return {g.planes(), int(g.out_h), int(g.out_w), int(g.k_h), int(g.k_w),
          int(g.k_h - 1 - g.pad_top), int(g.k_w - 1 - g.pad_left), int(g.in_h), int(g.in_w)};
}

template <typename scalar_t>
void launch_correlate(const at::Tensor& in, const at::Tensor& weight, at::Tensor& out, const Problem& p,
                      bool flip) {
  const Tiling t = make_tiling(p, sizeof(at::opmath_type<scalar_t>), /*with_grad_tile=*/false);
  const auto blocks = static_cast<unsigned int>(t.tiles_per_plane * ceil_div(p.planes, t.planes_per_block));
  correlate_kernel<scalar_t>
      <<<blocks, kThreads, shared_bytes(p, t, sizeof(at::opmath_type<scalar_t>), false),
         c10::cuda::getCurrentCUDAStream()>>>(in.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
                                              out.mutable_data_ptr<scalar_t>(), p, t, flip);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_kernel_grad(const at::Tensor& grad, const at::Tensor& in, at::Tensor& grad_w, const Problem& p) {
  const Tiling t = make_tiling(p, sizeof(at::opmath_type<scalar_t>), /*with_grad_tile=*/true);
  kernel_grad_kernel<scalar_t>
      <<<static_cast<unsigned int>(ceil_div(p.planes, t.planes_per_block)), kThreads, shared_bytes(p, t, sizeof(at::opmath_type<scalar_t>), true),
         c10::cuda::getCurrentCUDAStream()>>>(grad.const_data_ptr<scalar_t>(), in.const_data_ptr<scalar_t>(),
                                              grad_w.mutable_data_ptr<scalar_t>(), p, t);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor xcorr_depthwise_cuda(const at::Tensor& search, const at::Tensor& kernel, c10::string_view padding) {
  const XcorrGeometry g = check_xcorr(search, kernel, padding, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(search.device());
  at::Tensor out = at::empty({g.batch, g.channels, g.out_h, g.out_w}, search.options());
  if (out.numel() == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, search.scalar_type(), "xcorr_depthwise_cuda", [&] {
    launch_correlate<scalar_t>(search, kernel, out, forward_problem(g), /*flip=*/false);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> xcorr_depthwise_backward_cuda(const at::Tensor& grad_output,
                                                                  const at::Tensor& search, const at::Tensor& kernel,
                                                                  c10::string_view padding) {
  const XcorrGeometry g = check_xcorr_backward(grad_output, search, kernel, padding, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(search.device());
  at::Tensor grad_search = at::empty_like(search);
  at::Tensor grad_kernel = at::empty_like(kernel);
  if (g.planes() == 0) {
    return {grad_search, grad_kernel};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, search.scalar_type(), "xcorr_depthwise_backward_cuda", [&] {
    launch_correlate<scalar_t>(grad_output, kernel, grad_search, search_grad_problem(g), /*flip=*/true);
    launch_kernel_grad<scalar_t>(grad_output, search, grad_kernel, forward_problem(g));
  });
  return {grad_search, grad_kernel};
}

}  // namespace

TORCH_LIBRARY_IMPL(actrack_fast, CUDA, m) {
  m.impl("xcorr_depthwise", &xcorr_depthwise_cuda);
  m.impl("xcorr_depthwise_backward", &xcorr_depthwise_backward_cuda);
}

}  // namespace actrack_fast
