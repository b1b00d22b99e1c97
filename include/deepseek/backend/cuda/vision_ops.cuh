// The CUDA twins of the vision encoder's layout, attention and resampling loops (DeepSeek-OCR's
// SAM-B ViTDet and CLIP-L, nn/sam_vit.hpp, clip_vision.hpp, conv2d.hpp); the CPU contract they
// mirror is backend/cpu/vision_ops.hpp, and tests/cuda/test_vision_ops.cu compares each with it.
// Maps are channels-last ([H, W, C] row-major = [H*W, C] token rows), all f32, device pointers;
// shapes are host values and no launcher reads an activation back.
//
//   im2col_hwc         cols[p - p0, (ky k + kx) C + c] = x[oy s - pad + ky, ox s - pad + kx, c] (0 outside)
//                      for output pixels p = oy Wo + ox in [p0, p1): an exact copy, one thread per column
//   patchify_chw       cols[py wo + px, (c p + ky) p + kx] = x[c, py p + ky, px p + kx]: an exact copy
//   vit_attention      qkv [H*W, 3 heads hd] -> out [H*W, heads hd]; per region (the grid, or window x
//                      window tiles of the grid zero-padded bottom/right, pads = pad_qkv, unmasked) and
//                      head: out_i = sum_j softmax_j(l_ij) v_j, l_ij = scale q_i.k_j + q_i.Rh[qy - ky + rh - 1]
//                      + q_i.Rw[qx - kx + rw - 1] (q unscaled in the bias; no tables: l = scale q.k)
//   resize_bicubic_aa  [h_in, w_in, C] -> [h_out, w_out, C], torch's antialiased bicubic (Keys a = -0.5,
//                      support 2 widened by the scale when shrinking, weights normalised), width then height
//   resize_linear      [L, C] -> [M, C], linear along L, align_corners False
//
// vit_attention: one block of kWarps warps per (region, head, kQueries queries), each warp holding
// kQueriesPerWarp queries; keys stream through shared memory kKeys (= 32) at a time, lane j scoring
// key j of the tile for all of its warp's queries (K staged transposed, q broadcast from shared), an
// online softmax in f32 (running max and sum per query, the output rescaled when the max grows and
// divided by the sum once at the end, as the CPU's 1024-key tiles do), then P V with each lane
// owning head dims lane, lane + 32, ... (kDimsPerLane of them: the kernel is instantiated for
// hd <= 32, 64, 128, 256). The bias dots q.Rh, q.Rw of a block's queries are computed once into
// shared memory. Results differ from the CPU's Eigen products by f32 summation order and expf
// (~1e-6 relative); padded and out-of-range queries run with the rest and are not written.
//
// Resamplers: the tap tables (start, count, normalised weights per output index) are built on the
// device by one thread per output index with the CPU's f32 formulas, the roundings pinned: the
// source coordinate scale (i + 0.5) is rounded before it is used (the CPU's no_contract, which
// keeps tap bounds identical), and the cubic and the sums use the FMAs g++ -mfma forms from the
// CPU loops (Keys' polynomial in two FMAs, acc = fma(w, x, acc) from 0, linear = fma(l0, x0, l1 x1)),
// so the tables and the outputs agree with the CPU build to the last bit or an ulp. Then one thread
// per output value sums its taps in the CPU's order (width pass into scratch, then height).
#pragma once

#include "deepseek/backend/cuda/buffer.cuh"
#include "deepseek/backend/cuda/context.cuh"
#include "deepseek/backend/cuda/dtype.cuh"
#include "deepseek/backend/cuda/elementwise.cuh"
#include "deepseek/core/error.hpp"

#include <cmath>
#include <cstdint>
#include <string>

namespace deepseek::backend::cuda {

namespace kernels {

// ---- layout copies -------------------------------------------------------------------------------

static __global__ void im2col_hwc(const float* x, int64_t H, int64_t W, int64_t C, int64_t k, int64_t stride,
                                  int64_t pad, int64_t Wo, int64_t p0, int64_t n, float* cols) {
  DEEPSEEK_GRID_STRIDE(e, n) {
    const int64_t c = e % C, t = e / C, kx = t % k, ky = (t / k) % k, p = p0 + t / (k * k);
    const int64_t iy = (p / Wo) * stride - pad + ky, ix = (p % Wo) * stride - pad + kx;
    cols[e] = (iy < 0 || iy >= H || ix < 0 || ix >= W) ? 0.0f : x[(iy * W + ix) * C + c];
  }
}

static __global__ void patchify_chw(const float* x, int64_t C, int64_t H, int64_t W, int64_t p, int64_t wo, int64_t n,
                                    float* cols) {
  DEEPSEEK_GRID_STRIDE(e, n) {
    const int64_t kx = e % p, ky = (e / p) % p, c = (e / (p * p)) % C, patch = e / (p * p * C);
    cols[e] = x[(c * H + (patch / wo) * p + ky) * W + (patch % wo) * p + kx];
  }
}

// ---- vit_attention -------------------------------------------------------------------------------

// The tile shapes: a block's warps, the queries each warp holds, the keys staged per step (one per
// lane). Shared memory per block, in floats: K^T [hd][kKeys + 1] (the pad column keeps the
// transposed stores and the per-lane loads free of bank conflicts), V [kKeys][hd], Q [kQueries][hd],
// and with tables the bias dots [kQueries][rh] and [kQueries][rw].
struct VitTile {
  static constexpr int kWarps = 8, kQueriesPerWarp = 4, kKeys = 32;
  static constexpr int kQueries = kWarps * kQueriesPerWarp, kThreads = kWarps * 32, kKtStride = kKeys + 1;
  static constexpr int kMaxHeadDim = 256;
  static int64_t shared_floats(int64_t hd, int64_t rh, int64_t rw, bool tables) {
    return hd * kKtStride + kKeys * hd + kQueries * hd + (tables ? kQueries * (rh + rw) : 0);
  }
};

struct VitArgs {
  const float* qkv = nullptr;
  const float* pad_qkv = nullptr;  // the q | k | v row of a padded token (windowed grids not a multiple of the window)
  const float* rel_h = nullptr;    // [2 rh - 1, hd] or null (then rel_w is null too)
  const float* rel_w = nullptr;    // [2 rw - 1, hd]
  float* out = nullptr;
  int64_t H = 0, W = 0, heads = 0, hd = 0;
  int64_t rh = 0, rw = 0, nrx = 0, n = 0, qblocks = 0;  // region rh x rw tokens (n), regions per grid row, query blocks
  float scale = 1.0f;

  // The qkv row of token j of region (ry, rx), or pad_qkv past the grid's bottom / right edge.
  __device__ __forceinline__ const float* row(int64_t ry, int64_t rx, int64_t j) const {
    const int64_t y = ry * rh + j / rw, x = rx * rw + j % rw;
    return (y < H && x < W) ? qkv + (y * W + x) * 3 * heads * hd : pad_qkv;
  }
};

template <int kDimsPerLane>
static __global__ void __launch_bounds__(VitTile::kThreads) vit_attention(VitArgs a) {
  using T = VitTile;
  extern __shared__ float smem[];
  const int hd = int(a.hd), lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int64_t C = a.heads * a.hd;
  const int64_t item = blockIdx.x, qb = item % a.qblocks, h = (item / a.qblocks) % a.heads,
                region = item / (a.qblocks * a.heads);
  const int64_t ry = region / a.nrx, rx = region % a.nrx, m0 = qb * T::kQueries;
  const bool tables = a.rel_h != nullptr;
  float* kt = smem;
  float* vs = kt + hd * T::kKtStride;
  float* qs = vs + T::kKeys * hd;
  float* bias_h = qs + T::kQueries * hd;
  float* bias_w = bias_h + T::kQueries * a.rh;

  // The block's queries (past the region's end: its last token, computed and dropped).
  for (int t = int(threadIdx.x); t < T::kQueries * hd; t += T::kThreads) {
    const int64_t j = min(m0 + int64_t(t / hd), a.n - 1);
    qs[t] = a.row(ry, rx, j)[h * a.hd + t % hd];
  }
  __syncthreads();
  // bias_h[i][ky] = q_i . rel_h[qy - ky + rh - 1], bias_w[i][kx] = q_i . rel_w[qx - kx + rw - 1].
  if (tables) {
    const int64_t per = a.rh + a.rw;
    for (int64_t t = threadIdx.x; t < T::kQueries * per; t += T::kThreads) {
      const int64_t i = t / per, e = t % per, j = min(m0 + i, a.n - 1), qy = j / a.rw, qx = j % a.rw;
      const float* q = qs + i * hd;
      const float* r = e < a.rh ? a.rel_h + (qy - e + a.rh - 1) * a.hd : a.rel_w + (qx - (e - a.rh) + a.rw - 1) * a.hd;
      float dot = 0;
      for (int d = 0; d < hd; ++d) dot = fmaf(q[d], r[d], dot);
      if (e < a.rh)
        bias_h[i * a.rh + e] = dot;
      else
        bias_w[i * a.rw + (e - a.rh)] = dot;
    }
  }

  float m[T::kQueriesPerWarp], l[T::kQueriesPerWarp], o[T::kQueriesPerWarp][kDimsPerLane];
#pragma unroll
  for (int qi = 0; qi < T::kQueriesPerWarp; ++qi) {
    m[qi] = -__int_as_float(0x7f800000);
    l[qi] = 0.0f;
#pragma unroll
    for (int r = 0; r < kDimsPerLane; ++r) o[qi][r] = 0.0f;
  }
  const float* qw = qs + warp * T::kQueriesPerWarp * hd;
  for (int64_t j0 = 0; j0 < a.n; j0 += T::kKeys) {
    __syncthreads();  // the previous tile is consumed (and, on the first, the bias dots are written)
    for (int t = int(threadIdx.x); t < T::kKeys * hd; t += T::kThreads) {
      const int key = t / hd, d = t % hd;
      const bool in = j0 + key < a.n;
      const float* r = in ? a.row(ry, rx, j0 + key) : nullptr;
      kt[d * T::kKtStride + key] = in ? r[C + h * a.hd + d] : 0.0f;
      vs[t] = in ? r[2 * C + h * a.hd + d] : 0.0f;
    }
    __syncthreads();
    // Lane `lane` scores key j0 + lane against the warp's queries.
    float s[T::kQueriesPerWarp];
#pragma unroll
    for (int qi = 0; qi < T::kQueriesPerWarp; ++qi) s[qi] = 0.0f;
    for (int d = 0; d < hd; ++d) {
      const float kd = kt[d * T::kKtStride + lane];
#pragma unroll
      for (int qi = 0; qi < T::kQueriesPerWarp; ++qi) s[qi] = fmaf(qw[qi * hd + d], kd, s[qi]);
    }
    const int64_t key = j0 + lane, ky = key / a.rw, kx = key % a.rw;
    const bool valid = key < a.n;
#pragma unroll
    for (int qi = 0; qi < T::kQueriesPerWarp; ++qi) {
      const int i = warp * T::kQueriesPerWarp + qi;
      const float bias = (tables && valid) ? bias_h[i * a.rh + ky] + bias_w[i * a.rw + kx] : 0.0f;
      const float logit = valid ? fmaf(s[qi], a.scale, bias) : -__int_as_float(0x7f800000);
      const float m_new = fmaxf(m[qi], dev::warp_max(logit));  // finite: key j0 is always in range
      const float corr = expf(m[qi] - m_new);                  // 0 on the first tile (m = -inf)
      s[qi] = valid ? expf(logit - m_new) : 0.0f;
      l[qi] = l[qi] * corr + dev::warp_sum(s[qi]);
      m[qi] = m_new;
#pragma unroll
      for (int r = 0; r < kDimsPerLane; ++r) o[qi][r] *= corr;
    }
    const int keys = int(min(int64_t(T::kKeys), a.n - j0));
    for (int k = 0; k < keys; ++k) {
      const float* vk = vs + k * hd;
#pragma unroll
      for (int qi = 0; qi < T::kQueriesPerWarp; ++qi) {
        const float p = __shfl_sync(0xffffffffu, s[qi], k);
#pragma unroll
        for (int r = 0; r < kDimsPerLane; ++r) {
          const int d = lane + 32 * r;
          if (d < hd) o[qi][r] = fmaf(p, vk[d], o[qi][r]);
        }
      }
    }
  }
#pragma unroll
  for (int qi = 0; qi < T::kQueriesPerWarp; ++qi) {
    const int64_t j = m0 + warp * T::kQueriesPerWarp + qi, y = ry * a.rh + j / a.rw, x = rx * a.rw + j % a.rw;
    if (j >= a.n || y >= a.H || x >= a.W) continue;
    const float inv = 1.0f / l[qi];
    float* dst = a.out + (y * a.W + x) * C + h * a.hd;
#pragma unroll
    for (int r = 0; r < kDimsPerLane; ++r) {
      const int d = lane + 32 * r;
      if (d < hd) dst[d] = o[qi][r] * inv;
    }
  }
}

// ---- resamplers ----------------------------------------------------------------------------------

// Keys' cubic (a = -0.5) with the CPU build's FMAs: |x| < 1: (1.5 |x| - 2.5) x^2 + 1, |x| < 2:
// (((|x| - 5) |x| + 8) |x| - 4) a.
__device__ __forceinline__ float keys_cubic(float x) {
  x = fabsf(x);
  if (x < 1.0f) return fmaf(__fmul_rn(fmaf(1.5f, x, -2.5f), x), x, 1.0f);
  if (x < 2.0f) return __fmul_rn(fmaf(fmaf(__fsub_rn(x, 5.0f), x, 8.0f), x, -4.0f), -0.5f);
  return 0.0f;
}

// One axis' taps (backend/cpu/vision_ops.hpp's bicubic_aa_axis), one thread per output index i:
// taps start[i] .. start[i] + taps[i] - 1, weights w[i * max_taps + j] normalised to sum 1.
static __global__ void bicubic_aa_axis(int64_t n_in, int64_t n_out, float scale, float support, float inv,
                                       int64_t max_taps, int64_t* start, int64_t* taps, float* w) {
  DEEPSEEK_GRID_STRIDE(i, n_out) {
    const float center = __fmul_rn(scale, __fadd_rn(float(i), 0.5f));
    const int64_t lo = max(int64_t(__fadd_rn(__fsub_rn(center, support), 0.5f)), int64_t(0));
    const int64_t hi = min(int64_t(__fadd_rn(__fadd_rn(center, support), 0.5f)), n_in);
    const int64_t nt = min(hi - lo, max_taps);
    float* wi = w + i * max_taps;
    float total = 0;
    for (int64_t j = 0; j < nt; ++j) {
      wi[j] = keys_cubic(__fmul_rn(__fadd_rn(__fsub_rn(float(j + lo), center), 0.5f), inv));
      total = __fadd_rn(total, wi[j]);
    }
    if (total != 0.0f)
      for (int64_t j = 0; j < nt; ++j) wi[j] = __fdiv_rn(wi[j], total);
    start[i] = lo;
    taps[i] = nt;
  }
}

// y[r, o, c] = sum_j w[o, j] x[r, start[o] + j, c] over rows of `rows` pixels (stride in_row floats
// between rows, `inner` floats per pixel): the width pass (inner = C) and the height pass (rows = 1,
// a "pixel" is a whole row of w_out C floats) are this one loop, from 0 in tap order.
static __global__ void resample_taps(const float* x, int64_t rows, int64_t in_row, int64_t n_out, int64_t inner,
                                     const int64_t* start, const int64_t* taps, const float* w, int64_t max_taps,
                                     float* y) {
  DEEPSEEK_GRID_STRIDE(e, rows * n_out * inner) {
    const int64_t c = e % inner, o = (e / inner) % n_out, r = e / (inner * n_out);
    const float* src = x + r * in_row + start[o] * inner + c;
    const float* wo = w + o * max_taps;
    float acc = 0;
    for (int64_t j = 0; j < taps[o]; ++j) acc = fmaf(wo[j], src[j * inner], acc);
    y[e] = acc;
  }
}

static __global__ void resize_linear(const float* x, int64_t L, int64_t C, int64_t M, float scale, float* y) {
  DEEPSEEK_GRID_STRIDE(e, M * C) {
    const int64_t i = e / C, c = e % C;
    const float src = fmaxf(__fsub_rn(__fmul_rn(scale, __fadd_rn(float(i), 0.5f)), 0.5f), 0.0f);
    const int64_t i0 = min(int64_t(src), L - 1), i1 = i0 + (i0 < L - 1 ? 1 : 0);
    const float l1 = __fsub_rn(src, float(i0)), l0 = __fsub_rn(1.0f, l1);
    y[e] = fmaf(l0, x[i0 * C + c], __fmul_rn(l1, x[i1 * C + c]));
  }
}

}  // namespace kernels

namespace vision_detail {

inline void require(bool ok, const std::string& what) {
  if (!ok) throw Error(what);
}

// Stream-ordered device scratch of n Ts (the resamplers' tap bounds), freed in stream order.
template <class T>
struct Scratch {
  T* p = nullptr;
  explicit Scratch(int64_t n) {
    if (n > 0)
      DEEPSEEK_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&p), size_t(n) * sizeof(T), detail::stream()));
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (p) (void)cudaFreeAsync(p, detail::stream());
  }
};

// One axis' tap table on the device (n_in -> n_out); support and max_taps as the CPU computes them.
struct AaAxis {
  int64_t max_taps = 0;
  Scratch<int64_t> start, taps;
  Buffer w;
  AaAxis(int64_t n_in, int64_t n_out, float scale, float support, float inv)
      : max_taps(int64_t(std::ceil(support)) * 2 + 1), start(n_out), taps(n_out), w(size_t(n_out * max_taps)) {
    DEEPSEEK_LAUNCH(bicubic_aa_axis, kernels::grid_for(n_out), kernels::kThreads, n_in, n_out, scale, support, inv,
                    max_taps, start.p, taps.p, w.data());
  }
  static AaAxis make(int64_t n_in, int64_t n_out) {
    const float scale = float(n_in) / float(n_out);
    return AaAxis(n_in, n_out, scale, scale >= 1.0f ? 2.0f * scale : 2.0f, scale >= 1.0f ? 1.0f / scale : 1.0f);
  }
};

template <int kDimsPerLane>
void launch_vit_attention(const kernels::VitArgs& a, int64_t items, int64_t shared_bytes) {
  auto* kernel = &kernels::vit_attention<kDimsPerLane>;
  if (shared_bytes > 48 * 1024)
    DEEPSEEK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared_bytes)));
  kernel<<<unsigned(items), kernels::VitTile::kThreads, size_t(shared_bytes), detail::stream()>>>(a);
  DEEPSEEK_CUDA_CHECK_LAUNCH("vit_attention");
}

}  // namespace vision_detail

// Patches of x [H, W, C] for output pixels [p0, p1) of a k x k convolution (stride, zero pad): cols
// [(p1 - p0), k k C], column (ky k + kx) C + c.
inline void im2col_hwc(const float* x, int64_t H, int64_t W, int64_t C, int64_t k, int64_t stride, int64_t pad,
                       int64_t Wo, int64_t p0, int64_t p1, float* cols) {
  vision_detail::require(k > 0 && stride > 0 && pad >= 0 && Wo > 0,
                         "im2col_hwc: k, stride and Wo must be positive and pad non-negative (k " + std::to_string(k) +
                             ", stride " + std::to_string(stride) + ", pad " + std::to_string(pad) + ", Wo " +
                             std::to_string(Wo) + ")");
  vision_detail::require(p0 >= 0 && p1 >= p0, "im2col_hwc: the pixel range [p0, p1) = [" + std::to_string(p0) + ", " +
                                                  std::to_string(p1) + ") is not a range");
  const int64_t n = (p1 - p0) * k * k * C;
  if (n > 0)
    DEEPSEEK_LAUNCH(im2col_hwc, kernels::grid_for(n), kernels::kThreads, x, H, W, C, k, stride, pad, Wo, p0, n, cols);
}

// Non-overlapping p x p patches of a CHW image x [C, H, W]: cols [(H/p)(W/p), C p p], column (c p + ky) p + kx.
inline void patchify_chw(const float* x, int64_t C, int64_t H, int64_t W, int64_t p, float* cols) {
  vision_detail::require(p > 0 && H % p == 0 && W % p == 0, "patchify_chw: H (" + std::to_string(H) + ") and W (" +
                                                                std::to_string(W) + ") must be multiples of p (" +
                                                                std::to_string(p) + ")");
  const int64_t wo = W / p, n = (H / p) * wo * C * p * p;
  if (n > 0) DEEPSEEK_LAUNCH(patchify_chw, kernels::grid_for(n), kernels::kThreads, x, C, H, W, p, wo, n, cols);
}

// ViTDet attention over an H x W grid (backend/cpu/vision_ops.hpp's vit_attention): qkv [H W, 3 heads hd],
// window > 0: window x window regions of the grid padded with pad_qkv rows (keys unmasked), 0: the
// whole grid; rel_h [2 rh - 1, hd] and rel_w [2 rw - 1, hd] or both null; out [H W, heads hd].
inline void vit_attention(const float* qkv, int64_t H, int64_t W, int64_t heads, int64_t hd, int64_t window,
                          const float* pad_qkv, const float* rel_h, const float* rel_w, float scale, float* out) {
  using T = kernels::VitTile;
  vision_detail::require(hd > 0 && hd <= T::kMaxHeadDim, "vit_attention: head dim hd = " + std::to_string(hd) +
                                                             "; the CUDA kernel takes 1 .. " +
                                                             std::to_string(T::kMaxHeadDim));
  vision_detail::require(window >= 0, "vit_attention: window must be >= 0 (0: global), got " + std::to_string(window));
  vision_detail::require((rel_h == nullptr) == (rel_w == nullptr),
                         "vit_attention: rel_h and rel_w must both be given or both be null");
  if (H <= 0 || W <= 0 || heads <= 0) return;
  kernels::VitArgs a;
  a.qkv = qkv;
  a.pad_qkv = pad_qkv;
  a.rel_h = rel_h;
  a.rel_w = rel_w;
  a.out = out;
  a.H = H;
  a.W = W;
  a.heads = heads;
  a.hd = hd;
  a.rh = window > 0 ? window : H;
  a.rw = window > 0 ? window : W;
  a.nrx = (W + a.rw - 1) / a.rw;
  a.n = a.rh * a.rw;
  a.qblocks = (a.n + T::kQueries - 1) / T::kQueries;
  a.scale = scale;
  vision_detail::require(pad_qkv != nullptr || (H % a.rh == 0 && W % a.rw == 0),
                         "vit_attention: a " + std::to_string(H) + " x " + std::to_string(W) + " grid in " +
                             std::to_string(window) + " x " + std::to_string(window) +
                             " windows is padded: pad_qkv is needed");
  const int64_t items = ((H + a.rh - 1) / a.rh) * a.nrx * heads * a.qblocks;
  vision_detail::require(items < (int64_t(1) << 31),
                         "vit_attention: too many (region, head, query block) items for one grid");
  const int64_t shared_bytes = T::shared_floats(hd, a.rh, a.rw, rel_h != nullptr) * int64_t(sizeof(float));
  int optin = 0;
  DEEPSEEK_CUDA_CHECK(
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, Context::current().device()));
  vision_detail::require(shared_bytes <= optin,
                         "vit_attention: regions of " + std::to_string(a.rh) + " x " + std::to_string(a.rw) +
                             " tokens at hd " + std::to_string(hd) + " need " + std::to_string(shared_bytes) +
                             " bytes of shared memory per block; the device has " + std::to_string(optin));
  if (hd <= 32)
    vision_detail::launch_vit_attention<1>(a, items, shared_bytes);
  else if (hd <= 64)
    vision_detail::launch_vit_attention<2>(a, items, shared_bytes);
  else if (hd <= 128)
    vision_detail::launch_vit_attention<4>(a, items, shared_bytes);
  else
    vision_detail::launch_vit_attention<8>(a, items, shared_bytes);
}

// x [h_in, w_in, C] -> y [h_out, w_out, C]: torch's bicubic antialias, width first then height.
inline void resize_bicubic_aa(const float* x, int64_t h_in, int64_t w_in, int64_t C, int64_t h_out, int64_t w_out,
                              float* y) {
  vision_detail::require(h_in > 0 && w_in > 0 && C > 0 && h_out > 0 && w_out > 0,
                         "resize_bicubic_aa: sizes must be positive (" + std::to_string(h_in) + " x " +
                             std::to_string(w_in) + " x " + std::to_string(C) + " -> " + std::to_string(h_out) + " x " +
                             std::to_string(w_out) + ")");
  const auto ax = vision_detail::AaAxis::make(w_in, w_out), ay = vision_detail::AaAxis::make(h_in, h_out);
  Buffer tmp(size_t(h_in * w_out * C));
  DEEPSEEK_LAUNCH(resample_taps, kernels::grid_for(h_in * w_out * C), kernels::kThreads, x, h_in, w_in * C, w_out, C,
                  ax.start.p, ax.taps.p, ax.w.data(), ax.max_taps, tmp.data());
  DEEPSEEK_LAUNCH(resample_taps, kernels::grid_for(h_out * w_out * C), kernels::kThreads, tmp.data(), int64_t(1),
                  int64_t(0), h_out, w_out * C, ay.start.p, ay.taps.p, ay.w.data(), ay.max_taps, y);
}

// x [L, C] -> y [M, C]: linear along L, align_corners False (source (i + 0.5) L / M - 0.5, clamped).
inline void resize_linear(const float* x, int64_t L, int64_t C, int64_t M, float* y) {
  vision_detail::require(L > 0 && C >= 0 && M >= 0, "resize_linear: L must be positive and C, M non-negative (L " +
                                                        std::to_string(L) + ", C " + std::to_string(C) + ", M " +
                                                        std::to_string(M) + ")");
  if (M * C > 0)
    DEEPSEEK_LAUNCH(resize_linear, kernels::grid_for(M * C), kernels::kThreads, x, L, C, M, float(L) / float(M), y);
}

}  // namespace deepseek::backend::cuda
