// Linear layers over weights in their checkpoint dtype: y[t, r] = sum_c W[r, c] * x[t, c].
//
//   W: BlockQuantMatrix [rows, cols] in f32, bf16 or f8_e4m3 (+ f32 block scales)
//   x: [n, cols] f32 (row stride ldx), y: [n, rows] f32 (row stride ldy)
//
// Versions, all tested against linear_reference (plain loops over BlockQuantMatrix::at):
//   small  n <= kSmallMaxTokens (decode, MTP verify, the few tokens one MoE expert sees in a
//          prefill): a register-blocked kernel reads 2-4 weight rows at a time, widens them in
//          registers (bf16: shift; e4m3: through F16C) and multiplies them into up to 6 token
//          vectors at once, so each weight byte is read once per 6 tokens. FP8 block scales are
//          not applied per block in the loop: per 128-row block the input is prescaled,
//          x'[c] = x[c] * scale_inv[row_block, c / 128] (cols multiplies per 128 rows), and the
//          inner loop is the same dot product as for bf16. Threads split the rows.
//   tiled  larger n (prefill): a tile of kTileRows rows is dequantized to f32 (exact) and Eigen's
//          GEMM multiplies it; f32 weights go to Eigen directly. Threads split the tiles.
//   avx512 on CPUs with AVX-512 (linear_avx512.hpp), before the two above: FP8 weights (any n),
//          bf16 weights with f32 activations (any n), bf16 weights with bf16 activations where
//          the CPU has AVX512-BF16.
// W.activations == ActivationDType::bf16 rounds the input to bf16 first (for FP8 weights the
// input times the block scale, the form in which every FP8 kernel multiplies it; FP8 then stays
// on the small path for any n); the AVX2 kernels multiply the rounded values in f32.
// Row ranges [r0, r1) let MLA address one head's slice of kv_b_proj without copying.
#pragma once

#include "deepseek/backend/cpu/linear_avx512.hpp"
#include "deepseek/backend/cpu/simd.hpp"
#include "deepseek/core/block_quant.hpp"
#include "deepseek/core/parallel.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace deepseek::backend::cpu {

inline constexpr int64_t kSmallMaxTokens = 32;
inline constexpr int64_t kTileRows = 64;

// Plain reference: no vectors, no threads, double accumulation.
inline void linear_reference(const BlockQuantMatrix& W, const float* x, int64_t n, float* y, int64_t ldx = -1,
                             int64_t ldy = -1) {
  const int64_t rows = W.rows(), cols = W.cols();
  if (ldx < 0) ldx = cols;
  if (ldy < 0) ldy = rows;
  const bool round = W.activations == ActivationDType::bf16, fp8 = W.dtype() == DType::f8_e4m3;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double acc = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const float xv = x[t * ldx + c];
        if (round && fp8)  // e4m3(W) * bf16(x * s)
          acc += double(f8_e4m3_to_f32(W.weight.data_as<const uint8_t>()[r * cols + c])) * double(round_to_bf16(xv * W.scale(r, c)));
        else
          acc += double(W.at(r, c)) * double(round ? round_to_bf16(xv) : xv);
      }
      y[t * ldy + r] = float(acc);
    }
}

// Dequantizes W[r, c0:c1) to f32 (exact).
inline void decode_row(const BlockQuantMatrix& W, int64_t r, int64_t c0, int64_t c1, float* out) {
  const int64_t cols = W.cols();
  switch (W.dtype()) {
    case DType::f32: std::copy(W.weight.data_as<const float>() + r * cols + c0, W.weight.data_as<const float>() + r * cols + c1, out); break;
    case DType::bf16: {
      const uint16_t* p = W.weight.data_as<const uint16_t>() + r * cols;
      int64_t c = c0;
#if DEEPSEEK_CPU_AVX2
      for (; c + 8 <= c1; c += 8) _mm256_storeu_ps(out + (c - c0), load_bf16x8(p + c));
#endif
      for (; c < c1; ++c) out[c - c0] = bf16_to_f32(p[c]);
      break;
    }
    case DType::f8_e4m3: {
      const uint8_t* p = W.weight.data_as<const uint8_t>() + r * cols;
      for (int64_t cb = c0; cb < c1;) {
        const int64_t ce = std::min(c1, (cb / W.block_cols + 1) * W.block_cols);
        const float s = W.scale(r, cb);
        int64_t c = cb;
#if DEEPSEEK_CPU_AVX2
        const __m256 vs = _mm256_set1_ps(s * 256.0f);
        for (; c + 8 <= ce; c += 8) _mm256_storeu_ps(out + (c - c0), _mm256_mul_ps(load_e4m3x8_div256(p + c), vs));
#endif
        for (; c < ce; ++c) out[c - c0] = f8_e4m3_to_f32(p[c]) * s;
        cb = ce;
      }
      break;
    }
    default: break;
  }
}

namespace detail {

inline std::vector<float>& tile_buffer() {
  static thread_local std::vector<float> buf;
  return buf;
}
inline std::vector<float>& prescale_buffer() {
  static thread_local std::vector<float> buf;
  return buf;
}
inline std::vector<float>& rounded_input_buffer() {
  static thread_local std::vector<float> buf;
  return buf;
}

// Loads 8 weights of row `p` at column c as f32 (for e4m3: the value / 256; the prescaled input
// carries the 256).
template <DType D>
struct RowLoad;
template <>
struct RowLoad<DType::f32> {
  using T = float;
  static float scalar(const T* p, int64_t c) { return p[c]; }
#if DEEPSEEK_CPU_AVX2
  static __m256 vec(const T* p, int64_t c) { return _mm256_loadu_ps(p + c); }
#endif
};
template <>
struct RowLoad<DType::bf16> {
  using T = uint16_t;
  static float scalar(const T* p, int64_t c) { return bf16_to_f32(p[c]); }
#if DEEPSEEK_CPU_AVX2
  static __m256 vec(const T* p, int64_t c) { return load_bf16x8(p + c); }
#endif
};
template <>
struct RowLoad<DType::f8_e4m3> {
  using T = uint8_t;
  static float scalar(const T* p, int64_t c) { return f8_e4m3_to_f32(p[c]) * (1.0f / 256.0f); }
#if DEEPSEEK_CPU_AVX2
  static __m256 vec(const T* p, int64_t c) { return load_e4m3x8_div256(p + c); }
#endif
};

// bf16 weights against 2-4 tokens take 16 columns per step and widen them in two instructions
// without a shuffle (as linear_avx512.hpp does): in a 32-bit lane holding the pair (w[2j],
// w[2j+1]), lane << 16 is w[2j] as f32 and lane & 0xFFFF0000 is w[2j+1], so the input is packed
// per 16 columns as the 8 even ones, then the 8 odd (one core, 1408x2048 from L3, 4 tokens: 12.4
// -> 17.7 GB/s against vpmovzxwd + shift per 8 weights). Decode (one token) keeps the 8-column
// kernel over 4 rows: the even / odd one over 2 rows read 15% slower from L3 and decoded the
// V2-Lite-shaped model 20% slower.
template <DType D, int N>
inline constexpr bool kEvenOdd = D == DType::bf16 && N >= 2 && N <= 4;

// out[i][t] = dot(row_i, x_t) for R rows and N tokens. The vector part reads the tokens from
// `xp`, packed as [cols / 8][N][8] (bf16 even / odd: [cols / 16][N][16]) so one step loads N
// adjacent vectors (rows of x lie 4-8 KB apart, and N + R streams that far apart would thrash
// L1's sets); the scalar tail reads x_t = x + t * ldx.
template <DType D, int R, int N>
inline void dot_block(const typename RowLoad<D>::T* const* rows, const float* xp, const float* x, int64_t ldx, int64_t cols,
                      float (*out)[N]) {
  using L = RowLoad<D>;
  int64_t c = 0;
#if DEEPSEEK_CPU_AVX2
  // With one or two tokens each product of a 2-FMA step goes to its own accumulator (acc, acc2):
  // R x N chains of two dependent FMAs would leave the FMA units waiting on their latency.
  constexpr bool split = N <= 2 && (D != DType::f32);
  __m256 acc[R][N], acc2[R][N];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < N; ++t) acc[i][t] = acc2[i][t] = _mm256_setzero_ps();
  // Decode (N = 1): the next block's R contiguous rows are prefetched, spread over this block's
  // steps (see linear_avx512.hpp's dot_block: R rows side by side defeat the hardware prefetcher).
  // Long rows (R rows over kDecodeNextBlock bytes) prefetch kDecodePrefetch bytes ahead of each
  // row stream instead, running into row i + R at its end.
  constexpr int64_t esize = int64_t(sizeof(typename L::T));
  const int64_t row_bytes = cols * esize;
  const bool ahead = N == 1 && R * row_bytes > kDecodeNextBlock;
  const char* next = reinterpret_cast<const char*>(rows[0] + R * cols);
  const int64_t lines = N == 1 && !ahead ? (R * row_bytes + 63) / 64 : 0;
  const int64_t per = std::max<int64_t>(1, (lines * 8 + cols - 1) / std::max<int64_t>(cols, 1));  // per 8 columns
  int64_t line = 0;
  auto prefetch = [&](int64_t k) {
    if (ahead) {
      if ((c * esize) % 64 != 0) return;  // one line per row every 64 bytes
      const int64_t off = c * esize + kDecodePrefetch;
      for (int i = 0; i < R; ++i) {
        const char* p = reinterpret_cast<const char*>(rows[i]);
        _mm_prefetch(off < row_bytes ? p + off : p + R * row_bytes + (off - row_bytes), _MM_HINT_T0);
      }
      return;
    }
    for (int64_t j = 0; j < k && line < lines; ++j, ++line) _mm_prefetch(next + line * 64, _MM_HINT_T0);
  };
  if constexpr (kEvenOdd<D, N>) {
    const __m256i odd = _mm256_set1_epi32(int(0xFFFF0000u));
    for (; c + 16 <= cols; c += 16, xp += 16 * N) {
      if constexpr (N == 1) prefetch(2 * per);
      __m256 ev[R], od[R];
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) {
        __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[i] + c));
        asm("" : "+x"(w));  // one load, not one per use (see linear_avx512.hpp's in_register)
        ev[i] = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
        od[i] = _mm256_castsi256_ps(_mm256_and_si256(w, odd));
      }
#pragma GCC unroll 4
      for (int t = 0; t < N; ++t) {
        __m256 x0 = _mm256_loadu_ps(xp + 16 * t), x1 = _mm256_loadu_ps(xp + 16 * t + 8);
        if constexpr (R > 1) asm("" : "+x"(x0), "+x"(x1));
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) {
          if constexpr (split) {
            acc[i][t] = _mm256_fmadd_ps(ev[i], x0, acc[i][t]);
            acc2[i][t] = _mm256_fmadd_ps(od[i], x1, acc2[i][t]);
          } else {
            acc[i][t] = _mm256_fmadd_ps(od[i], x1, _mm256_fmadd_ps(ev[i], x0, acc[i][t]));
          }
        }
      }
    }
  } else {
    if constexpr (D == DType::f8_e4m3 && N == 1) {
      // Decode of FP8 weights is bound by the widening, not by memory: widen 16 bytes per step.
      for (; c + 16 <= cols; c += 16, xp += 16) {
        prefetch(2 * per);
        const __m256 x0 = _mm256_loadu_ps(xp), x1 = _mm256_loadu_ps(xp + 8);
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) {
          __m256 lo, hi;
          load_e4m3x16_div256(rows[i] + c, lo, hi);
          acc[i][0] = _mm256_fmadd_ps(lo, x0, acc[i][0]);
          acc2[i][0] = _mm256_fmadd_ps(hi, x1, acc2[i][0]);
        }
      }
    }
    // The accumulators must live in registers: the loops over R and N are unrolled completely.
    for (; c + 8 <= cols; c += 8, xp += 8 * N) {
      if constexpr (N == 1) prefetch(per);
      __m256 w[R];
#pragma GCC unroll 4
      for (int i = 0; i < R; ++i) w[i] = L::vec(rows[i], c);
#pragma GCC unroll 8
      for (int t = 0; t < N; ++t) {
        const __m256 xv = _mm256_loadu_ps(xp + 8 * t);
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) acc[i][t] = _mm256_fmadd_ps(w[i], xv, acc[i][t]);
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < N; ++t) out[i][t] = hsum(split ? _mm256_add_ps(acc[i][t], acc2[i][t]) : acc[i][t]);
#else
  (void)xp;
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < N; ++t) out[i][t] = 0.0f;
#endif
  for (; c < cols; ++c)
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < N; ++t) out[i][t] += L::scalar(rows[i], c) * x[t * ldx + c];
}

// y[t, i - r0] for rows [ra, rb) of one FP8 row block (or any rows of f32 / bf16 weights), N tokens.
template <DType D, int N>
inline void small_rows(const BlockQuantMatrix& W, int64_t ra, int64_t rb, int64_t r0, const float* x, int64_t ldx, float* y,
                       int64_t ldy) {
  using T = typename RowLoad<D>::T;
  constexpr bool eo = kEvenOdd<D, N>;
  constexpr int64_t step = eo ? 16 : 8;
  const int64_t cols = W.cols(), vec_cols = cols / step * step;
  static thread_local std::vector<float> packed;
  packed.resize(size_t(vec_cols * N));
  for (int64_t c = 0; c < vec_cols; c += step)
    for (int t = 0; t < N; ++t) {
      float* o = packed.data() + c * N + step * t;
      const float* xt = x + t * ldx + c;
      if constexpr (eo)
        for (int j = 0; j < 8; ++j) o[j] = xt[2 * j], o[8 + j] = xt[2 * j + 1];
      else
        std::copy(xt, xt + 8, o);
    }
  const T* base = W.weight.data_as<const T>();
  // Rows per step: with few tokens, more rows keep enough independent FMA chains in flight to
  // cover the FMA latency (R x N accumulators, two per row and token for N <= 2); with more
  // tokens, 2 rows x 6 tokens fill the 16 vector registers. bf16 even / odd: two widened vectors
  // per row, so 2 rows.
  constexpr int R = eo ? 2 : N <= 2 ? 4 : 2;
  int64_t r = ra;
  for (; r + R <= rb; r += R) {
    const T* rows[R];
    for (int i = 0; i < R; ++i) rows[i] = base + (r + i) * cols;
    float out[R][N];
    dot_block<D, R, N>(rows, packed.data(), x, ldx, cols, out);
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < N; ++t) y[t * ldy + r + i - r0] = out[i][t];
  }
  for (; r < rb; ++r) {
    const T* rows[1] = {base + r * cols};
    float out[1][N];
    dot_block<D, 1, N>(rows, packed.data(), x, ldx, cols, out);
    for (int t = 0; t < N; ++t) y[t * ldy + r - r0] = out[0][t];
  }
}

template <DType D>
inline void small_rows_n(const BlockQuantMatrix& W, int64_t ra, int64_t rb, int64_t r0, const float* x, int64_t ldx, int64_t n,
                         float* y, int64_t ldy) {
  for (int64_t t0 = 0; t0 < n; t0 += 6) {
    const float* xs = x + t0 * ldx;
    float* ys = y + t0 * ldy;
    switch (std::min<int64_t>(6, n - t0)) {
      case 1: small_rows<D, 1>(W, ra, rb, r0, xs, ldx, ys, ldy); break;
      case 2: small_rows<D, 2>(W, ra, rb, r0, xs, ldx, ys, ldy); break;
      case 3: small_rows<D, 3>(W, ra, rb, r0, xs, ldx, ys, ldy); break;
      case 4: small_rows<D, 4>(W, ra, rb, r0, xs, ldx, ys, ldy); break;
      case 5: small_rows<D, 5>(W, ra, rb, r0, xs, ldx, ys, ldy); break;
      default: small_rows<D, 6>(W, ra, rb, r0, xs, ldx, ys, ldy); break;
    }
  }
}

// The small-n path over rows [a, b) (relative to r0). round_bf16: FP8's prescaled input is
// rounded to bf16 (bf16 activations).
inline void small_linear(const BlockQuantMatrix& W, int64_t r0, int64_t a, int64_t b, const float* x, int64_t n, float* y,
                         int64_t ldx, int64_t ldy, bool round_bf16 = false) {
  switch (W.dtype()) {
    case DType::f32: small_rows_n<DType::f32>(W, r0 + a, r0 + b, r0, x, ldx, n, y, ldy); break;
    case DType::bf16: small_rows_n<DType::bf16>(W, r0 + a, r0 + b, r0, x, ldx, n, y, ldy); break;
    case DType::f8_e4m3: {
      const int64_t cols = W.cols(), sc = W.scale_inv.dim(1);
      auto& xs = prescale_buffer();
      xs.resize(size_t(n * cols));
      for (int64_t ra = r0 + a; ra < r0 + b;) {
        const int64_t blk = ra / W.block_rows;
        const int64_t rb = std::min(r0 + b, (blk + 1) * W.block_rows);
        const float* srow = W.scale_inv.data_as<const float>() + blk * sc;
        for (int64_t t = 0; t < n; ++t)
          for (int64_t cb = 0, k = 0; cb < cols; cb += W.block_cols, ++k) {
            const float f = srow[k] * 256.0f;
            const int64_t ce = std::min(cols, cb + W.block_cols);
            if (round_bf16)  // bf16(x s) 256 == bf16(x s 256): scaling by 256 is exact
              for (int64_t c = cb; c < ce; ++c) xs[size_t(t * cols + c)] = round_to_bf16(x[t * ldx + c] * f);
            else
              for (int64_t c = cb; c < ce; ++c) xs[size_t(t * cols + c)] = x[t * ldx + c] * f;
          }
        small_rows_n<DType::f8_e4m3>(W, ra, rb, r0, xs.data(), cols, n, y, ldy);
        ra = rb;
      }
      break;
    }
    default: break;
  }
}

}  // namespace detail

// y[t, r - r0] = W[r, :] . x[t, :] for r in [r0, r1).
inline void linear_rows(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n, float* y,
                        int64_t ldx = -1, int64_t ldy = -1) {
  const int64_t cols = W.cols(), rows = r1 - r0;
  if (ldx < 0) ldx = cols;
  if (ldy < 0) ldy = rows;
  if (rows <= 0 || n <= 0) return;
  const bool bf16_act = W.activations == ActivationDType::bf16, fp8 = W.dtype() == DType::f8_e4m3;
#if DEEPSEEK_CPU_AVX512_KERNELS
  if (W.dtype() == DType::bf16 && bf16_act && has_avx512bf16()) {
    linear_rows_bf16_avx512(W, r0, r1, x, n, y, ldx, ldy);
    return;
  }
  // bf16 weights, exact f32 activations, any n, also above Eigen's range (on the V2-Lite shapes:
  // MoE prefill 1.91 -> 1.36 s, the dense 10944-wide MLP at 128 tokens 0.130 -> 0.114 s). Decode
  // too, since it keeps each loaded vector in a register and gives each of the two FMAs per row
  // its own accumulator (linear_avx512.hpp's dot_step): it streams as fast as the bf16-activation
  // kernel (bench_linear BM_Linear/1/* vs /3/*).
  if (W.dtype() == DType::bf16 && !bf16_act && has_avx512()) {
    linear_rows_bf16_avx512(W, r0, r1, x, n, y, ldx, ldy, false);
    return;
  }
  // FP8, any n: several token groups share one widening into a bf16 tile (with f32 activations
  // too; 24-layer V2-Lite-shaped prefill 28.7 -> 30.3 tok/s against Eigen on dequantized tiles).
  if (fp8 && W.block_cols % 32 == 0 && has_avx512() && (!bf16_act || has_avx512bf16())) {
    linear_rows_e4m3_avx512(W, r0, r1, x, n, y, ldx, ldy, bf16_act);
    return;
  }
#endif
  if (bf16_act && !fp8) {  // FP8 rounds after its scale, in small_linear
    auto& xr = detail::rounded_input_buffer();
    xr.resize(size_t(n * cols));
    for (int64_t t = 0; t < n; ++t)
      for (int64_t c = 0; c < cols; ++c) xr[size_t(t * cols + c)] = round_to_bf16(x[t * ldx + c]);
    x = xr.data();
    ldx = cols;
  }
  if (n <= kSmallMaxTokens || (fp8 && bf16_act)) {
    // Chunks of 32 rows: FP8's 128-row blocks split into 4, enough chunks to balance threads.
    const int64_t chunks = (rows + 31) / 32;
    parallel_for(chunks, [&](int64_t b, int64_t e) {
      detail::small_linear(W, r0, b * 32, std::min(rows, e * 32), x, n, y, ldx, ldy, bf16_act);
    }, 1, detail::gemv_chunks(W, r0, r1, n));
    return;
  }
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ConstMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
  using Map = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;
  const ConstMap X(x, n, cols, Eigen::OuterStride<>(ldx));
  const int64_t tiles = (rows + kTileRows - 1) / kTileRows;
  parallel_for(tiles, [&](int64_t b, int64_t e) {
    for (int64_t tile = b; tile < e; ++tile) {
      const int64_t i0 = tile * kTileRows, i1 = std::min(rows, i0 + kTileRows);
      Map Y(y + i0, n, i1 - i0, Eigen::OuterStride<>(ldy));
      if (W.dtype() == DType::f32) {
        const ConstMap T(W.weight.data_as<const float>() + (r0 + i0) * cols, i1 - i0, cols, Eigen::OuterStride<>(cols));
        Y.noalias() = X * T.transpose();
      } else {
        auto& buf = detail::tile_buffer();
        buf.resize(size_t((i1 - i0) * cols));
        for (int64_t i = i0; i < i1; ++i) decode_row(W, r0 + i, 0, cols, buf.data() + (i - i0) * cols);
        const ConstMap T(buf.data(), i1 - i0, cols, Eigen::OuterStride<>(cols));
        Y.noalias() = X * T.transpose();
      }
    }
  });
}

inline void linear(const BlockQuantMatrix& W, const float* x, int64_t n, float* y, int64_t ldx = -1, int64_t ldy = -1) {
  linear_rows(W, 0, W.rows(), x, n, y, ldx, ldy);
}

// y[t, c] = sum_{r in [r0, r1)} x[t, r - r0] * W[r, c]: the transposed product MLA's absorbed
// path needs (q_nope folded through W_UK). x: [n, r1 - r0], y: [n, cols].
inline void linear_transposed_rows(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n,
                                   float* y, int64_t ldx = -1, int64_t ldy = -1) {
  const int64_t cols = W.cols(), k = r1 - r0;
  if (ldx < 0) ldx = k;
  if (ldy < 0) ldy = cols;
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  auto& buf = detail::tile_buffer();
  buf.resize(size_t(k * cols));
  for (int64_t r = r0; r < r1; ++r) decode_row(W, r, 0, cols, buf.data() + (r - r0) * cols);
  Eigen::Map<const RowMat, 0, Eigen::OuterStride<>> X(x, n, k, Eigen::OuterStride<>(ldx));
  Eigen::Map<const RowMat> T(buf.data(), k, cols);
  Eigen::Map<RowMat, 0, Eigen::OuterStride<>> Y(y, n, cols, Eigen::OuterStride<>(ldy));
  Y.noalias() = X * T;
}

}  // namespace deepseek::backend::cpu
