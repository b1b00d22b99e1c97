// The DSA indexer and plain attention of the CUDA backend (backend/cuda/indexer.cuh,
// mha_attention.cuh) against Ops<cpu> on the same inputs (cpu_reference_indexer.cpp runs the CPU
// side, compiled by g++). The indexer uses V3.2's cache row: 512 latent + 64 rope + 128 index key
// (the key at column 576), D = 128 with 64 rotary dims, 4 index heads; caches f32, bf16, FP8 (bf16
// key) and FP8 with the FP8 index key, contiguous and paged through a scrambled block table.
// Tolerances:
//   keys / queries  the device rounds as the CPU does (indexer.cuh), so the f32 results agree to
//                   1e-5 relative (|a - b| / max(1, |b|); in practice bit for bit). After the FP8
//                   round trip a value may land one e4m3 step away where the two sides' double
//                   cos / sin round to different f32: allowed for at most 0.5% of the values.
//   select          the scores differ in summation order only (~1e-6 relative), so the inputs are
//                   built for a clear margin at every top-k cut: keys k_t = a_t (u + noise) along
//                   one direction u that every head's query follows, a_t either negative (every
//                   head's ReLU is 0: exact ties at 0, which the lower positions win) or one of
//                   geometric levels 4% apart. A host-only case checks on the CPU's scores that each
//                   cut is a gap of > 1e-4 relative or a tie at exactly 0, and that no head's dot
//                   is near the ReLU's kink; then idx and count must be equal exactly.
//   mha_attention   summation order and the device's expf: 1e-5 relative.
// Without a GPU (CI) the device cases warn and return; the margin case runs everywhere.
#include "cuda_test_util.hpp"
#include "cpu_reference_indexer.hpp"

#include <deepseek/backend/cuda/indexer.cuh>
#include <deepseek/backend/cuda/mha_attention.cuh>
#include <deepseek/cuda.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace deepseek::cuda_test;

namespace dc = deepseek::backend::cuda;
namespace ref = cpu_reference::indexer;
using deepseek::CacheDType;
using deepseek::CacheView;
using deepseek::backend::RopeParams;



// V3.2's row and indexer shapes.
constexpr int64_t kLatent = 512, kCol = 576, kWidth = 704, kD = 128, kRope = 64, kH = 4;

// A CacheView over host memory for rows [0, rows): contiguous, or paged in blocks of block_size
// whose physical order is a random permutation (with spare blocks, so the table is not the identity).
struct HostCache {
  std::vector<uint8_t> mem;
  std::vector<int32_t> table;
  CacheView view;
  HostCache(CacheDType dt, int64_t width, int64_t fp8_values, int64_t index_fp8, int64_t rows, int64_t block_size,
            uint32_t seed) {
    view.width = width;
    view.dtype = dt;
    view.fp8_values = dt == CacheDType::fp8_e4m3 ? fp8_values : 0;
    view.index_fp8 = dt == CacheDType::fp8_e4m3 ? index_fp8 : 0;
    int64_t physical_rows = rows;
    if (block_size > 0) {
      const int64_t blocks = (rows + block_size - 1) / block_size, physical = blocks + 3;
      std::vector<int32_t> perm(static_cast<size_t>(physical));
      std::iota(perm.begin(), perm.end(), 0);
      std::mt19937 rng(seed);
      std::shuffle(perm.begin(), perm.end(), rng);
      table.assign(perm.begin(), perm.begin() + blocks);
      physical_rows = physical * block_size;
      view.block_size = block_size;
    }
    mem.assign(size_t(physical_rows * view.row_bytes()), 0);
    view.base = mem.data();
    view.block_table = table.empty() ? nullptr : table.data();
  }
  HostCache(const HostCache&) = delete;
  HostCache& operator=(const HostCache&) = delete;
};

// The same bytes and block table in device memory.
struct DeviceCache {
  uint8_t* mem = nullptr;
  int32_t* table = nullptr;
  CacheView view;
  explicit DeviceCache(const HostCache& h) : view(h.view) {
    DEEPSEEK_CUDA_CHECK(cudaMalloc(&mem, h.mem.size()));
    DEEPSEEK_CUDA_CHECK(cudaMemcpy(mem, h.mem.data(), h.mem.size(), cudaMemcpyHostToDevice));
    if (!h.table.empty()) {
      DEEPSEEK_CUDA_CHECK(cudaMalloc(&table, h.table.size() * sizeof(int32_t)));
      DEEPSEEK_CUDA_CHECK(cudaMemcpy(table, h.table.data(), h.table.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    }
    view.base = mem;
    view.block_table = table;
  }
  DeviceCache(const DeviceCache&) = delete;
  DeviceCache& operator=(const DeviceCache&) = delete;
  ~DeviceCache() {
    (void)cudaFree(mem);
    (void)cudaFree(table);
  }
};

// ---- indexer_select inputs --------------------------------------------------------------------

struct SelectInputs {
  int64_t p0 = 0, n = 0, H = kH;
  std::vector<float> q, w;  // [n, H, D], [n, H]
};

// Writes the index keys of rows [0, p0 + n) into cache columns [kCol, kCol + D) and returns queries
// and head weights: k_t = a_t (u + noise), q_h = c_h u + noise, w_h > 0 (the file header says why).
SelectInputs make_select_inputs(const HostCache& c, int64_t p0, int64_t n, uint32_t seed, int64_t H = kH) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.5f, 1.5f);
  std::bernoulli_distribution is_positive(0.6);
  const float inv_sqrt_d = 1.0f / std::sqrt(float(kD));
  std::vector<float> u(static_cast<size_t>(kD));
  for (auto& x : u) x = normal(rng) * inv_sqrt_d;
  const int64_t rows = p0 + n;
  std::vector<bool> positive(static_cast<size_t>(rows));
  std::vector<int> rank;
  for (int64_t t = 0; t < rows; ++t) {
    positive[size_t(t)] = is_positive(rng);
    if (positive[size_t(t)]) rank.push_back(int(rank.size()));
  }
  std::shuffle(rank.begin(), rank.end(), rng);
  std::vector<float> key(static_cast<size_t>(kD));
  size_t next = 0;
  for (int64_t t = 0; t < rows; ++t) {
    const float a = positive[size_t(t)] ? 0.05f * std::pow(1.04f, float(rank[next++])) : -unit(rng);
    for (int64_t i = 0; i < kD; ++i) key[size_t(i)] = a * (u[size_t(i)] + 0.02f * normal(rng) * inv_sqrt_d);
    c.view.store(t, kCol, key.data(), kD);
  }
  SelectInputs in;
  in.p0 = p0;
  in.n = n;
  in.H = H;
  in.q.resize(size_t(n * H * kD));
  in.w.resize(size_t(n * H));
  for (int64_t s = 0; s < n; ++s)
    for (int64_t h = 0; h < H; ++h) {
      const float ch = unit(rng);
      for (int64_t i = 0; i < kD; ++i)
        in.q[size_t((s * H + h) * kD + i)] = ch * u[size_t(i)] + 0.02f * normal(rng) * inv_sqrt_d;
      in.w[size_t(s * H + h)] = unit(rng);
    }
  return in;
}

std::vector<int64_t> topks_for(int64_t p0) {
  if (p0 == 0) return {1, 4};
  if (p0 == 50) return {16, 40, 64};
  return {64, 480, 1024};
}

// Every select case: 4 cache kinds x contiguous / paged x p0 in {0, 50, 700} x n in {1, 7}.
void for_each_select_case(const std::function<void(const HostCache&, const SelectInputs&, const std::string&)>& f) {
  struct Kind {
    CacheDType dtype;
    int64_t index_fp8;
    const char* name;
  };
  const Kind kinds[] = {{CacheDType::f32, 0, "f32"},
                        {CacheDType::bf16, 0, "bf16"},
                        {CacheDType::fp8_e4m3, 0, "fp8 (bf16 key)"},
                        {CacheDType::fp8_e4m3, kD, "fp8 (fp8 key)"}};
  uint32_t seed = 100;
  for (const Kind& k : kinds)
    for (int64_t bs : {0, 16})
      for (int64_t p0 : {0, 50, 700})
        for (int64_t n : {1, 7}) {
          HostCache c(k.dtype, kWidth, kLatent, k.index_fp8, p0 + n, bs, seed++);
          const SelectInputs in = make_select_inputs(c, p0, n, seed++);
          std::ostringstream what;
          what << k.name << (bs ? " paged" : " contiguous") << ", p0 " << p0 << ", n " << n;
          f(c, in, what.str());
        }
  // 12 index heads: the score kernel's head loop over chunks of ScoreTile::kHeads (8), the last one
  // partial (V3.2 has 64 heads; the cases above fit one chunk).
  seed = 500;
  for (const Kind& k : {kinds[0], kinds[3]})
    for (int64_t n : {1, 7}) {
      HostCache c(k.dtype, kWidth, kLatent, k.index_fp8, 700 + n, 16, seed++);
      const SelectInputs in = make_select_inputs(c, 700, n, seed++, 12);
      f(c, in, std::string(k.name) + " paged, p0 700, n " + std::to_string(n) + ", 12 heads");
    }
}

const float kScale = 1.0f / std::sqrt(float(kD));

// The cut of each query's top-k on the CPU's scores: a clear gap, or a tie at exactly 0 (ReLU'd
// keys). Returns "" when well posed, else what is not; counts the kinds of cut.
std::string check_margins(const HostCache& c, const SelectInputs& in, int64_t topk, int& strict, int& ties) {
  std::vector<float> score, k(static_cast<size_t>(kD));
  for (int64_t s = 0; s < in.n; ++s) {
    const int64_t len = in.p0 + s + 1;
    // No head's dot near the ReLU's kink: its sign cannot depend on the summation order.
    for (int64_t t = 0; t < len; ++t) {
      c.view.load(t, kCol, k.data(), kD);
      for (int64_t h = 0; h < in.H; ++h) {
        const float* qh = in.q.data() + (s * in.H + h) * kD;
        double dot = 0, qq = 0, kk = 0;
        for (int64_t i = 0; i < kD; ++i) {
          dot += double(qh[i]) * k[size_t(i)];
          qq += double(qh[i]) * qh[i];
          kk += double(k[size_t(i)]) * k[size_t(i)];
        }
        if (std::fabs(dot) <= 1e-3 * std::sqrt(qq * kk))
          return "query " + std::to_string(s) + ", head " + std::to_string(h) + ": key " + std::to_string(t) +
                 " is near the ReLU kink";
      }
    }
    if (len <= topk) continue;
    score.resize(size_t(len));
    ref::indexer_scores(in.q.data() + s * in.H * kD, in.w.data() + s * in.H, in.H, kD, kScale, c.view, kCol, len,
                        score.data());
    std::sort(score.begin(), score.end(), std::greater<float>());
    const float c1 = score[size_t(topk - 1)], c2 = score[size_t(topk)];
    if (c1 == c2) {
      if (c1 != 0.0f)
        return "query " + std::to_string(s) + ": a tie at the cut at " + std::to_string(c1) + ", not at 0";
      ++ties;
    } else {
      if (!(c1 - c2 > 1e-4f * c1))
        return "query " + std::to_string(s) + ": cut " + std::to_string(c1) + " vs " + std::to_string(c2) +
               " is too close";
      ++strict;
    }
  }
  return "";
}

// ---- indexer_keys / indexer_queries -----------------------------------------------------------

std::vector<double> rope_inv_freq() {
  std::vector<double> inv(kRope / 2);
  for (int64_t i = 0; i < kRope / 2; ++i) inv[size_t(i)] = std::pow(10000.0, -2.0 * double(i) / double(kRope));
  return inv;
}

// FP8 outputs: equal, or one e4m3 step apart (the scale of an FP8 block is at most amax / 224, a
// step at most 1/8 of the larger value, or a subnormal step sigma 2^-9), for <= 0.5% of the values.
void check_fp8_close(const std::vector<float>& got, const std::vector<float>& want) {
  float amax = 0;
  for (float v : want) amax = std::max(amax, std::fabs(v));
  const double sub = amax / 224.0 * 0x1p-9;
  size_t differ = 0, far = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (got[i] == want[i]) continue;
    ++differ;
    const double d = std::fabs(double(got[i]) - want[i]);
    if (d > 0.125 * std::max(std::fabs(double(got[i])), std::fabs(double(want[i]))) + sub) ++far;
  }
  INFO(differ << " of " << want.size() << " values differ, " << far << " by more than one e4m3 step");
  CHECK(far == 0);
  CHECK(double(differ) <= 0.005 * double(want.size()));
}

}  // namespace

TEST_CASE("cuda indexer_keys / indexer_queries equal Ops<cpu> (LayerNorm, RoPE, FP8 Hadamard)", "[cuda]") {
  if (!have_gpu()) return;
  const std::vector<double> inv = rope_inv_freq();
  const auto nw = random_vector(size_t(kD), 1, 0.5f, 1.5f), nb = random_vector(size_t(kD), 2, -0.5f, 0.5f);
  auto dnw = upload(nw), dnb = upload(nb);
  for (bool interleaved : {false, true})
    for (bool fp8 : {false, true})
      for (int64_t p0 : {0, 50, 700})
        for (int64_t n : {1, 7}) {
          const RopeParams r{inv.data(), kRope, interleaved, interleaved ? 1.0 : 1.25};
          INFO("interleaved " << interleaved << ", fp8_hadamard " << fp8 << ", p0 " << p0 << ", n " << n);
          auto k = random_vector(size_t(n * kD), uint32_t(3 + p0 + n), -3.0f, 3.0f);
          auto dk = upload(k);
          dc::indexer_keys(dk.data(), n, kD, dnw.data(), dnb.data(), 1e-6f, p0, r, fp8);
          ref::indexer_keys(k.data(), n, kD, nw.data(), nb.data(), 1e-6f, p0, r, fp8);
          const auto gk = download(dk.data(), k.size());
          auto q = random_vector(size_t(n * kH * kD), uint32_t(5 + p0 + n), -3.0f, 3.0f);
          auto dq = upload(q);
          dc::indexer_queries(dq.data(), n, kH, kD, p0, r, fp8);
          ref::indexer_queries(q.data(), n, kH, kD, p0, r, fp8);
          const auto gq = download(dq.data(), q.size());
          if (fp8) {
            check_fp8_close(gk, k);
            check_fp8_close(gq, q);
          } else {
            CHECK(max_rel(gk, k) < 1e-5);
            CHECK(max_rel(gq, q) < 1e-5);
          }
        }
  // A Hadamard rotation needs a power-of-two D; the rotary dims must fit the head.
  dc::Buffer x(size_t(96));
  CHECK_THROWS_AS(dc::indexer_queries(x.data(), 1, 1, 96, 0, RopeParams{inv.data(), kRope, false, 1.0}, true),
                  deepseek::Error);
  CHECK_THROWS_AS(dc::indexer_queries(x.data(), 1, 1, 32, 0, RopeParams{inv.data(), kRope, false, 1.0}, false),
                  deepseek::Error);
}

TEST_CASE("indexer_select test inputs have a clear top-k margin on the CPU's scores (host)", "[cuda]") {
  int strict = 0, ties = 0;
  for_each_select_case([&](const HostCache& c, const SelectInputs& in, const std::string& what) {
    for (int64_t topk : topks_for(in.p0)) {
      INFO(what << ", topk " << topk);
      REQUIRE(check_margins(c, in, topk, strict, ties) == "");
    }
  });
  INFO(strict << " cuts at a gap, " << ties << " at a tie at 0");
  CHECK(strict > 0);
  CHECK(ties > 0);
}

TEST_CASE("cuda indexer_select equals Ops<cpu> (idx and count exactly; f32 / bf16 / FP8 caches, paged)", "[cuda]") {
  if (!have_gpu()) return;
  for_each_select_case([&](const HostCache& c, const SelectInputs& in, const std::string& what) {
    const DeviceCache dev(c);
    auto dq = upload(in.q), dw = upload(in.w);
    for (int64_t topk : topks_for(in.p0)) {
      INFO(what << ", topk " << topk);
      int strict = 0, ties = 0;
      REQUIRE(check_margins(c, in, topk, strict, ties) == "");
      std::vector<int32_t> idx(size_t(in.n * topk), -1), count(size_t(in.n), -1);
      ref::indexer_select(in.q.data(), in.w.data(), in.n, in.p0, in.H, kD, kScale, c.view, kCol, topk, idx.data(),
                          count.data());
      int32_t *didx = nullptr, *dcount = nullptr;
      DEEPSEEK_CUDA_CHECK(cudaMalloc(&didx, idx.size() * sizeof(int32_t)));
      DEEPSEEK_CUDA_CHECK(cudaMalloc(&dcount, count.size() * sizeof(int32_t)));
      DEEPSEEK_CUDA_CHECK(cudaMemset(didx, 0xff, idx.size() * sizeof(int32_t)));  // -1, as the CPU's rows start
      DEEPSEEK_CUDA_CHECK(cudaMemset(dcount, 0xff, count.size() * sizeof(int32_t)));
      dc::indexer_select(dq.data(), dw.data(), in.n, in.p0, in.H, kD, kScale, dev.view, kCol, topk, didx, dcount);
      const auto gidx = download(didx, idx.size());
      const auto gcount = download(dcount, count.size());
      (void)cudaFree(didx);
      (void)cudaFree(dcount);
      CHECK(gcount == count);
      CHECK(gidx == idx);
    }
  });
  // The key must be where the CPU reads it: not in an FP8 latent, the FP8 index key whole.
  HostCache fp8(CacheDType::fp8_e4m3, kWidth, kLatent, kD, 4, 0, 1);
  const DeviceCache dev(fp8);
  dc::Buffer q{size_t(kH * kD)}, w{size_t(kH)};
  int32_t* d = nullptr;
  DEEPSEEK_CUDA_CHECK(cudaMalloc(&d, 64 * sizeof(int32_t)));
  CHECK_THROWS_AS(dc::indexer_select(q.data(), w.data(), 1, 3, kH, kD, kScale, dev.view, 0, 2, d, d + 32),
                  deepseek::Error);
  CHECK_THROWS_AS(dc::indexer_select(q.data(), w.data(), 1, 3, kH, 64, kScale, dev.view, kCol, 2, d, d + 32),
                  deepseek::Error);
  (void)cudaFree(d);
}

TEST_CASE("cuda mha_attention equals Ops<cpu> (GQA, f32 / bf16 caches, paged, split contexts)", "[cuda]") {
  if (!have_gpu()) return;
  const int64_t H = 6, G = 2, hd = 24, width = 2 * G * hd;
  const float scale = 1.0f / std::sqrt(float(hd));
  uint32_t seed = 200;
  for (CacheDType dt : {CacheDType::f32, CacheDType::bf16})
    for (int64_t bs : {0, 16})
      for (int64_t p0 : {0, 33, 700})  // 700: several key splits per query head
        for (int64_t n : {1, 9}) {
          INFO(deepseek::cache_dtype_name(dt) << (bs ? " paged" : " contiguous") << ", p0 " << p0 << ", n " << n);
          HostCache c(dt, width, 0, 0, p0 + n, bs, seed++);
          const auto kv = random_vector(size_t((p0 + n) * width), seed++, -2.0f, 2.0f);
          for (int64_t t = 0; t < p0 + n; ++t) c.view.store(t, 0, kv.data() + t * width, width);
          const DeviceCache dev(c);
          const auto q = random_vector(size_t(n * H * hd), seed++, -2.0f, 2.0f);
          auto dq = upload(q);
          dc::Buffer dout(size_t(n * H * hd));
          dc::mha_attention(dq.data(), n, p0, H, G, hd, scale, dev.view, dout.data());
          std::vector<float> want(size_t(n * H * hd));
          ref::mha_attention(q.data(), n, p0, H, G, hd, scale, c.view, want.data());
          CHECK(max_rel(download(dout.data(), want.size()), want) < 1e-5);
        }
}
