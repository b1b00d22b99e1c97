// KV-cache dtypes (nn/kv_cache.hpp): FP8 rows byte for byte as FlashMLA quantizes them
// (tests/reference/make_kv_cache_fixtures.py runs FlashMLA's tests/quant.py), bf16 rounding,
// paged addressing of every dtype, the attention kernel over FP8 rows, and the errors.
#include "deepseek/backend/cpu/mla_attention.hpp"
#include "deepseek/io/safetensors.hpp"
#include "deepseek/nn/kv_cache.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

using namespace deepseek;

namespace {
const std::string kKvCacheDir = DEEPSEEK_FIXTURES_DIR "/kv_cache/";
}

TEST_CASE("FP8 cache rows equal FlashMLA's quantize_k_cache bytes", "[nn][cache][fp8]") {
  auto f = io::SafetensorsFile::open(kKvCacheDir + "fp8_flashmla.safetensors");
  const auto rows = f->view("rows"), quant = f->view("quantized"), deq = f->view("dequantized");
  const int64_t N = rows.shape()[0], D = rows.shape()[1];
  REQUIRE(D == 576);
  REQUIRE(quant.shape() == Shape{N, 656});
  for (auto layout : {nn::CacheLayout::contiguous, nn::CacheLayout::paged}) {
    nn::KvCache cache(1, D, N, layout, 5, nn::CacheDType::fp8_e4m3, 512);
    REQUIRE(cache.row_bytes() == 656);
    const auto v = cache.view(0);
    for (int64_t t = 0; t < N; ++t) v.store(t, 0, rows.data_as<float>() + t * D, D);
    std::vector<float> back(static_cast<size_t>(D));
    for (int64_t t = 0; t < N; ++t) {
      INFO("row " << t << " layout " << int(layout));
      REQUIRE(std::memcmp(v.row_data(t), quant.data_as<uint8_t>() + t * 656, 656) == 0);
      v.load(t, 0, back.data(), D);
      for (int64_t i = 0; i < D; ++i) REQUIRE(back[size_t(i)] == deq.data_as<float>()[t * D + i]);
    }
  }
}

TEST_CASE("bf16 and FP8 rows: rounding, extra columns, paging", "[nn][cache]") {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  const int64_t W = 256 + 16 + 8;  // latent 256 (two FP8 blocks) + rope 16 + an index key of 8
  std::vector<float> x(size_t(10 * W));
  for (auto& e : x) e = nd(rng);
  for (auto dtype : {nn::CacheDType::f32, nn::CacheDType::bf16, nn::CacheDType::fp8_e4m3}) {
    nn::KvCache contiguous(2, W, 10, nn::CacheLayout::contiguous, 16, dtype, 256);
    nn::KvCache paged(2, W, 10, nn::CacheLayout::paged, 3, dtype, 256);
    REQUIRE(contiguous.row_bytes() == nn::cache_row_bytes(dtype, W, 256));
    for (auto* c : {&contiguous, &paged}) {
      const auto v = c->view(1);
      for (int64_t t = 0; t < 10; ++t) {
        v.store(t, 0, x.data() + t * W, 272);        // latent + rope, as Mla writes it
        v.store(t, 272, x.data() + t * W + 272, 8);  // then the index key, as the Indexer does
      }
    }
    std::vector<float> a(static_cast<size_t>(W)), b(static_cast<size_t>(W));
    for (int64_t t = 0; t < 10; ++t) {
      contiguous.view(1).load(t, 0, a.data(), W);
      paged.view(1).load(t, 0, b.data(), W);
      REQUIRE(a == b);
      for (int64_t i = 0; i < W; ++i) {
        const float want = x[size_t(t * W + i)];
        if (dtype == nn::CacheDType::f32 || (dtype == nn::CacheDType::fp8_e4m3 && i < 256)) {
          if (dtype == nn::CacheDType::f32) REQUIRE(a[size_t(i)] == want);
          else REQUIRE(std::fabs(a[size_t(i)] - want) <= std::fabs(want) / 16 + 1e-3f);  // e4m3: 3 mantissa bits
        } else {
          REQUIRE(a[size_t(i)] == round_to_bf16(want));
        }
      }
      // a column range inside the bf16 tail reads the same values
      float one = 0;
      contiguous.view(1).load(t, 275, &one, 1);
      REQUIRE(one == a[275]);
    }
  }
}

TEST_CASE("attention over FP8 rows equals attention over their dequantized values", "[nn][cache][fp8][attention]") {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t H = 8, lora = 256, rope = 16, T = 300, W = lora + rope;
  nn::KvCache cache(1, W, T, nn::CacheLayout::paged, 7, nn::CacheDType::fp8_e4m3, lora);
  const auto v = cache.view(0);
  std::vector<float> row(static_cast<size_t>(W)), deq(size_t(T * W));
  for (int64_t t = 0; t < T; ++t) {
    for (auto& e : row) e = nd(rng);
    v.store(t, 0, row.data(), W);
    v.load(t, 0, deq.data() + t * W, W);
  }
  std::vector<float> qa(size_t(H * W));
  for (auto& e : qa) e = 0.3f * nd(rng);
  std::vector<const void*> p8, p32;
  for (int64_t t = 0; t < T; ++t) {
    p8.push_back(v.row_data(t));
    p32.push_back(deq.data() + t * W);
  }
  const int32_t len = int32_t(T);
  using backend::cpu::RowFormat;
  std::vector<float> o8(size_t(H * lora)), o32(o8.size());
  backend::cpu::latent_attention(qa.data(), 1, H, lora, rope, 0.1f, {p8.data(), 0, &len, RowFormat::fp8, lora}, o8.data());
  backend::cpu::latent_attention(qa.data(), 1, H, lora, rope, 0.1f, {p32.data(), 0, &len, RowFormat::f32, 0}, o32.data());
  for (size_t i = 0; i < o8.size(); ++i) REQUIRE(o8[i] == Approx(o32[i]).margin(1e-6));
}

// The FP8 index key (V3.2's FP8 indexer): values already rounded by act_quant's rule (e4m3 times
// 2^ceil(log2(max(amax, 1e-4) / 448)), as nn/dsa.hpp's fp8_hadamard leaves them) come back bit for
// bit; blocks of every magnitude, tiny ones under the 1e-4 floor included, a partial second block
// (D = 160), contiguous and paged. Unrounded values come back within e4m3's half ulp (2^-4).
TEST_CASE("KV cache: the FP8 index key stores act_quant-rounded keys exactly", "[nn][cache][fp8]") {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t D : {128, 160})
    for (auto layout : {nn::CacheLayout::contiguous, nn::CacheLayout::paged}) {
      const int64_t lora = 128, rope = 16, W = lora + rope + D, T = 24;
      nn::KvCache c(1, W, T, layout, 8, nn::CacheDType::fp8_e4m3, lora, D);
      REQUIRE(c.row_bytes() == lora + 4 + 2 * rope + D + 4 * ((D + 127) / 128));
      auto v = c.view(0);
      std::vector<std::vector<float>> want(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t) {
        std::vector<float> row(static_cast<size_t>(W));
        for (auto& e : row) e = nd(rng);
        const float mag = std::ldexp(1.0f, int(t % 12) * 3 - 24);  // 2^-24 .. 2^9: under the floor and far above
        for (int64_t b0 = lora + rope; b0 < W; b0 += 128) {
          const int64_t b1 = std::min(W, b0 + 128);
          float amax = 0;
          for (int64_t i = b0; i < b1; ++i) amax = std::max(amax, std::fabs(row[size_t(i)] *= mag));
          const float sc = pow2_ceil(std::max(amax, 1e-4f) / 448.0f);
          for (int64_t i = b0; i < b1; ++i)
            row[size_t(i)] = f8_e4m3_to_f32(f32_to_f8_e4m3(std::clamp(row[size_t(i)] / sc, -448.0f, 448.0f))) * sc;
        }
        v.store(t, 0, row.data(), W);
        want[size_t(t)] = row;
      }
      for (int64_t t = 0; t < T; ++t) {
        INFO("D " << D << " position " << t << " layout " << int(layout));
        std::vector<float> got(static_cast<size_t>(D));
        v.load(t, lora + rope, got.data(), D);
        REQUIRE(std::equal(got.begin(), got.end(), want[size_t(t)].begin() + lora + rope));
        // the same values through the address the indexer reads: e4m3 bytes, then the scales
        const uint8_t* k = static_cast<const uint8_t*>(v.values_at(t, lora + rope));
        float s0;
        std::memcpy(&s0, k + D, 4);
        REQUIRE(f8_e4m3_to_f32(k[1]) * s0 == got[1]);
        // k_pe, between the two FP8 parts, is still bf16
        v.load(t, lora, got.data(), rope);
        for (int64_t i = 0; i < rope; ++i) REQUIRE(got[size_t(i)] == bf16_to_f32(f32_to_bf16(want[size_t(t)][size_t(lora + i)])));
      }
      // unrounded values: within half an e4m3 ulp of their block's scale
      std::vector<float> raw(static_cast<size_t>(W)), back(static_cast<size_t>(D));
      for (auto& e : raw) e = nd(rng);
      v.store(0, 0, raw.data(), W);
      v.load(0, lora + rope, back.data(), D);
      for (int64_t i = 0; i < D; ++i) REQUIRE(back[size_t(i)] == Approx(raw[size_t(lora + rope + i)]).epsilon(0.0625).margin(1e-3));
      // the key is written whole
      REQUIRE_THROWS_WITH(v.store(1, lora + rope + 1, raw.data(), D - 1), Catch::Contains("written whole"));
      REQUIRE_THROWS_WITH(v.store(1, lora + rope, raw.data(), D - 4), Catch::Contains("written whole"));
    }
  REQUIRE_THROWS_WITH(nn::KvCache(1, 128 + 16 + 6, 4, nn::CacheLayout::contiguous, 16, nn::CacheDType::fp8_e4m3, 128, 6),
                      Catch::Contains("FP8 index key of 6 values"));
}

TEST_CASE("KV cache dtype errors", "[nn][cache][errors]") {
  REQUIRE_THROWS_WITH(nn::KvCache(1, 100, 4, nn::CacheLayout::contiguous, 16, nn::CacheDType::fp8_e4m3, 96),
                      Catch::Contains("blocks of 128"));
  nn::KvCache c(1, 256 + 16, 4, nn::CacheLayout::contiguous, 16, nn::CacheDType::fp8_e4m3, 256);
  std::vector<float> x(64, 1.0f);
  REQUIRE_THROWS_WITH(c.view(0).store(0, 64, x.data(), 64), Catch::Contains("whole blocks of 128"));
  REQUIRE(nn::parse_cache_dtype("fp8") == nn::CacheDType::fp8_e4m3);
  REQUIRE_THROWS_WITH(nn::parse_cache_dtype("e5m2", "--cache-dtype"), Catch::Contains("expected f32, bf16 or fp8"));
}

// KvPool: caches over one shared pool take blocks as they grow and give them back; their rows never
// overlap, read back as written (the same values as a cache with its own storage), and a pool
// that is out of blocks refuses to grow a cache instead of handing out a block twice.
TEST_CASE("KvPool: pooled caches grow, share, refuse and give back blocks", "[nn][kv_cache]") {
  for (auto dtype : {nn::CacheDType::f32, nn::CacheDType::bf16, nn::CacheDType::fp8_e4m3}) {
    const int64_t lora = 256, W = lora + 16;
    auto pool = std::make_shared<nn::KvPool>(2, W, 6, 3, dtype, lora);  // 6 blocks of 3 rows
    REQUIRE(pool->free_blocks() == 6);
    nn::KvCache a(pool, 12), b(pool, 9);
    REQUIRE(a.capacity() == 0);
    REQUIRE(a.reserve(7));  // 3 blocks
    REQUIRE(a.capacity() == 9);
    REQUIRE(b.reserve(9));  // 3 blocks: the pool is empty now
    REQUIRE(pool->free_blocks() == 0);
    REQUIRE_FALSE(a.reserve(10));  // would need a fourth block
    REQUIRE(a.capacity() == 9);
    REQUIRE_THROWS_WITH(a.reserve(13), Catch::Contains("outside [0, 12]"));
    REQUIRE_THROWS_WITH(a.clone(), Catch::Contains("cannot be cloned"));
    // Distinct rows per cache and layer, compared with a contiguous cache given the same rows.
    nn::KvCache ref_a(2, W, 9, nn::CacheLayout::contiguous, 16, dtype, lora), ref_b(2, W, 9, nn::CacheLayout::contiguous, 16, dtype, lora);
    std::mt19937 rng(5);
    std::normal_distribution<float> nd;
    std::vector<float> row(static_cast<size_t>(W));
    for (int l = 0; l < 2; ++l)
      for (int64_t t = 0; t < 9; ++t) {
        for (auto* pair : {&a, &b}) {
          for (auto& v : row) v = nd(rng);
          pair->view(l).store(t, 0, row.data(), W);
          (pair == &a ? ref_a : ref_b).view(l).store(t, 0, row.data(), W);
        }
      }
    std::vector<float> got(static_cast<size_t>(W)), want(static_cast<size_t>(W));
    for (int l = 0; l < 2; ++l)
      for (int64_t t = 0; t < 9; ++t)
        for (auto* pair : {&a, &b}) {
          pair->view(l).load(t, 0, got.data(), W);
          (pair == &a ? ref_a : ref_b).view(l).load(t, 0, want.data(), W);
          REQUIRE(got == want);
        }
    // Moving keeps the blocks with the rows; releasing gives them back.
    nn::KvCache moved = std::move(a);
    REQUIRE(moved.blocks_held() == 3);
    REQUIRE(pool->free_blocks() == 0);
    moved.release();
    REQUIRE(pool->free_blocks() == 3);
    REQUIRE(moved.capacity() == 0);
    { nn::KvCache gone = std::move(b); }  // destroyed: its blocks come back
    REQUIRE(pool->free_blocks() == 6);
  }
  REQUIRE_THROWS_WITH(nn::KvPool(1, 8, 0, 4), Catch::Contains("between 1 and"));
  REQUIRE_THROWS_WITH(nn::KvCache(std::shared_ptr<nn::KvPool>(), 4), Catch::Contains("needs a pool"));
}
