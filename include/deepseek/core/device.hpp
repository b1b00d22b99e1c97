// Devices and backend tags.
//
// A Device is where a tensor's bytes live (a runtime property of every tensor). A backend tag
// (`deepseek::cpu`, `deepseek::cuda`) is the compile-time choice of which kernels a block runs:
// `nn::Mla<cpu>`. Only the CUDA backend header defines kernels for `cuda`; its allocator is
// installed here so that core/ needs no CUDA headers.
#pragma once

#include <cstddef>

namespace deepseek {

enum class Device : unsigned char { cpu, cuda };

inline const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

struct cpu {
  static constexpr Device device = Device::cpu;
  static constexpr const char* name = "cpu";
};
struct cuda {
  static constexpr Device device = Device::cuda;
  static constexpr const char* name = "cuda";
};

struct DeviceAllocator {
  void* (*allocate)(size_t bytes);
  void (*deallocate)(void* p);
  void (*upload)(void* dst, const void* host_src, size_t bytes);  // host -> this device, complete on return
};

inline const DeviceAllocator*& device_allocator_slot(Device d) {
  static const DeviceAllocator* slots[2] = {nullptr, nullptr};
  return slots[static_cast<int>(d)];
}
inline const DeviceAllocator* device_allocator(Device d) { return device_allocator_slot(d); }
inline void set_device_allocator(Device d, const DeviceAllocator* a) { device_allocator_slot(d) = a; }

}  // namespace deepseek
