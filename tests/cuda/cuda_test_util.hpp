// What the CUDA tests share: the skip without a GPU, random host inputs, host <-> device copies and
// the relative error the tolerances are stated in.
#pragma once

#include <deepseek/cuda.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace deepseek::cuda_test {

namespace dc = deepseek::backend::cuda;

// False (with a warning) on a machine without a GPU: the case then passes without running (CI);
// it runs on the device machine (bench/cuda/device_check.sh).
inline bool have_gpu() {
  if (dc::device_count() > 0) return true;
  WARN("no CUDA device: skipping (this case runs on the device machine)");
  return false;
}

inline std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

template <class T>
dc::BasicBuffer<T> upload(const std::vector<T>& v) {
  dc::BasicBuffer<T> b(v.size());
  dc::upload(v.data(), v.size(), b.data());
  return b;
}
template <class T>
std::vector<T> download(const T* d, size_t n) {
  std::vector<T> h(n);
  dc::download(d, n, h.data());
  return h;
}
template <class T>
std::vector<T> download(const dc::BasicBuffer<T>& d) {
  return download(d.data(), d.size());
}

// max |a - b| / max(1, |b|) over the elements; a NaN (an unwritten or non-finite output) or a size
// mismatch counts as infinite.
inline double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::fabs(double(a[i]) - b[i]) / std::max(1.0, std::fabs(double(b[i])));
    m = std::max(m, std::isnan(e) ? std::numeric_limits<double>::infinity() : e);
  }
  return m;
}

}  // namespace deepseek::cuda_test
