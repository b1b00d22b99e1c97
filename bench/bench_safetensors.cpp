// safetensors header parse time against the number of tensors: it must grow linearly (the
// duplicate-key check once rescanned the whole header object after each tensor entry: 10k
// entries 0.4 s, 40k entries 21 s, so a 100 MB header could take hours).
//   BM_parse_header/N   parse_safetensors_header of a valid header of N F32 [1, 1] tensors (4-byte
//                       regions that tile the data), N = 2^10 .. 2^20 (kMaxSafetensorsTensors);
//                       counters: entries/s and ns/entry; Google Benchmark fits the complexity
//                       (BigO should read N, RMS small) over the sweep.
#include <deepseek/io/safetensors.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

namespace {

// A safetensors file in memory: N tensors "model.layers.<i>.w" of dtype F32, shape [1, 1], data zero.
std::vector<uint8_t> header_file(int64_t n) {
  std::string h = "{\"__metadata__\":{\"format\":\"pt\"}";
  for (int64_t i = 0; i < n; ++i) {
    h += ",\"model.layers." + std::to_string(i) + ".w\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[" +
         std::to_string(4 * i) + "," + std::to_string(4 * i + 4) + "]}";
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');
  std::vector<uint8_t> out(8 + h.size() + size_t(4 * n), 0);
  for (int i = 0; i < 8; ++i) out[size_t(i)] = uint8_t(uint64_t(h.size()) >> (8 * i));
  std::copy(h.begin(), h.end(), out.begin() + 8);
  return out;
}

void BM_parse_header(benchmark::State& state) {
  const int64_t n = state.range(0);
  const std::vector<uint8_t> file = header_file(n);
  for (auto _ : state) {
    auto h = deepseek::io::parse_safetensors_header(file.data(), file.size(), "bench.safetensors");
    if (int64_t(h.tensors.size()) != n) state.SkipWithError("wrong tensor count");
    benchmark::DoNotOptimize(h);
  }
  state.SetComplexityN(n);
  state.counters["entries/s"] = benchmark::Counter(double(n), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ns/entry"] =
      benchmark::Counter(double(n) * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["header_MB"] = double(file.size() - size_t(4 * n)) / 1e6;
}

BENCHMARK(BM_parse_header)
    ->RangeMultiplier(4)
    ->Range(1 << 10, 1 << 20)
    ->Unit(benchmark::kMillisecond)
    ->Complexity(benchmark::oN);

}  // namespace

BENCHMARK_MAIN();
