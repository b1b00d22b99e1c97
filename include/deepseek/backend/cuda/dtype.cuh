// Device twins of core/dtype.hpp's conversions, bit for bit: bf16 and f16 widen exactly, f32 ->
// bf16 rounds to nearest even (NaN -> 0x7fc0), e4m3 decodes exactly and encodes by round to nearest
// even with saturation to +-448 (cuda_fp8.h's __NV_SATFINITE, what f32_to_f8_e4m3 does: no inf),
// and pow2_ceil is the exponent of x plus one when any mantissa bit is set.
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace deepseek::backend::cuda::dev {

__device__ __forceinline__ float bf16_to_f32(uint16_t h) { return __uint_as_float(uint32_t(h) << 16); }
__device__ __forceinline__ uint16_t f32_to_bf16(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
__device__ __forceinline__ float round_to_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }
__device__ __forceinline__ float f16_to_f32(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ uint16_t f32_to_f16(float f) { return __half_as_ushort(__float2half_rn(f)); }

__device__ __forceinline__ float f8_e4m3_to_f32(uint8_t b) {
  const uint32_t exp = (b >> 3) & 0xfu, man = b & 0x7u;
  float v;
  if (exp == 0xf && man == 0x7)
    v = __uint_as_float(0x7fc00000u);
  else if (exp == 0)
    v = float(man) * 0.001953125f;  // man 2^-9, exact
  else
    v = __uint_as_float(((exp + 120u) << 23) | (man << 20));
  return (b & 0x80u) ? -v : v;
}
__device__ __forceinline__ uint8_t f32_to_f8_e4m3(float f) {
  return uint8_t(__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3));
}
// The smallest power of two >= x for a positive normal x.
__device__ __forceinline__ float pow2_ceil(float x) {
  const uint32_t u = __float_as_uint(x);
  const uint32_t e = u & 0x7f800000u;
  return __uint_as_float((u & 0x007fffffu) ? e + 0x00800000u : e);
}

// Sums / maxima over a warp and over a block (blockDim.x a multiple of 32, at most 1024). Every
// thread of the block must call the block versions; all of them get the result.
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {  // the sampler's softmax denominator
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_max(double v) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
template <bool Max, class T>
__device__ __forceinline__ T block_reduce(T v) {
  __shared__ T part[32];
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5, warps = int(blockDim.x) >> 5;
  v = Max ? warp_max(v) : warp_sum(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < warps ? part[lane] : (Max ? T(-INFINITY) : T(0));
    w = Max ? warp_max(w) : warp_sum(w);
    if (lane == 0) part[0] = w;
  }
  __syncthreads();
  const T r = part[0];
  __syncthreads();  // part[] is reused by the next call
  return r;
}
__device__ __forceinline__ float block_sum(float v) { return block_reduce<false>(v); }
__device__ __forceinline__ float block_max(float v) { return block_reduce<true>(v); }
__device__ __forceinline__ double block_sum(double v) { return block_reduce<false>(v); }

}  // namespace deepseek::backend::cuda::dev
