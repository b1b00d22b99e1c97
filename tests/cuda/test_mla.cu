// MLA's CUDA attention primitives (backend/cuda/mla_attention.cuh) against Ops<cpu>'s (backend/cpu/
// mla.hpp, through cpu_reference_mla.cpp) on the same inputs: the same kv_b_proj (f32, bf16, FP8
// 128 x 128 with partial blocks; f32 or bf16 activations), the same cache bytes (f32, bf16, FP8
// FlashMLA rows; contiguous or paged with a scrambled block table), odd head shapes. Each primitive
// gets the CPU's output of the previous one as input, so every comparison isolates one kernel.
// Tolerances, as max |gpu - cpu| / max |cpu| over the output (the CPU's mla_attention test's measure):
//   2e-5   every f32 result: the arithmetic is the same, only f32 summation orders differ (and expf
//          against std::exp, within 2 ulp)
//   1e-4   the absorbed order against the expanded one (both on the GPU): equal sums, associated
//          differently (q~ . c against q . (W_UK c)), f32 activations only
//   2e-2   bf16 products over a bf16 cache against the CPU: the GPU rounds q~ and the softmax
//          weights to bf16 (relative 2^-9 each, scores of a few units); the CPU does so only on an
//          AVX512-BF16 CPU with lora % 32 == 0, and then with its own running maxima
//   4e-3   the same GPU result against the exact CPU order fed q~ rounded to bf16: what is left is
//          the rounding of p alone (the CPU kernel test's bound)
// Without a GPU each case warns and returns.
#include "cuda_test_util.hpp"
#include "cpu_reference_mla.hpp"

#include <deepseek/backend/cuda/mla_attention.cuh>
#include <deepseek/cuda.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

namespace {

using namespace deepseek::cuda_test;

namespace dc = deepseek::backend::cuda;
using deepseek::ActivationDType;
using deepseek::CacheDType;
using deepseek::DType;
using deepseek::backend::MlaDims;


// A host array as a device tensor (cache storage, block tables, selections).
template <class T>
deepseek::Tensor to_device(const std::vector<T>& v, DType dt) {
  deepseek::Tensor t = deepseek::Tensor::empty(dt, {int64_t(v.size())});
  if (!v.empty()) std::memcpy(t.data(), v.data(), v.size() * sizeof(T));
  return dc::to_device(t);
}
// max |a - b| / max |b|
double rel_to_max(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0, scale = 0;
  for (float v : b) scale = std::max(scale, std::fabs(double(v)));
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
  return scale > 0 ? worst / scale : worst;
}

// Small odd shapes (no FP8 cache: its quantized prefix is whole blocks of 128) and shapes with
// V3's latent row (512 + 64, so FP8 rows are valid) and more heads than one CTA's 32 states.
const MlaDims kSmall{3, 16, 8, 40, 12};
const MlaDims kWide{36, 32, 64, 512, 24};

// kv_b_proj [H (nope + v), lora] in dtype dt, host and device copies; FP8 with 128 x 128 block
// scales 2^-8 .. 2^-6 (partial blocks at the edges), values about [-1, 1] in every dtype.
struct KvB {
  deepseek::Tensor w, s, dw, ds;
  deepseek::BlockQuantMatrix host, dev;
};
KvB make_kv_b(const MlaDims& m, DType dt, ActivationDType act, uint32_t seed) {
  const int64_t rows = m.num_heads * (m.qk_nope_head_dim + m.v_head_dim), cols = m.kv_lora_rank;
  const int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
  KvB k;
  k.w = deepseek::Tensor::empty(dt, {rows, cols});
  k.s = deepseek::Tensor::empty(DType::f32, {sr, sc});
  for (int64_t i = 0; i < sr * sc; ++i) k.s.data_as<float>()[i] = std::ldexp(1.0f, int(i % 3) - 8);
  const auto wf = random_vector(size_t(rows * cols), seed);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      if (dt == DType::f32) k.w.data_as<float>()[i] = wf[size_t(i)];
      if (dt == DType::bf16) k.w.data_as<uint16_t>()[i] = deepseek::f32_to_bf16(wf[size_t(i)]);
      if (dt == DType::f8_e4m3)
        k.w.data_as<uint8_t>()[i] =
            deepseek::f32_to_f8_e4m3(wf[size_t(i)] / k.s.data_as<float>()[(r / 128) * sc + c / 128]);
    }
  k.host.weight = k.w;
  if (dt == DType::f8_e4m3) k.host.scale_inv = k.s;
  k.host.activations = act;
  k.dw = dc::to_device(k.w);
  k.ds = dc::to_device(k.s);
  k.dev = k.host;
  k.dev.weight = k.dw;
  if (dt == DType::f8_e4m3) k.dev.scale_inv = k.ds;
  return k;
}

// `rows` cache rows of `width` values (random in [-1, 1], written with CacheView::store), the same
// bytes on the host and on the device. Paged: blocks of 16 rows placed by a shuffled block table
// among 3 more physical blocks than needed.
struct Cache {
  std::vector<uint8_t> mem;
  std::vector<int32_t> table;
  deepseek::Tensor dmem, dtable;
  deepseek::CacheView host, dev;
};
Cache make_cache(CacheDType dt, int64_t width, int64_t lora, int64_t index_fp8, int64_t rows, bool paged,
                 uint32_t seed) {
  Cache c;
  c.host.width = width;
  c.host.dtype = dt;
  c.host.fp8_values = dt == CacheDType::fp8_e4m3 ? lora : 0;
  c.host.index_fp8 = dt == CacheDType::fp8_e4m3 ? index_fp8 : 0;
  int64_t slots = rows;
  if (paged) {
    const int64_t bs = 16, blocks = (rows + bs - 1) / bs, physical = blocks + 3;
    std::vector<int32_t> perm(static_cast<size_t>(physical));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), std::mt19937(seed));
    c.table.assign(perm.begin(), perm.begin() + blocks);
    c.host.block_size = bs;
    slots = physical * bs;
  }
  c.mem.assign(size_t(slots * c.host.row_bytes()), 0);
  c.host.base = c.mem.data();
  c.host.block_table = c.table.empty() ? nullptr : c.table.data();
  const auto v = random_vector(size_t(rows * width), seed + 1);
  for (int64_t t = 0; t < rows; ++t) c.host.store(t, 0, v.data() + t * width, width);
  c.dmem = to_device(c.mem, DType::u8);
  c.dev = c.host;
  c.dev.base = c.dmem.data_as<uint8_t>();
  if (paged) {
    c.dtable = to_device(c.table, DType::i32);
    c.dev.block_table = c.dtable.data_as<int32_t>();
  }
  return c;
}

// A DSA selection for n queries at p0 ..: query s picks count[s] distinct positions of [0, p0 + s]
// in a random order (0 for s = 0: an empty list; few for s = 1); unused slots hold -1 (never read).
struct Selection {
  std::vector<int32_t> idx, count;
  deepseek::Tensor didx, dcount;
};
Selection make_selection(int64_t n, int64_t p0, int64_t k, uint32_t seed) {
  Selection sel;
  sel.idx.assign(size_t(n * k), -1);
  sel.count.assign(size_t(n), 0);
  std::mt19937 rng(seed);
  for (int64_t s = 0; s < n; ++s) {
    const int64_t visible = p0 + s + 1;
    const int64_t cnt = s == 0 ? 0 : s == 1 ? std::min<int64_t>(7, visible) : std::min(k, visible);
    std::vector<int32_t> pos(static_cast<size_t>(visible));
    std::iota(pos.begin(), pos.end(), 0);
    std::shuffle(pos.begin(), pos.end(), rng);
    std::copy(pos.begin(), pos.begin() + cnt, sel.idx.begin() + s * k);
    sel.count[size_t(s)] = int32_t(cnt);
  }
  sel.didx = to_device(sel.idx, DType::i32);
  sel.dcount = to_device(sel.count, DType::i32);
  return sel;
}

struct Case {
  MlaDims m;
  CacheDType cache;
  bool paged;
  int64_t n, p0;
  DType weights;
  ActivationDType act;
};

// All five primitives on one case, with or without a selection (sel_k > 0).
void check_case(const Case& c, int64_t sel_k, uint32_t seed) {
  const MlaDims& m = c.m;
  const int64_t H = m.num_heads, qk = m.qk_head_dim(), lora = m.kv_lora_rank, Wq = lora + m.qk_rope_head_dim;
  const int64_t vd = m.v_head_dim, n = c.n, p0 = c.p0, T = p0 + n;
  const bool fp8 = c.cache == CacheDType::fp8_e4m3, bf16_act = c.act == ActivationDType::bf16;
  INFO("H " << H << " lora " << lora << " cache " << deepseek::cache_dtype_name(c.cache) << " paged " << c.paged
            << " n " << n << " p0 " << p0 << " weights " << deepseek::dtype_name(c.weights) << " bf16 activations "
            << bf16_act << " sel_k " << sel_k);
  const KvB w = make_kv_b(m, c.weights, c.act, seed);
  // Rows wider than attention reads: an index key after the latent (FP8: V3.2's FP8 key, 128 values).
  const int64_t index = fp8 ? (sel_k > 0 ? 128 : 0) : 3;
  const Cache cache = make_cache(c.cache, Wq + index, lora, index, T, c.paged, seed + 2);
  Selection sel;
  if (sel_k > 0) sel = make_selection(n, p0, sel_k, seed + 3);
  const int32_t* hidx = sel_k > 0 ? sel.idx.data() : nullptr;
  const int32_t* hcnt = sel_k > 0 ? sel.count.data() : nullptr;
  const int32_t* didx = sel_k > 0 ? sel.didx.data_as<int32_t>() : nullptr;
  const int32_t* dcnt = sel_k > 0 ? sel.dcount.data_as<int32_t>() : nullptr;
  const float scale = 1.0f / std::sqrt(float(qk));
  const auto q = random_vector(size_t(n * H * qk), seed + 4);
  const dc::Buffer dq = upload(q);

  // q~ = W_UK^T q_nope, q_pe carried.
  std::vector<float> qa(size_t(n * H * Wq));
  cpu_reference::mla_absorb(w.host, m, q.data(), n, qa.data());
  dc::Buffer dqa(qa.size());
  dc::mla_absorb(w.dev, m, dq.data(), n, dqa.data());
  CHECK(rel_to_max(download(dqa), qa) < 2e-5);

  // o~ over the latent rows, from the CPU's q~ on both sides.
  const bool bf16_products = bf16_act;  // what nn::Mla passes
  const dc::Buffer dqa_cpu = upload(qa);
  std::vector<float> ot(size_t(n * H * lora));
  cpu_reference::mla_latent_attention(m, scale, qa.data(), n, p0, cache.host, hidx, hcnt, sel_k, bf16_products,
                                      ot.data());
  dc::Buffer dot(ot.size());
  dc::mla_latent_attention(m, scale, dqa_cpu.data(), n, p0, cache.dev, didx, dcnt, sel_k, bf16_products, dot.data());
  CHECK(rel_to_max(download(dot), ot) < (bf16_products && c.cache == CacheDType::bf16 ? 2e-2 : 2e-5));

  // o = W_UV o~, from the CPU's o~.
  std::vector<float> o(size_t(n * H * vd));
  cpu_reference::mla_unabsorb(w.host, m, ot.data(), n, o.data());
  const dc::Buffer dot_cpu = upload(ot);
  dc::Buffer dout(o.size());
  dc::mla_unabsorb(w.dev, m, dot_cpu.data(), n, dout.data());
  CHECK(rel_to_max(download(dout), o) < 2e-5);

  // The expanded orders.
  std::vector<float> oe(o.size());
  cpu_reference::mla_expanded_attention(w.host, m, scale, q.data(), n, p0, cache.host, hidx, hcnt, sel_k, oe.data());
  dc::Buffer doe(oe.size());
  dc::mla_expanded_attention(w.dev, m, scale, dq.data(), n, p0, cache.dev, didx, dcnt, sel_k, doe.data());
  const auto gpu_expanded = download(doe);
  CHECK(rel_to_max(gpu_expanded, oe) < 2e-5);
  if (sel_k == 0) {
    std::vector<float> otl(o.size());
    cpu_reference::mla_tiled_attention(w.host, m, scale, q.data(), n, p0, cache.host, otl.data());
    dc::Buffer dotl(otl.size());
    dc::mla_tiled_attention(w.dev, m, scale, dq.data(), n, p0, cache.dev, dotl.data());
    CHECK(rel_to_max(download(dotl), otl) < 2e-5);
  }

  // The absorbed chain on the GPU alone equals its expanded order (f32 activations: with bf16 the
  // two orders round different values).
  if (!bf16_act) {
    dc::Buffer dchain(o.size());
    dc::mla_latent_attention(m, scale, dqa.data(), n, p0, cache.dev, didx, dcnt, sel_k, false, dot.data());
    dc::mla_unabsorb(w.dev, m, dot.data(), n, dchain.data());
    CHECK(rel_to_max(download(dchain), gpu_expanded) < 1e-4);
  }
}

const std::pair<int64_t, int64_t> kChunks[] = {{1, 0},  {5, 0},   {1, 37},
                                               {5, 37}, {1, 300}, {5, 300}};  // (n, p0); 300: split-K
const std::pair<DType, ActivationDType> kWeights[] = {
    {DType::f32, ActivationDType::f32},      {DType::bf16, ActivationDType::bf16},
    {DType::f8_e4m3, ActivationDType::f32},  {DType::bf16, ActivationDType::f32},
    {DType::f8_e4m3, ActivationDType::bf16}, {DType::f32, ActivationDType::bf16}};

}  // namespace

TEST_CASE("cuda MLA primitives equal Ops<cpu>: causal, f32 / bf16 / FP8 caches, contiguous and paged", "[cuda][mla]") {
  if (!have_gpu()) return;
  uint32_t seed = 1;
  size_t k = 0;  // the weight dtypes and activations cycle through the cases
  for (const MlaDims& m : {kSmall, kWide})
    for (CacheDType dt : {CacheDType::f32, CacheDType::bf16, CacheDType::fp8_e4m3}) {
      if (dt == CacheDType::fp8_e4m3 && m.kv_lora_rank % 128 != 0) continue;
      for (bool paged : {false, true})
        for (const auto& [n, p0] : kChunks) {
          const auto& [wdt, act] = kWeights[k++ % 6];
          check_case({m, dt, paged, n, p0, wdt, act}, 0, seed++);
        }
    }
}

TEST_CASE("cuda MLA primitives equal Ops<cpu> over a DSA selection", "[cuda][mla][dsa]") {
  if (!have_gpu()) return;
  uint32_t seed = 100;
  size_t k = 0;
  for (const MlaDims& m : {kSmall, kWide})
    for (CacheDType dt : {CacheDType::f32, CacheDType::bf16, CacheDType::fp8_e4m3}) {
      if (dt == CacheDType::fp8_e4m3 && m.kv_lora_rank % 128 != 0) continue;
      for (bool paged : {false, true}) {
        const auto& [wdt, act] = kWeights[k++ % 6];
        check_case({m, dt, paged, 5, 37, wdt, act}, 24, seed++);    // lists of 7 .. 24: one block
        check_case({m, dt, paged, 5, 300, wdt, act}, 200, seed++);  // up to 200 rows: split-K
      }
    }
}

TEST_CASE("cuda mla_latent_attention: bf16 products round q~ and p over a bf16 cache", "[cuda][mla][bf16]") {
  if (!have_gpu()) return;
  for (const MlaDims& m : {kSmall, kWide})
    for (const auto& [n, p0] : {std::pair<int64_t, int64_t>{1, 300}, {5, 37}}) {
      INFO("H " << m.num_heads << " lora " << m.kv_lora_rank << " n " << n << " p0 " << p0);
      const int64_t H = m.num_heads, lora = m.kv_lora_rank, Wq = lora + m.qk_rope_head_dim;
      const Cache cache = make_cache(CacheDType::bf16, Wq, lora, 0, p0 + n, true, 7);
      const auto qa = random_vector(size_t(n * H * Wq), 8, -1.5f, 1.5f);
      const float scale = 1.0f / std::sqrt(float(m.qk_head_dim()));
      const dc::Buffer dqa = upload(qa);
      dc::Buffer dot(size_t(n * H * lora));
      dc::mla_latent_attention(m, scale, dqa.data(), n, p0, cache.dev, nullptr, nullptr, 0, true, dot.data());
      const auto got = download(dot);
      std::vector<float> q16(qa), want(got.size()), exact(got.size()), cpu(got.size());
      for (auto& v : q16) v = deepseek::round_to_bf16(v);
      cpu_reference::mla_latent_attention(m, scale, q16.data(), n, p0, cache.host, nullptr, nullptr, 0, false,
                                          want.data());
      CHECK(rel_to_max(got, want) < 4e-3);  // q~ rounded exactly as the CPU rounds it; p's rounding is left
      cpu_reference::mla_latent_attention(m, scale, qa.data(), n, p0, cache.host, nullptr, nullptr, 0, false,
                                          exact.data());
      CHECK(rel_to_max(got, exact) > 1e-6);  // and it did round
      cpu_reference::mla_latent_attention(m, scale, qa.data(), n, p0, cache.host, nullptr, nullptr, 0, true,
                                          cpu.data());
      CHECK(rel_to_max(got, cpu) < 2e-2);
    }
}

TEST_CASE("cuda mla_latent_attention_paged: several sequences, device block tables and lengths", "[cuda][mla]") {
  if (!have_gpu()) return;
  // Three sequences of 8 queries each in one pool of 16-row blocks (shuffled), lengths 9, 38, 301.
  // Split-K makes 3 parts (max_len 320: 10 blocks): the sequence of 38 rows splits into [0, 32) and
  // [32, 38), which its queries at positions 30 and 31 see nothing of, while the others do.
  const std::vector<int32_t> lens = {9, 38, 301};
  const int64_t B = 3, nq = 8, bs = 16, stride = 20, max_len = 320;
  for (const auto& [m, dt] : {std::pair<MlaDims, CacheDType>{kSmall, CacheDType::f32}, {kWide, CacheDType::fp8_e4m3}})
    for (int64_t sel_k : {0, 24}) {
      INFO("H " << m.num_heads << " cache " << deepseek::cache_dtype_name(dt) << " sel_k " << sel_k);
      const int64_t H = m.num_heads, lora = m.kv_lora_rank, Wq = lora + m.qk_rope_head_dim;
      int64_t blocks = 0;
      for (int32_t l : lens) blocks += (l + bs - 1) / bs;
      std::vector<int32_t> perm(static_cast<size_t>(blocks));
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), std::mt19937(11));
      std::vector<int32_t> tables(size_t(B * stride), 0);
      for (int64_t b = 0, next = 0; b < B; ++b)
        for (int64_t i = 0; i < (lens[size_t(b)] + bs - 1) / bs; ++i)
          tables[size_t(b * stride + i)] = perm[size_t(next++)];
      deepseek::CacheView pool;
      pool.width = Wq;
      pool.dtype = dt;
      pool.fp8_values = dt == CacheDType::fp8_e4m3 ? lora : 0;
      pool.block_size = bs;
      std::vector<uint8_t> mem(size_t(blocks * bs * pool.row_bytes()), 0);
      pool.base = mem.data();
      std::vector<deepseek::CacheView> views(static_cast<size_t>(B), pool);  // each sequence's host view
      for (int64_t b = 0; b < B; ++b) {
        views[size_t(b)].block_table = tables.data() + b * stride;
        const auto v = random_vector(size_t(lens[size_t(b)] * Wq), uint32_t(20 + b));
        for (int64_t t = 0; t < lens[size_t(b)]; ++t) views[size_t(b)].store(t, 0, v.data() + t * Wq, Wq);
      }
      // Selections: query q = b nq + s picks among its sequence's positions [0, lens[b] - nq + s].
      std::vector<int32_t> idx(size_t(B * nq * std::max<int64_t>(sel_k, 1)), -1), count(size_t(B * nq), 0);
      std::mt19937 rng(12);
      for (int64_t b = 0; b < B && sel_k > 0; ++b)
        for (int64_t s = 0; s < nq; ++s) {
          const int64_t visible = lens[size_t(b)] - nq + s + 1, cnt = std::min(sel_k, visible);
          std::vector<int32_t> pos(static_cast<size_t>(visible));
          std::iota(pos.begin(), pos.end(), 0);
          std::shuffle(pos.begin(), pos.end(), rng);
          std::copy(pos.begin(), pos.begin() + cnt, idx.begin() + (b * nq + s) * sel_k);
          count[size_t(b * nq + s)] = int32_t(cnt);
        }
      const deepseek::Tensor dmem = to_device(mem, DType::u8), dtables = to_device(tables, DType::i32);
      const deepseek::Tensor dlens = to_device(lens, DType::i32), didx = to_device(idx, DType::i32),
                             dcount = to_device(count, DType::i32);
      deepseek::CacheView dpool = pool;
      dpool.base = dmem.data_as<uint8_t>();
      const auto qa = random_vector(size_t(B * nq * H * Wq), 13, -1.5f, 1.5f);
      const float scale = 1.0f / std::sqrt(float(m.qk_head_dim()));
      const dc::Buffer dqa = upload(qa);
      dc::Buffer dot(size_t(B * nq * H * lora));
      dc::mla_latent_attention_paged(m, scale, dqa.data(), B, nq, dpool, dtables.data_as<int32_t>(), stride,
                                     dlens.data_as<int32_t>(), max_len, sel_k > 0 ? didx.data_as<int32_t>() : nullptr,
                                     sel_k > 0 ? dcount.data_as<int32_t>() : nullptr, sel_k, false, dot.data());
      const auto got = download(dot);
      std::vector<float> want(got.size());
      for (int64_t b = 0; b < B; ++b) {
        const int64_t q0 = b * nq;
        cpu_reference::mla_latent_attention(m, scale, qa.data() + q0 * H * Wq, nq, lens[size_t(b)] - nq,
                                            views[size_t(b)], sel_k > 0 ? idx.data() + q0 * sel_k : nullptr,
                                            sel_k > 0 ? count.data() + q0 : nullptr, sel_k, false,
                                            want.data() + q0 * H * lora);
      }
      CHECK(rel_to_max(got, want) < 2e-5);
    }
}

TEST_CASE("cuda MLA primitives reject what they cannot read", "[cuda][mla]") {
  if (!have_gpu()) return;
  const MlaDims m = kSmall;
  const KvB w = make_kv_b(m, DType::f32, ActivationDType::f32, 3);
  dc::Buffer x(1024), y(1024);
  CHECK_THROWS_AS(dc::mla_absorb(w.host, m, x.data(), 1, y.data()), deepseek::Error);  // weights in host memory
  MlaDims other = m;
  other.v_head_dim = 11;  // kv_b_proj's rows no longer match
  CHECK_THROWS_AS(dc::mla_unabsorb(w.dev, other, x.data(), 1, y.data()), deepseek::Error);
  const Cache narrow = make_cache(CacheDType::f32, 20, 40, 0, 4, false, 4);  // rows narrower than lora + rope
  CHECK_THROWS_AS(dc::mla_latent_attention(m, 1.0f, x.data(), 1, 0, narrow.dev, nullptr, nullptr, 0, false, y.data()),
                  deepseek::Error);
  // FP8 rows of 658 bytes (an odd bf16 tail): their f32 scales would be misaligned on the GPU.
  const Cache odd = make_cache(CacheDType::fp8_e4m3, kWide.kv_lora_rank + kWide.qk_rope_head_dim + 1, kWide.kv_lora_rank,
                               0, 4, false, 5);
  CHECK_THROWS_AS(dc::mla_latent_attention(kWide, 1.0f, x.data(), 1, 0, odd.dev, nullptr, nullptr, 0, false, y.data()),
                  deepseek::Error);
}
