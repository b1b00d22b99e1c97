// cuda::Buffer: f32 scratch on the GPU with std::vector<float>'s contract as the blocks use it
// (Buffer(n) holds n zeros, Buffer(n, v) n copies of v; resize keeps the first values and zeroes
// the new ones; copies are deep), allocated from the device's stream-ordered pool on the context's
// stream (context.cuh), so the per-call scratch of a block costs no driver round trip. Never
// indexed on the host. cuda::IndexBuffer: the same for int32 (routing ids, DSA selections).
#pragma once

#include "deepseek/backend/cuda/context.cuh"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace deepseek::backend::cuda {

namespace kernels {
template <class T>
static __global__ void fill_value(T* p, size_t n, T v) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) p[i] = v;
}
}  // namespace kernels

template <class T>
class BasicBuffer {
 public:
  BasicBuffer() = default;
  explicit BasicBuffer(size_t n) { resize(n); }
  BasicBuffer(size_t n, T v) {
    resize(n);
    if (n_ && v != T(0)) {
      const unsigned blocks = unsigned(std::min<size_t>((n_ + 255) / 256, 4096));
      kernels::fill_value<T><<<blocks, 256, 0, Context::current().stream()>>>(p_, n_, v);
      DEEPSEEK_CUDA_CHECK_LAUNCH("fill_value");
    }
  }
  BasicBuffer(const BasicBuffer& o) : BasicBuffer() {
    resize(o.n_);
    if (n_)
      DEEPSEEK_CUDA_CHECK(cudaMemcpyAsync(p_, o.p_, n_ * sizeof(T), cudaMemcpyDeviceToDevice, Context::current().stream()));
  }
  BasicBuffer(BasicBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  BasicBuffer& operator=(BasicBuffer o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~BasicBuffer() {
    if (p_) (void)cudaFreeAsync(p_, Context::current().stream());
  }

  void resize(size_t n) {
    if (n == n_) return;
    cudaStream_t s = Context::current().stream();
    T* q = nullptr;
    if (n) {
      DEEPSEEK_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&q), n * sizeof(T), s));
      const size_t keep = std::min(n, n_);
      if (keep) DEEPSEEK_CUDA_CHECK(cudaMemcpyAsync(q, p_, keep * sizeof(T), cudaMemcpyDeviceToDevice, s));
      if (n > keep) DEEPSEEK_CUDA_CHECK(cudaMemsetAsync(q + keep, 0, (n - keep) * sizeof(T), s));
    }
    if (p_) DEEPSEEK_CUDA_CHECK(cudaFreeAsync(p_, s));
    p_ = q;
    n_ = n;
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

using Buffer = BasicBuffer<float>;
using IndexBuffer = BasicBuffer<int32_t>;

// host[0, n) = device src[0, n) (synchronous: the stream's work before it completes first).
template <class T>
inline void download(const T* src, size_t n, T* host) {
  if (n == 0) return;
  cudaStream_t s = Context::current().stream();
  DEEPSEEK_CUDA_CHECK(cudaMemcpyAsync(host, src, n * sizeof(T), cudaMemcpyDeviceToHost, s));
  DEEPSEEK_CUDA_CHECK(cudaStreamSynchronize(s));
}
// device dst[0, n) = host[0, n) (complete on return: the host array may be freed at once).
template <class T>
inline void upload(const T* host, size_t n, T* dst) {
  if (n == 0) return;
  cudaStream_t s = Context::current().stream();
  DEEPSEEK_CUDA_CHECK(cudaMemcpyAsync(dst, host, n * sizeof(T), cudaMemcpyHostToDevice, s));
  DEEPSEEK_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace deepseek::backend::cuda
