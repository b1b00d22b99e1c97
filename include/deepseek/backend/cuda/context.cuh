// The CUDA backend's per-thread context: the stream every Ops<cuda> call is issued on and a cuBLAS
// handle bound to it. Kernels are asynchronous; a primitive that returns a host value (all_finite)
// or a copy to the host (cuda::to_host, through the legacy default stream) waits for them.
//
// The stream is a blocking one (cudaStreamCreate), so the legacy default stream that cudaMemcpy
// and cudaMalloc use orders itself after it: memory.cuh's copies see every kernel issued before.
// Scratch (cuda::Buffer) comes from the device's stream-ordered memory pool, kept cached: the pool's
// release threshold is raised so a decode step's allocations do not go back to the driver.
// One context per host thread (cuBLAS handles are not thread-safe) on the device current when the
// thread first uses it.
#pragma once

#include "deepseek/backend/cuda/memory.cuh"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace deepseek::backend::cuda {

class Context {
 public:
  static Context& current() {
    thread_local Context c;
    return c;
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context() {  // at thread or process exit: nothing left to report failures to
    if (cublas_) (void)cublasDestroy(cublas_);
    if (stream_) (void)cudaStreamDestroy(stream_);
  }

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  void synchronize() const { DEEPSEEK_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  Context() {
    if (device_count() == 0) throw Error("the CUDA backend needs a GPU, and this machine has none (cudaGetDeviceCount: 0)");
    DEEPSEEK_CUDA_CHECK(cudaGetDevice(&device_));
    DEEPSEEK_CUDA_CHECK(cudaStreamCreate(&stream_));
    DEEPSEEK_CUDA_CHECK(cublasCreate(&cublas_));
    DEEPSEEK_CUDA_CHECK(cublasSetStream(cublas_, stream_));
    // Exact f32 products (no TF32): the CPU backend's f32 mode is what the tests compare with.
    DEEPSEEK_CUDA_CHECK(cublasSetMathMode(cublas_, CUBLAS_PEDANTIC_MATH));
    cudaMemPool_t pool = nullptr;
    DEEPSEEK_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device_));
    uint64_t keep = UINT64_MAX;
    DEEPSEEK_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  }

  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
};

// Checks the launch of the kernel just issued (bad configuration, no kernel image for this GPU).
#define DEEPSEEK_CUDA_CHECK_LAUNCH(kernel) \
  ::deepseek::backend::cuda::check(cudaGetLastError(), "launch of " kernel, __FILE__, __LINE__)

}  // namespace deepseek::backend::cuda
