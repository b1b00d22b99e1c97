// Device memory: errors carry the call text; a bf16 tensor survives host -> device -> host
// bit-for-bit. Without a GPU (CI) the device half warns and passes.
#include <deepseek/cuda.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace dc = deepseek::backend::cuda;

TEST_CASE("CUDA errors become deepseek::Error naming the call", "[cuda]") {
  try {
    DEEPSEEK_CUDA_CHECK(cudaErrorInvalidValue);
    FAIL("no exception");
  } catch (const deepseek::Error& e) {
    const std::string what = e.what();
    CHECK(what.find("cudaErrorInvalidValue") != std::string::npos);
    CHECK(what.find("test_memory.cu") != std::string::npos);
  }
  CHECK_THROWS_AS(DEEPSEEK_CUDA_CHECK(CUBLAS_STATUS_NOT_INITIALIZED), deepseek::Error);
  CHECK(deepseek::device_allocator(deepseek::Device::cuda) != nullptr);
}

TEST_CASE("bf16 tensor round-trips host -> device -> host", "[cuda]") {
  if (dc::device_count() == 0) {
    WARN("no CUDA device: skipping the device round trip");
    CHECK_THROWS_AS(deepseek::Tensor::empty(deepseek::DType::bf16, {4}, deepseek::Device::cuda), deepseek::Error);
    return;
  }
  // Odd shape {7, 9363} (65,541 values) holding every one of the 65,536 bf16 bit patterns (NaNs,
  // infinities, subnormals, -0 included) in a scrambled order: i -> i * 40503 mod 2^16 is a
  // bijection (40503 is odd), so any byte lost, swapped or reordered shows.
  deepseek::Tensor host = deepseek::Tensor::empty(deepseek::DType::bf16, {7, 9363});
  auto* h = host.data_as<uint16_t>();
  for (int64_t i = 0; i < host.numel(); ++i) h[i] = static_cast<uint16_t>((uint32_t(i) * 40503u) & 0xffffu);
  std::vector<bool> seen(65536, false);
  for (int64_t i = 0; i < host.numel(); ++i) seen[h[i]] = true;
  REQUIRE(std::count(seen.begin(), seen.end(), true) == 65536);

  deepseek::Tensor dev = dc::to_device(host);
  CHECK(dev.device() == deepseek::Device::cuda);
  CHECK(dev.shape() == host.shape());
  CHECK(dev.dtype() == deepseek::DType::bf16);
  deepseek::Tensor back = dc::to_host(dev);
  CHECK(back.device() == deepseek::Device::cpu);
  REQUIRE(back.shape() == host.shape());
  for (int64_t i = 0; i < host.numel(); ++i) REQUIRE(back.data_as<uint16_t>()[i] == h[i]);

  CHECK_THROWS_AS(dc::to_host(host), deepseek::Error);  // a CPU tensor is not a device tensor
  CHECK_THROWS_AS(dc::to_device(dev), deepseek::Error);
}
