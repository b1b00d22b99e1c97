// The fast linear kernels against the plain reference (llm.c style): every dtype, odd shapes that
// leave partial FP8 blocks and vector tails, token counts on both sides of the small/tiled switch
// and of the 6-token register blocks.
#include <deepseek/backend/cpu/linear.hpp>
#include <deepseek/backend/cpu/moe.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

using namespace deepseek;

namespace {

struct Owned {
  Tensor w, s;
  BlockQuantMatrix m;
};

Owned make_matrix(DType dt, int64_t rows, int64_t cols, uint64_t seed, int br = 128, int bc = 128) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Owned o;
  o.w = Tensor::empty(dt, {rows, cols});
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float v = nd(rng);
    if (dt == DType::f32) o.w.data_as<float>()[i] = v;
    if (dt == DType::bf16) o.w.data_as<uint16_t>()[i] = f32_to_bf16(v);
    if (dt == DType::f8_e4m3) o.w.data_as<uint8_t>()[i] = f32_to_f8_e4m3(v * 100.0f);  // spans subnormals to ~448
  }
  o.m.weight = o.w.view();
  o.m.block_rows = br;
  o.m.block_cols = bc;
  if (dt == DType::f8_e4m3) {
    const int64_t sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
    o.s = Tensor::empty(DType::f32, {sr, sc});
    std::uniform_real_distribution<float> ud(0.5f, 2.0f);
    for (int64_t i = 0; i < sr * sc; ++i) o.s.data_as<float>()[i] = ud(rng) / 100.0f;
    o.m.scale_inv = o.s.view();
  }
  return o;
}

std::vector<float> random_vec(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(rng);
  return v;
}

// Error bound for an f32 dot product of length k against a double-accumulated reference.
void require_close(const std::vector<float>& a, const std::vector<float>& b, int64_t k) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("index " << i);
    REQUIRE(std::fabs(a[i] - b[i]) <= 1e-5f * float(k) * (1.0f + std::fabs(b[i])) / 16.0f + 1e-5f);
  }
}

}  // namespace

TEST_CASE("decode_row is exact for every dtype", "[linear]") {
  for (DType dt : {DType::f32, DType::bf16, DType::f8_e4m3}) {
    auto o = make_matrix(dt, 130, 300, 7);
    std::vector<float> row(300);
    for (int64_t r : {0, 1, 127, 128, 129}) {
      backend::cpu::decode_row(o.m, r, 0, 300, row.data());
      for (int64_t c = 0; c < 300; ++c) REQUIRE(f32_bits(row[size_t(c)]) == f32_bits(o.m.at(r, c)));
      backend::cpu::decode_row(o.m, r, 5, 133, row.data());
      for (int64_t c = 5; c < 133; ++c) REQUIRE(f32_bits(row[size_t(c - 5)]) == f32_bits(o.m.at(r, c)));
    }
  }
}

TEST_CASE("linear matches the reference on odd shapes", "[linear]") {
  struct Shape2 {
    int64_t rows, cols;
  };
  if (!backend::cpu::has_avx512()) WARN("this CPU has no AVX-512: only the AVX2 kernels are tested");
  for (bool avx512 : {true, false})
  for (DType dt : {DType::f32, DType::bf16, DType::f8_e4m3})
    for (Shape2 s : {Shape2{1, 1}, Shape2{7, 13}, Shape2{129, 257}, Shape2{300, 200}, Shape2{64, 1000}, Shape2{9, 8300}})
      for (int64_t n : {int64_t(1), int64_t(2), int64_t(3), int64_t(4), int64_t(6), int64_t(7), int64_t(13), backend::cpu::kSmallMaxTokens, backend::cpu::kSmallMaxTokens + 1, int64_t(70)}) {
        INFO("avx512 " << avx512 << " dtype " << dtype_name(dt) << " rows " << s.rows << " cols " << s.cols << " n " << n);
        backend::cpu::set_avx512(avx512);
        auto o = make_matrix(dt, s.rows, s.cols, uint64_t(s.rows * 31 + s.cols));
        auto x = random_vec(n * s.cols, 11);
        std::vector<float> y(static_cast<size_t>(n * s.rows)), ref(y.size());
        backend::cpu::linear(o.m, x.data(), n, y.data());
        backend::cpu::linear_reference(o.m, x.data(), n, ref.data());
        require_close(y, ref, s.cols);
      }
  backend::cpu::set_avx512(true);
}

TEST_CASE("row ranges, strides and the transposed product", "[linear]") {
  for (bool avx512 : {true, false})
  for (DType dt : {DType::bf16, DType::f8_e4m3}) {
    INFO("avx512 " << avx512 << " dtype " << dtype_name(dt));
    backend::cpu::set_avx512(avx512);
    auto o = make_matrix(dt, 260, 150, 3, 128, 128);
    const int64_t r0 = 100, r1 = 230, n = 6, k = r1 - r0;
    // linear_rows with a strided input and output
    auto x = random_vec(n * 200, 5);  // ldx 200 > cols
    std::vector<float> y(static_cast<size_t>(n * 140), -1.0f), ref(static_cast<size_t>(n * 260));
    for (int64_t nn : {int64_t(2), n}) {
      backend::cpu::linear_rows(o.m, r0, r1, x.data(), nn, y.data(), 200, 140);
      backend::cpu::linear_reference(o.m, x.data(), nn, ref.data(), 200, 260);
      for (int64_t t = 0; t < nn; ++t)
        for (int64_t r = r0; r < r1; ++r)
          REQUIRE(y[size_t(t * 140 + r - r0)] == Approx(ref[size_t(t * 260 + r)]).margin(1e-4).epsilon(1e-4));
    }
    // y[t, c] = sum_r x[t, r] W[r0 + r, c]
    auto xt = random_vec(n * k, 9);
    std::vector<float> yt(static_cast<size_t>(n * 150));
    backend::cpu::linear_transposed_rows(o.m, r0, r1, xt.data(), n, yt.data());
    for (int64_t t = 0; t < n; ++t)
      for (int64_t c = 0; c < 150; ++c) {
        double acc = 0;
        for (int64_t r = 0; r < k; ++r) acc += double(xt[size_t(t * k + r)]) * double(o.m.at(r0 + r, c));
        REQUIRE(yt[size_t(t * 150 + c)] == Approx(acc).margin(1e-4).epsilon(1e-4));
      }
  }
  backend::cpu::set_avx512(true);
}

TEST_CASE("linear is the same for any thread count", "[linear][parallel]") {
  for (DType dt : {DType::bf16, DType::f8_e4m3})
    for (ActivationDType act : {ActivationDType::f32, ActivationDType::bf16})
      for (int64_t n : {int64_t(1), int64_t(3), int64_t(40)}) {  // 1: finer chunks (gemv_chunks)
        auto o = make_matrix(dt, 333, 515, 21);
        o.m.activations = act;
        auto x = random_vec(n * 515, 1);
        std::vector<float> a(size_t(n * 333)), b(size_t(n * 333));
        set_num_threads(1);
        backend::cpu::linear(o.m, x.data(), n, a.data());
        set_num_threads(3);
        backend::cpu::linear(o.m, x.data(), n, b.data());
        set_num_threads(2);
        REQUIRE(a == b);  // rows are split, never a sum: results are bit-identical
      }
}

// ActivationDType::bf16: x rounded to bf16, then the product. The AVX512-BF16 kernel (where the
// CPU has it) and the f32 kernels on the rounded input must both equal the rounding reference.
// For FP8 the rounded value is x times the block scale.
TEST_CASE("bf16 activations: native kernel and fallback match the rounding reference", "[linear][bf16]") {
  const bool native = backend::cpu::has_avx512bf16();
  if (!native) WARN("this CPU has no AVX512-BF16: only the AVX2 kernels of bf16 activations are tested");
  struct Shape2 {
    int64_t rows, cols;
  };
  for (bool use_native : {true, false}) {
    if (use_native && !native) continue;
    backend::cpu::set_avx512(use_native);
    for (DType dt : {DType::bf16, DType::f8_e4m3})
      for (Shape2 s : {Shape2{1, 1}, Shape2{7, 13}, Shape2{37, 200}, Shape2{129, 257}, Shape2{64, 1000}})
        for (int64_t n : {int64_t(1), int64_t(2), int64_t(3), int64_t(5), int64_t(6), int64_t(7), int64_t(13), int64_t(40)}) {
          INFO("native " << use_native << " dtype " << dtype_name(dt) << " rows " << s.rows << " cols " << s.cols << " n " << n);
          auto o = make_matrix(dt, s.rows, s.cols, uint64_t(s.rows * 17 + s.cols));
          o.m.activations = ActivationDType::bf16;
          auto x = random_vec(n * s.cols, 23);
          std::vector<float> y(static_cast<size_t>(n * s.rows)), ref(y.size());
          backend::cpu::linear(o.m, x.data(), n, y.data());
          backend::cpu::linear_reference(o.m, x.data(), n, ref.data());
          require_close(y, ref, s.cols);
        }
  }
  backend::cpu::set_avx512(true);
}

TEST_CASE("bf16 activations round the input to nearest even, rows and strides included", "[linear][bf16]") {
  auto o = make_matrix(DType::bf16, 70, 96, 5);
  // Ties: 1 + 2^-8 lies halfway between two bf16 values and rounds to 1 (even); 1 + 3 * 2^-8 rounds up.
  const float tie_down = 1.0f + 1.0f / 256.0f, tie_up = 1.0f + 3.0f / 256.0f;
  const int64_t n = 7, ldx = 100, ldy = 50, r0 = 10, r1 = 60;
  std::vector<float> x(static_cast<size_t>(n * ldx));
  auto rnd = random_vec(n * ldx, 3);
  for (size_t i = 0; i < x.size(); ++i) x[i] = i % 3 == 0 ? tie_down : i % 3 == 1 ? tie_up : rnd[i];
  std::vector<float> exact(static_cast<size_t>(n * 70)), rounded_ref(exact.size());
  backend::cpu::linear_reference(o.m, x.data(), n, exact.data(), ldx, 70);  // f32 activations
  o.m.activations = ActivationDType::bf16;
  backend::cpu::linear_reference(o.m, x.data(), n, rounded_ref.data(), ldx, 70);
  // Hand-rounded input through the f32 reference: the rule the flag stands for.
  std::vector<float> xr(x.size());
  for (size_t i = 0; i < x.size(); ++i) xr[i] = bf16_to_f32(f32_to_bf16(x[i]));
  REQUIRE(bf16_to_f32(f32_to_bf16(tie_down)) == 1.0f);
  REQUIRE(bf16_to_f32(f32_to_bf16(tie_up)) == 1.0f + 4.0f / 256.0f);
  BlockQuantMatrix plain = o.m;
  plain.activations = ActivationDType::f32;
  std::vector<float> by_hand(exact.size());
  backend::cpu::linear_reference(plain, xr.data(), n, by_hand.data(), ldx, 70);
  REQUIRE(rounded_ref == by_hand);
  REQUIRE(rounded_ref != exact);  // the flag changes the result
  for (bool use_native : {true, false}) {
    backend::cpu::set_avx512(use_native);
    std::vector<float> y(static_cast<size_t>(n * ldy), -7.0f);
    backend::cpu::linear_rows(o.m, r0, r1, x.data(), n, y.data(), ldx, ldy);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = r0; r < r1; ++r)
        REQUIRE(y[size_t(t * ldy + r - r0)] == Approx(rounded_ref[size_t(t * 70 + r)]).margin(1e-5).epsilon(1e-5));
  }
  backend::cpu::set_avx512(true);
}

TEST_CASE("FP8 blocks other than 128 x 128", "[linear]") {
  struct Block {
    int br, bc;
  };
  for (bool avx512 : {true, false})
    for (Block b : {Block{64, 32}, Block{32, 64}, Block{50, 48}, Block{128, 96}})
      for (ActivationDType act : {ActivationDType::f32, ActivationDType::bf16})
        for (int64_t n : {int64_t(1), int64_t(7), int64_t(40)}) {
          INFO("avx512 " << avx512 << " block " << b.br << "x" << b.bc << " bf16 " << (act == ActivationDType::bf16) << " n " << n);
          backend::cpu::set_avx512(avx512);
          auto o = make_matrix(DType::f8_e4m3, 150, 230, 77, b.br, b.bc);
          o.m.activations = act;
          auto x = random_vec(n * 230, 4);
          std::vector<float> y(size_t(n * 150)), ref(y.size());
          backend::cpu::linear(o.m, x.data(), n, y.data());
          backend::cpu::linear_reference(o.m, x.data(), n, ref.data());
          require_close(y, ref, 230);
        }
  backend::cpu::set_avx512(true);
}

// backend/cpu/moe.hpp: one token's experts as two row-split jobs (moe_experts_token) against the
// grouped path (whole-matrix linears per expert, then the weighted sum in ascending expert order),
// which the two must agree with bit for bit. Shapes leave partial 32-row units, partial 64-row and
// FP8 128-row blocks and vector tails.
TEST_CASE("one token's MoE jobs equal the grouped experts bit for bit", "[linear][moe][parallel]") {
  const int E = 8, K = 3;
  for (bool avx512 : {true, false})
    for (DType dt : {DType::f32, DType::bf16, DType::f8_e4m3})
      for (ActivationDType act : {ActivationDType::f32, ActivationDType::bf16})
        for (const auto& [d, inter] : {std::pair<int64_t, int64_t>{200, 160}, std::pair<int64_t, int64_t>{256, 384}})
          for (bool with_shared : {true, false}) {
            if (dt == DType::f32 && act == ActivationDType::bf16) continue;
            backend::cpu::set_avx512(avx512);
            INFO("avx512 " << avx512 << " dtype " << dtype_name(dt) << " bf16 act " << (act == ActivationDType::bf16)
                           << " d " << d << " inter " << inter << " shared " << with_shared);
            std::vector<Owned> mats;
            mats.reserve(size_t(3 * (E + 1)));
            for (int e = 0; e <= E; ++e) {
              const int64_t w = e == E ? 2 * inter : inter;  // the shared expert is wider
              mats.push_back(make_matrix(dt, w, d, uint64_t(100 + 3 * e)));
              mats.push_back(make_matrix(dt, w, d, uint64_t(101 + 3 * e)));
              mats.push_back(make_matrix(dt, d, w, uint64_t(102 + 3 * e)));
            }
            for (Owned& o : mats) o.m.activations = act;
            std::vector<backend::ExpertFfn> ffn;
            for (int e = 0; e <= E; ++e)
              ffn.push_back({&mats[size_t(3 * e)].m, &mats[size_t(3 * e + 1)].m, &mats[size_t(3 * e + 2)].m});
            const backend::ExpertFfn* shared = with_shared ? &ffn[size_t(E)] : nullptr;
            const auto x = random_vec(d, 7);
            const int idx[K] = {5, 0, 6};  // as routing gives them: by score, not by expert
            const float weight[K] = {0.5f, 0.3f, 0.2f};
            std::vector<float> fast(static_cast<size_t>(d)), grouped(static_cast<size_t>(d));
            for (int threads : {2, 3}) {
              set_num_threads(threads);
              backend::cpu::moe_experts(ffn.data(), E, shared, x.data(), 1, d, idx, weight, K, fast.data());
              if (shared)
                backend::cpu::swiglu(*shared, x.data(), 1, grouped.data());
              else
                std::fill(grouped.begin(), grouped.end(), 0.0f);
              backend::cpu::moe_experts_grouped(ffn.data(), E, x.data(), 1, d, idx, weight, K, grouped.data());
              REQUIRE(fast == grouped);
            }
            // The reference math, to a tolerance: the shared expert plus the weighted experts.
            std::vector<float> g(static_cast<size_t>(2 * inter)), u(g.size()), h(static_cast<size_t>(d)),
                ref(static_cast<size_t>(d), 0.0f);
            auto ffn_ref = [&](const backend::ExpertFfn& f, float w) {
              const int64_t wd = f.gate_proj->rows();
              backend::cpu::linear_reference(*f.gate_proj, x.data(), 1, g.data());
              backend::cpu::linear_reference(*f.up_proj, x.data(), 1, u.data());
              for (int64_t i = 0; i < wd; ++i)
                g[size_t(i)] = g[size_t(i)] / (1.0f + std::exp(-g[size_t(i)])) * u[size_t(i)];
              backend::cpu::linear_reference(*f.down_proj, g.data(), 1, h.data());
              for (int64_t i = 0; i < d; ++i) ref[size_t(i)] += w * h[size_t(i)];
            };
            if (shared) ffn_ref(*shared, 1.0f);
            for (int k = 0; k < K; ++k) ffn_ref(ffn[size_t(idx[k])], weight[k]);
            double err = 0, mag = 0;
            for (int64_t i = 0; i < d; ++i) {
              err = std::max(err, double(std::abs(fast[size_t(i)] - ref[size_t(i)])));
              mag = std::max(mag, double(std::abs(ref[size_t(i)])));
            }
            CHECK(err <= (act == ActivationDType::bf16 ? 1e-2 : 1e-4) * mag);
          }
  set_num_threads(2);
  backend::cpu::set_avx512(true);
}
