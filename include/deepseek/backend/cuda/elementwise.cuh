// The CUDA backend's element-wise and row-wise primitives (backend/ops.hpp's names; the CPU twins
// are backend/cpu/ops.hpp, rope.hpp and vision_ops.hpp, and tests/cuda/test_ops.cpp compares each
// with its twin on odd shapes). All pointers are device pointers unless a comment says host; every
// launcher issues its kernel on the thread's stream (context.cuh) and returns without waiting,
// except all_finite, whose answer is a host bool.
//
// Row-wise ops (rmsnorm, layernorm, softmax) run one 256-thread block per row and reduce in f32 in
// a tree order, so they differ from the CPU's sequential sums by f32 rounding only (relative ~1e-6
// at d = 7168). Element-wise ops are grid-stride loops and equal the CPU bit for bit, but for
// expf / erff (the device's, within 2 ulp) and RoPE's cos / sin (double on both sides, rounded to
// f32 once: equal but where the double results straddle an f32 rounding boundary).
#pragma once

#include "deepseek/backend/cuda/buffer.cuh"
#include "deepseek/backend/cuda/context.cuh"
#include "deepseek/backend/cuda/dtype.cuh"
#include "deepseek/backend/params.hpp"
#include "deepseek/core/tensor.hpp"

#include <algorithm>
#include <cstdint>
#include <string>

namespace deepseek::backend::cuda {

// Kernels are `static __global__`: a header-only library's kernels are defined in every .cu that
// includes them, and internal linkage keeps those definitions apart at link time.
namespace kernels {

inline constexpr int kThreads = 256;

// A grid that covers n elements with kThreads-thread blocks, capped (the loops stride the rest).
inline unsigned grid_for(int64_t n) { return unsigned(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, 1 << 16)); }

#define DEEPSEEK_GRID_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

static __global__ void fill(float* y, int64_t n, float v) {
  DEEPSEEK_GRID_STRIDE(i, n) y[i] = v;
}
static __global__ void add(float* y, const float* x, int64_t n) {
  DEEPSEEK_GRID_STRIDE(i, n) y[i] += x[i];
}
static __global__ void scale(float* x, int64_t n, float s) {
  DEEPSEEK_GRID_STRIDE(i, n) x[i] *= s;
}
static __global__ void silu_mul(float* g, const float* u, int64_t n) {
  DEEPSEEK_GRID_STRIDE(i, n) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
static __global__ void gelu_erf(float* x, int64_t n) {
  DEEPSEEK_GRID_STRIDE(i, n) x[i] = x[i] * 0.5f * (1.0f + erff(x[i] * 0.70710678118654752f));
}
static __global__ void quick_gelu(float* x, int64_t n) {
  DEEPSEEK_GRID_STRIDE(i, n) x[i] = x[i] * (1.0f / (1.0f + expf(x[i] * -1.702f)));
}
static __global__ void round_to_dtype(float* x, int64_t n, bool bf16) {
  DEEPSEEK_GRID_STRIDE(i, n) x[i] = bf16 ? dev::round_to_bf16(x[i]) : dev::f16_to_f32(dev::f32_to_f16(x[i]));
}
// y[r * ldy + c] = x[r * ldx + c] for r < rows, c < cols (copy2d; repeat_row is ldx = 0).
static __global__ void copy2d(const float* x, int64_t ldx, float* y, int64_t ldy, int64_t rows, int64_t cols) {
  DEEPSEEK_GRID_STRIDE(i, rows * cols) {
    const int64_t r = i / cols, c = i % cols;
    y[r * ldy + c] = x[r * ldx + c];
  }
}
static __global__ void add_bias(float* x, int64_t n, int64_t d, const float* bias, int64_t ld) {
  DEEPSEEK_GRID_STRIDE(i, n * d) x[(i / d) * ld + i % d] += bias[i % d];
}

// One block per row t.
static __global__ void rmsnorm(const float* x, int64_t d, const float* w, float eps, float* y, int64_t ldx, int64_t ldy) {
  const float* xr = x + int64_t(blockIdx.x) * ldx;
  float* yr = y + int64_t(blockIdx.x) * ldy;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) ss += xr[i] * xr[i];
  const float inv = 1.0f / sqrtf(dev::block_sum(ss) / float(d) + eps);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) yr[i] = w[i] * (xr[i] * inv);
}
static __global__ void layernorm(const float* x, int64_t d, const float* w, const float* b, float eps, float* y, int64_t ldx,
                          int64_t ldy) {
  const float* xr = x + int64_t(blockIdx.x) * ldx;
  float* yr = y + int64_t(blockIdx.x) * ldy;
  float s = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) s += xr[i];
  const float mean = dev::block_sum(s) / float(d);
  float v = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) v += (xr[i] - mean) * (xr[i] - mean);
  const float inv = 1.0f / sqrtf(dev::block_sum(v) / float(d) + eps);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) yr[i] = (xr[i] - mean) * inv * w[i] + b[i];
}
// One block: softmax over x[0, n) in place.
static __global__ void softmax(float* x, int64_t n) {
  float m = -__int_as_float(0x7f800000);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, x[i]);
  m = dev::block_max(m);
  float s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    x[i] = expf(x[i] - m);
    s += x[i];
  }
  const float inv = 1.0f / dev::block_sum(s);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) x[i] *= inv;
}

// out[i] = src[i] as f32 for a float dtype (0 f32, 1 bf16, 2 f16).
__device__ __forceinline__ float load_as_f32(const void* src, int kind, int64_t i) {
  if (kind == 0) return static_cast<const float*>(src)[i];
  const uint16_t h = static_cast<const uint16_t*>(src)[i];
  return kind == 1 ? dev::bf16_to_f32(h) : dev::f16_to_f32(h);
}
static __global__ void to_f32(const void* src, int kind, int64_t n, float* out) {
  DEEPSEEK_GRID_STRIDE(i, n) out[i] = load_as_f32(src, kind, i);
}
// out[i, :] = table[ids[i], :]; one block per row.
static __global__ void embedding(const void* table, int kind, int64_t d, const int32_t* ids, float* out) {
  const int64_t base = int64_t(ids[blockIdx.x]) * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) out[int64_t(blockIdx.x) * d + j] = load_as_f32(table, kind, base + j);
}
static __global__ void any_non_finite(const float* x, int64_t n, int* flag) {
  DEEPSEEK_GRID_STRIDE(i, n) if (!isfinite(x[i])) *flag = 1;
}

// RoPE: cos / sin of p * inv_freq[i] in double, times the attention factor, rounded to f32 once
// (backend/cpu/rope.hpp's rope_one); one thread per (row, head, pair). The inverse frequencies
// travel in the kernel's parameters (at most kMaxRopePairs, 1 KB), so a call copies nothing.
inline constexpr int kMaxRopePairs = 128;
struct RopeArgs {
  double inv_freq[kMaxRopePairs];
  int64_t half = 0;
  bool interleaved = true;
  double attention_factor = 1.0;
};
static __global__ void rope(float* x, int64_t n, int64_t heads, int64_t ld, int64_t head_stride, int64_t p0, RopeArgs a) {
  DEEPSEEK_GRID_STRIDE(k, n * heads * a.half) {
    const int64_t i = k % a.half, h = (k / a.half) % heads, t = k / (a.half * heads);
    const double phi = double(p0 + t) * a.inv_freq[i];
    const float c = float(cos(phi) * a.attention_factor), s = float(sin(phi) * a.attention_factor);
    float* v = x + t * ld + h * head_stride;
    float* pa = a.interleaved ? v + 2 * i : v + i;
    float* pb = a.interleaved ? v + 2 * i + 1 : v + i + a.half;
    const float x0 = *pa, x1 = *pb;
    *pa = x0 * c - x1 * s;
    *pb = x0 * s + x1 * c;
  }
}

}  // namespace kernels

namespace detail {
inline cudaStream_t stream() { return Context::current().stream(); }
inline int float_kind(DType d, const char* what) {
  if (d == DType::f32) return 0;
  if (d == DType::bf16) return 1;
  if (d == DType::f16) return 2;
  throw Error(std::string(what) + ": expected an f32, bf16 or f16 tensor, got " + dtype_name(d));
}
inline void require_device(const TensorView& v, const char* what) {
  if (v.device() != Device::cuda)
    throw Error(std::string(what) + ": the tensor is in host memory; the CUDA backend reads weights from the GPU "
                                    "(load them with io::Weights::on(Device::cuda))");
}
// A host array copied into stream-ordered device scratch (ids, small tables); the copy is ordered
// before every later kernel on the stream.
template <class T>
struct DeviceArray {
  T* p = nullptr;
  DeviceArray(const T* host, int64_t n) {
    if (n <= 0) return;
    DEEPSEEK_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&p), size_t(n) * sizeof(T), stream()));
    DEEPSEEK_CUDA_CHECK(cudaMemcpyAsync(p, host, size_t(n) * sizeof(T), cudaMemcpyHostToDevice, stream()));
    // A pageable source: the runtime has staged it before returning, so `host` may go away now.
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() {
    if (p) (void)cudaFreeAsync(p, stream());
  }
};
}  // namespace detail

#define DEEPSEEK_LAUNCH(kernel, grid, block, ...)                                \
  do {                                                                           \
    kernels::kernel<<<(grid), (block), 0, detail::stream()>>>(__VA_ARGS__);      \
    DEEPSEEK_CUDA_CHECK_LAUNCH(#kernel);                                         \
  } while (0)

inline void fill(float* y, int64_t n, float v) {
  if (n > 0) DEEPSEEK_LAUNCH(fill, kernels::grid_for(n), kernels::kThreads, y, n, v);
}
inline void add(float* y, const float* x, int64_t n) {
  if (n > 0) DEEPSEEK_LAUNCH(add, kernels::grid_for(n), kernels::kThreads, y, x, n);
}
inline void scale(float* x, int64_t n, float s) {
  if (n > 0) DEEPSEEK_LAUNCH(scale, kernels::grid_for(n), kernels::kThreads, x, n, s);
}
inline void silu_mul(float* g, const float* u, int64_t n) {
  if (n > 0) DEEPSEEK_LAUNCH(silu_mul, kernels::grid_for(n), kernels::kThreads, g, u, n);
}
inline void gelu_erf(float* x, int64_t n) {
  if (n > 0) DEEPSEEK_LAUNCH(gelu_erf, kernels::grid_for(n), kernels::kThreads, x, n);
}
inline void quick_gelu(float* x, int64_t n) {
  if (n > 0) DEEPSEEK_LAUNCH(quick_gelu, kernels::grid_for(n), kernels::kThreads, x, n);
}
inline void round_to_dtype(float* x, int64_t n, DType d) {
  if (n > 0 && (d == DType::bf16 || d == DType::f16))
    DEEPSEEK_LAUNCH(round_to_dtype, kernels::grid_for(n), kernels::kThreads, x, n, d == DType::bf16);
}
inline void copy2d(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols) {
  if (rows > 0 && cols > 0) DEEPSEEK_LAUNCH(copy2d, kernels::grid_for(rows * cols), kernels::kThreads, src, lds, dst, ldd, rows, cols);
}
inline void repeat_row(const float* row, int64_t d, int64_t n, float* y, int64_t ldy) { copy2d(row, 0, y, ldy, n, d); }
inline void add_bias(float* x, int64_t n, int64_t d, const float* bias, int64_t ld = -1) {
  if (ld < 0) ld = d;
  if (n > 0 && d > 0) DEEPSEEK_LAUNCH(add_bias, kernels::grid_for(n * d), kernels::kThreads, x, n, d, bias, ld);
}
inline void rmsnorm(const float* x, int64_t n, int64_t d, const float* w, float eps, float* y, int64_t ldx = -1,
                    int64_t ldy = -1) {
  if (ldx < 0) ldx = d;
  if (ldy < 0) ldy = d;
  if (n > 0) DEEPSEEK_LAUNCH(rmsnorm, unsigned(n), kernels::kThreads, x, d, w, eps, y, ldx, ldy);
}
inline void layernorm(const float* x, int64_t n, int64_t d, const float* w, const float* b, float eps, float* y,
                      int64_t ldx = -1, int64_t ldy = -1) {
  if (ldx < 0) ldx = d;
  if (ldy < 0) ldy = d;
  if (n > 0) DEEPSEEK_LAUNCH(layernorm, unsigned(n), kernels::kThreads, x, d, w, b, eps, y, ldx, ldy);
}
inline void softmax(float* x, int64_t n) {
  if (n > 0) DEEPSEEK_LAUNCH(softmax, 1u, 1024, x, n);
}

// A norm weight or bias (host or device view, any float dtype) as f32 on the device.
inline Buffer vector_f32(const TensorView& v) {
  const int kind = detail::float_kind(v.dtype(), "vector_f32");
  Buffer out(size_t(v.numel()));
  if (v.numel() == 0) return out;
  if (!v.is_contiguous()) throw Error("vector_f32 expects a contiguous tensor");
  if (v.device() == Device::cuda) {
    DEEPSEEK_LAUNCH(to_f32, kernels::grid_for(v.numel()), kernels::kThreads, v.data(), kind, v.numel(), out.data());
  } else {
    detail::DeviceArray<uint8_t> staged(static_cast<const uint8_t*>(v.data()), v.nbytes());
    DEEPSEEK_LAUNCH(to_f32, kernels::grid_for(v.numel()), kernels::kThreads, staged.p, kind, v.numel(), out.data());
  }
  return out;
}
// out[i] = table[ids[i]] as f32; the table on the device, ids a host array the caller has checked.
inline void embedding(const TensorView& table, const int32_t* ids, int64_t n, float* out) {
  detail::require_device(table, "embedding");
  const int kind = detail::float_kind(table.dtype(), "embedding");
  if (n <= 0) return;
  detail::DeviceArray<int32_t> d_ids(ids, n);
  DEEPSEEK_LAUNCH(embedding, unsigned(n), kernels::kThreads, table.data(), kind, table.dim(1), d_ids.p, out);
}
namespace kernels {
// One block: each thread keeps the largest value it sees and its lowest index (the CPU's
// std::max_element order: a later equal value does not win), then a warp and a block reduction.
static __global__ void argmax_block(const float* x, int64_t n, int32_t* out) {
  float best = -INFINITY;
  int64_t at = n;  // past the end: no value yet
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    if (x[i] > best || at == n) best = x[i], at = i;
  auto better = [](float v, int64_t i, float bv, int64_t bi) { return bi == INT64_MAX || v > bv || (v == bv && i < bi); };
  if (at == n) at = INT64_MAX;
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_down_sync(0xffffffffu, best, o);
    const int64_t i = __shfl_down_sync(0xffffffffu, at, o);
    if (i != INT64_MAX && better(v, i, best, at)) best = v, at = i;
  }
  __shared__ float wv[32];
  __shared__ int64_t wi[32];
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5, warps = int(blockDim.x + 31) >> 5;
  if (lane == 0) wv[warp] = best, wi[warp] = at;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < warps; ++w)
      if (wi[w] != INT64_MAX && better(wv[w], wi[w], wv[0], wi[0])) wv[0] = wv[w], wi[0] = wi[w];
    *out = wi[0] == INT64_MAX ? 0 : int32_t(wi[0]);
  }
}
}  // namespace kernels

// The index of the largest of x[0, n) (ties: the lowest index), as a host value: greedy decoding
// reads 4 bytes instead of the logits row.
inline int32_t argmax(const float* x, int64_t n) {
  if (n <= 0) throw Error("argmax of an empty row");
  IndexBuffer out(1);  // the kernel always writes it
  DEEPSEEK_LAUNCH(argmax_block, 1, 1024, x, n, out.data());
  int32_t host = 0;
  download(out.data(), 1, &host);
  return host;
}

inline bool all_finite(const float* x, int64_t n) {
  if (n <= 0) return true;
  const int zero = 0;
  detail::DeviceArray<int> flag(&zero, 1);
  DEEPSEEK_LAUNCH(any_non_finite, kernels::grid_for(n), kernels::kThreads, x, n, flag.p);
  int host = 0;
  DEEPSEEK_CUDA_CHECK(cudaMemcpyAsync(&host, flag.p, sizeof(int), cudaMemcpyDeviceToHost, detail::stream()));
  Context::current().synchronize();
  return host == 0;
}
inline void rope(float* x, int64_t n, int64_t heads, int64_t ld, int64_t head_stride, int64_t p0, const RopeParams& r) {
  const int64_t half = r.dim / 2;
  if (half > kernels::kMaxRopePairs)
    throw Error("rope: " + std::to_string(r.dim) + " rotary dims; the CUDA kernel takes at most " +
                std::to_string(2 * kernels::kMaxRopePairs));
  if (n <= 0 || heads <= 0 || half <= 0) return;
  kernels::RopeArgs a;
  for (int64_t i = 0; i < half; ++i) a.inv_freq[i] = r.inv_freq[i];
  a.half = half;
  a.interleaved = r.interleaved;
  a.attention_factor = r.attention_factor;
  DEEPSEEK_LAUNCH(rope, kernels::grid_for(n * heads * half), kernels::kThreads, x, n, heads, ld, head_stride, p0, a);
}

}  // namespace deepseek::backend::cuda
