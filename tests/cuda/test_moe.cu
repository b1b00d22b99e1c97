// MoE routing and experts on the GPU (backend/cuda/moe.cuh) against the CPU backend's
// (backend/cpu/moe.hpp, through cpu_reference_moe.cpp) on the same random inputs.
//
//   routing  all three methods, softmax and sigmoid scores, with and without norm_topk_prob and
//            routed_scaling_factor; the logits are drawn until every comparison the selection
//            depends on has a margin of 2e-5 (the two sides' scores differ by ~1e-7), so the ids
//            must be equal, in order; weights within 5e-6 relative (expf's ulps, sum order).
//   experts  f32 / bf16 / FP8 weights (128 x 128 blocks, partial at the edges, and 48 x 80 blocks
//            that send every expert to the GEMV kernel), f32 and bf16 activations, n = 1, 3, 17,
//            70 (GEMV passes of 1, 4 and 16 tokens, GEMM tiles, a 70-token expert over two GEMM
//            tiles), with and without the shared expert, E = 8 with two experts never routed to;
//            odd widths (scalar loads), 1200 pairs (several permutation chunks), 1100 tokens (two
//            host chunks), tokens naming one expert several times, and routing on the device
//            feeding the experts.
//            Tolerance, as max |gpu - cpu| / max(1, |cpu|): 1e-5 with f32 activations (the same
//            f32 products, summed in another order: ~1e-7 here), 1e-3 with bf16 activations (an
//            intermediate h a rounding apart on the two sides can round to neighbouring bf16s).
// Without a GPU (CI) each case warns and returns.
#include "cuda_test_util.hpp"
#include "cpu_reference_moe.hpp"

#include <deepseek/backend/cuda/moe.cuh>
#include <deepseek/cuda.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace deepseek::cuda_test;

namespace dc = deepseek::backend::cuda;
using deepseek::ActivationDType;
using deepseek::BlockQuantMatrix;
using deepseek::DType;
using deepseek::backend::ExpertFfn;
using deepseek::backend::MoeRouting;



// ---- Routing --------------------------------------------------------------------------------

// True when every comparison token l's selection depends on has a margin of at least eps (in
// double): the topk_group-th against the next group score, and the K + 1 best kept choices.
bool clear_margins(const float* l, const MoeRouting& r, const std::vector<float>& bias, double eps) {
  const int E = r.n_experts, K = r.top_k;
  std::vector<double> s(static_cast<size_t>(E)), c(static_cast<size_t>(E));
  if (r.scoring == MoeRouting::Scoring::sigmoid) {
    for (int e = 0; e < E; ++e) s[e] = 1.0 / (1.0 + std::exp(-double(l[e])));
  } else {
    const double m = *std::max_element(l, l + E);
    double sum = 0;
    for (int e = 0; e < E; ++e) sum += (s[e] = std::exp(double(l[e]) - m));
    for (auto& v : s) v /= sum;
  }
  for (int e = 0; e < E; ++e) c[e] = s[e] + (bias.empty() ? 0.0 : double(bias[e]));
  std::vector<bool> kept(size_t(E), true);
  if (r.method != MoeRouting::Method::greedy && r.n_group > 1) {
    const int pg = E / r.n_group;
    std::vector<double> gs(size_t(r.n_group));
    for (int g = 0; g < r.n_group; ++g) {
      std::vector<double> v(c.begin() + g * pg, c.begin() + (g + 1) * pg);
      std::sort(v.rbegin(), v.rend());
      gs[g] = r.method == MoeRouting::Method::noaux_tc ? v[0] + (pg > 1 ? v[1] : 0.0) : v[0];
    }
    std::vector<double> sorted = gs;
    std::sort(sorted.rbegin(), sorted.rend());
    if (r.topk_group < r.n_group && sorted[r.topk_group - 1] - sorted[r.topk_group] < eps) return false;
    for (int e = 0; e < E; ++e) kept[e] = gs[e / pg] >= sorted[r.topk_group - 1];
  }
  std::vector<double> v;
  for (int e = 0; e < E; ++e)
    if (kept[e]) v.push_back(c[e]);
  std::sort(v.rbegin(), v.rend());
  for (size_t i = 0; i + 1 < v.size() && i < size_t(K); ++i)
    if (v[i] - v[i + 1] < eps) return false;
  return true;
}

// Router logits [n, E] in [-4, 4), each token redrawn until its selection has clear margins.
std::vector<float> routing_logits(int64_t n, const MoeRouting& r, const std::vector<float>& bias, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  const int E = r.n_experts;
  std::vector<float> l(size_t(n * E));
  for (int64_t t = 0; t < n; ++t) {
    float* lt = l.data() + t * E;
    do {
      for (int e = 0; e < E; ++e) lt[e] = u(rng);
    } while (!clear_margins(lt, r, bias, 2e-5));
  }
  return l;
}

struct RouteCase {
  const char* name;
  int E, K, n_group, topk_group;
  MoeRouting::Method method;
  MoeRouting::Scoring scoring;
  bool norm;
  float scaling;
  bool bias;
};

MoeRouting routing_of(const RouteCase& c) {
  MoeRouting r;
  r.n_experts = c.E, r.top_k = c.K, r.n_group = c.n_group, r.topk_group = c.topk_group;
  r.method = c.method, r.scoring = c.scoring, r.norm_topk_prob = c.norm, r.routed_scaling_factor = c.scaling;
  return r;
}

// ---- Experts --------------------------------------------------------------------------------

// One weight matrix as host tensors (the CPU's) and their device copies (the GPU's).
struct Matrix {
  deepseek::Tensor w, s, dw, ds;
  BlockQuantMatrix host, dev;
};

// A [rows, cols] matrix of dtype dt with values in about [-amp, amp]; FP8 in br x bc blocks with
// scales around amp / 240 (e4m3 values up to 240).
void make_matrix(Matrix& m, DType dt, int64_t rows, int64_t cols, ActivationDType act, int br, int bc, float amp,
                 uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f), su(0.75f, 1.25f);
  m.w = deepseek::Tensor::empty(dt, {rows, cols});
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float v = u(rng);
    if (dt == DType::f32) m.w.data_as<float>()[i] = amp * v;
    if (dt == DType::bf16) m.w.data_as<uint16_t>()[i] = deepseek::f32_to_bf16(amp * v);
    if (dt == DType::f8_e4m3) m.w.data_as<uint8_t>()[i] = deepseek::f32_to_f8_e4m3(240.0f * v);
  }
  m.host.weight = m.w;
  m.host.block_rows = br, m.host.block_cols = bc;
  m.host.activations = act;
  m.dw = dc::to_device(m.w);
  if (dt == DType::f8_e4m3) {
    const int64_t sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
    m.s = deepseek::Tensor::empty(DType::f32, {sr, sc});
    for (int64_t i = 0; i < sr * sc; ++i) m.s.data_as<float>()[i] = amp / 240.0f * su(rng);
    m.host.scale_inv = m.s;
    m.ds = dc::to_device(m.s);
  }
  m.dev = m.host;
  m.dev.weight = m.dw;
  if (dt == DType::f8_e4m3) m.dev.scale_inv = m.ds;
}

struct Layout {
  DType dtype;
  ActivationDType act;
  int block_rows = 128, block_cols = 128;
};

// E routed experts [inter, d] / [d, inter] and a shared one of width 2 * inter, on both sides.
struct Experts {
  std::deque<Matrix> mats;  // stable addresses: the ExpertFfns point into it
  std::vector<ExpertFfn> host, dev;
  ExpertFfn shared_host, shared_dev;

  Experts(int E, int64_t d, int64_t inter, const Layout& l, uint32_t seed) {
    auto ffn = [&](int64_t width, ExpertFfn& h, ExpertFfn& g) {
      Matrix* p[3];
      const int64_t rows[3] = {width, width, d}, cols[3] = {d, d, width};
      for (int i = 0; i < 3; ++i) {
        p[i] = &mats.emplace_back();
        make_matrix(*p[i], l.dtype, rows[i], cols[i], l.act, l.block_rows, l.block_cols,
                    1.7f / std::sqrt(float(cols[i])), seed++);
      }
      h = {&p[0]->host, &p[1]->host, &p[2]->host};
      g = {&p[0]->dev, &p[1]->dev, &p[2]->dev};
    };
    host.resize(size_t(E));
    dev.resize(size_t(E));
    for (int e = 0; e < E; ++e) ffn(inter, host[e], dev[e]);
    ffn(2 * inter, shared_host, shared_dev);
  }
};

// Routing ids [n, K]: `hot` for every token (when >= 0) and distinct others drawn from `pool`, in
// a shuffled order; weights in [0.1, 1).
void make_routing(int64_t n, int K, const std::vector<int>& pool, int hot, uint32_t seed, std::vector<int>& idx,
                  std::vector<float>& weight) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.1f, 1.0f);
  idx.assign(size_t(n * K), 0);
  weight.resize(size_t(n * K));
  for (int64_t t = 0; t < n; ++t) {
    std::vector<int> others;
    for (int e : pool)
      if (e != hot) others.push_back(e);
    std::shuffle(others.begin(), others.end(), rng);
    std::vector<int> mine;
    if (hot >= 0) mine.push_back(hot);
    for (int e : others)
      if (int(mine.size()) < K) mine.push_back(e);
    std::shuffle(mine.begin(), mine.end(), rng);
    std::copy(mine.begin(), mine.end(), idx.begin() + t * K);
    for (int k = 0; k < K; ++k) weight[size_t(t * K + k)] = u(rng);
  }
}

// Runs both sides on the same x and compares; y starts as a sentinel on the GPU (overwritten).
void check_experts(const Experts& s, int E, int64_t n, int64_t d, int K, bool shared, const std::vector<int>& idx,
                   const std::vector<float>& weight, double tol, uint32_t seed) {
  const auto x = random_vector(size_t(n * d), seed, -1.0f, 1.0f);
  std::vector<float> ref(size_t(n * d));
  cpu_reference::moe_experts(s.host.data(), E, shared ? &s.shared_host : nullptr, x.data(), n, d, idx.data(),
                             weight.data(), K, ref.data());
  auto dx = upload(x);
  auto didx = upload(idx);
  auto dw = upload(weight);
  dc::Buffer dy(size_t(n * d), 12345.0f);
  dc::moe_experts(s.dev.data(), E, shared ? &s.shared_dev : nullptr, dx.data(), n, d, didx.data(), dw.data(), K,
                  dy.data());
  CHECK(max_rel(download(dy.data(), ref.size()), ref) < tol);
}

}  // namespace

TEST_CASE("cuda moe_route selects and weighs as the CPU (greedy, group-limited, noaux_tc)", "[cuda][moe]") {
  if (!have_gpu()) return;
  using M = MoeRouting::Method;
  using S = MoeRouting::Scoring;
  const RouteCase cases[] = {
      {"softmax greedy (V2-Lite)", 64, 6, 1, 1, M::greedy, S::softmax, false, 1.0f, false},
      {"softmax greedy, normalised", 64, 6, 1, 1, M::greedy, S::softmax, true, 1.0f, false},
      {"softmax greedy, top-1 normalised (scales instead)", 16, 1, 1, 1, M::greedy, S::softmax, true, 2.0f, false},
      {"softmax group_limited_greedy (V2)", 160, 6, 8, 3, M::group_limited_greedy, S::softmax, false, 16.0f, false},
      {"softmax group_limited_greedy, normalised", 160, 6, 8, 3, M::group_limited_greedy, S::softmax, true, 16.0f,
       false},
      {"sigmoid noaux_tc (V3)", 256, 8, 8, 4, M::noaux_tc, S::sigmoid, true, 2.5f, true},
      {"sigmoid noaux_tc, unnormalised", 256, 8, 8, 4, M::noaux_tc, S::sigmoid, false, 2.5f, true},
      {"sigmoid noaux_tc, K past the kept group (-inf picks by index)", 32, 6, 8, 1, M::noaux_tc, S::sigmoid, true,
       1.0f, true},
      {"sigmoid greedy with a bias", 72, 4, 1, 1, M::greedy, S::sigmoid, true, 1.5f, true},
  };
  const int64_t n = 37;
  uint32_t seed = 100;
  for (const RouteCase& c : cases) {
    INFO(c.name);
    MoeRouting r = routing_of(c);
    const std::vector<float> bias = c.bias ? random_vector(size_t(c.E), seed++, -0.1f, 0.1f) : std::vector<float>();
    r.bias = c.bias ? bias.data() : nullptr;
    const auto logits = routing_logits(n, r, bias, seed++);
    std::vector<int> idx(size_t(n * c.K));
    std::vector<float> weight(size_t(n * c.K));
    cpu_reference::moe_route(logits.data(), n, r, idx.data(), weight.data());

    auto dl = upload(logits);
    auto db = upload(bias);
    MoeRouting rd = r;
    rd.bias = c.bias ? db.data() : nullptr;
    dc::IndexBuffer didx(size_t(n * c.K));
    dc::Buffer dwt(size_t(n * c.K));
    dc::moe_route(dl.data(), n, rd, didx.data(), dwt.data());
    CHECK(download(didx.data(), idx.size()) == idx);
    const auto got = download(dwt.data(), weight.size());
    double rel = 0;
    for (size_t i = 0; i < got.size(); ++i)
      rel = std::max(rel, std::fabs(double(got[i]) - weight[i]) / std::fabs(double(weight[i])));
    CHECK(rel < 5e-6);
  }
}

TEST_CASE("cuda moe_experts equals the CPU's (f32 / bf16 / FP8 weights, f32 / bf16 activations)", "[cuda][moe]") {
  if (!have_gpu()) return;
  const int E = 8, K = 3;
  const int64_t d = 208, inter = 72;                 // FP8: 128 + 80 columns of gate / up, 72 rows (one partial block)
  const std::vector<int> pool = {0, 1, 2, 4, 5, 7};  // experts 3 and 6 get no tokens
  uint32_t seed = 1000;
  for (DType dt : {DType::f32, DType::bf16, DType::f8_e4m3})
    for (ActivationDType act : {ActivationDType::f32, ActivationDType::bf16}) {
      const Experts s(E, d, inter, {dt, act}, seed);
      seed += 100;
      for (int64_t n : {1, 3, 17, 70})
        for (bool shared : {false, true}) {
          std::vector<int> idx;
          std::vector<float> weight;
          make_routing(n, K, pool, 5, seed++, idx, weight);  // expert 5 takes every token
          INFO("dtype " << deepseek::dtype_name(dt) << ", bf16 activations " << (act == ActivationDType::bf16) << ", n "
                        << n << ", shared " << shared);
          check_experts(s, E, n, d, K, shared, idx, weight, act == ActivationDType::bf16 ? 1e-3 : 1e-5, seed++);
        }
    }
}

TEST_CASE("cuda moe_experts on odd widths, FP8 blocks the GEMM tiles do not fit, all experts per token",
          "[cuda][moe]") {
  if (!have_gpu()) return;
  const std::vector<int> pool = {0, 1, 2, 4, 5, 7};
  uint32_t seed = 5000;
  for (DType dt : {DType::f32, DType::bf16, DType::f8_e4m3})
    for (ActivationDType act : {ActivationDType::f32, ActivationDType::bf16}) {
      const double tol = act == ActivationDType::bf16 ? 1e-3 : 1e-5;
      {  // d = 131, inter = 45: no vector loads anywhere
        const Experts s(8, 131, 45, {dt, act}, seed);
        seed += 100;
        for (int64_t n : {3, 70}) {
          std::vector<int> idx;
          std::vector<float> weight;
          make_routing(n, 3, pool, 5, seed++, idx, weight);
          INFO("odd widths, dtype " << deepseek::dtype_name(dt) << ", bf16 activations "
                                    << (act == ActivationDType::bf16) << ", n " << n);
          check_experts(s, 8, n, 131, 3, true, idx, weight, tol, seed++);
        }
      }
      if (dt == DType::f8_e4m3) {  // 48 x 80 blocks: every expert on the GEMV kernel, 70 tokens in 5 passes
        const Experts s(8, 208, 72, {dt, act, 48, 80}, seed);
        seed += 100;
        for (int64_t n : {17, 70}) {
          std::vector<int> idx;
          std::vector<float> weight;
          make_routing(n, 3, pool, 5, seed++, idx, weight);
          INFO("FP8 48 x 80 blocks, bf16 activations " << (act == ActivationDType::bf16) << ", n " << n);
          check_experts(s, 8, n, 208, 3, true, idx, weight, tol, seed++);
        }
      }
      {  // K = E: every expert for every token
        const Experts s(8, 64, 40, {dt, act}, seed);
        seed += 100;
        std::vector<int> idx;
        std::vector<float> weight;
        make_routing(5, 8, {0, 1, 2, 3, 4, 5, 6, 7}, -1, seed++, idx, weight);
        INFO("K = E = 8, dtype " << deepseek::dtype_name(dt) << ", bf16 activations "
                                 << (act == ActivationDType::bf16));
        check_experts(s, 8, 5, 64, 8, false, idx, weight, tol, seed++);
      }
    }
}

TEST_CASE("cuda moe_experts over many pairs and tokens (permutation and host chunks)", "[cuda][moe]") {
  if (!have_gpu()) return;
  std::vector<int> all64(64);
  std::iota(all64.begin(), all64.end(), 0);
  {  // 200 tokens x 6 of 64 experts: 1200 pairs, two permutation chunks
    const Experts s(64, 128, 64, {DType::bf16, ActivationDType::f32}, 9000);
    std::vector<int> idx;
    std::vector<float> weight;
    make_routing(200, 6, all64, -1, 9100, idx, weight);
    INFO("E 64, K 6, n 200");
    check_experts(s, 64, 200, 128, 6, true, idx, weight, 1e-5, 9101);
  }
  {  // 1100 tokens: two host chunks of at most 1024
    const Experts s(8, 64, 32, {DType::f32, ActivationDType::f32}, 9200);
    std::vector<int> idx;
    std::vector<float> weight;
    make_routing(1100, 2, {0, 1, 2, 3, 4, 5, 6, 7}, -1, 9300, idx, weight);
    INFO("E 8, K 2, n 1100");
    check_experts(s, 8, 1100, 64, 2, true, idx, weight, 1e-5, 9301);
  }
}

TEST_CASE("cuda moe_experts with an expert named more than once by a token (pairs, not tokens)", "[cuda][moe]") {
  if (!have_gpu()) return;
  // Ids drawn with replacement from a small pool: an expert can hold more pairs than there are
  // tokens, and a token's pairs for one expert sum in k order on both sides (the CPU's grouped
  // path; n > 1). n 3, K 8 over {1, 2}: GEMV tiles of ~12 pairs, 4 at a time, or a GEMM tile past 16;
  // n 40, K 4 over {0, 1, 2}: GEMM tiles of ~53 pairs.
  struct Case {
    int64_t n;
    int K, lo, hi;
  };
  uint32_t seed = 12000;
  for (DType dt : {DType::f32, DType::f8_e4m3})
    for (const Case& c : {Case{3, 8, 1, 2}, Case{40, 4, 0, 2}}) {
      const Experts s(4, 64, 40, {dt, ActivationDType::f32}, seed);
      seed += 100;
      std::mt19937 rng(seed++);
      std::uniform_int_distribution<int> pick(c.lo, c.hi);
      std::uniform_real_distribution<float> u(0.1f, 1.0f);
      std::vector<int> idx(size_t(c.n * c.K));
      std::vector<float> weight(idx.size());
      for (size_t i = 0; i < idx.size(); ++i) idx[i] = pick(rng), weight[i] = u(rng);
      INFO("repeated ids, dtype " << deepseek::dtype_name(dt) << ", n " << c.n << ", K " << c.K);
      check_experts(s, 4, c.n, 64, c.K, true, idx, weight, 1e-5, seed++);
    }
}

TEST_CASE("cuda moe_route feeds moe_experts on the device (no host copy between them)", "[cuda][moe]") {
  if (!have_gpu()) return;
  const int E = 64, K = 6;
  const int64_t n = 17, d = 96, inter = 48;
  MoeRouting r;
  r.n_experts = E, r.top_k = K;
  const auto logits = routing_logits(n, r, {}, 77);
  const Experts s(E, d, inter, {DType::f8_e4m3, ActivationDType::f32}, 7000);
  const auto x = random_vector(size_t(n * d), 78, -1.0f, 1.0f);
  std::vector<int> idx(size_t(n * K));
  std::vector<float> weight(size_t(n * K)), ref(size_t(n * d));
  cpu_reference::moe_route(logits.data(), n, r, idx.data(), weight.data());
  cpu_reference::moe_experts(s.host.data(), E, &s.shared_host, x.data(), n, d, idx.data(), weight.data(), K,
                             ref.data());

  auto dl = upload(logits);
  auto dx = upload(x);
  dc::IndexBuffer didx(size_t(n * K));
  dc::Buffer dwt(size_t(n * K)), dy(size_t(n * d));
  dc::moe_route(dl.data(), n, r, didx.data(), dwt.data());
  dc::moe_experts(s.dev.data(), E, &s.shared_dev, dx.data(), n, d, didx.data(), dwt.data(), K, dy.data());
  CHECK(max_rel(download(dy.data(), ref.size()), ref) < 1e-5);
}

TEST_CASE("cuda moe_route / moe_experts reject what the kernels do not take", "[cuda][moe]") {
  if (!have_gpu()) return;
  MoeRouting r;
  r.n_experts = 300, r.top_k = 2;
  CHECK_THROWS_AS(dc::moe_route(nullptr, 1, r, nullptr, nullptr), deepseek::Error);  // E > 256
  r.n_experts = 30, r.n_group = 4, r.method = MoeRouting::Method::noaux_tc;
  CHECK_THROWS_AS(dc::moe_route(nullptr, 1, r, nullptr, nullptr), deepseek::Error);  // 4 does not divide 30
  const Experts s(2, 32, 16, {DType::f32, ActivationDType::f32}, 11);
  std::vector<ExpertFfn> host_weights = s.host;  // host tensors: the CUDA kernels read device ones
  CHECK_THROWS_AS(dc::moe_experts(host_weights.data(), 2, nullptr, nullptr, 1, 32, nullptr, nullptr, 1, nullptr),
                  deepseek::Error);
  CHECK_THROWS_AS(dc::moe_experts(s.dev.data(), 2, nullptr, nullptr, 1, 33, nullptr, nullptr, 1, nullptr),
                  deepseek::Error);
}
