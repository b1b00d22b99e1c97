// Host wrappers over Ops<cpu>'s MoE primitives (backend/cpu/moe.hpp), compiled by g++ in
// cpu_reference_moe.cpp so test_moe.cu compares the CUDA kernels with the CPU backend without
// Eigen reaching nvcc. Every pointer here is host memory: the routing bias, the activations and the
// expert matrices (BlockQuantMatrix views of host tensors).
#pragma once

#include <deepseek/backend/params.hpp>

#include <cstdint>

namespace cpu_reference {

// Ops<cpu>::moe_route: logits [n, E] -> idx [n, top_k], weight [n, top_k].
void moe_route(const float* logits, int64_t n, const deepseek::backend::MoeRouting& r, int* idx, float* weight);

// Ops<cpu>::moe_experts: y [n, d] = shared(x) + sum_k weight[t, k] * expert_{idx[t, k]}(x[t]).
void moe_experts(const deepseek::backend::ExpertFfn* experts, int E, const deepseek::backend::ExpertFfn* shared,
                 const float* x, int64_t n, int64_t d, const int* idx, const float* weight, int K, float* y);

}  // namespace cpu_reference
