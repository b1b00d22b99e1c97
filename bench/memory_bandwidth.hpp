// The STREAM triad every bench measures its bandwidth shares against, in the same run:
//   a = b + s c over 3 x 256 MiB of f32, split across the thread pool like the kernels
// BM_MemoryBandwidth sets triad_gbs(); register it first, so the benches after it can report
// of_triad = their bytes / s over it (0 means it has not run: the share is left out).
#pragma once

#include <deepseek/core/parallel.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

namespace deepseek::bench {

inline double& triad_gbs() {
  static double g = 0;
  return g;
}

inline void BM_MemoryBandwidth(benchmark::State& state) {
  const int64_t n = int64_t(64) << 20;
  std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n), 1.0f), c(static_cast<size_t>(n), 2.0f);
  parallel_for(n, [&](int64_t i0, int64_t i1) { std::fill(a.begin() + i0, a.begin() + i1, 0.0f); });
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    parallel_for(n, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) a[size_t(i)] = b[size_t(i)] + 3.0f * c[size_t(i)];
    });
    benchmark::ClobberMemory();
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  triad_gbs() = double(3 * n * 4) * double(state.iterations()) / sec / 1e9;
  state.counters["GB/s"] = triad_gbs();
  state.counters["threads"] = num_threads();
}

}  // namespace deepseek::bench
