// The attention kernels of MLA (backend/cpu/mla_attention.hpp) and the DSA indexer score kernel
// (indexer_scores.hpp) against their plain references: shared causal lists and per-query lists, f32
// and bf16 rows, lists long enough for many row blocks and for the split-K merge, partial blocks.
#include "deepseek/backend/cpu/gemm_avx512.hpp"
#include "deepseek/backend/cpu/indexer_scores.hpp"
#include "deepseek/backend/cpu/mla_attention.hpp"
#include "deepseek/core/parallel.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

using namespace deepseek;
using backend::cpu::LatentRows;

namespace {

struct Case {
  int64_t n, H, lora, rope, T;
  bool shared, bf16;
  int threads;
  bool native = false;  // bf16 products (LatentRows::bf16_products; bf16 rows on AVX512-BF16)
};

float max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  float worst = 0, scale = 0;
  for (float v : b) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst / scale;
}

void run(const Case& c) {
  INFO("n " << c.n << " H " << c.H << " lora " << c.lora << " rope " << c.rope << " T " << c.T << " shared " << c.shared
            << " bf16 " << c.bf16 << " threads " << c.threads);
  const int before = num_threads();
  set_num_threads(c.threads);
  std::mt19937 rng(uint32_t(c.n * 7 + c.T));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t Wq = c.lora + c.rope, width = Wq + 3;  // rows wider than read (an index key after them)
  std::vector<float> rows_f32(size_t(c.T * width));
  std::vector<uint16_t> rows_bf16(size_t(c.T * width));
  for (size_t i = 0; i < rows_f32.size(); ++i) {
    rows_f32[i] = nd(rng);
    rows_bf16[i] = f32_to_bf16(rows_f32[i]);
  }
  std::vector<float> qa(size_t(c.n * c.H * Wq));
  for (auto& v : qa) v = 0.5f * nd(rng);  // scores of a few units: softmax far from uniform
  std::vector<const void*> ptr;
  std::vector<int32_t> len(size_t(c.n));
  auto row = [&](int64_t t) -> const void* {
    return c.bf16 ? static_cast<const void*>(rows_bf16.data() + t * width) : static_cast<const void*>(rows_f32.data() + t * width);
  };
  int64_t stride = 0;
  if (c.shared) {  // causal: query s sees rows [0, T - n + s]
    for (int64_t t = 0; t < c.T; ++t) ptr.push_back(row(t));
    for (int64_t s = 0; s < c.n; ++s) len[size_t(s)] = int32_t(c.T - c.n + s + 1);
  } else {  // each query its own scattered list, of varying length
    stride = c.T;
    for (int64_t s = 0; s < c.n; ++s) {
      len[size_t(s)] = int32_t(c.T - 5 * s);
      for (int64_t j = 0; j < c.T; ++j) ptr.push_back(row((j * 7 + s) % c.T));
    }
  }
  const LatentRows r{ptr.data(), stride, len.data(), c.bf16 ? backend::cpu::RowFormat::bf16 : backend::cpu::RowFormat::f32, 0,
                     c.native};
  std::vector<float> got(size_t(c.n * c.H * c.lora)), want(got.size());
  const float scale = 1.0f / std::sqrt(float(Wq));
  backend::cpu::latent_attention(qa.data(), c.n, c.H, c.lora, c.rope, scale, r, got.data());
  if (!c.native) {
    backend::cpu::latent_attention_reference(qa.data(), c.n, c.H, c.lora, c.rope, scale, r, want.data());
    CHECK(max_rel(got, want) < 2e-5f);
  } else {
    // The reference with q~ rounded to bf16 (its products then equal the kernel's exactly); what
    // is left is the kernel's rounding of each softmax weight to bf16 (relative 2^-9) before P V.
    std::vector<float> q16(qa);
    for (auto& v : q16) v = bf16_to_f32(f32_to_bf16(v));
    backend::cpu::latent_attention_reference(q16.data(), c.n, c.H, c.lora, c.rope, scale, r, want.data());
    CHECK(max_rel(got, want) < 4e-3f);
    std::vector<float> exact(got.size());  // and it did round: the f32 kernel lands elsewhere
    backend::cpu::latent_attention_reference(qa.data(), c.n, c.H, c.lora, c.rope, scale, r, exact.data());
    CHECK(max_rel(got, exact) > 1e-6f);
  }
  set_num_threads(before);
}

}  // namespace

TEST_CASE("latent attention: one pass for all heads equals the two-pass reference", "[nn][mla][attention]") {
  // both block kernels: AVX-512 tiles (where the CPU has them) and Eigen
  for (bool avx512 : {true, false}) {
    backend::cpu::set_avx512(avx512);
    if (avx512 && !backend::cpu::has_avx512()) WARN("this CPU has no AVX-512: only the Eigen path is checked");
  for (int threads : {1, 2, 3}) {
    for (bool bf16 : {false, true}) {
      run({1, 16, 64, 16, 1000, true, bf16, threads});   // decode: split-K over 8 blocks, a partial last block
      run({1, 4, 32, 8, 5, true, bf16, threads});        // fewer rows than one block
      run({7, 8, 64, 16, 300, true, bf16, threads});     // a chunk: causal lengths inside blocks
      run({40, 4, 32, 8, 200, true, bf16, threads});     // several query groups (64 queries a group at H = 4)
      run({3, 16, 64, 16, 400, false, bf16, threads});   // DSA: per-query lists, split-K
      run({9, 8, 32, 8, 150, false, bf16, threads});     // more queries than threads: no split
      run({1, 128, 512, 64, 700, true, bf16, threads});  // V3 shapes: 128 heads x 576
    }
  }
  }
  backend::cpu::set_avx512(true);
}

TEST_CASE("latent attention: bf16 rows multiplied natively (AVX512-BF16)", "[nn][mla][attention][bf16]") {
  if (!backend::cpu::has_avx512bf16()) {
    WARN("SKIPPED: this CPU has no AVX512-BF16, so bf16_products widens rows to f32 (checked above)");
    return;
  }
  for (int threads : {1, 2}) {
    run({1, 16, 64, 16, 1000, true, true, threads, true});   // decode, split-K, partial last block (odd rows)
    run({1, 4, 32, 8, 5, true, true, threads, true});        // fewer rows than one block, odd
    run({7, 8, 64, 16, 301, true, true, threads, true});     // a chunk, causal inside blocks
    run({3, 16, 64, 16, 400, false, true, threads, true});   // DSA lists
    run({1, 128, 512, 64, 700, true, true, threads, true});  // V3 shapes
    run({2, 20, 64, 16, 129, true, true, threads, true});    // M = 40: masked heads
  }
}

TEST_CASE("gemm_bf16_avx512 equals the plain loop: strided A, edge tiles, accumulate", "[nn][attention][bf16]") {
#if DEEPSEEK_CPU_AVX512_KERNELS
  if (!backend::cpu::has_avx512bf16()) {
    WARN("SKIPPED: this CPU has no AVX512-BF16");
    return;
  }
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  struct Dims {
    int64_t M, N, K2;
  };
  for (Dims d : {Dims{1, 1, 1}, Dims{6, 32, 8}, Dims{7, 17, 130}, Dims{128, 128, 288}, Dims{13, 48, 64}, Dims{128, 512, 64}, Dims{25, 16, 20}, Dims{13, 9, 130}})
    for (bool transposed : {false, true})
      for (bool accumulate : {false, true}) {
        std::vector<uint32_t> A(size_t(d.M * d.K2));
        std::vector<uint16_t> B(size_t(d.K2 * d.N * 2));
        for (auto& a : A) a = uint32_t(f32_to_bf16(nd(rng))) | (uint32_t(f32_to_bf16(nd(rng))) << 16);
        for (auto& b : B) b = f32_to_bf16(nd(rng));
        std::vector<float> C(size_t(d.M * d.N));
        for (auto& c : C) c = nd(rng);
        const std::vector<float> before(C);
        std::vector<float> R(before);
        const int64_t rs = transposed ? 1 : d.K2, cs = transposed ? d.M : 1;
        backend::cpu::gemm_bf16_avx512(A.data(), rs, cs, B.data(), d.N, C.data(), d.N, d.M, d.N, d.K2, accumulate);
        backend::cpu::gemm_bf16_reference(A.data(), rs, cs, B.data(), d.N, R.data(), d.N, d.M, d.N, d.K2, accumulate);
        INFO("M " << d.M << " N " << d.N << " K2 " << d.K2 << " transposed " << transposed << " accumulate " << accumulate);
        for (size_t i = 0; i < C.size(); ++i) REQUIRE(C[i] == Approx(R[i]).margin(1e-4));
      }
#else
  WARN("SKIPPED: no AVX-512 kernels in this build");
#endif
}

TEST_CASE("gemm_avx512 equals the plain loop: strided A, edge tiles, accumulate", "[nn][attention]") {
  if (!backend::cpu::has_avx512()) {
    WARN("SKIPPED: this CPU has no AVX-512");
    return;
  }
#if DEEPSEEK_CPU_AVX512_KERNELS
  std::mt19937 rng(13);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  struct Dims {
    int64_t M, N, K;
  };
  for (const Dims d : {Dims{1, 1, 1}, Dims{6, 32, 256}, Dims{7, 33, 257}, Dims{128, 128, 576}, Dims{13, 15, 600}, Dims{5, 512, 100}, Dims{25, 16, 40}})
    for (bool transposed : {false, true})
      for (bool accumulate : {false, true}) {
        std::vector<float> A(size_t(d.M * d.K)), B(size_t(d.K * d.N)), C(size_t(d.M * d.N)), R;
        for (auto& e : A) e = nd(rng);
        for (auto& e : B) e = nd(rng);
        for (auto& e : C) e = nd(rng);
        R = C;
        const int64_t rs = transposed ? 1 : d.K, cs = transposed ? d.M : 1;  // A(i, k) at i rs + k cs
        backend::cpu::gemm_avx512(A.data(), rs, cs, B.data(), d.N, C.data(), d.N, d.M, d.N, d.K, accumulate);
        backend::cpu::gemm_reference(A.data(), rs, cs, B.data(), d.N, R.data(), d.N, d.M, d.N, d.K, accumulate);
        INFO("M " << d.M << " N " << d.N << " K " << d.K << " transposed " << transposed << " accumulate " << accumulate);
        for (size_t i = 0; i < C.size(); ++i) REQUIRE(C[i] == Approx(R[i]).margin(1e-4));
      }
#endif
}

TEST_CASE("indexer scores: one GEMM per key block equals the per-head loop", "[nn][dsa][attention]") {
  using backend::cpu::KeyFormat;
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (KeyFormat fmt : {KeyFormat::f32, KeyFormat::bf16, KeyFormat::fp8})
    for (int64_t D : {32, 160})  // 160: two FP8 scale blocks, the second partial
      for (int64_t n : {1, 127, 128, 300}) {
        const int64_t H = 8, fp8_bytes = D + 4 * ((D + 127) / 128);
        std::vector<float> q(size_t(H * D)), w(static_cast<size_t>(H)), kf(size_t(n * D));
        std::vector<uint16_t> kb(kf.size());
        std::vector<uint8_t> k8(size_t(n * fp8_bytes));
        for (auto& e : q) e = nd(rng);
        for (auto& e : w) e = nd(rng);
        for (size_t i = 0; i < kf.size(); ++i) kb[i] = f32_to_bf16(kf[i] = nd(rng));
        // FP8 keys: e4m3 codes of k / s, then the f32 scales; kf becomes their exact value
        // (f8_e4m3_to_f32, checked against PyTorch in tests/core) for the reference.
        for (int64_t t = 0; t < n; ++t)
          for (int64_t b0 = 0; b0 < D; b0 += 128) {
            const float sc = std::ldexp(1.0f, -int(b0 / 128) - 6);
            std::memcpy(k8.data() + t * fp8_bytes + D + 4 * (b0 / 128), &sc, 4);
            for (int64_t i = b0; i < std::min(D, b0 + 128); ++i) {
              float& v = kf[size_t(t * D + i)];
              const uint8_t c = f32_to_f8_e4m3(std::clamp(v / sc, -448.0f, 448.0f));
              k8[size_t(t * fp8_bytes + i)] = c;
              if (fmt == KeyFormat::fp8) v = f8_e4m3_to_f32(c) * sc;
            }
          }
        std::vector<const void*> keys, ref_keys;
        for (int64_t t = 0; t < n; ++t) {
          ref_keys.push_back(fmt == KeyFormat::bf16 ? static_cast<const void*>(kb.data() + t * D)
                                                    : static_cast<const void*>(kf.data() + t * D));
          keys.push_back(fmt == KeyFormat::fp8 ? static_cast<const void*>(k8.data() + t * fp8_bytes) : ref_keys.back());
        }
        const KeyFormat ref_fmt = fmt == KeyFormat::fp8 ? KeyFormat::f32 : fmt;
        std::vector<float> got(static_cast<size_t>(n)), want(static_cast<size_t>(n));
        backend::cpu::indexer_scores(q.data(), w.data(), H, D, 0.17f, keys.data(), fmt, n, got.data());
        backend::cpu::indexer_scores_reference(q.data(), w.data(), H, D, 0.17f, ref_keys.data(), ref_fmt, n, want.data());
        INFO("n " << n << " D " << D << " format " << int(fmt));
        int zeros = 0;
        for (int64_t t = 0; t < n; ++t) {
          REQUIRE(got[size_t(t)] == Approx(want[size_t(t)]).margin(1e-4));
          zeros += want[size_t(t)] == 0.0f;
        }
        REQUIRE(zeros < n);  // the ReLU does not zero everything: the scores carry information
      }
}
