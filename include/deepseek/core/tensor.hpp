// Tensor (owning, aligned) and TensorView (non-owning): dtype, up to 4 dims, strides, device.
//
// Shapes are row-major [d0, d1, d2, d3]; strides count elements, not bytes. Weights read from a
// checkpoint are TensorViews into the mmapped file in their stored dtype (bf16, f8_e4m3, ...);
// kernels dequantize on the fly. A Tensor owns its buffer through a shared storage handle, so
// copies are cheap and views keep the storage alive only as long as the Tensor lives.
//
// Device memory: Tensor::empty(..., Device::cuda) asks the allocator the CUDA backend installs
// (include <deepseek/cuda.hpp> in a CUDA build); without it the call throws deepseek::Error.
#pragma once

#include "deepseek/core/device.hpp"
#include "deepseek/core/dtype.hpp"
#include "deepseek/core/error.hpp"

#include <array>
#include <cassert>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>

namespace deepseek {

inline constexpr int kMaxDims = 4;

struct Shape {
  int rank = 0;
  std::array<int64_t, kMaxDims> dims{};

  Shape() = default;
  Shape(std::initializer_list<int64_t> d) {
    if (d.size() > kMaxDims) throw Error("tensor rank " + std::to_string(d.size()) + " exceeds 4");
    for (int64_t v : d) {
      if (v < 0) throw Error("negative tensor dimension " + std::to_string(v));
      dims[rank++] = v;
    }
  }
  int64_t operator[](int i) const { return dims[i]; }
  int64_t& operator[](int i) { return dims[i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= dims[i];
    return n;
  }
  bool operator==(const Shape& o) const {
    if (rank != o.rank) return false;
    for (int i = 0; i < rank; ++i)
      if (dims[i] != o.dims[i]) return false;
    return true;
  }
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const {
    std::string s = "[";
    for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
    return s + "]";
  }
};

class TensorView {
 public:
  TensorView() = default;
  TensorView(void* data, DType dtype, Shape shape, Device device = Device::cpu)
      : data_(data), dtype_(dtype), device_(device), shape_(shape) {
    int64_t s = 1;
    for (int i = shape_.rank - 1; i >= 0; --i) {
      strides_[i] = s;
      s *= shape_.dims[i];
    }
  }

  void* data() const { return data_; }
  template <class T> T* data_as() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank; }
  int64_t dim(int i) const { return shape_.dims[i < 0 ? i + shape_.rank : i]; }
  int64_t stride(int i) const { return strides_[i < 0 ? i + shape_.rank : i]; }
  int64_t numel() const { return shape_.numel(); }
  int64_t nbytes() const { return numel() * dtype_size(dtype_); }
  bool empty() const { return data_ == nullptr; }
  bool is_contiguous() const {
    int64_t s = 1;
    for (int i = shape_.rank - 1; i >= 0; --i) {
      if (shape_.dims[i] != 1 && strides_[i] != s) return false;
      s *= shape_.dims[i];
    }
    return true;
  }

  // Rows [begin, end) of dim 0 of a contiguous tensor.
  TensorView slice_rows(int64_t begin, int64_t end) const {
    assert(begin >= 0 && begin <= end && end <= dim(0));
    TensorView v = *this;
    v.data_ = static_cast<char*>(data_) + begin * strides_[0] * dtype_size(dtype_);
    v.shape_.dims[0] = end - begin;
    return v;
  }
  // The same bytes seen with another shape of equal element count (contiguous only).
  TensorView reshape(Shape s) const {
    if (s.numel() != numel() || !is_contiguous())
      throw Error("cannot reshape " + shape_.str() + " to " + s.str());
    return TensorView(data_, dtype_, s, device_);
  }

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
  Shape shape_;
  std::array<int64_t, kMaxDims> strides_{};
};

class Tensor {
 public:
  Tensor() = default;

  // Uninitialized storage, 64-byte aligned on the CPU.
  static Tensor empty(DType dtype, Shape shape, Device device = Device::cpu) {
    Tensor t;
    const int64_t bytes = shape.numel() * dtype_size(dtype);
    t.storage_ = allocate(bytes, device);
    t.view_ = TensorView(t.storage_.get(), dtype, shape, device);
    return t;
  }
  static Tensor zeros(DType dtype, Shape shape) {
    Tensor t = empty(dtype, shape);
    std::memset(t.data(), 0, static_cast<size_t>(t.nbytes()));
    return t;
  }
  // A CPU copy of any CPU view (contiguous result).
  static Tensor copy_of(const TensorView& v) {
    if (v.device() != Device::cpu) throw Error("Tensor::copy_of expects a CPU view");
    if (!v.is_contiguous()) throw Error("Tensor::copy_of expects a contiguous view");
    Tensor t = empty(v.dtype(), v.shape());
    std::memcpy(t.data(), v.data(), static_cast<size_t>(v.nbytes()));
    return t;
  }

  // A copy of a contiguous CPU view on `device` (through that device's registered allocator).
  static Tensor copy_to(const TensorView& v, Device device) {
    if (v.device() != Device::cpu) throw Error("Tensor::copy_to expects a CPU view");
    if (device == Device::cpu) return copy_of(v);
    if (!v.is_contiguous()) throw Error("Tensor::copy_to expects a contiguous view");
    Tensor t = empty(v.dtype(), v.shape(), device);
    if (v.nbytes() > 0) device_allocator(device)->upload(t.data(), v.data(), static_cast<size_t>(v.nbytes()));
    return t;
  }

  const TensorView& view() const { return view_; }
  operator const TensorView&() const { return view_; }
  void* data() const { return view_.data(); }
  template <class T> T* data_as() const { return view_.data_as<T>(); }
  DType dtype() const { return view_.dtype(); }
  Device device() const { return view_.device(); }
  const Shape& shape() const { return view_.shape(); }
  int rank() const { return view_.rank(); }
  int64_t dim(int i) const { return view_.dim(i); }
  int64_t numel() const { return view_.numel(); }
  int64_t nbytes() const { return view_.nbytes(); }
  bool empty() const { return view_.empty(); }

 private:
  static std::shared_ptr<void> allocate(int64_t bytes, Device device) {
    const size_t n = static_cast<size_t>(bytes > 0 ? bytes : 1);
    if (device == Device::cpu) {
      const size_t rounded = (n + 63) / 64 * 64;
      void* p = std::aligned_alloc(64, rounded);
      if (!p) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes");
      return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
    }
    const DeviceAllocator* a = device_allocator(device);
    if (!a) throw Error(std::string("no allocator for device ") + device_name(device) +
                        ": include <deepseek/cuda.hpp> in a CUDA build");
    void* p = a->allocate(n);
    return std::shared_ptr<void>(p, [a](void* q) { a->deallocate(q); });
  }

  std::shared_ptr<void> storage_;
  TensorView view_;
};

}  // namespace deepseek
