// Ops<cuda> against the host references on odd shapes (backend/cuda/ops.cuh). The references are
// the plain host code the CPU backend is tested against: core/cache_view.hpp's row encoding,
// backend/cpu/rope.hpp's rope_one, BlockQuantMatrix::at for the linear layers (double sums), and
// the loops written out here for the row-wise ops. Without a GPU (CI) each case warns and returns:
// they compile everywhere and run on the device machine (bench/cuda/device_check.sh).
#include "cuda_test_util.hpp"
#include <deepseek/backend/cpu/rope.hpp>
#include <deepseek/cuda.hpp>
#include <deepseek/nn/kv_cache.hpp>
#include <deepseek/nn/mlp.hpp>
#include <deepseek/nn/rmsnorm.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

// The nn blocks whose primitives are all in Ops<cuda> instantiate for the CUDA tag.
template class deepseek::nn::Mlp<deepseek::cuda>;
template class deepseek::nn::RmsNorm<deepseek::cuda>;

namespace {

using namespace deepseek::cuda_test;

namespace dc = deepseek::backend::cuda;
using Ops = deepseek::backend::Ops<deepseek::cuda>;
using deepseek::DType;



}  // namespace

TEST_CASE("cuda rmsnorm, layernorm, softmax, silu_mul equal the host loops", "[cuda]") {
  if (!have_gpu()) return;
  const int64_t n = 5, d = 7169, ld = 7200;
  const auto x = random_vector(size_t(n * ld), 1), w = random_vector(size_t(d), 2), b = random_vector(size_t(d), 3);
  auto dx = upload(x), dw = upload(w), db = upload(b);
  dc::Buffer dy(size_t(n * d));
  Ops::rmsnorm(dx.data(), n, d, dw.data(), 1e-6f, dy.data(), ld, d);
  std::vector<float> ref(size_t(n * d));
  for (int64_t t = 0; t < n; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += double(x[t * ld + i]) * x[t * ld + i];
    const double inv = 1.0 / std::sqrt(ss / d + 1e-6);
    for (int64_t i = 0; i < d; ++i) ref[t * d + i] = float(w[i] * (x[t * ld + i] * inv));
  }
  CHECK(max_rel(download(dy.data(), ref.size()), ref) < 1e-5);

  Ops::layernorm(dx.data(), n, d, dw.data(), db.data(), 1e-5f, dy.data(), ld, d);
  for (int64_t t = 0; t < n; ++t) {
    double s = 0, v = 0;
    for (int64_t i = 0; i < d; ++i) s += x[t * ld + i];
    const double mean = s / d;
    for (int64_t i = 0; i < d; ++i) v += (x[t * ld + i] - mean) * (x[t * ld + i] - mean);
    const double inv = 1.0 / std::sqrt(v / d + 1e-5);
    for (int64_t i = 0; i < d; ++i) ref[t * d + i] = float((x[t * ld + i] - mean) * inv * w[i] + b[i]);
  }
  CHECK(max_rel(download(dy.data(), ref.size()), ref) < 1e-5);

  auto sx = upload(std::vector<float>(x.begin(), x.begin() + 3001));
  Ops::softmax(sx.data(), 3001);
  std::vector<float> sref(x.begin(), x.begin() + 3001);
  double m = -1e30, sum = 0;
  for (float v : sref) m = std::max(m, double(v));
  for (float v : sref) sum += std::exp(v - m);
  for (auto& v : sref) v = float(std::exp(v - m) / sum);
  CHECK(max_rel(download(sx.data(), sref.size()), sref) < 1e-6);

  auto g = upload(w), u = upload(b);
  Ops::silu_mul(g.data(), u.data(), d);
  std::vector<float> gref(static_cast<size_t>(d));
  for (int64_t i = 0; i < d; ++i) gref[i] = float(w[i] / (1.0 + std::exp(-double(w[i]))) * b[i]);
  CHECK(max_rel(download(g.data(), size_t(d)), gref) < 1e-6);
}

TEST_CASE("cuda rope equals rope_one for both pair layouts", "[cuda]") {
  if (!have_gpu()) return;
  const int64_t n = 3, heads = 5, dim = 64, ld = heads * 72 + 3, hs = 72, p0 = 4093;
  std::vector<double> inv(dim / 2);
  for (int64_t i = 0; i < dim / 2; ++i) inv[i] = std::pow(10000.0, -2.0 * i / dim);
  for (bool interleaved : {true, false}) {
    deepseek::backend::RopeParams r{inv.data(), dim, interleaved, 1.2};
    auto x = random_vector(size_t(n * ld), 4);
    auto dx = upload(x);
    Ops::rope(dx.data(), n, heads, ld, hs, p0, r);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < heads; ++h) deepseek::backend::cpu::rope_one(x.data() + t * ld + h * hs, p0 + t, r);
    CHECK(max_rel(download(dx.data(), x.size()), x) < 1e-6);
  }
}

TEST_CASE("cuda store_rows / load_rows write CacheView::store's bytes", "[cuda]") {
  if (!have_gpu()) return;
  using deepseek::CacheDType;
  // V3.2's row: 512 latent + 64 rope + 128 index key; paged with a scrambled block table.
  const int64_t width = 704, rows = 11, bs = 4;
  const std::vector<int32_t> table = {2, 0, 3, 1};
  for (CacheDType dt : {CacheDType::f32, CacheDType::bf16, CacheDType::fp8_e4m3}) {
    deepseek::CacheView host;
    host.width = width;
    host.dtype = dt;
    host.fp8_values = 512;
    host.index_fp8 = dt == CacheDType::fp8_e4m3 ? 128 : 0;
    host.block_size = bs;
    host.block_table = table.data();
    const int64_t bytes = 16 * host.row_bytes();
    std::vector<uint8_t> hmem(size_t(bytes), 0);
    host.base = hmem.data();
    uint8_t* dmem = nullptr;
    int32_t* dtable = nullptr;
    DEEPSEEK_CUDA_CHECK(cudaMalloc(&dmem, size_t(bytes)));
    DEEPSEEK_CUDA_CHECK(cudaMemset(dmem, 0, size_t(bytes)));
    DEEPSEEK_CUDA_CHECK(cudaMalloc(&dtable, table.size() * sizeof(int32_t)));
    DEEPSEEK_CUDA_CHECK(cudaMemcpy(dtable, table.data(), table.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    deepseek::CacheView dev = host;
    dev.base = dmem;
    dev.block_table = dtable;
    const auto v = random_vector(size_t(rows * width), 5, -30.0f, 30.0f);
    auto dv = upload(v);
    // Two writes per row, as MLA (latent + rope) and the indexer (key) make them.
    for (int64_t t = 0; t < rows; ++t) host.store(1 + t, 0, v.data() + t * width, 576);
    for (int64_t t = 0; t < rows; ++t) host.store(1 + t, 576, v.data() + t * width + 576, 128);
    Ops::store_rows(dev, 1, 0, dv.data(), rows, 576, width);
    Ops::store_rows(dev, 1, 576, dv.data() + 576, rows, 128, width);
    std::vector<uint8_t> back(static_cast<size_t>(bytes));
    dc::Context::current().synchronize();
    DEEPSEEK_CUDA_CHECK(cudaMemcpy(back.data(), dmem, size_t(bytes), cudaMemcpyDeviceToHost));
    CHECK(back == hmem);
    dc::Buffer out(size_t(rows * width));
    Ops::load_rows(dev, 1, 0, rows, width, out.data(), width);
    std::vector<float> ref(size_t(rows * width));
    for (int64_t t = 0; t < rows; ++t) host.load(1 + t, 0, ref.data() + t * width, width);
    const auto got = download(out.data(), ref.size());
    CHECK(std::memcmp(got.data(), ref.data(), ref.size() * sizeof(float)) == 0);
    (void)cudaFree(dmem);
    (void)cudaFree(dtable);
  }
}

TEST_CASE("cuda linear layers equal the double-sum reference (f32, bf16, FP8; gemv and sgemm)", "[cuda]") {
  if (!have_gpu()) return;
  const int64_t rows = 301, cols = 259;  // partial 128 x 128 blocks in both directions
  for (DType dt : {DType::f32, DType::bf16, DType::f8_e4m3})
    for (auto act : {deepseek::ActivationDType::f32, deepseek::ActivationDType::bf16})
      for (int64_t n : {1, 5, 40}) {
        const auto wf = random_vector(size_t(rows * cols), 6, -1.0f, 1.0f);
        deepseek::Tensor w = deepseek::Tensor::empty(dt, {rows, cols});
        deepseek::Tensor s = deepseek::Tensor::empty(DType::f32, {3, 3});
        for (int64_t i = 0; i < 9; ++i) s.data_as<float>()[i] = std::ldexp(1.0f, int(i % 5) - 9);
        for (int64_t i = 0; i < rows * cols; ++i) {
          if (dt == DType::f32) w.data_as<float>()[i] = wf[i];
          if (dt == DType::bf16) w.data_as<uint16_t>()[i] = deepseek::f32_to_bf16(wf[i]);
          if (dt == DType::f8_e4m3) w.data_as<uint8_t>()[i] = deepseek::f32_to_f8_e4m3(wf[i] * 300.0f);
        }
        deepseek::BlockQuantMatrix hw;
        hw.weight = w;
        if (dt == DType::f8_e4m3) hw.scale_inv = s;
        hw.activations = act;
        deepseek::Tensor dw = dc::to_device(w), ds = dc::to_device(s);
        deepseek::BlockQuantMatrix W = hw;
        W.weight = dw;
        if (dt == DType::f8_e4m3) W.scale_inv = ds;
        const auto x = random_vector(size_t(n * cols), 7);
        auto dx = upload(x);
        dc::Buffer dy(size_t(n * rows));
        Ops::linear(W, dx.data(), n, dy.data());
        std::vector<float> ref(size_t(n * rows));
        const bool round = act == deepseek::ActivationDType::bf16, fp8 = dt == DType::f8_e4m3;
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = 0; r < rows; ++r) {
            double acc = 0;
            for (int64_t c = 0; c < cols; ++c) {
              const float xv = x[t * cols + c];
              if (round && fp8)
                acc += double(deepseek::f8_e4m3_to_f32(w.data_as<uint8_t>()[r * cols + c])) *
                       deepseek::round_to_bf16(xv * hw.scale(r, c));
              else
                acc += double(hw.at(r, c)) * (round ? deepseek::round_to_bf16(xv) : xv);
            }
            ref[t * rows + r] = float(acc);
          }
        INFO("dtype " << deepseek::dtype_name(dt) << ", bf16 activations " << round << ", n " << n);
        CHECK(max_rel(download(dy.data(), ref.size()), ref) < 2e-5);

        // The transposed product over rows [17, 290): y[t, c] = sum_r x[t, r - 17] W[r, c].
        const int64_t r0 = 17, r1 = 290;
        const auto xt = random_vector(size_t(n * (r1 - r0)), 8);
        auto dxt = upload(xt);
        dc::Buffer dyt(size_t(n * cols));
        Ops::linear_transposed_rows(W, r0, r1, dxt.data(), n, dyt.data());
        std::vector<float> tref(size_t(n * cols));
        for (int64_t t = 0; t < n; ++t)
          for (int64_t c = 0; c < cols; ++c) {
            double acc = 0;
            for (int64_t r = r0; r < r1; ++r) acc += double(xt[t * (r1 - r0) + (r - r0)]) * hw.at(r, c);
            tref[t * cols + c] = float(acc);
          }
        CHECK(max_rel(download(dyt.data(), tref.size()), tref) < 2e-5);
      }
}

// Prefill with FP8 weights and bf16 activations: the tensor-core GEMM (fp8_gemm.cuh) where the block
// shape lets a 64-row tile see one scale (128 x 128, 64 x 96), the GEMV where it does not (48 x 48);
// row ranges that start inside a tile (r0 = 17) and token counts that end inside one (33, 200).
TEST_CASE("cuda FP8 prefill with bf16 activations equals e4m3 x bf16(x * s) (tensor cores and GEMV)", "[cuda]") {
  if (!have_gpu()) return;
  const int64_t rows = 301, cols = 259;
  struct Shape {
    int br, bc;
  };
  for (Shape b : {Shape{128, 128}, Shape{64, 96}, Shape{48, 48}})
    for (int64_t n : {33, 200}) {
      const int64_t sr = (rows + b.br - 1) / b.br, sc = (cols + b.bc - 1) / b.bc;
      const auto wf = random_vector(size_t(rows * cols), 16, -1.0f, 1.0f);
      deepseek::Tensor w = deepseek::Tensor::empty(DType::f8_e4m3, {rows, cols});
      deepseek::Tensor s = deepseek::Tensor::empty(DType::f32, {sr, sc});
      for (int64_t i = 0; i < sr * sc; ++i) s.data_as<float>()[i] = std::ldexp(1.0f, int(i % 7) - 10);
      for (int64_t i = 0; i < rows * cols; ++i) w.data_as<uint8_t>()[i] = deepseek::f32_to_f8_e4m3(wf[i] * 300.0f);
      deepseek::BlockQuantMatrix hw;
      hw.weight = w;
      hw.scale_inv = s;
      hw.block_rows = b.br;
      hw.block_cols = b.bc;
      hw.activations = deepseek::ActivationDType::bf16;
      deepseek::BlockQuantMatrix W = hw;
      W.weight = dc::to_device(w);
      W.scale_inv = dc::to_device(s);
      const auto x = random_vector(size_t(n * cols), 17);
      auto dx = upload(x);
      for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, rows}, std::pair<int64_t, int64_t>{17, 290}}) {
        const int64_t m = r1 - r0;
        dc::Buffer dy(size_t(n * m));
        Ops::linear_rows(W, r0, r1, dx.data(), n, dy.data());
        std::vector<float> ref(size_t(n * m));
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = r0; r < r1; ++r) {
            double acc = 0;
            for (int64_t c = 0; c < cols; ++c)
              acc += double(deepseek::f8_e4m3_to_f32(w.data_as<uint8_t>()[r * cols + c])) *
                     deepseek::round_to_bf16(x[t * cols + c] * hw.scale(r, c));
            ref[t * m + (r - r0)] = float(acc);
          }
        INFO("blocks " << b.br << " x " << b.bc << ", n " << n << ", rows [" << r0 << ", " << r1 << ")");
        CHECK(max_rel(download(dy.data(), ref.size()), ref) < 2e-5);
      }
    }
}

TEST_CASE("cuda embedding, vector_f32 and all_finite", "[cuda]") {
  if (!have_gpu()) return;
  const int64_t vocab = 97, d = 131;
  deepseek::Tensor table = deepseek::Tensor::empty(DType::bf16, {vocab, d});
  const auto tf = random_vector(size_t(vocab * d), 9);
  for (int64_t i = 0; i < vocab * d; ++i) table.data_as<uint16_t>()[i] = deepseek::f32_to_bf16(tf[i]);
  deepseek::Tensor dtable = dc::to_device(table);
  const std::vector<int32_t> ids = {96, 0, 41, 41, 7};
  dc::Buffer out(ids.size() * size_t(d));
  Ops::embedding(dtable, ids.data(), int64_t(ids.size()), out.data());
  const auto got = download(out.data(), out.size());
  bool same = true;
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t j = 0; j < d; ++j)
      same = same && got[i * d + j] == deepseek::bf16_to_f32(table.data_as<uint16_t>()[ids[i] * d + j]);
  CHECK(same);
  CHECK_THROWS_AS(Ops::embedding(table, ids.data(), 1, out.data()), deepseek::Error);  // a host table

  const dc::Buffer row = Ops::vector_f32(table.view().slice_rows(41, 42));  // from host memory
  const auto r = download(row.data(), size_t(d));
  CHECK(std::equal(r.begin(), r.end(), got.begin() + 2 * d));

  CHECK(Ops::all_finite(out.data(), int64_t(out.size())));
  Ops::fill(out.data() + 300, 1, std::nanf(""));
  CHECK_FALSE(Ops::all_finite(out.data(), int64_t(out.size())));
}

TEST_CASE("cuda IndexBuffer, upload / download, and a paged KvCache's device block table", "[cuda]") {
  if (!have_gpu()) return;
  dc::IndexBuffer idx(77, -1), zero(5);
  std::vector<int32_t> h(77, 0), hz(5, 9);
  Ops::download(idx.data(), 77, h.data());
  Ops::download(zero.data(), 5, hz.data());
  CHECK(std::all_of(h.begin(), h.end(), [](int32_t v) { return v == -1; }));
  CHECK(std::all_of(hz.begin(), hz.end(), [](int32_t v) { return v == 0; }));
  const auto v = random_vector(1001, 12);
  dc::Buffer b(v.size());
  Ops::upload(v.data(), int64_t(v.size()), b.data());
  std::vector<float> back(v.size());
  Ops::download(b.data(), int64_t(v.size()), back.data());
  CHECK(back == v);

  // The table a paged cache hands its kernels lives on the device and lists the same blocks as
  // the rows: a value stored through the view reads back at its position.
  deepseek::nn::KvCache cache(2, 24, 50, deepseek::nn::CacheLayout::paged, 8, deepseek::CacheDType::f32, 0, 0,
                              deepseek::Device::cuda);
  const deepseek::CacheView view = cache.view(1);
  cudaPointerAttributes attr{};
  DEEPSEEK_CUDA_CHECK(cudaPointerGetAttributes(&attr, view.block_table));
  CHECK(attr.type == cudaMemoryTypeDevice);
  std::vector<int32_t> table(7);
  Ops::download(view.block_table, 7, table.data());
  CHECK(table == std::vector<int32_t>{6, 5, 4, 3, 2, 1, 0});  // handed out in reverse (kv_cache.hpp)
  const auto row = random_vector(24 * 3, 13);
  dc::Buffer drow = upload(row);
  Ops::store_rows(view, 17, 0, drow.data(), 3, 24, 24);
  dc::Buffer got(row.size());
  Ops::load_rows(view, 17, 0, 3, 24, got.data(), 24);
  CHECK(download(got.data(), row.size()) == row);
}

TEST_CASE("cuda argmax: the largest value's lowest index, as the CPU's std::max_element", "[cuda]") {
  if (!have_gpu()) return;
  for (int64_t n : {1, 31, 1025, 129280}) {
    INFO("n " << n);
    auto v = random_vector(size_t(n), uint32_t(20 + n));
    const int64_t hi = n / 3, lo = n / 5;
    v[size_t(hi)] = 5.0f;  // the maximum, repeated later: the first one wins
    v[size_t(n - 1)] = 5.0f;
    if (lo < hi) v[size_t(lo)] = 4.0f;
    dc::Buffer b = upload(v);
    const int32_t want = int32_t(std::max_element(v.begin(), v.end()) - v.begin());
    CHECK(Ops::argmax(b.data(), n) == want);
  }
}
