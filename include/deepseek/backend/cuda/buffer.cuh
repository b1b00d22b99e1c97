// cuda::Buffer: f32 scratch on the GPU with std::vector<float>'s contract as the blocks use it
// (Buffer(n) holds n zeros; resize keeps the first values and zeroes the new ones; copies are deep),
// allocated from the device's stream-ordered pool on the context's stream (context.cuh), so the
// per-call scratch of a block costs no driver round trip. Never indexed on the host.
#pragma once

#include "deepseek/backend/cuda/context.cuh"

#include <algorithm>
#include <cstddef>
#include <utility>

namespace deepseek::backend::cuda {

class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t n) { resize(n); }
  Buffer(const Buffer& o) : Buffer() {
    resize(o.n_);
    if (n_)
      DEEPSEEK_CUDA_CHECK(cudaMemcpyAsync(p_, o.p_, n_ * sizeof(float), cudaMemcpyDeviceToDevice, Context::current().stream()));
  }
  Buffer(Buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  Buffer& operator=(Buffer o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~Buffer() {
    if (p_) (void)cudaFreeAsync(p_, Context::current().stream());
  }

  void resize(size_t n) {
    if (n == n_) return;
    cudaStream_t s = Context::current().stream();
    float* q = nullptr;
    if (n) {
      DEEPSEEK_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&q), n * sizeof(float), s));
      const size_t keep = std::min(n, n_);
      if (keep) DEEPSEEK_CUDA_CHECK(cudaMemcpyAsync(q, p_, keep * sizeof(float), cudaMemcpyDeviceToDevice, s));
      if (n > keep) DEEPSEEK_CUDA_CHECK(cudaMemsetAsync(q + keep, 0, (n - keep) * sizeof(float), s));
    }
    if (p_) DEEPSEEK_CUDA_CHECK(cudaFreeAsync(p_, s));
    p_ = q;
    n_ = n;
  }
  float* data() { return p_; }
  const float* data() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }

 private:
  float* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace deepseek::backend::cuda
