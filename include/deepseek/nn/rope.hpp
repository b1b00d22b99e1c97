// Rotary position embedding: default and YaRN, interleaved-pair and half-split layouts.
//
//   inv_freq_i = theta^(-2i/d), i < d/2   (d = rotary dims: qk_rope_head_dim for MLA)
//   YaRN (factor s, original length L0, beta_fast, beta_slow):
//     corr(b) = d ln(L0 / (2 pi b)) / (2 ln theta); low = max(floor(corr(beta_fast)), 0),
//     high = min(ceil(corr(beta_slow)), d - 1) (high += 0.001 if equal);
//     ramp_i = clamp((i - low) / (high - low), 0, 1)
//     inv_freq_i = inv_freq_i / s * ramp_i + inv_freq_i * (1 - ramp_i)
//     attention_factor = m(s, mscale) / m(s, mscale_all_dim) if both set, else m(s, 1),
//     m(s, k) = 1 if s <= 1 else 0.1 k ln s + 1; cos and sin are multiplied by it (transformers;
//     1.0 for every released DeepSeek config)
//   angle phi_{p,i} = p * inv_freq_i
//   interleaved (MLA in all DeepSeek checkpoints): pairs (x_{2i}, x_{2i+1}) rotate by phi_i
//   half-split  (V3.2 indexer, OCR decoder):       pairs (x_i, x_{i+d/2}) rotate by phi_i
// transformers' V3 port de-interleaves before rotating; q.k is the same, only the stored order of
// k_pe differs, and our latent cache keeps the official interleaved order.
// Softmax scale of MLA: qk_head_dim^-0.5 * m(s, mscale_all_dim)^2 when YaRN sets mscale_all_dim.
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/io/config.hpp"

#include <cmath>
#include <cstdint>
#include <vector>

namespace deepseek::nn {

enum class RopeLayout { interleaved, half_split };

inline double yarn_get_mscale(double scale, double mscale) { return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

class Rope {
 public:
  Rope() = default;
  Rope(const io::ModelConfig& c, int64_t dim, RopeLayout layout) : dim_(dim), layout_(layout) {
    const double theta = c.rope_theta;
    inv_freq_.resize(size_t(dim / 2));
    for (int64_t i = 0; i < dim / 2; ++i)
      inv_freq_[size_t(i)] = 1.0 / std::pow(theta, double(2 * i) / double(dim));
    const auto& y = c.rope_scaling;
    if (y.type == io::RopeType::yarn) {
      const double s = y.factor, L0 = double(y.original_max_position_embeddings);
      const double pi = 3.14159265358979323846;
      auto corr = [&](double b) { return double(dim) * std::log(L0 / (b * 2 * pi)) / (2 * std::log(theta)); };
      double low = std::max(std::floor(corr(y.beta_fast)), 0.0);
      double high = std::min(std::ceil(corr(y.beta_slow)), double(dim - 1));
      if (low == high) high += 0.001;
      for (int64_t i = 0; i < dim / 2; ++i) {
        const double ramp = std::min(std::max((double(i) - low) / (high - low), 0.0), 1.0);
        const double extrapolation = 1.0 - ramp;  // share of the original frequency kept
        const double f = inv_freq_[size_t(i)];
        inv_freq_[size_t(i)] = f / s * (1.0 - extrapolation) + f * extrapolation;
      }
      attention_factor_ = (y.mscale != 0 && y.mscale_all_dim != 0)
                              ? yarn_get_mscale(s, y.mscale) / yarn_get_mscale(s, y.mscale_all_dim)
                              : yarn_get_mscale(s, 1.0);
    }
  }

  int64_t dim() const { return dim_; }
  double attention_factor() const { return attention_factor_; }
  const std::vector<double>& inv_freq() const { return inv_freq_; }

  // What Ops<B>::rope rotates with (x[0:dim) of each vector; the table stays owned by this Rope).
  backend::RopeParams params() const {
    return backend::RopeParams{inv_freq_.data(), dim_, layout_ == RopeLayout::interleaved, attention_factor_};
  }

 private:
  int64_t dim_ = 0;
  RopeLayout layout_ = RopeLayout::interleaved;
  std::vector<double> inv_freq_;
  double attention_factor_ = 1.0;
};

// The softmax scale of MLA attention (transformers' yarn_apply_mscale).
inline double mla_softmax_scale(const io::ModelConfig& c) {
  double scale = 1.0 / std::sqrt(double(c.qk_head_dim()));
  if (c.rope_scaling.type == io::RopeType::yarn && c.rope_scaling.mscale_all_dim != 0) {
    const double m = yarn_get_mscale(c.rope_scaling.factor, c.rope_scaling.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

}  // namespace deepseek::nn
