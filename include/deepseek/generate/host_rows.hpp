// Rows a model writes on its backend's device that the host then reads: the logits the sampler
// draws from. On the CPU they are one host array (device() == host(), no copy); on a GPU a device
// buffer, copied to the host by host() (one synchronising copy per sampled step). The hidden states
// speculative decoding hands from the main model to its MTP head stay a device Buffer.
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/core/device.hpp"

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace deepseek::generate {

// The backend a model runs on: Model::Backend (models::DeepSeekV3 and the others), else the CPU
// (a test's toy model).
template <class Model, class = void>
struct backend_of {
  using type = cpu;
};
template <class Model>
struct backend_of<Model, std::void_t<typename Model::Backend>> {
  using type = typename Model::Backend;
};
template <class Model>
using backend_of_t = typename backend_of<Model>::type;

template <class B>
class HostRows {
 public:
  explicit HostRows(size_t n) : dev_(n) {}
  float* device() { return dev_.data(); }
  size_t size() const { return dev_.size(); }
  // The rows as the host sees them (valid until the next device write).
  float* host() {
    if constexpr (B::device == Device::cpu) {
      return dev_.data();
    } else {
      host_.resize(dev_.size());
      backend::Ops<B>::download(dev_.data(), int64_t(dev_.size()), host_.data());
      return host_.data();
    }
  }

 private:
  backend::Buffer<B> dev_;
  std::vector<float> host_;
};

}  // namespace deepseek::generate
