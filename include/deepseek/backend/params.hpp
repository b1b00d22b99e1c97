// The parameter structs of the backend vocabulary (backend/ops.hpp): plain host values every
// backend's kernels take. Apart from ops.hpp so a backend's kernel headers can include them without
// pulling in the backends themselves.
#pragma once

#include "deepseek/core/block_quant.hpp"

#include <cstdint>

namespace deepseek::backend {

// Ops::rope's parameters: the rotary dims, the angles' inverse frequencies (dim / 2 host values,
// nn/rope.hpp builds them; a device backend copies this small table with the call), the pair
// layout and YaRN's attention factor.
struct RopeParams {
  const double* inv_freq = nullptr;
  int64_t dim = 0;
  bool interleaved = true;  // pairs (2i, 2i + 1); false: half-split pairs (i, i + dim / 2)
  double attention_factor = 1.0;
};

// The head shapes of MLA (nn/mla.hpp) that its attention primitives read.
struct MlaDims {
  int64_t num_heads = 0, qk_nope_head_dim = 0, qk_rope_head_dim = 0, kv_lora_rank = 0, v_head_dim = 0;
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
};

// Ops::moe_route's parameters (the scoring and selection rules of nn/moe.hpp's header).
struct MoeRouting {
  enum class Method { greedy, group_limited_greedy, noaux_tc };
  enum class Scoring { softmax, sigmoid };
  int n_experts = 0, top_k = 0, n_group = 1, topk_group = 1;
  Method method = Method::greedy;
  Scoring scoring = Scoring::softmax;
  bool norm_topk_prob = false;
  float routed_scaling_factor = 1.0f;
  const float* bias = nullptr;  // noaux_tc: e_score_correction_bias [n_experts] on the device, else null
};

// One routed expert's SwiGLU weights, as Ops::moe_experts reads them.
struct ExpertFfn {
  const BlockQuantMatrix* gate_proj = nullptr;
  const BlockQuantMatrix* up_proj = nullptr;
  const BlockQuantMatrix* down_proj = nullptr;
};

}  // namespace deepseek::backend
