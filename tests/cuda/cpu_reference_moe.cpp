// Ops<cpu>'s MoE primitives behind plain declarations (cpu_reference_moe.hpp), for test_moe.cu.
#include "cpu_reference_moe.hpp"

#include <deepseek/backend/ops.hpp>
#include <deepseek/core/device.hpp>

namespace cpu_reference {

using Ops = deepseek::backend::Ops<deepseek::cpu>;

void moe_route(const float* logits, int64_t n, const deepseek::backend::MoeRouting& r, int* idx, float* weight) {
  Ops::moe_route(logits, n, r, idx, weight);
}

void moe_experts(const deepseek::backend::ExpertFfn* experts, int E, const deepseek::backend::ExpertFfn* shared,
                 const float* x, int64_t n, int64_t d, const int* idx, const float* weight, int K, float* y) {
  Ops::moe_experts(experts, E, shared, x, n, d, idx, weight, K, y);
}

}  // namespace cpu_reference
