#include <deepseek/core/parallel.hpp>
#include <deepseek/core/tensor.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <vector>

using namespace deepseek;

TEST_CASE("Tensor owns aligned storage with row-major strides", "[tensor]") {
  Tensor t = Tensor::zeros(DType::f32, {2, 3, 4});
  REQUIRE(reinterpret_cast<uintptr_t>(t.data()) % 64 == 0);
  REQUIRE(t.numel() == 24);
  REQUIRE(t.nbytes() == 96);
  REQUIRE(t.view().stride(0) == 12);
  REQUIRE(t.view().stride(1) == 4);
  REQUIRE(t.view().stride(2) == 1);
  REQUIRE(t.view().is_contiguous());
  for (int i = 0; i < 24; ++i) REQUIRE(t.data_as<float>()[i] == 0.0f);
  TensorView rows = t.view().slice_rows(1, 2);
  REQUIRE(rows.dim(0) == 1);
  REQUIRE(rows.data_as<float>() == t.data_as<float>() + 12);
  REQUIRE(t.view().reshape({6, 4}).dim(0) == 6);
  REQUIRE_THROWS_AS(t.view().reshape({5, 5}), Error);
  REQUIRE_THROWS_AS((Shape{1, 2, 3, 4, 5}), Error);
  REQUIRE_THROWS_AS((Shape{-1}), Error);
}

TEST_CASE("device tensors need a backend allocator", "[tensor]") {
  if (device_allocator(Device::cuda) == nullptr) {
    REQUIRE_THROWS_WITH(Tensor::empty(DType::bf16, {4}, Device::cuda),
                        Catch::Contains("no allocator for device cuda"));
  }
}

TEST_CASE("Error names what failed and where", "[error]") {
  ErrorWhere w{"model.safetensors", "model.norm.weight", "", 1234};
  Error e("bad thing", w);
  REQUIRE(std::string(e.what()) == "bad thing [file model.safetensors, tensor model.norm.weight, byte offset 1234]");
  REQUIRE(e.reason() == "bad thing");
  REQUIRE(e.where().offset == 1234);
}

TEST_CASE("parallel_for covers the range exactly once", "[parallel]") {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 7, 64, 1000, 100003}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      for (auto& h : hits) h = 0;
      std::atomic<bool> empty_chunk{false};
      pool.parallel_for(n, [&](int64_t b, int64_t e) {
        if (b >= e) empty_chunk = true;
        for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
      });
      REQUIRE_FALSE(empty_chunk);
      for (auto& h : hits) REQUIRE(h == 1);
    }
  }
}

TEST_CASE("nested parallel_for runs inline and many jobs in a row complete", "[parallel]") {
  ThreadPool pool(4);
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 2000; ++rep) {
    pool.parallel_for(16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        pool.parallel_for(4, [&](int64_t b2, int64_t e2) { sum += (e2 - b2) * i; });
    });
  }
  REQUIRE(sum == 2000 * 4 * (15 * 16 / 2));
}

TEST_CASE("global pool thread count is settable", "[parallel]") {
  set_num_threads(3);
  REQUIRE(num_threads() == 3);
  std::atomic<int64_t> total{0};
  parallel_for(1000, [&](int64_t b, int64_t e) { total += e - b; }, 10);
  REQUIRE(total == 1000);
  REQUIRE_THROWS_AS(set_num_threads(0), Error);
  set_num_threads(1);
  REQUIRE(num_threads() == 1);
}
