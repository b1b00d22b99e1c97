// The sampling passes on the GPU (backend/cuda/sampling.cuh) against backend/cpu/sampling.hpp,
// the plain reference (std only, so nvcc compiles it here). Without a GPU the case warns and returns.
#include "cuda_test_util.hpp"
#include <deepseek/backend/cpu/sampling.hpp>
#include <deepseek/cuda.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace {
using namespace deepseek::cuda_test;
namespace dc = deepseek::backend::cuda;
using Ops = deepseek::backend::Ops<deepseek::cuda>;
}  // namespace

TEST_CASE("cuda sampling passes equal the CPU's: top_logits, softmax_sum, sample_softmax", "[cuda]") {
  if (!have_gpu()) return;
  namespace hc = deepseek::backend::cpu;  // backend/cpu/sampling.hpp: the plain reference (no Eigen)
  for (int64_t n : {5, 1000, 129280}) {
    INFO("n " << n);
    auto v = random_vector(size_t(n), uint32_t(40 + n), -8.0f, 8.0f);
    for (int64_t i = 0; i < n; i += 7) v[size_t(i)] = std::round(v[size_t(i)]);  // exact ties, -0 and +0 among them
    if (n > 3) v[1] = -0.0f, v[2] = 0.0f;
    dc::Buffer b = upload(v);
    for (int64_t k : {int64_t(1), int64_t(4), int64_t(64), int64_t(1000), n}) {
      if (k > n) continue;
      INFO("k " << k);
      std::vector<float> gv(static_cast<size_t>(k)), cv(static_cast<size_t>(k));
      std::vector<int32_t> gi(static_cast<size_t>(k)), ci(static_cast<size_t>(k));
      Ops::top_logits(b.data(), n, k, gv.data(), gi.data());
      hc::top_logits(v.data(), n, k, cv.data(), ci.data());
      CHECK(gi == ci);
      CHECK(gv == cv);
    }
    for (float inv_t : {0.5f, 1.0f, 1.7f}) {
      INFO("inv_t " << inv_t);
      const double zc = hc::softmax_sum(v.data(), n, inv_t), zg = Ops::softmax_sum(b.data(), n, inv_t);
      CHECK(std::abs(zg - zc) <= 1e-12 * zc);
      // Draws at u whose position among the cumulative masses has a margin of 1e-9 (the two
      // backends' sums differ by ~1e-16): the same id.
      const double m = double(*std::max_element(v.begin(), v.end())) * inv_t;
      std::vector<double> P(static_cast<size_t>(n));
      double acc = 0;
      for (int64_t i = 0; i < n; ++i) P[size_t(i)] = acc += float(std::exp(double(v[size_t(i)]) * inv_t - m) / zc);
      std::mt19937_64 rng(uint64_t(n) * 3 + 1);
      int checked = 0;
      for (int trial = 0; trial < 200 && checked < 50; ++trial) {
        const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
        const auto it = std::lower_bound(P.begin(), P.end(), u);
        const bool near = (it != P.end() && *it - u < 1e-9) || (it != P.begin() && u - *(it - 1) < 1e-9);
        if (near) continue;
        ++checked;
        CHECK(Ops::sample_softmax(b.data(), n, inv_t, u) == hc::sample_softmax(v.data(), n, inv_t, u));
      }
      CHECK(checked == 50);
      CHECK(Ops::sample_softmax(b.data(), n, inv_t, 1.5) == hc::sample_softmax(v.data(), n, inv_t, 1.5));  // past the mass
    }
  }
}
