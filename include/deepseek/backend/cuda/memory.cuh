// CUDA device memory: error checking, the device allocator behind Tensor::empty(..., Device::cuda),
// and host <-> device copies.
//
//   DEEPSEEK_CUDA_CHECK(call)   evaluates a CUDA runtime or cuBLAS call; any status other than
//                               success becomes a deepseek::Error whose message holds the call's
//                               text, the status name and description, and the source line
//   device_count()              number of visible devices; 0 (not an error) when there is no
//                               device or no driver, so CPU-only machines can skip CUDA work
//   to_device(view)             a contiguous CPU view -> a new device Tensor of the same dtype/shape
//   to_host(view)               a contiguous device view -> a new CPU Tensor
//   copy(dst, src)              bytes between two contiguous views of equal dtype and shape, any
//                               direction (unified addressing tells the runtime which)
//
// The allocator is plain cudaMalloc/cudaFree on the current device; including this header installs
// it into core/device.hpp's registry before main runs, so core/ itself needs no CUDA headers.
// Host-only code (no kernels): a .cpp compiled by the host compiler may include it too.
#pragma once

#include "deepseek/core/device.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/core/tensor.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

namespace deepseek::backend::cuda {

namespace detail {

inline std::string where_text(const char* file, int line) {
  std::string f = file;
  const auto slash = f.find_last_of('/');
  if (slash != std::string::npos) f = f.substr(slash + 1);
  return f + ":" + std::to_string(line);
}

}  // namespace detail

inline void check(cudaError_t status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  throw Error(std::string(call) + " failed: " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ") at " +
              detail::where_text(file, line));
}

inline void check(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw Error(std::string(call) + " failed: cuBLAS status " + std::to_string(static_cast<int>(status)) + " (" +
              cublasGetStatusString(status) + ") at " + detail::where_text(file, line));
}

#define DEEPSEEK_CUDA_CHECK(call) ::deepseek::backend::cuda::check((call), #call, __FILE__, __LINE__)

// Visible devices; 0 when the machine has no GPU or no driver (both are normal on CI machines).
inline int device_count() {
  int n = 0;
  const cudaError_t status = cudaGetDeviceCount(&n);
  if (status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver) {
    (void)cudaGetLastError();  // the runtime keeps the last error; do not let it leak into later checks
    return 0;
  }
  check(status, "cudaGetDeviceCount(&n)", __FILE__, __LINE__);
  return n;
}

namespace detail {

inline void* device_allocate(size_t bytes) {
  void* p = nullptr;
  DEEPSEEK_CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}

// Called from a Tensor's deleter, so it must not throw; a failure here (the runtime already shut
// down at process exit) has nothing left to free.
inline void device_deallocate(void* p) { (void)cudaFree(p); }

inline void device_upload(void* dst, const void* src, size_t bytes) {
  DEEPSEEK_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

inline constexpr DeviceAllocator kDeviceAllocator{&device_allocate, &device_deallocate, &device_upload};

inline bool install_allocator() {
  set_device_allocator(Device::cuda, &kDeviceAllocator);
  return true;
}

// Runs before main in every program that includes this header.
inline const bool kAllocatorInstalled = install_allocator();

inline void require_contiguous(const TensorView& v, Device device, const char* what) {
  if (v.device() != device)
    throw Error(std::string(what) + " expects a " + device_name(device) + " tensor, got a " + device_name(v.device()) +
                " one");
  if (!v.is_contiguous()) throw Error(std::string(what) + " expects a contiguous tensor");
}

}  // namespace detail

// Copies bytes between two contiguous views of the same dtype and shape (host or device, either way).
inline void copy(const TensorView& dst, const TensorView& src) {
  if (dst.dtype() != src.dtype() || dst.shape() != src.shape())
    throw Error(std::string("copy from ") + dtype_name(src.dtype()) + src.shape().str() + " to " +
                dtype_name(dst.dtype()) + dst.shape().str() + ": dtype and shape must match");
  if (!dst.is_contiguous() || !src.is_contiguous()) throw Error("copy expects contiguous tensors");
  if (src.nbytes() == 0) return;
  DEEPSEEK_CUDA_CHECK(cudaMemcpy(dst.data(), src.data(), static_cast<size_t>(src.nbytes()), cudaMemcpyDefault));
}

inline Tensor to_device(const TensorView& host) {
  detail::require_contiguous(host, Device::cpu, "to_device");
  detail::install_allocator();  // in case another static initializer runs before ours
  Tensor t = Tensor::empty(host.dtype(), host.shape(), Device::cuda);
  copy(t, host);
  return t;
}

inline Tensor to_host(const TensorView& device) {
  detail::require_contiguous(device, Device::cuda, "to_host");
  Tensor t = Tensor::empty(device.dtype(), device.shape(), Device::cpu);
  copy(t, device);
  return t;
}

}  // namespace deepseek::backend::cuda
